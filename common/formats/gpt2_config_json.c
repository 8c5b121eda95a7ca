#include "hf_config.h"
#include "fsutil.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value as it appears in the file, for error messages. */
static void describe(const json_t *v, char *out, size_t size) {
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(out, size, "%s", text ? text : "?");
    free(text);
}

static int bad_field(const char *path, const char *field, const char *want, const json_t *v,
                     lp_err *err) {
    char got[128];
    describe(v, got, sizeof got);
    return lp_fail(err, "%s: field '%s' must be %s, got %s", path, field, want, got);
}

/* A required positive int; `fallback` names a field read instead when `field` is absent. */
static int read_positive_int(const json_t *root, const char *path, const char *field,
                             const char *fallback, int *out, lp_err *err) {
    const json_t *v = json_object_get(root, field);
    if (!v && fallback && json_object_get(root, fallback)) {
        field = fallback;
        v = json_object_get(root, field);
    }
    if (!v) return lp_fail(err, "%s: field '%s' is missing", path, field);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT_MAX) {
        return bad_field(path, field, "a positive integer", v, err);
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int read_epsilon(const json_t *root, const char *path, float *out, lp_err *err) {
    const json_t *v = json_object_get(root, "layer_norm_epsilon");
    if (!v) {
        *out = 1e-5f;
        return 0;
    }
    double eps = json_number_value(v);
    if (!json_is_number(v) || !(eps > 0) || !isfinite((float)eps)) {
        return bad_field(path, "layer_norm_epsilon", "a positive number", v, err);
    }
    *out = (float)eps;
    return 0;
}

static int read_activation(const json_t *root, const char *path, gpt2_config *c, lp_err *err) {
    const json_t *v = json_object_get(root, "activation_function");
    const char *name = v ? json_string_value(v) : "gelu_new";
    if (!name || (strcmp(name, "gelu_new") != 0 && strcmp(name, "gelu_pytorch_tanh") != 0)) {
        return bad_field(path, "activation_function",
                         "\"gelu_new\" or \"gelu_pytorch_tanh\" (the tanh GELU GPT-2 uses)", v,
                         err);
    }
    snprintf(c->activation_function, sizeof c->activation_function, "%s", name);
    return 0;
}

static int read_tie(const json_t *root, const char *path, int *out, lp_err *err) {
    const json_t *v = json_object_get(root, "tie_word_embeddings");
    if (!v) {
        *out = 1;
        return 0;
    }
    if (!json_is_boolean(v)) return bad_field(path, "tie_word_embeddings", "true or false", v, err);
    *out = json_is_true(v);
    return 0;
}

/* Fields this model does not support must keep the values that mean "plain GPT-2". */
static int check_unsupported(const json_t *root, const char *path, const gpt2_config *c,
                             lp_err *err) {
    const json_t *type = json_object_get(root, "model_type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "gpt2") != 0)) {
        return bad_field(path, "model_type", "\"gpt2\"", type, err);
    }
    /* attention variants of HF's GPT-2 that this implementation does not compute */
    static const struct {
        const char *field;
        int supported; /* the one value we compute */
    } FLAGS[] = {{"scale_attn_weights", 1},
                 {"scale_attn_by_inverse_layer_idx", 0},
                 {"reorder_and_upcast_attn", 0}};
    for (size_t i = 0; i < sizeof FLAGS / sizeof FLAGS[0]; i++) {
        const json_t *v = json_object_get(root, FLAGS[i].field);
        if (v && !(json_is_boolean(v) && json_is_true(v) == FLAGS[i].supported))
            return bad_field(path, FLAGS[i].field, FLAGS[i].supported ? "true" : "false", v, err);
    }
    const json_t *inner = json_object_get(root, "n_inner");
    if (inner && !json_is_null(inner) &&
        !(json_is_integer(inner) && json_integer_value(inner) == 4 * (json_int_t)c->n_embd)) {
        return bad_field(path, "n_inner", "null or 4 * n_embd", inner, err);
    }
    return 0;
}

static int parse_config(gpt2_config *c, const json_t *root, const char *path, lp_err *err) {
    if (!json_is_object(root)) return lp_fail(err, "%s: not a JSON object", path);
    if (read_positive_int(root, path, "n_embd", NULL, &c->n_embd, err) != 0 ||
        read_positive_int(root, path, "n_layer", NULL, &c->n_layer, err) != 0 ||
        read_positive_int(root, path, "n_head", NULL, &c->n_head, err) != 0 ||
        read_positive_int(root, path, "n_positions", "n_ctx", &c->n_positions, err) != 0 ||
        read_positive_int(root, path, "vocab_size", NULL, &c->vocab_size, err) != 0 ||
        read_epsilon(root, path, &c->layer_norm_epsilon, err) != 0 ||
        read_activation(root, path, c, err) != 0 ||
        read_tie(root, path, &c->tie_word_embeddings, err) != 0 ||
        check_unsupported(root, path, c, err) != 0) {
        return -1;
    }
    /* far beyond any GPT-2, and small enough that sizes computed from them cannot overflow */
    if (c->n_layer > 1024 || c->n_embd > 65536 || c->n_positions > 1 << 20 ||
        c->vocab_size > 1 << 24)
        return lp_fail(err,
                       "%s: sizes out of range (n_layer <= 1024, n_embd <= 65536, "
                       "n_positions <= 2^20, vocab_size <= 2^24)",
                       path);
    if (c->n_embd % c->n_head != 0) {
        return lp_fail(err, "%s: n_embd (%d) must be divisible by n_head (%d)", path, c->n_embd,
                       c->n_head);
    }
    return 0;
}

int gpt2_config_read(gpt2_config *c, const char *path, lp_err *err) {
    memset(c, 0, sizeof *c);
    char *text;
    size_t len;
    if (fs_read_all(path, &text, &len, err) != 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) {
        return lp_fail(err, "%s: malformed JSON: %s (line %d, column %d)", path, jerr.text,
                       jerr.line, jerr.column);
    }
    int rc = parse_config(c, root, path, err);
    json_decref(root);
    return rc;
}

/* The shortest decimal that reads back as the same float, so 1e-5f is written as 1e-05
 * rather than 9.99999974737875e-06. */
static double shortest_decimal(float f) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

/* The fields of GPT2Config, as transformers writes them, sorted by key. */
static json_t *config_json(const gpt2_config *c) {
    json_t *root = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string("GPT2LMHeadModel"));
    const char *act = c->activation_function[0] ? c->activation_function : "gelu_new";
    json_object_set_new(root, "activation_function", json_string(act));
    json_object_set_new(root, "architectures", arch);
    json_object_set_new(root, "attn_pdrop", json_real(0.0));
    json_object_set_new(root, "bos_token_id", json_integer(c->vocab_size - 1));
    json_object_set_new(root, "embd_pdrop", json_real(0.0));
    json_object_set_new(root, "eos_token_id", json_integer(c->vocab_size - 1));
    json_object_set_new(root, "initializer_range", json_real(0.02));
    json_object_set_new(root, "layer_norm_epsilon",
                        json_real(shortest_decimal(c->layer_norm_epsilon)));
    json_object_set_new(root, "model_type", json_string("gpt2"));
    json_object_set_new(root, "n_ctx", json_integer(c->n_positions));
    json_object_set_new(root, "n_embd", json_integer(c->n_embd));
    json_object_set_new(root, "n_head", json_integer(c->n_head));
    json_object_set_new(root, "n_inner", json_null());
    json_object_set_new(root, "n_layer", json_integer(c->n_layer));
    json_object_set_new(root, "n_positions", json_integer(c->n_positions));
    json_object_set_new(root, "reorder_and_upcast_attn", json_false());
    json_object_set_new(root, "resid_pdrop", json_real(0.0));
    json_object_set_new(root, "scale_attn_by_inverse_layer_idx", json_false());
    json_object_set_new(root, "scale_attn_weights", json_true());
    json_object_set_new(root, "summary_activation", json_null());
    json_object_set_new(root, "summary_first_dropout", json_real(0.1));
    json_object_set_new(root, "summary_proj_to_labels", json_true());
    json_object_set_new(root, "summary_type", json_string("cls_index"));
    json_object_set_new(root, "summary_use_proj", json_true());
    json_object_set_new(root, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(root, "use_cache", json_true());
    json_object_set_new(root, "vocab_size", json_integer(c->vocab_size));
    return root;
}

int gpt2_config_write(const gpt2_config *c, const char *path, lp_err *err) {
    if (c->n_embd <= 0 || c->n_layer <= 0 || c->n_head <= 0 || c->n_positions <= 0 ||
        c->vocab_size <= 0 || c->n_embd % c->n_head != 0) {
        return lp_fail(err, "%s: refusing to write an invalid GPT-2 config", path);
    }
    json_t *root = config_json(c);
    /* Nine significant digits print every value above exactly, without 0.02000000000000000042. */
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!text) return lp_fail(err, "%s: out of memory", path);
    size_t len = strlen(text);
    char *with_newline = realloc(text, len + 2);
    if (!with_newline) {
        free(text);
        return lp_fail(err, "%s: out of memory", path);
    }
    memcpy(with_newline + len, "\n", 2);
    int rc = fs_write_atomic(path, with_newline, len + 1, err);
    free(with_newline);
    return rc;
}
