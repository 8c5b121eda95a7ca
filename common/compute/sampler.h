/* Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
 * (nucleus), as HF's generate applies them (temperature, then top-k, then top-p). */
#ifndef LORAPS_SAMPLER_H
#define LORAPS_SAMPLER_H

#include "rng.h"

typedef struct sampler {
    float temperature; /* 0: greedy (argmax) */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    rng rng;
    float *probs; /* scratch [vocab] */
    int *order;   /* scratch [vocab] */
    int vocab_size;
} sampler;

int sampler_init(sampler *s, int vocab_size, float temperature, int top_k, float top_p,
                 uint64_t seed);
void sampler_free(sampler *s);
int sampler_next(sampler *s, const float *logits);

#endif
