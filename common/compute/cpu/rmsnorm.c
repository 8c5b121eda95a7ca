/* RMSNorm over C with a frozen weight: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps). */
#include "cpu.h"

#include <math.h>

void cpu_rmsnorm_forward(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w, int N,
                         int C, float eps) {
    (void)c;
    const float *weight = w->data;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = CF(inp) + (size_t)i * C;
        float ss = 0.0f;
        for (int k = 0; k < C; k++) ss += x[k] * x[k];
        float s = 1.0f / sqrtf(ss / C + eps);
        float *o = F(out) + (size_t)i * C;
        for (int k = 0; k < C; k++) o[k] = x[k] * s * weight[k];
        rstd[i] = s;
    }
}

void cpu_rmsnorm_recompute(ops_ctx *c, act *out, const act *inp, const weight *w, const float *rstd,
                           int N, int C) {
    (void)c;
    const float *weight = w->data;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = CF(inp) + (size_t)i * C;
        float *o = F(out) + (size_t)i * C, s = rstd[i];
        for (int k = 0; k < C; k++) o[k] = x[k] * s * weight[k];
    }
}

void cpu_rmsnorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                          const float *rstd, int N, int C) {
    (void)c;
    const float *weight = w->data;
    /* dx = rstd * (g - xhat * mean(g * xhat)), with g = dout * w and xhat = x * rstd. */
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = CF(inp) + (size_t)i * C, *dy = CF(dout) + (size_t)i * C;
        float s = rstd[i], gx_mean = 0.0f;
        for (int k = 0; k < C; k++) gx_mean += dy[k] * weight[k] * x[k] * s;
        gx_mean /= C;
        float *dx = F(dinp) + (size_t)i * C;
        for (int k = 0; k < C; k++) dx[k] += s * (dy[k] * weight[k] - x[k] * s * gx_mean);
    }
}
