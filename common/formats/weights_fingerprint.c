/* Weight fingerprints and their cache. The cache is one text file per model folder, a line per
 * weight file:
 *
 *   <sum of its tensors' XXH3, 16 hex digits> <size in bytes> <mtime s>.<ns> <file name>
 *
 * An entry is used only while the file's size and mtime are what it records. A file modified in
 * the last few seconds is not cached at all: on a file system with coarse timestamps a second
 * write in the same tick would keep the old mtime (git's "racily clean" problem). */
#include "weights_fingerprint.h"

#include "fsutil.h"
#include "hash.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#define RACY_SECONDS 3

typedef struct fp_entry {
    char name[256];
    uint64_t size;
    int64_t mtime_s;
    long mtime_ns;
    uint64_t sum; /* of the file's tensor hashes */
} fp_entry;

typedef struct fp_cache {
    fp_entry *e;
    int n;
} fp_cache;

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Whatever lines of the cache parse; a damaged or missing cache is an empty one. */
static void cache_read(const char *path, fp_cache *c) {
    char *text;
    size_t len;
    lp_err ignored;
    c->e = NULL, c->n = 0;
    if (!fs_exists(path) || fs_read_all(path, &text, &len, &ignored) < 0) return;
    int cap = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        fp_entry x;
        int used = 0;
        if (sscanf(line, "%16" SCNx64 " %" SCNu64 " %" SCNd64 ".%9ld %n", &x.sum, &x.size,
                   &x.mtime_s, &x.mtime_ns, &used) != 4 ||
            !line[used] || strlen(line + used) >= sizeof x.name)
            continue;
        snprintf(x.name, sizeof x.name, "%s", line + used);
        if (c->n == cap) {
            cap = cap ? 2 * cap : 8;
            fp_entry *grown = realloc(c->e, (size_t)cap * sizeof *grown);
            if (!grown) break;
            c->e = grown;
        }
        c->e[c->n++] = x;
    }
    free(text);
}

static const fp_entry *cache_find(const fp_cache *c, const char *name, const struct stat *st) {
    for (int i = 0; i < c->n; i++) {
        const fp_entry *x = &c->e[i];
        if (!strcmp(x->name, name) && x->size == (uint64_t)st->st_size &&
            x->mtime_s == (int64_t)st->st_mtim.tv_sec && x->mtime_ns == st->st_mtim.tv_nsec)
            return x;
    }
    return NULL;
}

/* One tensor: its bytes, seeded with its name, dtype and shape. */
static uint64_t hash_tensor(const st_tensor *t) {
    uint64_t seed = hash_xxh3(0, t->name, strlen(t->name));
    seed = hash_xxh3(seed, &t->dtype, sizeof t->dtype);
    seed = hash_xxh3(seed, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    return hash_xxh3(seed, t->data, t->nbytes);
}

/* The sum of the file's tensor hashes, read front to back: a sum, so that how the tensors are
 * split among files and ordered in them does not matter. */
static uint64_t hash_file_tensors(const st_file *f) {
    madvise(f->map, f->map_size, MADV_SEQUENTIAL);
    uint64_t h = 0;
    for (int i = 0; i < f->n_tensors; i++) h += hash_tensor(&f->tensors[i]);
    madvise(f->map, f->map_size, MADV_NORMAL);
    return h;
}

static int is_racy(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec + RACY_SECONDS > (int64_t)time(NULL);
}

/* Rewrites the cache with the folder's current files only. Failure leaves no cache behind, and
 * is not an error: the fingerprint is right either way. */
static void cache_write(const char *path, const fp_entry *e, int n) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return;
    int written = 0;
    for (int i = 0; i < n; i++) {
        if (!e[i].name[0]) continue; /* not cacheable */
        fprintf(f, "%016" PRIx64 " %" PRIu64 " %" PRId64 ".%09ld %s\n", e[i].sum, e[i].size,
                e[i].mtime_s, e[i].mtime_ns, e[i].name);
        written++;
    }
    fclose(f);
    lp_err ignored;
    if (written) fs_write_atomic(path, text, len, &ignored);
    free(text);
}

int weights_fingerprint(const hf_weights *w, const char *dir, int use_cache, uint64_t *out,
                        weights_fp_stats *stats, lp_err *err) {
    char cache_path[PATH_MAX];
    if (snprintf(cache_path, sizeof cache_path, "%s/%s", dir, WEIGHTS_FP_CACHE) >=
        (int)sizeof cache_path)
        return lp_fail(err, "%s: path too long", dir);
    fp_cache cache = {0};
    if (use_cache) cache_read(cache_path, &cache);
    fp_entry *now = calloc((size_t)w->n_files + 1, sizeof *now);
    if (!now) {
        free(cache.e);
        return lp_fail(err, "out of memory");
    }
    weights_fp_stats s = {0};
    int dirty = 0;
    uint64_t fp = 0;
    for (int i = 0; i < w->n_files; i++) {
        const st_file *f = &w->files[i];
        const char *name = base_name(f->path);
        struct stat st;
        int known = stat(f->path, &st) == 0 && strlen(name) < sizeof now[i].name;
        const fp_entry *hit = known ? cache_find(&cache, name, &st) : NULL;
        fp_entry *x = &now[i];
        if (hit) {
            *x = *hit;
            s.n_cached++;
        } else {
            x->sum = hash_file_tensors(f);
            s.n_hashed++;
            if (known && !is_racy(&st)) {
                snprintf(x->name, sizeof x->name, "%s", name);
                x->size = (uint64_t)st.st_size;
                x->mtime_s = (int64_t)st.st_mtim.tv_sec;
                x->mtime_ns = st.st_mtim.tv_nsec;
                dirty = 1;
            }
        }
        fp += x->sum;
    }
    if (use_cache && (dirty || cache.n != s.n_cached)) cache_write(cache_path, now, w->n_files);
    free(now);
    free(cache.e);
    if (stats) *stats = s;
    fp = hash_xxh3(0, &fp, sizeof fp); /* the sum, mixed */
    *out = fp ? fp : 1;
    return 0;
}
