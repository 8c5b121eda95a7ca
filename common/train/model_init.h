/* Writes HF GPT-2 model folders with deterministic random weights, so tests, benchmarks and the
 * demo have real models without any download. */
#ifndef LORAPS_MODEL_INIT_H
#define LORAPS_MODEL_INIT_H

#include "error.h"
#include "gpt2_config.h"

#include <stdint.h>

/* "tiny" (2 layers, 64 wide, vocab 512), "small" (4 layers, 256 wide, vocab 4096) or "124m"
 * (GPT-2 small's shapes). */
int model_preset(const char *name, gpt2_config *c, lp_err *err);
/* config.json, model.safetensors and (for vocabularies of 257 or more) a byte-level BPE
 * tokenizer.json of the model's vocabulary size in dir (created if needed). Weights as GPT-2
 * initialises them: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer), LayerNorm 1 and
 * 0. */
int model_init_write(const char *dir, const gpt2_config *c, uint64_t seed, lp_err *err);

#endif
