#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* fs_read_all is for config and index files; anything this big is a mistake. */
#define FS_READ_ALL_MAX ((size_t)1 << 30)

static int write_fully(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The folder part of path: "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/". */
static void parent_dir(const char *path, char *out, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(out, size, ".");
    } else if (slash == path) {
        snprintf(out, size, "/");
    } else {
        snprintf(out, size, "%.*s", (int)(slash - path), path);
    }
}

int fs_fsync_dir(const char *dir, lp_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return lp_fail(err, "%s: cannot open folder: %s", dir, strerror(errno));
    /* Some file systems cannot fsync a folder (EINVAL); the rename is then as durable as
     * they allow. */
    if (fsync(fd) != 0 && errno != EINVAL) {
        int e = errno;
        close(fd);
        return lp_fail(err, "%s: fsync of folder failed: %s", dir, strerror(e));
    }
    close(fd);
    return 0;
}

/* Writes every buffer to a new file at tmp and makes it durable; on failure removes tmp. */
static int write_temp_file(const char *tmp, const void *const *bufs, const size_t *lens, int n,
                           lp_err *err) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return lp_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    const char *failed = NULL;
    for (int i = 0; i < n && !failed; i++) {
        if (write_fully(fd, bufs[i], lens[i]) != 0) failed = "write";
    }
    if (!failed && fsync(fd) != 0) failed = "fsync";
    int e = errno;
    if (close(fd) != 0 && !failed) {
        failed = "close";
        e = errno;
    }
    if (!failed) return 0;
    unlink(tmp);
    return lp_fail(err, "%s: %s failed: %s", tmp, failed, strerror(e));
}

int fs_write_atomic_iov(const char *path, const void *const *bufs, const size_t *lens, int n,
                        lp_err *err) {
    char tmp[PATH_MAX];
    int len = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (len < 0 || (size_t)len >= sizeof tmp) return lp_fail(err, "%s: path too long", path);

    if (write_temp_file(tmp, bufs, lens, n, err) != 0) {
        return lp_wrap(err, "%s: atomic write failed", path);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lp_fail(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    char dir[PATH_MAX];
    parent_dir(path, dir, sizeof dir);
    return fs_fsync_dir(dir, err);
}

int fs_write_atomic(const char *path, const void *data, size_t len, lp_err *err) {
    const void *bufs[1] = {data};
    size_t lens[1] = {len};
    return fs_write_atomic_iov(path, bufs, lens, 1, err);
}

static int mkdir_one(const char *dir, lp_err *err) {
    if (mkdir(dir, 0755) == 0) return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        return lp_fail(err, "%s: exists and is not a folder", dir);
    }
    return lp_fail(err, "%s: cannot create folder: %s", dir, strerror(e));
}

int fs_mkdirs(const char *path, lp_err *err) {
    size_t len = strlen(path);
    if (len == 0) return lp_fail(err, "cannot create a folder with an empty name");
    if (len >= PATH_MAX) return lp_fail(err, "%s: path too long", path);
    char buf[PATH_MAX];
    memcpy(buf, path, len + 1);
    /* Create each prefix that ends before a '/', then the whole path. */
    for (size_t i = 1; i < len; i++) {
        if (buf[i] != '/' || buf[i - 1] == '/') continue;
        buf[i] = '\0';
        int rc = mkdir_one(buf, err);
        buf[i] = '/';
        if (rc != 0) return -1;
    }
    return mkdir_one(buf, err);
}

int fs_read_all(const char *path, char **out, size_t *len, lp_err *err) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        close(fd);
        return lp_fail(err, "%s: not a readable file", path);
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, used = 0;
    if (cap > FS_READ_ALL_MAX) {
        close(fd);
        return lp_fail(err, "%s: file too large to read whole (%lld bytes)", path,
                       (long long)st.st_size);
    }
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            close(fd);
            return lp_fail(err, "%s: out of memory", path);
        }
        if (used + 1 == cap) {
            /* The size from fstat may be stale or 0 (e.g. /proc): grow and keep reading. */
            if (cap >= FS_READ_ALL_MAX) {
                free(buf);
                close(fd);
                return lp_fail(err, "%s: file too large to read whole", path);
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) free(buf);
            buf = grown;
            cap *= 2;
            continue;
        }
        ssize_t n = read(fd, buf + used, cap - 1 - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return lp_fail(err, "%s: read failed: %s", path, strerror(e));
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    *out = buf;
    if (len) *len = used;
    return 0;
}

int fs_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
