/* matmul: out = inp . W + bias, and the input gradient through the frozen W. */
#include "cpu.h"

#include <cblas.h>
#include <string.h>

void cpu_matmul_forward(ops_ctx *c, act *out, const act *inp, const weight *w, weight_layout layout,
                        const weight *bias, int N, int IC, int OC) {
    float beta = 0.0f;
    if (bias) {
        const float *b = bias->data;
#pragma omp parallel for
        for (int i = 0; i < N; i++) memcpy(F(out) + (size_t)i * OC, b, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    if (cpu_uses_bf16(c, w)) { /* W is [IC,OC], or [OC,IC] read transposed */
        cpu_gemm_bf16(c, N, OC, IC, CF(inp), IC, w->data, layout == W_OUT_IN,
                      layout == W_IN_OUT ? OC : IC, F(out), OC, bias != NULL);
        return;
    }
    const float *W = cpu_weight_f32(c, w);
    if (layout == W_IN_OUT)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, CF(inp), IC, W, OC,
                    beta, F(out), OC);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, CF(inp), IC, W, IC,
                    beta, F(out), OC);
}

void cpu_matmul_backward(ops_ctx *c, act *dinp, const act *dout, const weight *w,
                         weight_layout layout, int N, int IC, int OC, int accumulate) {
    if (cpu_uses_bf16(c, w)) { /* W^T is [OC,IC]: W_OUT_IN as stored, W_IN_OUT read transposed */
        cpu_gemm_bf16(c, N, IC, OC, CF(dout), OC, w->data, layout == W_IN_OUT,
                      layout == W_IN_OUT ? OC : IC, F(dinp), IC, accumulate);
        return;
    }
    const float *W = cpu_weight_f32(c, w);
    float beta = accumulate ? 1.0f : 0.0f;
    if (layout == W_IN_OUT) /* dinp = dout [N,OC] . W^T [OC,IC] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, OC, 1.0f, CF(dout), OC, W, OC,
                    beta, F(dinp), IC);
    else /* W is [OC,IC] already */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, CF(dout), OC, W, IC,
                    beta, F(dinp), IC);
}

void cpu_matmul_backward_weight(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                                const act *dout, weight_layout layout, int N, int IC, int OC) {
    (void)c;
    if (layout == W_IN_OUT) /* dW [IC,OC] += inp^T . dout */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, OC, N, 1.0f, CF(inp), IC, CF(dout),
                    OC, 1.0f, dweight, OC);
    else /* dW [OC,IC] += dout^T . inp */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, CF(dout), OC, CF(inp),
                    IC, 1.0f, dweight, IC);
    if (!dbias) return;
    const float *d = CF(dout);
#pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        float sum = 0.0f;
        for (int i = 0; i < N; i++) sum += d[(size_t)i * OC + o];
        dbias[o] += sum;
    }
}
