/* The Llama family's ops, each a forward/backward pair like ops.h's: RMSNorm, rotary position
 * embeddings (HF's rotate_half convention), SwiGLU, and causal attention with grouped-query
 * heads, plus the KV-cache attention of inference. Frozen weights get no gradient; backward
 * functions ADD into their gradient outputs. Matmuls go through cblas_sgemm here only. */
#ifndef LORAPS_OPS_LLAMA_H
#define LORAPS_OPS_LLAMA_H

#include <stddef.h>
#include <stdint.h>

/* out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) over C; rstd [N] is saved. */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps);
/* out = x * rstd * w with the rstd saved by rmsnorm_forward: the same output, bit for bit,
 * without keeping it (backward recomputes what a LoRA branch needs). */
void rmsnorm_recompute(float *out, const float *inp, const float *weight, const float *rstd, int N,
                       int C);
void rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C);

/* Rotary embeddings on x [N, NH, hd] (rows of NH heads of hd), in place: row i has position
 * pos0 + i % T (B sequences of T tokens; one sequence from pos0 with T = N). cos_sin [P, hd] holds,
 * per position, cos of the hd/2 angles then their sin. For j < hd/2: x'[j] = x[j] cos - x[j + hd/2]
 * sin,   x'[j + hd/2] = x[j + hd/2] cos + x[j] sin. */
void rope_forward(float *x, const float *cos_sin, int N, int T, int pos0, int NH, int hd);
/* dx += R^T dout (the inverse rotation); dx and dout must not overlap. */
void rope_backward(float *dx, const float *dout, const float *cos_sin, int N, int T, int pos0,
                   int NH, int hd);
/* Fills cos_sin [P, hd] for positions 0..P-1 from inv_freq [hd/2]: angles p * inv_freq in
 * float, as transformers' rotary embedding computes them, then cos and sin. */
void rope_table(float *cos_sin, const double *inv_freq, int P, int hd);

/* out = silu(gate) * up, elementwise over n. */
void swiglu_forward(float *out, const float *gate, const float *up, int n);
void swiglu_backward(float *dgate, float *dup, const float *gate, const float *up,
                     const float *dout, int n);

/* dst[i] = src[i] for n bf16 values (frozen weights kept in bf16 are widened per use). */
void bf16_widen(float *dst, const uint16_t *src, size_t n);

/* out[i] = emb[tokens[i]] for N rows of C (embeddings are frozen: no backward). */
void embedding_forward(float *out, const int *tokens, const float *emb, int N, int C);

#endif
