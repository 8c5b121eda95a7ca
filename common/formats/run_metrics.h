/* The metrics file of a run (OUT/metrics.jsonl): one JSON object per optimizer step, appended by
 * the first server shard: step, loss, tokens, step_ms, lr, compute_s, grad_norm, workers, time,
 * the bytes each worker has sent and received so far, and after a validation pass val_loss,
 * val_ppl, val_tokens and val_step. Read for `loraps report`: every line that parses is kept; a
 * line that does not (a run killed mid-write leaves its last line cut short) is listed by number
 * with the reason, and reading goes on. A resumed run's lines replace the earlier lines of the
 * steps it repeats, as TensorBoard replaces them. */
#ifndef LORAPS_RUN_METRICS_H
#define LORAPS_RUN_METRICS_H

#include "error.h"

#include <stdint.h>

#define RUN_METRICS_MAX_WORKER_BYTES 256 /* workers whose bytes are kept, by rank */

typedef struct run_step {
    uint64_t step;
    int line; /* 1-based line of the file */
    double loss;
    uint64_t tokens;
    double step_ms;
    double lr, compute_s, grad_norm, time; /* NAN when the line lacks them */
    int workers;                           /* -1 when absent */
    int has_val;
    double val_loss;
    uint64_t val_step, val_tokens;
    uint64_t bytes_sent, bytes_received; /* summed over the workers */
} run_step;

typedef struct run_worker_bytes {
    int rank;
    uint64_t sent, received;
} run_worker_bytes;

typedef struct run_bad_line {
    int line;
    char why[160];
} run_bad_line;

typedef struct run_metrics {
    run_step *steps; /* in step order */
    int n_steps;
    int n_lines; /* lines read (non-empty) */
    run_bad_line *bad;
    int n_bad;
    run_worker_bytes final_bytes[RUN_METRICS_MAX_WORKER_BYTES]; /* the last good line's */
    int n_final_bytes;
} run_metrics;

/* -1 only when the file cannot be read at all (or memory runs out); bad lines are in m->bad. */
int run_metrics_read(const char *path, run_metrics *m, lp_err *err);
void run_metrics_free(run_metrics *m);

#endif
