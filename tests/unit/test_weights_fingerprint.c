/* The base-model fingerprint from the weight files (formats/weights_fingerprint.h): every
 * tensor's XXH3 summed, the same however often it is computed and whatever the files' metadata,
 * sensitive to any byte of a tensor, and its cache beside the weights: used while size and mtime
 * match (a planted wrong entry shows it is), redone when either changes, ignored when damaged or
 * unwritable, never written for a file modified seconds ago. The model's fingerprint follows the
 * files'. */
#include "fsutil.h"
#include "hash.h"
#include "hf_weights.h"
#include "model.h"
#include "model_init.h"
#include "model_load.h"
#include "safetensors.h"
#include "weights_fingerprint.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "file_damage.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/loraps-wfp-test.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A tiny GPT-2 folder whose weights were last modified `age` seconds ago. */
static void make_model(const char *name, time_t age, char *dir, size_t size) {
    snprintf(dir, size, "%s/%s", g_dir, name);
    gpt2_config c;
    lp_err err;
    if (model_preset("tiny", &c, &err) < 0 || model_init_write(dir, &c, 7, &err) < 0)
        fail_msg("%s", err.msg);
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct timespec t[2] = {{time(NULL) - age, 0}, {time(NULL) - age, 123456789}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

static uint64_t fingerprint(const char *dir, int use_cache, weights_fp_stats *st) {
    hf_weights w;
    lp_err err;
    uint64_t fp;
    if (hf_weights_open(&w, dir, &err) < 0 ||
        weights_fingerprint(&w, dir, use_cache, &fp, st, &err) < 0)
        fail_msg("%s", err.msg);
    hf_weights_close(&w);
    return fp;
}

/* What the header promises: every tensor's XXH3 (seeded with name, dtype, shape), summed. */
static uint64_t expected(const char *dir) {
    char path[300];
    lp_err err;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file f;
    if (st_open(&f, path, &err) < 0) fail_msg("%s", err.msg);
    uint64_t sum = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        uint64_t seed = hash_xxh3(0, t->name, strlen(t->name));
        seed = hash_xxh3(seed, &t->dtype, sizeof t->dtype);
        seed = hash_xxh3(seed, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
        sum += hash_xxh3(seed, t->data, t->nbytes);
    }
    st_close(&f);
    return hash_xxh3(0, &sum, sizeof sum);
}

static uint64_t model_fp(const char *dir) {
    model *m;
    lp_err err;
    if (model_load(&m, dir, &err) < 0) fail_msg("%s", err.msg);
    uint64_t fp = model_fingerprint(m);
    model_free(m);
    return fp;
}

static void test_fingerprint_is_xxh3_of_the_tensors(void **state) {
    (void)state;
    char a[200], b[200], path[300];
    make_model("a", 3600, a, sizeof a);
    make_model("b", 3600, b, sizeof b);
    uint64_t fa = fingerprint(a, 0, NULL);
    assert_true(fa == expected(a));
    assert_true(fa == fingerprint(a, 0, NULL));
    assert_true(fa == fingerprint(b, 0, NULL)); /* byte-identical folders */
    uint64_t ma = model_fp(a);
    assert_true(ma == model_fp(b));
    /* one byte of a weight (the last one of the file) changes both */
    snprintf(path, sizeof path, "%s/model.safetensors", b);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    damage_byte(path, (long)st.st_size - 1, 0x40);
    assert_true(fingerprint(b, 0, NULL) != fa);
    assert_true(model_fp(b) != ma);
    printf("fingerprint of a: %016llx (weights %016llx)\n", (unsigned long long)ma,
           (unsigned long long)fa);
}

/* The same tensors written again with other metadata and in reverse order: the same fingerprint;
 * one tensor renamed: another. */
static void rewrite(const char *from, const char *to, const char *rename) {
    char in[300], out[300];
    lp_err err;
    snprintf(in, sizeof in, "%s/model.safetensors", from);
    snprintf(out, sizeof out, "%s/model.safetensors", to);
    st_file f;
    if (st_open(&f, in, &err) < 0) fail_msg("%s", err.msg);
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_set_metadata(w, "written_by", "test", &err), 0);
    for (int i = f.n_tensors - 1; i >= 0; i--) {
        const st_tensor *t = &f.tensors[i];
        const char *name = rename && i == 0 ? rename : t->name;
        assert_int_equal(st_writer_add(w, name, t->dtype, t->ndim, t->shape, t->data, &err), 0);
    }
    if (st_writer_write(w, out, &err) < 0) fail_msg("%s", err.msg);
    st_writer_free(w);
    st_close(&f);
}

static void test_layout_and_metadata_do_not_count(void **state) {
    (void)state;
    char a[200], b[200];
    make_model("layout_a", 3600, a, sizeof a);
    make_model("layout_b", 3600, b, sizeof b);
    uint64_t fa = fingerprint(a, 0, NULL);
    rewrite(a, b, NULL);
    assert_true(fingerprint(b, 0, NULL) == fa);
    rewrite(a, b, "renamed.weight");
    assert_true(fingerprint(b, 0, NULL) != fa);
}

static void write_text(const char *path, const char *text) {
    lp_err err;
    assert_int_equal(fs_write_atomic(path, text, strlen(text), &err), 0);
}

static void test_cache(void **state) {
    (void)state;
    char dir[200], cache[300], path[300];
    make_model("cached", 3600, dir, sizeof dir);
    snprintf(cache, sizeof cache, "%s/%s", dir, WEIGHTS_FP_CACHE);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    uint64_t truth = expected(dir);
    weights_fp_stats st;
    assert_false(fs_exists(cache));
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_hashed, 1);
    assert_true(fs_exists(cache));
    /* from the cache, with the same result */
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_cached, 1);
    assert_int_equal(st.n_hashed, 0);
    /* model_load goes through it too */
    model_fp(dir);
    /* an entry with the right size and mtime is believed: plant a wrong hash */
    char *text;
    size_t len;
    lp_err err;
    assert_int_equal(fs_read_all(cache, &text, &len, &err), 0);
    printf("cache: %s", text);
    text[0] = text[0] == 'f' ? '0' : 'f';
    write_text(cache, text);
    free(text);
    assert_true(fingerprint(dir, 1, &st) != truth);
    assert_int_equal(st.n_cached, 1);
    /* use_cache 0 never reads it */
    assert_true(fingerprint(dir, 0, &st) == truth);
    /* a new mtime: hashed again, cache rewritten */
    struct timespec t[2] = {{time(NULL) - 100, 0}, {time(NULL) - 100, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_hashed, 1);
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_cached, 1);
    /* garbage in the cache: ignored */
    write_text(cache, "garbage\n0123 x\n\nffffffffffffffff 1 2.3\n");
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_hashed, 1);
    /* a cache that cannot be written (a folder in its place): no cache, same fingerprint */
    assert_int_equal(unlink(cache), 0);
    assert_int_equal(mkdir(cache, 0755), 0);
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_hashed, 1);
    assert_int_equal(rmdir(cache), 0);
}

/* A file written just now may still change within its mtime's tick: not cached. */
static void test_fresh_file_is_not_cached(void **state) {
    (void)state;
    char dir[200], cache[300];
    make_model("fresh", 0, dir, sizeof dir);
    snprintf(cache, sizeof cache, "%s/%s", dir, WEIGHTS_FP_CACHE);
    weights_fp_stats st;
    uint64_t truth = expected(dir);
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_true(fingerprint(dir, 1, &st) == truth);
    assert_int_equal(st.n_hashed, 1);
    assert_false(fs_exists(cache));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprint_is_xxh3_of_the_tensors),
        cmocka_unit_test(test_layout_and_metadata_do_not_count),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_fresh_file_is_not_cached),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
