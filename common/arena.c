#include "arena.h"

float *arena_carve(arena_carver *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(size_t)15; /* keep every buffer 64-byte aligned */
    return p;
}
