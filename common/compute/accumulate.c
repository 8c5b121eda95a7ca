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

void acc_sum(float *dst, const acc_src *src, int n_src, size_t n) {
    cursor cur[n_src];
    for (int s = 0; s < n_src; s++) cur[s] = (cursor){&src[s], 0};
    float acc[BLOCK], x[BLOCK];
    for (size_t at = 0; at < n;) {
        size_t len = n - at < BLOCK ? n - at : BLOCK;
        for (int s = 0; s < n_src; s++) {
            size_t room = cursor_room(&cur[s], at);
            if (room < len) len = room;
        }
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
