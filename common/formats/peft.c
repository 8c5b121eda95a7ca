#include "peft.h"

#include "fsutil.h"
#include "hf_weights.h"
#include "lora_targets.h"
#include "model_load.h"
#include "safetensors.h"

#include <jansson.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *patterns_json(const lora_pattern *p, int n, int as_int) {
    json_t *obj = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(obj, p[i].pattern,
                            as_int ? json_integer((json_int_t)p[i].value) : json_real(p[i].value));
    return obj;
}

/* "all-linear" written out as PEFT does after expanding it: the adapted modules' last names
 * (base_model.model.transformer.h.0.attn.c_attn.lora_A.weight gives "c_attn"). */
static json_t *adapted_names(const lora_adapter *a) {
    json_t *list = json_array();
    for (int i = 0; i < a->n_tensors; i += 2) {
        char name[LORA_MAX_NAME + 48];
        snprintf(name, sizeof name, "%s", a->tensors[i].name);
        char *end = strstr(name, ".lora_A.weight");
        if (!end) continue;
        *end = 0;
        const char *last = strrchr(name, '.') ? strrchr(name, '.') + 1 : name;
        int seen = 0;
        for (size_t k = 0; k < json_array_size(list); k++)
            seen |= !strcmp(json_string_value(json_array_get(list, k)), last);
        if (!seen) json_array_append_new(list, json_string(last));
    }
    return list;
}

static json_t *config_json(const lora_adapter *a, const char *base_model, int fan_in_fan_out) {
    const lora_config *c = &a->cfg;
    json_t *targets;
    int all_linear = 0;
    for (int i = 0; i < c->n_targets; i++) all_linear |= !strcmp(c->targets[i], LORA_ALL_LINEAR);
    if (c->n_targets == 0) {
        targets = json_string(c->target_regex);
    } else if (all_linear) {
        targets = adapted_names(a);
    } else {
        targets = json_array();
        for (int i = 0; i < c->n_targets; i++)
            json_array_append_new(targets, json_string(c->targets[i]));
    }
    json_t *j = json_object();
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(j, "base_model_name_or_path",
                        base_model ? json_string(base_model) : json_null());
    json_object_set_new(j, "r", json_integer(c->r));
    json_object_set_new(j, "lora_alpha", json_real(c->alpha));
    json_object_set_new(j, "lora_dropout", json_real(c->dropout));
    json_object_set_new(j, "target_modules", targets);
    json_object_set_new(j, "fan_in_fan_out", json_boolean(fan_in_fan_out));
    json_object_set_new(j, "use_rslora", json_boolean(c->use_rslora));
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "rank_pattern", patterns_json(c->rank_pattern, c->n_rank_pattern, 1));
    json_object_set_new(j, "alpha_pattern", patterns_json(c->alpha_pattern, c->n_alpha_pattern, 0));
    json_object_set_new(j, "init_lora_weights", json_true());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "modules_to_save", json_null());
    json_object_set_new(j, "layers_to_transform", json_null());
    json_object_set_new(j, "use_dora", json_false());
    return j;
}

/* target_modules as adapter_config.json holds them, as the card shows them: `a`, `b` or the
 * regex. */
static char *targets_text(json_t *targets) {
    if (json_is_string(targets)) {
        char *s = malloc(strlen(json_string_value(targets)) + 16);
        if (s) sprintf(s, "`%s` (regex)", json_string_value(targets));
        return s;
    }
    size_t cap = 1;
    for (size_t i = 0; i < json_array_size(targets); i++)
        cap += strlen(json_string_value(json_array_get(targets, i))) + 4;
    char *s = malloc(cap), *p = s;
    for (size_t i = 0; s && i < json_array_size(targets); i++)
        p += sprintf(p, "%s`%s`", i ? ", " : "", json_string_value(json_array_get(targets, i)));
    if (s) *p = 0;
    return s;
}

int peft_save(const char *dir, const lora_adapter *a, const char *base_model, int fan_in_fan_out,
              lp_err *err) {
    return peft_save_card(dir, a, base_model, fan_in_fan_out, NULL, err);
}

int peft_save_card(const char *dir, const lora_adapter *a, const char *base_model,
                   int fan_in_fan_out, const model_card *card, lp_err *err) {
    if (fs_mkdirs(dir, err) < 0) return -1;
    char path[4096];
    st_writer *w = st_writer_new();
    int rc = st_writer_set_metadata(w, "format", "pt", err);
    for (int i = 0; i < a->n_tensors && rc == 0; i++) {
        const lora_tensor *t = &a->tensors[i];
        int64_t shape[2] = {t->rows, t->cols};
        rc = st_writer_add(w, t->name, DT_F32, 2, shape, a->params + t->offset, err);
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (rc == 0) rc = st_writer_write(w, path, err);
    st_writer_free(w);
    if (rc) return -1;
    json_t *j = config_json(a, base_model, fan_in_fan_out);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    char *targets = targets_text(json_object_get(j, "target_modules"));
    json_decref(j);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (!text || !targets)
        rc = lp_fail(err, "out of memory");
    else
        rc = fs_write_atomic(path, text, strlen(text), err);
    if (rc == 0) rc = model_card_write(dir, a, base_model, targets, card, err);
    free(text);
    free(targets);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * loading */

static int json_number(json_t *v, double *out) {
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

/* rank_pattern / alpha_pattern: {"regex": number} into our "key=value,..." spec. */
static int patterns_from_json(lora_config *c, json_t *obj, int alpha, const char *path,
                              lp_err *err) {
    const char *what = alpha ? "alpha_pattern" : "rank_pattern";
    if (!obj || json_is_null(obj)) return 0;
    if (!json_is_object(obj)) return lp_fail(err, "%s: %s must be an object", path, what);
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        double v;
        if (json_number(value, &v) < 0)
            return lp_fail(err, "%s: %s['%s'] must be a number", path, what, key);
        char spec[600];
        snprintf(spec, sizeof spec, "%s=%.9g", key, v);
        if (lora_config_set_patterns(c, alpha, spec, err) < 0) return lp_wrap(err, "%s", path);
    }
    return 0;
}

/* A feature loraps does not implement must be off: absent, null, false, empty, or "none". */
static int refuse_feature(json_t *root, const char *key, const char *path, lp_err *err) {
    json_t *v = json_object_get(root, key);
    int off = !v || json_is_null(v) || json_is_false(v) ||
              (json_is_string(v) && !strcmp(json_string_value(v), "none")) ||
              (json_is_array(v) && json_array_size(v) == 0);
    return off ? 0 : lp_fail(err, "%s: '%s' is set, which loraps does not support", path, key);
}

static int config_from_json(lora_config *c, const char *path, lp_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return lp_fail(err, "%s:%d: %s", path, jerr.line, jerr.text);
    int rc = -1;
    lora_config_defaults(c);
    json_t *type = json_object_get(root, "peft_type");
    json_t *targets = json_object_get(root, "target_modules");
    double r, alpha, dropout = 0;
    if (!json_is_object(root)) {
        lp_fail(err, "%s: not a JSON object", path);
    } else if (!json_is_string(type) || strcmp(json_string_value(type), "LORA")) {
        lp_fail(err, "%s: peft_type must be \"LORA\"", path);
    } else if (json_number(json_object_get(root, "r"), &r) < 0 || r < 1 || r > LORA_MAX_RANK ||
               r != (int)r) {
        lp_fail(err, "%s: r must be an integer in 1..%d", path, LORA_MAX_RANK);
    } else if (json_number(json_object_get(root, "lora_alpha"), &alpha) < 0 || !(alpha > 0) ||
               !isfinite((float)alpha)) {
        lp_fail(err, "%s: lora_alpha must be a positive number", path);
    } else if (json_object_get(root, "lora_dropout") &&
               (json_number(json_object_get(root, "lora_dropout"), &dropout) < 0 || dropout < 0 ||
                dropout >= 1)) {
        lp_fail(err, "%s: lora_dropout must be a number in [0, 1)", path);
    } else if (refuse_feature(root, "use_dora", path, err) < 0 ||
               refuse_feature(root, "bias", path, err) < 0 ||
               refuse_feature(root, "modules_to_save", path, err) < 0 ||
               refuse_feature(root, "layers_to_transform", path, err) < 0 ||
               refuse_feature(root, "layer_replication", path, err) < 0 ||
               refuse_feature(root, "exclude_modules", path, err) < 0 ||
               refuse_feature(root, "lora_bias", path, err) < 0 ||
               refuse_feature(root, "target_parameters", path, err) < 0 ||
               refuse_feature(root, "trainable_token_indices", path, err) < 0 ||
               refuse_feature(root, "use_qalora", path, err) < 0 ||
               refuse_feature(root, "use_bdlora", path, err) < 0 ||
               refuse_feature(root, "alora_invocation_tokens", path, err) < 0) {
        /* error set */
    } else {
        c->r = (int)r;
        c->alpha = (float)alpha;
        c->dropout = (float)dropout;
        c->use_rslora = json_is_true(json_object_get(root, "use_rslora"));
        char spec[4096] = "";
        if (json_is_string(targets)) {
            snprintf(spec, sizeof spec, "re:%s", json_string_value(targets));
        } else if (json_is_array(targets) && json_array_size(targets) > 0) {
            size_t i, used = 0;
            json_t *item;
            json_array_foreach(targets, i, item) {
                if (!json_is_string(item)) break;
                used += (size_t)snprintf(spec + used, used < sizeof spec ? sizeof spec - used : 0,
                                         "%s%s", i ? "," : "", json_string_value(item));
            }
            if (i < json_array_size(targets) || used >= sizeof spec) spec[0] = 0;
        }
        if (!spec[0])
            lp_fail(err, "%s: target_modules must be a regex or a list of names", path);
        else if (lora_config_set_targets(c, spec, err) < 0)
            lp_wrap(err, "%s", path);
        else if (patterns_from_json(c, json_object_get(root, "rank_pattern"), 0, path, err) == 0 &&
                 patterns_from_json(c, json_object_get(root, "alpha_pattern"), 1, path, err) == 0)
            rc = 0;
    }
    json_decref(root);
    if (rc) lora_config_free(c);
    return rc;
}

int peft_load(const char *dir, const lora_module *modules, int n_modules, lora_adapter *a,
              lp_err *err) {
    char path[4096];
    lora_config c;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (config_from_json(&c, path, err) < 0) return -1;
    int rc = lora_adapter_build(a, &c, modules, n_modules, err);
    lora_config_free(&c);
    if (rc < 0) return lp_wrap(err, "%s", dir);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_file f;
    if (st_open(&f, path, err) < 0) {
        lora_adapter_free(a);
        return -1;
    }
    /* Every tensor of the file must be one the config implies, with its shape, and all of
     * them must be there. */
    int found = 0;
    for (int i = 0; i < f.n_tensors && rc == 0; i++) {
        const st_tensor *t = &f.tensors[i];
        const lora_tensor *lt = lora_adapter_find(a, t->name);
        if (!lt)
            rc = lp_fail(err, "%s: tensor '%s' is not one adapter_config.json describes", path,
                         t->name);
        else if (t->ndim != 2 || t->shape[0] != lt->rows || t->shape[1] != lt->cols)
            rc = lp_fail(err, "%s: tensor '%s' should be [%lld,%lld]", path, t->name,
                         (long long)lt->rows, (long long)lt->cols);
        else if (st_read_f32(t, a->params + lt->offset, lt->numel, err) < 0)
            rc = lp_wrap(err, "%s", path);
        else
            found++;
    }
    if (rc == 0 && found != a->n_tensors) {
        for (int i = 0; i < a->n_tensors; i++)
            if (!st_find(&f, a->tensors[i].name)) {
                rc = lp_fail(err, "%s: tensor '%s' is missing", path, a->tensors[i].name);
                break;
            }
    }
    st_close(&f);
    if (rc) lora_adapter_free(a);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * merging */

/* The site whose module's weight is called `name` ("<module>.weight", the module path with or
 * without its first component, e.g. GPT-2's "transformer."), or -1. */
static int site_of_weight(const lora_adapter *a, const lora_module *mods, const char *name) {
    for (int i = 0; i < a->n_sites; i++) {
        const char *mod = mods[a->sites[i].module].name;
        size_t n = strlen(mod);
        const char *dot = strchr(mod, '.');
        if (!strncmp(name, mod, n) && !strcmp(name + n, ".weight")) return i;
        if (dot && !strncmp(name, dot + 1, n - (size_t)(dot + 1 - mod)) &&
            !strcmp(name + n - (size_t)(dot + 1 - mod), ".weight"))
            return i;
    }
    return -1;
}

/* W += s·(B·A) in W's layout; accumulated in double. */
static void fold(float *w, const lora_site *st, const float *A, const float *B, int in_out) {
    int in = st->in, out = st->out, r = st->r;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double acc = 0;
            for (int k = 0; k < r; k++) acc += (double)B[(size_t)o * r + k] * A[(size_t)k * in + i];
            size_t at = in_out ? (size_t)i * out + o : (size_t)o * in + i;
            w[at] = (float)((double)w[at] + (double)st->scale * acc);
        }
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name, lp_err *err) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s", from_dir, name);
    snprintf(dst, sizeof dst, "%s/%s", to_dir, name);
    if (!fs_exists(src)) return 0;
    char *data;
    size_t len;
    if (fs_read_all(src, &data, &len, err) < 0) return -1;
    int rc = fs_write_atomic(dst, data, len, err);
    free(data);
    return rc;
}

int peft_merge(const char *model_dir, const char *adapter_dir, const char *out_dir, lp_err *err) {
    char real_model[PATH_MAX], real_out[PATH_MAX];
    if (fs_mkdirs(out_dir, err) < 0) return -1;
    if (realpath(model_dir, real_model) && realpath(out_dir, real_out) &&
        !strcmp(real_model, real_out))
        return lp_fail(err, "%s: the merged model must go to another folder than the base model",
                       out_dir);
    model *m;
    if (model_load(&m, model_dir, err) < 0) return lp_wrap(err, "%s", model_dir);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter a;
    if (peft_load(adapter_dir, mods, n_mods, &a, err) < 0) {
        model_free(m);
        return -1;
    }
    int in_out = model_fan_in_fan_out(m);
    /* Every tensor of the folder is copied or folded, not only those the family reads. */
    hf_weights files;
    if (hf_weights_open(&files, model_dir, err) < 0) {
        lora_adapter_free(&a);
        model_free(m);
        return -1;
    }
    st_writer *w = st_writer_new();
    int n_all = 0;
    for (int f = 0; f < files.n_files; f++) n_all += files.files[f].n_tensors;
    float **merged = calloc((size_t)n_all + 1, sizeof *merged);
    unsigned char *done = calloc((size_t)a.n_sites + 1, 1);
    int rc = w && merged && done ? st_writer_set_metadata(w, "format", "pt", err)
                                 : lp_fail(err, "out of memory");
    int k = 0;
    for (int f = 0; f < files.n_files && rc == 0; f++) {
        const st_file *sf = &files.files[f];
        for (int t = 0; t < sf->n_tensors && rc == 0; t++, k++) {
            const st_tensor *x = &sf->tensors[t];
            int si = site_of_weight(&a, mods, x->name);
            if (si < 0) {
                rc = st_writer_add(w, x->name, x->dtype, x->ndim, x->shape, x->data, err);
                continue;
            }
            const lora_site *st = &a.sites[si];
            int64_t rows = in_out ? st->in : st->out, cols = in_out ? st->out : st->in;
            if (x->ndim != 2 || x->shape[0] != rows || x->shape[1] != cols) {
                rc = lp_fail(err, "%s: %s is not [%lld,%lld] as the adapter expects", sf->path,
                             x->name, (long long)rows, (long long)cols);
                break;
            }
            merged[k] = malloc((size_t)x->numel * sizeof(float));
            if (!merged[k]) {
                rc = lp_fail(err, "out of memory");
                break;
            }
            if (st_read_f32(x, merged[k], (size_t)x->numel, err) < 0) {
                rc = lp_wrap(err, "%s", sf->path);
                break;
            }
            fold(merged[k], st, a.params + st->a_offset, a.params + st->b_offset, in_out);
            done[si] = 1;
            rc = st_writer_add_f32(w, x->name, x->dtype, 2, x->shape, merged[k], err);
        }
    }
    for (int i = 0; i < a.n_sites && rc == 0; i++)
        if (!done[i])
            rc = lp_fail(err, "%s: no weight tensor for module %s", model_dir,
                         mods[a.sites[i].module].name);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (rc == 0) rc = st_writer_write(w, path, err);
    static const char *copied[] = {"config.json",
                                   "generation_config.json",
                                   "tokenizer.json",
                                   "tokenizer_config.json",
                                   "special_tokens_map.json",
                                   "vocab.json",
                                   "merges.txt",
                                   "tokenizer.model"};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0] && rc == 0; i++)
        rc = copy_file(model_dir, out_dir, copied[i], err);
    if (w) st_writer_free(w);
    for (int i = 0; merged && i < n_all; i++) free(merged[i]);
    free(merged);
    free(done);
    hf_weights_close(&files);
    lora_adapter_free(&a);
    model_free(m);
    return rc;
}
