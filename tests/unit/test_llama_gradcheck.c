/* Finite-difference gradient checks of the whole Llama-family model + LoRA (common/llama.c
 * behind model.h), in the manner of test_model_gradcheck.c (same criteria, same Ridders'
 * extrapolation: see there).
 *
 * Small models are written with llama_init_write into a temporary folder:
 *   gqa    llama, 2 layers, hidden 32, 4 heads over 2 KV heads (grouped-query), untied head,
 *          llama3 rope scaling
 *   tied   llama, 4 heads over 1 KV head, tied head
 *   qwen2  qwen2: q/k/v biases, 2 KV heads, untied head
 *   bf16   gqa's config and seed stored as BF16: the frozen matrices are kept in bf16 and
 *          widened per use (the default), so that path is checked too
 * For each adapter, B is set to random non-zero values and the gradient of the mean loss that a
 * step adds to the adapter's grads is compared with Ridders' central differences. Cases cover
 * every target, single sites (backward must stop at the lowest adapted module, and gate/up and
 * q/k/v share an input), rsLoRA with rank and alpha patterns, two head chunks, dropout, and the
 * accumulation contract. */
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
#include "model_load.h"
#include "hash.h"
#include "lora.h"
#include "model.h"
#include "llama_init.h"
#include "ops.h"
#include "rng.h"
#include "model_gradcheck.h"

enum { M_GQA, M_TIED, M_QWEN2, M_BF16, N_MODELS };
static const char *MODEL_NAMES[N_MODELS] = {"gqa", "tied", "qwen2", "bf16"};

typedef struct fixture {
    char dir[64];
    model *m[N_MODELS];
    uint64_t file_hash; /* of the gqa model's files before any step */
} fixture;

static void small_config(llama_config *c, int which) {
    lp_err err = {0};
    llama_preset("tiny", c, &err);
    c->num_hidden_layers = 2;
    c->hidden_size = 32;
    c->num_attention_heads = 4;
    c->num_key_value_heads = 2;
    c->head_dim = 8;
    c->intermediate_size = 48;
    c->vocab_size = 64;
    c->max_position_embeddings = 32;
    c->tie_word_embeddings = 0;
    if (which == M_GQA || which == M_BF16) {
        c->rope_type = LLAMA_ROPE_LLAMA3;
        c->rope_factor = 4;
        c->rope_low_freq_factor = 1;
        c->rope_high_freq_factor = 4;
        c->rope_original_max_position_embeddings = 16;
    } else if (which == M_TIED) {
        c->num_key_value_heads = 1;
        c->tie_word_embeddings = 1;
    } else {
        snprintf(c->model_type, sizeof c->model_type, "qwen2");
        c->qkv_bias = 1;
        c->rope_theta = 1e6;
    }
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/loraps_llama_gc_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    for (int i = 0; i < N_MODELS; i++) {
        llama_config c;
        small_config(&c, i);
        char dir[128];
        snprintf(dir, sizeof dir, "%s/%s", f->dir, MODEL_NAMES[i]);
        lp_err err = {0};
        uint64_t seed = i == M_BF16 ? 2024 + M_GQA : 2024 + (uint64_t)i;
        if (llama_init_write_as(dir, &c, seed, i == M_BF16 ? DT_BF16 : DT_F32, 0.15f, &err) < 0 ||
            model_load(&f->m[i], dir, &err) < 0) {
            fprintf(stderr, "%s model: %s\n", MODEL_NAMES[i], err.msg);
            return -1;
        }
    }
    char dir[128];
    snprintf(dir, sizeof dir, "%s/gqa", f->dir);
    f->file_hash = hash_model_files(dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    for (int i = 0; i < N_MODELS; i++) {
        model_free(f->m[i]);
        char path[160];
        snprintf(path, sizeof path, "%s/%s/model.safetensors", f->dir, MODEL_NAMES[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s/config.json", f->dir, MODEL_NAMES[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s", f->dir, MODEL_NAMES[i]);
        rmdir(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void run_case(model *m, const adapter_spec *spec, int B, int T, const char *full_tensor,
                     const char *case_name, int expect_sites) {
    lora_adapter a;
    build_adapter(&a, m, spec, 17);
    assert_int_equal(a.n_sites, expect_sites);
    int *inputs = malloc((size_t)B * T * sizeof(int)),
        *targets = malloc((size_t)B * T * sizeof(int));
    int n_tok = make_batch(B, T, 5, model_vocab_size(m), inputs, targets);
    model_trainer *tr = NULL;
    lp_err err = {0};
    check_ok(model_trainer_new(&tr, m, &a, B, T, &err), &err, "model_trainer_new");
    runner r = {.tr = tr, .a = &a, .inputs = inputs, .targets = targets, .n_tokens = n_tok};
    gradcheck(&r, case_name, full_tensor, 99);
    model_trainer_free(tr);
    lora_adapter_free(&a);
    free(inputs);
    free(targets);
}

/* ---------------------------------------------------------------------------------------------
 * the cases */

#define ALL_TARGETS     "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
#define TENSOR(mod, ab) "base_model.model.model." mod ".lora_" ab ".weight"

static model *M(void **state, int which) {
    return ((fixture *)*state)->m[which];
}

/* Every linear module of both layers adapted; the lowest A is checked entry by entry. */
static void test_gqa_all_targets(void **state) {
    adapter_spec spec = {.targets = ALL_TARGETS};
    run_case(M(state, M_GQA), &spec, 2, 8, TENSOR("layers.0.self_attn.q_proj", "A"),
             "gqa: all targets, r=8", 14);
}

/* Only layer 1's k_proj: backward stops there, and q/v_proj (same input, no site) need nothing. */
static void test_gqa_layer1_k_only(void **state) {
    adapter_spec spec = {.targets = "re:model\\.layers\\.1\\.self_attn\\.k_proj"};
    run_case(M(state, M_GQA), &spec, 2, 8, TENSOR("layers.1.self_attn.k_proj", "A"),
             "gqa: layer 1 k_proj only", 1);
}

/* Only layer 0's up_proj: the MLP's input gradient stops at gate/up, below nothing. */
static void test_gqa_layer0_up_only(void **state) {
    adapter_spec spec = {.targets = "re:model\\.layers\\.0\\.mlp\\.up_proj"};
    run_case(M(state, M_GQA), &spec, 2, 8, TENSOR("layers.0.mlp.up_proj", "A"),
             "gqa: layer 0 up_proj only", 1);
}

/* rsLoRA, per-module ranks and alphas, sites on v_proj, o_proj and down_proj. */
static void test_gqa_rslora_patterns(void **state) {
    adapter_spec spec = {.targets = "v_proj,o_proj,down_proj",
                         .rank_pattern = "layers\\.0\\.self_attn\\.v_proj=2,down_proj=4",
                         .alpha_pattern = "o_proj=5",
                         .use_rslora = 1};
    run_case(M(state, M_GQA), &spec, 2, 8, TENSOR("layers.0.self_attn.v_proj", "A"),
             "gqa: rslora + rank/alpha patterns", 6);
}

/* Tied head, one KV head, more tokens than one head chunk (HEAD_CHUNK 128): 9 x 16 = 144. */
static void test_tied_multichunk(void **state) {
    adapter_spec spec = {.targets = "q_proj,v_proj,gate_proj,down_proj"};
    run_case(M(state, M_TIED), &spec, 9, 16, TENSOR("layers.0.self_attn.v_proj", "A"),
             "tied, 1 KV head, B=9 T=16 (two head chunks)", 8);
}

/* Qwen2: q/k/v biases. */
static void test_qwen2_all_targets(void **state) {
    adapter_spec spec = {.targets = ALL_TARGETS};
    run_case(M(state, M_QWEN2), &spec, 2, 8, TENSOR("layers.0.self_attn.k_proj", "A"),
             "qwen2: all targets", 14);
}

/* BF16 weights kept in bf16 and widened per use. */
static void test_bf16_all_targets(void **state) {
    adapter_spec spec = {.targets = ALL_TARGETS};
    run_case(M(state, M_BF16), &spec, 2, 8, TENSOR("layers.0.mlp.gate_proj", "A"),
             "bf16 kept: all targets", 14);
}

/* ---------------------------------------------------------------------------------------------
 * dropout */

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

static double max_abs(const float *a, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i]));
    return d;
}

static void test_dropout(void **state) {
    fixture *f = *state;
    const int B = 2, T = 8;
    adapter_spec spec = {.targets = ALL_TARGETS, .dropout = 0.1f};
    adapter_spec plain = {.targets = ALL_TARGETS};
    lora_adapter a, a0;
    build_adapter(&a, f->m[M_GQA], &spec, 17);
    build_adapter(&a0, f->m[M_GQA], &plain, 17);
    assert_int_equal(a.n_params, a0.n_params);
    assert_memory_equal(a.params, a0.params, a.n_params * sizeof(float));
    int inputs[16], targets[16];
    int n_tok = make_batch(B, T, 5, model_vocab_size(f->m[M_GQA]), inputs, targets);
    model_trainer *tr = NULL, *tr0 = NULL;
    lp_err err = {0};
    check_ok(model_trainer_new(&tr, f->m[M_GQA], &a, B, T, &err), &err, "model_trainer_new");
    check_ok(model_trainer_new(&tr0, f->m[M_GQA], &a0, B, T, &err), &err, "model_trainer_new");
    runner r = {.tr = tr, .a = &a, .inputs = inputs, .targets = targets, .n_tokens = n_tok};
    runner r0 = {.tr = tr0, .a = &a0, .inputs = inputs, .targets = targets, .n_tokens = n_tok};
    const size_t n = a.n_params;

    /* Same seed: the same masks, so bit-identical losses and gradients. */
    double loss1, loss2, loss3, plain_train;
    r.dropout_seed = 42;
    float *g1 = analytic_grads(&r, &loss1);
    float *g2 = analytic_grads(&r, &loss2);
    assert_memory_equal(g1, g2, n * sizeof(float));
    assert_true(loss1 == loss2);

    /* Another seed: other masks, another loss and other gradients. */
    r.dropout_seed = 43;
    float *g3 = analytic_grads(&r, &loss3);
    double d13 = max_abs_diff(g1, g3, n), m1 = max_abs(g1, n);

    /* Without dropout (forward only, or an adapter without dropout): yet another loss. In eval
     * (grad_scale 0) dropout is off, so the dropout adapter's loss equals the plain one's. */
    double eval_loss = step(&r, 0, 42);
    double plain_eval = step(&r0, 0, 42);
    r0.dropout_seed = 42;
    float *g0 = analytic_grads(&r0, &plain_train);
    double d10 = max_abs_diff(g1, g0, n);
    print_message("  dropout 0.1: loss seed 42 %.9f (again %.9f), seed 43 %.9f; eval %.9f; no "
                  "dropout: eval %.9f train %.9f\n",
                  loss1, loss2, loss3, eval_loss, plain_eval, plain_train);
    print_message("  max|grad| %.3e; max|diff| seed 42 vs 43 %.3e, vs no dropout %.3e\n", m1, d13,
                  d10);
    if (!(d13 > 1e-3 * m1)) fail_msg("dropout seeds 42 and 43 give the same gradients");
    if (!(d10 > 1e-3 * m1)) fail_msg("dropout 0.1 gives the same gradients as no dropout");
    if (!(loss1 != loss3)) fail_msg("dropout seeds 42 and 43 give the same loss %.9f", loss1);
    if (!(loss1 != eval_loss)) fail_msg("the training loss with dropout equals the eval loss");
    assert_true(eval_loss == plain_eval);   /* eval: no dropout */
    assert_true(plain_train == plain_eval); /* no dropout: training and eval forward agree */

    /* The gradient with dropout is checked by finite differences of the training-mode loss (a
     * step with grad_scale != 0; forward-only steps run without dropout), with the same dropout
     * seed, hence the same masks, in every evaluation. */
    r.training = 1;
    r.dropout_seed = 42;
    gradcheck(&r, "dropout 0.1 (training-mode FD, seed 42)", NULL, 123);

    free(g0);
    free(g1);
    free(g2);
    free(g3);
    model_trainer_free(tr);
    model_trainer_free(tr0);
    lora_adapter_free(&a);
    lora_adapter_free(&a0);
}

/* ---------------------------------------------------------------------------------------------
 * frozen weights, accumulation, grad_scale */

static void test_frozen_and_accumulation(void **state) {
    fixture *f = *state;
    const int B = 2, T = 8;
    adapter_spec spec = {.targets = ALL_TARGETS, .dropout = 0.1f};
    lora_adapter a;
    build_adapter(&a, f->m[M_GQA], &spec, 17);
    int inputs[16], targets[16];
    int n_tok = make_batch(B, T, 6, model_vocab_size(f->m[M_GQA]), inputs, targets);
    model_trainer *tr = NULL;
    lp_err err = {0};
    check_ok(model_trainer_new(&tr, f->m[M_GQA], &a, B, T, &err), &err, "model_trainer_new");
    runner r = {.tr = tr, .a = &a, .inputs = inputs, .targets = targets, .n_tokens = n_tok};
    const size_t n = a.n_params;
    float *params = malloc(n * sizeof *params);
    memcpy(params, a.params, n * sizeof *params);
    uint64_t fp = model_fingerprint(f->m[M_GQA]);

    r.dropout_seed = 7;
    float *g1 = analytic_grads(&r, NULL); /* one step from zero */
    /* gradients are ADDED: a second step doubles them; a grad_scale 0 step adds nothing */
    step(&r, 1.0f / (float)n_tok, 7);
    step(&r, 0.0f, 7);
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)g1[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a.grads[i] - 2.0 * g1[i]);
        if (!(e <= 1e-6 * gmax))
            fail_msg("grad %zu after two steps is %.9g, expected 2 x %.9g", i, (double)a.grads[i],
                     (double)g1[i]);
        worst = fmax(worst, e);
    }
    print_message("  accumulation: max|g(2 steps) - 2 g(1 step)| = %.3e (max|g| %.3e)\n", worst,
                  gmax);
    /* grad_scale scales the gradient (up to float rounding in the backward) */
    lora_adapter_zero_grad(&a);
    step(&r, 3.0f / (float)n_tok, 7);
    worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a.grads[i] - 3.0 * g1[i]);
        if (!(e <= 1e-5 * gmax))
            fail_msg("grad %zu with grad_scale 3/n is %.9g, expected 3 x %.9g", i,
                     (double)a.grads[i], (double)g1[i]);
        worst = fmax(worst, e);
    }
    print_message("  grad_scale: max|g(3/n) - 3 g(1/n)| = %.3e\n", worst);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a.grads[i])) fail_msg("grad %zu is not finite", i);

    /* Steps never change the adapter's parameters nor the frozen weights (on disk: the mapped
     * file; and the fingerprint of a fresh load). */
    assert_memory_equal(params, a.params, n * sizeof *params);
    char gqa_dir[128];
    snprintf(gqa_dir, sizeof gqa_dir, "%s/gqa", f->dir);
    assert_true(hash_model_files(gqa_dir) == f->file_hash);
    model *again = NULL;
    check_ok(model_load(&again, gqa_dir, &err), &err, "model_load");
    assert_true(model_fingerprint(again) == fp);
    model_free(again);

    free(params);
    free(g1);
    model_trainer_free(tr);
    lora_adapter_free(&a);
}

int main(void) {
    ops_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gqa_all_targets),         cmocka_unit_test(test_gqa_layer1_k_only),
        cmocka_unit_test(test_gqa_layer0_up_only),      cmocka_unit_test(test_gqa_rslora_patterns),
        cmocka_unit_test(test_tied_multichunk),         cmocka_unit_test(test_qwen2_all_targets),
        cmocka_unit_test(test_bf16_all_targets),        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_frozen_and_accumulation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
