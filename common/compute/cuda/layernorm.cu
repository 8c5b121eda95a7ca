/* LayerNorm over C with a frozen weight and bias (f32): out = (x - mean) * rstd * w + b. One warp
 * per row; statistics in f32. */
#include "norm.cuh"

/* PACKED: C % 8 == 0 and 16-byte aligned rows; each lane moves 8 values at a time. */
template <int PACKED>
__global__ void layernorm_forward_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp,
                                         const float *w, const float *b, int N, int C, float eps) {
    int row = blockIdx.x * NORM_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    if constexpr (PACKED) {
        float s = 0, v = 0, xv[8];
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
#pragma unroll
            for (int j = 0; j < 8; j++) s += xv[j];
        }
        float m = warp_sum(s) / C;
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
#pragma unroll
            for (int j = 0; j < 8; j++) v += (xv[j] - m) * (xv[j] - m);
        }
        float r = rsqrtf(warp_sum(v) / C + eps);
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
#pragma unroll
            for (int j = 0; j < 8; j++) xv[j] = (xv[j] - m) * r * w[i + j] + b[i + j];
            store8(out + (size_t)row * C + i, xv);
        }
        if (lane == 0) mean[row] = m, rstd[row] = r;
    } else {
        float s = 0;
        for (int i = lane; i < C; i += 32) s += __bfloat162float(x[i]);
        float m = warp_sum(s) / C;
        float v = 0;
        for (int i = lane; i < C; i += 32) {
            float d = __bfloat162float(x[i]) - m;
            v += d * d;
        }
        float r = rsqrtf(warp_sum(v) / C + eps);
        bf16 *o = out + (size_t)row * C;
        for (int i = lane; i < C; i += 32)
            o[i] = __float2bfloat16_rn((__bfloat162float(x[i]) - m) * r * w[i] + b[i]);
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = r;
        }
    }
}

/* dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w */
template <int PACKED>
__global__ void layernorm_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                          const float *w, const float *mean, const float *rstd,
                                          int N, int C) {
    int row = blockIdx.x * NORM_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float m = mean[row], r = rstd[row], g_sum = 0, gx_sum = 0;
    if constexpr (PACKED) {
        float xv[8], dv[8], acc[8];
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
            load8(dv, dy + i);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float g = dv[j] * w[i + j];
                g_sum += g;
                gx_sum += g * (xv[j] - m) * r;
            }
        }
        float g_mean = warp_sum(g_sum) / C, gx_mean = warp_sum(gx_sum) / C;
        bf16 *dx = dinp + (size_t)row * C;
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
            load8(dv, dy + i);
            load8(acc, dx + i);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float g = dv[j] * w[i + j], xhat = (xv[j] - m) * r;
                acc[j] += r * (g - g_mean - xhat * gx_mean);
            }
            store8(dx + i, acc);
        }
    } else {
        for (int i = lane; i < C; i += 32) {
            float g = __bfloat162float(dy[i]) * w[i];
            g_sum += g;
            gx_sum += g * (__bfloat162float(x[i]) - m) * r;
        }
        float g_mean = warp_sum(g_sum) / C, gx_mean = warp_sum(gx_sum) / C;
        bf16 *dx = dinp + (size_t)row * C;
        for (int i = lane; i < C; i += 32) {
            float g = __bfloat162float(dy[i]) * w[i], xhat = (__bfloat162float(x[i]) - m) * r;
            dx[i] =
                __float2bfloat16_rn(__bfloat162float(dx[i]) + r * (g - g_mean - xhat * gx_mean));
        }
    }
}

void cuda_layernorm_forward(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                            const weight *w, const weight *b, int N, int C, float eps) {
    const float *wf = (const float *)w->data, *bf = (const float *)b->data;
    if (packs_ok((size_t)C, out, inp, NULL, NULL))
        layernorm_forward_kernel<1><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(out), mean, rstd, CAS(inp), wf, bf, N, C, eps);
    else
        layernorm_forward_kernel<0><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(out), mean, rstd, CAS(inp), wf, bf, N, C, eps);
    cuda_check_launch(c, "layernorm_forward");
}

void cuda_layernorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp,
                             const weight *w, const float *mean, const float *rstd, int N, int C) {
    const float *wf = (const float *)w->data;
    if (packs_ok((size_t)C, dinp, dout, inp, NULL))
        layernorm_backward_kernel<1><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(dinp), CAS(dout), CAS(inp), wf, mean, rstd, N, C);
    else
        layernorm_backward_kernel<0><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(dinp), CAS(dout), CAS(inp), wf, mean, rstd, N, C);
    cuda_check_launch(c, "layernorm_backward");
}
