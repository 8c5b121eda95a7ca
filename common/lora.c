#include "lora.h"

#include "rng.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

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

/* Full or anchored regex match through PCRE2; -1 if the pattern does not compile. */
static int regex_match(const char *pattern, const char *subject, lp_err *err) {
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return lp_fail(err, "bad regex '%s' at offset %zu: %s", pattern, (size_t)offset,
                       (char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)subject, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

/* PEFT's rule for a whole-name regex (re.fullmatch). */
static int regex_fullmatch(const char *pattern, const char *subject, lp_err *err) {
    size_t n = strlen(pattern) + 16;
    char *anchored = malloc(n);
    snprintf(anchored, n, "^(?:%s)$", pattern);
    int rc = regex_match(anchored, subject, err);
    free(anchored);
    return rc;
}

/* PEFT's rule for rank_pattern / alpha_pattern keys: re.match(r"(.*\.)?(key)$", name). */
static int pattern_key_matches(const char *key, const char *name, lp_err *err) {
    size_t n = strlen(key) + 16;
    char *anchored = malloc(n);
    snprintf(anchored, n, "^(.*\\.)?(%s)$", key);
    int rc = regex_match(anchored, name, err);
    free(anchored);
    return rc;
}

int lora_config_set_targets(lora_config *c, const char *spec, lp_err *err) {
    if (!spec || !*spec) return lp_fail(err, "target_modules is empty");
    if (!strncmp(spec, "re:", 3)) {
        int rc = regex_fullmatch(spec + 3, "", err); /* compile once to report errors now */
        if (rc < 0) return lp_wrap(err, "target_modules");
        free_targets(c);
        c->target_regex = strdup(spec + 3);
        return 0;
    }
    char *copy = strdup(spec), *save = NULL;
    int n = 0;
    char **list = calloc(strlen(spec) / 2 + 2, sizeof(char *));
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        size_t len = strlen(tok);
        while (len && tok[len - 1] == ' ') tok[--len] = 0;
        if (len) list[n++] = strdup(tok);
    }
    free(copy);
    if (n == 0) {
        free(list);
        return lp_fail(err, "target_modules '%s' names no module", spec);
    }
    free_targets(c);
    c->targets = list;
    c->n_targets = n;
    return 0;
}

int lora_config_set_patterns(lora_config *c, int alpha, const char *spec, lp_err *err) {
    lora_pattern **list = alpha ? &c->alpha_pattern : &c->rank_pattern;
    int *count = alpha ? &c->n_alpha_pattern : &c->n_rank_pattern;
    const char *what = alpha ? "alpha_pattern" : "rank_pattern";
    char *copy = strdup(spec), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(tok, '='), *end;
        if (!eq || eq == tok) {
            rc = lp_fail(err, "%s: expected name=value, got '%s'", what, tok);
            break;
        }
        *eq = 0;
        float value = strtof(eq + 1, &end);
        if (end == eq + 1 || *end || !(value > 0) || !isfinite(value) ||
            (!alpha && (value != floorf(value) || value > LORA_MAX_RANK))) {
            rc = lp_fail(err, "%s: '%s' needs a positive %s, got '%s'", what, tok,
                         alpha ? "number" : "integer rank up to " LORA_MAX_RANK_TEXT, eq + 1);
            break;
        }
        int repeated = 0;
        for (int i = 0; i < *count; i++) repeated |= !strcmp((*list)[i].pattern, tok);
        if (repeated) {
            rc = lp_fail(err, "%s: '%s' is given twice", what, tok);
            break;
        }
        if (pattern_key_matches(tok, "", err) < 0) {
            rc = lp_wrap(err, "%s", what);
            break;
        }
        *list = realloc(*list, (size_t)(*count + 1) * sizeof **list);
        (*list)[*count].pattern = strdup(tok);
        (*list)[*count].value = value;
        ++*count;
    }
    free(copy);
    return rc;
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

static int name_ends_with_module(const char *name, const char *target) {
    size_t n = strlen(name), t = strlen(target);
    if (n == t) return !strcmp(name, target);
    return n > t && name[n - t - 1] == '.' && !strcmp(name + n - t, target);
}

static int first_pattern(const lora_pattern *p, int n, const char *name, float *value,
                         lp_err *err) {
    for (int i = 0; i < n; i++) {
        int rc = pattern_key_matches(p[i].pattern, name, err);
        if (rc < 0) return -1;
        if (rc) {
            *value = p[i].value;
            return 1;
        }
    }
    return 0;
}

int lora_config_match(const lora_config *c, const char *module_name, int *rank, float *alpha,
                      lp_err *err) {
    int hit = 0;
    if (c->n_targets == 0 && c->target_regex) {
        hit = regex_fullmatch(c->target_regex, module_name, err);
        if (hit < 0) return -1;
    }
    /* "all-linear" (PEFT's shorthand): every module a model lists is a linear layer of its
     * blocks, and the output head is never among them */
    for (int i = 0; i < c->n_targets && !hit; i++)
        hit = !strcmp(c->targets[i], LORA_ALL_LINEAR) ||
              name_ends_with_module(module_name, c->targets[i]);
    if (!hit) return 0;
    float value = (float)c->r;
    if (first_pattern(c->rank_pattern, c->n_rank_pattern, module_name, &value, err) < 0) return -1;
    *rank = (int)value;
    value = c->alpha;
    if (first_pattern(c->alpha_pattern, c->n_alpha_pattern, module_name, &value, err) < 0)
        return -1;
    *alpha = value;
    return 1;
}

int lora_adapter_build(lora_adapter *a, const lora_config *cfg, const lora_module *modules,
                       int n_modules, lp_err *err) {
    memset(a, 0, sizeof *a);
    a->sites = calloc((size_t)n_modules + 1, sizeof *a->sites);
    a->tensors = calloc(2 * (size_t)n_modules + 1, sizeof *a->tensors);
    size_t offset = 0;
    for (int i = 0; i < n_modules; i++) {
        int r;
        float alpha;
        int hit = lora_config_match(cfg, modules[i].name, &r, &alpha, err);
        if (hit < 0) goto fail;
        if (!hit) continue;
        lora_site *s = &a->sites[a->n_sites++];
        s->module = i;
        s->in = modules[i].in;
        s->out = modules[i].out;
        s->r = r;
        s->scale = cfg->use_rslora ? alpha / sqrtf((float)r) : alpha / (float)r;
        const char *which[2] = {"lora_A", "lora_B"};
        for (int k = 0; k < 2; k++) {
            lora_tensor *t = &a->tensors[a->n_tensors++];
            snprintf(t->name, sizeof t->name, "base_model.model.%s.%s.weight", modules[i].name,
                     which[k]);
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
    if (a->n_sites == 0) {
        lp_fail(err, "target_modules matches none of the model's %d linear modules (e.g. '%s')",
                n_modules, n_modules ? modules[0].name : "");
        goto fail;
    }
    a->n_params = offset;
    a->params = calloc(offset, sizeof(float));
    a->grads = calloc(offset, sizeof(float));
    if (!a->params || !a->grads) {
        lp_fail(err, "out of memory for %zu adapter parameters", offset);
        goto fail;
    }
    lora_config_copy(&a->cfg, cfg);
    return 0;
fail:
    lora_adapter_free(a);
    return -1;
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
    int rc = lora_config_set_targets(&c, modules[0].name, err);
    if (rc == 0) rc = lora_adapter_build(a, &c, modules, n_modules, err); /* B starts at 0 */
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
