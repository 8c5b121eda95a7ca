#include "demo_task.h"

#include "rng.h"

#include <stddef.h>

void demo_task_init(demo_task *t, uint64_t seed, int vocab_size) {
    rng r;
    rng_seed(&r, rng_mix(seed, 0xde30));
    t->seed = seed;
    t->vocab_size = vocab_size;
    t->alphabet = vocab_size < 16 ? vocab_size : 16;
    /* Distinct token ids: a partial Fisher-Yates shuffle would need vocab_size memory, so draw
     * and reject duplicates (the alphabet is tiny). */
    for (int k = 0; k < t->alphabet; k++) {
        for (;;) {
            int id = (int)rng_below(&r, (uint32_t)vocab_size), dup = 0;
            for (int j = 0; j < k; j++) dup |= t->ids[j] == id;
            if (!dup) {
                t->ids[k] = id;
                break;
            }
        }
    }
    /* A random cyclic permutation, so every symbol has one fixed successor. */
    int order[256];
    for (int k = 0; k < t->alphabet; k++) order[k] = k;
    for (int k = t->alphabet - 1; k > 0; k--) {
        int j = (int)rng_below(&r, (uint32_t)(k + 1)), tmp = order[k];
        order[k] = order[j];
        order[j] = tmp;
    }
    for (int k = 0; k < t->alphabet; k++) t->next[order[k]] = order[(k + 1) % t->alphabet];
}

void demo_task_sequence(const demo_task *t, uint64_t index, int T, int *inputs, int *targets) {
    rng r;
    rng_seed(&r, rng_mix(t->seed, index));
    int k = (int)rng_below(&r, (uint32_t)t->alphabet);
    for (int i = 0; i <= T; i++) {
        /* One symbol in eight is noise, so the task is not a pure lookup. */
        int sym = rng_below(&r, 8) == 0 ? (int)rng_below(&r, (uint32_t)t->alphabet) : k;
        if (i < T) inputs[i] = t->ids[sym];
        if (i > 0) targets[i - 1] = t->ids[sym];
        k = t->next[sym];
    }
    if (rng_below(&r, 2) == 0) targets[0] = -1;
}

void demo_task_batch(const demo_task *t, uint64_t first, int n, int T, int *inputs, int *targets) {
    for (int i = 0; i < n; i++)
        demo_task_sequence(t, first + (uint64_t)i, T, inputs + (size_t)i * T,
                           targets + (size_t)i * T);
}
