/* SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g). */
#include "cpu.h"

#include <math.h>

void cpu_swiglu_forward(ops_ctx *c, act *out, const act *gate, const act *up, int n) {
    (void)c;
    float *o = F(out);
    const float *g_ = CF(gate), *u = CF(up);
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float g = g_[i];
        o[i] = g / (1.0f + expf(-g)) * u[i];
    }
}

void cpu_swiglu_backward(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                         const act *dout, int n) {
    (void)c;
    float *dg = F(dgate), *du = F(dup);
    const float *g_ = CF(gate), *u = CF(up), *dy = CF(dout);
#pragma omp parallel for simd
    for (int i = 0; i < n; i++) {
        float g = g_[i], sig = 1.0f / (1.0f + expf(-g));
        du[i] = dy[i] * g * sig;
        dg[i] = dy[i] * u[i] * sig * (1.0f + g * (1.0f - sig));
    }
}
