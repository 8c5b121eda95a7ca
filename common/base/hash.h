/* Non-cryptographic hashes. hash_xxh3 (xxHash's XXH3-64) makes every fingerprint: of base-model
 * files, of the data, of the job. hash64_fnv is the word-serial FNV-1a variant used before it,
 * kept only to verify checkpoints written with it and as the benchmarks' baseline. (Checkpoint
 * files themselves are hashed with SHA-256: formats/checkpoint.c.) */
#ifndef LORAPS_HASH_H
#define LORAPS_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-64 of data with seed. Calls chain through the seed: h = hash_xxh3(h, part, n) for each
 * part. hash_xxh3(0, file, size) of a whole file is what `xxhsum -H3 FILE` prints. */
uint64_t hash_xxh3(uint64_t seed, const void *data, size_t len);

/* The pre-XXH3 hash (FNV-1a over 8-byte words, then bytes), chained the same way from
 * HASH64_FNV_INIT. Hashing in parts gives the hash of the whole only for parts that are
 * multiples of 8 bytes. */
#define HASH64_FNV_INIT 0xcbf29ce484222325ull
uint64_t hash64_fnv(uint64_t h, const void *data, size_t len);

#endif
