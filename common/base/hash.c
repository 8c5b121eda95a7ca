#include "hash.h"

/* Header-only xxHash: inlined and vectorised for the build's target (AVX2 with -march=native). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <string.h>

uint64_t hash_xxh3(uint64_t seed, const void *data, size_t len) {
    return XXH3_64bits_withSeed(data, len, seed);
}

uint64_t hash64_fnv(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (size_t i = words * 8; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
