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
