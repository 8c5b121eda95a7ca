/* Causal attention with grouped-query heads, never materialising the [T, T] scores:
 *
 * - flash kernels (FlashAttention-2's algorithm) for head sizes 64 and 128 with 16-byte aligned
 *   rows: bf16 tensor-core MMAs (mma.sync m16n8k16, f32 accumulation) on 64 x 64 tiles in shared
 *   memory, an online softmax in f32, and the log-sum-exp of each row [B, NH, T] (f32) as the
 *   state backward needs. Backward runs per (key block, KV head): it recomputes the
 *   probabilities from the log-sum-exp, keeps dK and dV in registers across the KV head's query
 *   heads, and adds dQ in f32 with atomics;
 * - plain kernels (one block per query or key row, f32 arithmetic) for every other shape, and for
 *   inference with a KV cache.
 *
 * Scores scale by 1/sqrt(hd). */
#include "cuda.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LOG2E 1.4426950408889634f
#define LN2   0.6931471805599453f

size_t cuda_attention_state_floats(int B, int T, int NH) {
    return (size_t)B * NH * T;
}

/* =============================================================================================
 * plain kernels: correct for any head size (up to 256), and the reference the flash ones are
 * tested against */

#define PLAIN_THREADS 128

static __device__ float block_sum(float v, float *scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = 0;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) s += scratch[w];
    return s;
}

static __device__ float block_max(float v, float *scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) m = fmaxf(m, scratch[w]);
    return m;
}

/* One block per (query row i of sequence b, head h): the query at position past + i sees keys
 * 0 .. past + i of its sequence (past + Tq keys per sequence). scores: (past + Tq) floats of
 * shared memory. lse may be NULL. */
__global__ void plain_forward_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                     const bf16 *v, int ldq, int ldk, int Tq, int past, int NH,
                                     int NKV, int hd, float scale) {
    extern __shared__ float scores[];
    __shared__ float scratch[PLAIN_THREADS / 32];
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    int Tk = past + Tq, n_keys = past + i + 1;
    const bf16 *qr = q + ((size_t)b * Tq + i) * ldq + (size_t)h * hd;
    const bf16 *kb = k + (size_t)b * Tk * ldk + (size_t)kvh * hd;
    const bf16 *vb = v + (size_t)b * Tk * ldk + (size_t)kvh * hd;
    float mx = -INFINITY;
    for (int u = threadIdx.x; u < n_keys; u += blockDim.x) {
        const bf16 *kr = kb + (size_t)u * ldk;
        float s = 0;
        for (int d = 0; d < hd; d++) s += __bfloat162float(qr[d]) * __bfloat162float(kr[d]);
        scores[u] = s * scale;
        mx = fmaxf(mx, s * scale);
    }
    mx = block_max(mx, scratch);
    float sum = 0;
    for (int u = threadIdx.x; u < n_keys; u += blockDim.x) {
        scores[u] = __expf(scores[u] - mx);
        sum += scores[u];
    }
    sum = block_sum(sum, scratch);
    __syncthreads();
    float inv = 1.0f / sum;
    bf16 *o = out + ((size_t)b * Tq + i) * (size_t)NH * hd + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0;
        for (int u = 0; u < n_keys; u++)
            acc += scores[u] * __bfloat162float(vb[(size_t)u * ldk + d]);
        o[d] = __float2bfloat16_rn(acc * inv);
    }
    if (lse && threadIdx.x == 0) lse[((size_t)b * NH + h) * Tq + i] = mx + logf(sum);
}

/* delta[b, h, t] = sum_d dout * out over the head's row (what both backward passes need) */
__global__ void attention_delta_kernel(float *delta, const bf16 *dout, const bf16 *out, int BT,
                                       int T, int NH, int hd) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (warp >= BT * NH) return;
    int row = warp / NH, h = warp % NH;
    const bf16 *dy = dout + (size_t)row * NH * hd + (size_t)h * hd;
    const bf16 *y = out + (size_t)row * NH * hd + (size_t)h * hd;
    float s = 0;
    for (int d = lane; d < hd; d += 32) s += __bfloat162float(dy[d]) * __bfloat162float(y[d]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    int b = row / T, t = row % T;
    if (lane == 0) delta[((size_t)b * NH + h) * T + t] = s;
}

/* dq for one (query t, head h): dq = scale * sum_u p_u (dP_u - delta) k_u, dP_u = dout . v_u. */
__global__ void plain_backward_dq_kernel(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k,
                                         const bf16 *v, const float *lse, const float *delta,
                                         int ldq, int ldk, int T, int NH, int NKV, int hd,
                                         float scale) {
    extern __shared__ float ds[]; /* [T] */
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    size_t row = (size_t)b * T + t, stat = ((size_t)b * NH + h) * T + t;
    const bf16 *qr = q + row * ldq + (size_t)h * hd;
    const bf16 *dy = dout + row * (size_t)NH * hd + (size_t)h * hd;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * hd;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * hd;
    float L = lse[stat], D = delta[stat];
    for (int u = threadIdx.x; u <= t; u += blockDim.x) {
        float s = 0, dp = 0;
        for (int d = 0; d < hd; d++) {
            s += __bfloat162float(qr[d]) * __bfloat162float(kb[(size_t)u * ldk + d]);
            dp += __bfloat162float(dy[d]) * __bfloat162float(vb[(size_t)u * ldk + d]);
        }
        float p = __expf(s * scale - L);
        ds[u] = p * (dp - D);
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0;
        for (int u = 0; u <= t; u++) acc += ds[u] * __bfloat162float(kb[(size_t)u * ldk + d]);
        dq[row * ldq + (size_t)h * hd + d] = __float2bfloat16_rn(acc * scale);
    }
}

/* dk, dv for one (key u, KV head): over its query heads and the queries t >= u. Threads split
 * the head dimension; the dot products of each (head, query) are reduced across the block. */
__global__ void plain_backward_dkv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                          const bf16 *k, const bf16 *v, const float *lse,
                                          const float *delta, int ldq, int ldk, int T, int NH,
                                          int NKV, int hd, float scale) {
    __shared__ float scratch[PLAIN_THREADS / 32];
    int u = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, G = NH / NKV;
    const bf16 *kr = k + ((size_t)b * T + u) * ldk + (size_t)kvh * hd;
    const bf16 *vr = v + ((size_t)b * T + u) * ldk + (size_t)kvh * hd;
    int d = threadIdx.x;
    float kd = d < hd ? __bfloat162float(kr[d]) : 0, vd = d < hd ? __bfloat162float(vr[d]) : 0;
    float dk_acc = 0, dv_acc = 0;
    for (int h = kvh * G; h < (kvh + 1) * G; h++)
        for (int t = u; t < T; t++) {
            size_t row = (size_t)b * T + t, stat = ((size_t)b * NH + h) * T + t;
            float qd = d < hd ? __bfloat162float(q[row * ldq + (size_t)h * hd + d]) : 0;
            float dyd =
                d < hd ? __bfloat162float(dout[row * (size_t)NH * hd + (size_t)h * hd + d]) : 0;
            float s = block_sum(qd * kd, scratch), dp = block_sum(dyd * vd, scratch);
            float p = __expf(s * scale - lse[stat]);
            float dsc = p * (dp - delta[stat]);
            dv_acc += p * dyd;
            dk_acc += dsc * qd;
        }
    if (d < hd) {
        dk[((size_t)b * T + u) * ldk + (size_t)kvh * hd + d] = __float2bfloat16_rn(dk_acc * scale);
        dv[((size_t)b * T + u) * ldk + (size_t)kvh * hd + d] = __float2bfloat16_rn(dv_acc);
    }
}

/* =============================================================================================
 * flash kernels: tensor-core tiles of 64 queries x 64 keys, 4 warps of 16 rows each */

#define FLASH_THREADS 128
#define TILE          64

/* D = A . B + D for one m16n8k16 tile: A 16x16 bf16 (4 registers), B 16x8 bf16 (2), D 16x8 f32 */
static __device__ __forceinline__ void mma_bf16(float *d, const uint32_t *a, uint32_t b0,
                                                uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 bf16 matrices from shared memory; each thread names one row of one of them. */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const bf16 *row) {
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const bf16 *row) {
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* Rows row0 .. row0+63 of a [rows, ld] bf16 matrix (columns col .. col+HD-1) into a [64][HD+8]
 * shared tile; rows past `rows` become 0. */
template <int HD>
static __device__ __forceinline__ void load_tile(bf16 *tile, const bf16 *src, int ld, int row0,
                                                 int rows) {
    constexpr int LD = HD + 8, CHUNKS = TILE * HD / 8;
    for (int c = threadIdx.x; c < CHUNKS; c += FLASH_THREADS) {
        int r = c / (HD / 8), col = (c % (HD / 8)) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row0 + r < rows) v = *(const uint4 *)(src + (size_t)(row0 + r) * ld + col);
        *(uint4 *)(tile + r * LD + col) = v;
    }
}

/* A-operand fragments of the 16 rows starting at `row` of a tile, for k-step ks (16 columns). */
template <int HD>
static __device__ __forceinline__ void a_fragment(uint32_t *f, const bf16 *tile, int row, int ks,
                                                  int lane) {
    constexpr int LD = HD + 8;
    ldmatrix_x4(f, tile + (row + lane % 16) * LD + ks * 16 + (lane / 16) * 8);
}

/* B-operand fragments of two n-tiles (16 rows of the tile from n0, used transposed: the MMA's n
 * runs over tile rows, k over columns ks*16..): regs 0,1 for rows n0..n0+7, 2,3 for n0+8.. */
template <int HD>
static __device__ __forceinline__ void b_fragment_rows(uint32_t *f, const bf16 *tile, int n0,
                                                       int ks, int lane, int ld) {
    ldmatrix_x4(f, tile + (n0 + lane % 8 + (lane / 16) * 8) * ld + ks * 16 + ((lane / 8) % 2) * 8);
}

/* B-operand fragments of two n-tiles over columns d0.. (16), k over tile rows k0..k0+15: the
 * tile is [k][n] in memory, so ldmatrix transposes. */
static __device__ __forceinline__ void b_fragment_cols(uint32_t *f, const bf16 *tile, int k0,
                                                       int d0, int lane, int ld) {
    ldmatrix_x4_trans(f, tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * ld + d0 + (lane / 16) * 8);
}

template <int HD>
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_forward_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                         int ldq, int ldk, int T, int NH, int NKV, float scale) {
    constexpr int LD = HD + 8, NT = TILE / 8, DT = HD / 8, KS = HD / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = (bf16 *)smem_raw, *sK = sQ + TILE * LD, *sV = sK + TILE * LD;
    int qb = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
    int h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    int q0 = qb * TILE;
    const bf16 *qbase = q + (size_t)b * T * ldq + (size_t)h * HD;
    const bf16 *kbase = k + (size_t)b * T * ldk + (size_t)kvh * HD;
    const bf16 *vbase = v + (size_t)b * T * ldk + (size_t)kvh * HD;
    load_tile<HD>(sQ, qbase, ldq, q0, T);
    __syncthreads();
    uint32_t qf[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ks++) a_fragment<HD>(qf[ks], sQ, warp * 16, ks, lane);

    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.0f, 0.0f};
    float scale_log2 = scale * LOG2E;
    int qi[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

    for (int kb = 0; kb <= qb; kb++) {
        __syncthreads(); /* everyone is done with the previous K and V */
        load_tile<HD>(sK, kbase, ldk, kb * TILE, T);
        load_tile<HD>(sV, vbase, ldk, kb * TILE, T);
        __syncthreads();
        /* S = Q . K^T for this warp's 16 rows and the block's 64 keys */
        float s[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
            for (int nt2 = 0; nt2 < NT / 2; nt2++) {
                uint32_t kf[4];
                b_fragment_rows<HD>(kf, sK, nt2 * 16, ks, lane, LD);
                mma_bf16(s[2 * nt2], qf[ks], kf[0], kf[1]);
                mma_bf16(s[2 * nt2 + 1], qf[ks], kf[2], kf[3]);
            }
        /* scale (base 2), mask, and the online softmax per row */
        float mx[2] = {m_row[0], m_row[1]};
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kb * TILE + nt * 8 + tig * 2 + (e & 1), r = e / 2;
                float x = s[nt][e] * scale_log2;
                if (key > qi[r] || key >= T) x = -INFINITY;
                s[nt][e] = x;
                mx[r] = fmaxf(mx[r], x);
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        }
        float corr[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) corr[r] = exp2f(m_row[r] - mx[r]);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = exp2f(s[nt][e] - mx[e / 2]);
                s[nt][e] = p;
                rs[e / 2] += p;
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 1);
            rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 2);
            l_row[r] = l_row[r] * corr[r] + rs[r];
            m_row[r] = mx[r];
        }
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            o[dt][0] *= corr[0];
            o[dt][1] *= corr[0];
            o[dt][2] *= corr[1];
            o[dt][3] *= corr[1];
        }
        /* O += P . V: the probabilities' accumulator layout is the A operand's */
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dt2 = 0; dt2 < DT / 2; dt2++) {
                uint32_t vf[4];
                b_fragment_cols(vf, sV, kk * 16, dt2 * 16, lane, LD);
                mma_bf16(o[2 * dt2], pa, vf[0], vf[1]);
                mma_bf16(o[2 * dt2 + 1], pa, vf[2], vf[3]);
            }
        }
    }
    /* out = O / l; lse in natural log */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (qi[r] >= T) continue;
        float inv = 1.0f / l_row[r];
        bf16 *orow = out + ((size_t)b * T + qi[r]) * (size_t)NH * HD + (size_t)h * HD;
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
            *(uint32_t *)(orow + dt * 8 + tig * 2) =
                pack_bf16(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
        if (tig == 0) lse[((size_t)b * NH + h) * T + qi[r]] = (m_row[r] + log2f(l_row[r])) * LN2;
    }
}

template <int HD>
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_backward_kernel(float *dq_accum, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                          const bf16 *k, const bf16 *v, const float *lse, const float *delta,
                          int ldq, int ldk, int T, int NH, int NKV, float scale) {
    constexpr int LD = HD + 8, SLD = TILE + 8, NT = TILE / 8, DT = HD / 8, KS = HD / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sK = (bf16 *)smem_raw, *sV = sK + TILE * LD, *sQ = sV + TILE * LD, *sO = sQ + TILE * LD;
    bf16 *sS = sO + TILE * LD; /* dS^T [key][query] */
    float *sL = (float *)(sS + TILE * SLD), *sD = sL + TILE;
    int kb = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, G = NH / NKV, ldo = NH * HD;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
    int n_qb = (T + TILE - 1) / TILE;
    int kj[2] = {kb * TILE + warp * 16 + g, kb * TILE + warp * 16 + g + 8};
    load_tile<HD>(sK, k + (size_t)b * T * ldk + (size_t)kvh * HD, ldk, kb * TILE, T);
    load_tile<HD>(sV, v + (size_t)b * T * ldk + (size_t)kvh * HD, ldk, kb * TILE, T);

    float dk_acc[DT][4], dv_acc[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk_acc[i][e] = dv_acc[i][e] = 0.0f;

    for (int h = kvh * G; h < (kvh + 1) * G; h++) {
        const float *lse_h = lse + ((size_t)b * NH + h) * T,
                    *delta_h = delta + ((size_t)b * NH + h) * T;
        for (int qb = kb; qb < n_qb; qb++) {
            __syncthreads(); /* the previous query block's tiles and dS are used up */
            load_tile<HD>(sQ, q + (size_t)b * T * ldq + (size_t)h * HD, ldq, qb * TILE, T);
            load_tile<HD>(sO, dout + (size_t)b * T * ldo + (size_t)h * HD, ldo, qb * TILE, T);
            for (int i = threadIdx.x; i < TILE; i += FLASH_THREADS) {
                int t = qb * TILE + i;
                sL[i] = t < T ? lse_h[t] : INFINITY; /* rows past T: p = 0 */
                sD[i] = t < T ? delta_h[t] : 0.0f;
            }
            __syncthreads();
            /* S^T = K . Q^T and dP^T = V . dO^T for this warp's 16 keys and 64 queries */
            float st[NT][4], dpt[NT][4];
#pragma unroll
            for (int i = 0; i < NT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                uint32_t kf[4], vf[4];
                a_fragment<HD>(kf, sK, warp * 16, ks, lane);
                a_fragment<HD>(vf, sV, warp * 16, ks, lane);
#pragma unroll
                for (int nt2 = 0; nt2 < NT / 2; nt2++) {
                    uint32_t qf[4], of[4];
                    b_fragment_rows<HD>(qf, sQ, nt2 * 16, ks, lane, LD);
                    b_fragment_rows<HD>(of, sO, nt2 * 16, ks, lane, LD);
                    mma_bf16(st[2 * nt2], kf, qf[0], qf[1]);
                    mma_bf16(st[2 * nt2 + 1], kf, qf[2], qf[3]);
                    mma_bf16(dpt[2 * nt2], vf, of[0], of[1]);
                    mma_bf16(dpt[2 * nt2 + 1], vf, of[2], of[3]);
                }
            }
            /* P^T from the saved log-sum-exp (0 where the query may not see the key), then
             * dS^T = P^T * (dP^T - delta) */
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int qi = nt * 8 + tig * 2 + (e & 1), t = qb * TILE + qi;
                    float p = t >= kj[e / 2] ? __expf(st[nt][e] * scale - sL[qi]) : 0.0f;
                    st[nt][e] = p;
                    dpt[nt][e] = p * (dpt[nt][e] - sD[qi]);
                }
                /* dV += P^T . dO and dK += dS^T . Q (scaled at the end) */
#pragma unroll
            for (int kk = 0; kk < NT / 2; kk++) {
                uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]),
                                  pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                                  pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                  pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
                uint32_t da[4] = {pack_bf16(dpt[2 * kk][0], dpt[2 * kk][1]),
                                  pack_bf16(dpt[2 * kk][2], dpt[2 * kk][3]),
                                  pack_bf16(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                  pack_bf16(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
                for (int dt2 = 0; dt2 < DT / 2; dt2++) {
                    uint32_t of[4], qf[4];
                    b_fragment_cols(of, sO, kk * 16, dt2 * 16, lane, LD);
                    b_fragment_cols(qf, sQ, kk * 16, dt2 * 16, lane, LD);
                    mma_bf16(dv_acc[2 * dt2], pa, of[0], of[1]);
                    mma_bf16(dv_acc[2 * dt2 + 1], pa, of[2], of[3]);
                    mma_bf16(dk_acc[2 * dt2], da, qf[0], qf[1]);
                    mma_bf16(dk_acc[2 * dt2 + 1], da, qf[2], qf[3]);
                }
            }
            /* dS^T to shared memory, for dQ = dS . K over all 64 keys */
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int r = 0; r < 2; r++)
                    *(uint32_t *)(sS + (warp * 16 + g + 8 * r) * SLD + nt * 8 + tig * 2) =
                        pack_bf16(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
            __syncthreads();
            /* dQ for this warp's 16 queries: A = dS (query x key) read transposed from dS^T, B = K
             * (key x d); added into the f32 accumulator */
            int qrow[2] = {qb * TILE + warp * 16 + g, qb * TILE + warp * 16 + g + 8};
#pragma unroll
            for (int dt2 = 0; dt2 < DT / 2; dt2++) {
                float acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
                for (int kk = 0; kk < NT / 2; kk++) {
                    uint32_t sa[4], kf[4];
                    ldmatrix_x4_trans(sa, sS + (kk * 16 + lane % 8 + (lane / 16) * 8) * SLD +
                                              warp * 16 + ((lane / 8) % 2) * 8);
                    b_fragment_cols(kf, sK, kk * 16, dt2 * 16, lane, LD);
                    mma_bf16(acc[0], sa, kf[0], kf[1]);
                    mma_bf16(acc[1], sa, kf[2], kf[3]);
                }
#pragma unroll
                for (int half = 0; half < 2; half++)
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        if (qrow[r] >= T) continue;
                        float *dst = dq_accum + ((size_t)b * T + qrow[r]) * (size_t)ldo +
                                     (size_t)h * HD + dt2 * 16 + half * 8 + tig * 2;
                        atomicAdd(dst, acc[half][2 * r] * scale);
                        atomicAdd(dst + 1, acc[half][2 * r + 1] * scale);
                    }
            }
        }
    }
    /* this block's keys: dK (scaled) and dV */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (kj[r] >= T) continue;
        size_t at = ((size_t)b * T + kj[r]) * ldk + (size_t)kvh * HD;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            *(uint32_t *)(dk + at + dt * 8 + tig * 2) =
                pack_bf16(dk_acc[dt][2 * r] * scale, dk_acc[dt][2 * r + 1] * scale);
            *(uint32_t *)(dv + at + dt * 8 + tig * 2) =
                pack_bf16(dv_acc[dt][2 * r], dv_acc[dt][2 * r + 1]);
        }
    }
}

/* dq (bf16, [rows, ldq]) from the f32 accumulator [rows, NH*hd] */
__global__ void dq_convert_kernel(bf16 *dq, const float *acc, size_t rows, int ldq, int width) {
    size_t n = rows * (size_t)width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dq[(i / width) * ldq + i % width] = __float2bfloat16_rn(acc[i]);
}

/* =============================================================================================
 * dispatch */

static size_t flash_forward_smem(int hd) {
    return (size_t)3 * TILE * (hd + 8) * sizeof(bf16);
}

static size_t flash_backward_smem(int hd) {
    return (size_t)4 * TILE * (hd + 8) * sizeof(bf16) + (size_t)TILE * (TILE + 8) * sizeof(bf16) +
           2 * TILE * sizeof(float);
}

/* The flash kernels need a head size of 64 or 128, 16-byte aligned rows and heads, and are not
 * turned off (LORAPS_CUDA_ATTENTION=plain, for comparisons). */
static int use_flash(const void *q, const void *k, const void *v, int ldq, int ldk, int hd) {
    const char *mode = getenv("LORAPS_CUDA_ATTENTION");
    if (mode && !strcmp(mode, "plain")) return 0;
    return (hd == 64 || hd == 128) && ldq % 8 == 0 && ldk % 8 == 0 && (uintptr_t)q % 16 == 0 &&
           (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0;
}

template <typename K> static void allow_smem(const ops_ctx *c, K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        cuda_note(
            c,
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
            "flash attention's shared memory");
}

void cuda_attention_forward(ops_ctx *c, act *out, float *state, const act *q, const act *k,
                            const act *v, int ldq, int ldk, int B, int T, int NH, int NKV, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    cudaStream_t s = stream_of(c);
    if (use_flash(q, k, v, ldq, ldk, hd)) {
        dim3 grid((T + TILE - 1) / TILE, NH, B);
        size_t smem = flash_forward_smem(hd);
        if (hd == 64) {
            allow_smem(c, flash_forward_kernel<64>, smem);
            flash_forward_kernel<64><<<grid, FLASH_THREADS, smem, s>>>(
                AS(out), state, CAS(q), CAS(k), CAS(v), ldq, ldk, T, NH, NKV, scale);
        } else {
            allow_smem(c, flash_forward_kernel<128>, smem);
            flash_forward_kernel<128><<<grid, FLASH_THREADS, smem, s>>>(
                AS(out), state, CAS(q), CAS(k), CAS(v), ldq, ldk, T, NH, NKV, scale);
        }
        cuda_check_launch(c, "flash attention forward");
        return;
    }
    size_t smem = (size_t)T * sizeof(float);
    if (smem > 48 * 1024) allow_smem(c, plain_forward_kernel, smem);
    plain_forward_kernel<<<dim3(T, NH, B), PLAIN_THREADS, smem, s>>>(
        AS(out), state, CAS(q), CAS(k), CAS(v), ldq, ldk, T, 0, NH, NKV, hd, scale);
    cuda_check_launch(c, "attention forward");
}

void cuda_attention_backward(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout, const act *out,
                             const act *q, const act *k, const act *v, const float *state, int ldq,
                             int ldk, int B, int T, int NH, int NKV, int hd) {
    cuda_ctx *x = cx(c);
    float scale = 1.0f / sqrtf((float)hd);
    cudaStream_t s = x->stream;
    int BT = B * T;
    attention_delta_kernel<<<blocks_for((size_t)BT * NH * 32, 256), 256, 0, s>>>(
        x->delta, CAS(dout), CAS(out), BT, T, NH, hd);
    cuda_check_launch(c, "attention delta");
    if (use_flash(q, k, v, ldq, ldk, hd) && (uintptr_t)dout % 16 == 0) {
        size_t width = (size_t)NH * hd;
        cuda_note(c, cudaMemsetAsync(x->dq_accum, 0, (size_t)BT * width * sizeof(float), s),
                  "zeroing dq");
        dim3 grid((T + TILE - 1) / TILE, NKV, B);
        size_t smem = flash_backward_smem(hd);
        if (hd == 64) {
            allow_smem(c, flash_backward_kernel<64>, smem);
            flash_backward_kernel<64><<<grid, FLASH_THREADS, smem, s>>>(
                x->dq_accum, AS(dk), AS(dv), CAS(dout), CAS(q), CAS(k), CAS(v), state, x->delta,
                ldq, ldk, T, NH, NKV, scale);
        } else {
            allow_smem(c, flash_backward_kernel<128>, smem);
            flash_backward_kernel<128><<<grid, FLASH_THREADS, smem, s>>>(
                x->dq_accum, AS(dk), AS(dv), CAS(dout), CAS(q), CAS(k), CAS(v), state, x->delta,
                ldq, ldk, T, NH, NKV, scale);
        }
        cuda_check_launch(c, "flash attention backward");
        dq_convert_kernel<<<blocks_for((size_t)BT * width, 256), 256, 0, s>>>(
            AS(dq), x->dq_accum, (size_t)BT, ldq, (int)width);
        cuda_check_launch(c, "dq");
        return;
    }
    size_t smem = (size_t)T * sizeof(float);
    if (smem > 48 * 1024) allow_smem(c, plain_backward_dq_kernel, smem);
    plain_backward_dq_kernel<<<dim3(T, NH, B), PLAIN_THREADS, smem, s>>>(
        AS(dq), CAS(dout), CAS(q), CAS(k), CAS(v), state, x->delta, ldq, ldk, T, NH, NKV, hd,
        scale);
    cuda_check_launch(c, "attention backward (dq)");
    int threads = hd <= 32 ? 32 : hd <= 64 ? 64 : hd <= 128 ? 128 : 256;
    if (threads > PLAIN_THREADS) threads = PLAIN_THREADS; /* the reductions' scratch */
    if (hd > PLAIN_THREADS) {
        cuda_note(c, cudaErrorInvalidValue, "attention backward: head size over 128 needs 64/128");
        return;
    }
    plain_backward_dkv_kernel<<<dim3(T, NKV, B), threads, 0, s>>>(AS(dk), AS(dv), CAS(dout), CAS(q),
                                                                  CAS(k), CAS(v), state, x->delta,
                                                                  ldq, ldk, T, NH, NKV, hd, scale);
    cuda_check_launch(c, "attention backward (dk, dv)");
}

void cuda_attention_cached(ops_ctx *c, act *out, const act *q, int ldq, const act *k, const act *v,
                           int ldk, int n, int past, int NH, int NKV, int hd) {
    size_t smem = (size_t)(past + n) * sizeof(float);
    if (smem > 48 * 1024) allow_smem(c, plain_forward_kernel, smem);
    plain_forward_kernel<<<dim3(n, NH, 1), PLAIN_THREADS, smem, stream_of(c)>>>(
        AS(out), NULL, CAS(q), CAS(k), CAS(v), ldq, ldk, n, past, NH, NKV, hd,
        1.0f / sqrtf((float)hd));
    cuda_check_launch(c, "attention with a KV cache");
}
