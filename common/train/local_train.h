/* Training in one process, no servers: the reference loop that the distributed job must match,
 * and the engine of `loraps train`. Data comes from a data source (a file, or the embedded demo
 * task), sequence i of step s exactly as the workers number them. */
#ifndef LORAPS_LOCAL_TRAIN_H
#define LORAPS_LOCAL_TRAIN_H

#include "dataset.h"
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
    /* a validation pass (every eval_every steps, at the adapter the step started from; and at
     * the end): val_step = the updates it saw, -1 if this step had none */
    int val_step;
    double val_loss;
    long val_tokens;
} train_progress;

typedef void (*train_progress_fn)(const train_progress *p, void *ctx);

/* Trains the adapter (already built and initialised) for the job's max_steps on the demo task. */
int local_train(const job *j, const model *m, lora_adapter *a, train_progress_fn on_step, void *ctx,
                lp_err *err);
/* The same on any data source. With eval_every > 0 the source needs validation sequences. After
 * the last step, on_step is called once more with step = total_steps + 1 and only the final
 * validation pass (when eval_every > 0). */
int local_train_source(const job *j, const model *m, lora_adapter *a, data_source *src,
                       train_progress_fn on_step, void *ctx, lp_err *err);

#endif
