/* The CPU backend: f32 activations, every matmul through OpenBLAS (row-major, transpose flags,
 * never a copy), elementwise kernels with OpenMP. One file per op, forward and backward
 * together; backend.c holds the table ops.c dispatches through. Private to compute/cpu. */
#ifndef LORAPS_CPU_H
#define LORAPS_CPU_H

#include "backend.h"

/* A context's bf16 GEMMs (gemm_bf16.c): oneDNN's engine, stream and primitives. */
typedef struct cpu_bf16 cpu_bf16;

/* What a context's workspace holds (carved from one allocation by ctx_init). */
typedef struct cpu_workspace {
    float *att_scratch; /* attention backward: slots * T * T */
    float *kv_scratch;  /* attention_cached: slots * rows * kv */
    float *widen;       /* one bf16 matrix widened to f32 */
    float *logits;      /* one chunk of the head's logits: CPU_HEAD_CHUNK * V */
    int slots;          /* threads attention may use */
    cpu_bf16 *bf16;     /* bf16 weights' GEMMs run in bf16 (LORAPS_CPU_GEMM=bf16), else NULL */
} cpu_workspace;

#define CPU_HEAD_CHUNK 128 /* rows of logits at a time */

static inline cpu_workspace *cpu_ws(const ops_ctx *c) {
    return (cpu_workspace *)c->impl;
}

/* A weight as f32: itself, or widened from bf16 into the workspace. */
const float *cpu_weight_f32(ops_ctx *c, const weight *w);

/* Whether w's GEMMs run in bf16: a bf16 weight in a context with bf16 GEMMs. */
static inline int cpu_uses_bf16(const ops_ctx *c, const weight *w) {
    return w->dtype == DT_BF16 && cpu_ws(c)->bf16;
}

/* The state of bf16 GEMMs, checked by running one. */
int cpu_bf16_new(cpu_bf16 **out, lp_err *err);
void cpu_bf16_free(cpu_bf16 *b);
/* C[M,N] = A[M,K] . B[K,N] (+= with accumulate): A f32 with leading dimension lda, B bf16 stored
 * [K,N] (or [N,K] with b_trans) with leading dimension ldb, C f32. */
void cpu_gemm_bf16(ops_ctx *c, int M, int N, int K, const float *A, int lda, const void *B,
                   int b_trans, int ldb, float *C, int ldc, int accumulate);

#define F(p)  ((float *)(p))
#define CF(p) ((const float *)(p))

void cpu_matmul_forward(ops_ctx *c, act *out, const act *inp, const weight *w, weight_layout layout,
                        const weight *bias, int N, int IC, int OC);
void cpu_matmul_backward(ops_ctx *c, act *dinp, const act *dout, const weight *w,
                         weight_layout layout, int N, int IC, int OC, int accumulate);
void cpu_matmul_backward_weight(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                                const act *dout, weight_layout layout, int N, int IC, int OC);
void cpu_encoder_forward(ops_ctx *c, act *out, const int *tokens, const weight *wte,
                         const weight *wpe, int B, int T, int pos0, int C);
void cpu_embedding_forward(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N,
                           int C);
void cpu_layernorm_forward(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                           const weight *w, const weight *b, int N, int C, float eps);
void cpu_layernorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                            const float *mean, const float *rstd, int N, int C);
void cpu_rmsnorm_forward(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w, int N,
                         int C, float eps);
void cpu_rmsnorm_recompute(ops_ctx *c, act *out, const act *inp, const weight *w, const float *rstd,
                           int N, int C);
void cpu_rmsnorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                          const float *rstd, int N, int C);
size_t cpu_attention_state_floats(int B, int T, int NH);
void cpu_attention_forward(ops_ctx *c, act *out, float *state, const act *q, const act *k,
                           const act *v, int ldq, int ldk, int B, int T, int NH, int NKV, int hd);
void cpu_attention_backward(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout, const act *out,
                            const act *q, const act *k, const act *v, const float *state, int ldq,
                            int ldk, int B, int T, int NH, int NKV, int hd);
void cpu_attention_cached(ops_ctx *c, act *out, const act *q, int ldq, const act *k, const act *v,
                          int ldk, int n, int past, int NH, int NKV, int hd);
void cpu_gelu_forward(ops_ctx *c, act *out, const act *inp, int n);
void cpu_gelu_backward(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n);
void cpu_swiglu_forward(ops_ctx *c, act *out, const act *gate, const act *up, int n);
void cpu_swiglu_backward(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                         const act *dout, int n);
void cpu_residual_forward(ops_ctx *c, act *out, const act *a, const act *b, int n);
void cpu_residual_backward(ops_ctx *c, act *dinp, const act *dout, int n);
void cpu_rope_forward(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH,
                      int hd);
void cpu_rope_backward(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                       int pos0, int NH, int hd);
void cpu_head_loss(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows,
                   int C, int V, float grad_scale, act *dx, float *dhead, float *losses);
void cpu_head_logits(ops_ctx *c, float *logits, const act *x, const weight *head, int rows, int C,
                     int V);
void cpu_lora_forward(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs,
                      int n_segs, int IC, int OC, int h_ld);
void cpu_lora_backward(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                       const lora_segment *segs, int n_segs, int IC, int OC, int h_ld);
void cpu_dropout_forward(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                         const uint64_t *seq_ids, float p, uint64_t seed);
void cpu_dropout_backward(ops_ctx *c, act *dinp, const act *dout, int rows, int cols, int seq_rows,
                          const uint64_t *seq_ids, float p, uint64_t seed);

#endif
