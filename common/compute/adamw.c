#include "adamw.h"

#include <math.h>

float lr_at(const lr_schedule *s, int step) {
    if (step < s->warmup_steps) return s->lr * (float)step / (float)s->warmup_steps;
    if (s->kind == LR_CONSTANT) return s->lr;
    int decay_steps = s->total_steps - s->warmup_steps;
    if (decay_steps <= 0) return s->lr;
    double progress = (double)(step - s->warmup_steps) / decay_steps;
    if (progress > 1) progress = 1;
    if (s->kind == LR_LINEAR) return s->lr * (float)(1.0 - progress);
    return s->lr * (float)(0.5 * (1.0 + cos(M_PI * progress)));
}

void adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr,
                  const adamw_config *c, int t) {
    /* torch.optim.AdamW: decay first, then the bias-corrected Adam step. */
    float bias1 = 1.0f - powf(c->beta1, (float)t);
    float bias2_sqrt = sqrtf(1.0f - powf(c->beta2, (float)t));
    float step_size = lr / bias1;
    float decay = 1.0f - lr * c->weight_decay;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        m[i] = c->beta1 * m[i] + (1.0f - c->beta1) * g;
        v[i] = c->beta2 * v[i] + (1.0f - c->beta2) * g * g;
        float denom = sqrtf(v[i]) / bias2_sqrt + c->eps;
        params[i] = params[i] * decay - step_size * m[i] / denom;
    }
}

double sum_of_squares(const float *x, size_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) if (n > 65536)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

float clip_factor(double global_sum_of_squares, float max_norm) {
    if (max_norm <= 0) return 1.0f;
    double norm = sqrt(global_sum_of_squares);
    /* torch.nn.utils.clip_grad_norm_ adds 1e-6 to the norm. */
    double factor = max_norm / (norm + 1e-6);
    return factor < 1.0 ? (float)factor : 1.0f;
}
