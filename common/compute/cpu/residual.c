/* The residual stream: out = a + b. */
#include "cpu.h"

void cpu_residual_forward(ops_ctx *c, act *out, const act *a, const act *b, int n) {
    (void)c;
    float *o = F(out);
    const float *x = CF(a), *y = CF(b);
#pragma omp parallel for
    for (int i = 0; i < n; i++) o[i] = x[i] + y[i];
}

void cpu_residual_backward(ops_ctx *c, act *dinp, const act *dout, int n) {
    (void)c;
    float *d = F(dinp);
    const float *dy = CF(dout);
#pragma omp parallel for
    for (int i = 0; i < n; i++) d[i] += dy[i];
}
