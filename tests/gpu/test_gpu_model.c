/* Whole models on the GPU: the golden vectors of tests/reference (float64 PyTorch, checked
 * against transformers + peft) for GPT-2 and the Llama family, and the GPU's training step
 * against the CPU's at shapes that take the flash-attention path, with LoRA dropout and gradient
 * accumulation, and over a short run of AdamW steps. Tolerances are bf16's: activations carry 8
 * bits of mantissa, the LoRA factors and their gradients are f32. Needs a GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "lora.h"
#include "lora_targets.h"
#include "model.h"
#include "model_load.h"
#include "rng.h"
#include "safetensors.h"
#include "synthetic_weights.h"
#include "train_step.h"

#define GOLDEN_DIR LORAPS_TEST_DATA "/reference/golden"

#include "golden.h"

#define GPU_LOGIT_TOL 2e-2 /* relative L2 over all logits */
#define GPU_LOSS_TOL  5e-3 /* relative */
#define GPU_GRAD_TOL  5e-2 /* relative L2, per tensor */

static device *gpu;

static double rel_l2(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (!isfinite(a[i])) return INFINITY;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- golden vectors ------------------------------------------------------------------------- */

static void golden_case(const char *name, const char *default_model) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", GOLDEN_DIR, name);
    lp_err err = {0};
    st_file g;
    check_ok(st_open(&g, path, &err), &err, path);
    const int B = atoi(meta(&g, "B")), T = atoi(meta(&g, "T"));
    lora_config cfg;
    lora_config_defaults(&cfg);
    cfg.r = atoi(meta(&g, "r"));
    cfg.alpha = strtof(meta(&g, "lora_alpha"), NULL);
    cfg.use_rslora = strcmp(meta(&g, "use_rslora"), "true") == 0;
    check_ok(lora_config_set_targets(&cfg, meta(&g, "target_modules"), &err), &err, "targets");
    const char *rp = st_metadata(&g, "rank_pattern"), *ap = st_metadata(&g, "alpha_pattern");
    if (rp && *rp) check_ok(lora_config_set_patterns(&cfg, 0, rp, &err), &err, "rank_pattern");
    if (ap && *ap) check_ok(lora_config_set_patterns(&cfg, 1, ap, &err), &err, "alpha_pattern");
    const char *model_name = st_metadata(&g, "model");
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s/%s", GOLDEN_DIR,
             model_name ? model_name : default_model);
    model *m;
    check_ok(model_load(&m, model_dir, &err), &err, "model_load");
    check_ok(model_place(m, gpu, &err), &err, "model_place");
    const int V = model_vocab_size(m);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter a;
    check_ok(lora_adapter_build(&a, &cfg, mods, n_mods, &err), &err, "lora_adapter_build");
    for (int i = 0; i < a.n_tensors; i++) {
        const st_tensor *gt = st_find(&g, a.tensors[i].name);
        if (!gt) fail_msg("%s is not in the golden file", a.tensors[i].name);
        check_ok(st_read_f32(gt, a.params + a.tensors[i].offset, a.tensors[i].numel, &err), &err,
                 a.tensors[i].name);
    }
    size_t n_tok = (size_t)B * T;
    int *inputs = read_i32(&g, "inputs", n_tok), *targets = read_i32(&g, "targets", n_tok);
    int n_valid = 0;
    for (size_t i = 0; i < n_tok; i++) n_valid += targets[i] >= 0;
    model_trainer *tr;
    check_ok(model_trainer_new(&tr, m, &a, B, T, &err), &err, "model_trainer_new");
    check_ok(model_trainer_load_params(tr, &err), &err, "load params");

    float *ref_logits = read_f32(&g, "logits", n_tok * V), *logits = calloc(n_tok * V, 4);
    check_ok(model_trainer_logits(tr, inputs, logits, &err), &err, "logits");
    double dl = rel_l2(logits, ref_logits, n_tok * V);

    float *ref_loss = read_f32(&g, "loss", 1);
    model_trainer_zero_grads(tr);
    model_step st;
    check_ok(model_trainer_step(tr, inputs, targets, 1.0f / n_valid, 0, 0, &st, &err), &err,
             "step");
    check_ok(model_trainer_fetch_grads(tr, &err), &err, "fetch grads");
    double loss = st.loss_sum / st.n_tokens, dloss = fabs(loss - ref_loss[0]) / ref_loss[0];
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < a.n_tensors; i++) {
        char gname[sizeof a.tensors[i].name + 8];
        snprintf(gname, sizeof gname, "grad.%s", a.tensors[i].name);
        float *ref = read_f32(&g, gname, a.tensors[i].numel);
        double e = rel_l2(a.grads + a.tensors[i].offset, ref, a.tensors[i].numel);
        if (e > worst) worst = e, worst_name = a.tensors[i].name;
        free(ref);
    }
    printf("golden %-22s on %s: logits rel %.2e, loss %.6f vs %.6f (rel %.2e), worst gradient rel "
           "%.2e (%s)\n",
           name, model_arch(m), dl, loss, (double)ref_loss[0], dloss, worst, worst_name);
    assert_int_equal(st.n_tokens, n_valid);
    assert_true(dl <= GPU_LOGIT_TOL);
    assert_true(dloss <= GPU_LOSS_TOL);
    assert_true(worst <= GPU_GRAD_TOL);
    free(ref_loss), free(logits), free(ref_logits), free(inputs), free(targets);
    model_trainer_free(tr);
    lora_adapter_free(&a);
    lora_config_free(&cfg);
    model_free(m);
    st_close(&g);
}

static void test_golden_gpt2(void **state) {
    (void)state;
    golden_case("c_attn_rslora", "gpt2_tiny");
    golden_case("all_targets", "gpt2_tiny");
}

static void test_golden_llama(void **state) {
    (void)state;
    golden_case("llama_all_targets", "llama_tiny");
    golden_case("qwen2_qv_up_rslora", "qwen2_tiny");
}

/* ---- streamed gradients: ranges as each layer finishes, copied while backward goes on ---- */

typedef struct stream_log {
    const lora_adapter *a;
    size_t covered, last_offset;
    int n, in_order;
    double worst; /* against the final gradients, over each range when it was reported */
    float *snap;
} stream_log;

static void on_ready(void *ctx, int adapter, size_t offset, size_t n) {
    stream_log *l = ctx;
    (void)adapter;
    if (l->n++ && offset >= l->last_offset) l->in_order = 0;
    l->last_offset = offset;
    l->covered += n;
    memcpy(l->snap + offset, l->a->grads + offset, n * sizeof(float));
}

/* ---- the GPU's step against the CPU's -----------------------------------------------------------
 */

typedef struct shape {
    const char *name;
    int llama; /* else GPT-2 */
    gpt2_config g;
    llama_config l;
} shape;

static model *build(const shape *s, device *d) {
    model *m;
    lp_err err;
    weight_source src = synthetic_weights(7, 0.02f, DT_BF16);
    int rc =
        s->llama ? model_build_llama(&m, &s->l, src, &err) : model_build_gpt2(&m, &s->g, src, &err);
    check_ok(rc, &err, s->name);
    if (d) check_ok(model_place(m, d, &err), &err, "model_place");
    return m;
}

/* Every module at rank 8, with dropout; B factors random so every gradient is non-zero. */
static void adapter_for(const model *m, lora_adapter *a, float dropout) {
    lora_config cfg;
    lora_config_defaults(&cfg);
    cfg.dropout = dropout;
    lp_err err;
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    check_ok(lora_config_set_targets(&cfg, LORA_ALL_LINEAR, &err), &err, "targets");
    check_ok(lora_adapter_build(a, &cfg, mods, n, &err), &err, "adapter");
    lora_adapter_init(a, 3);
    rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < a->n_sites; i++) {
        float *Bm = a->params + a->sites[i].b_offset;
        for (size_t k = 0; k < (size_t)a->sites[i].out * a->sites[i].r; k++)
            Bm[k] = 0.02f * rng_normal(&r);
    }
    lora_config_free(&cfg);
}

static void batch_tokens(int *in, int *tg, size_t n, int V) {
    rng r;
    rng_seed(&r, 5);
    for (size_t i = 0; i < n; i++) {
        in[i] = (int)rng_below(&r, (uint32_t)V);
        tg[i] = i % 11 == 0 ? -1 : (int)rng_below(&r, (uint32_t)V);
    }
}

static void step_against_cpu(const shape *s) {
    const int B = 4, T = 128, ACC = 2;
    model *mc = build(s, NULL), *mg = build(s, gpu);
    lora_adapter ac, ag;
    adapter_for(mc, &ac, 0.1f);
    adapter_for(mg, &ag, 0.1f);
    lp_err err;
    model_trainer *tc, *tg;
    check_ok(model_trainer_new(&tc, mc, &ac, B, T, &err), &err, "cpu trainer");
    check_ok(model_trainer_new(&tg, mg, &ag, B, T, &err), &err, "gpu trainer");
    size_t n = (size_t)ACC * B * T;
    int *in = malloc(n * sizeof(int)), *tgt = malloc(n * sizeof(int));
    batch_tokens(in, tgt, n, model_vocab_size(mc));
    train_batch b = {.inputs = in, .targets = tgt, .n_micro = ACC, .first_seq = 1000, .seed = 42};
    train_result rc, rg;
    check_ok(train_step(tc, &ac, &b, &rc, &err), &err, "cpu step");
    check_ok(train_step(tg, &ag, &b, &rg, &err), &err, "gpu step");
    double dloss = fabs(rg.loss_sum - rc.loss_sum) / rc.loss_sum;
    double dg = rel_l2(ag.grads, ac.grads, ac.n_params);
    double worst = 0;
    for (int i = 0; i < ac.n_tensors; i++) {
        const lora_tensor *t = &ac.tensors[i];
        double e = rel_l2(ag.grads + t->offset, ac.grads + t->offset, t->numel);
        if (e > worst) worst = e;
    }
    printf("%-28s gpu vs cpu step (dropout 0.1, 2 micro-batches): loss %.6f vs %.6f (rel %.2e), "
           "gradient rel %.2e, worst tensor %.2e, norm %.4f vs %.4f\n",
           s->name, rg.loss_sum / rg.n_tokens, rc.loss_sum / rc.n_tokens, dloss, dg, worst,
           sqrt(rg.grad_sum_sq), sqrt(rc.grad_sum_sq));
    assert_int_equal(rg.n_tokens, rc.n_tokens);
    assert_true(dloss <= GPU_LOSS_TOL);
    assert_true(dg <= GPU_GRAD_TOL);
    assert_true(worst <= 2 * GPU_GRAD_TOL);

    /* the same step with the gradients streamed per layer: the same gradients (up to the order
     * of flash attention's dQ additions), each range final when it was reported */
    float *unstreamed = malloc(ag.n_params * sizeof(float));
    memcpy(unstreamed, ag.grads, ag.n_params * sizeof(float));
    stream_log sl = {.a = &ag, .in_order = 1, .snap = calloc(ag.n_params, sizeof(float))};
    train_batch bs = b;
    bs.on_ready = on_ready;
    bs.ready_ctx = &sl;
    check_ok(train_step(tg, &ag, &bs, &rg, &err), &err, "gpu step, streamed");
    double ds = rel_l2(ag.grads, unstreamed, ag.n_params),
           dsnap = rel_l2(sl.snap, ag.grads, ag.n_params);
    printf("%-28s streamed: %d ranges, %zu of %zu parameters, in order %d; gradients rel %.2e to "
           "unstreamed, reported values rel %.2e to final\n",
           s->name, sl.n, sl.covered, ag.n_params, sl.in_order, ds, dsnap);
    assert_int_equal(sl.covered, ag.n_params);
    assert_true(sl.in_order && sl.n > 1);
    assert_true(ds <= 1e-5);
    assert_true(dsnap == 0);
    free(unstreamed);
    free(sl.snap);

    /* a short run: 30 AdamW steps on one batch; the GPU's loss curve follows the CPU's */
    float *mc_m = calloc(ac.n_params, 4), *mc_v = calloc(ac.n_params, 4);
    float *mg_m = calloc(ag.n_params, 4), *mg_v = calloc(ag.n_params, 4);
    adamw_config opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    double first = 0, worst_gap = 0, last_c = 0, last_g = 0;
    for (int step = 0; step < 30; step++) {
        check_ok(train_step(tc, &ac, &b, &rc, &err), &err, "cpu step");
        check_ok(train_step(tg, &ag, &b, &rg, &err), &err, "gpu step");
        double lc = rc.loss_sum / rc.n_tokens, lg = rg.loss_sum / rg.n_tokens;
        if (step == 0) first = lc;
        worst_gap = fmax(worst_gap, fabs(lg - lc));
        last_c = lc, last_g = lg;
        adamw_update(ac.params, ac.grads, mc_m, mc_v, ac.n_params, 3e-3f, &opt, step + 1);
        adamw_update(ag.params, ag.grads, mg_m, mg_v, ag.n_params, 3e-3f, &opt, step + 1);
    }
    printf("%-28s 30 steps: loss %.4f -> cpu %.4f gpu %.4f; largest gap %.4f\n", s->name, first,
           last_c, last_g, worst_gap);
    assert_true(last_c < first - 0.05);
    assert_true(worst_gap <= 0.02 * first);
    free(mc_m), free(mc_v), free(mg_m), free(mg_v), free(in), free(tgt);
    model_trainer_free(tc);
    model_trainer_free(tg);
    lora_adapter_free(&ac);
    lora_adapter_free(&ag);
    model_free(mc);
    model_free(mg);
}

static void test_step_gpt2(void **state) {
    (void)state;
    shape s = {.name = "gpt2 4x256 (hd 64)",
               .g = {.n_embd = 256,
                     .n_layer = 4,
                     .n_head = 4,
                     .n_positions = 256,
                     .vocab_size = 4096,
                     .layer_norm_epsilon = 1e-5f,
                     .activation_function = "gelu_new",
                     .tie_word_embeddings = 1}};
    step_against_cpu(&s);
}

static void test_step_llama(void **state) {
    (void)state;
    shape s = {.name = "qwen2 4x512 GQA 8/2 (hd 64)",
               .llama = 1,
               .l = {.model_type = "qwen2",
                     .hidden_size = 512,
                     .intermediate_size = 1024,
                     .num_hidden_layers = 4,
                     .num_attention_heads = 8,
                     .num_key_value_heads = 2,
                     .head_dim = 64,
                     .vocab_size = 4096,
                     .max_position_embeddings = 512,
                     .rms_norm_eps = 1e-6f,
                     .rope_theta = 1e6,
                     .tie_word_embeddings = 0,
                     .qkv_bias = 1}};
    step_against_cpu(&s);
}

int main(void) {
    lp_err err;
    if (device_open(&gpu, "cuda", &err) < 0) {
        fprintf(stderr, "SKIPPED: test_gpu_model needs a GPU: %s\n", err.msg);
        return 77; /* ctest: skipped */
    }
    printf("%s\n", device_describe(gpu));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_gpt2),
        cmocka_unit_test(test_golden_llama),
        cmocka_unit_test(test_step_gpt2),
        cmocka_unit_test(test_step_llama),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    printf("peak GPU memory %.1f MiB\n", device_peak_bytes(gpu) / 1048576.0);
    return rc;
}
