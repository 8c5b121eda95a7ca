#include "synthetic_weights.h"

#include "hash.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

typedef struct synthetic {
    uint64_t seed;
    float std;
    dtype stored;
    void **made; /* every tensor handed out, freed with the source */
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
static float fill_value(const char *name, rng *r, float std) {
    int is_bias = strstr(name, "bias") != NULL;
    int is_norm = strstr(name, "norm") != NULL || strstr(name, "ln_") != NULL;
    if (is_bias) return 0.0f;
    if (is_norm) return 1.0f;
    return std * rng_normal(r);
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
    rng r;
    rng_seed(&r, rng_mix(s->seed, hash64(HASH64_INIT, name, strlen(name))));
    for (size_t i = 0; i < n; i++) {
        float v = fill_value(name, &r, s->std);
        if (s->stored == DT_BF16)
            ((uint16_t *)data)[i] = f32_to_bf16(v);
        else
            ((float *)data)[i] = v;
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
    free(s);
}

weight_source synthetic_weights(uint64_t seed, float std, dtype stored) {
    synthetic *s = calloc(1, sizeof *s);
    s->seed = seed;
    s->std = std;
    s->stored = stored == DT_BF16 ? DT_BF16 : DT_F32;
    return (weight_source){.ctx = s, .find = make, .release = release};
}
