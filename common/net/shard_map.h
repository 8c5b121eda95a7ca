/* Where each adapter tensor lives when S parameter-server shards share the adapter: balanced
 * bin-packing of bytes (largest tensor first, onto the least loaded shard, ties to the lower
 * shard), so every shard computes the same map from the spec. The map is explicit: it travels
 * in Welcome as a placement list, and a worker uses that list, never a hash of names. */
#ifndef LORAPS_SHARD_MAP_H
#define LORAPS_SHARD_MAP_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct shard_map {
    int n_tensors, n_shards;
    uint32_t *shard_of; /* [n_tensors] */
    size_t *load;       /* [n_shards]: bytes placed on each shard */
} shard_map;

/* Packs tensors of the given byte sizes onto n_shards shards. */
int shard_map_build(shard_map *m, const size_t *tensor_bytes, int n_tensors, int n_shards,
                    lp_err *err);
/* Takes an explicit placement (e.g. from Welcome); checks every entry is < n_shards. */
int shard_map_from_placement(shard_map *m, const uint32_t *placement, size_t n_tensors,
                             int n_shards, const size_t *tensor_bytes, lp_err *err);
/* The tensors of one shard, in increasing index order, into out (room for n_tensors);
 * returns how many. */
int shard_map_tensors(const shard_map *m, int shard, uint32_t *out);
/* The largest load divided by the mean load (1.0 is perfect balance). */
double shard_map_imbalance(const shard_map *m);
void shard_map_free(shard_map *m);

#endif
