/* One training step's gradient over this process's sequences: the one step that `loraps train`,
 * the worker and the benchmarks all run. The batch is n_micro micro-batches of the trainer's
 * B x T; every counted token (target >= 0) weighs 1 / (counted tokens of the batch), so
 * a->grads ends as the mean gradient over them, and a server that sums each worker's mean
 * weighted by its token count gets the mean over the union. Sequence i of the batch is global
 * sequence first_seq + i, and its LoRA dropout masks are a function of (seed, that index) alone:
 * however a job's sequences are split among micro-batches and workers, each sees the same masks. */
#ifndef LORAPS_TRAIN_STEP_H
#define LORAPS_TRAIN_STEP_H

#include "error.h"
#include "lora.h"
#include "model.h"

#include <stdint.h>

typedef struct train_batch {
    const int *inputs, *targets; /* n_micro * B * T tokens each, micro-batch after micro-batch */
    int n_micro;
    uint64_t first_seq; /* global index of the batch's first sequence */
    uint64_t seed;      /* the job's seed */
    /* optional: told as each layer's gradients are final, during the last micro-batch's
     * backward (model_trainer_stream_grads); NULL: a->grads complete when train_step returns */
    grads_ready_fn on_ready;
    void *ready_ctx;
} train_batch;

typedef struct train_result {
    double loss_sum;    /* cross-entropy summed over the counted tokens */
    uint64_t n_tokens;  /* counted tokens */
    double grad_sum_sq; /* sum of squares of the mean gradient (before any clipping) */
    double seconds;     /* wall time of forward and backward */
} train_result;

/* Sends a->params to where the trainer computes, zeroes the gradients, runs forward and backward
 * over every micro-batch and leaves the mean gradient in a->grads (a: the trainer's adapter).
 * Fails if no token of the batch counts. */
int train_step(model_trainer *t, lora_adapter *a, const train_batch *b, train_result *out,
               lp_err *err);

#endif
