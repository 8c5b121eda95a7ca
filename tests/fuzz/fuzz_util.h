/* Shared by the libFuzzer targets: one scratch folder per process (under $TMPDIR, removed at
 * exit), files in it rewritten in place for every input, and the source tree's test data. The
 * parsers take paths, so an input is written to a file once per run; the same names are reused,
 * so nothing piles up however long a target runs. */
#ifndef LORAPS_FUZZ_UTIL_H
#define LORAPS_FUZZ_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef LORAPS_SOURCE_DIR
#error "LORAPS_SOURCE_DIR must name the source tree (tests/fuzz/CMakeLists.txt sets it)"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir_path[512];

/* Removes the scratch folder and what is in it (one level of subfolders: all the targets
 * make). */
static inline void fuzz_rm_tree(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (!lstat(p, &st) && S_ISDIR(st.st_mode) && depth < 2)
                fuzz_rm_tree(p, depth + 1);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static inline void fuzz_cleanup(void) {
    if (fuzz_dir_path[0]) fuzz_rm_tree(fuzz_dir_path, 0);
}

/* The process's scratch folder, made on first use. */
static inline const char *fuzz_dir(void) {
    if (fuzz_dir_path[0]) return fuzz_dir_path;
    const char *tmp = getenv("TMPDIR");
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/loraps-fuzz.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fuzz_dir_path)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_cleanup);
    return fuzz_dir_path;
}

/* dir/name, with dir relative to the scratch folder ("" for the folder itself). */
static inline void fuzz_path(char *out, size_t cap, const char *sub, const char *name) {
    if (sub && *sub)
        snprintf(out, cap, "%s/%s/%s", fuzz_dir(), sub, name);
    else
        snprintf(out, cap, "%s/%s", fuzz_dir(), name);
}

static inline void fuzz_mkdir(const char *sub) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir(), sub);
    if (mkdir(p, 0700) < 0) {
        struct stat st;
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
            perror("fuzz: mkdir");
            abort();
        }
    }
}

/* Writes data to path (truncating). A failure here is the harness's, not the parser's. */
static inline void fuzz_write(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror("fuzz: open");
        abort();
    }
    const char *p = data;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n <= 0) {
            perror("fuzz: write");
            abort();
        }
        p += n;
        size -= (size_t)n;
    }
    close(fd);
}

/* Copies a file of the source tree (path relative to it) to dst. */
static inline void fuzz_copy_source_file(const char *rel, const char *dst) {
    char src[1024];
    snprintf(src, sizeof src, "%s/%s", LORAPS_SOURCE_DIR, rel);
    FILE *f = fopen(src, "rb");
    if (!f) {
        fprintf(stderr, "fuzz: cannot open %s\n", src);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    fuzz_write(dst, buf, (size_t)n);
    free(buf);
}

/* An absolute path into the source tree. */
static inline void fuzz_source_path(char *out, size_t cap, const char *rel) {
    snprintf(out, cap, "%s/%s", LORAPS_SOURCE_DIR, rel);
}

/* A harness invariant was broken: print and abort, so libFuzzer keeps the input. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: check failed: %s: ", #cond);                                    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
