/* The model interface: builds a family over a weight source and dispatches to it. Everything
 * families share (the weight source, module list, fingerprint) is kept here. */
#include "model_family.h"

#include "hash.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct model_trainer {
    const model_family_ops *ops;
    void *impl;
    int vocab_size, n_tokens; /* for checking inputs before any family sees them */
    int B, T;
};

static int check_tokens(const model_trainer *t, const int *inputs, const int *targets,
                        lp_err *err) {
    for (int i = 0; i < t->n_tokens; i++) {
        if (inputs[i] < 0 || inputs[i] >= t->vocab_size)
            return lp_fail(err, "input token %d at position %d is outside the vocabulary (%d)",
                           inputs[i], i, t->vocab_size);
        if (targets && targets[i] >= t->vocab_size)
            return lp_fail(err, "target token %d at position %d is outside the vocabulary (%d)",
                           targets[i], i, t->vocab_size);
    }
    return 0;
}

static int model_build(model **out, const char *type, weight_source src,
                       int (*build)(model *m, const void *cfg, lp_err *err), const void *cfg,
                       lp_err *err) {
    model *m = calloc(1, sizeof *m);
    if (!m) {
        if (src.release) src.release(src.ctx);
        return lp_fail(err, "out of memory");
    }
    m->src = src;
    m->fingerprint = hash64(HASH64_INIT, type, strlen(type));
    if (build(m, cfg, err) < 0) {
        model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

static int build_gpt2(model *m, const void *cfg, lp_err *err) {
    return gpt2_build(m, cfg, err);
}

static int build_llama(model *m, const void *cfg, lp_err *err) {
    return llama_build(m, cfg, err);
}

int model_build_gpt2(model **out, const gpt2_config *c, weight_source src, lp_err *err) {
    return model_build(out, "gpt2", src, build_gpt2, c, err);
}

int model_build_llama(model **out, const llama_config *c, weight_source src, lp_err *err) {
    return model_build(out, c->model_type, src, build_llama, c, err);
}

void model_free(model *m) {
    if (!m) return;
    if (m->ops && m->family) m->ops->free_family(m->family);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->modules);
    if (m->src.release) m->src.release(m->src.ctx);
    free(m);
}

static void shape_text(char *buf, size_t size, const int64_t *shape, int ndim) {
    buf[0] = 0;
    for (int i = 0; i < ndim; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
}

int model_weight_view(model *m, const char *prefix, const char *name, int64_t rows, int64_t cols,
                      weight_view *t, lp_err *err) {
    if (m->src.find(m->src.ctx, prefix, name, rows, cols, t) != 0)
        return lp_fail(err, "model weights: tensor '%s' is missing", name);
    int ndim = cols ? 2 : 1;
    int64_t want[2] = {rows, cols};
    if (t->ndim != ndim || t->shape[0] != rows || (ndim == 2 && t->shape[1] != cols)) {
        char got[96], expected[48];
        shape_text(got, sizeof got, t->shape, t->ndim);
        shape_text(expected, sizeof expected, want, ndim);
        return lp_fail(err, "model weights: tensor '%s' has shape [%s], expected [%s]", name, got,
                       expected);
    }
    size_t numel = (size_t)rows * (size_t)(cols ? cols : 1);
    if (t->nbytes != numel * dtype_size(t->dtype))
        return lp_fail(err, "model weights: tensor '%s' holds %zu bytes, not %zu of %s", name,
                       t->nbytes, numel * dtype_size(t->dtype), dtype_name(t->dtype));
    m->fingerprint = hash64(m->fingerprint, name, strlen(name));
    m->fingerprint = hash64(m->fingerprint, t->data, t->nbytes);
    return 0;
}

const float *model_weight_f32(model *m, const char *name, const weight_view *t, lp_err *err) {
    size_t numel = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    m->weight_bytes += numel * sizeof(float);
    if (t->dtype == DT_F32 && (uintptr_t)t->data % sizeof(float) == 0) return t->data;
    float *copy = malloc(numel * sizeof(float));
    if (!copy) {
        lp_fail(err, "out of memory converting '%s'", name);
        return NULL;
    }
    if (dtype_to_f32(t->data, t->dtype, copy, numel) != 0) {
        free(copy);
        lp_fail(err, "model weights: tensor '%s' is %s, not a float type", name,
                dtype_name(t->dtype));
        return NULL;
    }
    float **owned = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *m->owned);
    if (!owned) {
        free(copy);
        lp_fail(err, "out of memory");
        return NULL;
    }
    m->owned = owned;
    m->owned[m->n_owned++] = copy;
    return copy;
}

const float *model_weight(model *m, const char *prefix, const char *name, int64_t rows,
                          int64_t cols, lp_err *err) {
    weight_view t;
    if (model_weight_view(m, prefix, name, rows, cols, &t, err) < 0) return NULL;
    return model_weight_f32(m, name, &t, err);
}

const char *model_arch(const model *m) {
    return m->arch;
}

int model_vocab_size(const model *m) {
    return m->vocab_size;
}

int model_max_seq_len(const model *m) {
    return m->max_seq_len;
}

int model_hidden_size(const model *m) {
    return m->hidden_size;
}

int model_fan_in_fan_out(const model *m) {
    return m->layout == W_IN_OUT;
}

int model_lora_modules(const model *m, const lora_module **modules) {
    *modules = m->modules;
    return m->n_modules;
}

uint64_t model_fingerprint(const model *m) {
    return m->fingerprint;
}

size_t model_weight_bytes(const model *m) {
    return m->weight_bytes;
}

double model_train_flops(const model *m, const lora_adapter *a, int B, int T) {
    return m->ops->train_flops(m, a, B, T);
}

static int check_trainer_args(const model *m, lora_adapter *const *adapters, int n_adapters, int B,
                              int T, lp_err *err) {
    if (B <= 0 || T <= 0) return lp_fail(err, "batch %d x %d: both must be positive", B, T);
    if (T > m->max_seq_len)
        return lp_fail(err, "sequence length %d exceeds the model's maximum %d", T, m->max_seq_len);
    /* the elementwise ops count elements in int: the widest activation must fit */
    int64_t widest = 4 * (int64_t)m->hidden_size;
    for (int i = 0; i < m->n_modules; i++)
        if (m->modules[i].out > widest) widest = m->modules[i].out;
    if ((int64_t)B * T * widest > INT32_MAX)
        return lp_fail(err,
                       "batch %d x %d is too large for this model (%lld activations in one "
                       "buffer; at most %d)",
                       B, T, (long long)((int64_t)B * T * widest), INT32_MAX);
    if (n_adapters < 1 || n_adapters > LORA_MAX_BATCH_ADAPTERS)
        return lp_fail(err, "%d adapters: one batch takes 1..%d", n_adapters,
                       LORA_MAX_BATCH_ADAPTERS);
    for (int k = 0; k < n_adapters; k++) {
        for (int i = 0; i < adapters[k]->n_sites; i++) {
            const lora_site *s = &adapters[k]->sites[i];
            if (s->module < 0 || s->module >= m->n_modules || s->in != m->modules[s->module].in ||
                s->out != m->modules[s->module].out)
                return lp_fail(err, "adapter %d: site %d does not fit this model's modules", k, i);
        }
    }
    return 0;
}

int model_trainer_new(model_trainer **out, const model *m, lora_adapter *a, int B, int T,
                      lp_err *err) {
    if (check_trainer_args(m, &a, 1, B, T, err) < 0) return -1;
    model_trainer *t = calloc(1, sizeof *t);
    t->ops = m->ops;
    t->vocab_size = m->vocab_size;
    t->n_tokens = B * T;
    t->B = B;
    t->T = T;
    if (m->ops->trainer_new(&t->impl, m, a, B, T, err) < 0) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int model_trainer_new_multi(model_trainer **out, const model *m, lora_adapter *const *adapters,
                            int n_adapters, int B, int T, lp_err *err) {
    if (!m->ops->trainer_new_multi)
        return lp_fail(err, "%s: mixed-adapter batches are not implemented", m->arch);
    if (check_trainer_args(m, adapters, n_adapters, B, T, err) < 0) return -1;
    model_trainer *t = calloc(1, sizeof *t);
    t->ops = m->ops;
    t->vocab_size = m->vocab_size;
    t->n_tokens = B * T;
    t->B = B;
    t->T = T;
    if (m->ops->trainer_new_multi(&t->impl, m, adapters, n_adapters, B, T, err) < 0) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int model_trainer_step_multi(model_trainer *t, const int *inputs, const int *targets,
                             const int *adapter_of, const float *grad_scales, uint64_t dropout_seed,
                             model_step *per_adapter, model_step *total, lp_err *err) {
    if (check_tokens(t, inputs, targets, err) < 0) return -1;
    return t->ops->trainer_step_multi(t->impl, inputs, targets, adapter_of, grad_scales,
                                      dropout_seed, per_adapter, total, err);
}

int model_trainer_full_grads(model_trainer *t, float **grads, size_t *n, lp_err *err) {
    if (!t->ops->trainer_full_grads)
        return lp_fail(err, "this model family has no full fine-tuning baseline");
    return t->ops->trainer_full_grads(t->impl, grads, n, err);
}

void model_trainer_free(model_trainer *t) {
    if (!t) return;
    t->ops->trainer_free(t->impl);
    free(t);
}

size_t model_trainer_arena_bytes(const model_trainer *t) {
    return t->ops->trainer_arena_bytes(t->impl);
}

int model_trainer_batch(const model_trainer *t) {
    return t->B;
}

int model_trainer_seq_len(const model_trainer *t) {
    return t->T;
}

int model_trainer_step(model_trainer *t, const int *inputs, const int *targets, float grad_scale,
                       uint64_t seed, uint64_t first_seq, model_step *out, lp_err *err) {
    if (check_tokens(t, inputs, targets, err) < 0) return -1;
    return t->ops->trainer_step(t->impl, inputs, targets, grad_scale, seed, first_seq, out, err);
}

int model_trainer_logits(model_trainer *t, const int *inputs, float *logits, lp_err *err) {
    if (check_tokens(t, inputs, NULL, err) < 0) return -1;
    return t->ops->trainer_logits(t->impl, inputs, logits, err);
}

struct model_session {
    const model_family_ops *ops;
    void *impl;
    int vocab_size;
};

int model_session_new(model_session **out, const model *m, const lora_adapter *a, int max_len,
                      lp_err *err) {
    if (!m->ops->session_new) return lp_fail(err, "%s: inference is not implemented", m->arch);
    if (max_len <= 0 || max_len > m->max_seq_len)
        return lp_fail(err, "session length %d: must be in 1..%d", max_len, m->max_seq_len);
    model_session *s = calloc(1, sizeof *s);
    s->ops = m->ops;
    s->vocab_size = m->vocab_size;
    if (m->ops->session_new(&s->impl, m, a, max_len, err) < 0) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void model_session_free(model_session *s) {
    if (!s) return;
    s->ops->session_free(s->impl);
    free(s);
}

int model_session_feed(model_session *s, const int *tokens, int n, float *logits, lp_err *err) {
    if (n <= 0) return lp_fail(err, "model_session_feed: no tokens");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->vocab_size)
            return lp_fail(err, "token %d is outside the vocabulary (%d)", tokens[i],
                           s->vocab_size);
    return s->ops->session_feed(s->impl, tokens, n, logits, err);
}

int model_session_length(const model_session *s) {
    return s->ops->session_length(s->impl);
}

void model_session_reset(model_session *s) {
    s->ops->session_reset(s->impl);
}
