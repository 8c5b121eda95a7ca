/* The worker's training loop: join every shard, then step after step pull the adapter, compute
 * this rank's gradient (its share of the validation pass too, when one is due), push it, until
 * the servers say the job is done, a signal comes, or an error. */
#ifndef LORAPS_WORKER_LOOP_H
#define LORAPS_WORKER_LOOP_H

#include "error.h"

typedef struct worker worker;

/* 0 when the job ended (done, or stopped by a signal), -1 on an error (err says which). */
int worker_train(worker *w, lp_err *err);
/* The traffic and timing statistics (--stats FILE), as JSON. */
int worker_write_stats(const worker *w, lp_err *err);

#endif
