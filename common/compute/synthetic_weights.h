/* A weight source that makes the weights it is asked for: deterministic random matrices of a given
 * std (norm weights 1, biases 0), stored as F32 or BF16. For tests and benchmarks that need a
 * model of some shape without a file: an 8B-parameter shape exists only in memory. */
#ifndef LORAPS_SYNTHETIC_WEIGHTS_H
#define LORAPS_SYNTHETIC_WEIGHTS_H

#include "dtype.h"
#include "model.h"

#include <stdint.h>

/* A source for model_build_*: stored is DT_F32 or DT_BF16. Every tensor is a pure function of
 * (seed, its name). */
weight_source synthetic_weights(uint64_t seed, float std, dtype stored);

#endif
