/* PEFT interoperability against files made by the real transformers 0.21 + peft (device run of
 * tests/reference/peft_roundtrip.py, results in golden/peft_roundtrip/), and `loraps merge`:
 *
 * - an adapter PEFT made (save_pretrained: several targets, a rank_pattern, an alpha_pattern, B
 *   random non-zero) loads with peft_load, with PEFT's ranks and scales, and the C model's logits
 *   on the same tokens equal the ones PEFT computed (max abs <= 1e-4);
 * - our checkpoint folder (the one PEFT loaded in that run) still gives the logits we gave PEFT;
 * - peft_merge: the merged model's logits equal base + adapter logits (max |diff| / max |logit|
 *   <= 1e-5), for PEFT's adapter and ours; the base folder is never the output; a corrupt adapter
 *   is refused naming the file. */
#include "checkpoint.h"
#include "lora_targets.h"
#include "model_load.h"
#include "fsutil.h"
#include "model.h"
#include "peft.h"
#include "safetensors.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden"
#define BASE   GOLDEN "/gpt2_tiny"
#define RT     GOLDEN "/peft_roundtrip"
#define B_ROWS 2
#define T_COLS 16

typedef struct ref_logits {
    int inputs[B_ROWS * T_COLS];
    float *logits;
    size_t n;
} ref_logits;

static void read_ref(const char *path, ref_logits *r) {
    lp_err err;
    st_file f;
    if (st_open(&f, path, &err) < 0) fail_msg("%s", err.msg);
    const st_tensor *in = st_find(&f, "inputs"), *lg = st_find(&f, "logits");
    assert_non_null(in);
    assert_non_null(lg);
    assert_int_equal(in->dtype, DT_I32);
    assert_int_equal(in->numel, B_ROWS * T_COLS);
    memcpy(r->inputs, in->data, sizeof r->inputs);
    r->n = (size_t)lg->numel;
    r->logits = malloc(r->n * sizeof(float));
    assert_int_equal(st_read_f32(lg, r->logits, r->n, &err), 0);
    st_close(&f);
}

/* Logits of model_dir with the adapter folder (NULL: none) on the reference tokens. */
static float *logits_of(const char *model_dir, const char *adapter_dir, const int *inputs,
                        size_t *n) {
    lp_err err;
    model *m;
    if (model_load(&m, model_dir, &err) < 0) fail_msg("%s", err.msg);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter a;
    if (adapter_dir) {
        if (peft_load(adapter_dir, mods, n_mods, &a, &err) < 0) fail_msg("%s", err.msg);
    } else {
        lora_config c;
        lora_config_defaults(&c);
        c.r = 1;
        assert_int_equal(lora_adapter_build(&a, &c, mods, n_mods, &err), 0);
        lora_config_free(&c);
        memset(a.params, 0, a.n_params * sizeof(float)); /* B = 0: the base model exactly */
    }
    model_trainer *t;
    if (model_trainer_new(&t, m, &a, B_ROWS, T_COLS, &err) < 0) fail_msg("%s", err.msg);
    *n = (size_t)B_ROWS * T_COLS * (size_t)model_vocab_size(m);
    float *out = malloc(*n * sizeof(float));
    if (model_trainer_logits(t, inputs, out, &err) < 0) fail_msg("%s", err.msg);
    model_trainer_free(t);
    lora_adapter_free(&a);
    model_free(m);
    return out;
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *max_ref) {
    double d = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (x > d) d = x;
        if (fabs((double)b[i]) > mr) mr = fabs((double)b[i]);
    }
    if (max_ref) *max_ref = mr;
    return d;
}

static void test_peft_made_adapter_loads_with_peft_logits(void **state) {
    (void)state;
    ref_logits ref;
    read_ref(RT "/peft_logits.safetensors", &ref);
    /* the modules, ranks and scales PEFT reported for this adapter (peft_roundtrip.log) */
    static const struct {
        const char *module;
        int r;
        float scale;
    } want[] = {
        {"transformer.h.0.attn.c_attn", 6, 8.0f / 6}, {"transformer.h.0.attn.c_proj", 4, 2},
        {"transformer.h.0.mlp.c_fc", 4, 2},           {"transformer.h.0.mlp.c_proj", 2, 4},
        {"transformer.h.1.attn.c_attn", 4, 2},        {"transformer.h.1.attn.c_proj", 4, 0.75f},
        {"transformer.h.1.mlp.c_fc", 4, 2},           {"transformer.h.1.mlp.c_proj", 2, 4},
    };
    lp_err err;
    model *m;
    assert_int_equal(model_load(&m, BASE, &err), 0);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter a;
    if (peft_load(RT "/peft_made", mods, n_mods, &a, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(a.n_sites, 8);
    for (int i = 0; i < 8; i++) {
        const lora_site *s = &a.sites[i];
        assert_string_equal(mods[s->module].name, want[i].module);
        assert_int_equal(s->r, want[i].r);
        assert_float_equal(s->scale, want[i].scale, 1e-6);
    }
    lora_adapter_free(&a);
    model_free(m);
    size_t n;
    float *ours = logits_of(BASE, RT "/peft_made", ref.inputs, &n);
    assert_int_equal(n, ref.n);
    double mr, d = max_abs_diff(ours, ref.logits, n, &mr);
    printf("PEFT-made adapter: C logits vs PEFT's: max abs diff %.3e (max |logit| %.3g)\n", d, mr);
    assert_true(d <= 1e-4);
    /* and the adapter matters: without it the logits are far off */
    float *base = logits_of(BASE, NULL, ref.inputs, &n);
    double moved = max_abs_diff(base, ref.logits, n, NULL);
    printf("  (without the adapter: %.3g)\n", moved);
    assert_true(moved > 0.1);
    free(base);
    free(ours);
    free(ref.logits);
}

static void test_our_checkpoint_gives_the_logits_peft_checked(void **state) {
    (void)state;
    ref_logits ref;
    read_ref(RT "/ours_logits.safetensors", &ref);
    size_t n;
    float *ours = logits_of(BASE, RT "/ours_checkpoint", ref.inputs, &n);
    double d = max_abs_diff(ours, ref.logits, n, NULL);
    printf("our checkpoint: logits vs the ones compared with PEFT: %.3e\n", d);
    assert_true(d <= 1e-5);
    /* the checkpoint folder is a complete loraps checkpoint too */
    lp_err err;
    model *m;
    assert_int_equal(model_load(&m, BASE, &err), 0);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    ckpt_loaded ck;
    if (ckpt_load(RT "/ours_checkpoint", mods, n_mods, &ck, &err) < 0) fail_msg("%s", err.msg);
    assert_true(ck.has_state && ck.has_optimizer);
    assert_int_equal(ck.info.step, 20);
    assert_int_equal(ck.info.updates, 20);
    assert_int_equal(ck.info.n_ranks, 2);
    assert_int_equal(ck.info.ranks[1].next_step, 20);
    assert_int_equal(ck.info.ranks[1].next_sequence, 20 * 4 + 2);
    double vmax = 0;
    for (size_t i = 0; i < ck.adapter.n_params; i++) {
        assert_true(ck.v[i] >= 0);
        if (ck.v[i] > vmax) vmax = ck.v[i];
    }
    assert_true(vmax > 0); /* real moments, from both shards */
    ckpt_loaded_free(&ck);
    model_free(m);
    free(ours);
    free(ref.logits);
}

static void merge_and_compare(const char *adapter, const char *label) {
    char tmpl[] = "/tmp/loraps-merge.XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char out[512];
    snprintf(out, sizeof out, "%s/merged", dir);
    lp_err err;
    if (peft_merge(BASE, adapter, out, &err) < 0) fail_msg("%s", err.msg);
    ref_logits ref;
    read_ref(RT "/base_logits.safetensors", &ref); /* for the tokens */
    size_t n;
    float *with = logits_of(BASE, adapter, ref.inputs, &n);
    float *merged = logits_of(out, NULL, ref.inputs, &n);
    double mr, d = max_abs_diff(merged, with, n, &mr);
    printf("%s: merged model vs base + adapter: max |diff| %.3e, relative %.3e\n", label, d,
           d / mr);
    assert_true(d / mr <= 1e-5);
    double moved = max_abs_diff(ref.logits, with, n, NULL);
    assert_true(moved > 0.1); /* the adapter is not a no-op */
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    assert_true(fs_exists(cfg));
    free(with);
    free(merged);
    free(ref.logits);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_merge_equals_adapter(void **state) {
    (void)state;
    merge_and_compare(RT "/peft_made", "PEFT's adapter");
    merge_and_compare(RT "/ours_checkpoint", "our checkpoint");
}

static void test_merge_refuses_bad_input(void **state) {
    (void)state;
    lp_err err;
    /* never into the base model's own folder */
    assert_int_equal(peft_merge(BASE, RT "/peft_made", BASE, &err), -1);
    assert_non_null(strstr(err.msg, "another folder"));
    /* a truncated adapter is named */
    char tmpl[] = "/tmp/loraps-merge.XXXXXX";
    char *dir = mkdtemp(tmpl);
    char cmd[600], out[300];
    snprintf(cmd, sizeof cmd,
             "cp " RT "/peft_made/adapter_config.json %s/ && head -c 1000 " RT
             "/peft_made/adapter_model.safetensors > %s/adapter_model.safetensors",
             dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(out, sizeof out, "%s/merged", dir);
    assert_int_equal(peft_merge(BASE, dir, out, &err), -1);
    printf("truncated adapter: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "adapter_model.safetensors"));
    char model_file[400];
    snprintf(model_file, sizeof model_file, "%s/model.safetensors", out);
    assert_false(fs_exists(model_file));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* PEFT 0.21 features loraps does not implement are refused by name, not silently ignored. */
static void test_unsupported_features_refused(void **state) {
    (void)state;
    static const char *edits[][2] = {
        {"\"lora_bias\": false", "\"lora_bias\": true"},
        {"\"exclude_modules\": null", "\"exclude_modules\": [\"c_fc\"]"},
        {"\"use_dora\": false", "\"use_dora\": true"},
        {"\"layer_replication\": null", "\"layer_replication\": [[0, 1]]"},
        {"\"target_parameters\": null", "\"target_parameters\": [\"weight\"]"},
    };
    static const char *keys[] = {"lora_bias", "exclude_modules", "use_dora", "layer_replication",
                                 "target_parameters"};
    lp_err err;
    model *m;
    assert_int_equal(model_load(&m, BASE, &err), 0);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    char *text;
    size_t len;
    assert_int_equal(fs_read_all(RT "/peft_made/adapter_config.json", &text, &len, &err), 0);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char tmpl[] = "/tmp/loraps-peft.XXXXXX";
        char *dir = mkdtemp(tmpl), path[300], cmd[700];
        const char *at = strstr(text, edits[i][0]);
        assert_non_null(at);
        char *edited = malloc(len + 64);
        size_t pre = (size_t)(at - text);
        snprintf(edited, len + 64, "%.*s%s%s", (int)pre, text, edits[i][1],
                 at + strlen(edits[i][0]));
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        assert_int_equal(fs_write_atomic(path, edited, strlen(edited), &err), 0);
        snprintf(cmd, sizeof cmd, "cp " RT "/peft_made/adapter_model.safetensors %s/", dir);
        assert_int_equal(system(cmd), 0);
        lora_adapter a;
        assert_int_equal(peft_load(dir, mods, n_mods, &a, &err), -1);
        printf("%s: %s\n", keys[i], err.msg);
        assert_non_null(strstr(err.msg, keys[i]));
        free(edited);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
    }
    free(text);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peft_made_adapter_loads_with_peft_logits),
        cmocka_unit_test(test_our_checkpoint_gives_the_logits_peft_checked),
        cmocka_unit_test(test_merge_equals_adapter),
        cmocka_unit_test(test_merge_refuses_bad_input),
        cmocka_unit_test(test_unsupported_features_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
