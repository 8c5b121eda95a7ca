/* LORAPS_CPU_GEMM=bf16: the frozen-weight GEMMs in bf16 (oneDNN) against f32 (OpenBLAS).
 *
 * Where the CPU has AVX512-BF16 and the build has oneDNN:
 *  - each GEMM (forward and input-gradient, both weight layouts, bias, accumulate; the head's
 *    logits and loss) matches f32 over the same bf16 weights within a relative L2 error of 1e-2
 *    (the activations are rounded to bf16: 2^-9 relative per element);
 *  - on tiny GPT-2 and Llama models, one step's loss is within 0.1% of f32's and the LoRA
 *    gradients within a relative L2 error of 2% (cosine > 0.999; measured: 1e-5, 0.3%, 0.99999);
 *    over 40 AdamW steps each step's loss stays within 5% of f32's and the loss falls at least
 *    0.9 times as far (measured: at most 2.3%, and 0.97 times).
 * Elsewhere the option is refused with a message that says why. A value that is neither f32 nor
 * bf16 is refused everywhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "adamw.h"
#include "cpu_gemm.h"
#include "demo_task.h"
#include "dtype.h"
#include "llama_init.h"
#include "lora.h"
#include "lora_targets.h"
#include "model.h"
#include "model_init.h"
#include "model_load.h"
#include "ops.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static double rel_l2(const float *got, const float *want, size_t n) {
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        w += (double)want[i] * want[i];
    }
    return sqrt(d / (w > 0 ? w : 1));
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb + 1e-300);
}

static void remove_tree(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static float *random_floats(size_t n, uint64_t seed, float scale) {
    float *p = malloc(n * sizeof *p);
    rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = scale * (2.0f * rng_uniform(&r) - 1.0f);
    return p;
}

/* A matrix rounded to bf16, and the same values widened back to f32. */
static void bf16_pair(size_t n, uint64_t seed, uint16_t **b16, float **f32) {
    float *src = random_floats(n, seed, 0.1f);
    *b16 = malloc(n * sizeof **b16);
    *f32 = malloc(n * sizeof **f32);
    assert_int_equal(dtype_from_f32(src, DT_BF16, *b16, n), 0);
    assert_int_equal(dtype_to_f32(*b16, DT_BF16, *f32, n), 0);
    free(src);
}

static ops_ctx *ctx_new(int bf16) {
    ops_limits lim = {.max_rows = 256,
                      .max_T = 64,
                      .max_heads = 4,
                      .head_dim = 16,
                      .vocab = 1000,
                      .max_matrix = 1 << 20,
                      .bf16_gemm = bf16};
    ops_ctx *c;
    lp_err err;
    if (ops_ctx_new(&c, device_cpu(), &lim, &err) < 0) fail_msg("ops context: %s", err.msg);
    return c;
}

static int bf16_here(void) {
    lp_err why;
    int ok = cpu_gemm_bf16_available(&why) == 0;
    if (!ok) print_message("bf16 GEMMs cannot run here: %s\n", why.msg);
    return ok;
}

/* ---- the ops ------------------------------------------------------------------------------- */

static void check_matmuls(int N, int IC, int OC, weight_layout layout) {
    ops_ctx *c16 = ctx_new(1), *c32 = ctx_new(0);
    uint16_t *w16;
    float *w32, *inp = random_floats((size_t)N * IC, 1, 1.0f);
    float *bias = random_floats((size_t)OC, 2, 0.5f), *dout = random_floats((size_t)N * OC, 3, 1);
    bf16_pair((size_t)IC * OC, 4, &w16, &w32);
    weight wb = {.data = w16, .dtype = DT_BF16, .numel = (size_t)IC * OC};
    weight wf = {.data = w32, .dtype = DT_F32, .numel = (size_t)IC * OC};
    weight b = {.data = bias, .dtype = DT_F32, .numel = (size_t)OC};
    float *o16 = malloc(sizeof(float) * N * OC), *o32 = malloc(sizeof(float) * N * OC);
    float *d16 = malloc(sizeof(float) * N * IC), *d32 = malloc(sizeof(float) * N * IC);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        matmul_forward(c16, (act *)o16, (const act *)inp, &wb, layout, with_bias ? &b : NULL, N, IC,
                       OC);
        matmul_forward(c32, (act *)o32, (const act *)inp, &wf, layout, with_bias ? &b : NULL, N, IC,
                       OC);
        assert_true(rel_l2(o16, o32, (size_t)N * OC) < 1e-2);
    }
    for (int accumulate = 0; accumulate < 2; accumulate++) {
        for (int i = 0; i < N * IC; i++) d16[i] = d32[i] = 0.25f; /* what += adds to */
        matmul_backward(c16, (act *)d16, (const act *)dout, &wb, layout, N, IC, OC, accumulate);
        matmul_backward(c32, (act *)d32, (const act *)dout, &wf, layout, N, IC, OC, accumulate);
        assert_true(rel_l2(d16, d32, (size_t)N * IC) < 1e-2);
    }
    free(o16), free(o32), free(d16), free(d32), free(inp), free(bias), free(dout), free(w16),
        free(w32);
    ops_ctx_free(c16);
    ops_ctx_free(c32);
}

static void test_matmuls_match_f32(void **state) {
    (void)state;
    if (!bf16_here()) skip();
    check_matmuls(96, 64, 192, W_IN_OUT); /* GPT-2's Conv1D [in,out] */
    check_matmuls(96, 64, 192, W_OUT_IN); /* nn.Linear [out,in] */
    check_matmuls(130, 80, 48, W_OUT_IN); /* odd sizes, a narrowing layer */
    check_matmuls(7, 256, 96, W_IN_OUT);  /* few rows */
}

static void test_head_matches_f32(void **state) {
    (void)state;
    if (!bf16_here()) skip();
    enum { ROWS = 200, C = 64, V = 1000 }; /* two chunks of rows */
    ops_ctx *c16 = ctx_new(1), *c32 = ctx_new(0);
    uint16_t *h16;
    float *h32, *x = random_floats((size_t)ROWS * C, 5, 1.0f);
    bf16_pair((size_t)V * C, 6, &h16, &h32);
    weight hb = {.data = h16, .dtype = DT_BF16, .numel = (size_t)V * C};
    weight hf = {.data = h32, .dtype = DT_F32, .numel = (size_t)V * C};
    int targets[ROWS];
    for (int i = 0; i < ROWS; i++) targets[i] = i % 7 == 0 ? -1 : (i * 37) % V;
    float l16[ROWS], l32[ROWS], *dx16 = malloc(sizeof(float) * ROWS * C),
                                *dx32 = malloc(sizeof(float) * ROWS * C);
    head_loss(c16, (const act *)x, &hb, targets, ROWS, C, V, 1.0f / ROWS, (act *)dx16, NULL, l16);
    head_loss(c32, (const act *)x, &hf, targets, ROWS, C, V, 1.0f / ROWS, (act *)dx32, NULL, l32);
    assert_true(rel_l2(l16, l32, ROWS) < 1e-2);
    assert_true(rel_l2(dx16, dx32, (size_t)ROWS * C) < 1e-2);
    float *g16 = malloc(sizeof(float) * 4 * V), *g32 = malloc(sizeof(float) * 4 * V);
    head_logits(c16, g16, (const act *)x, &hb, 4, C, V);
    head_logits(c32, g32, (const act *)x, &hf, 4, C, V);
    assert_true(rel_l2(g16, g32, (size_t)4 * V) < 1e-2);
    free(x), free(h16), free(h32), free(dx16), free(dx32), free(g16), free(g32);
    ops_ctx_free(c16);
    ops_ctx_free(c32);
}

/* ---- training -------------------------------------------------------------------------------- */

enum { B = 4, T = 32, STEPS = 40 };

typedef struct run {
    model *m;
    lora_config lc;
    lora_adapter a;
    model_trainer *t;
    float *mom, *vel;
} run;

static void run_open(run *r, const char *dir, const char *gemm) {
    lp_err err;
    setenv("LORAPS_CPU_GEMM", gemm, 1);
    if (model_load(&r->m, dir, &err) < 0) fail_msg("%s", err.msg);
    unsetenv("LORAPS_CPU_GEMM");
    lora_config_defaults(&r->lc);
    const lora_module *mods;
    int n_mods = model_lora_modules(r->m, &mods);
    if (lora_config_set_targets(&r->lc, "all-linear", &err) < 0 ||
        lora_adapter_build(&r->a, &r->lc, mods, n_mods, &err) < 0)
        fail_msg("%s", err.msg);
    lora_adapter_init(&r->a, 3);
    for (size_t i = 0; i < r->a.n_params; i++) r->a.params[i] += 1e-2f; /* B != 0 */
    if (model_trainer_new(&r->t, r->m, &r->a, B, T, &err) < 0) fail_msg("%s", err.msg);
    r->mom = calloc(r->a.n_params, sizeof(float));
    r->vel = calloc(r->a.n_params, sizeof(float));
}

static double run_step(run *r, const int *in, const int *tg, int step) {
    lp_err err;
    model_step out;
    adamw_config opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    lora_adapter_zero_grad(&r->a);
    if (model_trainer_step(r->t, in, tg, 1.0f / (B * T), 1, 0, &out, &err) < 0)
        fail_msg("%s", err.msg);
    if (step > 0)
        adamw_update(r->a.params, r->a.grads, r->mom, r->vel, r->a.n_params, 3e-3f, &opt, step);
    return out.loss_sum / out.n_tokens;
}

static void run_close(run *r) {
    model_trainer_free(r->t);
    lora_adapter_free(&r->a);
    lora_config_free(&r->lc);
    model_free(r->m);
    free(r->mom);
    free(r->vel);
}

static void check_training(const char *dir) {
    run r16, r32;
    run_open(&r32, dir, "f32");
    run_open(&r16, dir, "bf16");
    assert_true(model_weight_bytes(r16.m) < model_weight_bytes(r32.m)); /* matrices in bf16 */
    assert_true(model_fingerprint(r16.m) == model_fingerprint(r32.m));  /* the same base model */
    demo_task task;
    demo_task_init(&task, 1, model_vocab_size(r32.m));
    int in[B * T], tg[B * T];
    double first16 = 0, first32 = 0, last16 = 0, last32 = 0, worst = 0;
    for (int s = 0; s <= STEPS; s++) {
        demo_task_batch(&task, (uint64_t)s * B, B, T, in, tg);
        double l32 = run_step(&r32, in, tg, s), l16 = run_step(&r16, in, tg, s);
        if (s == 0) { /* the same parameters: the gradients are comparable */
            assert_true(fabs(l16 - l32) < 1e-3 * l32);
            double rel = rel_l2(r16.a.grads, r32.a.grads, r32.a.n_params);
            double cos = cosine(r16.a.grads, r32.a.grads, r32.a.n_params);
            print_message("%s: step 0 loss %.5f (f32 %.5f), gradients rel. L2 %.4f, cosine %.6f\n",
                          dir, l16, l32, rel, cos);
            assert_true(rel < 0.02);
            assert_true(cos > 0.999);
            first16 = l16, first32 = l32;
        }
        worst = fmax(worst, fabs(l16 - l32) / l32);
        last16 = l16, last32 = l32;
    }
    print_message("%s: loss %.4f -> %.4f in bf16, %.4f -> %.4f in f32; steps differ by %.2f%% "
                  "at most\n",
                  dir, first16, last16, first32, last32, 100 * worst);
    assert_true(worst < 0.05);
    assert_true(last32 < 0.9 * first32); /* it learns at all */
    assert_true(first16 - last16 > 0.9 * (first32 - last32));
    run_close(&r16);
    run_close(&r32);
    remove_tree(dir);
}

/* A tiny random model in a new folder dir (a mkdtemp template): GPT-2 stored in f32 (rounded to
 * bf16 at load), or Llama stored in bf16 (used as stored). */
static void write_tiny(char *dir, const char *arch) {
    lp_err err;
    assert_non_null(mkdtemp(dir));
    if (!strcmp(arch, "gpt2")) {
        gpt2_config c;
        assert_int_equal(model_preset("tiny", &c, &err), 0);
        assert_int_equal(model_init_write(dir, &c, 7, &err), 0);
    } else {
        llama_config c;
        assert_int_equal(llama_preset("tiny", &c, &err), 0);
        assert_int_equal(llama_init_write_as(dir, &c, 7, DT_BF16, 0, &err), 0);
    }
}

static void test_gpt2_trains_as_in_f32(void **state) {
    (void)state;
    if (!bf16_here()) skip();
    char dir[] = "/tmp/loraps-gemm-XXXXXX";
    write_tiny(dir, "gpt2");
    check_training(dir);
}

static void test_llama_trains_as_in_f32(void **state) {
    (void)state;
    if (!bf16_here()) skip();
    char dir[] = "/tmp/loraps-gemm-XXXXXX";
    write_tiny(dir, "llama");
    check_training(dir);
}

/* ---- refusals -------------------------------------------------------------------------------- */

static void test_refusals(void **state) {
    (void)state;
    cpu_gemm_mode mode;
    lp_err err, why;
    setenv("LORAPS_CPU_GEMM", "fp8", 1);
    assert_int_equal(cpu_gemm_mode_from_env(&mode, &err), -1);
    assert_string_equal(err.msg, "LORAPS_CPU_GEMM=fp8: expected f32 or bf16");
    setenv("LORAPS_CPU_GEMM", "f32", 1);
    assert_int_equal(cpu_gemm_mode_from_env(&mode, &err), 0);
    assert_int_equal(mode, CPU_GEMM_F32);
    setenv("LORAPS_CPU_GEMM", "bf16", 1);
    if (cpu_gemm_bf16_available(&why) == 0) {
        assert_int_equal(cpu_gemm_mode_from_env(&mode, &err), 0);
        assert_int_equal(mode, CPU_GEMM_BF16);
    } else { /* refused, with the reason: no AVX512-BF16, or no oneDNN in the build */
        assert_int_equal(cpu_gemm_mode_from_env(&mode, &err), -1);
        char want[1100];
        snprintf(want, sizeof want, "LORAPS_CPU_GEMM=bf16: %s", why.msg);
        assert_string_equal(err.msg, want);
        assert_true(strstr(why.msg, "AVX512-BF16") || strstr(why.msg, "oneDNN"));
        /* and a model does not load in a mode it cannot run */
        char dir[] = "/tmp/loraps-gemm-XXXXXX";
        write_tiny(dir, "gpt2");
        model *m;
        assert_int_equal(model_load(&m, dir, &err), -1);
        assert_non_null(strstr(err.msg, "LORAPS_CPU_GEMM=bf16: "));
        remove_tree(dir);
    }
    unsetenv("LORAPS_CPU_GEMM");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_matmuls_match_f32),
        cmocka_unit_test(test_head_matches_f32),
        cmocka_unit_test(test_gpt2_trains_as_in_f32),
        cmocka_unit_test(test_llama_trains_as_in_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
