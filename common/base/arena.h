/* The activation arena: every buffer a trainer needs is a slice of one allocation made at
 * start-up, so the step loop never allocates. Sizing and handing out use the same code: a
 * carver with no base only counts. */
#ifndef LORAPS_ARENA_H
#define LORAPS_ARENA_H

#include <stddef.h>

typedef struct arena_carver {
    char *base;  /* NULL: count only */
    size_t used; /* bytes handed out so far */
} arena_carver;

/* The next `bytes` (256-byte aligned, for every device's vector loads); NULL while counting or
 * for 0 bytes. */
void *arena_carve(arena_carver *c, size_t bytes);

#endif
