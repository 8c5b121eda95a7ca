/* Fingerprints and checkpoint hashes, before and after issue 20, in one run:
 *
 *   bench_fingerprint [GB] [dir]
 *
 * writes a model.safetensors of GB gigabytes (default 1) of BF16 tensors into dir (default /tmp),
 * reads it once so every pass finds it in the page cache, then times, each pass over a fresh
 * mapping as at every process start,
 *   - before: hash64_fnv over every tensor's name and bytes, as model_weight_view did;
 *   - after: weights_fingerprint, the XXH3 of every tensor, summed (no cache);
 *   - after, cached: weights_fingerprint with .loraps-xxh3 in place (stat + one small read);
 * and, for checkpoint files, SHA-256 (libsodium; what trainer_state.json and SHA256SUMS record)
 * against the hash64_fnv it replaced, on a file of 1/4 of that size. Best of 3 passes each, in
 * CPU seconds (all of it single-threaded, so wall time on an idle machine); prints the ratios. */
#include "bench_util.h"
#include "checkpoint_sums.h"
#include "fsutil.h"
#include "hash.h"
#include "hf_weights.h"
#include "safetensors.h"
#include "weights_fingerprint.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TENSOR_BYTES ((size_t)16 << 20)

static void die(const char *what, const lp_err *err) {
    fprintf(stderr, "bench_fingerprint: error: %s: %s\n", what, err->msg);
    exit(1);
}

/* n_tensors BF16 tensors [4096, 2048] of pseudo-random bits, one buffer reused. */
static void write_model(const char *path, int n_tensors) {
    unsigned char *data = malloc(TENSOR_BYTES);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < TENSOR_BYTES; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        data[i] = (unsigned char)x;
    }
    st_writer *w = st_writer_new();
    lp_err err;
    int64_t shape[2] = {4096, 2048};
    for (int t = 0; t < n_tensors; t++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", t);
        if (st_writer_add(w, name, DT_BF16, 2, shape, data, &err) < 0) die("add", &err);
    }
    if (st_writer_write(w, path, &err) < 0) die(path, &err);
    st_writer_free(w);
    free(data);
    /* an mtime in the past: a file modified seconds ago is never cached */
    struct timespec t[2] = {{time(NULL) - 600, 0}, {time(NULL) - 600, 0}};
    utimensat(AT_FDCWD, path, t, 0);
}

static uint64_t before(const hf_weights *w) {
    uint64_t h = HASH64_FNV_INIT;
    for (int f = 0; f < w->n_files; f++)
        for (int i = 0; i < w->files[f].n_tensors; i++) {
            const st_tensor *t = &w->files[f].tensors[i];
            h = hash64_fnv(h, t->name, strlen(t->name));
            h = hash64_fnv(h, t->data, t->nbytes);
        }
    return h;
}

static uint64_t after(const hf_weights *w, const char *dir, int use_cache) {
    uint64_t fp;
    lp_err err;
    if (weights_fingerprint(w, dir, use_cache, &fp, NULL, &err) < 0) die("fingerprint", &err);
    return fp;
}

/* Each pass maps the file afresh, as every process start does: the page faults count. */
static double best_of_3_model(const char *dir, int which, uint64_t *sink) {
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        hf_weights w;
        lp_err err;
        if (hf_weights_open(&w, dir, &err) < 0) die(dir, &err);
        double t0 = bench_cpu_now();
        *sink ^= which == 0 ? before(&w) : after(&w, dir, which == 2);
        double s = bench_cpu_now() - t0;
        hf_weights_close(&w);
        if (s < best) best = s;
    }
    return best;
}

static double best_of_3_file(const char *path, int sha, uint64_t *sink) {
    double best = 1e30;
    lp_err err;
    for (int rep = 0; rep < 3; rep++) {
        unsigned char d[CKPT_SHA256_BYTES];
        uint64_t h = 0, n;
        double t0 = bench_cpu_now();
        int rc = sha ? ckpt_sha256_file(path, d, &n, &err) : ckpt_fnv_file(path, &h, &n, &err);
        double s = bench_cpu_now() - t0;
        if (rc < 0) die(path, &err);
        *sink ^= h ^ d[0];
        if (s < best) best = s;
    }
    return best;
}

int main(int argc, char **argv) {
    double gb = argc > 1 ? atof(argv[1]) : 1.0;
    const char *where = argc > 2 ? argv[2] : "/tmp";
    int n_tensors = (int)(gb * 1e9 / (double)TENSOR_BYTES + 0.5);
    if (n_tensors < 1) n_tensors = 1;
    char dir[512], path[600], cmd[600];
    snprintf(dir, sizeof dir, "%s/loraps_bench_fingerprint_%d", where, (int)getpid());
    lp_err err;
    if (fs_mkdirs(dir, &err) < 0) die(dir, &err);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    double t0 = bench_now();
    write_model(path, n_tensors);
    hf_weights w;
    if (hf_weights_open(&w, dir, &err) < 0) die(dir, &err);
    double bytes = (double)w.files[0].map_size;
    uint64_t sink = before(&w); /* into the page cache */
    printf("weights: %.2f GB in %d tensors, written and read in %.1f s\n", bytes / 1e9, n_tensors,
           bench_now() - t0);

    after(&w, dir, 1); /* fills the cache for the third pass; the others do not read it */
    hf_weights_close(&w);
    double t_before = best_of_3_model(dir, 0, &sink);
    double t_after = best_of_3_model(dir, 1, &sink);
    double t_cached = best_of_3_model(dir, 2, &sink);
    printf("fingerprint before (hash64_fnv over every tensor): %8.4f s  %6.2f GB/s\n", t_before,
           bytes / t_before / 1e9);
    printf("fingerprint after  (XXH3 of every tensor):        %8.4f s  %6.2f GB/s  -> %.1fx "
           "faster\n",
           t_after, bytes / t_after / 1e9, t_before / t_after);
    printf("fingerprint after  (cached in .loraps-xxh3):      %8.6f s              -> %.0fx "
           "faster than before\n",
           t_cached, t_before / t_cached);
    printf("  per 16 GB (an 8B model in bf16), warm page cache: before %.1f s, after %.2f s, "
           "cached %.6f s\n",
           t_before * 16e9 / bytes, t_after * 16e9 / bytes, t_cached);

    /* a checkpoint-sized file: the adapter and AdamW's moments of a large job */
    char ck[700];
    snprintf(ck, sizeof ck, "%s/optimizer.safetensors", dir);
    unlink(path);
    size_t ck_len = (size_t)(bytes / 4);
    unsigned char *junk = malloc(ck_len);
    for (size_t i = 0; i < ck_len; i++) junk[i] = (unsigned char)(i * 2654435761u >> 13);
    if (fs_write_atomic(ck, junk, ck_len, &err) < 0) die(ck, &err);
    free(junk);
    double ck_bytes = (double)ck_len;
    best_of_3_file(ck, 0, &sink); /* warm */
    double t_fnv = best_of_3_file(ck, 0, &sink), t_sha = best_of_3_file(ck, 1, &sink);
    printf("checkpoint file %.0f MB: hash64_fnv %.3f s (%.2f GB/s), SHA-256 %.3f s (%.2f GB/s): "
           "SHA-256 takes %.2fx the time\n",
           ck_bytes / 1e6, t_fnv, ck_bytes / t_fnv / 1e9, t_sha, ck_bytes / t_sha / 1e9,
           t_sha / t_fnv);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return sink == 42 ? 2 : 0; /* keeps the hashes from being optimised away */
}
