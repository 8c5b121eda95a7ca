/* LayerNorm over C with a frozen weight and bias: out = (x - mean) * rstd * w + b. */
#include "cpu.h"

#include <math.h>

void cpu_layernorm_forward(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                           const weight *w, const weight *b, int N, int C, float eps) {
    (void)c;
    const float *weight = w->data, *bias = b->data;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = CF(inp) + (size_t)i * C;
        float m = 0.0f, v = 0.0f;
        for (int k = 0; k < C; k++) m += x[k];
        m /= C;
        for (int k = 0; k < C; k++) v += (x[k] - m) * (x[k] - m);
        float s = 1.0f / sqrtf(v / C + eps);
        float *o = F(out) + (size_t)i * C;
        for (int k = 0; k < C; k++) o[k] = (x[k] - m) * s * weight[k] + bias[k];
        mean[i] = m;
        rstd[i] = s;
    }
}

void cpu_layernorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                            const float *mean, const float *rstd, int N, int C) {
    (void)c;
    const float *weight = w->data;
    /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = dout * w. */
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = CF(inp) + (size_t)i * C, *dy = CF(dout) + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (int k = 0; k < C; k++) {
            float g = dy[k] * weight[k];
            g_mean += g;
            gx_mean += g * (x[k] - m) * s;
        }
        g_mean /= C;
        gx_mean /= C;
        float *dx = F(dinp) + (size_t)i * C;
        for (int k = 0; k < C; k++) {
            float g = dy[k] * weight[k], xhat = (x[k] - m) * s;
            dx[k] += s * (g - g_mean - xhat * gx_mean);
        }
    }
}
