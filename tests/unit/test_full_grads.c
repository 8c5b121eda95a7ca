/* The full fine-tuning baseline's weight gradients. The op is checked by finite differences;
 * the model's wiring by the identities that tie them to the LoRA gradients (themselves checked
 * against PyTorch): for y = x.W + s (x.A^T).B^T with W [in,out], dB = s dW^T A^T and
 * dA = s B^T dW^T. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "model.h"
#include "lora_targets.h"
#include "model_load.h"
#include "cpu_ops.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/gpt2_tiny"

static double rel_err(const double *a, const double *b, size_t n) {
    double worst = 0, scale = 1e-12;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(a[i] - b[i]));
        scale = fmax(scale, fabs(b[i]));
    }
    return worst / scale;
}

/* L = sum(w . matmul(x, W, b)) is linear in W and b: central differences are exact up to
 * rounding, so the bound is tight. */
static void check_op(weight_layout layout) {
    int N = 5, IC = 4, OC = 3;
    rng r;
    rng_seed(&r, 9);
    float x[20], W[12], b[3], w[15], dW[12], db[3], out[15];
    for (int i = 0; i < 20; i++) x[i] = rng_normal(&r);
    for (int i = 0; i < 12; i++) W[i] = rng_normal(&r), dW[i] = 0.5f; /* dW is added into */
    for (int i = 0; i < 3; i++) b[i] = rng_normal(&r), db[i] = -0.25f;
    for (int i = 0; i < 15; i++) w[i] = rng_normal(&r);
    matmul_backward_weight(test_ctx(), dW, db, CA(x), CA(w), layout, N, IC, OC);
    double analytic[15], numeric[15];
    for (int i = 0; i < 15; i++) {
        float *p = i < 12 ? &W[i] : &b[i - 12];
        float keep = *p, h = 1e-2f;
        double L[2];
        for (int s = 0; s < 2; s++) {
            *p = keep + (s ? -h : h);
            t_matmul_forward(out, x, W, layout, b, N, IC, OC);
            L[s] = 0;
            for (int k = 0; k < 15; k++) L[s] += (double)w[k] * out[k];
        }
        *p = keep;
        numeric[i] = (L[0] - L[1]) / (2 * h);
        analytic[i] = i < 12 ? dW[i] - 0.5 : db[i - 12] + 0.25;
    }
    double e = rel_err(analytic, numeric, 15);
    printf("matmul_backward_weight (%s): rel err %.2g\n", layout == W_IN_OUT ? "in,out" : "out,in",
           e);
    assert_true(e < 1e-4);
}

static void test_weight_gradient_op(void **state) {
    (void)state;
    check_op(W_IN_OUT);
    check_op(W_OUT_IN);
}

static void test_model_weight_grads_match_lora_grads(void **state) {
    (void)state;
    lp_err err;
    model *m;
    assert_int_equal(model_load(&m, GOLDEN, &err), 0);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_config c;
    lora_config_defaults(&c);
    c.r = 3;
    c.alpha = 6;
    assert_int_equal(lora_config_set_targets(&c, "c_attn,c_proj,c_fc", &err), 0);
    lora_adapter a;
    assert_int_equal(lora_adapter_build(&a, &c, mods, n_mods, &err), 0);
    lora_config_free(&c);
    rng r;
    rng_seed(&r, 4);
    for (size_t i = 0; i < a.n_params; i++) a.params[i] = 0.2f * rng_normal(&r);
    int B = 2, T = 10, in[20], tg[20];
    for (int i = 0; i < B * T; i++)
        in[i] = (int)rng_below(&r, 512), tg[i] = (int)rng_below(&r, 512);
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    float *full;
    size_t n_full;
    assert_int_equal(model_trainer_full_grads(t, &full, &n_full, &err), 0);
    model_step s;
    lora_adapter_zero_grad(&a);
    assert_int_equal(model_trainer_step(t, in, tg, 1.0f / (B * T), 1, 0, &s, &err), 0);

    size_t offset = 0;
    double worst = 0;
    for (int mod = 0; mod < n_mods; mod++) {
        int IC = mods[mod].in, OC = mods[mod].out;
        const float *dW = full + offset; /* [IC, OC], then the bias [OC] */
        offset += (size_t)IC * OC + OC;
        const lora_site *site = lora_adapter_site_for(&a, mod);
        assert_non_null(site);
        int R = site->r;
        const float *A = a.params + site->a_offset, *Bm = a.params + site->b_offset;
        double *want_dB = calloc((size_t)OC * R, sizeof(double)),
               *got_dB = calloc((size_t)OC * R, sizeof(double));
        double *want_dA = calloc((size_t)R * IC, sizeof(double)),
               *got_dA = calloc((size_t)R * IC, sizeof(double));
        for (int o = 0; o < OC; o++)
            for (int k = 0; k < R; k++) {
                double sum = 0; /* s * sum_i dW[i,o] A[k,i] */
                for (int i = 0; i < IC; i++)
                    sum += (double)dW[(size_t)i * OC + o] * A[(size_t)k * IC + i];
                want_dB[(size_t)o * R + k] = site->scale * sum;
                got_dB[(size_t)o * R + k] = a.grads[site->b_offset + (size_t)o * R + k];
            }
        for (int k = 0; k < R; k++)
            for (int i = 0; i < IC; i++) {
                double sum = 0; /* s * sum_o B[o,k] dW[i,o] */
                for (int o = 0; o < OC; o++)
                    sum += (double)Bm[(size_t)o * R + k] * dW[(size_t)i * OC + o];
                want_dA[(size_t)k * IC + i] = site->scale * sum;
                got_dA[(size_t)k * IC + i] = a.grads[site->a_offset + (size_t)k * IC + i];
            }
        double e = fmax(rel_err(got_dB, want_dB, (size_t)OC * R),
                        rel_err(got_dA, want_dA, (size_t)R * IC));
        worst = fmax(worst, e);
        free(want_dB), free(got_dB), free(want_dA), free(got_dA);
    }
    printf("dB = s dW^T A^T and dA = s B^T dW^T over %d modules: worst rel err %.2g\n", n_mods,
           worst);
    assert_true(worst < 1e-4);
    /* the head's gradient is there and not zero */
    double head = 0;
    for (size_t i = offset; i < n_full; i++) head += fabs(full[i]);
    assert_int_equal(n_full - offset, (size_t)512 * 64);
    assert_true(head > 0);
    model_trainer_free(t);
    lora_adapter_free(&a);
    model_free(m);
}

/* The loss with one frozen weight entry moved by delta: the model is rewritten to a temporary
 * folder with that entry changed (the weights are mapped read-only in place). */
static double loss_with(const char *tensor, size_t index, float delta, const int *in, const int *tg,
                        int B, int T) {
    lp_err err;
    char dir[] = "/tmp/loraps-fullfd-XXXXXX";
    assert_non_null(mkdtemp(dir));
    st_file f;
    assert_int_equal(st_open(&f, GOLDEN "/model.safetensors", &err), 0);
    st_writer *w = st_writer_new();
    float *copy = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        const void *data = t->data;
        if (!strcmp(t->name, tensor)) {
            copy = malloc(t->nbytes);
            memcpy(copy, t->data, t->nbytes);
            copy[index] += delta;
            data = copy;
        }
        assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data, &err), 0);
    }
    assert_non_null(copy);
    char path[128], cmd[300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_writer_free(w);
    st_close(&f);
    free(copy);
    snprintf(cmd, sizeof cmd, "cp " GOLDEN "/config.json %s/", dir);
    assert_int_equal(system(cmd), 0);
    model *m;
    assert_int_equal(model_load(&m, dir, &err), 0);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    lora_adapter a;
    assert_int_equal(lora_adapter_build_identity(&a, mods, n, &err), 0);
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    model_step s;
    assert_int_equal(model_trainer_step(t, in, tg, 0.0f, 1, 0, &s, &err), 0);
    model_trainer_free(t);
    lora_adapter_free(&a);
    model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return s.loss_sum / s.n_tokens;
}

/* Biases and the head checked by central differences of the real loss. The head is tied to
 * wte: a row of a token that is not in the input feeds only the head, so its finite difference
 * is the head's gradient alone. */
static void test_bias_and_head_grads_by_finite_differences(void **state) {
    (void)state;
    lp_err err;
    model *m;
    assert_int_equal(model_load(&m, GOLDEN, &err), 0);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter a;
    assert_int_equal(lora_adapter_build_identity(&a, mods, n_mods, &err), 0);
    enum { B = 2, T = 8, C = 64, V = 512 };
    int in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) in[i] = (i * 7 + 3) % 100, tg[i] = (i * 13 + 1) % 100;
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    float *full;
    size_t n_full;
    assert_int_equal(model_trainer_full_grads(t, &full, &n_full, &err), 0);
    model_step s;
    assert_int_equal(model_trainer_step(t, in, tg, 1.0f / (B * T), 1, 0, &s, &err), 0);
    /* where each module's bias sits in the buffer: after its weight */
    size_t off = 0, bias_of[8];
    for (int i = 0; i < n_mods; i++) {
        off += (size_t)mods[i].in * mods[i].out;
        bias_of[i] = off;
        off += (size_t)mods[i].out;
    }
    const float *dhead = full + off;
    static const struct {
        const char *tensor;
        int module; /* -1: the head */
        size_t index;
    } probes[] = {
        {"transformer.h.0.attn.c_attn.bias", 0, 140} /* a value bias */,
        {"transformer.h.0.mlp.c_fc.bias", 2, 5},
        {"transformer.h.1.attn.c_proj.bias", 5, 33},
        {"transformer.h.1.mlp.c_proj.bias", 7, 0},
        {"transformer.wte.weight", -1, 450 * C + 17}, /* token 450 is not in the input */
        {"transformer.wte.weight", -1, 300 * C + 2},
    };
    double worst = 0;
    for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++) {
        double analytic = probes[p].module < 0 ? dhead[probes[p].index]
                                               : full[bias_of[probes[p].module] + probes[p].index];
        float h = 1e-2f;
        double plus = loss_with(probes[p].tensor, probes[p].index, h, in, tg, B, T);
        double minus = loss_with(probes[p].tensor, probes[p].index, -h, in, tg, B, T);
        double numeric = (plus - minus) / (2 * h);
        double e = fabs(analytic - numeric) / fmax(fmax(fabs(analytic), fabs(numeric)), 1e-3);
        printf("%-36s [%zu]: analytic %+.6f numeric %+.6f rel err %.2g\n", probes[p].tensor,
               probes[p].index, analytic, numeric, e);
        worst = fmax(worst, e);
    }
    assert_true(worst < 2e-2);
    model_trainer_free(t);
    lora_adapter_free(&a);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weight_gradient_op),
        cmocka_unit_test(test_model_weight_grads_match_lora_grads),
        cmocka_unit_test(test_bias_and_head_grads_by_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
