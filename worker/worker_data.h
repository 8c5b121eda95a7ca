/* Where a worker's token sequences come from: a data file (--data; the job says how to cut it
 * into sequences, so every rank agrees) or, without one, the embedded token-level demo task.
 * Sequence number i is a pure function of the data and i, so a global batch split over N workers
 * covers exactly the sequences one worker would see. */
#ifndef LORAPS_WORKER_DATA_H
#define LORAPS_WORKER_DATA_H

#include "error.h"
#include "job.h"
#include "model.h"
#include "val_pass.h"

#include <stdint.h>

typedef struct worker_data worker_data;

typedef struct worker_data_paths {
    const char *data;      /* NULL: the demo task */
    const char *val_file;  /* a separate validation file (NULL: the job's val_fraction) */
    const char *tokenizer; /* a tokenizer.json or a model folder (NULL for .bin data) */
} worker_data_paths;

int worker_data_open(worker_data **out, const job *j, int vocab_size, const worker_data_paths *p,
                     lp_err *err);
/* Training sequences [first, first + n) of T tokens: inputs and targets of n*T each (target
 * -1 = ignored). */
int worker_data_batch(worker_data *d, uint64_t first, int n, int T, int *inputs, int *targets,
                      lp_err *err);
/* This rank's share of the validation pass (see val_pass.h). */
int worker_data_validate(worker_data *d, model_trainer *t, int B, int T, int rank, int n_ranks,
                         int *inputs, int *targets, val_result *out, lp_err *err);
const char *worker_data_name(const worker_data *d);
/* data_source_id: what the server checks every rank agrees on. */
uint64_t worker_data_id(const worker_data *d);
void worker_data_free(worker_data *d);

#endif
