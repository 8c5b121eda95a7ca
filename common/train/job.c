#include "job.h"

#include "lora_targets.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define INT_KEY(f, h)                                                                              \
    { #f, K_INT, offsetof(job, f), 0, h }
#define FLOAT_KEY(f, h)                                                                            \
    { #f, K_FLOAT, offsetof(job, f), 0, h }
#define BOOL_KEY(f, h)                                                                             \
    { #f, K_BOOL, offsetof(job, f), 0, h }
#define STRING_KEY(f, h)                                                                           \
    { #f, K_STRING, offsetof(job, f), sizeof(((job *)0)->f), h }

static const job_key KEYS[] = {
    INT_KEY(r, "LoRA rank"),
    FLOAT_KEY(lora_alpha, "LoRA alpha; scale = alpha/r"),
    FLOAT_KEY(lora_dropout, "dropout on the LoRA input"),
    BOOL_KEY(use_rslora, "scale = alpha/sqrt(r)"),
    STRING_KEY(target_modules, "PEFT module names, comma-separated, all-linear, or re:<regex>"),
    STRING_KEY(rank_pattern, "per-module ranks: name=r,name=r"),
    STRING_KEY(alpha_pattern, "per-module alphas: name=a,name=a"),
    FLOAT_KEY(lr, "peak learning rate"),
    FLOAT_KEY(adam_beta1, "AdamW beta1"),
    FLOAT_KEY(adam_beta2, "AdamW beta2"),
    FLOAT_KEY(adam_epsilon, "AdamW epsilon"),
    FLOAT_KEY(weight_decay, "AdamW decoupled weight decay"),
    STRING_KEY(lr_scheduler, "constant | linear | cosine (after warm-up)"),
    INT_KEY(warmup_steps, "linear warm-up steps"),
    FLOAT_KEY(max_grad_norm, "clip gradients to this global norm (0: off)"),
    INT_KEY(micro_batch, "sequences per micro-batch"),
    INT_KEY(seq_len, "tokens per sequence"),
    INT_KEY(grad_accum, "micro-batches per step"),
    INT_KEY(max_steps, "optimizer steps"),
    INT_KEY(eval_every, "validation every N steps (0: off)"),
    INT_KEY(save_every, "checkpoint every N steps (0: only at the end)"),
    INT_KEY(keep_checkpoints, "checkpoints kept (the newest K; 0: all)"),
    {"seed", K_U64, offsetof(job, seed), 0, "seed of init, data order and dropout"},
    INT_KEY(threads, "compute threads per worker (0: all cores)"),
    STRING_KEY(mode, "sync | async"),
    INT_KEY(staleness, "async: max versions a worker may run ahead (0: unbounded)"),
    INT_KEY(workers, "workers the data is split over; a sync job starts when all joined"),
    STRING_KEY(wire_dtype, "f32 | bf16 | f16: dtype of tensors on the wire"),
    INT_KEY(heartbeat_ms, "how often workers send a heartbeat (ms)"),
    INT_KEY(heartbeat_timeout_ms, "a worker silent this long is dropped (ms)"),
    STRING_KEY(layout, "data: pack (documents + EOS cut into sequences) | pad (one per sequence)"),
    STRING_KEY(txt_docs, "data: .txt documents are separated by blank lines | one per line"),
    STRING_KEY(bad_data, "data: fail | skip bad records (invalid UTF-8, malformed JSON, ...)"),
    STRING_KEY(long_docs, "data, pad layout: split | truncate | reject documents over seq_len"),
    STRING_KEY(special_tokens, "data: text | special: special tokens written in the text"),
    FLOAT_KEY(val_fraction, "data: share of documents held out for validation (0: none)"),
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

const job_key *job_keys(size_t *n) {
    *n = N_KEYS;
    return KEYS;
}

void job_defaults(job *j) {
    memset(j, 0, sizeof *j);
    j->r = 8;
    j->lora_alpha = 16;
    j->lora_dropout = 0;
    strcpy(j->target_modules, "all-linear"); /* PEFT's name for every linear layer */
    j->lr = 2e-3f;
    j->adam_beta1 = 0.9f;
    j->adam_beta2 = 0.999f;
    j->adam_epsilon = 1e-8f;
    j->weight_decay = 0.0f;
    strcpy(j->lr_scheduler, "cosine");
    j->warmup_steps = 0;
    j->max_grad_norm = 1.0f;
    j->micro_batch = 4;
    j->seq_len = 64;
    j->grad_accum = 1;
    j->max_steps = 100;
    j->eval_every = 0;
    j->save_every = 0;
    j->keep_checkpoints = 3;
    j->seed = 1337;
    j->threads = 0;
    strcpy(j->mode, "sync");
    j->staleness = 0;
    j->workers = 1;
    strcpy(j->wire_dtype, "f32");
    j->heartbeat_ms = 500;
    j->heartbeat_timeout_ms = 10000;
    strcpy(j->layout, "pack");
    strcpy(j->txt_docs, "blank");
    strcpy(j->bad_data, "fail");
    strcpy(j->long_docs, "split");
    strcpy(j->special_tokens, "text");
    j->val_fraction = 0;
}

/* "lora-alpha" and "lora_alpha" name the same key. */
static const job_key *find_key(const char *name) {
    char norm[64];
    size_t n = strlen(name);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++) norm[i] = name[i] == '-' ? '_' : name[i];
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].name, norm)) return &KEYS[i];
    return NULL;
}

static int parse_value(job *j, const job_key *k, const char *value, lp_err *err) {
    void *field = (char *)j + k->offset;
    char *end;
    errno = 0;
    switch (k->type) {
    case K_INT: {
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < INT_MIN || v > INT_MAX)
            return lp_fail(err, "%s: expected an integer, got '%s'", k->name, value);
        *(int *)field = (int)v;
        return 0;
    }
    case K_U64: {
        /* strtoull accepts " -1" and wraps it: insist on a plain run of digits */
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || !isdigit((unsigned char)value[0]))
            return lp_fail(err, "%s: expected a non-negative integer, got '%s'", k->name, value);
        *(unsigned long long *)field = v;
        return 0;
    }
    case K_FLOAT: {
        float v = strtof(value, &end);
        if (errno || end == value || *end || !isfinite(v))
            return lp_fail(err, "%s: expected a number, got '%s'", k->name, value);
        *(float *)field = v;
        return 0;
    }
    case K_BOOL:
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes"))
            *(int *)field = 1;
        else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no"))
            *(int *)field = 0;
        else
            return lp_fail(err, "%s: expected true or false, got '%s'", k->name, value);
        return 0;
    case K_STRING:
        if (strlen(value) >= k->size)
            return lp_fail(err, "%s: value longer than %zu characters", k->name, k->size - 1);
        strcpy((char *)field, value);
        return 0;
    }
    return lp_fail(err, "%s: unknown key type", k->name);
}

int job_set(job *j, const char *key, const char *value, lp_err *err) {
    const job_key *k = find_key(key);
    if (!k) return lp_fail(err, "unknown job setting '%s'", key);
    return parse_value(j, k, value, err);
}

/* target_modules may be a JSON list, as in adapter_config.json; the other keys are scalars. */
static int json_to_text(const char *key, json_t *v, char *buf, size_t size, lp_err *err) {
    if (json_is_string(v)) {
        snprintf(buf, size, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        snprintf(buf, size, "%.9g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        snprintf(buf, size, "%s", json_is_true(v) ? "true" : "false");
    } else if (json_is_array(v)) {
        size_t i, used = 0;
        json_t *item;
        buf[0] = 0;
        json_array_foreach(v, i, item) {
            if (!json_is_string(item)) return lp_fail(err, "%s: list entries must be strings", key);
            used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%s%s",
                                     i ? "," : "", json_string_value(item));
        }
        if (used >= size) return lp_fail(err, "%s: list too long", key);
    } else {
        return lp_fail(err, "%s: unsupported value type", key);
    }
    return 0;
}

int job_load_file(job *j, const char *path, lp_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return lp_fail(err, "%s:%d: %s", path, jerr.line, jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = lp_fail(err, "%s: a job file is a JSON object of settings", path);
    } else {
        const char *key;
        json_t *value;
        const job_key *seen[N_KEYS];
        size_t n_seen = 0;
        json_object_foreach(root, key, value) {
            char text[1024];
            /* "lora_alpha" and "lora-alpha" are one key: given twice, which one wins? */
            const job_key *k = find_key(key);
            int twice = 0;
            for (size_t i = 0; k && i < n_seen; i++) twice |= seen[i] == k;
            if (twice) {
                rc = lp_fail(err, "%s: '%s' is set twice (as '%s' and another spelling)", path,
                             k->name, key);
                break;
            }
            if (k) seen[n_seen++] = k;
            if (json_to_text(key, value, text, sizeof text, err) < 0 ||
                job_set(j, key, text, err) < 0) {
                rc = lp_wrap(err, "%s", path);
                break;
            }
        }
    }
    json_decref(root);
    return rc;
}

int job_apply_env(job *j, lp_err *err) {
    for (size_t i = 0; i < N_KEYS; i++) {
        char var[80] = "LORAPS_";
        size_t n = strlen(var);
        for (const char *c = KEYS[i].name; *c && n + 1 < sizeof var; c++)
            var[n++] = (char)toupper((unsigned char)*c);
        var[n] = 0;
        const char *value = getenv(var);
        if (value && parse_value(j, &KEYS[i], value, err) < 0) return lp_wrap(err, "%s", var);
    }
    return 0;
}

int job_parse_flag(job *j, int argc, char **argv, int *i, lp_err *err) {
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0) return 0;
    char name[64];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    if (len >= sizeof name) return 0;
    memcpy(name, arg + 2, len);
    name[len] = 0;
    const job_key *k = find_key(name);
    if (!k) return 0;
    const char *value = eq ? eq + 1 : NULL;
    if (!value && k->type == K_BOOL && (*i + 1 >= argc || !strncmp(argv[*i + 1], "--", 2))) {
        value = "true"; /* a bare boolean flag, like --use-rslora */
    } else if (!value) {
        if (*i + 1 >= argc) return lp_fail(err, "--%s needs a value", name);
        value = argv[++*i];
    }
    if (parse_value(j, k, value, err) < 0) return lp_wrap(err, "--%s", name);
    ++*i;
    return 1;
}

int job_validate(const job *j, lp_err *err) {
    if (j->r <= 0 || j->r > LORA_MAX_RANK)
        return lp_fail(err, "r must be in 1..%d, got %d", LORA_MAX_RANK, j->r);
    if (j->lora_alpha <= 0) return lp_fail(err, "lora_alpha must be positive");
    if (j->lora_dropout < 0 || j->lora_dropout >= 1)
        return lp_fail(err, "lora_dropout must be in [0, 1), got %g", j->lora_dropout);
    if (!j->target_modules[0]) return lp_fail(err, "target_modules is empty");
    if (j->lr < 0) return lp_fail(err, "lr must not be negative");
    if (j->adam_beta1 < 0 || j->adam_beta1 >= 1 || j->adam_beta2 < 0 || j->adam_beta2 >= 1)
        return lp_fail(err, "adam betas must be in [0, 1)");
    if (j->adam_epsilon <= 0) return lp_fail(err, "adam_epsilon must be positive");
    if (j->weight_decay < 0) return lp_fail(err, "weight_decay must not be negative");
    if (strcmp(j->lr_scheduler, "constant") && strcmp(j->lr_scheduler, "linear") &&
        strcmp(j->lr_scheduler, "cosine"))
        return lp_fail(err, "lr_scheduler must be constant, linear or cosine, got '%s'",
                       j->lr_scheduler);
    if (j->warmup_steps < 0) return lp_fail(err, "warmup_steps must not be negative");
    if (j->micro_batch <= 0) return lp_fail(err, "micro_batch must be positive");
    if (j->seq_len <= 0) return lp_fail(err, "seq_len must be positive");
    if (j->grad_accum <= 0) return lp_fail(err, "grad_accum must be positive");
    if (j->max_steps <= 0) return lp_fail(err, "max_steps must be positive");
    if (j->threads > JOB_MAX_THREADS)
        return lp_fail(err, "threads must be at most %d, got %d", JOB_MAX_THREADS, j->threads);
    if (j->eval_every < 0 || j->save_every < 0 || j->threads < 0 || j->keep_checkpoints < 0)
        return lp_fail(err,
                       "eval_every, save_every, keep_checkpoints and threads must not be negative");
    if (strcmp(j->mode, "sync") && strcmp(j->mode, "async"))
        return lp_fail(err, "mode must be sync or async, got '%s'", j->mode);
    if (j->staleness < 0) return lp_fail(err, "staleness must not be negative");
    if (j->workers < 1 || j->workers > 65536)
        return lp_fail(err, "workers must be in 1..65536, got %d", j->workers);
    if (strcmp(j->wire_dtype, "f32") && strcmp(j->wire_dtype, "bf16") &&
        strcmp(j->wire_dtype, "f16"))
        return lp_fail(err, "wire_dtype must be f32, bf16 or f16, got '%s'", j->wire_dtype);
    if (j->heartbeat_ms < 10 || j->heartbeat_timeout_ms < 2 * j->heartbeat_ms)
        return lp_fail(err,
                       "heartbeat_ms must be >= 10 and heartbeat_timeout_ms at least twice "
                       "it (got %d and %d)",
                       j->heartbeat_ms, j->heartbeat_timeout_ms);
    if (job_data_options(j, NULL, err) < 0) return -1;
    lora_config c;
    if (job_lora_config(j, &c, err) < 0) return -1;
    lora_config_free(&c);
    return 0;
}

void job_print(const job *j, FILE *out, const char *prefix) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const void *field = (const char *)j + KEYS[i].offset;
        fprintf(out, "%s%-16s ", prefix, KEYS[i].name);
        switch (KEYS[i].type) {
        case K_INT:
            fprintf(out, "%d\n", *(const int *)field);
            break;
        case K_U64:
            fprintf(out, "%llu\n", *(const unsigned long long *)field);
            break;
        case K_FLOAT:
            fprintf(out, "%g\n", *(const float *)field);
            break;
        case K_BOOL:
            fprintf(out, "%s\n", *(const int *)field ? "true" : "false");
            break;
        case K_STRING:
            fprintf(out, "%s\n", (const char *)field);
            break;
        }
    }
}

char *job_print_text(const job *j) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    job_print(j, f, "");
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

void job_print_help(FILE *out) {
    for (size_t i = 0; i < N_KEYS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", KEYS[i].name);
        for (char *c = flag + 2; *c; c++)
            if (*c == '_') *c = '-';
        fprintf(out, "  %-20s %s\n", flag, KEYS[i].help);
    }
}

int job_lora_config(const job *j, lora_config *c, lp_err *err) {
    lora_config_defaults(c);
    c->r = j->r;
    c->alpha = j->lora_alpha;
    c->dropout = j->lora_dropout;
    c->use_rslora = j->use_rslora;
    if (lora_config_set_targets(c, j->target_modules, err) < 0 ||
        (j->rank_pattern[0] && lora_config_set_patterns(c, 0, j->rank_pattern, err) < 0) ||
        (j->alpha_pattern[0] && lora_config_set_patterns(c, 1, j->alpha_pattern, err) < 0)) {
        lora_config_free(c);
        return -1;
    }
    return 0;
}

int job_data_options(const job *j, dataset_options *o, lp_err *err) {
    dataset_options tmp;
    if (!o) o = &tmp;
    dataset_options_default(o);
    char n[32];
    snprintf(n, sizeof n, "%d", j->seq_len);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", j->seed);
    const char *kv[][2] = {{"seq_len", n},
                           {"seed", seed},
                           {"layout", j->layout},
                           {"txt_docs", j->txt_docs},
                           {"bad_data", j->bad_data},
                           {"long_docs", j->long_docs},
                           {"special_tokens", j->special_tokens}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (dataset_options_set(o, kv[i][0], kv[i][1], err) < 0) return -1;
    if (!(j->val_fraction >= 0 && j->val_fraction < 1))
        return lp_fail(err, "val_fraction must be in [0, 1), got %g", j->val_fraction);
    o->val_fraction = j->val_fraction;
    return 0;
}

void job_adamw(const job *j, adamw_config *c) {
    c->beta1 = j->adam_beta1;
    c->beta2 = j->adam_beta2;
    c->eps = j->adam_epsilon;
    c->weight_decay = j->weight_decay;
}

void job_schedule(const job *j, int total_steps, lr_schedule *s) {
    s->lr = j->lr;
    s->kind = !strcmp(j->lr_scheduler, "linear")   ? LR_LINEAR
              : !strcmp(j->lr_scheduler, "cosine") ? LR_COSINE
                                                   : LR_CONSTANT;
    s->warmup_steps = j->warmup_steps;
    s->total_steps = total_steps;
}
