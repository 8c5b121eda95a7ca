#include "local_train.h"

#include "adamw.h"
#include "dataset.h"
#include "ops.h"
#include "rng.h"
#include "train_step.h"
#include "val_pass.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int local_train(const job *j, const model *m, lora_adapter *a, train_progress_fn on_step, void *ctx,
                lp_err *err) {
    data_source src;
    data_source_open_demo(&src, j->seed, model_vocab_size(m));
    int rc = local_train_source(j, m, a, &src, on_step, ctx, err);
    data_source_close(&src);
    return rc;
}

int local_train_source(const job *j, const model *m, lora_adapter *a, data_source *src,
                       train_progress_fn on_step, void *ctx, lp_err *err) {
    int B = j->micro_batch, T = j->seq_len, steps = j->max_steps;
    if (steps <= 0) return lp_fail(err, "set max_steps");
    if (j->eval_every > 0 && !data_source_val_sequences(src))
        return lp_fail(err, "eval_every is set, but the data has no validation sequences (set "
                            "val_fraction or a validation file)");
    ops_set_threads(j->threads);
    model_trainer *t;
    if (model_trainer_new(&t, m, a, B, T, err) < 0) return -1;
    size_t n = (size_t)B * T * j->grad_accum;
    int *inputs = malloc(n * sizeof(int)), *targets = malloc(n * sizeof(int));
    float *mom = calloc(a->n_params, sizeof(float)), *vel = calloc(a->n_params, sizeof(float));
    if (!inputs || !targets || !mom || !vel) {
        free(inputs), free(targets), free(mom), free(vel);
        model_trainer_free(t);
        return lp_fail(err, "out of memory");
    }
    adamw_config opt;
    lr_schedule sched;
    job_adamw(j, &opt);
    job_schedule(j, steps, &sched);
    double start = now_seconds();
    int rc = 0;
    for (int step = 0; step <= steps && rc == 0; step++) {
        double t0 = now_seconds();
        train_progress p = {0};
        p.val_step = -1;
        /* Validation at the adapter this step starts from, as the workers do it. */
        if (j->eval_every > 0 && step % j->eval_every == 0) {
            val_result v;
            rc = val_pass(t, src, B, T, 0, 1, inputs, targets, &v, err);
            if (rc) break;
            p.val_step = step;
            p.val_loss = v.n_tokens ? v.loss_sum / (double)v.n_tokens : 0;
            p.val_tokens = (long)v.n_tokens;
        }
        if (step == steps) { /* the end: only the final validation pass */
            p.step = steps + 1, p.total_steps = steps;
            if (on_step && p.val_step >= 0) on_step(&p, ctx);
            break;
        }
        uint64_t first = (uint64_t)step * j->grad_accum * B;
        rc = data_source_batch(src, DS_TRAIN, first, j->grad_accum * B, T, inputs, targets, err);
        if (rc) break;
        train_batch batch = {.inputs = inputs,
                             .targets = targets,
                             .n_micro = j->grad_accum,
                             .first_seq = first,
                             .seed = j->seed};
        train_result r;
        if ((rc = train_step(t, a, &batch, &r, err)) != 0) break;
        double sq = r.grad_sum_sq;
        float clip = clip_factor(sq, j->max_grad_norm);
        if (clip != 1.0f)
            for (size_t i = 0; i < a->n_params; i++) a->grads[i] *= clip;
        float lr = lr_at(&sched, step);
        adamw_update(a->params, a->grads, mom, vel, a->n_params, lr, &opt, step + 1);
        if (on_step) {
            double t1 = now_seconds();
            p.step = step + 1, p.total_steps = steps;
            p.loss = r.loss_sum / (double)r.n_tokens;
            p.lr = lr, p.grad_norm = (float)sqrt(sq), p.tokens = (long)r.n_tokens;
            p.step_seconds = t1 - t0, p.elapsed_seconds = t1 - start;
            on_step(&p, ctx);
        }
    }
    free(inputs);
    free(targets);
    free(mom);
    free(vel);
    model_trainer_free(t);
    return rc;
}
