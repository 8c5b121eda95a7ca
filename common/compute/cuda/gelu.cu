/* GELU, tanh approximation (HF "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#include "elementwise.cuh"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

static __device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
}

static __device__ __forceinline__ float gelu_grad(float x) {
    float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
    float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

template <int PACKED> __global__ void gelu_forward_kernel(bf16 *out, const bf16 *inp, size_t n) {
    if (PACKED) {
        GRID_STRIDE(i, n / 8) {
            float x[8];
            load8(x, inp + i * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) x[j] = gelu(x[j]);
            store8(out + i * 8, x);
        }
    } else {
        GRID_STRIDE(i, n) out[i] = __float2bfloat16_rn(gelu(__bfloat162float(inp[i])));
    }
}

template <int PACKED>
__global__ void gelu_backward_kernel(bf16 *dinp, const bf16 *inp, const bf16 *dout, size_t n) {
    if (PACKED) {
        GRID_STRIDE(i, n / 8) {
            float x[8], d[8];
            load8(x, inp + i * 8);
            load8(d, dout + i * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) x[j] = d[j] * gelu_grad(x[j]);
            store8(dinp + i * 8, x);
        }
    } else {
        GRID_STRIDE(i, n)
        dinp[i] =
            __float2bfloat16_rn(__bfloat162float(dout[i]) * gelu_grad(__bfloat162float(inp[i])));
    }
}

void cuda_gelu_forward(ops_ctx *c, act *out, const act *inp, int n) {
    size_t N = (size_t)n;
    if (packs_ok(N, out, inp, NULL, NULL))
        gelu_forward_kernel<1>
            <<<blocks_for(N / 8, 256), 256, 0, stream_of(c)>>>(AS(out), CAS(inp), N);
    else
        gelu_forward_kernel<0><<<blocks_for(N, 256), 256, 0, stream_of(c)>>>(AS(out), CAS(inp), N);
    cuda_check_launch(c, "gelu_forward");
}

void cuda_gelu_backward(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n) {
    size_t N = (size_t)n;
    if (packs_ok(N, dinp, inp, dout, NULL))
        gelu_backward_kernel<1>
            <<<blocks_for(N / 8, 256), 256, 0, stream_of(c)>>>(AS(dinp), CAS(inp), CAS(dout), N);
    else
        gelu_backward_kernel<0>
            <<<blocks_for(N, 256), 256, 0, stream_of(c)>>>(AS(dinp), CAS(inp), CAS(dout), N);
    cuda_check_launch(c, "gelu_backward");
}
