/* The ops of compute/ops.h on the CPU backend, over plain float arrays (on the CPU an activation
 * is an f32 and a weight a pointer): what the op-level tests call. One context with generous
 * limits serves a whole test program. Included by one test file each. */
#ifndef LORAPS_TEST_CPU_OPS_H
#define LORAPS_TEST_CPU_OPS_H

#include "ops.h"

static ops_ctx *test_ctx(void) {
    static ops_ctx *c;
    if (!c) {
        ops_limits lim = {.max_rows = 4096,
                          .max_T = 64,
                          .max_heads = 16,
                          .head_dim = 64,
                          .max_kv = 256,
                          .vocab = 1024,
                          .max_matrix = 1 << 20};
        lp_err err;
        if (ops_ctx_new(&c, device_cpu(), &lim, &err) < 0) fail_msg("ops context: %s", err.msg);
    }
    return c;
}

#define A(p)  ((act *)(p))
#define CA(p) ((const act *)(p))

static weight wf(const float *p, size_t n) {
    return (weight){.data = p, .dtype = DT_F32, .numel = n};
}

static inline void t_matmul_forward(float *out, const float *inp, const float *W,
                                    weight_layout layout, const float *bias, int N, int IC,
                                    int OC) {
    weight w = wf(W, (size_t)IC * OC), b = wf(bias, (size_t)OC);
    matmul_forward(test_ctx(), A(out), CA(inp), &w, layout, bias ? &b : NULL, N, IC, OC);
}

static inline void t_matmul_backward(float *dinp, const float *dout, const float *W,
                                     weight_layout layout, int N, int IC, int OC, int acc) {
    weight w = wf(W, (size_t)IC * OC);
    matmul_backward(test_ctx(), A(dinp), CA(dout), &w, layout, N, IC, OC, acc);
}

static inline void t_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                       const float *weight_, const float *bias, int N, int C,
                                       float eps) {
    weight w = wf(weight_, (size_t)C), b = wf(bias, (size_t)C);
    layernorm_forward(test_ctx(), A(out), mean, rstd, CA(inp), &w, &b, N, C, eps);
}

static inline void t_layernorm_backward(float *dinp, const float *dout, const float *inp,
                                        const float *weight_, const float *mean, const float *rstd,
                                        int N, int C) {
    weight w = wf(weight_, (size_t)C);
    layernorm_backward(test_ctx(), A(dinp), CA(dout), CA(inp), &w, mean, rstd, N, C);
}

static inline void t_rmsnorm_forward(float *out, float *rstd, const float *inp,
                                     const float *weight_, int N, int C, float eps) {
    weight w = wf(weight_, (size_t)C);
    rmsnorm_forward(test_ctx(), A(out), rstd, CA(inp), &w, N, C, eps);
}

static inline void t_rmsnorm_recompute(float *out, const float *inp, const float *weight_,
                                       const float *rstd, int N, int C) {
    weight w = wf(weight_, (size_t)C);
    rmsnorm_recompute(test_ctx(), A(out), CA(inp), &w, rstd, N, C);
}

static inline void t_rmsnorm_backward(float *dinp, const float *dout, const float *inp,
                                      const float *weight_, const float *rstd, int N, int C) {
    weight w = wf(weight_, (size_t)C);
    rmsnorm_backward(test_ctx(), A(dinp), CA(dout), CA(inp), &w, rstd, N, C);
}

static inline void t_attention_forward(float *out, float *state, const float *q, const float *k,
                                       const float *v, int ldq, int ldk, int B, int T, int NH,
                                       int NKV, int hd) {
    attention_forward(test_ctx(), A(out), state, CA(q), CA(k), CA(v), ldq, ldk, B, T, NH, NKV, hd);
}

static inline void t_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                        const float *out, const float *q, const float *k,
                                        const float *v, const float *state, int ldq, int ldk, int B,
                                        int T, int NH, int NKV, int hd) {
    attention_backward(test_ctx(), A(dq), A(dk), A(dv), CA(dout), CA(out), CA(q), CA(k), CA(v),
                       state, ldq, ldk, B, T, NH, NKV, hd);
}

static inline void t_attention_cached(float *out, const float *q, int ldq, const float *k,
                                      const float *v, int ldk, int n, int past, int NH, int NKV,
                                      int hd) {
    attention_cached(test_ctx(), A(out), CA(q), ldq, CA(k), CA(v), ldk, n, past, NH, NKV, hd);
}

static inline void t_gelu_forward(float *out, const float *inp, int n) {
    gelu_forward(test_ctx(), A(out), CA(inp), n);
}

static inline void t_gelu_backward(float *dinp, const float *inp, const float *dout, int n) {
    gelu_backward(test_ctx(), A(dinp), CA(inp), CA(dout), n);
}

static inline void t_swiglu_forward(float *out, const float *gate, const float *up, int n) {
    swiglu_forward(test_ctx(), A(out), CA(gate), CA(up), n);
}

static inline void t_swiglu_backward(float *dgate, float *dup, const float *gate, const float *up,
                                     const float *dout, int n) {
    swiglu_backward(test_ctx(), A(dgate), A(dup), CA(gate), CA(up), CA(dout), n);
}

static inline void t_residual_forward(float *out, const float *a, const float *b, int n) {
    residual_forward(test_ctx(), A(out), CA(a), CA(b), n);
}

static inline void t_rope_forward(float *x, const float *cos_sin, int N, int T, int pos0, int NH,
                                  int hd) {
    rope_forward(test_ctx(), A(x), cos_sin, N, T, pos0, NH, hd);
}

static inline void t_rope_backward(float *dx, const float *dout, const float *cos_sin, int N, int T,
                                   int pos0, int NH, int hd) {
    rope_backward(test_ctx(), A(dx), CA(dout), cos_sin, N, T, pos0, NH, hd);
}

static inline void t_encoder_forward(float *out, const int *tokens, const float *wte,
                                     const float *wpe, int B, int T, int C, int V) {
    weight te = wf(wte, (size_t)V * C), pe = wf(wpe, (size_t)T * C);
    encoder_forward(test_ctx(), A(out), tokens, &te, &pe, B, T, 0, C);
}

static inline void t_embedding_forward(float *out, const int *tokens, const float *emb, int N,
                                       int C, int V) {
    weight e = wf(emb, (size_t)V * C);
    embedding_forward(test_ctx(), A(out), tokens, &e, N, C);
}

static inline void t_head_loss(const float *x, const float *head, const int *targets, int rows,
                               int C, int V, float grad_scale, float *dx, float *losses) {
    weight h = wf(head, (size_t)V * C);
    head_loss(test_ctx(), CA(x), &h, targets, rows, C, V, grad_scale, A(dx), NULL, losses);
}

static inline void t_lora_forward(float *out, float *h, const float *x, const lora_segment *segs,
                                  int n_segs, int IC, int OC, int h_ld) {
    lora_forward(test_ctx(), A(out), A(h), CA(x), segs, n_segs, IC, OC, h_ld);
}

static inline void t_lora_backward(float *dx, float *dh, const float *dout, const float *x,
                                   const float *h, const lora_segment *segs, int n_segs, int IC,
                                   int OC, int h_ld) {
    lora_backward(test_ctx(), A(dx), A(dh), CA(dout), CA(x), CA(h), segs, n_segs, IC, OC, h_ld);
}

/* Dropout over n values as one row of one sequence (id seq). */
static inline void t_dropout_forward(float *out, const float *inp, int n, float p, uint64_t seed,
                                     const uint64_t *seq) {
    dropout_forward(test_ctx(), A(out), CA(inp), 1, n, 1, seq, p, seed);
}

static inline void t_dropout_backward(float *dinp, const float *dout, int n, float p, uint64_t seed,
                                      const uint64_t *seq) {
    dropout_backward(test_ctx(), A(dinp), CA(dout), 1, n, 1, seq, p, seed);
}

#endif
