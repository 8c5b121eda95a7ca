/* Finite-difference gradient checks for the Llama ops of compute/ops.h, in the manner of
 * test_ops_gradcheck.c (the helpers are the same): for each op, small random inputs, a random
 * projection w, L(x) = sum(w * forward(x)) in double, and the analytic gradient from backward
 * with dout = w, checked element by element against central differences. RMSNorm's backward adds
 * into its output, the others overwrite theirs (both checked on prefilled buffers), and forwards
 * are checked against naive double-precision references. Attention runs with grouped-query heads
 * (NKV = 1, 2 and NH); the KV-cache attention must equal the rows of the full one. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "cpu_ops.h"
#include "ops.h"
#include "ops_gradcheck.h"
#include "rng.h"

/* ---------------------------------------------------------------------------------------------
 * RMSNorm */

typedef struct rms_ctx {
    float *out, *rstd, *inp, *weight, *w;
    int N, C;
    float eps;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    t_rmsnorm_forward(c->out, c->rstd, c->inp, c->weight, c->N, c->C, c->eps);
    return dotw(c->w, c->out, (size_t)c->N * c->C);
}

static void test_rmsnorm(void **state) {
    (void)state;
    const int N = 6, C = 16;
    const size_t NC = (size_t)N * C;
    rng r;
    rng_seed(&r, 31);
    rms_ctx c = {.out = fvec(NC),
                 .rstd = fvec(N),
                 .inp = fvec(NC),
                 .weight = fvec(C),
                 .w = fvec(NC),
                 .N = N,
                 .C = C,
                 .eps = 1e-5f};
    fill_normal(&r, c.inp, NC, 0.3f, 1.5f);
    fill_normal(&r, c.weight, C, 1, 0.3f);
    fill_normal(&r, c.w, NC, 0, 1);
    rms_loss(&c);
    double *ref = calloc(NC, sizeof *ref), *mag = calloc(NC, sizeof *mag);
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int k = 0; k < C; k++) ss += (double)c.inp[i * C + k] * c.inp[i * C + k];
        double s = 1.0 / sqrt(ss / C + 1e-5);
        for (int k = 0; k < C; k++) {
            ref[i * C + k] = c.inp[i * C + k] * s * c.weight[k];
            mag[i * C + k] = fabs(ref[i * C + k]);
        }
    }
    check_forward("rmsnorm", c.out, ref, mag, NC);
    float *dinp = fvec(NC), *pre = fvec(NC);
    t_rmsnorm_backward(dinp, c.w, c.inp, c.weight, c.rstd, N, C);
    fill_normal(&r, pre, NC, 0, 2);
    float *dinp2 = fdup(pre, NC);
    t_rmsnorm_backward(dinp2, c.w, c.inp, c.weight, c.rstd, N, C);
    check_added("rmsnorm", dinp2, pre, dinp, NC);
    fd_check("rmsnorm dinp", c.inp, NC, dinp, rms_loss, &c, FD_SMOOTH);
    free(ref), free(mag), free(dinp), free(dinp2), free(pre);
    free(c.out), free(c.rstd), free(c.inp), free(c.weight), free(c.w);
}

/* ---------------------------------------------------------------------------------------------
 * rotary embeddings */

typedef struct rope_ctx {
    float *x, *y, *cs, *w;
    int N, T, pos0, NH, hd;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->N * c->NH * c->hd;
    memcpy(c->y, c->x, n * sizeof(float));
    t_rope_forward(c->y, c->cs, c->N, c->T, c->pos0, c->NH, c->hd);
    return dotw(c->w, c->y, n);
}

static void run_rope(int N, int T, int pos0, int NH, int hd, uint64_t seed) {
    const int P = 64;
    size_t n = (size_t)N * NH * hd;
    rng r;
    rng_seed(&r, seed);
    double inv_freq[32];
    for (int j = 0; j < hd / 2; j++) inv_freq[j] = 1.0 / pow(10000.0, 2.0 * j / hd);
    rope_ctx c = {.x = fvec(n),
                  .y = fvec(n),
                  .cs = fvec((size_t)P * hd),
                  .w = fvec(n),
                  .N = N,
                  .T = T,
                  .pos0 = pos0,
                  .NH = NH,
                  .hd = hd};
    rope_table(c.cs, inv_freq, P, hd);
    fill_normal(&r, c.x, n, 0, 1);
    fill_normal(&r, c.w, n, 0, 1);
    rope_loss(&c);
    /* reference: HF's q * cos + rotate_half(q) * sin, angles in double */
    double *ref = calloc(n, sizeof *ref), *mag = calloc(n, sizeof *mag);
    int half = hd / 2;
    for (int i = 0; i < N; i++)
        for (int h = 0; h < NH; h++)
            for (int j = 0; j < hd; j++) {
                const float *xv = c.x + ((size_t)i * NH + h) * hd;
                double a = (double)(pos0 + i % T) * inv_freq[j % half];
                double rot = j < half ? -(double)xv[j + half] : (double)xv[j - half];
                size_t o = ((size_t)i * NH + h) * hd + j;
                ref[o] = xv[j] * cos(a) + rot * sin(a);
                mag[o] = fabs(xv[j]) + fabs(rot);
            }
    char what[96];
    snprintf(what, sizeof what, "rope N=%d T=%d pos0=%d NH=%d hd=%d", N, T, pos0, NH, hd);
    check_forward(what, c.y, ref, mag, n);
    float *dx = fvec(n), *pre = fvec(n);
    t_rope_backward(dx, c.w, c.cs, N, T, pos0, NH, hd);
    fill_normal(&r, pre, n, 0, 2);
    float *dx2 = fdup(pre, n);
    t_rope_backward(dx2, c.w, c.cs, N, T, pos0, NH, hd);
    check_overwritten(what, dx2, dx, n);
    fd_check(what, c.x, n, dx, rope_loss, &c, FD_LINEAR);
    free(ref), free(mag), free(dx), free(dx2), free(pre);
    free(c.x), free(c.y), free(c.cs), free(c.w);
}

static void test_rope(void **state) {
    (void)state;
    run_rope(8, 4, 0, 3, 8, 41);   /* two sequences of 4 */
    run_rope(5, 5, 17, 2, 16, 42); /* one sequence from position 17 (the KV-cache case) */
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU */

typedef struct sg_ctx {
    float *out, *gate, *up, *w;
    int n;
} sg_ctx;

static double sg_loss(void *p) {
    sg_ctx *c = p;
    t_swiglu_forward(c->out, c->gate, c->up, c->n);
    return dotw(c->w, c->out, (size_t)c->n);
}

static void test_swiglu(void **state) {
    (void)state;
    const int n = 64;
    rng r;
    rng_seed(&r, 51);
    sg_ctx c = {.out = fvec(n), .gate = fvec(n), .up = fvec(n), .w = fvec(n), .n = n};
    fill_normal(&r, c.gate, n, 0, 3);
    fill_normal(&r, c.up, n, 0, 1);
    fill_normal(&r, c.w, n, 0, 1);
    c.gate[0] = -100.0f; /* exp overflows: silu must still be 0, not NaN */
    c.gate[1] = 100.0f;
    sg_loss(&c);
    double ref[64], mag[64];
    for (int i = 0; i < n; i++) {
        double g = c.gate[i];
        ref[i] = g / (1 + exp(-g)) * c.up[i];
        mag[i] = fabs(ref[i]);
    }
    check_forward("swiglu", c.out, ref, mag, n);
    float *dg = fvec(n), *du = fvec(n), *pg = fvec(n), *pu = fvec(n);
    t_swiglu_backward(dg, du, c.gate, c.up, c.w, n);
    for (int i = 0; i < n; i++) assert_true(isfinite(dg[i]) && isfinite(du[i]));
    fill_normal(&r, pg, n, 0, 2);
    fill_normal(&r, pu, n, 0, 2);
    float *dg2 = fdup(pg, n), *du2 = fdup(pu, n);
    t_swiglu_backward(dg2, du2, c.gate, c.up, c.w, n);
    check_overwritten("swiglu dgate", dg2, dg, n);
    check_overwritten("swiglu dup", du2, du, n);
    c.gate[0] = -3.0f, c.gate[1] = 3.0f; /* finite differences at moderate values */
    memset(dg, 0, n * sizeof(float));
    memset(du, 0, n * sizeof(float));
    t_swiglu_backward(dg, du, c.gate, c.up, c.w, n);
    fd_check("swiglu dgate", c.gate, n, dg, sg_loss, &c, FD_SMOOTH);
    fd_check("swiglu dup", c.up, n, du, sg_loss, &c, FD_LINEAR);
    free(dg), free(du), free(pg), free(pu), free(dg2), free(du2);
    free(c.out), free(c.gate), free(c.up), free(c.w);
}

/* ---------------------------------------------------------------------------------------------
 * grouped-query attention */

typedef struct att_ctx {
    float *out, *att, *q, *k, *v, *w;
    int B, T, NH, NKV, hd;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    t_attention_forward(c->out, c->att, c->q, c->k, c->v, c->NH * c->hd, c->NKV * c->hd, c->B, c->T,
                        c->NH, c->NKV, c->hd);
    return dotw(c->w, c->out, (size_t)c->B * c->T * c->NH * c->hd);
}

/* Naive double attention: out [B*T, NH*hd]. */
static void att_reference(const att_ctx *c, double *ref, double *mag) {
    int G = c->NH / c->NKV, QD = c->NH * c->hd, KVD = c->NKV * c->hd;
    double *p = calloc((size_t)c->T, sizeof *p);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->NH; h++)
            for (int t = 0; t < c->T; t++) {
                const float *qv = c->q + ((size_t)b * c->T + t) * QD + h * c->hd;
                double max = -INFINITY, sum = 0;
                for (int u = 0; u <= t; u++) {
                    const float *kv = c->k + ((size_t)b * c->T + u) * KVD + (h / G) * c->hd;
                    double s = 0;
                    for (int j = 0; j < c->hd; j++) s += (double)qv[j] * kv[j];
                    p[u] = s / sqrt((double)c->hd);
                    max = fmax(max, p[u]);
                }
                for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - max));
                for (int j = 0; j < c->hd; j++) {
                    double o = 0, m = 0;
                    for (int u = 0; u <= t; u++) {
                        double vv = c->v[((size_t)b * c->T + u) * KVD + (h / G) * c->hd + j];
                        o += p[u] / sum * vv;
                        m += p[u] / sum * fabs(vv);
                    }
                    ref[((size_t)b * c->T + t) * QD + h * c->hd + j] = o;
                    mag[((size_t)b * c->T + t) * QD + h * c->hd + j] = m;
                }
            }
    free(p);
}

static void run_attention(int B, int T, int NH, int NKV, int hd, int slots, uint64_t seed) {
    size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd;
    rng r;
    rng_seed(&r, seed);
    att_ctx c = {.out = fvec(nq),
                 .att = fvec((size_t)B * NH * T * T),
                 .q = fvec(nq),
                 .k = fvec(nk),
                 .v = fvec(nk),
                 .w = fvec(nq),
                 .B = B,
                 .T = T,
                 .NH = NH,
                 .NKV = NKV,
                 .hd = hd};
    fill_normal(&r, c.q, nq, 0, 1);
    fill_normal(&r, c.k, nk, 0, 1);
    fill_normal(&r, c.v, nk, 0, 1);
    fill_normal(&r, c.w, nq, 0, 1);
    char what[128];
    snprintf(what, sizeof what, "gqa B=%d T=%d NH=%d NKV=%d hd=%d slots=%d", B, T, NH, NKV, hd,
             slots);
    att_loss(&c);
    double *ref = calloc(nq, sizeof *ref), *mag = calloc(nq, sizeof *mag);
    att_reference(&c, ref, mag);
    check_forward(what, c.out, ref, mag, nq);

    float *dq = fvec(nq), *dk = fvec(nk), *dv = fvec(nk);
    t_attention_backward(dq, dk, dv, c.w, c.out, c.q, c.k, c.v, c.att, NH * hd, NKV * hd, B, T, NH,
                         NKV, hd);
    float *pq = fvec(nq), *pk = fvec(nk), *pv = fvec(nk);
    fill_normal(&r, pq, nq, 0, 2);
    fill_normal(&r, pk, nk, 0, 2);
    fill_normal(&r, pv, nk, 0, 2);
    float *dq2 = fdup(pq, nq), *dk2 = fdup(pk, nk), *dv2 = fdup(pv, nk);
    t_attention_backward(dq2, dk2, dv2, c.w, c.out, c.q, c.k, c.v, c.att, NH * hd, NKV * hd, B, T,
                         NH, NKV, hd);
    check_overwritten("gqa dq", dq2, dq, nq);
    check_overwritten("gqa dk", dk2, dk, nk);
    check_overwritten("gqa dv", dv2, dv, nk);
    char lbl[160];
    snprintf(lbl, sizeof lbl, "%s dq", what);
    fd_check(lbl, c.q, nq, dq, att_loss, &c, FD_SMOOTH);
    snprintf(lbl, sizeof lbl, "%s dk", what);
    fd_check(lbl, c.k, nk, dk, att_loss, &c, FD_SMOOTH);
    snprintf(lbl, sizeof lbl, "%s dv", what);
    fd_check(lbl, c.v, nk, dv, att_loss, &c, FD_LINEAR);

    /* the KV-cache variant: the last n queries of sequence 0 against its first past + n keys */
    if (B == 1) {
        int n = 3, past = T - n, QD = NH * hd;
        float *out = fvec((size_t)n * QD);
        t_attention_cached(out, c.q + (size_t)past * QD, QD, c.k, c.v, NKV * hd, n, past, NH, NKV,
                           hd);
        check_forward("gqa cached (last 3 rows)", out, ref + (size_t)past * QD,
                      mag + (size_t)past * QD, (size_t)n * QD);
        t_attention_cached(out, c.q, QD, c.k, c.v, NKV * hd, 1, 0, NH, NKV, hd);
        check_forward("gqa cached (first row alone)", out, ref, mag, (size_t)QD);
        free(out);
    }
    free(ref), free(mag), free(dq), free(dk), free(dv), free(pq), free(pk);
    free(pv), free(dq2), free(dk2), free(dv2);
    free(c.out), free(c.att), free(c.q), free(c.k), free(c.v), free(c.w);
}

static void test_gqa_attention(void **state) {
    (void)state;
    run_attention(2, 5, 4, 2, 4, 1, 61); /* groups of 2 query heads per KV head */
    run_attention(2, 4, 4, 1, 4, 2, 62); /* one KV head (multi-query) */
    run_attention(1, 6, 3, 3, 6, 2, 63); /* NKV = NH: plain multi-head; cached variant too */
    run_attention(1, 7, 6, 2, 4, 4, 64); /* groups of 3; cached variant too */
}

/* ---------------------------------------------------------------------------------------------
 * frozen weights kept in bf16: matmul and the embedding lookup widen them exactly */

static void test_bf16_weights(void **state) {
    (void)state;
    const int N = 3, IC = 40, OC = 25, V = 10, C = 4;
    rng r;
    rng_seed(&r, 71);
    size_t nw = (size_t)IC * OC;
    uint16_t *h = malloc(nw * sizeof *h);
    float *widened = fvec(nw), *x = fvec((size_t)N * IC);
    for (size_t i = 0; i < nw; i++) h[i] = f32_to_bf16(rng_normal(&r) * 10);
    h[0] = 0x8000; /* -0 */
    for (size_t i = 0; i < nw; i++) widened[i] = bf16_to_f32(h[i]);
    fill_normal(&r, x, (size_t)N * IC, 0, 1);
    float *y16 = fvec((size_t)N * OC), *y32 = fvec((size_t)N * OC);
    weight w16 = {.data = h, .dtype = DT_BF16, .numel = nw};
    for (int layout = 0; layout < 2; layout++) {
        matmul_forward(test_ctx(), A(y16), CA(x), &w16, (weight_layout)layout, NULL, N, IC, OC);
        t_matmul_forward(y32, x, widened, (weight_layout)layout, NULL, N, IC, OC);
        assert_memory_equal(y16, y32, (size_t)N * OC * sizeof(float));
    }
    uint16_t emb16[40];
    float emb[40], out[20];
    for (int i = 0; i < V * C; i++) emb16[i] = f32_to_bf16((float)i * 0.37f);
    for (int i = 0; i < V * C; i++) emb[i] = bf16_to_f32(emb16[i]);
    int tok[5] = {3, 0, 9, 3, 7};
    weight e16 = {.data = emb16, .dtype = DT_BF16, .numel = 40};
    embedding_forward(test_ctx(), A(out), tok, &e16, 5, C);
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < C; k++) assert_true(out[i * C + k] == emb[tok[i] * C + k]);
    free(h), free(widened), free(x), free(y16), free(y32);
}

int main(void) {
    ops_set_threads(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),      cmocka_unit_test(test_rope),
        cmocka_unit_test(test_swiglu),       cmocka_unit_test(test_gqa_attention),
        cmocka_unit_test(test_bf16_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
