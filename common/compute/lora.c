/* The adapter itself: its config, its layout over the model's modules, PEFT's init, and lookups.
 * Which modules a config adapts (PEFT's matching rules) is formats/lora_targets.c. */
#include "lora.h"

#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lora_config_defaults(lora_config *c) {
    memset(c, 0, sizeof *c);
    c->r = 8;
    c->alpha = 16;
    c->targets = calloc(1, sizeof(char *));
    c->targets[0] = strdup("c_attn");
    c->n_targets = 1;
}

static void free_targets(lora_config *c) {
    for (int i = 0; i < c->n_targets; i++) free(c->targets[i]);
    free(c->targets);
    free(c->target_regex);
    c->targets = NULL;
    c->target_regex = NULL;
    c->n_targets = 0;
}

static void free_patterns(lora_pattern *p, int n) {
    for (int i = 0; i < n; i++) free(p[i].pattern);
    free(p);
}

void lora_config_free(lora_config *c) {
    free_targets(c);
    free_patterns(c->rank_pattern, c->n_rank_pattern);
    free_patterns(c->alpha_pattern, c->n_alpha_pattern);
    memset(c, 0, sizeof *c);
}

int lora_config_copy(lora_config *dst, const lora_config *src) {
    *dst = *src;
    dst->targets = calloc((size_t)src->n_targets + 1, sizeof(char *));
    for (int i = 0; i < src->n_targets; i++) dst->targets[i] = strdup(src->targets[i]);
    dst->target_regex = src->target_regex ? strdup(src->target_regex) : NULL;
    dst->rank_pattern = calloc((size_t)src->n_rank_pattern + 1, sizeof(lora_pattern));
    for (int i = 0; i < src->n_rank_pattern; i++) {
        dst->rank_pattern[i] = src->rank_pattern[i];
        dst->rank_pattern[i].pattern = strdup(src->rank_pattern[i].pattern);
    }
    dst->alpha_pattern = calloc((size_t)src->n_alpha_pattern + 1, sizeof(lora_pattern));
    for (int i = 0; i < src->n_alpha_pattern; i++) {
        dst->alpha_pattern[i] = src->alpha_pattern[i];
        dst->alpha_pattern[i].pattern = strdup(src->alpha_pattern[i].pattern);
    }
    return 0;
}

int lora_adapter_layout(lora_adapter *a, const lora_config *cfg, const lora_module *modules,
                        const lora_plan_entry *plan, int n_plan, lp_err *err) {
    memset(a, 0, sizeof *a);
    if (n_plan == 0) return lp_fail(err, "the adapter adapts no module");
    a->sites = calloc((size_t)n_plan, sizeof *a->sites);
    a->tensors = calloc(2 * (size_t)n_plan, sizeof *a->tensors);
    if (!a->sites || !a->tensors) goto oom;
    size_t offset = 0;
    for (int i = 0; i < n_plan; i++) {
        const lora_module *mod = &modules[plan[i].module];
        int r = plan[i].r;
        lora_site *s = &a->sites[a->n_sites++];
        s->module = plan[i].module;
        s->in = mod->in;
        s->out = mod->out;
        s->r = r;
        s->scale = cfg->use_rslora ? plan[i].alpha / sqrtf((float)r) : plan[i].alpha / (float)r;
        const char *which[2] = {"lora_A", "lora_B"};
        for (int k = 0; k < 2; k++) {
            lora_tensor *t = &a->tensors[a->n_tensors++];
            snprintf(t->name, sizeof t->name, "base_model.model.%s.%s.weight", mod->name, which[k]);
            t->rows = k == 0 ? r : s->out;
            t->cols = k == 0 ? s->in : r;
            t->offset = offset;
            t->numel = (size_t)(t->rows * t->cols);
            offset += t->numel;
            if (k == 0)
                s->a_offset = t->offset;
            else
                s->b_offset = t->offset;
        }
    }
    a->n_params = offset;
    a->params = calloc(offset, sizeof(float));
    a->grads = calloc(offset, sizeof(float));
    if (!a->params || !a->grads) goto oom;
    lora_config_copy(&a->cfg, cfg);
    return 0;
oom:
    lora_adapter_free(a);
    return lp_fail(err, "out of memory for the adapter's %d sites", n_plan);
}

void lora_adapter_init(lora_adapter *a, uint64_t seed) {
    for (int i = 0; i < a->n_sites; i++) {
        const lora_site *s = &a->sites[i];
        rng r;
        rng_seed(&r, rng_mix(seed, (uint64_t)s->module));
        float bound = 1.0f / sqrtf((float)s->in);
        float *A = a->params + s->a_offset;
        for (size_t k = 0; k < (size_t)s->r * s->in; k++)
            A[k] = (2.0f * rng_uniform(&r) - 1.0f) * bound;
        memset(a->params + s->b_offset, 0, (size_t)s->out * s->r * sizeof(float));
    }
}

void lora_adapter_zero_grad(lora_adapter *a) {
    memset(a->grads, 0, a->n_params * sizeof(float));
}

const lora_site *lora_adapter_site_for(const lora_adapter *a, int module) {
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].module == module) return &a->sites[i];
    return NULL;
}

const lora_tensor *lora_adapter_find(const lora_adapter *a, const char *name) {
    for (int i = 0; i < a->n_tensors; i++)
        if (!strcmp(a->tensors[i].name, name)) return &a->tensors[i];
    return NULL;
}

int lora_adapter_build_identity(lora_adapter *a, const lora_module *modules, int n_modules,
                                lp_err *err) {
    if (n_modules < 1) return lp_fail(err, "the model lists no linear modules");
    lora_config c;
    lora_config_defaults(&c);
    c.r = 1;
    lora_plan_entry first = {.module = 0, .r = 1, .alpha = c.alpha};
    int rc = lora_adapter_layout(a, &c, modules, &first, 1, err); /* B starts at 0 */
    lora_config_free(&c);
    return rc;
}

void lora_adapter_free(lora_adapter *a) {
    free(a->sites);
    free(a->tensors);
    free(a->params);
    free(a->grads);
    lora_config_free(&a->cfg);
    memset(a, 0, sizeof *a);
}
