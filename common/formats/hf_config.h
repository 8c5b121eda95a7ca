/* Hugging Face config.json for the model families: read (validated, every bad or missing field
 * named) and written as transformers writes it. */
#ifndef LORAPS_HF_CONFIG_H
#define LORAPS_HF_CONFIG_H

#include "error.h"
#include "gpt2_config.h"
#include "llama_config.h"

/* model_type "gpt2" (if present), positive sizes, n_embd divisible by n_head, a supported
 * activation. */
int gpt2_config_read(gpt2_config *c, const char *path, lp_err *err);
int gpt2_config_write(const gpt2_config *c, const char *path, lp_err *err);
/* LlamaForCausalLM, Qwen2ForCausalLM or MistralForCausalLM. */
int llama_config_read(llama_config *c, const char *path, lp_err *err);
int llama_config_write(const llama_config *c, const char *path, lp_err *err);

#endif
