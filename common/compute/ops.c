/* The ops of ops.h, dispatched to the context's backend (backend.h), and the context itself. */
#include "backend.h"

#include <stdlib.h>

int ops_ctx_new(ops_ctx **out, device *d, const ops_limits *lim, lp_err *err) {
    ops_ctx *c = calloc(1, sizeof *c);
    if (!c) return lp_fail(err, "out of memory");
    c->dev = d;
    c->be = d->be;
    c->lim = *lim;
    if (c->be->ctx_init(c, lim, err) < 0) {
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void ops_ctx_free(ops_ctx *c) {
    if (!c) return;
    c->be->ctx_free(c);
    free(c);
}

device *ops_device(const ops_ctx *c) {
    return c->dev;
}

size_t ops_act_size(const ops_ctx *c) {
    return c->be->act_size;
}

size_t ops_workspace_bytes(const ops_ctx *c) {
    return c->workspace_bytes;
}

int ops_sync(ops_ctx *c, lp_err *err) {
    return c->be->sync(c, err);
}

void ops_record_event(ops_ctx *c, int slot) {
    if (c->be->record_event) c->be->record_event(c, slot);
}

int ops_wait_event(ops_ctx *c, int slot, lp_err *err) {
    return c->be->wait_event ? c->be->wait_event(c, slot, err) : 0;
}

size_t attention_state_floats(const ops_ctx *c, int B, int T, int NH) {
    return c->be->attention_state_floats(B, T, NH);
}

void ops_act_from_f32(ops_ctx *c, act *dst, const float *host, size_t n) {
    c->be->act_from_f32(c, dst, host, n);
}

void ops_act_to_f32(ops_ctx *c, float *host, const act *src, size_t n) {
    c->be->act_to_f32(c, host, src, n);
}

void ops_act_from_device_f32(ops_ctx *c, act *dst, const float *src, size_t n) {
    c->be->act_from_device_f32(c, dst, src, n);
}

void ops_copy_act(ops_ctx *c, act *dst, const act *src, size_t n) {
    c->be->copy_act(c, dst, src, n);
}

void ops_upload(ops_ctx *c, void *dst, const void *host, size_t bytes) {
    c->be->upload_async(c, dst, host, bytes);
}

void ops_download(ops_ctx *c, void *host, const void *src, size_t bytes) {
    c->be->download_async(c, host, src, bytes);
}

void ops_zero(ops_ctx *c, void *p, size_t bytes) {
    c->be->zero(c, p, bytes);
}

double ops_sum_f32(ops_ctx *c, const float *x, size_t n) {
    return c->be->sum_f32(c, x, n);
}

double ops_sum_squares_f32(ops_ctx *c, const float *x, size_t n) {
    return c->be->sum_squares_f32(c, x, n);
}

void matmul_forward(ops_ctx *c, act *out, const act *inp, const weight *w, weight_layout layout,
                    const weight *bias, int N, int IC, int OC) {
    c->be->matmul_forward(c, out, inp, w, layout, bias, N, IC, OC);
}

void matmul_backward(ops_ctx *c, act *dinp, const act *dout, const weight *w, weight_layout layout,
                     int N, int IC, int OC, int accumulate) {
    c->be->matmul_backward(c, dinp, dout, w, layout, N, IC, OC, accumulate);
}

void matmul_backward_weight(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                            const act *dout, weight_layout layout, int N, int IC, int OC) {
    c->be->matmul_backward_weight(c, dweight, dbias, inp, dout, layout, N, IC, OC);
}

void encoder_forward(ops_ctx *c, act *out, const int *tokens, const weight *wte, const weight *wpe,
                     int B, int T, int pos0, int C) {
    c->be->encoder_forward(c, out, tokens, wte, wpe, B, T, pos0, C);
}

void embedding_forward(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N, int C) {
    c->be->embedding_forward(c, out, tokens, emb, N, C);
}

void layernorm_forward(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                       const weight *w, const weight *b, int N, int C, float eps) {
    c->be->layernorm_forward(c, out, mean, rstd, inp, w, b, N, C, eps);
}

void layernorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                        const float *mean, const float *rstd, int N, int C) {
    c->be->layernorm_backward(c, dinp, dout, inp, w, mean, rstd, N, C);
}

void rmsnorm_forward(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w, int N,
                     int C, float eps) {
    c->be->rmsnorm_forward(c, out, rstd, inp, w, N, C, eps);
}

void rmsnorm_recompute(ops_ctx *c, act *out, const act *inp, const weight *w, const float *rstd,
                       int N, int C) {
    c->be->rmsnorm_recompute(c, out, inp, w, rstd, N, C);
}

void rmsnorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                      const float *rstd, int N, int C) {
    c->be->rmsnorm_backward(c, dinp, dout, inp, w, rstd, N, C);
}

void attention_forward(ops_ctx *c, act *out, float *state, const act *q, const act *k, const act *v,
                       int ldq, int ldk, int B, int T, int NH, int NKV, int hd) {
    c->be->attention_forward(c, out, state, q, k, v, ldq, ldk, B, T, NH, NKV, hd);
}

void attention_backward(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout, const act *out,
                        const act *q, const act *k, const act *v, const float *state, int ldq,
                        int ldk, int B, int T, int NH, int NKV, int hd) {
    c->be->attention_backward(c, dq, dk, dv, dout, out, q, k, v, state, ldq, ldk, B, T, NH, NKV,
                              hd);
}

void attention_cached(ops_ctx *c, act *out, const act *q, int ldq, const act *k, const act *v,
                      int ldk, int n, int past, int NH, int NKV, int hd) {
    c->be->attention_cached(c, out, q, ldq, k, v, ldk, n, past, NH, NKV, hd);
}

void gelu_forward(ops_ctx *c, act *out, const act *inp, int n) {
    c->be->gelu_forward(c, out, inp, n);
}

void gelu_backward(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n) {
    c->be->gelu_backward(c, dinp, inp, dout, n);
}

void swiglu_forward(ops_ctx *c, act *out, const act *gate, const act *up, int n) {
    c->be->swiglu_forward(c, out, gate, up, n);
}

void swiglu_backward(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                     const act *dout, int n) {
    c->be->swiglu_backward(c, dgate, dup, gate, up, dout, n);
}

void residual_forward(ops_ctx *c, act *out, const act *a, const act *b, int n) {
    c->be->residual_forward(c, out, a, b, n);
}

void residual_backward(ops_ctx *c, act *dinp, const act *dout, int n) {
    c->be->residual_backward(c, dinp, dout, n);
}

void rope_forward(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH,
                  int hd) {
    c->be->rope_forward(c, x, cos_sin, N, T, pos0, NH, hd);
}

void rope_backward(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                   int pos0, int NH, int hd) {
    c->be->rope_backward(c, dx, dout, cos_sin, N, T, pos0, NH, hd);
}

void head_loss(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows, int C,
               int V, float grad_scale, act *dx, float *dhead, float *losses) {
    c->be->head_loss(c, x, head, targets, rows, C, V, grad_scale, dx, dhead, losses);
}

void head_logits(ops_ctx *c, float *logits, const act *x, const weight *head, int rows, int C,
                 int V) {
    c->be->head_logits(c, logits, x, head, rows, C, V);
}

void lora_forward(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs, int n_segs,
                  int IC, int OC, int h_ld) {
    c->be->lora_forward(c, out, h, x, segs, n_segs, IC, OC, h_ld);
}

void lora_backward(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                   const lora_segment *segs, int n_segs, int IC, int OC, int h_ld) {
    c->be->lora_backward(c, dx, dh, dout, x, h, segs, n_segs, IC, OC, h_ld);
}

void dropout_forward(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                     const uint64_t *seq_ids, float p, uint64_t seed) {
    c->be->dropout_forward(c, out, inp, rows, cols, seq_rows, seq_ids, p, seed);
}

void dropout_backward(ops_ctx *c, act *dinp, const act *dout, int rows, int cols, int seq_rows,
                      const uint64_t *seq_ids, float p, uint64_t seed) {
    c->be->dropout_backward(c, dinp, dout, rows, cols, seq_rows, seq_ids, p, seed);
}
