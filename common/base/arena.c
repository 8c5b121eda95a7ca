#include "arena.h"

float *arena_carve(arena_carver *c, size_t n) {
    if (n == 0) return NULL; /* an unused buffer must not alias the next one */
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(size_t)15; /* keep every buffer 64-byte aligned */
    return p;
}
