/* An HF model folder as a model: config.json picks the family (model_type) and gives its shapes;
 * the weights come from model.safetensors, or the shards model.safetensors.index.json lists,
 * mapped read-only (F32 weights are used in place, not copied). The model's fingerprint covers
 * the weight files through weights_fingerprint.h (XXH3 per file, cached beside them). */
#ifndef LORAPS_MODEL_LOAD_H
#define LORAPS_MODEL_LOAD_H

#include "error.h"
#include "model.h"

int model_load(model **out, const char *dir, lp_err *err);
/* The model of config.json alone, no weights read (every weight a view of untouched zero pages):
 * its module list and shapes, for a parameter server of a model too big to read (an 8B shape's
 * 16 GB) and for benchmarks. Its fingerprint covers the config and the weights' names only, so a
 * worker with real weights differs from it. It cannot compute. */
int model_load_shapes(model **out, const char *dir, lp_err *err);

#endif
