/* Rotary embeddings, rotate_half convention (the first half of a head pairs with the second). */
#include "cpu.h"

#include <math.h>

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

void cpu_rope_forward(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH,
                      int hd) {
    (void)c;
    int half = hd / 2;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *cs = cos_sin + (size_t)(pos0 + i % T) * hd, *sn = cs + half;
        for (int h = 0; h < NH; h++) {
            float *a = F(x) + ((size_t)i * NH + h) * hd, *b = a + half;
            for (int j = 0; j < half; j++) {
                float x1 = a[j], x2 = b[j];
                a[j] = x1 * cs[j] - x2 * sn[j];
                b[j] = x2 * cs[j] + x1 * sn[j];
            }
        }
    }
}

void cpu_rope_backward(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                       int pos0, int NH, int hd) {
    (void)c;
    int half = hd / 2;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *cs = cos_sin + (size_t)(pos0 + i % T) * hd, *sn = cs + half;
        for (int h = 0; h < NH; h++) {
            size_t o = ((size_t)i * NH + h) * hd;
            const float *ga = CF(dout) + o, *gb = ga + half;
            float *da = F(dx) + o, *db = da + half;
            for (int j = 0; j < half; j++) {
                da[j] = ga[j] * cs[j] + gb[j] * sn[j];
                db[j] = gb[j] * cs[j] - ga[j] * sn[j];
            }
        }
    }
}
