#include "synthetic_weights.h"

#include "hash.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

/* Tensors up to POOL values are drawn whole; larger ones (an 8B shape's) are tiled from a pool of
 * POOL random values at a name-dependent offset, so building them costs a copy, not a draw. */
#define POOL (1u << 22)

typedef struct synthetic {
    uint64_t seed;
    float std;
    dtype stored;
    unsigned char *pool; /* POOL values of the std in the stored dtype, drawn on first need */
    void **made;         /* every tensor handed out, freed with the source */
    int n_made, cap_made;
} synthetic;

static int keep(synthetic *s, void *p) {
    if (s->n_made == s->cap_made) {
        int cap = s->cap_made ? 2 * s->cap_made : 64;
        void **grown = realloc(s->made, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        s->made = grown;
        s->cap_made = cap;
    }
    s->made[s->n_made++] = p;
    return 0;
}

/* What a tensor of this name holds: a norm's weight is 1, a bias 0, anything else random. */
typedef enum fill_kind { FILL_RANDOM, FILL_ZERO, FILL_ONE } fill_kind;

static fill_kind kind_of(const char *name) {
    if (strstr(name, "bias")) return FILL_ZERO;
    if (strstr(name, "norm") || strstr(name, "ln_")) return FILL_ONE;
    return FILL_RANDOM;
}

static void store(synthetic *s, void *data, size_t i, float v) {
    if (s->stored == DT_BF16)
        ((uint16_t *)data)[i] = f32_to_bf16(v);
    else
        ((float *)data)[i] = v;
}

static int fill_tiled(synthetic *s, void *data, size_t n, uint64_t name_hash) {
    size_t esize = dtype_size(s->stored);
    if (!s->pool) {
        if (!(s->pool = malloc(POOL * esize))) return -1;
        rng r;
        rng_seed(&r, s->seed);
        for (size_t i = 0; i < POOL; i++) store(s, s->pool, i, s->std * rng_normal(&r));
    }
    size_t at = (size_t)(name_hash % POOL);
    for (size_t done = 0; done < n;) { /* runs of the pool from `at`, then from its start */
        size_t run = POOL - at < n - done ? POOL - at : n - done;
        memcpy((unsigned char *)data + done * esize, s->pool + at * esize, run * esize);
        done += run;
        at = 0;
    }
    return 0;
}

static int make(void *ctx, const char *prefix, const char *name, int64_t rows, int64_t cols,
                weight_view *out) {
    (void)prefix;
    synthetic *s = ctx;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    size_t esize = dtype_size(s->stored);
    void *data = malloc(n * esize);
    if (!data || keep(s, data) < 0) {
        free(data);
        return 1;
    }
    uint64_t name_hash = hash_xxh3(0, name, strlen(name));
    fill_kind kind = kind_of(name);
    if (kind == FILL_RANDOM && n > POOL) {
        if (fill_tiled(s, data, n, name_hash) < 0) return 1;
    } else {
        rng r;
        rng_seed(&r, rng_mix(s->seed, name_hash));
        for (size_t i = 0; i < n; i++)
            store(s, data, i,
                  kind == FILL_ZERO  ? 0.0f
                  : kind == FILL_ONE ? 1.0f
                                     : s->std * rng_normal(&r));
    }
    *out = (weight_view){.dtype = s->stored,
                         .ndim = cols ? 2 : 1,
                         .shape = {rows, cols},
                         .data = data,
                         .nbytes = n * esize};
    return 0;
}

static void release(void *ctx) {
    synthetic *s = ctx;
    for (int i = 0; i < s->n_made; i++) free(s->made[i]);
    free(s->made);
    free(s->pool);
    free(s);
}

weight_source synthetic_weights(uint64_t seed, float std, dtype stored) {
    synthetic *s = calloc(1, sizeof *s);
    s->seed = seed;
    s->std = std;
    s->stored = stored == DT_BF16 ? DT_BF16 : DT_F32;
    return (weight_source){.ctx = s, .find = make, .release = release, .unhashed = 1};
}
