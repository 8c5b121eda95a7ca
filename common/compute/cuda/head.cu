/* The output head and its loss, chunk by chunk of rows: logits = x . head^T in f32 (a cuBLASLt
 * GEMM), then one block per row for the softmax statistics, the cross-entropy and dlogits (bf16),
 * then dx = dlogits . head (a second GEMM). The [rows, V] logits never exist whole. */
#include "cuda.cuh"

#include <math.h>

#define CE_THREADS 512

/* (max, sum of exp(x - max)) of two parts of a row, as one */
static __device__ __forceinline__ void combine(float &m, float &s, float m2, float s2) {
    float mm = fmaxf(m, m2);
    s = (m == -INFINITY ? 0.0f : s * __expf(m - mm)) +
        (m2 == -INFINITY ? 0.0f : s2 * __expf(m2 - mm));
    m = mm;
}

/* Columns V .. Vg-1 of dlogits (the head's zero pad rows) become 0: the dx GEMM runs over Vg. */
__global__ void softmax_crossentropy_kernel(const float *logits, bf16 *dlogits, int ld, int V,
                                            int Vg, const int *targets, float *losses,
                                            float grad_scale) {
    int row = blockIdx.x;
    const float *l = logits + (size_t)row * ld;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += CE_THREADS) combine(m, s, l[i], 1.0f);
    /* across the warp, then across warps */
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        combine(m, s, m2, s2);
    }
    __shared__ float wm[CE_THREADS / 32], ws[CE_THREADS / 32];
    __shared__ float row_max, row_sum;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) wm[warp] = m, ws[warp] = s;
    __syncthreads();
    if (warp == 0) {
        m = lane < CE_THREADS / 32 ? wm[lane] : -INFINITY;
        s = lane < CE_THREADS / 32 ? ws[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            combine(m, s, m2, s2);
        }
        if (lane == 0) row_max = m, row_sum = s;
    }
    __syncthreads();
    m = row_max;
    s = row_sum;
    int target = targets[row];
    if (threadIdx.x == 0)
        losses[row] = target >= 0 ? (float)(log((double)s) - (double)(l[target] - m)) : 0.0f;
    if (!dlogits) return;
    bf16 *d = dlogits + (size_t)row * ld;
    float inv = 1.0f / s, scale = target >= 0 ? grad_scale : 0.0f;
    for (int i = threadIdx.x; i < Vg; i += CE_THREADS) {
        float p = i < V ? __expf(l[i] - m) * inv : 0.0f;
        d[i] = __float2bfloat16_rn(scale * (p - (i == target ? 1.0f : 0.0f)));
    }
}

void cuda_head_loss(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows,
                    int C, int V, float grad_scale, act *dx, float *dhead, float *losses) {
    cuda_ctx *k = cx(c);
    if (dhead) cuda_note(c, cudaErrorNotSupported, "the head's weight gradient (CPU only)");
    int grad = grad_scale != 0 && dx;
    /* the GEMMs run over the head's padded rows where it has them (aligned shapes) */
    int Vg = V + head->pad_rows <= k->head_ld ? V + head->pad_rows : V;
    for (int start = 0; start < rows; start += k->head_rows) {
        int n = rows - start < k->head_rows ? rows - start : k->head_rows;
        cuda_gemm(c, n, Vg, C, CAS(x) + (size_t)start * C, C, 0, head->data, C, 1, k->logits,
                  k->head_ld, CUDA_R_32F, 1.0f, 0.0f, NULL);
        softmax_crossentropy_kernel<<<n, CE_THREADS, 0, k->stream>>>(
            k->logits, grad ? k->dlogits : NULL, k->head_ld, V, Vg, targets + start, losses + start,
            grad_scale);
        cuda_check_launch(c, "softmax_crossentropy");
        if (grad)
            cuda_gemm(c, n, C, Vg, k->dlogits, k->head_ld, 0, head->data, C, 0,
                      AS(dx) + (size_t)start * C, C, CUDA_R_16BF, 1.0f, 0.0f, NULL);
    }
}

void cuda_head_logits(ops_ctx *c, float *logits, const act *x, const weight *head, int rows, int C,
                      int V) {
    cuda_gemm(c, rows, V, C, x, C, 0, head->data, C, 1, logits, V, CUDA_R_32F, 1.0f, 0.0f, NULL);
}
