#include "adamw.h"

#include <math.h>
#include <stdlib.h>

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

/* Fixed blocks summed in order, so the result does not depend on the number of threads. */
#define SS_BLOCK ((size_t)16384)

/* 16 running sums, element i into sum i % 16, added in order at the end: the lanes are
 * independent, so the loop runs in vector registers instead of one long chain of adds. */
#define SS_LANES 16

static double block_sum_sq(const float *x, float scale, size_t n) {
    double lane[SS_LANES] = {0};
    size_t full = n / SS_LANES * SS_LANES;
    for (size_t i = 0; i < full; i += SS_LANES)
        for (int k = 0; k < SS_LANES; k++) {
            float g = x[i + (size_t)k] * scale;
            lane[k] += (double)g * g;
        }
    for (size_t i = full; i < n; i++) {
        float g = x[i] * scale;
        lane[i - full] += (double)g * g;
    }
    double s = 0;
    for (int k = 0; k < SS_LANES; k++) s += lane[k];
    return s;
}

double sum_of_squares_scaled(const float *x, float scale, size_t n) {
    size_t nb = (n + SS_BLOCK - 1) / SS_BLOCK;
    double stack[512], *part = nb <= 512 ? stack : malloc(nb * sizeof *part);
    if (!part) part = stack, nb = 0; /* out of memory: the serial sum below */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t end = (b + 1) * SS_BLOCK < n ? (b + 1) * SS_BLOCK : n;
        part[b] = block_sum_sq(x + b * SS_BLOCK, scale, end - b * SS_BLOCK);
    }
    double total = 0;
    for (size_t b = 0; b < nb; b++) total += part[b];
    if (nb == 0) total = block_sum_sq(x, scale, n);
    if (part != stack) free(part);
    return total;
}

double sum_of_squares(const float *x, size_t n) {
    return sum_of_squares_scaled(x, 1.0f, n);
}

void adamw_update_from_sum(float *params, const float *grad_sum, float scale, float clip, float *m,
                           float *v, size_t n, float lr, const adamw_config *c, int t, void *out,
                           dtype out_type) {
    float bias1 = 1.0f - powf(c->beta1, (float)t);
    float bias2_sqrt = sqrtf(1.0f - powf(c->beta2, (float)t));
    float step_size = lr / bias1;
    float decay = 1.0f - lr * c->weight_decay;
    size_t osz = dtype_size(out_type);
    size_t nb = (n + SS_BLOCK - 1) / SS_BLOCK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * SS_BLOCK, hi = lo + SS_BLOCK < n ? lo + SS_BLOCK : n;
        for (size_t i = lo; i < hi; i++) {
            float g = grad_sum[i] * scale;
            if (clip != 1.0f) g *= clip;
            m[i] = c->beta1 * m[i] + (1.0f - c->beta1) * g;
            v[i] = c->beta2 * v[i] + (1.0f - c->beta2) * g * g;
            float denom = sqrtf(v[i]) / bias2_sqrt + c->eps;
            params[i] = params[i] * decay - step_size * m[i] / denom;
        }
        /* the block is still in cache: its published copy now */
        if (out) dtype_from_f32(params + lo, out_type, (char *)out + lo * osz, hi - lo);
    }
}

float clip_factor(double global_sum_of_squares, float max_norm) {
    if (max_norm <= 0) return 1.0f;
    double norm = sqrt(global_sum_of_squares);
    /* torch.nn.utils.clip_grad_norm_ adds 1e-6 to the norm. */
    double factor = max_norm / (norm + 1e-6);
    return factor < 1.0 ? (float)factor : 1.0f;
}
