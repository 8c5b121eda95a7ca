/* GELU, tanh approximation (HF "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#include "cpu.h"

#include <math.h>

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* tanh(u) = 1 - 2 / (exp(2u) + 1): written with expf, the loops vectorise (glibc's libmvec);
 * tanhf does not. Exact at both tails: exp overflows to inf (tanh 1) or underflows to 0 (-1). */
static inline float tanh_via_exp(float u) {
    return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f);
}

void cpu_gelu_forward(ops_ctx *c, act *out, const act *inp, int n) {
    (void)c;
    float *o = F(out);
    const float *in = CF(inp);
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float x = in[i];
        o[i] = 0.5f * x * (1.0f + tanh_via_exp(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void cpu_gelu_backward(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n) {
    (void)c;
    float *dx = F(dinp);
    const float *in = CF(inp), *dy = CF(dout);
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float x = in[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanh_via_exp(u);
        float sech2 = 1.0f - th * th;
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dx[i] = dy[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
    }
}
