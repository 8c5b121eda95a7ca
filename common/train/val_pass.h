/* A validation pass: the summed loss of the current adapter on the validation sequences of a
 * data source, forward only (model_trainer_step with grad_scale 0: no gradient, no dropout).
 * A pass over N ranks splits the sequences into contiguous shares like a training batch, so the
 * token-weighted sum of the ranks' results is the loss of the whole pass. */
#ifndef LORAPS_VAL_PASS_H
#define LORAPS_VAL_PASS_H

#include "dataset.h"
#include "error.h"
#include "model.h"

#include <stdint.h>

typedef struct val_result {
    double loss_sum;
    uint64_t n_tokens;    /* counted (non-masked) tokens */
    uint64_t n_sequences; /* sequences this share covered */
} val_result;

/* Rank `rank` of n_ranks: sequences [*first, *first + *count) of a pass over n. */
void val_share(uint64_t n, int rank, int n_ranks, uint64_t *first, uint64_t *count);

/* The share of `rank` (of n_ranks) of the source's validation pass, in micro-batches of B
 * sequences of T tokens (inputs and targets: scratch of B*T each; the trainer's shape). */
int val_pass(model_trainer *t, data_source *src, int B, int T, int rank, int n_ranks, int *inputs,
             int *targets, val_result *out, lp_err *err);

#endif
