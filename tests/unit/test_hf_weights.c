/* hf_weights: one model.safetensors, or shards listed by model.safetensors.index.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsutil.h"
#include "hf_weights.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCRATCH_NAME "hfw"
#include "scratch_dir.h"

static const char *tmp_path(const char *name) {
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", tmpdir, name);
    return p;
}

/* A safetensors file holding F32 tensors called names[0..n), tensor i filled with value i+1
 * plus `base`, with shape [i + 1]. */
static void write_shard(const char *file, const char *const *names, int n, float base) {
    lp_err err;
    st_writer *w = st_writer_new();
    float data[8][8];
    for (int i = 0; i < n; i++) {
        int64_t shape[1] = {i + 1};
        for (int j = 0; j < 8; j++) data[i][j] = base + (float)(i + 1);
        assert_int_equal(st_writer_add_f32(w, names[i], DT_F32, 1, shape, data[i], &err), 0);
    }
    assert_int_equal(st_writer_write(w, tmp_path(file), &err), 0);
    st_writer_free(w);
}

static void write_text(const char *file, const char *text) {
    lp_err err;
    assert_int_equal(fs_write_atomic(tmp_path(file), text, strlen(text), &err), 0);
}

static void expect_open_error(const char *phrase) {
    hf_weights w;
    lp_err err = {{0}};
    int rc = hf_weights_open(&w, tmpdir, &err);
    if (rc == 0) hf_weights_close(&w);
    assert_int_equal(rc, -1);
    if (!strstr(err.msg, phrase)) fail_msg("error '%s' lacks '%s'", err.msg, phrase);
    assert_int_equal(w.n_files, 0);
    assert_null(w.files);
}

static const char *const SHARD1[] = {"transformer.wte.weight", "transformer.h.0.ln_1.weight"};
static const char *const SHARD2[] = {"transformer.h.1.ln_1.weight", "lm_head.weight",
                                     "transformer.ln_f.bias"};

static const char *INDEX_2 =
    "{\"metadata\": {\"total_size\": 44}, \"weight_map\": {"
    "\"transformer.wte.weight\": \"model-00001-of-00002.safetensors\","
    "\"transformer.h.0.ln_1.weight\": \"model-00001-of-00002.safetensors\","
    "\"transformer.h.1.ln_1.weight\": \"model-00002-of-00002.safetensors\","
    "\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
    "\"transformer.ln_f.bias\": \"model-00002-of-00002.safetensors\"}}";

static void write_two_shards(void) {
    write_shard("model-00001-of-00002.safetensors", SHARD1, 2, 0);
    write_shard("model-00002-of-00002.safetensors", SHARD2, 3, 10);
}

static void test_single_file_with_prefix(void **state) {
    (void)state;
    write_shard("model.safetensors", SHARD1, 2, 0);
    hf_weights w;
    lp_err err;
    assert_int_equal(hf_weights_open(&w, tmpdir, &err), 0);
    assert_int_equal(w.n_files, 1);
    const st_tensor *t = hf_weights_find(&w, "transformer.", "h.0.ln_1.weight");
    assert_non_null(t);
    assert_string_equal(t->name, "transformer.h.0.ln_1.weight");
    assert_true(st_f32_view(t)[1] == 2.0f);
    /* The exact name is tried first; a NULL or empty prefix means no fallback. */
    assert_ptr_equal(hf_weights_find(&w, "transformer.", "transformer.wte.weight"),
                     hf_weights_find(&w, NULL, "transformer.wte.weight"));
    assert_null(hf_weights_find(&w, NULL, "wte.weight"));
    assert_null(hf_weights_find(&w, "", "wte.weight"));
    assert_null(hf_weights_find(&w, "transformer.", "wpe.weight"));
    assert_int_equal(hf_weights_total_bytes(&w), 4 * (1 + 2));
    hf_weights_close(&w);
    assert_int_equal(w.n_files, 0);
}

static void test_single_file_wins_over_index(void **state) {
    (void)state;
    write_shard("model.safetensors", SHARD1, 2, 0);
    write_text("model.safetensors.index.json", "not even json");
    hf_weights w;
    lp_err err;
    assert_int_equal(hf_weights_open(&w, tmpdir, &err), 0);
    assert_int_equal(w.n_files, 1);
    hf_weights_close(&w);
}

static void test_sharded_two_files(void **state) {
    (void)state;
    write_two_shards();
    write_text("model.safetensors.index.json", INDEX_2);
    hf_weights w;
    lp_err err;
    assert_int_equal(hf_weights_open(&w, tmpdir, &err), 0);
    assert_int_equal(w.n_files, 2); /* each distinct file opened once */
    const st_tensor *wte = hf_weights_find(&w, "transformer.", "wte.weight");
    const st_tensor *head = hf_weights_find(&w, "transformer.", "lm_head.weight");
    const st_tensor *lnf = hf_weights_find(&w, "transformer.", "ln_f.bias");
    assert_non_null(wte);
    assert_non_null(head);
    assert_non_null(lnf);
    assert_true(st_f32_view(wte)[0] == 1.0f);
    assert_true(st_f32_view(head)[1] == 12.0f);
    assert_int_equal(lnf->numel, 3);
    assert_int_equal(hf_weights_total_bytes(&w), 4 * (1 + 2) + 4 * (1 + 2 + 3));
    hf_weights_close(&w);
}

static void test_missing_shard(void **state) {
    (void)state;
    write_shard("model-00001-of-00002.safetensors", SHARD1, 2, 0);
    write_text("model.safetensors.index.json", INDEX_2);
    expect_open_error("shard 'model-00002-of-00002.safetensors'");
    expect_open_error("No such file or directory");
}

static void test_bad_index(void **state) {
    (void)state;
    write_two_shards();
    write_text("model.safetensors.index.json", "{\"weight_map\": {");
    expect_open_error("model.safetensors.index.json: malformed JSON");
    write_text("model.safetensors.index.json", "{\"metadata\": {}}");
    expect_open_error("'weight_map' must be a non-empty object");
    write_text("model.safetensors.index.json", "{\"weight_map\": []}");
    expect_open_error("'weight_map' must be a non-empty object");
    write_text("model.safetensors.index.json", "{\"weight_map\": {\"lm_head.weight\": 2}}");
    expect_open_error("weight_map entry 'lm_head.weight' must be a file name string");
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"x.safetensors\"}}");
    expect_open_error("duplicate");
}

static void test_index_tensor_not_in_shard(void **state) {
    (void)state;
    write_two_shards();
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {"
               "\"transformer.wte.weight\": \"model-00001-of-00002.safetensors\","
               "\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_open_error("tensor 'lm_head.weight' is listed in shard "
                      "'model-00001-of-00002.safetensors' but not found there");
}

static void test_index_rejects_paths(void **state) {
    (void)state;
    write_two_shards();
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"a\": \"../model.safetensors\"}}");
    expect_open_error("shard file name '../model.safetensors' must be a plain file name");
    write_text("model.safetensors.index.json", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    expect_open_error("must be a plain file name");
    write_text("model.safetensors.index.json", "{\"weight_map\": {\"a\": \"sub/x.safetensors\"}}");
    expect_open_error("must be a plain file name");
    write_text("model.safetensors.index.json", "{\"weight_map\": {\"a\": \"\"}}");
    expect_open_error("must be a plain file name");
}

static void test_broken_shard_and_no_weights(void **state) {
    (void)state;
    expect_open_error("neither model.safetensors nor model.safetensors.index.json");
    write_text("model.safetensors", "short");
    expect_open_error("shorter than the 8-byte header length");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_file_with_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_file_wins_over_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_two_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_shard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_tensor_not_in_shard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_rejects_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_shard_and_no_weights, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
