/* The embedded demo task: sequences that follow a fixed random permutation over a small
 * alphabet of token ids. A random base model cannot predict them; a LoRA adapter learns to.
 * Sequence number i is a pure function of (seed, i), so any split of a global batch across
 * workers sees exactly the same tokens as one worker would. */
#ifndef LORAPS_DEMO_TASK_H
#define LORAPS_DEMO_TASK_H

#include <stdint.h>

typedef struct demo_task {
    uint64_t seed;
    int vocab_size;
    int alphabet;  /* how many token ids the task uses */
    int ids[256];  /* the alphabet's token ids */
    int next[256]; /* the permutation: after ids[k] comes ids[next[k]] */
} demo_task;

void demo_task_init(demo_task *t, uint64_t seed, int vocab_size);
/* Writes sequence number `index`: inputs [T] and targets [T] (targets = inputs shifted by one;
 * the first target is masked with -1 half of the time, to exercise the ignore index). */
void demo_task_sequence(const demo_task *t, uint64_t index, int T, int *inputs, int *targets);
/* Sequences [first, first + n) into inputs/targets of n*T each. */
void demo_task_batch(const demo_task *t, uint64_t first, int n, int T, int *inputs, int *targets);

#endif
