/* Training in one process, no servers: the reference loop that the distributed job must match,
 * and the engine of `loraps train`. Data comes from the embedded demo task. */
#ifndef LORAPS_LOCAL_TRAIN_H
#define LORAPS_LOCAL_TRAIN_H

#include "error.h"
#include "job.h"
#include "lora.h"
#include "model.h"

typedef struct train_progress {
    int step, total_steps; /* step counts from 1 */
    double loss;           /* mean over the step's counted tokens */
    float lr;
    float grad_norm; /* before clipping */
    long tokens;     /* counted tokens of this step */
    double step_seconds, elapsed_seconds;
} train_progress;

typedef void (*train_progress_fn)(const train_progress *p, void *ctx);

/* Trains the adapter (already built and initialised) for the job's max_steps. */
int local_train(const job *j, const model *m, lora_adapter *a, train_progress_fn on_step, void *ctx,
                lp_err *err);

#endif
