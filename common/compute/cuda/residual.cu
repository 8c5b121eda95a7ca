/* The residual stream: out = a + b, and its backward's one real op, dinp += dout. */
#include "elementwise.cuh"

template <int PACKED>
__global__ void residual_forward_kernel(bf16 *out, const bf16 *a, const bf16 *b, size_t n) {
    if (PACKED) {
        GRID_STRIDE(i, n / 8) {
            float x[8], y[8];
            load8(x, a + i * 8);
            load8(y, b + i * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) x[j] += y[j];
            store8(out + i * 8, x);
        }
    } else {
        GRID_STRIDE(i, n)
        out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
    }
}

void cuda_residual_forward(ops_ctx *c, act *out, const act *a, const act *b, int n) {
    size_t N = (size_t)n;
    if (packs_ok(N, out, a, b, NULL))
        residual_forward_kernel<1>
            <<<blocks_for(N / 8, 256), 256, 0, stream_of(c)>>>(AS(out), CAS(a), CAS(b), N);
    else
        residual_forward_kernel<0>
            <<<blocks_for(N, 256), 256, 0, stream_of(c)>>>(AS(out), CAS(a), CAS(b), N);
    cuda_check_launch(c, "residual_forward");
}

void cuda_residual_backward(ops_ctx *c, act *dinp, const act *dout, int n) {
    cuda_residual_forward(c, dinp, dinp, dout, n);
}
