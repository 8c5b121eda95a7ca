/* The compute ops, each a forward/backward pair as in llm.c's train_gpt2.c. Every matmul goes
 * through cblas_sgemm here and nowhere else in the model code, so another backend can replace
 * this file. Frozen weights get no gradient: backward passes compute input gradients (and the
 * LoRA factors' gradients) only. Backward functions ADD into their gradient outputs. */
#ifndef LORAPS_OPS_H
#define LORAPS_OPS_H

#include <stdint.h>

/* Threads for BLAS and the elementwise kernels; 0 means all cores. */
void ops_set_threads(int n);

/* How a frozen weight is stored: HF Conv1D (GPT-2) keeps [in,out]; nn.Linear keeps [out,in]. */
typedef enum weight_layout { W_IN_OUT, W_OUT_IN } weight_layout;

/* out[N,OC] = inp[N,IC] . W + bias (bias may be NULL). */
void matmul_forward(float *out, const float *inp, const float *weight, weight_layout layout,
                    const float *bias, int N, int IC, int OC);
/* dinp[N,IC] += dout[N,OC] . W^T. The weight is frozen: no dW, no dbias. */
void matmul_backward(float *dinp, const float *dout, const float *weight, weight_layout layout,
                     int N, int IC, int OC);

/* The weight gradient a full fine-tuning baseline needs and LoRA never computes:
 * dW += inp^T . dout (in the weight's layout), dbias += column sums of dout (dbias may be NULL). */
void matmul_backward_weight(float *dweight, float *dbias, const float *inp, const float *dout,
                            weight_layout layout, int N, int IC, int OC);

/* out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]. Embeddings are frozen, so no backward. */
void encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B,
                     int T, int C);

/* LayerNorm over C with frozen weight and bias; mean and rstd [N] are saved for backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps);
void layernorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                        const float *mean, const float *rstd, int N, int C);

/* Causal attention over B sequences of T tokens with NH query heads of size hd and NKV key/value
 * heads (NKV divides NH; query head h reads KV head h / (NH / NKV), HF's repeat_kv; NKV = NH is
 * plain multi-head attention). q is [B*T rows, ldq], k and v [B*T rows, ldk]: separate buffers
 * (ldq = NH*hd, ldk = NKV*hd) or views into one fused qkv buffer (GPT-2: all three 3C). out
 * [B*T, NH*hd]; att [B, NH, T, T] keeps the softmax probabilities. Scores scale by 1/sqrt(hd). */
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int ldq, int ldk, int B, int T, int NH, int NKV, int hd);
/* dq, dk, dv (laid out as q, k, v) += ...; scratch holds scratch_slots * T*T floats, one slot
 * per thread, and at most scratch_slots threads run. Work is split over (sequence, KV head). */
void attention_backward(float *dq, float *dk, float *dv, float *scratch, int scratch_slots,
                        const float *dout, const float *q, const float *k, const float *v, int ldq,
                        int ldk, const float *att, int B, int T, int NH, int NKV, int hd);
/* Inference with a KV cache: n new queries q [n, ldq] at positions past .. past+n-1 of one
 * sequence, against the cache k, v [past+n, ldk] (the new tokens' keys and values already
 * appended). out [n, NH*hd]. scratch holds scratch_slots * n * (past + n) floats. */
void attention_cached(float *out, float *scratch, int scratch_slots, const float *q, int ldq,
                      const float *k, const float *v, int ldk, int n, int past, int NH, int NKV,
                      int hd);

/* GELU, tanh approximation (HF "gelu_new"). */
void gelu_forward(float *out, const float *inp, int n);
void gelu_backward(float *dinp, const float *inp, const float *dout, int n);

/* out = a + b. Its backward passes dout to both inputs unchanged, so the model reuses the
 * gradient buffer in place instead of calling an op. */
void residual_forward(float *out, const float *a, const float *b, int n);

/* Softmax cross-entropy over V classes for N rows, in place: logits become probabilities.
 * losses[i] = -log p[target]; rows with target < 0 are ignored (loss 0). Returns the sum. */
double crossentropy_forward(float *logits_to_probs, float *losses, const int *targets, int N,
                            int V);
/* In place: probabilities become dlogits = dloss * (p - onehot); ignored rows become 0. */
void crossentropy_backward(float *probs_to_dlogits, const int *targets, float dloss, int N, int V);

/* The output head and its loss, chunk by chunk so the [rows, V] logits never exist whole:
 * logits = x . head^T (head [V,C]), softmax cross-entropy against targets (< 0: ignored).
 * Returns the summed loss and counts the counted tokens into *n_tokens. With grad_scale != 0
 * also the backward of grad_scale * loss: dx [rows,C] += ..., and dhead (may be NULL) += ....
 * logits holds chunk * V floats, losses chunk floats. */
double head_crossentropy(const float *x, const float *head, const int *targets, int rows, int C,
                         int V, float grad_scale, float *dx, float *dhead, float *logits,
                         float *losses, int chunk, int *n_tokens);

/* A LoRA segment: rows [row0, row0 + rows) of a batch use this adapter's A [r,IC], B [OC,r]
 * and scale. A batch of one adapter is one segment; mixed-task batches are several. */
typedef struct lora_segment {
    int row0, rows;
    int r;
    float scale;
    const float *A, *B;
    float *dA, *dB; /* may be NULL in forward-only use */
} lora_segment;

/* out[N,OC] += scale * (x . A^T) . B^T per segment; h [N,h_ld] keeps x . A^T for backward. */
void lora_forward(float *out, float *h, const float *x, const lora_segment *segs, int n_segs,
                  int IC, int OC, int h_ld);
/* dA += dh^T . x, dB += scale * dout^T . h, and, if dx is not NULL, dx += dh . A, where
 * dh = scale * dout . B is written to dh [N,h_ld]. */
void lora_backward(float *dx, float *dh, const float *dout, const float *x, const float *h,
                   const lora_segment *segs, int n_segs, int IC, int OC, int h_ld);

/* Inverted dropout with a mask that is a pure function of seed: out = inp * mask / (1 - p).
 * Backward regenerates the same mask from the same seed (nothing stored). */
void dropout_forward(float *out, const float *inp, int n, float p, uint64_t seed);
void dropout_backward(float *dinp, const float *dout, int n, float p, uint64_t seed);

#endif
