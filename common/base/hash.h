/* A fast 64-bit hash (FNV-1a over 8-byte words) for fingerprints of base models, not security. */
#ifndef LORAPS_HASH_H
#define LORAPS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH64_INIT 0xcbf29ce484222325ull

uint64_t hash64(uint64_t h, const void *data, size_t len);

#endif
