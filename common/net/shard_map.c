#include "shard_map.h"

#include <stdlib.h>
#include <string.h>

typedef struct by_size {
    size_t bytes;
    int index;
} by_size;

static int cmp_by_size(const void *a, const void *b) {
    const by_size *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    return x->index - y->index; /* a total order: every shard sorts the same way */
}

static int alloc_map(shard_map *m, int n_tensors, int n_shards, lp_err *err) {
    memset(m, 0, sizeof *m);
    if (n_shards < 1) return lp_fail(err, "need at least one shard, got %d", n_shards);
    if (n_tensors < 0) return lp_fail(err, "negative tensor count");
    m->n_tensors = n_tensors;
    m->n_shards = n_shards;
    m->shard_of = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *m->shard_of);
    m->load = calloc((size_t)n_shards, sizeof *m->load);
    if (!m->shard_of || !m->load) {
        shard_map_free(m);
        return lp_fail(err, "out of memory");
    }
    return 0;
}

int shard_map_build(shard_map *m, const size_t *tensor_bytes, int n_tensors, int n_shards,
                    lp_err *err) {
    if (alloc_map(m, n_tensors, n_shards, err) < 0) return -1;
    by_size *order = malloc((n_tensors ? (size_t)n_tensors : 1) * sizeof *order);
    if (!order) {
        shard_map_free(m);
        return lp_fail(err, "out of memory");
    }
    for (int i = 0; i < n_tensors; i++) order[i] = (by_size){tensor_bytes[i], i};
    qsort(order, (size_t)n_tensors, sizeof *order, cmp_by_size);
    for (int i = 0; i < n_tensors; i++) {
        int best = 0;
        for (int s = 1; s < n_shards; s++)
            if (m->load[s] < m->load[best]) best = s;
        m->shard_of[order[i].index] = (uint32_t)best;
        m->load[best] += order[i].bytes;
    }
    free(order);
    return 0;
}

int shard_map_from_placement(shard_map *m, const uint32_t *placement, size_t n_tensors,
                             int n_shards, const size_t *tensor_bytes, lp_err *err) {
    if (n_tensors > (size_t)INT32_MAX) return lp_fail(err, "too many tensors");
    if (alloc_map(m, (int)n_tensors, n_shards, err) < 0) return -1;
    for (size_t i = 0; i < n_tensors; i++) {
        if (placement[i] >= (uint32_t)n_shards) {
            shard_map_free(m);
            return lp_fail(err, "tensor %zu placed on shard %u of %d", i, placement[i], n_shards);
        }
        m->shard_of[i] = placement[i];
        if (tensor_bytes) m->load[placement[i]] += tensor_bytes[i];
    }
    return 0;
}

int shard_map_tensors(const shard_map *m, int shard, uint32_t *out) {
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->shard_of[i] == (uint32_t)shard) out[n++] = (uint32_t)i;
    return n;
}

double shard_map_imbalance(const shard_map *m) {
    size_t total = 0, max = 0;
    for (int s = 0; s < m->n_shards; s++) {
        total += m->load[s];
        if (m->load[s] > max) max = m->load[s];
    }
    if (!total) return 1.0;
    return (double)max * m->n_shards / (double)total;
}

void shard_map_free(shard_map *m) {
    free(m->shard_of);
    free(m->load);
    m->shard_of = NULL;
    m->load = NULL;
}
