/* Finite-difference gradient checks for every op of compute/ops.h, on the CPU backend.
 *
 * For each op: small random inputs (fixed seeds), a random projection w, the scalar
 * L(x) = sum(w * forward(x)) evaluated in double from the float forward, and the analytic gradient
 * from backward with dout = w. Every input element is checked against the central difference
 * (L(x + h e_i) - L(x - h e_i)) / (2h) (extrapolated for non-linear ops: see fd_kind), with
 *
 *     err = max_i |a_i - n_i| / max(|a_i|, |n_i|, REL_FLOOR * max_j |n_j|)
 *
 * and err <= FD_BOUND_LINEAR (1e-3) for ops linear in the checked input, where a large h leaves
 * only float rounding, or err <= FD_BOUND_SMOOTH (1e-2) for the non-linear ones (see fd_kind).
 * The floor keeps gradients that are ~0 next to much larger ones from turning float noise into a
 * large relative error; a wrong backward is off by O(1) of the gradient scale and fails by orders
 * of magnitude.
 *
 * A backward that adds into its output (the norms', matmul's with accumulate, LoRA's, dropout's)
 * also runs on a buffer pre-filled with random values and must give prefill + (its result on a
 * zero buffer), up to rounding; one that overwrites must give exactly its zero-buffer result.
 * Forwards are checked against naive double-precision references too, since a backward that is
 * consistent with a wrong forward would pass the FD check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "ops.h"
#include "ops_gradcheck.h"
#include "rng.h"

/* ---------------------------------------------------------------------------------------------
 * matmul, both layouts, with and without bias */

typedef struct mm_ctx {
    float *out, *inp, *weight, *bias, *w;
    weight_layout layout;
    int N, IC, OC;
} mm_ctx;

static double mm_loss(void *p) {
    mm_ctx *c = p;
    t_matmul_forward(c->out, c->inp, c->weight, c->layout, c->bias, c->N, c->IC, c->OC);
    return dotw(c->w, c->out, (size_t)c->N * c->OC);
}

static void run_matmul(weight_layout layout, int with_bias, uint64_t seed) {
    const int N = 5, IC = 7, OC = 6;
    rng r;
    rng_seed(&r, seed);
    mm_ctx c = {.out = fvec((size_t)N * OC),
                .inp = fvec((size_t)N * IC),
                .weight = fvec((size_t)IC * OC),
                .bias = with_bias ? fvec(OC) : NULL,
                .w = fvec((size_t)N * OC),
                .layout = layout,
                .N = N,
                .IC = IC,
                .OC = OC};
    fill_normal(&r, c.inp, (size_t)N * IC, 0, 1);
    fill_normal(&r, c.weight, (size_t)IC * OC, 0, 1);
    if (c.bias) fill_normal(&r, c.bias, OC, 0, 1);
    fill_normal(&r, c.w, (size_t)N * OC, 0, 1);
    char what[96];
    snprintf(what, sizeof what, "matmul %s%s", layout == W_IN_OUT ? "W[in,out]" : "W[out,in]",
             with_bias ? " +bias" : "");

    /* forward vs reference */
    mm_loss(&c);
    double *ref = calloc((size_t)N * OC, sizeof *ref), *mag = calloc((size_t)N * OC, sizeof *mag);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = c.bias ? c.bias[o] : 0, m = fabs(s);
            for (int i = 0; i < IC; i++) {
                double wv = layout == W_IN_OUT ? c.weight[i * OC + o] : c.weight[o * IC + i];
                s += (double)c.inp[n * IC + i] * wv;
                m += fabs((double)c.inp[n * IC + i] * wv);
            }
            ref[n * OC + o] = s;
            mag[n * OC + o] = m;
        }
    check_forward(what, c.out, ref, mag, (size_t)N * OC);

    /* backward: zero buffer, then prefilled, accumulating and overwriting */
    float *dinp = fvec((size_t)N * IC), *pre = fvec((size_t)N * IC);
    t_matmul_backward(dinp, c.w, c.weight, layout, N, IC, OC, 1);
    fill_normal(&r, pre, (size_t)N * IC, 0, 3);
    float *dinp2 = fdup(pre, (size_t)N * IC);
    t_matmul_backward(dinp2, c.w, c.weight, layout, N, IC, OC, 1);
    check_added(what, dinp2, pre, dinp, (size_t)N * IC);
    memcpy(dinp2, pre, (size_t)N * IC * sizeof(float));
    t_matmul_backward(dinp2, c.w, c.weight, layout, N, IC, OC, 0);
    check_overwritten(what, dinp2, dinp, (size_t)N * IC);

    /* linear in inp: a large step leaves only rounding */
    fd_check(what, c.inp, (size_t)N * IC, dinp, mm_loss, &c, FD_LINEAR);

    free(ref);
    free(mag);
    free(dinp);
    free(dinp2);
    free(pre);
    free(c.out);
    free(c.inp);
    free(c.weight);
    free(c.bias);
    free(c.w);
}

static void test_matmul(void **state) {
    (void)state;
    run_matmul(W_IN_OUT, 0, 11);
    run_matmul(W_IN_OUT, 1, 12);
    run_matmul(W_OUT_IN, 0, 13);
    run_matmul(W_OUT_IN, 1, 14);
}

/* ---------------------------------------------------------------------------------------------
 * layernorm */

typedef struct ln_ctx {
    float *out, *mean, *rstd, *inp, *weight, *bias, *w;
    int N, C;
    float eps;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    t_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->weight, c->bias, c->N, c->C, c->eps);
    return dotw(c->w, c->out, (size_t)c->N * c->C);
}

static void test_layernorm(void **state) {
    (void)state;
    const int N = 6, C = 16;
    const size_t NC = (size_t)N * C;
    rng r;
    rng_seed(&r, 21);
    ln_ctx c = {.out = fvec(NC),
                .mean = fvec(N),
                .rstd = fvec(N),
                .inp = fvec(NC),
                .weight = fvec(C),
                .bias = fvec(C),
                .w = fvec(NC),
                .N = N,
                .C = C,
                .eps = 1e-5f};
    /* rows with different means and spreads */
    for (int n = 0; n < N; n++) fill_normal(&r, c.inp + n * C, C, 2.0f * rng_normal(&r), 0.5f + n);
    fill_normal(&r, c.weight, C, 1, 0.5f);
    fill_normal(&r, c.bias, C, 0, 0.5f);
    fill_normal(&r, c.w, NC, 0, 1);

    ln_loss(&c);
    double *ref = calloc(NC, sizeof *ref), *mag = calloc(NC, sizeof *mag);
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int i = 0; i < C; i++) m += c.inp[n * C + i];
        m /= C;
        for (int i = 0; i < C; i++) v += (c.inp[n * C + i] - m) * (c.inp[n * C + i] - m);
        double s = 1 / sqrt(v / C + c.eps);
        assert_true(fabs(c.mean[n] - m) <= 1e-5 * (fabs(m) + 1));
        assert_true(fabs(c.rstd[n] - s) <= 1e-5 * s);
        for (int i = 0; i < C; i++) {
            ref[n * C + i] = (c.inp[n * C + i] - m) * s * c.weight[i] + c.bias[i];
            mag[n * C + i] = fabs((c.inp[n * C + i] - m) * s * c.weight[i]) + fabs(c.bias[i]) + 1;
        }
    }
    check_forward("layernorm", c.out, ref, mag, NC);

    float *dinp = fvec(NC), *pre = fvec(NC);
    t_layernorm_backward(dinp, c.w, c.inp, c.weight, c.mean, c.rstd, N, C);
    fill_normal(&r, pre, NC, 0, 3);
    float *dinp2 = fdup(pre, NC);
    t_layernorm_backward(dinp2, c.w, c.inp, c.weight, c.mean, c.rstd, N, C);
    check_added("layernorm", dinp2, pre, dinp, NC);

    fd_check("layernorm dinp", c.inp, NC, dinp, ln_loss, &c, FD_SMOOTH);

    /* Invariances of the exact gradient: each row's dinp sums to 0 and is orthogonal to xhat
     * (LayerNorm output does not change when x is shifted or scaled). */
    for (int n = 0; n < N; n++) {
        double s0 = 0, s1 = 0, m0 = 0;
        for (int i = 0; i < C; i++) {
            double xhat = (c.inp[n * C + i] - c.mean[n]) * c.rstd[n];
            s0 += dinp[n * C + i];
            s1 += dinp[n * C + i] * xhat;
            m0 = fmax(m0, fabs(dinp[n * C + i]));
        }
        if (!(fabs(s0) <= 1e-4 * m0 * C && fabs(s1) <= 1e-4 * m0 * C))
            fail_msg("layernorm row %d: sum(dinp) %.3g, sum(dinp*xhat) %.3g (max|dinp| %.3g)", n,
                     s0, s1, m0);
    }

    free(ref);
    free(mag);
    free(dinp);
    free(dinp2);
    free(pre);
    free(c.out);
    free(c.mean);
    free(c.rstd);
    free(c.inp);
    free(c.weight);
    free(c.bias);
    free(c.w);
}

/* ---------------------------------------------------------------------------------------------
 * attention: causal, multi-head, q/k/v as strided views of qkv [B,T,3C] */

typedef struct at_ctx {
    float *out, *att, *qkv, *w;
    int B, T, C, NH;
} at_ctx;

static double at_loss(void *p) {
    at_ctx *c = p;
    t_attention_forward(c->out, c->att, c->qkv, c->qkv + c->C, c->qkv + 2 * c->C, 3 * c->C,
                        3 * c->C, c->B, c->T, c->NH, c->NH, c->C / c->NH);
    return dotw(c->w, c->out, (size_t)c->B * c->T * c->C);
}

static void run_attention(int B, int T, int C, int NH, uint64_t seed) {
    const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    const size_t na = (size_t)B * NH * T * T;
    const int hs = C / NH;
    rng r;
    rng_seed(&r, seed);
    at_ctx c = {.out = fvec(no),
                .att = fvec(na),
                .qkv = fvec(nq),
                .w = fvec(no),
                .B = B,
                .T = T,
                .C = C,
                .NH = NH};
    fill_normal(&r, c.qkv, nq, 0, 1);
    fill_normal(&r, c.w, no, 0, 1);
    char what[96];
    snprintf(what, sizeof what, "attention B=%d T=%d C=%d NH=%d", B, T, C, NH);

    /* forward vs a naive double reference; att must hold the causal softmax */
    at_loss(&c);
    double *ref = calloc(no, sizeof *ref), *mag = calloc(no, sizeof *mag);
    double *p = calloc((size_t)T, sizeof *p);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = c.qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                double mx = -INFINITY, sum = 0;
                for (int u = 0; u <= t; u++) {
                    const float *k = c.qkv + ((size_t)b * T + u) * 3 * C + C + h * hs;
                    double s = 0;
                    for (int i = 0; i < hs; i++) s += (double)q[i] * k[i];
                    p[u] = s / sqrt((double)hs);
                    mx = fmax(mx, p[u]);
                }
                for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - mx));
                const float *arow = c.att + (((size_t)b * NH + h) * T + t) * T;
                for (int u = 0; u < T; u++) {
                    double want = u <= t ? p[u] / sum : 0;
                    if (!(fabs(arow[u] - want) <= 1e-5))
                        fail_msg("%s: att[b%d h%d t%d u%d] = %.8g, expected %.8g", what, b, h, t, u,
                                 (double)arow[u], want);
                }
                for (int i = 0; i < hs; i++) {
                    double s = 0, m = 0;
                    for (int u = 0; u <= t; u++) {
                        double v = c.qkv[((size_t)b * T + u) * 3 * C + 2 * C + h * hs + i];
                        s += p[u] / sum * v;
                        m += fabs(p[u] / sum * v);
                    }
                    ref[((size_t)b * T + t) * C + h * hs + i] = s;
                    mag[((size_t)b * T + t) * C + h * hs + i] = m + 1;
                }
            }
    check_forward(what, c.out, ref, mag, no);

    float *dqkv = fvec(nq), *pre = fvec(nq);
    t_attention_backward(dqkv, dqkv + C, dqkv + 2 * C, c.w, c.out, c.qkv, c.qkv + C, c.qkv + 2 * C,
                         c.att, 3 * C, 3 * C, B, T, NH, NH, C / NH);
    fill_normal(&r, pre, nq, 0, 3);
    float *dqkv2 = fdup(pre, nq);
    t_attention_backward(dqkv2, dqkv2 + C, dqkv2 + 2 * C, c.w, c.out, c.qkv, c.qkv + C,
                         c.qkv + 2 * C, c.att, 3 * C, 3 * C, B, T, NH, NH, C / NH);
    check_overwritten(what, dqkv2, dqkv, nq);

    /* q and k enter through the softmax (non-linear), v linearly: every element at once */
    fd_check(what, c.qkv, nq, dqkv, at_loss, &c, FD_SMOOTH);

    /* causality: the last position's q/k/v cannot influence earlier outputs. With w zero except
     * at t = 0 of every batch, the gradient of every other position must be exactly 0. */
    memset(c.w, 0, no * sizeof(float));
    for (int b = 0; b < B; b++) fill_normal(&r, c.w + (size_t)b * T * C, C, 0, 1);
    at_loss(&c);
    t_attention_backward(dqkv, dqkv + C, dqkv + 2 * C, c.w, c.out, c.qkv, c.qkv + C, c.qkv + 2 * C,
                         c.att, 3 * C, 3 * C, B, T, NH, NH, C / NH);
    for (int b = 0; b < B; b++)
        for (int t = 1; t < T; t++)
            for (int i = 0; i < 3 * C; i++)
                if (dqkv[((size_t)b * T + t) * 3 * C + i] != 0)
                    fail_msg("%s: output t=0 has gradient %.3g on position %d (not causal)", what,
                             (double)dqkv[((size_t)b * T + t) * 3 * C + i], t);

    free(ref);
    free(mag);
    free(p);
    free(dqkv);
    free(dqkv2);
    free(pre);
    free(c.out);
    free(c.att);
    free(c.qkv);
    free(c.w);
}

static void test_attention(void **state) {
    (void)state;
    run_attention(2, 5, 8, 2, 31);
    run_attention(1, 7, 12, 3, 32);
    run_attention(2, 4, 8, 1, 33);
    run_attention(1, 6, 16, 4, 34);
}

/* ---------------------------------------------------------------------------------------------
 * GELU (tanh approximation) */

typedef struct ge_ctx {
    float *out, *inp, *w;
    int n;
} ge_ctx;

static double ge_loss(void *p) {
    ge_ctx *c = p;
    t_gelu_forward(c->out, c->inp, c->n);
    return dotw(c->w, c->out, (size_t)c->n);
}

static void test_gelu(void **state) {
    (void)state;
    const int n = 121;
    rng r;
    rng_seed(&r, 41);
    ge_ctx c = {.out = fvec(n), .inp = fvec(n), .w = fvec(n), .n = n};
    for (int i = 0; i < n; i++) c.inp[i] = -6.0f + 12.0f * i / (n - 1) + 0.01f * rng_normal(&r);
    fill_normal(&r, c.w, n, 0, 1);

    ge_loss(&c);
    double *ref = calloc(n, sizeof *ref), *mag = calloc(n, sizeof *mag);
    for (int i = 0; i < n; i++) {
        double x = c.inp[i];
        ref[i] = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        mag[i] = fabs(x) + 1;
    }
    check_forward("gelu", c.out, ref, mag, n);

    float *dinp = fvec(n), *pre = fvec(n);
    t_gelu_backward(dinp, c.inp, c.w, n);
    fill_normal(&r, pre, n, 0, 3);
    float *dinp2 = fdup(pre, n);
    t_gelu_backward(dinp2, c.inp, c.w, n);
    check_overwritten("gelu", dinp2, dinp, n);

    fd_check("gelu dinp", c.inp, n, dinp, ge_loss, &c, FD_SMOOTH);

    free(ref);
    free(mag);
    free(dinp);
    free(dinp2);
    free(pre);
    free(c.out);
    free(c.inp);
    free(c.w);
}

/* ---------------------------------------------------------------------------------------------
 * encoder and residual (forward only: embeddings are frozen, residual's backward is identity) */

static void test_encoder_residual(void **state) {
    (void)state;
    const int B = 2, T = 3, C = 5, V = 7;
    rng r;
    rng_seed(&r, 51);
    float *wte = fvec((size_t)V * C), *wpe = fvec((size_t)T * C), *out = fvec((size_t)B * T * C);
    fill_normal(&r, wte, (size_t)V * C, 0, 1);
    fill_normal(&r, wpe, (size_t)T * C, 0, 1);
    int tokens[6] = {3, 0, 6, 6, 1, 3};
    t_encoder_forward(out, tokens, wte, wpe, B, T, C, V);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++)
                assert_true(out[(b * T + t) * C + i] ==
                            wte[tokens[b * T + t] * C + i] + wpe[t * C + i]);
    float *sum = fvec((size_t)B * T * C);
    t_residual_forward(sum, out, wte, B * T * C);
    for (int i = 0; i < B * T * C; i++) assert_true(sum[i] == out[i] + wte[i]);
    free(wte);
    free(wpe);
    free(out);
    free(sum);
}

/* ---------------------------------------------------------------------------------------------
 * the head and its cross-entropy with an ignore index: with an identity head (C = V) the logits
 * are x itself, so the losses and dx are the cross-entropy's own */

typedef struct ce_ctx {
    float *logits, *head, *losses, *dx;
    const int *targets;
    int N, V;
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    t_head_loss(c->logits, c->head, c->targets, c->N, c->V, c->V, 0.0f, c->dx, c->losses);
    double s = 0;
    for (int n = 0; n < c->N; n++) s += c->losses[n];
    return s;
}

static void test_head_crossentropy(void **state) {
    (void)state;
    enum { N = 7, V = 11 };
    const int targets[N] = {3, -1, 0, 10, -1, 5, 5};
    rng r;
    rng_seed(&r, 61);
    ce_ctx c = {.logits = fvec(N * V),
                .head = fvec(V * V),
                .losses = fvec(N),
                .dx = fvec(N * V),
                .targets = targets,
                .N = N,
                .V = V};
    for (int v = 0; v < V; v++) c.head[v * V + v] = 1.0f;
    fill_normal(&r, c.logits, N * V, 0, 2);
    c.logits[6 * V + 5] += 4; /* one confident, correct row */

    /* forward: per-row losses; ignored rows lose 0 */
    double total = ce_loss(&c);
    double ref_total = 0;
    for (int n = 0; n < N; n++) {
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, c.logits[n * V + v]);
        for (int v = 0; v < V; v++) sum += exp(c.logits[n * V + v] - mx);
        double loss = targets[n] < 0 ? 0 : log(sum) - (c.logits[n * V + targets[n]] - mx);
        if (!(fabs(c.losses[n] - loss) <= 1e-5 * (loss + 1)))
            fail_msg("crossentropy: row %d loss %.8g, expected %.8g", n, (double)c.losses[n], loss);
        if (targets[n] < 0) assert_true(c.losses[n] == 0.0f);
        ref_total += loss;
    }
    print_message("  crossentropy sum %.10f, double reference %.10f\n", total, ref_total);
    assert_true(fabs(total - ref_total) <= 1e-6 * ref_total);

    /* stability: shifting every logit of a row by a constant (here +1000) changes nothing */
    float *saved = fdup(c.logits, N * V);
    for (int i = 0; i < N * V; i++) c.logits[i] += 1000.0f;
    double shifted = ce_loss(&c);
    memcpy(c.logits, saved, N * V * sizeof(float));
    print_message("  crossentropy with logits + 1000: sum %.10f\n", shifted);
    assert_true(isfinite(shifted) && fabs(shifted - ref_total) <= 1e-3 * ref_total);

    /* backward with grad_scale 1: dx = dlogits, against the FD of the summed loss; dx is
     * overwritten (prefilled with garbage first) */
    float *dlogits = fvec(N * V);
    fill_normal(&r, dlogits, N * V, 100, 1);
    t_head_loss(c.logits, c.head, targets, N, V, V, 1.0f, dlogits, c.losses);
    for (int n = 0; n < N; n++)
        if (targets[n] < 0)
            for (int v = 0; v < V; v++)
                if (dlogits[n * V + v] != 0.0f)
                    fail_msg("crossentropy: ignored row %d has dlogit %.3g", n,
                             (double)dlogits[n * V + v]);
    fd_check("crossentropy dlogits (sum of losses)", c.logits, N * V, dlogits, ce_loss, &c,
             FD_SMOOTH);
    /* each counted row's gradient sums to 0 (softmax minus one-hot) */
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int v = 0; v < V; v++) s += dlogits[n * V + v];
        assert_true(fabs(s) <= 1e-6);
    }

    /* grad_scale scales the gradient */
    float *scaled = fvec(N * V);
    t_head_loss(c.logits, c.head, targets, N, V, V, 0.125f, scaled, c.losses);
    for (int i = 0; i < N * V; i++)
        if (!(fabs(scaled[i] - 0.125 * dlogits[i]) <= 1e-7))
            fail_msg("crossentropy: grad_scale 0.125 gives %.8g at %d, expected %.8g",
                     (double)scaled[i], i, 0.125 * dlogits[i]);

    free(saved);
    free(dlogits);
    free(scaled);
    free(c.logits);
    free(c.head);
    free(c.losses);
    free(c.dx);
}

/* ---------------------------------------------------------------------------------------------
 * LoRA with several segments of different rank and scale */

#define LORA_SEGS 3

typedef struct lo_ctx {
    float *out, *base, *h, *x, *w;
    lora_segment segs[LORA_SEGS];
    float *A[LORA_SEGS], *Bm[LORA_SEGS];
    int N, IC, OC, h_ld;
} lo_ctx;

static double lo_loss(void *p) {
    lo_ctx *c = p;
    memcpy(c->out, c->base, (size_t)c->N * c->OC * sizeof(float));
    t_lora_forward(c->out, c->h, c->x, c->segs, LORA_SEGS, c->IC, c->OC, c->h_ld);
    return dotw(c->w, c->out, (size_t)c->N * c->OC);
}

static void test_lora(void **state) {
    (void)state;
    const int N = 9, IC = 6, OC = 5, h_ld = 4;
    const int row0[LORA_SEGS] = {0, 2, 6}, rows[LORA_SEGS] = {2, 4, 3};
    const int rank[LORA_SEGS] = {2, 4, 1};
    const float scale[LORA_SEGS] = {0.5f, 2.0f, 1.75f};
    const size_t NO = (size_t)N * OC, NI = (size_t)N * IC, NH = (size_t)N * h_ld;
    rng r;
    rng_seed(&r, 71);
    lo_ctx c = {.out = fvec(NO),
                .base = fvec(NO),
                .h = fvec(NH),
                .x = fvec(NI),
                .w = fvec(NO),
                .N = N,
                .IC = IC,
                .OC = OC,
                .h_ld = h_ld};
    fill_normal(&r, c.base, NO, 0, 1);
    fill_normal(&r, c.x, NI, 0, 1);
    fill_normal(&r, c.w, NO, 0, 1);
    for (int s = 0; s < LORA_SEGS; s++) {
        c.A[s] = fvec((size_t)rank[s] * IC);
        c.Bm[s] = fvec((size_t)OC * rank[s]);
        fill_normal(&r, c.A[s], (size_t)rank[s] * IC, 0, 1);
        fill_normal(&r, c.Bm[s], (size_t)OC * rank[s], 0, 1);
        c.segs[s] = (lora_segment){.row0 = row0[s],
                                   .rows = rows[s],
                                   .r = rank[s],
                                   .scale = scale[s],
                                   .A = c.A[s],
                                   .B = c.Bm[s]};
    }

    /* forward adds scale * (x . A^T) . B^T to out, per segment; h holds x . A^T */
    fill_normal(&r, c.h, NH, 0, 100); /* h is written, not accumulated */
    lo_loss(&c);
    double *ref = calloc(NO, sizeof *ref), *mag = calloc(NO, sizeof *mag);
    for (int s = 0; s < LORA_SEGS; s++)
        for (int n = row0[s]; n < row0[s] + rows[s]; n++) {
            double hv[4];
            for (int k = 0; k < rank[s]; k++) {
                hv[k] = 0;
                for (int i = 0; i < IC; i++) hv[k] += (double)c.x[n * IC + i] * c.A[s][k * IC + i];
                if (!(fabs(c.h[n * h_ld + k] - hv[k]) <= 1e-5 * (fabs(hv[k]) + 1)))
                    fail_msg("lora: h[%d,%d] = %.8g, expected x.A^T = %.8g", n, k,
                             (double)c.h[n * h_ld + k], hv[k]);
            }
            for (int o = 0; o < OC; o++) {
                double sum = 0, m = 0;
                for (int k = 0; k < rank[s]; k++) {
                    sum += scale[s] * hv[k] * c.Bm[s][o * rank[s] + k];
                    m += fabs(scale[s] * hv[k] * c.Bm[s][o * rank[s] + k]);
                }
                ref[n * OC + o] = c.base[n * OC + o] + sum;
                mag[n * OC + o] = fabs(c.base[n * OC + o]) + m + 1;
            }
        }
    check_forward("lora 3 segments", c.out, ref, mag, NO);

    /* backward into zero buffers */
    float *dx = fvec(NI), *dh = fvec(NH), *dA[LORA_SEGS], *dB[LORA_SEGS];
    for (int s = 0; s < LORA_SEGS; s++) {
        c.segs[s].dA = dA[s] = fvec((size_t)rank[s] * IC);
        c.segs[s].dB = dB[s] = fvec((size_t)OC * rank[s]);
    }
    t_lora_backward(dx, dh, c.w, c.x, c.h, c.segs, LORA_SEGS, IC, OC, h_ld);
    /* dh = scale * dout . B */
    for (int s = 0; s < LORA_SEGS; s++)
        for (int n = row0[s]; n < row0[s] + rows[s]; n++)
            for (int k = 0; k < rank[s]; k++) {
                double want = 0;
                for (int o = 0; o < OC; o++)
                    want += scale[s] * (double)c.w[n * OC + o] * c.Bm[s][o * rank[s] + k];
                if (!(fabs(dh[n * h_ld + k] - want) <= 1e-5 * (fabs(want) + 1)))
                    fail_msg("lora: dh[%d,%d] = %.8g, expected %.8g", n, k,
                             (double)dh[n * h_ld + k], want);
            }

    /* again into prefilled buffers (dh prefilled with garbage: it is written, not added); once
     * with dx and once with dx NULL, which must give the same dA and dB */
    float *pre_x = fvec(NI), *pre_A[LORA_SEGS], *pre_B[LORA_SEGS];
    fill_normal(&r, pre_x, NI, 0, 3);
    float *dx2 = fdup(pre_x, NI), *dh2 = fvec(NH);
    for (int pass = 0; pass < 2; pass++) {
        for (int s = 0; s < LORA_SEGS; s++) {
            if (pass == 0) {
                pre_A[s] = fvec((size_t)rank[s] * IC);
                pre_B[s] = fvec((size_t)OC * rank[s]);
                fill_normal(&r, pre_A[s], (size_t)rank[s] * IC, 0, 3);
                fill_normal(&r, pre_B[s], (size_t)OC * rank[s], 0, 3);
            }
            c.segs[s].dA = fdup(pre_A[s], (size_t)rank[s] * IC);
            c.segs[s].dB = fdup(pre_B[s], (size_t)OC * rank[s]);
        }
        fill_normal(&r, dh2, NH, 1000, 1);
        t_lora_backward(pass == 0 ? dx2 : NULL, dh2, c.w, c.x, c.h, c.segs, LORA_SEGS, IC, OC,
                        h_ld);
        for (int s = 0; s < LORA_SEGS; s++) {
            char what[64];
            snprintf(what, sizeof what, "lora seg %d dA (dx %s)", s, pass ? "NULL" : "given");
            check_added(what, c.segs[s].dA, pre_A[s], dA[s], (size_t)rank[s] * IC);
            snprintf(what, sizeof what, "lora seg %d dB (dx %s)", s, pass ? "NULL" : "given");
            check_added(what, c.segs[s].dB, pre_B[s], dB[s], (size_t)OC * rank[s]);
            for (int n = row0[s]; n < row0[s] + rows[s]; n++)
                for (int k = 0; k < rank[s]; k++)
                    if (dh2[n * h_ld + k] != dh[n * h_ld + k])
                        fail_msg("lora: dh[%d,%d] is %.8g over a prefilled buffer, %.8g over zeros "
                                 "(dh must be written, not added)",
                                 n, k, (double)dh2[n * h_ld + k], (double)dh[n * h_ld + k]);
            free(c.segs[s].dA);
            free(c.segs[s].dB);
            c.segs[s].dA = dA[s];
            c.segs[s].dB = dB[s];
        }
    }
    check_added("lora dx", dx2, pre_x, dx, NI);

    /* FD: out is linear in each single element of x, A and B, so a large step is exact */
    fd_check("lora dx (3 segments)", c.x, NI, dx, lo_loss, &c, FD_LINEAR);
    for (int s = 0; s < LORA_SEGS; s++) {
        char what[96];
        snprintf(what, sizeof what, "lora seg %d (r=%d scale=%g rows %d..%d) dA", s, rank[s],
                 (double)scale[s], row0[s], row0[s] + rows[s] - 1);
        fd_check(what, c.A[s], (size_t)rank[s] * IC, dA[s], lo_loss, &c, FD_LINEAR);
        snprintf(what, sizeof what, "lora seg %d (r=%d scale=%g rows %d..%d) dB", s, rank[s],
                 (double)scale[s], row0[s], row0[s] + rows[s] - 1);
        fd_check(what, c.Bm[s], (size_t)OC * rank[s], dB[s], lo_loss, &c, FD_LINEAR);
    }

    free(ref);
    free(mag);
    free(dx);
    free(dx2);
    free(dh);
    free(dh2);
    free(pre_x);
    for (int s = 0; s < LORA_SEGS; s++) {
        free(c.A[s]);
        free(c.Bm[s]);
        free(dA[s]);
        free(dB[s]);
        free(pre_A[s]);
        free(pre_B[s]);
    }
    free(c.out);
    free(c.base);
    free(c.h);
    free(c.x);
    free(c.w);
}

/* ---------------------------------------------------------------------------------------------
 * dropout */

typedef struct dr_ctx {
    float *out, *inp, *w;
    int n;
    float p;
    uint64_t seed;
} dr_ctx;

static const uint64_t SEQ_ID = 42; /* the one sequence these checks drop from */

static double dr_loss(void *ctx) {
    dr_ctx *c = ctx;
    t_dropout_forward(c->out, c->inp, c->n, c->p, c->seed, &SEQ_ID);
    return dotw(c->w, c->out, (size_t)c->n);
}

static void test_dropout_statistics(void **state) {
    (void)state;
    const int n = 1 << 20;
    float *ones = fvec(n), *a = fvec(n), *b = fvec(n), *c = fvec(n);
    for (int i = 0; i < n; i++) ones[i] = 1.0f;
    const float ps[3] = {0.1f, 0.3f, 0.5f};
    for (int k = 0; k < 3; k++) {
        float p = ps[k];
        t_dropout_forward(a, ones, n, p, 1234, &SEQ_ID);
        t_dropout_forward(b, ones, n, p, 1234, &SEQ_ID);
        t_dropout_forward(c, ones, n, p, 1235, &SEQ_ID);
        assert_memory_equal(a, b, (size_t)n * sizeof(float)); /* same seed, same mask */
        long kept = 0, agree = 0;
        const float keep = 1.0f / (1.0f - p);
        for (int i = 0; i < n; i++) {
            if (a[i] != 0.0f && a[i] != keep)
                fail_msg("dropout p=%g: element %d is %.8g, expected 0 or %.8g", (double)p, i,
                         (double)a[i], (double)keep);
            kept += a[i] != 0.0f;
            agree += (a[i] != 0.0f) == (c[i] != 0.0f);
        }
        double rate = (double)kept / n, sigma = sqrt(p * (1.0 - p) / n);
        double agree_rate = (double)agree / n, want_agree = p * p + (1.0 - p) * (1.0 - p);
        print_message("  dropout p=%.1f: keep rate %.5f (expected %.5f +- %.5f); masks of seeds "
                      "1234/1235 agree on %.5f (independent: %.5f)\n",
                      (double)p, rate, 1.0 - p, 6 * sigma, agree_rate, want_agree);
        if (!(fabs(rate - (1.0 - p)) <= 6 * sigma))
            fail_msg("dropout p=%g: keep rate %.5f, expected %.5f", (double)p, rate, 1.0 - p);
        if (!(fabs(agree_rate - want_agree) <= 0.01))
            fail_msg("dropout p=%g: masks of different seeds agree on %.4f of elements, expected "
                     "%.4f for independent masks",
                     (double)p, agree_rate, want_agree);
        /* no long runs of the same decision near the start (a weak check on the hash) */
        long first_half = 0;
        for (int i = 0; i < n / 2; i++) first_half += a[i] != 0.0f;
        assert_true(fabs((double)first_half / (n / 2) - (1.0 - p)) <= 6 * sigma * sqrt(2.0));
    }

    /* The mask is a pure function of (seed, sequence, index): a prefix call agrees with the long
     * one, and the thread count does not matter. */
    t_dropout_forward(a, ones, n, 0.2f, 99, &SEQ_ID);
    t_dropout_forward(b, ones, 1000, 0.2f, 99, &SEQ_ID);
    assert_memory_equal(a, b, 1000 * sizeof(float));
    ops_set_threads(1);
    t_dropout_forward(c, ones, n, 0.2f, 99, &SEQ_ID);
    ops_set_threads(0);
    assert_memory_equal(a, c, (size_t)n * sizeof(float));

    /* A sequence's masks do not depend on where it sits in a batch: two sequences (ids 7, 9) of
     * 3 rows each in one call equal each alone, and another id gives another mask. */
    {
        const int rows = 3, cols = 50, per = rows * cols;
        const uint64_t ids[2] = {7, 9}, other = 8;
        float *both = fvec(2 * (size_t)per), *one = fvec(per);
        dropout_forward(test_ctx(), A(both), CA(ones), 2 * rows, cols, rows, ids, 0.5f, 3);
        for (int k = 0; k < 2; k++) {
            dropout_forward(test_ctx(), A(one), CA(ones), rows, cols, rows, &ids[k], 0.5f, 3);
            assert_memory_equal(both + (size_t)k * per, one, per * sizeof(float));
        }
        dropout_forward(test_ctx(), A(one), CA(ones), rows, cols, rows, &other, 0.5f, 3);
        assert_memory_not_equal(both, one, per * sizeof(float));
        free(both);
        free(one);
    }

    /* p = 0 is the identity */
    rng r;
    rng_seed(&r, 81);
    fill_normal(&r, a, 4096, 0, 1);
    t_dropout_forward(b, a, 4096, 0.0f, 5, &SEQ_ID);
    assert_memory_equal(a, b, 4096 * sizeof(float));

    free(ones);
    free(a);
    free(b);
    free(c);
}

static void test_dropout_backward(void **state) {
    (void)state;
    const int n = 4096;
    rng r;
    rng_seed(&r, 91);
    dr_ctx c = {.out = fvec(n), .inp = fvec(n), .w = fvec(n), .n = n, .p = 0.25f, .seed = 777};
    fill_normal(&r, c.inp, n, 0, 1);
    fill_normal(&r, c.w, n, 0, 1);
    dr_loss(&c);
    const float keep = 1.0f / (1.0f - c.p);

    float *dinp = fvec(n), *pre = fvec(n);
    t_dropout_backward(dinp, c.w, n, c.p, c.seed, &SEQ_ID);
    fill_normal(&r, pre, n, 0, 3);
    float *dinp2 = fdup(pre, n);
    t_dropout_backward(dinp2, c.w, n, c.p, c.seed, &SEQ_ID);
    check_added("dropout", dinp2, pre, dinp, n);

    /* the same mask as forward: dinp = dout * keep where forward kept, 0 where it dropped */
    int dropped = 0;
    for (int i = 0; i < n; i++) {
        int kept = c.out[i] != 0.0f;
        dropped += !kept;
        if (kept && c.out[i] != c.inp[i] * keep)
            fail_msg("dropout forward: element %d is %.8g, expected %.8g", i, (double)c.out[i],
                     (double)(c.inp[i] * keep));
        float want = kept ? c.w[i] * keep : 0.0f;
        if (dinp[i] != want)
            fail_msg("dropout backward: element %d is %.8g, expected %.8g (forward %s it)", i,
                     (double)dinp[i], (double)want, kept ? "kept" : "dropped");
    }
    assert_true(dropped > n / 8 && dropped < n / 2);

    /* and the FD of the same-seed forward (linear, so a large step) */
    fd_check("dropout p=0.25 dinp", c.inp, 256, dinp, dr_loss, &c, FD_LINEAR);

    free(dinp);
    free(dinp2);
    free(pre);
    free(c.out);
    free(c.inp);
    free(c.w);
}

int main(void) {
    ops_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_encoder_residual),
        cmocka_unit_test(test_head_crossentropy),
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_dropout_statistics),
        cmocka_unit_test(test_dropout_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
