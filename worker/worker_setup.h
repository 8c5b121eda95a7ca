/* The worker's job, from the first Welcome: the job's settings, the adapter (which must be the
 * servers' spec, name by name and shape by shape), the trainer, the data, the batch buffers;
 * then the effective configuration on stderr. */
#ifndef LORAPS_WORKER_SETUP_H
#define LORAPS_WORKER_SETUP_H

#include "error.h"
#include "loraps.pb-c.h"

#include <stdint.h>

typedef struct worker worker;

int worker_setup_from_welcome(worker *w, const Loraps__Welcome *wel, uint64_t job_id, lp_err *err);
/* Frees what the set-up made. */
void worker_setup_free(worker *w);

#endif
