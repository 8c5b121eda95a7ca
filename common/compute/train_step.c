#include "train_step.h"

#include "adamw.h"

#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t counted_tokens(const int *targets, size_t n) {
    uint64_t counted = 0;
    for (size_t i = 0; i < n; i++) counted += targets[i] >= 0;
    return counted;
}

int train_step(model_trainer *t, lora_adapter *a, const train_batch *b, train_result *out,
               lp_err *err) {
    int B = model_trainer_batch(t), T = model_trainer_seq_len(t);
    size_t per_micro = (size_t)B * T;
    double t0 = now_seconds();
    *out = (train_result){0};
    out->n_tokens = counted_tokens(b->targets, per_micro * (size_t)b->n_micro);
    if (out->n_tokens == 0)
        return lp_fail(err,
                       "the step's %d sequences have no counted token (every target is masked)",
                       B * b->n_micro);
    float grad_scale = 1.0f / (float)out->n_tokens;
    if (model_trainer_load_params(t, err) < 0) return -1;
    model_trainer_zero_grads(t);
    for (int micro = 0; micro < b->n_micro; micro++) {
        size_t off = (size_t)micro * per_micro;
        uint64_t first = b->first_seq + (uint64_t)micro * B;
        model_step s;
        if (micro == b->n_micro - 1 && b->on_ready)
            model_trainer_stream_grads(t, b->on_ready, b->ready_ctx);
        if (model_trainer_step(t, b->inputs + off, b->targets + off, grad_scale, b->seed, first, &s,
                               err) < 0)
            return -1;
        out->loss_sum += s.loss_sum;
    }
    if (model_trainer_fetch_grads(t, err) < 0) return -1;
    out->grad_sum_sq = sum_of_squares(a->grads, a->n_params);
    out->seconds = now_seconds() - t0;
    return 0;
}
