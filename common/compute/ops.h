/* The compute ops, each a forward/backward pair as in llm.c's train_gpt2.c. The model families
 * call only these (and device.h's memory functions): every op takes the context it runs in (a
 * device, its workspace and, on a GPU, its stream), and a backend (compute/cpu, compute/cuda) is
 * one implementation of this header.
 *
 * Buffers live on the context's device. Activations are `act`: the backend's activation type
 * (f32 on the CPU; bf16 on CUDA, with f32 accumulation inside every op), so family code never
 * does arithmetic on them and offsets them with act_at(). Statistics (norm means and rstd,
 * attention state, losses), LoRA factors and their gradients are always f32. Frozen weights are
 * `weight`s as the device holds them (f32 or bf16 matrices, f32 vectors).
 *
 * Frozen weights get no gradient: backward passes compute input gradients and the LoRA factors'
 * gradients only. A backward op overwrites its input gradient unless its comment says it adds
 * (+=); LoRA factor gradients are always added. */
#ifndef LORAPS_OPS_H
#define LORAPS_OPS_H

#include "device.h"
#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

/* An activation buffer: opaque, so that only ops (which know the element type) touch it. */
typedef struct act act;

/* p + n elements. */
#define act_at(c, p, n)                                                                            \
    _Generic((p),                                                                                  \
        act *: (act *)((char *)(p) + (size_t)(n) * ops_act_size(c)),                              \
        const act *: (const act *)((const char *)(p) + (size_t)(n) * ops_act_size(c)))

/* A frozen tensor on the context's device. Norm weights are f32; on the CPU matrices are f32 or
 * bf16 (mapped) and biases f32; on a GPU matrices, tables and biases are bf16. */
typedef struct weight {
    const void *data;
    dtype dtype; /* DT_F32 or DT_BF16 */
    size_t numel;
    int pad_rows; /* zero rows after the logical ones (a GPU's embedding tables: rows a multiple of
                     64, so the head's GEMMs run aligned) */
} weight;

/* How a frozen matrix is stored: HF Conv1D (GPT-2) keeps [in,out]; nn.Linear keeps [out,in]. */
typedef enum weight_layout { W_IN_OUT, W_OUT_IN } weight_layout;

/* The largest shapes a context will see, so it sizes its workspace once. */
typedef struct ops_limits {
    int max_rows;      /* rows of the largest activation (B*T, or a session's chunk) */
    int max_T;         /* longest sequence attention sees (training) */
    int max_heads;     /* query heads */
    int head_dim;      /* size of one head */
    int max_kv;        /* longest KV cache (inference; 0: none) */
    int vocab;         /* V: the head's logits are computed in chunks of rows */
    size_t max_matrix; /* elements of the largest frozen matrix stored in bf16 (CPU: widened) */
    int max_events;    /* markers the context's queue may hold at once (ops_record_event) */
    int bf16_gemm;     /* the CPU runs bf16 weights' GEMMs in bf16 (cpu_gemm.h), not widened */
} ops_limits;

typedef struct ops_ctx ops_ctx;

int ops_ctx_new(ops_ctx **out, device *d, const ops_limits *lim, lp_err *err);
void ops_ctx_free(ops_ctx *c);
device *ops_device(const ops_ctx *c);
size_t ops_act_size(const ops_ctx *c); /* bytes per activation element */
size_t ops_workspace_bytes(const ops_ctx *c);
/* Waits for the context's queued work; reports a device error that happened meanwhile. */
int ops_sync(ops_ctx *c, lp_err *err);
/* A marker after the work queued so far (slot < lim.max_events), and the wait for it: the host
 * can act on a result while the device goes on with what was queued after it. */
void ops_record_event(ops_ctx *c, int slot);
int ops_wait_event(ops_ctx *c, int slot, lp_err *err);

/* ---- moving data ------------------------------------------------------------------------ */

/* n values between host f32 and activations (bf16 on CUDA: rounded to nearest even). */
void ops_act_from_f32(ops_ctx *c, act *dst, const float *host, size_t n);
void ops_act_to_f32(ops_ctx *c, float *host, const act *src, size_t n);
/* dst = src (n f32 values on the device) as activations: LoRA factors for the GEMMs. On the CPU
 * activations are f32 and this is a copy. */
void ops_act_from_device_f32(ops_ctx *c, act *dst, const float *src, size_t n);
void ops_copy_act(ops_ctx *c, act *dst, const act *src, size_t n);
/* Host <-> device bytes (ordered with the context's ops). */
void ops_upload(ops_ctx *c, void *dst, const void *host, size_t bytes);
void ops_download(ops_ctx *c, void *host, const void *src, size_t bytes);
void ops_zero(ops_ctx *c, void *p, size_t bytes);
/* Sum of n f32 values on the device, in double (waits for the value). */
double ops_sum_f32(ops_ctx *c, const float *x, size_t n);
/* Sum of squares of n f32 values on the device, in double (waits for the value). */
double ops_sum_squares_f32(ops_ctx *c, const float *x, size_t n);

/* ---- matmul: out = inp . W + bias ---------------------------------------------------------- */

/* out[N,OC] = inp[N,IC] . W (+ bias[OC] if bias is not NULL). */
void matmul_forward(ops_ctx *c, act *out, const act *inp, const weight *w, weight_layout layout,
                    const weight *bias, int N, int IC, int OC);
/* dinp[N,IC] = dout[N,OC] . W^T, or += with accumulate. No dW, no dbias. */
void matmul_backward(ops_ctx *c, act *dinp, const act *dout, const weight *w, weight_layout layout,
                     int N, int IC, int OC, int accumulate);
/* The weight gradient a full fine-tuning baseline needs and LoRA never computes (f32, CPU only):
 * dW += inp^T . dout in the weight's layout, dbias += column sums of dout (dbias may be NULL). */
void matmul_backward_weight(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                            const act *dout, weight_layout layout, int N, int IC, int OC);

/* ---- embeddings (frozen: no backward) ------------------------------------------------------ */

/* out[b,t,:] = wte[tokens[b,t],:] + wpe[pos0 + t,:] (GPT-2). tokens on the device. */
void encoder_forward(ops_ctx *c, act *out, const int *tokens, const weight *wte, const weight *wpe,
                     int B, int T, int pos0, int C);
/* out[i,:] = emb[tokens[i],:] (Llama). */
void embedding_forward(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N, int C);

/* ---- norms --------------------------------------------------------------------------------- */

/* LayerNorm over C: out = (x - mean) * rstd * w + b; mean and rstd [N] are saved. */
void layernorm_forward(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                       const weight *w, const weight *b, int N, int C, float eps);
/* dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w. */
void layernorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                        const float *mean, const float *rstd, int N, int C);
/* RMSNorm: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); rstd [N] is saved. */
void rmsnorm_forward(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w, int N,
                     int C, float eps);
/* The same output from the saved rstd, bit for bit (backward recomputes what LoRA needs). */
void rmsnorm_recompute(ops_ctx *c, act *out, const act *inp, const weight *w, const float *rstd,
                       int N, int C);
/* dinp += rstd * (g - xhat * mean(g * xhat)), g = dout * w, xhat = x * rstd. */
void rmsnorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                      const float *rstd, int N, int C);

/* ---- attention ----------------------------------------------------------------------------- */

/* Causal attention over B sequences of T tokens with NH query heads of size hd and NKV key/value
 * heads (NKV divides NH; query head h reads KV head h / (NH / NKV), HF's repeat_kv; NKV = NH is
 * plain multi-head attention). q is [B*T rows, ldq], k and v [B*T rows, ldk]: separate buffers or
 * views into one fused qkv buffer (GPT-2). out [B*T, NH*hd]. Scores scale by 1/sqrt(hd).
 * state keeps what backward needs: attention_state_floats() of them (the CPU keeps the softmax
 * probabilities [B,NH,T,T]; CUDA the log-sum-exp of each row [B,NH,T]). */
size_t attention_state_floats(const ops_ctx *c, int B, int T, int NH);
void attention_forward(ops_ctx *c, act *out, float *state, const act *q, const act *k, const act *v,
                       int ldq, int ldk, int B, int T, int NH, int NKV, int hd);
/* dq, dk, dv (laid out as q, k, v) = the gradients through attention of dout; out is forward's. */
void attention_backward(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout, const act *out,
                        const act *q, const act *k, const act *v, const float *state, int ldq,
                        int ldk, int B, int T, int NH, int NKV, int hd);
/* Inference with a KV cache: n new queries q [n, ldq] at positions past .. past+n-1 of one
 * sequence, against the cache k, v [past+n, ldk] (the new tokens' keys and values already
 * appended). out [n, NH*hd]. */
void attention_cached(ops_ctx *c, act *out, const act *q, int ldq, const act *k, const act *v,
                      int ldk, int n, int past, int NH, int NKV, int hd);

/* ---- elementwise ----------------------------------------------------------------------------- */

/* GELU, tanh approximation (HF "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void gelu_forward(ops_ctx *c, act *out, const act *inp, int n);
void gelu_backward(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n);
/* SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g). */
void swiglu_forward(ops_ctx *c, act *out, const act *gate, const act *up, int n);
void swiglu_backward(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                     const act *dout, int n);
/* out = a + b (out may be a). Its backward passes dout to both terms unchanged, so the families
 * reuse the gradient buffer instead of calling an op. */
void residual_forward(ops_ctx *c, act *out, const act *a, const act *b, int n);
/* dinp += dout. */
void residual_backward(ops_ctx *c, act *dinp, const act *dout, int n);

/* Rotary embeddings on x [N rows of NH heads of hd], in place: row i has position pos0 + i % T
 * (B sequences of T tokens; one sequence from pos0 with T = N). cos_sin [P, hd] (f32) holds per
 * position the cosines of the hd/2 angles, then their sines. For j < hd/2 (HF's rotate_half):
 * x'[j] = x[j] cos - x[j + hd/2] sin, x'[j + hd/2] = x[j + hd/2] cos + x[j] sin. */
void rope_forward(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH, int hd);
/* dx = R^T dout (the inverse rotation); dx and dout must not overlap. */
void rope_backward(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                   int pos0, int NH, int hd);
/* Fills cos_sin [P, hd] on the host, for positions 0..P-1 from inv_freq [hd/2]: angles
 * p * inv_freq in float, as transformers computes them, then cos and sin. */
void rope_table(float *cos_sin, const double *inv_freq, int P, int hd);

/* ---- the output head and its loss ------------------------------------------------------------ */

/* logits = x . head^T (head [V,C]), softmax cross-entropy against targets (< 0: ignored), in
 * chunks of rows so the [rows, V] logits never exist whole. losses[i] = -log p[target] (0 where
 * ignored). With grad_scale != 0 also the backward of grad_scale * sum(losses): dx [rows,C] =
 * ... (overwritten), and dhead (f32, may be NULL; CPU only) += .... */
void head_loss(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows, int C,
               int V, float grad_scale, act *dx, float *dhead, float *losses);
/* The full logits [rows, V] (f32, on the device): tests and inference. */
void head_logits(ops_ctx *c, float *logits, const act *x, const weight *head, int rows, int C,
                 int V);

/* ---- LoRA ------------------------------------------------------------------------------------ */

/* A LoRA segment: rows [row0, row0 + rows) of a batch use this adapter's A [r,IC], B [OC,r] and
 * scale. A batch of one adapter is one segment; mixed-task batches are several. A and B are the
 * f32 factors; A_act and B_act the same as activations (what the GEMMs read; on the CPU they are
 * A and B themselves); dA and dB the f32 gradients (NULL in forward-only use). */
typedef struct lora_segment {
    int row0, rows;
    int r;
    float scale;
    const float *A, *B;
    const act *A_act, *B_act;
    float *dA, *dB;
} lora_segment;

/* out[N,OC] += scale * (x . A^T) . B^T per segment; h [N,h_ld] keeps x . A^T for backward. */
void lora_forward(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs, int n_segs,
                  int IC, int OC, int h_ld);
/* dA += dh^T . x, dB += scale * dout^T . h, and, if dx is not NULL, dx += dh . A, where
 * dh = scale * dout . B is written to dh [N,h_ld]. */
void lora_backward(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                   const lora_segment *segs, int n_segs, int IC, int OC, int h_ld);

/* Inverted dropout on rows of `cols` values, grouped into sequences of seq_rows rows: out = inp *
 * mask / (1 - p), where the mask of element j of row r is a pure function of (seed, the
 * sequence's global id seq_ids[r / seq_rows], its index (r % seq_rows) * cols + j in the
 * sequence). seq_ids is on the device. Backward regenerates the same mask (nothing stored). */
void dropout_forward(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                     const uint64_t *seq_ids, float p, uint64_t seed);
/* dinp += dout * mask / (1 - p). */
void dropout_backward(ops_ctx *c, act *dinp, const act *dout, int rows, int cols, int seq_rows,
                      const uint64_t *seq_ids, float p, uint64_t seed);
/* The keep decision both backends make (the CUDA kernels call this same function): 1 if element
 * `index` of sequence `seq` is kept. */
#ifdef __CUDACC__
#define OPS_HOST_DEVICE __host__ __device__
#else
#define OPS_HOST_DEVICE
#endif
static inline OPS_HOST_DEVICE int dropout_keeps(uint64_t seed, uint64_t seq, uint64_t index,
                                                uint32_t threshold) {
    uint64_t x = seed ^ (seq * 0xd1b54a32d192ed03ull);
    x += 0x9e3779b97f4a7c15ull; /* splitmix64 of the (seed, sequence) stream ... */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    x ^= index * 0xd1b54a32d192ed03ull; /* ... then of the element within it */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (uint32_t)(x >> 32) >= threshold;
}
static inline OPS_HOST_DEVICE uint32_t dropout_threshold(float p) {
    return (uint32_t)(p * 4294967296.0);
}

/* Threads for the CPU backend's BLAS and elementwise kernels; 0 means all cores. */
void ops_set_threads(int n);

#endif
