/* A LoRA adapter: which modules it adapts, its A/B tensors and their gradients, all in one flat
 * buffer so the optimizer, the wire and checkpoints see one array. PEFT's rules for choosing the
 * modules from a config (target_modules, rank_pattern, alpha_pattern) are formats/lora_targets.h.
 */
#ifndef LORAPS_LORA_H
#define LORAPS_LORA_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define LORA_MAX_NAME           192
#define LORA_MAX_RANK           4096
#define LORA_MAX_RANK_TEXT      "4096"
#define LORA_MAX_BATCH_ADAPTERS 64           /* adapters that may share one batch */
#define LORA_ALL_LINEAR         "all-linear" /* PEFT's target for every linear layer but the head */

typedef struct lora_pattern {
    char *pattern; /* a regex matched as PEFT does: (.*\.)?(pattern)$ against the module name */
    float value;
} lora_pattern;

typedef struct lora_config {
    int r;
    float alpha;
    float dropout;
    int use_rslora; /* scale = alpha / sqrt(r) instead of alpha / r */
    /* List form: a module matches if its name equals an entry or ends with "." + entry. */
    int n_targets;
    char **targets;
    /* String form (used when n_targets == 0): a regex that must match the whole module name. */
    char *target_regex;
    int n_rank_pattern;
    lora_pattern *rank_pattern;
    int n_alpha_pattern;
    lora_pattern *alpha_pattern;
} lora_config;

/* r=8, alpha=16, dropout 0, targets "c_attn". */
void lora_config_defaults(lora_config *c);
int lora_config_copy(lora_config *dst, const lora_config *src);
void lora_config_free(lora_config *c);

/* A linear layer of the base model that LoRA may adapt, as the model lists it. */
typedef struct lora_module {
    char name[LORA_MAX_NAME]; /* PEFT module path, e.g. "transformer.h.0.attn.c_attn" */
    int layer;
    int in, out;
} lora_module;

typedef struct lora_site {
    int module; /* index into the model's module list */
    int in, out, r;
    float scale;
    size_t a_offset; /* A [r,in] in params */
    size_t b_offset; /* B [out,r] in params */
} lora_site;

typedef struct lora_tensor {
    char name[LORA_MAX_NAME + 48]; /* base_model.model.<module>.lora_A.weight */
    int64_t rows, cols;
    size_t offset, numel; /* into params / grads */
} lora_tensor;

typedef struct lora_adapter {
    lora_config cfg;
    int n_sites; /* one per adapted module, in the model's module order */
    lora_site *sites;
    int n_tensors; /* 2 * n_sites: lora_A then lora_B of each site */
    lora_tensor *tensors;
    size_t n_params;
    float *params; /* every A and B, contiguous */
    float *grads;  /* same layout as params */
} lora_adapter;

/* One module an adapter adapts: its index in the model's module list, its rank and alpha. */
typedef struct lora_plan_entry {
    int module;
    int r;
    float alpha;
} lora_plan_entry;

/* Lays the adapter out over the planned modules (in the model's module order): a site and the
 * tensors lora_A [r,in], lora_B [out,r] of each, params and grads zeroed; cfg is copied. */
int lora_adapter_layout(lora_adapter *a, const lora_config *cfg, const lora_module *modules,
                        const lora_plan_entry *plan, int n_plan, lp_err *err);
/* PEFT's default init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a=sqrt(5)), B = 0. */
void lora_adapter_init(lora_adapter *a, uint64_t seed);
void lora_adapter_zero_grad(lora_adapter *a);
/* The site adapting model module index `module`, or NULL. */
const lora_site *lora_adapter_site_for(const lora_adapter *a, int module);
const lora_tensor *lora_adapter_find(const lora_adapter *a, const char *name);
void lora_adapter_free(lora_adapter *a);
/* An adapter that changes nothing (rank 1 on the first module, B = 0): the base model alone,
 * for code that needs an adapter to run a model. */
int lora_adapter_build_identity(lora_adapter *a, const lora_module *modules, int n_modules,
                                lp_err *err);

#endif
