/* Finite-difference gradient checks of a whole model's LoRA gradients, shared by the model
 * families' tests (test_model_gradcheck.c for GPT-2, test_llama_gradcheck.c for Llama): build an
 * adapter with non-zero B, compare its analytic gradients with Ridders-extrapolated central
 * differences of the real loss, over random entries of every tensor and all of one tensor.
 * Included by one test file each (its functions are static). */
#ifndef LORAPS_TEST_MODEL_GRADCHECK_H
#define LORAPS_TEST_MODEL_GRADCHECK_H

#include "lora_targets.h"

#define FD_STEP         0.05 /* Ridders' first step: see numeric_grad */
#define FD_BOUND        3e-2 /* per entry, with REL_FLOOR */
#define REL_FLOOR       5e-2 /* of the largest |gradient| among the tensor's checked entries */
#define L2_BOUND        5e-3 /* per tensor: |a - n|_2 / |n|_2 over its checked entries */
#define B_EFFECTIVE_STD 0.4f /* std of scale * B */
#define N_RANDOM        200  /* random entries per check, spread over every tensor */

static void check_ok(int rc, const lp_err *err, const char *what) {
    if (rc != 0) fail_msg("%s: %s", what, err->msg);
}

static uint64_t hash_file(const char *dir, const char *name, uint64_t h) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *data = NULL;
    size_t len = 0;
    lp_err err = {0};
    check_ok(fs_read_all(path, &data, &len, &err), &err, path);
    h = hash_xxh3(h, data, len);
    free(data);
    return h;
}

static uint64_t hash_model_files(const char *dir) {
    return hash_file(dir, "config.json", hash_file(dir, "model.safetensors", 0));
}

/* ---------------------------------------------------------------------------------------------
 * adapters, batches, losses */

typedef struct adapter_spec {
    const char *targets;
    const char *rank_pattern, *alpha_pattern; /* may be NULL */
    int use_rslora;
    float dropout;
} adapter_spec;

static void build_adapter(lora_adapter *a, const model *m, const adapter_spec *spec,
                          uint64_t seed) {
    lora_config cfg;
    lp_err err = {0};
    lora_config_defaults(&cfg);
    cfg.use_rslora = spec->use_rslora;
    cfg.dropout = spec->dropout;
    check_ok(lora_config_set_targets(&cfg, spec->targets, &err), &err, spec->targets);
    if (spec->rank_pattern)
        check_ok(lora_config_set_patterns(&cfg, 0, spec->rank_pattern, &err), &err, "rank_pattern");
    if (spec->alpha_pattern)
        check_ok(lora_config_set_patterns(&cfg, 1, spec->alpha_pattern, &err), &err,
                 "alpha_pattern");
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    check_ok(lora_adapter_build(a, &cfg, mods, n_mods, &err), &err, "lora_adapter_build");
    lora_config_free(&cfg);
    lora_adapter_init(a, seed);
    /* B = 0 after PEFT's init; make it non-zero so that every gradient is. scale * B has the
     * same spread at every site, whatever its rank and alpha: large enough for the gradients to
     * stand well above the float forward's rounding noise, small enough for the loss to stay
     * smooth at the finite-difference steps. */
    rng r;
    rng_seed(&r, seed ^ 0xb);
    for (int i = 0; i < a->n_sites; i++) {
        const lora_site *s = &a->sites[i];
        float *B = a->params + s->b_offset;
        float bstd = B_EFFECTIVE_STD / s->scale;
        for (size_t k = 0; k < (size_t)s->out * s->r; k++) B[k] = bstd * rng_normal(&r);
    }
}

/* Random tokens; a few targets are -1 (ignored). Returns the number of counted targets. */
static int make_batch(int B, int T, uint64_t seed, int V, int *inputs, int *targets) {
    rng r;
    rng_seed(&r, seed);
    int n = 0;
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)rng_below(&r, (uint32_t)V);
        targets[i] = (int)rng_below(&r, (uint32_t)V);
        if (i % 7 == 3 || i == B * T - 1) targets[i] = -1;
        n += targets[i] >= 0;
    }
    return n;
}

typedef struct runner {
    model_trainer *tr;
    lora_adapter *a;
    const int *inputs, *targets;
    int n_tokens;
    /* 0: the FD losses run forward only (grad_scale 0, no dropout). 1: they run training steps
     * with dropout_seed, so the same dropout masks apply in every evaluation. */
    int training;
    uint64_t dropout_seed;
} runner;

static double step(runner *r, float grad_scale, uint64_t seed) {
    model_step st = {0};
    lp_err err = {0};
    check_ok(model_trainer_step(r->tr, r->inputs, r->targets, grad_scale, seed, 0, &st, &err), &err,
             "model_trainer_step");
    assert_int_equal(st.n_tokens, r->n_tokens);
    assert_true(isfinite(st.loss_sum));
    return st.loss_sum / st.n_tokens;
}

static double fd_loss(runner *r) {
    if (r->training) return step(r, 1.0f / (float)r->n_tokens, r->dropout_seed);
    return step(r, 0.0f, 0);
}

/* The analytic gradient of the mean loss (a fresh copy the caller frees); the step's mean loss
 * goes to *loss if not NULL. */
static float *analytic_grads(runner *r, double *loss) {
    lora_adapter_zero_grad(r->a);
    double l = step(r, 1.0f / (float)r->n_tokens, r->dropout_seed);
    if (loss) *loss = l;
    float *g = malloc(r->a->n_params * sizeof *g);
    assert_non_null(g);
    memcpy(g, r->a->grads, r->a->n_params * sizeof *g);
    for (size_t i = 0; i < r->a->n_params; i++)
        if (!isfinite(g[i])) fail_msg("gradient %zu is not finite: %g", i, (double)g[i]);
    return g;
}

static double central(runner *r, size_t i, float h) {
    float *p = &r->a->params[i], p0 = *p, pp = p0 + h, pm = p0 - h;
    *p = pp;
    double lp = fd_loss(r);
    *p = pm;
    double lm = fd_loss(r);
    *p = p0;
    return (lp - lm) / ((double)pp - (double)pm);
}

/* Ridders' extrapolation of central differences (Numerical Recipes' dfridr): steps FD_STEP,
 * FD_STEP / RIDDERS_CON, ..., a Neville tableau of Richardson extrapolations, and the entry whose
 * neighbours agree best. It adapts to each entry: large steps where the loss is smooth (small
 * rounding noise), small ones where it curves sharply. */
#define RIDDERS_CON  1.6
#define RIDDERS_NTAB 8
#define RIDDERS_SAFE 2.0

static int n_evals;

static double numeric_grad(runner *r, size_t i) {
    double tab[RIDDERS_NTAB][RIDDERS_NTAB], best = 0, err = INFINITY;
    const double con2 = RIDDERS_CON * RIDDERS_CON;
    double h = FD_STEP;
    tab[0][0] = central(r, i, (float)h);
    n_evals += 2;
    for (int k = 1; k < RIDDERS_NTAB; k++) {
        h /= RIDDERS_CON;
        tab[0][k] = central(r, i, (float)h);
        n_evals += 2;
        double fac = con2;
        for (int j = 1; j <= k; j++) {
            tab[j][k] = (tab[j - 1][k] * fac - tab[j - 1][k - 1]) / (fac - 1);
            fac *= con2;
            double e = fmax(fabs(tab[j][k] - tab[j - 1][k]), fabs(tab[j][k] - tab[j - 1][k - 1]));
            if (e <= err) {
                err = e;
                best = tab[j][k];
            }
        }
        if (fabs(tab[k][k] - tab[k - 1][k - 1]) >= RIDDERS_SAFE * err) break;
    }
    return best;
}

static double worst_l2; /* over the tensors of the current gradcheck() */

/* Checks the given entries of tensor t; returns the worst per-entry error. */
static double check_entries(runner *r, const float *g, const lora_tensor *t, const size_t *idx,
                            int n, const char *label) {
    double *num = malloc((size_t)n * sizeof *num), scale = 0, gmax = 0;
    assert_non_null(num);
    for (int k = 0; k < n; k++) {
        num[k] = numeric_grad(r, t->offset + idx[k]);
        scale = fmax(scale, fabs(num[k]));
        gmax = fmax(gmax, fabs((double)g[t->offset + idx[k]]));
    }
    double worst = 0, d2 = 0, n2 = 0;
    int at = 0;
    for (int k = 0; k < n; k++) {
        double a = g[t->offset + idx[k]];
        double e = fabs(a - num[k]) / fmax(fmax(fabs(a), fabs(num[k])), REL_FLOOR * scale);
        d2 += (a - num[k]) * (a - num[k]);
        n2 += num[k] * num[k];
        if (!(e <= worst)) {
            worst = isnan(e) ? INFINITY : e;
            at = k;
        }
    }
    double l2 = n2 > 0 ? sqrt(d2 / n2) : INFINITY;
    /* without "base_model.model." and the top module ("transformer." or "model.") */
    const char *short_name = strchr(t->name + strlen("base_model.model."), '.') + 1;
    print_message("    %-30s %-8s %3d entries  max|grad| %.2e  l2 rel err %.2e  worst rel err "
                  "%.2e (analytic %.6g fd %.6g)\n",
                  short_name, label, n, scale, l2, worst, (double)g[t->offset + idx[at]], num[at]);
    if (!(scale > 0 && gmax > 0))
        fail_msg("%s: the gradient is zero on every checked entry", t->name);
    if (!(l2 <= L2_BOUND))
        fail_msg("%s: |analytic - fd|_2 / |fd|_2 = %.3e > %.0e", t->name, l2, L2_BOUND);
    if (!(worst <= FD_BOUND))
        fail_msg("%s entry %zu: analytic %.8g, finite difference %.8g: relative error %.3e > %.0e",
                 t->name, idx[at], (double)g[t->offset + idx[at]], num[at], worst, FD_BOUND);
    free(num);
    worst_l2 = fmax(worst_l2, l2);
    return worst;
}

/* ~N_RANDOM random entries spread over every tensor, plus every entry of the tensor named
 * full_tensor (NULL: none). Returns the worst error. */
static double gradcheck(runner *r, const char *case_name, const char *full_tensor, uint64_t seed) {
    lora_adapter *a = r->a;
    float *g = analytic_grads(r, NULL);
    print_message("  %s: %d sites, %zu parameters, %d tokens counted\n", case_name, a->n_sites,
                  a->n_params, r->n_tokens);
    rng pick;
    rng_seed(&pick, seed);
    int per_tensor = (N_RANDOM + a->n_tensors - 1) / a->n_tensors;
    size_t *idx = malloc(a->n_params * sizeof *idx);
    assert_non_null(idx);
    double worst = 0;
    int full_found = full_tensor == NULL;
    for (int ti = 0; ti < a->n_tensors; ti++) {
        const lora_tensor *t = &a->tensors[ti];
        int n;
        const char *label;
        if (full_tensor && strcmp(t->name, full_tensor) == 0) {
            for (size_t k = 0; k < t->numel; k++) idx[k] = k;
            n = (int)t->numel;
            label = "(all)";
            full_found = 1;
        } else {
            n = per_tensor < (int)t->numel ? per_tensor : (int)t->numel;
            for (int k = 0; k < n; k++) idx[k] = rng_below(&pick, (uint32_t)t->numel);
            label = "(random)";
        }
        worst = fmax(worst, check_entries(r, g, t, idx, n, label));
    }
    if (!full_found) fail_msg("%s: the adapter has no tensor %s", case_name, full_tensor);
    print_message(
        "  %s: worst l2 rel err %.2e (bound %.0e), worst entry rel err %.2e (bound %.0e); "
        "%d loss evaluations\n",
        case_name, worst_l2, L2_BOUND, worst, FD_BOUND, n_evals);
    n_evals = 0;
    worst_l2 = 0;
    free(idx);
    free(g);
    return worst;
}

#endif
