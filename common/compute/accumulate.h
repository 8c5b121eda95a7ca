/* Weighted sums of tensors in the wire's float formats (f32, bf16, f16), read straight from where
 * they lie (received frames, possibly cut into several segments) and converted, weighted and
 * added in one pass: the parameter server's aggregation kernel.
 *
 * The arithmetic is fixed so a sum is the same bits however it is scheduled: each weighted term
 * w * x is rounded to f32, then the terms are added left to right (no fused multiply-add: ISO C
 * mode contracts nothing). A weight of 1 on f32 data is exact, so an f32 partial sum passes
 * through unchanged. */
#ifndef LORAPS_ACCUMULATE_H
#define LORAPS_ACCUMULATE_H

#include "dtype.h"

#include <stddef.h>

/* Elements [off, off + n) of a tensor, at data. */
typedef struct acc_seg {
    const void *data;
    size_t off, n;
} acc_seg;

/* A tensor of `n` elements held in segments that cover [0, n) in order, all of one dtype
 * (DT_F32, DT_BF16 or DT_F16), weighted by `weight`. */
typedef struct acc_src {
    const acc_seg *seg;
    int n_seg;
    dtype type;
    float weight;
} acc_src;

/* dst[j] = ((w0 s0[j] + w1 s1[j]) + w2 s2[j]) + ... for j < n, n_src >= 1. dst may be the data of
 * one of the sources (each block is read whole before it is written). */
void acc_sum(float *dst, const acc_src *src, int n_src, size_t n);

/* An f32 array as a source: one segment (the caller keeps seg alive while src is used). */
acc_src acc_f32(acc_seg *seg, const float *x, size_t n);

#endif
