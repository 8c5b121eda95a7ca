/* Deterministic random numbers: splitmix64 to seed, xoshiro256** to draw. Reproducible on every
 * machine, which the tests and exact resume rely on. */
#ifndef LORAPS_RNG_H
#define LORAPS_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
} rng;

void rng_seed(rng *r, uint64_t seed);
/* A seed derived from several values (e.g. job seed, step, rank), so streams do not overlap. */
uint64_t rng_mix(uint64_t a, uint64_t b);
uint64_t rng_next(rng *r);
float rng_uniform(rng *r); /* [0, 1) */
float rng_normal(rng *r);  /* standard normal */
uint32_t rng_below(rng *r, uint32_t n);

#endif
