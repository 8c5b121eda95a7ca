/* RMSNorm over C with a frozen weight (f32): out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
 * One warp per row; statistics in f32. */
#include "norm.cuh"

/* rstd_in NULL: compute and save rstd; else reuse it (recompute, bit for bit the same output).
 * PACKED: C % 8 == 0 and 16-byte aligned rows; each lane moves 8 values at a time. */
template <int PACKED>
__global__ void rmsnorm_forward_kernel(bf16 *out, float *rstd_out, const float *rstd_in,
                                       const bf16 *inp, const float *w, int N, int C, float eps) {
    int row = blockIdx.x * NORM_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    if constexpr (PACKED) {
        float xv[8], r;
        if (rstd_in) {
            r = rstd_in[row];
        } else {
            float ss = 0;
            for (int i = lane * 8; i < C; i += 256) {
                load8(xv, x + i);
#pragma unroll
                for (int j = 0; j < 8; j++) ss += xv[j] * xv[j];
            }
            r = rsqrtf(warp_sum(ss) / C + eps);
            if (lane == 0) rstd_out[row] = r;
        }
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
#pragma unroll
            for (int j = 0; j < 8; j++) xv[j] = xv[j] * r * w[i + j];
            store8(out + (size_t)row * C + i, xv);
        }
    } else {
        float r;
        if (rstd_in) {
            r = rstd_in[row];
        } else {
            float ss = 0;
            for (int i = lane; i < C; i += 32) {
                float v = __bfloat162float(x[i]);
                ss += v * v;
            }
            r = rsqrtf(warp_sum(ss) / C + eps);
            if (lane == 0) rstd_out[row] = r;
        }
        bf16 *o = out + (size_t)row * C;
        for (int i = lane; i < C; i += 32)
            o[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * r * w[i]);
    }
}

/* dx += rstd * (g - xhat * mean(g * xhat)), g = dout * w, xhat = x * rstd */
template <int PACKED>
__global__ void rmsnorm_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                        const float *w, const float *rstd, int N, int C) {
    int row = blockIdx.x * NORM_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float r = rstd[row], gx = 0;
    if constexpr (PACKED) {
        float xv[8], dv[8], acc[8];
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
            load8(dv, dy + i);
#pragma unroll
            for (int j = 0; j < 8; j++) gx += dv[j] * w[i + j] * xv[j] * r;
        }
        float gx_mean = warp_sum(gx) / C;
        bf16 *dx = dinp + (size_t)row * C;
        for (int i = lane * 8; i < C; i += 256) {
            load8(xv, x + i);
            load8(dv, dy + i);
            load8(acc, dx + i);
#pragma unroll
            for (int j = 0; j < 8; j++) acc[j] += r * (dv[j] * w[i + j] - xv[j] * r * gx_mean);
            store8(dx + i, acc);
        }
    } else {
        for (int i = lane; i < C; i += 32)
            gx += __bfloat162float(dy[i]) * w[i] * __bfloat162float(x[i]) * r;
        float gx_mean = warp_sum(gx) / C;
        bf16 *dx = dinp + (size_t)row * C;
        for (int i = lane; i < C; i += 32) {
            float xv = __bfloat162float(x[i]);
            float d = r * (__bfloat162float(dy[i]) * w[i] - xv * r * gx_mean);
            dx[i] = __float2bfloat16_rn(__bfloat162float(dx[i]) + d);
        }
    }
}

static void rmsnorm_launch(ops_ctx *c, act *out, float *rstd_out, const float *rstd_in,
                           const act *inp, const weight *w, int N, int C, float eps) {
    const float *wf = (const float *)w->data;
    if (packs_ok((size_t)C, out, inp, NULL, NULL))
        rmsnorm_forward_kernel<1><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(out), rstd_out, rstd_in, CAS(inp), wf, N, C, eps);
    else
        rmsnorm_forward_kernel<0><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(out), rstd_out, rstd_in, CAS(inp), wf, N, C, eps);
    cuda_check_launch(c, rstd_in ? "rmsnorm_recompute" : "rmsnorm_forward");
}

void cuda_rmsnorm_forward(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w, int N,
                          int C, float eps) {
    rmsnorm_launch(c, out, rstd, NULL, inp, w, N, C, eps);
}

void cuda_rmsnorm_recompute(ops_ctx *c, act *out, const act *inp, const weight *w,
                            const float *rstd, int N, int C) {
    rmsnorm_launch(c, out, NULL, rstd, inp, w, N, C, 0.0f);
}

void cuda_rmsnorm_backward(ops_ctx *c, act *dinp, const act *dout, const act *inp, const weight *w,
                           const float *rstd, int N, int C) {
    const float *wf = (const float *)w->data;
    if (packs_ok((size_t)C, dinp, dout, inp, NULL))
        rmsnorm_backward_kernel<1><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(dinp), CAS(dout), CAS(inp), wf, rstd, N, C);
    else
        rmsnorm_backward_kernel<0><<<norm_blocks(N), 32 * NORM_ROWS_PER_BLOCK, 0, stream_of(c)>>>(
            AS(dinp), CAS(dout), CAS(inp), wf, rstd, N, C);
    cuda_check_launch(c, "rmsnorm_backward");
}
