/* An HF model folder as a model: config.json picks the family (model_type) and gives its shapes;
 * the weights come from model.safetensors, or the shards model.safetensors.index.json lists,
 * mapped read-only (F32 weights are used in place, not copied). The model's fingerprint covers
 * the weight files through weights_fingerprint.h (XXH3 per file, cached beside them). */
#ifndef LORAPS_MODEL_LOAD_H
#define LORAPS_MODEL_LOAD_H

#include "error.h"
#include "model.h"

int model_load(model **out, const char *dir, lp_err *err);

#endif
