/* The aggregation kernel: blocks small enough for L1, each source converted into a block buffer
 * and added, so every source and the destination stream through memory exactly once. */
#include "accumulate.h"

#include <stdint.h>
#include <string.h>

#define BLOCK 1024

acc_src acc_f32(acc_seg *seg, const float *x, size_t n) {
    *seg = (acc_seg){x, 0, n};
    return (acc_src){seg, 1, DT_F32, 1.0f};
}

/* Where a source stands: its segment holding element `at`. */
typedef struct cursor {
    const acc_src *src;
    int seg;
} cursor;

static size_t cursor_room(cursor *c, size_t at) {
    while (c->seg + 1 < c->src->n_seg && at >= c->src->seg[c->seg].off + c->src->seg[c->seg].n)
        c->seg++;
    const acc_seg *s = &c->src->seg[c->seg];
    return s->off + s->n - at;
}

static void load_bf16(const unsigned char *p, float *x, size_t len) {
    uint16_t h[BLOCK];
    memcpy(h, p, len * 2);
    for (size_t i = 0; i < len; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        memcpy(&x[i], &u, 4);
    }
}

static void load_f16(const unsigned char *p, float *x, size_t len) {
#ifdef __FLT16_MANT_DIG__
    _Float16 h[BLOCK];
    memcpy(h, p, len * 2);
    for (size_t i = 0; i < len; i++) x[i] = (float)h[i];
#else
    uint16_t h[BLOCK];
    memcpy(h, p, len * 2);
    for (size_t i = 0; i < len; i++) x[i] = f16_to_f32(h[i]);
#endif
}

/* len elements of the source from element `at` (all in its current segment) into x, as f32. */
static void load(const cursor *c, size_t at, float *x, size_t len) {
    const acc_seg *s = &c->src->seg[c->seg];
    size_t esz = dtype_size(c->src->type);
    const unsigned char *p = (const unsigned char *)s->data + (at - s->off) * esz;
    if (c->src->type == DT_F32)
        memcpy(x, p, len * 4);
    else if (c->src->type == DT_BF16)
        load_bf16(p, x, len);
    else
        load_f16(p, x, len);
}

static void scale_into(float *restrict acc, const float *restrict x, float w, size_t len) {
    if (w == 1.0f)
        memcpy(acc, x, len * 4);
    else
        for (size_t i = 0; i < len; i++) acc[i] = w * x[i];
}

static void add_scaled(float *restrict acc, const float *restrict x, float w, size_t len) {
    if (w == 1.0f)
        for (size_t i = 0; i < len; i++) acc[i] += x[i];
    else
        for (size_t i = 0; i < len; i++) acc[i] += w * x[i];
}

/* Element loads that compile to vector loads and conversions (memcpy: no alignment assumed). */
static inline float ld_f32(const unsigned char *p, size_t i) {
    float x;
    memcpy(&x, p + 4 * i, 4);
    return x;
}

static inline float ld_bf16(const unsigned char *p, size_t i) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static inline float ld_f16(const unsigned char *p, size_t i) {
#ifdef __FLT16_MANT_DIG__
    _Float16 h;
    memcpy(&h, p + 2 * i, 2);
    return (float)h;
#else
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return f16_to_f32(h);
#endif
}

/* dst[i] = wa a[i] + wb b[i] in one loop, for each pair of dtypes; _in: a is dst itself (an
 * f32 partial sum taking the next term in place). Distinct pointers are restrict, so the loops
 * vectorise without run-time overlap checks. */
#define PAIR(NA, LA, NB, LB)                                                                       \
    static void pair_##NA##_##NB(float *restrict dst, const unsigned char *restrict a, float wa,   \
                                 const unsigned char *restrict b, float wb, size_t n) {            \
        for (size_t i = 0; i < n; i++) {                                                           \
            float x = wa * LA(a, i), y = wb * LB(b, i);                                            \
            dst[i] = x + y;                                                                        \
        }                                                                                          \
    }
#define PAIR_IN(NB, LB)                                                                            \
    static void pair_in_##NB(float *restrict dst, float wa, const unsigned char *restrict b,       \
                             float wb, size_t n) {                                                 \
        for (size_t i = 0; i < n; i++) {                                                           \
            float x = wa * dst[i], y = wb * LB(b, i);                                              \
            dst[i] = x + y;                                                                        \
        }                                                                                          \
    }
PAIR(f32, ld_f32, f32, ld_f32)
PAIR(f32, ld_f32, bf16, ld_bf16)
PAIR(f32, ld_f32, f16, ld_f16)
PAIR(bf16, ld_bf16, bf16, ld_bf16)
PAIR(f16, ld_f16, f16, ld_f16)
PAIR_IN(f32, ld_f32)
PAIR_IN(bf16, ld_bf16)
PAIR_IN(f16, ld_f16)

typedef void (*pair_fn)(float *, const unsigned char *, float, const unsigned char *, float,
                        size_t);
typedef void (*pair_in_fn)(float *, float, const unsigned char *, float, size_t);

/* The loop for dtypes (ta, tb), swapping the operands if only the other order has one (the sum of
 * two rounded products does not depend on their order); NULL: none. */
static pair_fn pair_for(dtype ta, dtype tb, int *swap) {
    *swap = 0;
    for (int k = 0; k < 2; k++, *swap = 1) {
        dtype x = k ? tb : ta, y = k ? ta : tb;
        if (x == DT_F32 && y == DT_F32) return pair_f32_f32;
        if (x == DT_F32 && y == DT_BF16) return pair_f32_bf16;
        if (x == DT_F32 && y == DT_F16) return pair_f32_f16;
        if (x == DT_BF16 && y == DT_BF16) return pair_bf16_bf16;
        if (x == DT_F16 && y == DT_F16) return pair_f16_f16;
    }
    return NULL;
}

static pair_in_fn pair_in_for(dtype tb) {
    return tb == DT_F32 ? pair_in_f32 : tb == DT_BF16 ? pair_in_bf16 : pair_in_f16;
}

static const unsigned char *data_at(const cursor *c, size_t at) {
    const acc_seg *s = &c->src->seg[c->seg];
    return (const unsigned char *)s->data + (at - s->off) * dtype_size(c->src->type);
}

/* Two sources straight into dst, in place when dst is one of them (an f32 sum). */
static void sum_pair(float *dst, const cursor *cur, size_t at, size_t len) {
    const unsigned char *p[2] = {data_at(&cur[0], at), data_at(&cur[1], at)};
    const acc_src *a = cur[0].src, *b = cur[1].src;
    for (int k = 0; k < 2; k++) {
        const acc_src *me = k ? b : a, *other = k ? a : b;
        if (p[k] == (const unsigned char *)(dst + at) && me->type == DT_F32) {
            pair_in_for(other->type)(dst + at, me->weight, p[1 - k], other->weight, len);
            return;
        }
    }
    int swap;
    pair_fn f = pair_for(a->type, b->type, &swap);
    if (swap)
        f(dst + at, p[1], b->weight, p[0], a->weight, len);
    else
        f(dst + at, p[0], a->weight, p[1], b->weight, len);
}

void acc_sum(float *dst, const acc_src *src, int n_src, size_t n) {
    cursor cur[n_src];
    for (int s = 0; s < n_src; s++) cur[s] = (cursor){&src[s], 0};
    float acc[BLOCK], x[BLOCK];
    for (size_t at = 0; at < n;) {
        size_t len = n - at;
        for (int s = 0; s < n_src; s++) {
            size_t room = cursor_room(&cur[s], at);
            if (room < len) len = room;
        }
        if (n_src == 2 && pair_for(src[0].type, src[1].type, &(int){0})) {
            sum_pair(dst, cur, at, len);
            at += len;
            continue;
        }
        if (len > BLOCK) len = BLOCK;
        for (int s = 0; s < n_src; s++) {
            load(&cur[s], at, x, len);
            if (s == 0)
                scale_into(acc, x, src[s].weight, len);
            else
                add_scaled(acc, x, src[s].weight, len);
        }
        memcpy(dst + at, acc, len * 4);
        at += len;
    }
}
