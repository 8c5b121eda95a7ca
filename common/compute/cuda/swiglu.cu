/* SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g). */
#include "elementwise.cuh"

static __device__ __forceinline__ float sigmoid(float g) {
    return 1.0f / (1.0f + __expf(-g));
}

template <int PACKED>
__global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gate, const bf16 *up, size_t n) {
    if (PACKED) {
        GRID_STRIDE(i, n / 8) {
            float g[8], u[8];
            load8(g, gate + i * 8);
            load8(u, up + i * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) g[j] = g[j] * sigmoid(g[j]) * u[j];
            store8(out + i * 8, g);
        }
    } else {
        GRID_STRIDE(i, n) {
            float g = __bfloat162float(gate[i]);
            out[i] = __float2bfloat16_rn(g * sigmoid(g) * __bfloat162float(up[i]));
        }
    }
}

template <int PACKED>
__global__ void swiglu_backward_kernel(bf16 *dgate, bf16 *dup, const bf16 *gate, const bf16 *up,
                                       const bf16 *dout, size_t n) {
    if (PACKED) {
        GRID_STRIDE(i, n / 8) {
            float g[8], u[8], d[8], dg[8], du[8];
            load8(g, gate + i * 8);
            load8(u, up + i * 8);
            load8(d, dout + i * 8);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float s = sigmoid(g[j]);
                du[j] = d[j] * g[j] * s;
                dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
            }
            store8(dgate + i * 8, dg);
            store8(dup + i * 8, du);
        }
    } else {
        GRID_STRIDE(i, n) {
            float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]);
            float d = __bfloat162float(dout[i]), s = sigmoid(g);
            dup[i] = __float2bfloat16_rn(d * g * s);
            dgate[i] = __float2bfloat16_rn(d * u * s * (1.0f + g * (1.0f - s)));
        }
    }
}

void cuda_swiglu_forward(ops_ctx *c, act *out, const act *gate, const act *up, int n) {
    size_t N = (size_t)n;
    if (packs_ok(N, out, gate, up, NULL))
        swiglu_forward_kernel<1>
            <<<blocks_for(N / 8, 256), 256, 0, stream_of(c)>>>(AS(out), CAS(gate), CAS(up), N);
    else
        swiglu_forward_kernel<0>
            <<<blocks_for(N, 256), 256, 0, stream_of(c)>>>(AS(out), CAS(gate), CAS(up), N);
    cuda_check_launch(c, "swiglu_forward");
}

void cuda_swiglu_backward(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                          const act *dout, int n) {
    size_t N = (size_t)n;
    if (packs_ok(N, dgate, dup, gate, up) && (uintptr_t)dout % 16 == 0)
        swiglu_backward_kernel<1><<<blocks_for(N / 8, 256), 256, 0, stream_of(c)>>>(
            AS(dgate), AS(dup), CAS(gate), CAS(up), CAS(dout), N);
    else
        swiglu_backward_kernel<0><<<blocks_for(N, 256), 256, 0, stream_of(c)>>>(
            AS(dgate), AS(dup), CAS(gate), CAS(up), CAS(dout), N);
    cuda_check_launch(c, "swiglu_backward");
}
