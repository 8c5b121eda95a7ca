/* What the elementwise kernels share: 8 bf16 values moved as one 16-byte load or store, and the
 * test for whether a buffer allows it. Private to compute/cuda. */
#ifndef LORAPS_ELEMENTWISE_CUH
#define LORAPS_ELEMENTWISE_CUH

#include "cuda.cuh"

struct __align__(16) pack8 {
    bf16 v[8];
};

static __device__ __forceinline__ void load8(float *dst, const bf16 *src) {
    pack8 p = *(const pack8 *)src;
#pragma unroll
    for (int i = 0; i < 8; i++) dst[i] = __bfloat162float(p.v[i]);
}

static __device__ __forceinline__ void store8(bf16 *dst, const float *src) {
    pack8 p;
#pragma unroll
    for (int i = 0; i < 8; i++) p.v[i] = __float2bfloat16_rn(src[i]);
    *(pack8 *)dst = p;
}

/* 16-byte aligned and a whole number of packs: the kernels can move 8 values at a time. */
static inline int packs_ok(size_t n, const void *a, const void *b, const void *c, const void *d) {
    return n % 8 == 0 && (uintptr_t)a % 16 == 0 && (!b || (uintptr_t)b % 16 == 0) &&
           (!c || (uintptr_t)c % 16 == 0) && (!d || (uintptr_t)d % 16 == 0);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

#endif
