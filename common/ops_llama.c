#include "ops_llama.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * RMSNorm: out = x * rstd * w */

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps) {
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float s = 1.0f / sqrtf(ss / C + eps);
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
        rstd[i] = s;
    }
}

void rmsnorm_recompute(float *out, const float *inp, const float *weight, const float *rstd, int N,
                       int C) {
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C, s = rstd[i];
        for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
    }
}

void rmsnorm_backward(float *dinp, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C) {
    /* dx = rstd * (g - xhat * mean(g * xhat)), with g = dout * w and xhat = x * rstd. */
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float s = rstd[i], gx_mean = 0.0f;
        for (int c = 0; c < C; c++) gx_mean += dy[c] * weight[c] * x[c] * s;
        gx_mean /= C;
        float *dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) dx[c] += s * (dy[c] * weight[c] - x[c] * s * gx_mean);
    }
}

/* ---------------------------------------------------------------------------------------------
 * rotary embeddings, rotate_half convention (the first half of a head pairs with the second) */

void rope_table(float *cos_sin, const double *inv_freq, int P, int hd) {
    int half = hd / 2;
    for (int p = 0; p < P; p++) {
        float *row = cos_sin + (size_t)p * hd;
        for (int j = 0; j < half; j++) {
            /* As transformers computes it: the frequency and the angle rounded to float (so a
             * position in the thousands matches HF's angles, not more exact ones), then its
             * cosine and sine. */
            float a = (float)p * (float)inv_freq[j];
            row[j] = (float)cos((double)a);
            row[half + j] = (float)sin((double)a);
        }
    }
}

void rope_forward(float *x, const float *cos_sin, int N, int T, int pos0, int NH, int hd) {
    int half = hd / 2;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *cs = cos_sin + (size_t)(pos0 + i % T) * hd, *sn = cs + half;
        for (int h = 0; h < NH; h++) {
            float *a = x + ((size_t)i * NH + h) * hd, *b = a + half;
            for (int j = 0; j < half; j++) {
                float x1 = a[j], x2 = b[j];
                a[j] = x1 * cs[j] - x2 * sn[j];
                b[j] = x2 * cs[j] + x1 * sn[j];
            }
        }
    }
}

void rope_backward(float *dx, const float *dout, const float *cos_sin, int N, int T, int pos0,
                   int NH, int hd) {
    int half = hd / 2;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *cs = cos_sin + (size_t)(pos0 + i % T) * hd, *sn = cs + half;
        for (int h = 0; h < NH; h++) {
            size_t o = ((size_t)i * NH + h) * hd;
            const float *ga = dout + o, *gb = ga + half;
            float *da = dx + o, *db = da + half;
            for (int j = 0; j < half; j++) {
                da[j] += ga[j] * cs[j] + gb[j] * sn[j];
                db[j] += gb[j] * cs[j] - ga[j] * sn[j];
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU: silu(gate) * up, silu(g) = g * sigmoid(g) */

void swiglu_forward(float *out, const float *gate, const float *up, int n) {
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void swiglu_backward(float *dgate, float *dup, const float *gate, const float *up,
                     const float *dout, int n) {
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float g = gate[i], sig = 1.0f / (1.0f + expf(-g));
        dup[i] += dout[i] * g * sig;
        dgate[i] += dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
    }
}

/* ---------------------------------------------------------------------------------------------
 * grouped-query causal attention: every (sequence, head) pair is two GEMMs on strided views of
 * q, k and v, which are never copied out or repeated per query head. */

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

void gqa_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                           int B, int T, int NH, int NKV, int hd) {
    int G = NH / NKV, ldq = NH * hd, ldk = NKV * hd;
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
                        0.0f, out + (size_t)b * T * ldq + h * hd, ldq);
        }
    }
}

void gqa_attention_backward(float *dq, float *dk, float *dv, float *scratch, int scratch_slots,
                            const float *dout, const float *q, const float *k, const float *v,
                            const float *att, int B, int T, int NH, int NKV, int hd) {
    int G = NH / NKV, ldq = NH * hd, ldk = NKV * hd;
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
                const float *dy = dout + (size_t)b * T * ldq + h * hd;
                const float *a = att + ((size_t)b * NH + h) * T * T;
                /* datt = dy . v^T; dv += att^T . dy */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dy, ldq, vh,
                            ldk, 0.0f, datt, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, dy, ldq,
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

void gqa_attention_cached(float *out, float *scratch, int scratch_slots, const float *q,
                          const float *k, const float *v, int n, int past, int NH, int NKV,
                          int hd) {
    int G = NH / NKV, ldq = NH * hd, ldk = NKV * hd, len = past + n;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic) num_threads(scratch_slots)
    for (int h = 0; h < NH; h++) {
        float *a = scratch + (size_t)omp_get_thread_num() * n * len;
        const float *kh = k + (h / G) * hd, *vh = v + (h / G) * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, len, hd, scale, q + h * hd, ldq, kh,
                    ldk, 0.0f, a, len);
        causal_softmax(a, n, len, past);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, len, 1.0f, a, len, vh, ldk,
                    0.0f, out + h * hd, ldq);
    }
}

void embedding_forward(float *out, const int *tokens, const float *emb, int N, int C) {
#pragma omp parallel for
    for (int i = 0; i < N; i++)
        memcpy(out + (size_t)i * C, emb + (size_t)tokens[i] * C, (size_t)C * sizeof(float));
}

void bf16_widen(float *dst, const uint16_t *src, size_t n) {
    /* bf16 is the top half of an f32 */
#pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}
