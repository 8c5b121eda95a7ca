/* Rotary embeddings, rotate_half convention, in place: one thread per (row, head, pair). */
#include "cuda.cuh"

template <int BACKWARD>
__global__ void rope_kernel(bf16 *dst, const bf16 *src, const float *cos_sin, int N, int T,
                            int pos0, int NH, int hd) {
    int half = hd / 2;
    size_t total = (size_t)N * NH * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        size_t head = i / half; /* row * NH + h */
        int row = (int)(head / NH);
        const float *cs = cos_sin + (size_t)(pos0 + row % T) * hd;
        float cv = cs[j], sv = cs[half + j];
        size_t a = head * hd + j, b = a + half;
        float x1 = __bfloat162float(src[a]), x2 = __bfloat162float(src[b]);
        if (BACKWARD) { /* the inverse rotation */
            dst[a] = __float2bfloat16_rn(x1 * cv + x2 * sv);
            dst[b] = __float2bfloat16_rn(x2 * cv - x1 * sv);
        } else {
            dst[a] = __float2bfloat16_rn(x1 * cv - x2 * sv);
            dst[b] = __float2bfloat16_rn(x2 * cv + x1 * sv);
        }
    }
}

void cuda_rope_forward(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH,
                       int hd) {
    size_t total = (size_t)N * NH * (hd / 2);
    rope_kernel<0><<<blocks_for(total, 256), 256, 0, stream_of(c)>>>(AS(x), CAS(x), cos_sin, N, T,
                                                                     pos0, NH, hd);
    cuda_check_launch(c, "rope_forward");
}

void cuda_rope_backward(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                        int pos0, int NH, int hd) {
    size_t total = (size_t)N * NH * (hd / 2);
    rope_kernel<1><<<blocks_for(total, 256), 256, 0, stream_of(c)>>>(AS(dx), CAS(dout), cos_sin, N,
                                                                     T, pos0, NH, hd);
    cuda_check_launch(c, "rope_backward");
}
