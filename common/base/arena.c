#include "arena.h"

void *arena_carve(arena_carver *c, size_t bytes) {
    if (bytes == 0) return NULL; /* an unused buffer must not alias the next one */
    void *p = c->base ? c->base + c->used : NULL;
    c->used += (bytes + 255) & ~(size_t)255;
    return p;
}
