/* Which of a model's modules a LoRA config adapts, as PEFT decides it: target_modules in list
 * form (a name matches itself or any module ending in "." + name; "all-linear" every linear layer
 * of the blocks) or a whole-name regex ("re:<regex>"), with rank_pattern and alpha_pattern
 * overrides (first match wins). */
#ifndef LORAPS_LORA_TARGETS_H
#define LORAPS_LORA_TARGETS_H

#include "error.h"
#include "lora.h"

/* Replaces the targets: "c_attn,mlp.c_fc" is the list form; "re:<regex>" the string form;
 * "all-linear" every linear layer of the blocks, as in PEFT. */
int lora_config_set_targets(lora_config *c, const char *spec, lp_err *err);
/* Adds a rank_pattern ("key=value,key=value") or alpha_pattern entry list. */
int lora_config_set_patterns(lora_config *c, int alpha, const char *spec, lp_err *err);
/* 1 if the module is adapted (rank and alpha filled in), 0 if not, -1 on a bad regex. */
int lora_config_match(const lora_config *c, const char *module_name, int *rank, float *alpha,
                      lp_err *err);
/* The adapter the config describes over the model's modules (lora_adapter_layout of the
 * matches); an error if it matches none. */
int lora_adapter_build(lora_adapter *a, const lora_config *cfg, const lora_module *modules,
                       int n_modules, lp_err *err);

#endif
