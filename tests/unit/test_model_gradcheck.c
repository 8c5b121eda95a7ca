/* Finite-difference gradient checks of the whole GPT-2 + LoRA model (common/model.h, lora.h).
 *
 * A very small GPT-2 (2 layers, 32 wide, 4 heads, vocab 64, 16 positions) is written with
 * model_init_write into a temporary folder and loaded. For each adapter configuration, B is set to
 * random non-zero values (with PEFT's B = 0 the gradient of A would be 0 and prove nothing), and
 *
 *     L(params) = model_trainer_step(..., grad_scale 0).loss_sum / n_tokens   (the mean loss)
 *
 * is differentiated numerically, entry by entry, against the analytic gradient that a step with
 * grad_scale = 1 / n_tokens adds to adapter->grads. The numerical derivative is Ridders'
 * extrapolation of central differences (see numeric_grad). The forward is float, so L carries
 * rounding noise of ~2e-7 and no finite difference resolves a gradient entry much below ~1e-5;
 * hence two criteria, per tensor, over its checked entries a (analytic) and n (numerical):
 *
 *     |a - n|_2 / |n|_2 <= L2_BOUND (5e-3)
 *     max |a - n| / max(|a|, |n|, REL_FLOOR * max |n|) <= FD_BOUND (3e-2), REL_FLOOR = 5e-2
 *
 * A wrong backward (a missing term, a wrong scale, a wrong buffer) is off by O(1) of the gradient
 * and fails both by orders of magnitude. Checked: about N_RANDOM random entries spread over every
 * tensor, plus every entry of one small tensor, usually the lowest A, whose gradient flows back
 * through every layer above it, so the input gradients of the LoRA branches and of the frozen
 * layers are checked too. */
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
#include "model_init.h"
#include "ops.h"
#include "rng.h"
#include "model_gradcheck.h"

typedef struct fixture {
    char dir[64];
    model *m;
    uint64_t file_hash; /* of model.safetensors + config.json before any step */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/loraps_gradcheck_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    gpt2_config c;
    lp_err err = {0};
    if (model_preset("tiny", &c, &err) < 0) return -1;
    c.n_layer = 2;
    c.n_embd = 32;
    c.n_head = 4;
    c.vocab_size = 64;
    c.n_positions = 16;
    if (model_init_write(f->dir, &c, 2024, &err) < 0 || model_load(&f->m, f->dir, &err) < 0) {
        fprintf(stderr, "tiny model: %s\n", err.msg);
        return -1;
    }
    f->file_hash = hash_model_files(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    model_free(f->m);
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void run_case(fixture *f, const adapter_spec *spec, int B, int T, const char *full_tensor,
                     const char *case_name, int expect_sites) {
    lora_adapter a;
    build_adapter(&a, f->m, spec, 17);
    assert_int_equal(a.n_sites, expect_sites);
    int *inputs = malloc((size_t)B * T * sizeof(int)),
        *targets = malloc((size_t)B * T * sizeof(int));
    int n_tok = make_batch(B, T, 5, model_vocab_size(f->m), inputs, targets);
    model_trainer *tr = NULL;
    lp_err err = {0};
    check_ok(model_trainer_new(&tr, f->m, &a, B, T, &err), &err, "model_trainer_new");
    runner r = {.tr = tr, .a = &a, .inputs = inputs, .targets = targets, .n_tokens = n_tok};
    gradcheck(&r, case_name, full_tensor, 99);
    model_trainer_free(tr);
    lora_adapter_free(&a);
    free(inputs);
    free(targets);
}

/* ---------------------------------------------------------------------------------------------
 * the cases */

#define ALL_TARGETS     "c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj"
#define TENSOR(mod, ab) "base_model.model.transformer." mod ".lora_" ab ".weight"

/* Every linear module of both layers adapted; the lowest A is checked entry by entry. */
static void test_all_targets(void **state) {
    adapter_spec spec = {.targets = ALL_TARGETS};
    run_case(*state, &spec, 2, 8, TENSOR("h.0.attn.c_attn", "A"), "all targets, r=8", 8);
}

/* Only layer 1's c_attn: backward stops there (no input gradient below it), and everything above
 * it, frozen, still has to carry the gradient down. */
static void test_layer1_c_attn_only(void **state) {
    adapter_spec spec = {.targets = "re:transformer\\.h\\.1\\.attn\\.c_attn"};
    run_case(*state, &spec, 2, 8, TENSOR("h.1.attn.c_attn", "A"), "layer 1 c_attn only", 1);
}

/* Only layer 0's mlp.c_proj: the lowest site is the top of layer 0, and layer 1 has no site. */
static void test_layer0_mlp_proj_only(void **state) {
    adapter_spec spec = {.targets = "re:transformer\\.h\\.0\\.mlp\\.c_proj"};
    run_case(*state, &spec, 2, 8, TENSOR("h.0.mlp.c_proj", "B"), "layer 0 mlp.c_proj only", 1);
}

/* rsLoRA scaling and per-module ranks and alphas. */
static void test_rslora_rank_pattern(void **state) {
    fixture *f = *state;
    adapter_spec spec = {.targets = ALL_TARGETS,
                         .rank_pattern = "mlp.c_fc=4,h\\.0\\.attn\\.c_attn=2",
                         .alpha_pattern = "mlp.c_proj=5",
                         .use_rslora = 1};
    lora_adapter a;
    build_adapter(&a, f->m, &spec, 17);
    for (int i = 0; i < a.n_sites; i++) {
        const lora_site *s = &a.sites[i];
        int k = s->module % 4, l = s->module / 4;
        int want_r = k == 2 ? 4 : (k == 0 && l == 0) ? 2 : 8;
        float want_alpha = k == 3 ? 5.0f : 16.0f;
        assert_int_equal(s->r, want_r);
        if (!(fabsf(s->scale - want_alpha / sqrtf((float)want_r)) <= 1e-6f))
            fail_msg("site %d: scale %g, expected alpha/sqrt(r) = %g", i, (double)s->scale,
                     (double)(want_alpha / sqrtf((float)want_r)));
    }
    lora_adapter_free(&a);
    run_case(f, &spec, 2, 8, TENSOR("h.0.attn.c_attn", "A"), "rslora + rank/alpha patterns", 8);
}

/* More tokens than one chunk of the output head (HEAD_CHUNK = 128 in gpt2.c): 9 x 16 = 144. */
static void test_multichunk_head(void **state) {
    adapter_spec spec = {.targets = "c_attn,mlp.c_proj"};
    run_case(*state, &spec, 9, 16, TENSOR("h.1.mlp.c_proj", "B"), "B=9 T=16 (two head chunks)", 4);
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
    build_adapter(&a, f->m, &spec, 17);
    build_adapter(&a0, f->m, &plain, 17);
    assert_int_equal(a.n_params, a0.n_params);
    assert_memory_equal(a.params, a0.params, a.n_params * sizeof(float));
    int inputs[16], targets[16];
    int n_tok = make_batch(B, T, 5, model_vocab_size(f->m), inputs, targets);
    model_trainer *tr = NULL, *tr0 = NULL;
    lp_err err = {0};
    check_ok(model_trainer_new(&tr, f->m, &a, B, T, &err), &err, "model_trainer_new");
    check_ok(model_trainer_new(&tr0, f->m, &a0, B, T, &err), &err, "model_trainer_new");
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
    build_adapter(&a, f->m, &spec, 17);
    int inputs[16], targets[16];
    int n_tok = make_batch(B, T, 6, model_vocab_size(f->m), inputs, targets);
    model_trainer *tr = NULL;
    lp_err err = {0};
    check_ok(model_trainer_new(&tr, f->m, &a, B, T, &err), &err, "model_trainer_new");
    runner r = {.tr = tr, .a = &a, .inputs = inputs, .targets = targets, .n_tokens = n_tok};
    const size_t n = a.n_params;
    float *params = malloc(n * sizeof *params);
    memcpy(params, a.params, n * sizeof *params);
    uint64_t fp = model_fingerprint(f->m);

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
    assert_true(hash_model_files(f->dir) == f->file_hash);
    model *again = NULL;
    check_ok(model_load(&again, f->dir, &err), &err, "model_load");
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
        cmocka_unit_test(test_all_targets),
        cmocka_unit_test(test_layer1_c_attn_only),
        cmocka_unit_test(test_layer0_mlp_proj_only),
        cmocka_unit_test(test_rslora_rank_pattern),
        cmocka_unit_test(test_multichunk_head),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_frozen_and_accumulation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
