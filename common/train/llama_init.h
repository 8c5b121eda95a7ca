/* Writes HF Llama model folders with deterministic random weights (no download), for tests,
 * benchmarks and `loraps init-model --arch llama`. */
#ifndef LORAPS_LLAMA_INIT_H
#define LORAPS_LLAMA_INIT_H

#include "dtype.h"
#include "error.h"
#include "llama_config.h"

#include <stdint.h>

/* "tiny" (2 layers, hidden 64, 4 heads, 2 KV heads, intermediate 128, vocab 512), "small"
 * (4 layers, hidden 256, 8 heads, 4 KV heads, intermediate 688, vocab 4096) or
 * "smollm-135m-shape" (SmolLM2-135M's: 30 layers, hidden 576, 9 heads, 3 KV heads, head_dim 64,
 * intermediate 1536, vocab 49152, tied, rope_theta 100000, max_position 8192, eps 1e-5). */
int llama_preset(const char *name, llama_config *c, lp_err *err);
/* config.json + model.safetensors (F32) in dir (created if needed). Weights as HF initialises a
 * Llama (N(0, 0.02) matrices, o_proj/down_proj scaled by 1/sqrt(2 * layers), RMSNorm weights 1),
 * but embeddings of std 1/sqrt(hidden) so a tied head starts with logits of std ~1. */
int llama_init_write(const char *dir, const llama_config *c, uint64_t seed, lp_err *err);
/* The same with the tensors stored as F32, BF16 or F16, and matrices of std `std` (0: HF's
 * 0.02; tests use larger ones so that attention is far from uniform). */
int llama_init_write_as(const char *dir, const llama_config *c, uint64_t seed, dtype stored,
                        float std, lp_err *err);

#endif
