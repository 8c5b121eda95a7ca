/* What LayerNorm and RMSNorm share: one warp per row, sums reduced across the warp. */
#ifndef LORAPS_NORM_CUH
#define LORAPS_NORM_CUH

#include "elementwise.cuh"

#define NORM_ROWS_PER_BLOCK 8 /* warps of 32 threads */

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static inline unsigned norm_blocks(int N) {
    return (unsigned)((N + NORM_ROWS_PER_BLOCK - 1) / NORM_ROWS_PER_BLOCK);
}

#endif
