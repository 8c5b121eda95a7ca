/* AdamW as torch.optim.AdamW computes it, HF Trainer's learning-rate schedules, and
 * gradient clipping by global norm (split so that shards can each sum their own part). */
#ifndef LORAPS_ADAMW_H
#define LORAPS_ADAMW_H

#include "dtype.h"

#include <stddef.h>

typedef struct adamw_config {
    float beta1, beta2, eps, weight_decay;
} adamw_config;

typedef enum lr_kind { LR_CONSTANT, LR_LINEAR, LR_COSINE } lr_kind;

typedef struct lr_schedule {
    float lr;
    lr_kind kind;
    int warmup_steps;
    int total_steps;
} lr_schedule;

/* The learning rate of update number `step` (0-based), as HF's get_*_schedule_with_warmup. */
float lr_at(const lr_schedule *s, int step);

/* One AdamW update of n parameters; t is the 1-based update count (for bias correction). */
void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr,
                  const adamw_config *c, int t);

/* Sum of squares in double, the same bits whatever the number of threads. _scaled: of x[i] * scale
 * (each product rounded to f32 first, as if x had been scaled in place). */
double sum_of_squares(const float *x, size_t n);
double sum_of_squares_scaled(const float *x, float scale, size_t n);
/* adamw_update on the gradient grad_sum[i] * scale (then * clip, when clip != 1: rounded at each
 * multiplication, as scaling in place and then clipping would), without changing grad_sum; the
 * new params are also written to `out` (if not NULL) in out_type (DT_F32, DT_BF16 or DT_F16) in
 * the same pass: an update and its publication read the parameters once. */
void adamw_update_from_sum(float *params, const float *grad_sum, float scale, float clip, float *m,
                           float *v, size_t n, float lr, const adamw_config *c, int t, void *out,
                           dtype out_type);
/* The factor to multiply gradients by so their global norm is at most max_norm (1 if within,
 * or if max_norm <= 0). */
float clip_factor(double global_sum_of_squares, float max_norm);

#endif
