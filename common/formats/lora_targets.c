/* PEFT's rules for which modules an adapter adapts, with which rank and alpha: target_modules as a
 * list (a name matches itself or any module ending in "." + name) or a whole-name regex, and
 * rank_pattern / alpha_pattern keys matched as PEFT matches them. Regexes through PCRE2. */
#include "lora_targets.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void free_targets(lora_config *c) {
    for (int i = 0; i < c->n_targets; i++) free(c->targets[i]);
    free(c->targets);
    free(c->target_regex);
    c->targets = NULL;
    c->target_regex = NULL;
    c->n_targets = 0;
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
    lora_plan_entry *plan = calloc((size_t)n_modules + 1, sizeof *plan);
    if (!plan) return lp_fail(err, "out of memory");
    int n = 0;
    for (int i = 0; i < n_modules; i++) {
        int hit = lora_config_match(cfg, modules[i].name, &plan[n].r, &plan[n].alpha, err);
        if (hit < 0) {
            free(plan);
            return -1;
        }
        if (hit) plan[n++].module = i;
    }
    int rc =
        n ? lora_adapter_layout(a, cfg, modules, plan, n, err)
          : lp_fail(err, "target_modules matches none of the model's %d linear modules (e.g. '%s')",
                    n_modules, n_modules ? modules[0].name : "");
    free(plan);
    return rc;
}
