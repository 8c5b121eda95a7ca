#include "ops.h"

#include "rng.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <string.h>

void ops_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

/* ---------------------------------------------------------------------------------------------
 * matmul: out = inp . W + bias */

void matmul_forward(float *out, const float *inp, const float *weight, weight_layout layout,
                    const float *bias, int N, int IC, int OC) {
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    if (layout == W_IN_OUT)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, inp, IC, weight, OC,
                    beta, out, OC);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC,
                    beta, out, OC);
}

void matmul_backward(float *dinp, const float *dout, const float *weight, weight_layout layout,
                     int N, int IC, int OC) {
    if (layout == W_IN_OUT) /* dinp += dout [N,OC] . W^T [OC,IC] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, OC, 1.0f, dout, OC, weight, OC,
                    1.0f, dinp, IC);
    else /* W is [OC,IC] already */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, weight,
                    IC, 1.0f, dinp, IC);
}

void matmul_backward_weight(float *dweight, float *dbias, const float *inp, const float *dout,
                            weight_layout layout, int N, int IC, int OC) {
    if (layout == W_IN_OUT) /* dW [IC,OC] += inp^T . dout */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, OC, N, 1.0f, inp, IC, dout, OC,
                    1.0f, dweight, OC);
    else /* dW [OC,IC] += dout^T . inp */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC,
                    1.0f, dweight, IC);
    if (!dbias) return;
#pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        float sum = 0.0f;
        for (int i = 0; i < N; i++) sum += dout[(size_t)i * OC + o];
        dbias[o] += sum;
    }
}

/* ---------------------------------------------------------------------------------------------
 * embeddings */

void encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B,
                     int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)tokens[b * T + t] * C, *pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * layernorm: out = (x - mean) * rstd * w + b */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps) {
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float m = 0.0f, v = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(v / C + eps);
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

void layernorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                        const float *mean, const float *rstd, int N, int C) {
    /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = dout * w. */
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float g = dy[c] * weight[c];
            g_mean += g;
            gx_mean += g * (x[c] - m) * s;
        }
        g_mean /= C;
        gx_mean /= C;
        float *dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            float g = dy[c] * weight[c], xhat = (x[c] - m) * s;
            dx[c] += s * (g - g_mean - xhat * gx_mean);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * causal attention with grouped-query heads (multi-head attention is the case NKV = NH): every
 * (sequence, head) pair is two GEMMs on strided views of q, k and v, which are never copied out
 * or repeated per query head. The pairs run in parallel, one per thread; OpenBLAS' OpenMP build
 * runs a GEMM called inside a parallel region on that one thread. */

/* Softmax of each row t of a [rows, cols] score block over its first t + shift + 1 columns (the
 * causal window); the rest become 0. */
static void causal_softmax(float *att, int rows, int cols, int shift) {
    for (int t = 0; t < rows; t++) {
        float *row = att + (size_t)t * cols;
        int n = t + shift + 1;
        float max = row[0];
        for (int u = 1; u < n; u++) max = row[u] > max ? row[u] : max;
        float sum = 0.0f;
        for (int u = 0; u < n; u++) {
            row[u] = expf(row[u] - max);
            sum += row[u];
        }
        float inv = 1.0f / sum;
        for (int u = 0; u < n; u++) row[u] *= inv;
        for (int u = n; u < cols; u++) row[u] = 0.0f;
    }
}

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int ldq, int ldk, int B, int T, int NH, int NKV, int hd) {
    int G = NH / NKV, ldo = NH * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)b * T * ldq + h * hd;
            const float *kh = k + (size_t)b * T * ldk + (h / G) * hd;
            const float *vh = v + (size_t)b * T * ldk + (h / G) * hd;
            float *a = att + ((size_t)b * NH + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, qh, ldq, kh, ldk,
                        0.0f, a, T);
            causal_softmax(a, T, T, 0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, vh, ldk,
                        0.0f, out + (size_t)b * T * ldo + h * hd, ldo);
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, int scratch_slots,
                        const float *dout, const float *q, const float *k, const float *v, int ldq,
                        int ldk, const float *att, int B, int T, int NH, int NKV, int hd) {
    int G = NH / NKV, ldo = NH * hd;
    float scale = 1.0f / sqrtf((float)hd);
    /* One task per (sequence, KV head): its G query heads add into the same dk, dv rows, so
     * they run one after another in that task and no two threads write the same gradient. */
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(scratch_slots)
    for (int b = 0; b < B; b++) {
        for (int kv = 0; kv < NKV; kv++) {
            float *datt = scratch + (size_t)omp_get_thread_num() * T * T;
            const float *kh = k + (size_t)b * T * ldk + kv * hd;
            const float *vh = v + (size_t)b * T * ldk + kv * hd;
            float *dkh = dk + (size_t)b * T * ldk + kv * hd;
            float *dvh = dv + (size_t)b * T * ldk + kv * hd;
            for (int h = kv * G; h < (kv + 1) * G; h++) {
                const float *qh = q + (size_t)b * T * ldq + h * hd;
                float *dqh = dq + (size_t)b * T * ldq + h * hd;
                const float *dy = dout + (size_t)b * T * ldo + h * hd;
                const float *a = att + ((size_t)b * NH + h) * T * T;
                /* datt = dy . v^T; dv += att^T . dy */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dy, ldo, vh,
                            ldk, 0.0f, datt, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, dy, ldo,
                            1.0f, dvh, ldk);
                /* softmax backward: dscore = att * (datt - sum(att * datt)), masked entries 0 */
                for (int t = 0; t < T; t++) {
                    const float *arow = a + (size_t)t * T;
                    float *drow = datt + (size_t)t * T;
                    float dot = 0.0f;
                    for (int u = 0; u <= t; u++) dot += arow[u] * drow[u];
                    for (int u = 0; u <= t; u++) drow[u] = arow[u] * (drow[u] - dot);
                    for (int u = t + 1; u < T; u++) drow[u] = 0.0f;
                }
                /* dq += scale * dscore . k; dk += scale * dscore^T . q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, datt, T, kh,
                            ldk, 1.0f, dqh, ldq);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, datt, T, qh,
                            ldq, 1.0f, dkh, ldk);
            }
        }
    }
}

void attention_cached(float *out, float *scratch, int scratch_slots, const float *q, int ldq,
                      const float *k, const float *v, int ldk, int n, int past, int NH, int NKV,
                      int hd) {
    int G = NH / NKV, ldo = NH * hd, len = past + n;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic) num_threads(scratch_slots)
    for (int h = 0; h < NH; h++) {
        float *a = scratch + (size_t)omp_get_thread_num() * n * len;
        const float *kh = k + (h / G) * hd, *vh = v + (h / G) * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, len, hd, scale, q + h * hd, ldq, kh,
                    ldk, 0.0f, a, len);
        causal_softmax(a, n, len, past);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, len, 1.0f, a, len, vh, ldk,
                    0.0f, out + h * hd, ldo);
    }
}

/* ---------------------------------------------------------------------------------------------
 * GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* tanh(u) = 1 - 2 / (exp(2u) + 1): written with expf, the loops vectorise (glibc's libmvec);
 * tanhf does not. Exact at both tails: exp overflows to inf (tanh 1) or underflows to 0 (-1). */
static inline float tanh_via_exp(float u) {
    return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f);
}

void gelu_forward(float *out, const float *inp, int n) {
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_via_exp(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, int n) {
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanh_via_exp(u);
        float sech2 = 1.0f - th * th;
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
    }
}

/* ---------------------------------------------------------------------------------------------
 * residual */

void residual_forward(float *out, const float *a, const float *b, int n) {
#pragma omp parallel for
    for (int i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---------------------------------------------------------------------------------------------
 * softmax cross-entropy with an ignore index */

double crossentropy_forward(float *logits_to_probs, float *losses, const int *targets, int N,
                            int V) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total)
    for (int i = 0; i < N; i++) {
        float *row = logits_to_probs + (size_t)i * V;
        float max = row[0];
        for (int v = 1; v < V; v++) max = row[v] > max ? row[v] : max;
        float target_logit = targets[i] >= 0 ? row[targets[i]] : 0.0f;
        /* float lanes in a vectorised reduction: each lane sums V/width terms, all positive */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int v = 0; v < V; v++) {
            row[v] = expf(row[v] - max);
            sum += row[v];
        }
        float inv = (float)(1.0 / sum);
        for (int v = 0; v < V; v++) row[v] *= inv;
        /* -log softmax = log(sum exp(l - max)) - (l_target - max), kept in double */
        double loss = targets[i] >= 0 ? log((double)sum) - (double)(target_logit - max) : 0.0;
        losses[i] = (float)loss;
        total += loss;
    }
    return total;
}

void crossentropy_backward(float *probs_to_dlogits, const int *targets, float dloss, int N, int V) {
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float *row = probs_to_dlogits + (size_t)i * V;
        if (targets[i] < 0) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int v = 0; v < V; v++) row[v] *= dloss;
        row[targets[i]] -= dloss;
    }
}

double head_crossentropy(const float *x, const float *head, const int *targets, int rows, int C,
                         int V, float grad_scale, float *dx, float *dhead, float *logits,
                         float *losses, int chunk, int *n_tokens) {
    double total = 0;
    for (int start = 0; start < rows; start += chunk) {
        int n = rows - start < chunk ? rows - start : chunk;
        const float *xs = x + (size_t)start * C;
        matmul_forward(logits, xs, head, W_OUT_IN, NULL, n, C, V);
        total += crossentropy_forward(logits, losses, targets + start, n, V);
        for (int i = 0; i < n; i++) *n_tokens += targets[start + i] >= 0;
        if (grad_scale == 0) continue;
        crossentropy_backward(logits, targets + start, grad_scale, n, V);
        matmul_backward(dx + (size_t)start * C, logits, head, W_OUT_IN, n, C, V);
        if (dhead) matmul_backward_weight(dhead, NULL, xs, logits, W_OUT_IN, n, C, V);
    }
    return total;
}

/* ---------------------------------------------------------------------------------------------
 * LoRA: two skinny GEMMs per segment; B.A is never formed. */

void lora_forward(float *out, float *h, const float *x, const lora_segment *segs, int n_segs,
                  int IC, int OC, int h_ld) {
    for (int s = 0; s < n_segs; s++) {
        const lora_segment *g = &segs[s];
        const float *xs = x + (size_t)g->row0 * IC;
        float *hs = h + (size_t)g->row0 * h_ld, *os = out + (size_t)g->row0 * OC;
        /* h = x . A^T  [rows,r] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, g->r, IC, 1.0f, xs, IC, g->A,
                    IC, 0.0f, hs, h_ld);
        /* out += scale * h . B^T  [rows,OC] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, OC, g->r, g->scale, hs, h_ld,
                    g->B, g->r, 1.0f, os, OC);
    }
}

void lora_backward(float *dx, float *dh, const float *dout, const float *x, const float *h,
                   const lora_segment *segs, int n_segs, int IC, int OC, int h_ld) {
    for (int s = 0; s < n_segs; s++) {
        const lora_segment *g = &segs[s];
        const float *xs = x + (size_t)g->row0 * IC, *hs = h + (size_t)g->row0 * h_ld;
        const float *dos = dout + (size_t)g->row0 * OC;
        float *dhs = dh + (size_t)g->row0 * h_ld;
        /* dh = scale * dout . B  [rows,r] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->rows, g->r, OC, g->scale, dos, OC,
                    g->B, g->r, 0.0f, dhs, h_ld);
        /* dB += scale * dout^T . h  [OC,r] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, g->r, g->rows, g->scale, dos, OC,
                    hs, h_ld, 1.0f, g->dB, g->r);
        /* dA += dh^T . x  [r,IC] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->r, IC, g->rows, 1.0f, dhs, h_ld, xs,
                    IC, 1.0f, g->dA, IC);
        /* dx += dh . A  [rows,IC] */
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->rows, IC, g->r, 1.0f, dhs,
                        h_ld, g->A, IC, 1.0f, dx + (size_t)g->row0 * IC, IC);
    }
}

/* ---------------------------------------------------------------------------------------------
 * dropout: the keep/drop decision of element i is a hash of (seed, i), so forward and backward
 * agree without storing a mask, and threads need no shared generator state. */

static int dropout_keeps(uint64_t seed, int i, uint32_t threshold) {
    return (uint32_t)(rng_mix(seed, (uint64_t)i) >> 32) >= threshold;
}

void dropout_forward(float *out, const float *inp, int n, float p, uint64_t seed) {
    uint32_t threshold = (uint32_t)(p * 4294967296.0);
    float keep_scale = 1.0f / (1.0f - p);
#pragma omp parallel for
    for (int i = 0; i < n; i++)
        out[i] = dropout_keeps(seed, i, threshold) ? inp[i] * keep_scale : 0;
}

void dropout_backward(float *dinp, const float *dout, int n, float p, uint64_t seed) {
    uint32_t threshold = (uint32_t)(p * 4294967296.0);
    float keep_scale = 1.0f / (1.0f - p);
#pragma omp parallel for
    for (int i = 0; i < n; i++)
        if (dropout_keeps(seed, i, threshold)) dinp[i] += dout[i] * keep_scale;
}
