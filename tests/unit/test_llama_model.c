/* The Llama family outside the numerics of test_llama_golden / test_llama_gradcheck:
 * config.json parsing (transformers 4 and 5 spellings of rope settings, per-type defaults,
 * errors that name the field), init + load round trips, the module list, missing tensors, BF16
 * weights kept in bf16 versus widened at load (same fingerprint, identical logits, half the
 * bytes), a sharded checkpoint (same fingerprint and logits as one file), F16 weights, and the
 * KV-cache session against the trainer's full forward (whole prompts, one token at a time, chunks
 * longer than the session's internal chunk, reset, limits). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "lora_targets.h"
#include "model_load.h"
#include "hf_config.h"
#include "llama_config.h"
#include "llama_init.h"
#include "lora.h"
#include "model.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"

#define GOLDEN_DIR LORAPS_TEST_DATA "/reference/golden"

static void check_ok(int rc, const lp_err *err, const char *what) {
    if (rc != 0) fail_msg("%s: %s", what, err->msg);
}

static char tmpdir[64];

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loraps_llama_model_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text as <tmpdir>/<name>/config.json and returns the path. */
static const char *write_config(const char *name, const char *text) {
    static char path[256];
    char dir[192];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    lp_err err = {0};
    check_ok(fs_mkdirs(dir, &err), &err, dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    check_ok(fs_write_atomic(path, text, strlen(text), &err), &err, path);
    return path;
}

#define BASE                                                                                       \
    "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "                  \
    "\"num_attention_heads\": 4, \"vocab_size\": 100"

/* ---------------------------------------------------------------------------------------------
 * config.json */

static void test_config_defaults_and_types(void **state) {
    (void)state;
    llama_config c;
    lp_err err = {0};
    /* llama: KV heads default to the heads, head_dim to hidden / heads, no biases, untied */
    const char *p = write_config("c1", "{\"model_type\": \"llama\", " BASE ", \"head_dim\": null}");
    check_ok(llama_config_read(&c, p, &err), &err, "llama");
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_int_equal(c.qkv_bias + c.o_bias + c.mlp_bias + c.tie_word_embeddings, 0);
    assert_true(c.rope_theta == 10000.0 && c.rope_type == LLAMA_ROPE_DEFAULT);
    assert_true(fabsf(c.rms_norm_eps - 1e-6f) < 1e-12f);
    /* llama with attention_bias: q/k/v and o */
    p = write_config("c2", "{\"model_type\": \"llama\", " BASE
                           ", \"attention_bias\": true, \"num_key_value_heads\": 2, "
                           "\"tie_word_embeddings\": true, \"rms_norm_eps\": 1e-5}");
    check_ok(llama_config_read(&c, p, &err), &err, "llama bias");
    assert_true(c.qkv_bias && c.o_bias && !c.mlp_bias && c.tie_word_embeddings);
    assert_int_equal(c.num_key_value_heads, 2);
    /* qwen2: q/k/v biases always, o_proj none; its own max_position default */
    p = write_config("c3", "{\"model_type\": \"qwen2\", " BASE ", \"rope_theta\": 1000000.0}");
    check_ok(llama_config_read(&c, p, &err), &err, "qwen2");
    assert_true(c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_true(c.rope_theta == 1e6);
    /* mistral: sliding window kept */
    p = write_config("c4", "{\"model_type\": \"mistral\", " BASE
                           ", \"sliding_window\": 4096, \"max_position_embeddings\": 32768}");
    check_ok(llama_config_read(&c, p, &err), &err, "mistral");
    assert_int_equal(c.sliding_window, 4096);
    p = write_config("c5", "{\"model_type\": \"mistral\", " BASE ", \"sliding_window\": null}");
    check_ok(llama_config_read(&c, p, &err), &err, "mistral null window");
    assert_int_equal(c.sliding_window, 0);
}

static void test_config_rope(void **state) {
    (void)state;
    llama_config c;
    lp_err err = {0};
    /* transformers 5: rope_parameters carries theta and the llama3 scaling */
    const char *p = write_config(
        "r1", "{\"model_type\": \"llama\", " BASE
              ", \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, "
              "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 8192}}");
    check_ok(llama_config_read(&c, p, &err), &err, "rope_parameters");
    assert_int_equal(c.rope_type, LLAMA_ROPE_LLAMA3);
    assert_true(c.rope_theta == 500000.0 && c.rope_factor == 8.0);
    assert_int_equal(c.rope_original_max_position_embeddings, 8192);
    /* llama3 frequencies: high ones unchanged, low ones divided by factor, smooth between */
    double f[8];
    c.head_dim = 16;
    c.rope_theta = 10000;
    c.rope_original_max_position_embeddings = 32;
    c.rope_factor = 4;
    llama_rope_inv_freq(&c, f);
    for (int i = 0; i < 8; i++) {
        double base = 1.0 / pow(10000.0, 2.0 * i / 16), wavelen = 2 * M_PI / base, want = base;
        if (wavelen > 32.0)
            want = base / 4;
        else if (wavelen >= 8.0) {
            double s = (32.0 / wavelen - 1.0) / 3.0;
            want = (1 - s) * base / 4 + s * base;
        }
        assert_true(fabs(f[i] - want) <= 1e-12 * want);
    }
    assert_true(f[0] == 1.0 && f[7] < 1.0 / pow(10000.0, 14.0 / 16) / 3.9);
    /* transformers 4: top-level theta, rope_scaling with "type" */
    p = write_config("r2", "{\"model_type\": \"llama\", " BASE
                           ", \"rope_theta\": 1e5, \"rope_scaling\": {\"type\": \"linear\", "
                           "\"factor\": 2.0}}");
    check_ok(llama_config_read(&c, p, &err), &err, "rope_scaling linear");
    assert_int_equal(c.rope_type, LLAMA_ROPE_LINEAR);
    assert_true(c.rope_theta == 1e5 && c.rope_factor == 2.0);
    p = write_config("r3", "{\"model_type\": \"llama\", " BASE
                           ", \"rope_scaling\": null, \"rope_parameters\": {\"rope_type\": "
                           "\"default\", \"rope_theta\": 100000}}");
    check_ok(llama_config_read(&c, p, &err), &err, "rope default");
    assert_true(c.rope_type == LLAMA_ROPE_DEFAULT && c.rope_theta == 1e5);
}

static void expect_error(const char *name, const char *json, const char *needle) {
    llama_config c;
    lp_err err = {0};
    const char *p = write_config(name, json);
    if (llama_config_read(&c, p, &err) == 0) fail_msg("%s: accepted %s", name, json);
    if (!strstr(err.msg, needle))
        fail_msg("%s: error \"%s\" does not name %s", name, err.msg, needle);
    print_message("  %-4s %s\n", name, err.msg + strlen(p) + 2);
}

static void test_config_errors(void **state) {
    (void)state;
    expect_error("e1",
                 "{\"model_type\": \"llama\", \"intermediate_size\": 128, \"num_hidden_layers\": "
                 "2, \"num_attention_heads\": 4, \"vocab_size\": 100}",
                 "'hidden_size' is missing");
    expect_error("e2",
                 "{\"model_type\": \"llama\", \"hidden_size\": \"64\", \"intermediate_size\": 128, "
                 "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}",
                 "'hidden_size' must be a positive integer");
    expect_error("e3", "{\"model_type\": \"llama\", " BASE ", \"num_key_value_heads\": 3}",
                 "num_key_value_heads");
    expect_error("e4", "{\"model_type\": \"llama\", " BASE ", \"hidden_act\": \"gelu\"}",
                 "'hidden_act'");
    expect_error("e5", "{\"model_type\": \"gemma\", " BASE "}", "'model_type'");
    expect_error("e6",
                 "{\"model_type\": \"llama\", " BASE
                 ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
                 "'rope_scaling.rope_type'");
    expect_error("e7",
                 "{\"model_type\": \"llama\", " BASE
                 ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, "
                 "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
                 "'rope_scaling.low_freq_factor' is missing");
    expect_error("e8", "{\"model_type\": \"qwen2\", " BASE ", \"use_sliding_window\": true}",
                 "'use_sliding_window'");
    expect_error("e9", "{\"model_type\": \"llama\", " BASE ", \"rms_norm_eps\": -1}",
                 "'rms_norm_eps'");
    expect_error("e10", "{\"model_type\": \"llama\", " BASE ", \"head_dim\": 7}", "'head_dim'");
    expect_error("e11", "{\"model_type\": \"llama\", " BASE ", \"tie_word_embeddings\": 1}",
                 "'tie_word_embeddings'");
    expect_error("e12", "{\"model_type\": \"llama\", " BASE, "malformed JSON");
}

/* ---------------------------------------------------------------------------------------------
 * init, load, modules */

static void test_presets_roundtrip(void **state) {
    (void)state;
    const char *names[] = {"tiny", "small", "smollm-135m-shape"};
    for (int i = 0; i < 3; i++) {
        llama_config c, back;
        lp_err err = {0};
        check_ok(llama_preset(names[i], &c, &err), &err, names[i]);
        char dir[192], path[256];
        snprintf(dir, sizeof dir, "%s/preset%d", tmpdir, i);
        check_ok(fs_mkdirs(dir, &err), &err, dir);
        snprintf(path, sizeof path, "%s/config.json", dir);
        check_ok(llama_config_write(&c, path, &err), &err, "llama_config_write");
        check_ok(llama_config_read(&back, path, &err), &err, "llama_config_read");
        assert_memory_equal(&c, &back, sizeof c);
    }
    llama_config c;
    lp_err err = {0};
    check_ok(llama_preset("smollm-135m-shape", &c, &err), &err, "smollm");
    assert_int_equal(c.hidden_size, 576);
    assert_int_equal(c.num_hidden_layers, 30);
    assert_int_equal(c.num_attention_heads, 9);
    assert_int_equal(c.num_key_value_heads, 3);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.intermediate_size, 1536);
    assert_int_equal(c.vocab_size, 49152);
    assert_int_equal(c.max_position_embeddings, 8192);
    assert_true(c.tie_word_embeddings && c.rope_theta == 100000.0);
    /* qwen2 and mistral (with its sliding window) round-trip too */
    const char *types[2] = {"qwen2", "mistral"};
    for (int i = 0; i < 2; i++) {
        llama_config back;
        check_ok(llama_preset("tiny", &c, &err), &err, "tiny");
        snprintf(c.model_type, sizeof c.model_type, "%s", types[i]);
        c.qkv_bias = i == 0;
        c.sliding_window = i == 1 ? 96 : 0;
        char path[256];
        snprintf(path, sizeof path, "%s/preset0/config.json", tmpdir);
        check_ok(llama_config_write(&c, path, &err), &err, "llama_config_write");
        check_ok(llama_config_read(&back, path, &err), &err, "llama_config_read");
        assert_memory_equal(&c, &back, sizeof c);
    }
    /* a mistral whose window is shorter than its positions: sequences are limited to it */
    char dir[192];
    snprintf(dir, sizeof dir, "%s/mistral", tmpdir);
    check_ok(llama_init_write(dir, &c, 3, &err), &err, "llama_init_write mistral");
    model *m = NULL;
    check_ok(model_load(&m, dir, &err), &err, "model_load mistral");
    assert_string_equal(model_arch(m), "mistral");
    assert_int_equal(model_max_seq_len(m), 96);
    model_free(m);
    assert_int_equal(llama_preset("huge", &c, &err), -1);
    assert_non_null(strstr(err.msg, "smollm-135m-shape"));
}

static void test_load_modules_and_missing(void **state) {
    (void)state;
    llama_config c;
    lp_err err = {0};
    check_ok(llama_preset("tiny", &c, &err), &err, "tiny");
    c.tie_word_embeddings = 0;
    char dir[192];
    snprintf(dir, sizeof dir, "%s/tiny", tmpdir);
    check_ok(llama_init_write(dir, &c, 5, &err), &err, "llama_init_write");
    model *m = NULL;
    check_ok(model_load(&m, dir, &err), &err, "model_load");
    assert_string_equal(model_arch(m), "llama");
    assert_int_equal(model_vocab_size(m), 512);
    assert_int_equal(model_max_seq_len(m), 128);
    assert_int_equal(model_hidden_size(m), 64);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    assert_int_equal(n, 14);
    const char *want[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                           "mlp.down_proj"};
    const int dims[7][2] = {{64, 64},  {64, 32},  {64, 32}, {64, 64},
                            {64, 128}, {64, 128}, {128, 64}};
    for (int i = 0; i < n; i++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.%s", i / 7, want[i % 7]);
        assert_string_equal(mods[i].name, name);
        assert_int_equal(mods[i].layer, i / 7);
        assert_int_equal(mods[i].in, dims[i % 7][0]);
        assert_int_equal(mods[i].out, dims[i % 7][1]);
    }
    /* 64*512 embed + 512*64 head + 2 layers of (64*64*2 + 64*32*2 + 64*128*3 + 2*64) + 64 */
    size_t params = 2 * 512 * 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3 + 128) + 64;
    assert_int_equal(model_weight_bytes(m), params * 4);
    /* PEFT's key for the adapter of the first module */
    lora_config lc;
    lora_config_defaults(&lc);
    check_ok(lora_config_set_targets(&lc, "q_proj,down_proj", &err), &err, "targets");
    lora_adapter a;
    check_ok(lora_adapter_build(&a, &lc, mods, n, &err), &err, "lora_adapter_build");
    assert_int_equal(a.n_sites, 4);
    assert_string_equal(a.tensors[0].name,
                        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    lora_adapter_free(&a);
    lora_config_free(&lc);
    model_free(m);

    /* a config asking for a third layer the weights lack: the missing tensor is named */
    c.num_hidden_layers = 3;
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    check_ok(llama_config_write(&c, path, &err), &err, "llama_config_write");
    assert_int_equal(model_load(&m, dir, &err), -1);
    print_message("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "layers.2.input_layernorm.weight' is missing"));
    /* and one with another hidden size: the misshapen tensor is named */
    c.num_hidden_layers = 2;
    c.intermediate_size = 96;
    check_ok(llama_config_write(&c, path, &err), &err, "llama_config_write");
    assert_int_equal(model_load(&m, dir, &err), -1);
    print_message("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "mlp.gate_proj.weight' has shape [128,64], expected [96,64]"));
}

/* ---------------------------------------------------------------------------------------------
 * BF16 weights: kept in bf16 (default) or widened at load */

static void logits_of(const char *dir, const int *tokens, int T, float *logits, uint64_t *fp,
                      size_t *bytes) {
    model *m = NULL;
    lp_err err = {0};
    check_ok(model_load(&m, dir, &err), &err, "model_load");
    lora_config lc;
    lora_config_defaults(&lc);
    check_ok(lora_config_set_targets(&lc, "v_proj,up_proj", &err), &err, "targets");
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    lora_adapter a;
    check_ok(lora_adapter_build(&a, &lc, mods, n, &err), &err, "lora_adapter_build");
    lora_adapter_init(&a, 3);
    for (size_t i = 0; i < a.n_params; i++) a.params[i] += 0.01f;
    model_trainer *t = NULL;
    check_ok(model_trainer_new(&t, m, &a, 1, T, &err), &err, "model_trainer_new");
    check_ok(model_trainer_logits(t, tokens, logits, &err), &err, "model_trainer_logits");
    *fp = model_fingerprint(m);
    *bytes = model_weight_bytes(m);
    model_trainer_free(t);
    lora_adapter_free(&a);
    lora_config_free(&lc);
    model_free(m);
}

static void test_bf16_kept_and_widened(void **state) {
    (void)state;
    llama_config c;
    lp_err err = {0};
    check_ok(llama_preset("tiny", &c, &err), &err, "tiny");
    char dir[192];
    snprintf(dir, sizeof dir, "%s/bf16", tmpdir);
    check_ok(llama_init_write_as(dir, &c, 9, DT_BF16, 0.1f, &err), &err, "llama_init_write_as");
    const int T = 20, V = 512;
    int tokens[20];
    for (int i = 0; i < T; i++) tokens[i] = (i * 37 + 11) % V;
    float *kept = malloc(sizeof(float) * T * V), *widened = malloc(sizeof(float) * T * V);
    uint64_t fp_kept, fp_widened;
    size_t bytes_kept, bytes_widened;
    unsetenv("LORAPS_BF16_WEIGHTS");
    logits_of(dir, tokens, T, kept, &fp_kept, &bytes_kept);
    setenv("LORAPS_BF16_WEIGHTS", "f32", 1);
    logits_of(dir, tokens, T, widened, &fp_widened, &bytes_widened);
    unsetenv("LORAPS_BF16_WEIGHTS");
    print_message("  weights: bf16 kept %zu bytes, widened to f32 %zu bytes\n", bytes_kept,
                  bytes_widened);
    assert_true(fp_kept == fp_widened);
    /* widening bf16 is exact, so the same GEMMs see the same numbers */
    assert_memory_equal(kept, widened, sizeof(float) * T * V);
    /* the layer matrices are half the bytes; embedding and norms stay f32 */
    size_t mats = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3);
    assert_int_equal(bytes_widened - bytes_kept, mats * 2);
    free(kept);
    free(widened);
}

/* ---------------------------------------------------------------------------------------------
 * KV-cache sessions */

static double max_abs_diff(const float *a, const float *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

#define SESSION_TOL 2e-5 /* the same float ops in another order (GEMM shapes differ) */

static void session_case(const char *dir, const char *targets, int T) {
    model *m = NULL;
    lp_err err = {0};
    check_ok(model_load(&m, dir, &err), &err, "model_load");
    const int V = model_vocab_size(m);
    lora_config lc;
    lora_config_defaults(&lc);
    check_ok(lora_config_set_targets(&lc, targets, &err), &err, "targets");
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    lora_adapter a;
    check_ok(lora_adapter_build(&a, &lc, mods, n, &err), &err, "lora_adapter_build");
    lora_adapter_init(&a, 4);
    rng r;
    rng_seed(&r, 8);
    for (int i = 0; i < a.n_sites; i++) {
        float *B = a.params + a.sites[i].b_offset;
        for (int k = 0; k < a.sites[i].out * a.sites[i].r; k++) B[k] = 0.05f * rng_normal(&r);
    }
    /* two sequences; the trainer's logits for both */
    int *tok = malloc(sizeof(int) * 2 * T);
    for (int i = 0; i < 2 * T; i++) tok[i] = (int)rng_below(&r, (uint32_t)V);
    float *full = malloc(sizeof(float) * 2 * T * V), *lg = malloc(sizeof(float) * V);
    model_trainer *t = NULL;
    check_ok(model_trainer_new(&t, m, &a, 2, T, &err), &err, "model_trainer_new");
    check_ok(model_trainer_logits(t, tok, full, &err), &err, "model_trainer_logits");

    model_session *s = NULL;
    check_ok(model_session_new(&s, m, &a, T, &err), &err, "model_session_new");
    double worst = 0;
    for (int b = 0; b < 2; b++) {
        const int *seq = tok + b * T;
        const float *ref = full + (size_t)b * T * V;
        /* the whole prompt at once (more than one internal chunk when T > 64) */
        model_session_reset(s);
        check_ok(model_session_feed(s, seq, T, lg, &err), &err, "feed all");
        assert_int_equal(model_session_length(s), T);
        worst = fmax(worst, max_abs_diff(lg, ref + (size_t)(T - 1) * V, V));
        /* a prompt of 5, then one token at a time */
        model_session_reset(s);
        assert_int_equal(model_session_length(s), 0);
        check_ok(model_session_feed(s, seq, 5, lg, &err), &err, "feed 5");
        worst = fmax(worst, max_abs_diff(lg, ref + (size_t)4 * V, V));
        for (int i = 5; i < T; i++) {
            check_ok(model_session_feed(s, seq + i, 1, lg, &err), &err, "feed 1");
            worst = fmax(worst, max_abs_diff(lg, ref + (size_t)i * V, V));
        }
        /* full: one more token is refused, and the session is unchanged */
        assert_int_equal(model_session_feed(s, seq, 1, lg, &err), -1);
        assert_non_null(strstr(err.msg, "exceed"));
        assert_int_equal(model_session_length(s), T);
    }
    print_message("  %s (%s, T=%d): session vs full forward max|diff| %.2e\n", dir, targets, T,
                  worst);
    assert_true(worst <= SESSION_TOL);
    /* a token outside the vocabulary is refused */
    model_session_reset(s);
    int bad = V;
    assert_int_equal(model_session_feed(s, &bad, 1, lg, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    model_session_free(s);

    /* no adapter: the base model, as a trainer whose adapter has B = 0 */
    for (int i = 0; i < a.n_sites; i++)
        memset(a.params + a.sites[i].b_offset, 0,
               sizeof(float) * (size_t)a.sites[i].out * a.sites[i].r);
    check_ok(model_trainer_logits(t, tok, full, &err), &err, "model_trainer_logits");
    check_ok(model_session_new(&s, m, NULL, T, &err), &err, "model_session_new (no adapter)");
    check_ok(model_session_feed(s, tok, T, lg, &err), &err, "feed");
    double base = max_abs_diff(lg, full + (size_t)(T - 1) * V, V);
    print_message("  no adapter vs B = 0: max|diff| %.2e\n", base);
    assert_true(base <= SESSION_TOL);
    model_session_free(s);
    assert_int_equal(model_session_new(&s, m, NULL, model_max_seq_len(m) + 1, &err), -1);

    model_trainer_free(t);
    free(tok), free(full), free(lg);
    lora_adapter_free(&a);
    lora_config_free(&lc);
    model_free(m);
}

/* ---------------------------------------------------------------------------------------------
 * sharded checkpoints and F16 weights */

static void test_sharded_and_f16(void **state) {
    (void)state;
    llama_config c;
    lp_err err = {0};
    check_ok(llama_preset("tiny", &c, &err), &err, "tiny");
    char one[192], sharded[192], f16[192], path[320];
    snprintf(one, sizeof one, "%s/one", tmpdir);
    snprintf(sharded, sizeof sharded, "%s/sharded", tmpdir);
    snprintf(f16, sizeof f16, "%s/f16", tmpdir);
    check_ok(llama_init_write_as(one, &c, 21, DT_F32, 0.1f, &err), &err, "write");
    check_ok(llama_init_write_as(f16, &c, 21, DT_F16, 0.1f, &err), &err, "write f16");
    /* the same tensors in two shards: layer 0 in one, everything else in the other */
    st_file f;
    snprintf(path, sizeof path, "%s/model.safetensors", one);
    check_ok(st_open(&f, path, &err), &err, path);
    check_ok(fs_mkdirs(sharded, &err), &err, sharded);
    st_writer *w[2] = {st_writer_new(), st_writer_new()};
    const char *file[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    size_t cap = 1 << 16, len = 0;
    char *index = malloc(cap);
    len += (size_t)snprintf(index + len, cap - len, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        int k = strstr(t->name, "layers.0.") ? 0 : 1;
        check_ok(st_writer_add(w[k], t->name, t->dtype, t->ndim, t->shape, t->data, &err), &err,
                 t->name);
        len += (size_t)snprintf(index + len, cap - len, "%s\"%s\": \"%s\"", i ? ", " : "", t->name,
                                file[k]);
    }
    len += (size_t)snprintf(index + len, cap - len, "}}\n");
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", sharded, file[k]);
        check_ok(st_writer_write(w[k], path, &err), &err, path);
        st_writer_free(w[k]);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", sharded);
    check_ok(fs_write_atomic(path, index, len, &err), &err, path);
    free(index);
    snprintf(path, sizeof path, "%s/config.json", sharded);
    check_ok(llama_config_write(&c, path, &err), &err, path);
    st_close(&f);

    const int T = 16, V = 512;
    int tokens[16];
    for (int i = 0; i < T; i++) tokens[i] = (i * 53 + 7) % V;
    float *a = malloc(sizeof(float) * T * V), *b = malloc(sizeof(float) * T * V),
          *h = malloc(sizeof(float) * T * V);
    uint64_t fa, fb, fh;
    size_t ba, bb, bh;
    logits_of(one, tokens, T, a, &fa, &ba);
    logits_of(sharded, tokens, T, b, &fb, &bb);
    logits_of(f16, tokens, T, h, &fh, &bh);
    assert_true(fa == fb);
    assert_int_equal(ba, bb);
    assert_memory_equal(a, b, sizeof(float) * T * V);
    /* F16 weights are widened to f32 at load: the logits move by the weights' rounding only */
    double d = max_abs_diff(a, h, T * V), m = 0;
    for (int i = 0; i < T * V; i++) m = fmax(m, fabs((double)a[i]));
    print_message("  sharded: same fingerprint and logits; F16 weights: logits max|diff| %.2e "
                  "(max|logit| %.2f)\n",
                  d, m);
    assert_true(fa != fh);
    assert_true(d > 0 && d < 1e-2 * m);
    free(a), free(b), free(h);
}

static void test_session_llama(void **state) {
    (void)state;
    /* GQA, untied head, llama3 rope; 100 tokens: two internal chunks */
    session_case(GOLDEN_DIR "/llama_tiny",
                 "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", 100);
}

static void test_session_qwen2(void **state) {
    (void)state;
    /* q/k/v biases, one KV head, tied head */
    session_case(GOLDEN_DIR "/qwen2_tiny", "q_proj,v_proj,down_proj", 40);
}

int main(void) {
    ops_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_and_types),
        cmocka_unit_test(test_config_rope),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_presets_roundtrip),
        cmocka_unit_test(test_load_modules_and_missing),
        cmocka_unit_test(test_bf16_kept_and_widened),
        cmocka_unit_test(test_sharded_and_f16),
        cmocka_unit_test(test_session_llama),
        cmocka_unit_test(test_session_qwen2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
