#include "hf_config.h"

#include "fsutil.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad_field(const char *path, const char *field, const char *want, const json_t *v,
                     lp_err *err) {
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    lp_fail(err, "%s: field '%s' must be %s, got %s", path, field, want, text ? text : "?");
    free(text);
    return -1;
}

/* A positive int: required if fallback < 0, else fallback when absent or null. */
static int read_int(const json_t *obj, const char *path, const char *field, int fallback, int *out,
                    lp_err *err) {
    const json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        if (fallback < 0) return lp_fail(err, "%s: field '%s' is missing", path, field);
        *out = fallback;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT_MAX)
        return bad_field(path, field, "a positive integer", v, err);
    *out = (int)json_integer_value(v);
    return 0;
}

/* A positive number, fallback when absent (fallback <= 0: required). */
static int read_number(const json_t *obj, const char *path, const char *field, double fallback,
                       double *out, lp_err *err) {
    const json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        if (!(fallback > 0)) return lp_fail(err, "%s: field '%s' is missing", path, field);
        *out = fallback;
        return 0;
    }
    double x = json_number_value(v);
    if (!json_is_number(v) || !(x > 0) || !isfinite(x))
        return bad_field(path, field, "a positive number", v, err);
    *out = x;
    return 0;
}

static int read_bool(const json_t *obj, const char *path, const char *field, int fallback, int *out,
                     lp_err *err) {
    const json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        *out = fallback;
        return 0;
    }
    if (!json_is_boolean(v)) return bad_field(path, field, "true or false", v, err);
    *out = json_is_true(v);
    return 0;
}

/* RoPE: rope_theta at the top level (transformers 4) or in rope_parameters (transformers 5);
 * the scaling in rope_scaling (4) or rope_parameters (5), keyed "rope_type" or "type". */
static int read_rope(llama_config *c, const json_t *root, const char *path, lp_err *err) {
    const json_t *params = json_object_get(root, "rope_parameters");
    const json_t *scaling = json_object_get(root, "rope_scaling");
    const char *where = "rope_parameters";
    if (params && !json_is_null(params) && !json_is_object(params))
        return bad_field(path, "rope_parameters", "an object", params, err);
    if (scaling && !json_is_null(scaling) && !json_is_object(scaling))
        return bad_field(path, "rope_scaling", "an object or null", scaling, err);
    if (!json_is_object(params)) params = NULL;
    if (!json_is_object(scaling)) scaling = NULL;
    c->rope_theta = 10000.0;
    if (read_number(root, path, "rope_theta", 10000.0, &c->rope_theta, err) < 0) return -1;
    const json_t *theta = params ? json_object_get(params, "rope_theta") : NULL;
    if (theta && !json_is_null(theta)) {
        c->rope_theta = json_number_value(theta);
        if (!json_is_number(theta) || !(c->rope_theta > 0) || !isfinite(c->rope_theta))
            return bad_field(path, "rope_parameters.rope_theta", "a positive number", theta, err);
    }
    const json_t *spec = params;
    if (scaling) {
        spec = scaling;
        where = "rope_scaling";
    }
    c->rope_type = LLAMA_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    if (!spec) return 0;
    const json_t *type = json_object_get(spec, "rope_type");
    if (!type) type = json_object_get(spec, "type");
    char field[64];
    snprintf(field, sizeof field, "%s.rope_type", where);
    if (!type || json_is_null(type)) return 0;
    const char *name = json_string_value(type);
    if (!name) return bad_field(path, field, "a string", type, err);
    if (!strcmp(name, "default")) return 0;
        /* The scaling's own numbers, named as they are nested, for errors. */
#define SUB(key, fallback, dst)                                                                    \
    do {                                                                                           \
        char f_[96];                                                                               \
        snprintf(f_, sizeof f_, "%s.%s", where, key);                                              \
        const json_t *v_ = json_object_get(spec, key);                                             \
        double x_ = json_number_value(v_);                                                         \
        if (!v_ || json_is_null(v_)) {                                                             \
            if (!((fallback) > 0)) return lp_fail(err, "%s: field '%s' is missing", path, f_);     \
            x_ = (fallback);                                                                       \
        } else if (!json_is_number(v_) || !(x_ > 0) || !isfinite(x_)) {                            \
            return bad_field(path, f_, "a positive number", v_, err);                              \
        }                                                                                          \
        dst = x_;                                                                                  \
    } while (0)
    if (!strcmp(name, "linear")) {
        c->rope_type = LLAMA_ROPE_LINEAR;
        SUB("factor", 0, c->rope_factor);
        return 0;
    }
    if (!strcmp(name, "llama3")) {
        c->rope_type = LLAMA_ROPE_LLAMA3;
        double orig = 0;
        SUB("factor", 0, c->rope_factor);
        SUB("low_freq_factor", 0, c->rope_low_freq_factor);
        SUB("high_freq_factor", 0, c->rope_high_freq_factor);
        SUB("original_max_position_embeddings", 0, orig);
        if (orig != floor(orig) || orig > INT_MAX)
            return lp_fail(err,
                           "%s: field '%s.original_max_position_embeddings' must be an integer",
                           path, where);
        c->rope_original_max_position_embeddings = (int)orig;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return lp_fail(err,
                           "%s: field '%s.high_freq_factor' (%g) must exceed low_freq_factor (%g)",
                           path, where, c->rope_high_freq_factor, c->rope_low_freq_factor);
        return 0;
    }
#undef SUB
    return bad_field(path, field,
                     "\"default\", \"linear\" or \"llama3\" (others are not supported)", type, err);
}

static int parse(llama_config *c, const json_t *root, const char *path, lp_err *err) {
    if (!json_is_object(root)) return lp_fail(err, "%s: not a JSON object", path);
    const json_t *type = json_object_get(root, "model_type");
    const char *tn = json_string_value(type);
    if (!tn || (strcmp(tn, "llama") && strcmp(tn, "qwen2") && strcmp(tn, "mistral")))
        return type
                   ? bad_field(path, "model_type", "\"llama\", \"qwen2\" or \"mistral\"", type, err)
                   : lp_fail(err, "%s: field 'model_type' is missing", path);
    snprintf(c->model_type, sizeof c->model_type, "%s", tn);
    int is_llama = !strcmp(tn, "llama"), is_qwen2 = !strcmp(tn, "qwen2");
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu")))
        return bad_field(path, "hidden_act", "\"silu\"", act, err);
    double eps = 1e-6;
    int default_max_pos = is_llama ? 2048 : is_qwen2 ? 32768 : 131072;
    if (read_int(root, path, "hidden_size", -1, &c->hidden_size, err) < 0 ||
        read_int(root, path, "intermediate_size", -1, &c->intermediate_size, err) < 0 ||
        read_int(root, path, "num_hidden_layers", -1, &c->num_hidden_layers, err) < 0 ||
        read_int(root, path, "num_attention_heads", -1, &c->num_attention_heads, err) < 0 ||
        read_int(root, path, "num_key_value_heads", c->num_attention_heads, &c->num_key_value_heads,
                 err) < 0 ||
        read_int(root, path, "head_dim", c->hidden_size / c->num_attention_heads, &c->head_dim,
                 err) < 0 ||
        read_int(root, path, "vocab_size", -1, &c->vocab_size, err) < 0 ||
        read_int(root, path, "max_position_embeddings", default_max_pos,
                 &c->max_position_embeddings, err) < 0 ||
        read_number(root, path, "rms_norm_eps", eps, &eps, err) < 0 ||
        read_bool(root, path, "tie_word_embeddings", 0, &c->tie_word_embeddings, err) < 0 ||
        read_rope(c, root, path, err) < 0)
        return -1;
    c->rms_norm_eps = (float)eps;
    if (c->head_dim == 0)
        return lp_fail(err,
                       "%s: field 'head_dim' is missing and hidden_size (%d) < "
                       "num_attention_heads (%d)",
                       path, c->hidden_size, c->num_attention_heads);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return lp_fail(err,
                       "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads "
                       "(%d)",
                       path, c->num_attention_heads, c->num_key_value_heads);
    if (c->head_dim % 2 != 0)
        return lp_fail(err, "%s: field 'head_dim' (%d) must be even for rotary embeddings", path,
                       c->head_dim);
    if (is_llama) {
        int ab, mb;
        if (read_bool(root, path, "attention_bias", 0, &ab, err) < 0 ||
            read_bool(root, path, "mlp_bias", 0, &mb, err) < 0)
            return -1;
        c->qkv_bias = c->o_bias = ab;
        c->mlp_bias = mb;
    } else if (is_qwen2) {
        /* Qwen2Attention: q/k/v always have biases, o_proj never. */
        int sw;
        if (read_bool(root, path, "use_sliding_window", 0, &sw, err) < 0) return -1;
        if (sw)
            return lp_fail(err,
                           "%s: field 'use_sliding_window' is true: Qwen2's sliding-window "
                           "layers are not supported",
                           path);
        c->qkv_bias = 1;
    } else {
        const json_t *sw = json_object_get(root, "sliding_window");
        if (sw && !json_is_null(sw) &&
            read_int(root, path, "sliding_window", -1, &c->sliding_window, err) < 0)
            return -1;
    }
    return 0;
}

int llama_config_read(llama_config *c, const char *path, lp_err *err) {
    memset(c, 0, sizeof *c);
    char *text;
    size_t len;
    if (fs_read_all(path, &text, &len, err) != 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return lp_fail(err, "%s: malformed JSON: %s (line %d, column %d)", path, jerr.text,
                       jerr.line, jerr.column);
    int rc = parse(c, root, path, err);
    json_decref(root);
    return rc;
}

static double shortest_decimal(double d) {
    char buf[40];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, d);
        if ((float)strtod(buf, NULL) == (float)d) return strtod(buf, NULL);
    }
    return d;
}

int llama_config_write(const llama_config *c, const char *path, lp_err *err) {
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 ||
        c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 || c->head_dim <= 0 ||
        c->vocab_size <= 0 || c->max_position_embeddings <= 0 ||
        c->num_attention_heads % c->num_key_value_heads != 0 || c->head_dim % 2 != 0)
        return lp_fail(err, "%s: refusing to write an invalid Llama config", path);
    int qwen2 = !strcmp(c->model_type, "qwen2"), mistral = !strcmp(c->model_type, "mistral");
    json_t *root = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string(qwen2     ? "Qwen2ForCausalLM"
                                            : mistral ? "MistralForCausalLM"
                                                      : "LlamaForCausalLM"));
    json_object_set_new(root, "architectures", arch);
    json_object_set_new(root, "model_type",
                        json_string(qwen2     ? "qwen2"
                                    : mistral ? "mistral"
                                              : "llama"));
    if (mistral)
        json_object_set_new(root, "sliding_window",
                            c->sliding_window ? json_integer(c->sliding_window) : json_null());
    if (qwen2) json_object_set_new(root, "use_sliding_window", json_false());
    if (!qwen2 && !mistral) {
        json_object_set_new(root, "attention_bias", json_boolean(c->qkv_bias));
        json_object_set_new(root, "mlp_bias", json_boolean(c->mlp_bias));
    }
    json_object_set_new(root, "attention_dropout", json_real(0.0));
    json_object_set_new(root, "bos_token_id", json_integer(0));
    json_object_set_new(root, "eos_token_id", json_integer(0));
    json_object_set_new(root, "head_dim", json_integer(c->head_dim));
    json_object_set_new(root, "hidden_act", json_string("silu"));
    json_object_set_new(root, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(root, "initializer_range", json_real(0.02));
    json_object_set_new(root, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(root, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(root, "num_attention_heads", json_integer(c->num_attention_heads));
    json_object_set_new(root, "num_hidden_layers", json_integer(c->num_hidden_layers));
    json_object_set_new(root, "num_key_value_heads", json_integer(c->num_key_value_heads));
    json_object_set_new(root, "rms_norm_eps", json_real(shortest_decimal(c->rms_norm_eps)));
    json_object_set_new(root, "rope_theta", json_real(c->rope_theta));
    if (c->rope_type == LLAMA_ROPE_DEFAULT) {
        json_object_set_new(root, "rope_scaling", json_null());
    } else {
        json_t *s = json_object();
        json_object_set_new(s, "rope_type",
                            json_string(c->rope_type == LLAMA_ROPE_LINEAR ? "linear" : "llama3"));
        json_object_set_new(s, "factor", json_real(c->rope_factor));
        if (c->rope_type == LLAMA_ROPE_LLAMA3) {
            json_object_set_new(s, "low_freq_factor", json_real(c->rope_low_freq_factor));
            json_object_set_new(s, "high_freq_factor", json_real(c->rope_high_freq_factor));
            json_object_set_new(s, "original_max_position_embeddings",
                                json_integer(c->rope_original_max_position_embeddings));
        }
        json_object_set_new(root, "rope_scaling", s);
    }
    json_object_set_new(root, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(root, "torch_dtype", json_string("float32"));
    json_object_set_new(root, "use_cache", json_true());
    json_object_set_new(root, "vocab_size", json_integer(c->vocab_size));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!text) return lp_fail(err, "%s: out of memory", path);
    size_t len = strlen(text);
    char *buf = realloc(text, len + 2);
    if (!buf) {
        free(text);
        return lp_fail(err, "%s: out of memory", path);
    }
    memcpy(buf + len, "\n", 2);
    int rc = fs_write_atomic(path, buf, len + 1, err);
    free(buf);
    return rc;
}
