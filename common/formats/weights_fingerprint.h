/* The fingerprint of a model folder's weights: every tensor's XXH3 (its bytes, seeded with its
 * name, dtype and shape), summed, so the same tensors give the same fingerprint however they are
 * split among shards or ordered in them, and whatever the files' __metadata__. Hashing reads
 * every byte (16 GB for an 8B model: over a second from the page cache, far more from disk), so
 * each file's sum is kept in DIR/.loraps-xxh3 under the file's size and modification time and
 * computed again only when either changes. A folder that cannot be written goes without it. */
#ifndef LORAPS_WEIGHTS_FINGERPRINT_H
#define LORAPS_WEIGHTS_FINGERPRINT_H

#include "error.h"
#include "hf_weights.h"

#include <stdint.h>

#define WEIGHTS_FP_CACHE ".loraps-xxh3"

typedef struct weights_fp_stats {
    int n_hashed, n_cached; /* files hashed now, files whose hash came from the cache */
} weights_fp_stats;

/* The fingerprint (never 0) of the opened weights of dir; use_cache 0 hashes every file and
 * leaves the cache alone (benchmarks). stats may be NULL. */
int weights_fingerprint(const hf_weights *w, const char *dir, int use_cache, uint64_t *out,
                        weights_fp_stats *stats, lp_err *err);

#endif
