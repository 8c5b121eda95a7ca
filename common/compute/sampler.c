#include "sampler.h"

#include <math.h>
#include <stdlib.h>

int sampler_init(sampler *s, int vocab_size, float temperature, int top_k, float top_p,
                 uint64_t seed) {
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->vocab_size = vocab_size;
    rng_seed(&s->rng, seed);
    s->probs = malloc(sizeof(float) * vocab_size);
    s->order = malloc(sizeof(int) * vocab_size);
    return s->probs && s->order ? 0 : -1;
}

void sampler_free(sampler *s) {
    free(s->probs);
    free(s->order);
}

static int by_prob_desc(const void *a, const void *b, void *probs) {
    float pa = ((const float *)probs)[*(const int *)a],
          pb = ((const float *)probs)[*(const int *)b];
    if (pa != pb) return pa < pb ? 1 : -1;
    return *(const int *)a - *(const int *)b; /* ties: lower id first, deterministic */
}

int sampler_next(sampler *s, const float *logits) {
    int V = s->vocab_size;
    int best = 0;
    for (int v = 1; v < V; v++) best = logits[v] > logits[best] || isnan(logits[best]) ? v : best;
    if (s->temperature <= 0) return best;
    /* softmax of logits / temperature; a NaN logit (a broken model) gets no probability */
    double sum = 0;
    for (int v = 0; v < V; v++) {
        s->probs[v] = isnan(logits[v]) ? 0.0f : expf((logits[v] - logits[best]) / s->temperature);
        sum += s->probs[v];
    }
    if (!(sum > 0)) return best;
    for (int v = 0; v < V; v++) s->probs[v] = (float)(s->probs[v] / sum), s->order[v] = v;
    /* candidates in order of probability, cut by top-k, then by top-p */
    qsort_r(s->order, (size_t)V, sizeof(int), by_prob_desc, s->probs);
    int keep = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    double kept = 0;
    for (int i = 0; i < keep; i++) kept += s->probs[s->order[i]];
    if (s->top_p < 1.0f) {
        /* the smallest prefix whose (renormalised) mass reaches top_p; at least one token */
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            cum += s->probs[s->order[i]] / kept;
            if (cum >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        kept = 0;
        for (int i = 0; i < keep; i++) kept += s->probs[s->order[i]];
    }
    double u = rng_uniform(&s->rng) * kept, cum = 0;
    for (int i = 0; i < keep; i++) {
        cum += s->probs[s->order[i]];
        if (u < cum) return s->order[i];
    }
    return s->order[keep - 1];
}
