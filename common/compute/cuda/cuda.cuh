/* The CUDA backend: frozen weights bf16 on the GPU, activations bf16 with fp32 accumulation,
 * norm/softmax/loss statistics fp32, LoRA factors and their gradients fp32. Every GEMM through
 * cuBLASLt (matmul.cu); one file per op, forward and backward together, as in llm.c's llmc/.
 * Ops are queued on the context's stream and never wait; the first error a context meets is kept
 * and reported by ops_sync. Private to compute/cuda. */
#ifndef LORAPS_CUDA_CUH
#define LORAPS_CUDA_CUH

extern "C" {
#include "backend.h"
}

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

typedef __nv_bfloat16 bf16;

#define AS(p)  ((bf16 *)(p))
#define CAS(p) ((const bf16 *)(p))

/* One GPU, and the size of each live allocation (for the high-water mark). */
struct cuda_alloc_record {
    void *p;
    size_t bytes;
};
struct cuda_device {
    int index;
    cudaDeviceProp prop;
    cuda_alloc_record *allocs;
    int n_allocs, cap_allocs;
};

/* A cuBLASLt algorithm chosen once per GEMM shape. */
struct gemm_key {
    int m, n, k, lda, ldb, ldc, ta, tb, ctype, bias, align_a, align_b, align_c;
};
struct gemm_choice {
    gemm_key key;
    cublasLtMatmulAlgo_t algo;
    int found;
};
#define GEMM_CACHE 256

/* A context: its stream, the cuBLASLt handle and workspace, and the ops' scratch. */
struct cuda_ctx {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    float *logits; /* one chunk of the head's logits: head_rows x head_ld */
    bf16 *dlogits; /* and their gradient, what the dx GEMM reads */
    int head_rows, head_ld;
    float *dq_accum; /* attention backward: f32 dq [rows, heads * head_dim] */
    float *delta;    /* attention backward: rowsum(dO * O) per (row, head) */
    float *staging;  /* f32 <-> activation conversions through the device */
    size_t staging_floats;
    double *reduce; /* sums */
    cudaEvent_t *events; /* ops_record_event's markers */
    int n_events;
    gemm_choice cache[GEMM_CACHE];
    char error[512];
};

static inline cuda_ctx *cx(const ops_ctx *c) {
    return (cuda_ctx *)c->impl;
}

static inline cudaStream_t stream_of(const ops_ctx *c) {
    return cx(c)->stream;
}

/* Keeps the first error the context meets (ops return nothing; ops_sync reports it). */
void cuda_note(const ops_ctx *c, cudaError_t e, const char *what);
void cuda_note_blas(const ops_ctx *c, cublasStatus_t s, const char *what);
/* After a kernel launch: a bad configuration shows up here. */
void cuda_check_launch(const ops_ctx *c, const char *what);

/* Blocks of `threads` covering n items. */
static inline unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : (b > 65535u * 32 ? 65535u * 32 : b));
}

/* Row-major C[M,N] (ldc) = alpha * op(A)[M,K] . op(B)[K,N] + beta * C, A and B bf16 (op(A) = A^T
 * when ta), C bf16 or f32 (ctype), f32 accumulation; bias (bf16, length N, may be NULL) added
 * to every row. */
void cuda_gemm(const ops_ctx *c, int M, int N, int K, const void *A, int lda, int ta, const void *B,
               int ldb, int tb, void *C, int ldc, cudaDataType_t ctype, float alpha, float beta,
               const void *bias);

/* The ops (one .cu file each, named after them). */
void cuda_matmul_forward(ops_ctx *c, act *out, const act *inp, const weight *w,
                         weight_layout layout, const weight *bias, int N, int IC, int OC);
void cuda_matmul_backward(ops_ctx *c, act *dinp, const act *dout, const weight *w,
                          weight_layout layout, int N, int IC, int OC, int accumulate);
void cuda_matmul_backward_weight(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                                 const act *dout, weight_layout layout, int N, int IC, int OC);
void cuda_encoder_forward(ops_ctx *c, act *out, const int *tokens, const weight *wte,
                          const weight *wpe, int B, int T, int pos0, int C);
void cuda_embedding_forward(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N,
                            int C);
void cuda_layernorm_forward(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                            const weight *w, const weight *b, int N, int C, float eps);
void cuda_layernorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp,
                             const weight *w, const float *mean, const float *rstd, int N, int C);
void cuda_rmsnorm_forward(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w, int N,
                          int C, float eps);
void cuda_rmsnorm_recompute(ops_ctx *c, act *out, const act *inp, const weight *w,
                            const float *rstd, int N, int C);
void cuda_rmsnorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                           const float *rstd, int N, int C);
size_t cuda_attention_state_floats(int B, int T, int NH);
void cuda_attention_forward(ops_ctx *c, act *out, float *state, const act *q, const act *k,
                            const act *v, int ldq, int ldk, int B, int T, int NH, int NKV, int hd);
void cuda_attention_backward(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout, const act *out,
                             const act *q, const act *k, const act *v, const float *state, int ldq,
                             int ldk, int B, int T, int NH, int NKV, int hd);
void cuda_attention_cached(ops_ctx *c, act *out, const act *q, int ldq, const act *k, const act *v,
                           int ldk, int n, int past, int NH, int NKV, int hd);
void cuda_gelu_forward(ops_ctx *c, act *out, const act *inp, int n);
void cuda_gelu_backward(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n);
void cuda_swiglu_forward(ops_ctx *c, act *out, const act *gate, const act *up, int n);
void cuda_swiglu_backward(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                          const act *dout, int n);
void cuda_residual_forward(ops_ctx *c, act *out, const act *a, const act *b, int n);
void cuda_residual_backward(ops_ctx *c, act *dinp, const act *dout, int n);
void cuda_rope_forward(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH,
                       int hd);
void cuda_rope_backward(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                        int pos0, int NH, int hd);
void cuda_head_loss(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows,
                    int C, int V, float grad_scale, act *dx, float *dhead, float *losses);
void cuda_head_logits(ops_ctx *c, float *logits, const act *x, const weight *head, int rows, int C,
                      int V);
void cuda_lora_forward(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs,
                       int n_segs, int IC, int OC, int h_ld);
void cuda_lora_backward(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                        const lora_segment *segs, int n_segs, int IC, int OC, int h_ld);
void cuda_dropout_forward(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                          const uint64_t *seq_ids, float p, uint64_t seed);
void cuda_dropout_backward(ops_ctx *c, act *dinp, const act *dout, int rows, int cols, int seq_rows,
                           const uint64_t *seq_ids, float p, uint64_t seed);

/* Moving data (convert.cu). */
void cuda_act_from_f32(ops_ctx *c, act *dst, const float *host, size_t n);
void cuda_act_to_f32(ops_ctx *c, float *host, const act *src, size_t n);
void cuda_act_from_device_f32(ops_ctx *c, act *dst, const float *src, size_t n);
void cuda_copy_act(ops_ctx *c, act *dst, const act *src, size_t n);
double cuda_sum_f32(ops_ctx *c, const float *x, size_t n);
double cuda_sum_squares_f32(ops_ctx *c, const float *x, size_t n);
/* f32 -> bf16 and back on the device, for kernels and tests. */
void cuda_f32_to_bf16(const ops_ctx *c, bf16 *dst, const float *src, size_t n);
void cuda_bf16_to_f32(const ops_ctx *c, float *dst, const bf16 *src, size_t n);

#endif
