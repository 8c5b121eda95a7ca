/* Loading HF GPT-2 folders: names with and without "transformer.", HF's attn.bias buffers,
 * half-precision weights, an untied lm_head, and clear errors for missing or misshapen tensors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dtype.h"
#include "lora_targets.h"
#include "model_load.h"
#include "fsutil.h"
#include "model.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/gpt2_tiny"
#define B      2
#define T      8

typedef enum variant {
    AS_IS,
    NO_PREFIX,    /* GPT2Model-style names: "h.0.ln_1.weight" */
    WITH_BUFFERS, /* HF's causal-mask buffers h.N.attn.bias / masked_bias, to be skipped */
    AS_BF16,      /* every weight stored as BF16 */
    DROP_TENSOR,  /* transformer.h.1.mlp.c_fc.bias missing */
    WRONG_SHAPE,  /* transformer.h.0.attn.c_proj.weight transposed to the wrong shape */
    UNTIED_HEAD,  /* tie_word_embeddings false, lm_head.weight = 2 * wte */
} variant;

static char tmpdir[64];

static int setup(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/loraps-load-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd);
}

/* Rewrites the golden model as a variant into tmpdir/<name>. */
static void write_variant(const char *name, variant v, char *dir, size_t size) {
    lp_err err;
    snprintf(dir, size, "%s/%s", tmpdir, name);
    assert_int_equal(fs_mkdirs(dir, &err), 0);
    st_file in;
    if (st_open(&in, GOLDEN "/model.safetensors", &err) < 0) fail_msg("%s", err.msg);
    st_writer *w = st_writer_new();
    float *buffers[64];
    int n_buffers = 0;
    for (int i = 0; i < in.n_tensors; i++) {
        const st_tensor *t = &in.tensors[i];
        const char *tname = t->name;
        if (v == DROP_TENSOR && !strcmp(tname, "transformer.h.1.mlp.c_fc.bias")) continue;
        if (v == NO_PREFIX && !strncmp(tname, "transformer.", 12)) tname += 12;
        int64_t shape[2] = {t->shape[0], t->ndim > 1 ? t->shape[1] : 0};
        if (v == WRONG_SHAPE && !strcmp(tname, "transformer.h.0.attn.c_proj.weight")) {
            shape[0] = t->shape[0] / 2; /* same bytes, wrong shape */
            shape[1] = t->shape[1] * 2;
        }
        if (v == AS_BF16)
            assert_int_equal(st_writer_add_f32(w, tname, DT_BF16, t->ndim, shape, t->data, &err),
                             0);
        else
            assert_int_equal(st_writer_add(w, tname, t->dtype, t->ndim, shape, t->data, &err), 0);
        if (v == UNTIED_HEAD && !strcmp(tname, "transformer.wte.weight")) {
            float *head = malloc(t->nbytes);
            for (int64_t k = 0; k < t->numel; k++) head[k] = 2.0f * ((const float *)t->data)[k];
            buffers[n_buffers++] = head;
            assert_int_equal(st_writer_add(w, "lm_head.weight", DT_F32, 2, shape, head, &err), 0);
        }
    }
    if (v == WITH_BUFFERS) {
        static float mask[1 * 1 * 64 * 64];
        int64_t shape[4] = {1, 1, 64, 64};
        for (int l = 0; l < 2; l++) {
            char n[64];
            snprintf(n, sizeof n, "transformer.h.%d.attn.bias", l);
            assert_int_equal(st_writer_add(w, n, DT_F32, 4, shape, mask, &err), 0);
            snprintf(n, sizeof n, "transformer.h.%d.attn.masked_bias", l);
            assert_int_equal(st_writer_add(w, n, DT_F32, 0, shape, mask, &err), 0);
        }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (st_writer_write(w, path, &err) < 0) fail_msg("%s", err.msg);
    st_writer_free(w);
    st_close(&in);
    for (int i = 0; i < n_buffers; i++) free(buffers[i]);

    char *config;
    size_t len;
    assert_int_equal(fs_read_all(GOLDEN "/config.json", &config, &len, &err), 0);
    if (v == UNTIED_HEAD) {
        char *tie = strstr(config, "\"tie_word_embeddings\": true");
        assert_non_null(tie);
        memcpy(tie, "\"tie_word_embeddings\":false", 27);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(fs_write_atomic(path, config, strlen(config), &err), 0);
    free(config);
}

/* Logits of a fixed batch through a no-op adapter (B = 0). */
static float *logits_of(const char *dir) {
    lp_err err;
    model *m;
    if (model_load(&m, dir, &err) < 0) fail_msg("%s", err.msg);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    lora_config c;
    lora_config_defaults(&c);
    lora_adapter a;
    assert_int_equal(lora_adapter_build(&a, &c, mods, n, &err), 0);
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 37 + 5) % model_vocab_size(m);
    float *logits = malloc(sizeof(float) * B * T * model_vocab_size(m));
    assert_int_equal(model_trainer_logits(t, tokens, logits, &err), 0);
    model_trainer_free(t);
    lora_adapter_free(&a);
    lora_config_free(&c);
    model_free(m);
    return logits;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

static const size_t N_LOGITS = (size_t)B * T * 512;

static void expect_same_logits(variant v, const char *name, double tolerance) {
    char dir[256];
    write_variant(name, v, dir, sizeof dir);
    float *ref = logits_of(GOLDEN), *got = logits_of(dir);
    double diff = max_abs_diff(ref, got, N_LOGITS);
    printf("%s: max |logit diff| %.3g (bound %.3g)\n", name, diff, tolerance);
    assert_true(diff <= tolerance);
    free(ref);
    free(got);
}

static void test_names_without_transformer_prefix(void **state) {
    (void)state;
    expect_same_logits(NO_PREFIX, "no_prefix", 0);
}

static void test_attention_mask_buffers_are_skipped(void **state) {
    (void)state;
    expect_same_logits(WITH_BUFFERS, "buffers", 0);
}

static void test_bf16_weights_are_converted(void **state) {
    (void)state;
    /* bf16 keeps 8 bits of mantissa: logits of magnitude ~3 move by a few 1e-2 at most */
    expect_same_logits(AS_BF16, "bf16", 0.1);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/bf16", tmpdir);
    float *ref = logits_of(GOLDEN), *got = logits_of(dir);
    assert_true(max_abs_diff(ref, got, N_LOGITS) > 0); /* really converted, not the same file */
    free(ref);
    free(got);
}

static void test_untied_head_is_used(void **state) {
    (void)state;
    char dir[256];
    write_variant("untied", UNTIED_HEAD, dir, sizeof dir);
    float *ref = logits_of(GOLDEN), *got = logits_of(dir);
    double worst = 0;
    for (size_t i = 0; i < N_LOGITS; i++) worst = fmax(worst, fabs(2.0 * ref[i] - got[i]));
    printf("untied head: max |2 * tied - untied| %.3g\n", worst);
    assert_true(worst < 1e-5);
    free(ref);
    free(got);
}

static void expect_load_error(variant v, const char *name, const char *phrase) {
    char dir[256];
    write_variant(name, v, dir, sizeof dir);
    lp_err err = {{0}};
    model *m = NULL;
    assert_int_equal(model_load(&m, dir, &err), -1);
    printf("%s: %s\n", name, err.msg);
    assert_non_null(strstr(err.msg, phrase));
    assert_non_null(strstr(err.msg, dir)); /* the error names the folder */
}

static void test_missing_tensor_is_named(void **state) {
    (void)state;
    expect_load_error(DROP_TENSOR, "missing", "'h.1.mlp.c_fc.bias' is missing");
}

static void test_wrong_shape_is_named(void **state) {
    (void)state;
    expect_load_error(WRONG_SHAPE, "shape",
                      "'h.0.attn.c_proj.weight' has shape [32,128], expected [64,64]");
}

static void test_missing_folder(void **state) {
    (void)state;
    lp_err err = {{0}};
    model *m = NULL;
    assert_int_equal(model_load(&m, "/nonexistent/model", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/model"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_without_transformer_prefix),
        cmocka_unit_test(test_attention_mask_buffers_are_skipped),
        cmocka_unit_test(test_bf16_weights_are_converted),
        cmocka_unit_test(test_untied_head_is_used),
        cmocka_unit_test(test_missing_tensor_is_named),
        cmocka_unit_test(test_wrong_shape_is_named),
        cmocka_unit_test(test_missing_folder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
