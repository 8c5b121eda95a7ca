/* The model interface: builds a family over a weight source, places its weights on a device and
 * dispatches to the family. Everything families share (the weight source, the weights' slots,
 * module list, fingerprint) is kept here. */
#include "model_family.h"

#include "cpu_gemm.h"
#include "hash.h"
#include "trainer_core.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- building ------------------------------------------------------------------------------- */

/* Whether BF16 frozen matrices stay bf16 on the CPU rather than being widened at load. */
static int keep_bf16_from_env(void) {
    const char *v = getenv("LORAPS_BF16_WEIGHTS");
    return !(v && !strcmp(v, "f32"));
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
    m->dev = device_cpu();
    m->keep_bf16 = keep_bf16_from_env();
    cpu_gemm_mode gemm;
    if (cpu_gemm_mode_from_env(&gemm, err) < 0) {
        model_free(m);
        return -1;
    }
    m->gemm_bf16 = gemm == CPU_GEMM_BF16;
    m->fingerprint = hash_xxh3(0, type, strlen(type));
    if (src.fingerprint)
        m->fingerprint = hash_xxh3(m->fingerprint, &src.fingerprint, sizeof src.fingerprint);
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
    for (int i = 0; i < m->n_placed; i++) device_free(m->dev, m->placed[i]);
    free(m->placed);
    if (m->ops && m->family) m->ops->free_family(m->family);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->slots);
    free(m->modules);
    if (m->src.release) m->src.release(m->src.ctx);
    free(m);
}

/* ---- the weights ---------------------------------------------------------------------------- */

static void shape_text(char *buf, size_t size, const int64_t *shape, int ndim) {
    buf[0] = 0;
    for (int i = 0; i < ndim; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
}

/* The tensor from the source, checked against the shape the family expects, and hashed. */
static int find_weight(model *m, const char *prefix, const char *name, int64_t rows, int64_t cols,
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
    if (!m->src.fingerprint) { /* a source without its own: hash what the family reads */
        m->fingerprint = hash_xxh3(m->fingerprint, name, strlen(name));
        if (!m->src.unhashed) m->fingerprint = hash_xxh3(m->fingerprint, t->data, t->nbytes);
    }
    return 0;
}

static int remember(void ***list, int *n, void *p) {
    void **grown = realloc(*list, (size_t)(*n + 1) * sizeof *grown);
    if (!grown) return -1;
    *list = grown;
    grown[(*n)++] = p;
    return 0;
}

static int add_slot(model *m, weight *w, weight_kind kind, int64_t rows, int64_t cols) {
    if (m->n_slots == m->cap_slots) {
        int cap = m->cap_slots ? 2 * m->cap_slots : 64;
        weight_slot *grown = realloc(m->slots, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        m->slots = grown;
        m->cap_slots = cap;
    }
    m->slots[m->n_slots++] = (weight_slot){w, kind, rows, cols};
    return 0;
}

/* The tensor as f32: in place when stored as aligned F32, else a converted copy. */
static int as_f32(model *m, weight *w, const weight_view *t, const char *name, lp_err *err) {
    size_t numel = w->numel;
    if (t->dtype == DT_F32 && (uintptr_t)t->data % sizeof(float) == 0) {
        w->data = t->data;
        return 0;
    }
    float *copy = malloc(numel * sizeof(float));
    if (!copy) return lp_fail(err, "out of memory converting '%s'", name);
    if (dtype_to_f32(t->data, t->dtype, copy, numel) != 0) {
        free(copy);
        return lp_fail(err, "model weights: tensor '%s' is %s, not a float type", name,
                       dtype_name(t->dtype));
    }
    if (remember((void ***)&m->owned, &m->n_owned, copy) < 0) {
        free(copy);
        return lp_fail(err, "out of memory");
    }
    w->data = copy;
    return 0;
}

/* The tensor as bf16: in place when stored as aligned BF16, else a copy rounded to nearest even. */
static int as_bf16(model *m, weight *w, const weight_view *t, const char *name, lp_err *err) {
    w->dtype = DT_BF16;
    m->weight_bytes += w->numel * sizeof(uint16_t);
    if (t->dtype == DT_BF16 && ((uintptr_t)t->data & 1) == 0) {
        w->data = t->data;
        return 0;
    }
    float *f32 = malloc(w->numel * sizeof(float));
    uint16_t *copy = malloc(w->numel * sizeof(uint16_t));
    int rc = f32 && copy ? 0 : lp_fail(err, "out of memory converting '%s'", name);
    if (!rc && (dtype_to_f32(t->data, t->dtype, f32, w->numel) != 0 ||
                dtype_from_f32(f32, DT_BF16, copy, w->numel) != 0))
        rc = lp_fail(err, "model weights: tensor '%s' is %s, not a float type", name,
                     dtype_name(t->dtype));
    if (!rc && remember((void ***)&m->owned, &m->n_owned, copy) < 0)
        rc = lp_fail(err, "out of memory");
    free(f32);
    if (rc < 0) {
        free(copy);
        return -1;
    }
    w->data = copy;
    return 0;
}

int model_weight(model *m, weight *w, weight_kind kind, const char *prefix, const char *name,
                 int64_t rows, int64_t cols, lp_err *err) {
    weight_view t;
    if (find_weight(m, prefix, name, rows, cols, &t, err) < 0) return -1;
    w->numel = (size_t)rows * (size_t)(cols ? cols : 1);
    if (add_slot(m, w, kind, rows, cols) < 0) return lp_fail(err, "out of memory");
    if ((kind == WK_MATRIX || kind == WK_TABLE) && m->gemm_bf16)
        return as_bf16(m, w, &t, name, err);
    if (kind == WK_MATRIX && m->keep_bf16 && t.dtype == DT_BF16 && ((uintptr_t)t.data & 1) == 0) {
        w->data = t.data;
        w->dtype = DT_BF16;
        m->weight_bytes += t.nbytes;
        if (w->numel > m->max_bf16) m->max_bf16 = w->numel;
        return 0;
    }
    w->dtype = DT_F32;
    m->weight_bytes += w->numel * sizeof(float);
    return as_f32(m, w, &t, name, err);
}

/* One weight onto device d: matrices, tables and biases in bf16, norm weights in f32; tables get
 * zero rows up to a multiple of 64 (the head's GEMMs then run on aligned shapes). */
static int place_weight(model *m, device *d, const weight_slot *s, lp_err *err) {
    weight *w = s->w;
    dtype want = s->kind == WK_VECTOR ? DT_F32 : DT_BF16;
    int64_t rows = s->rows, pad = s->kind == WK_TABLE ? (64 - rows % 64) % 64 : 0;
    size_t esize = dtype_size(want), bytes = w->numel * esize;
    size_t pad_bytes = (size_t)pad * (size_t)(s->cols ? s->cols : 1) * esize;
    void *host = (void *)w->data;
    void *converted = NULL;
    if (w->dtype != want) {
        float *f32 = malloc(w->numel * sizeof(float));
        converted = malloc(bytes);
        if (!f32 || !converted || dtype_to_f32(w->data, w->dtype, f32, w->numel) != 0 ||
            dtype_from_f32(f32, want, converted, w->numel) != 0) {
            free(f32);
            free(converted);
            return lp_fail(err, "out of memory converting a weight for %s", device_describe(d));
        }
        free(f32);
        host = converted;
    }
    void *on_device = device_alloc(d, bytes + pad_bytes, err);
    int rc = on_device ? device_upload(d, on_device, host, bytes, err) : -1;
    if (rc == 0 && pad_bytes) {
        void *zeros = calloc(1, pad_bytes);
        rc = zeros ? device_upload(d, (char *)on_device + bytes, zeros, pad_bytes, err)
                   : lp_fail(err, "out of memory");
        free(zeros);
    }
    free(converted);
    if (rc < 0 || remember(&m->placed, &m->n_placed, on_device) < 0) {
        device_free(d, on_device);
        return rc < 0 ? -1 : lp_fail(err, "out of memory");
    }
    w->data = on_device;
    w->dtype = want;
    w->pad_rows = (int)pad;
    return 0;
}

int model_place(model *m, device *d, lp_err *err) {
    if (d == m->dev) return 0;
    if (!device_is_cpu(m->dev))
        return lp_fail(err, "the model is already on %s", device_describe(m->dev));
    m->dev = d; /* model_free releases what was placed, even halfway */
    for (int i = 0; i < m->n_slots; i++)
        if (place_weight(m, d, &m->slots[i], err) < 0)
            return lp_wrap(err, "placing the model on %s", device_describe(d));
    m->max_bf16 = 0; /* nothing is widened on a GPU */
    m->gemm_bf16 = 0;
    return 0;
}

device *model_device(const model *m) {
    return m->dev;
}

/* ---- what the model is ----------------------------------------------------------------------- */

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

/* ---- trainers -------------------------------------------------------------------------------- */

struct model_trainer {
    const model_family_ops *ops;
    void *impl;               /* begins with its trainer_core */
    int vocab_size, n_tokens; /* for checking inputs before any family sees them */
    int B, T;
    uint64_t *seq_ids; /* [B]: model_trainer_step's consecutive ids */
};

static trainer_core *core_of(const model_trainer *t) {
    return t->impl;
}

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

int model_trainer_new_multi(model_trainer **out, const model *m, lora_adapter *const *adapters,
                            int n_adapters, int B, int T, lp_err *err) {
    if (check_trainer_args(m, adapters, n_adapters, B, T, err) < 0) return -1;
    model_trainer *t = calloc(1, sizeof *t);
    if (!t || !(t->seq_ids = calloc((size_t)B, sizeof *t->seq_ids))) {
        free(t);
        return lp_fail(err, "out of memory");
    }
    t->ops = m->ops;
    t->vocab_size = m->vocab_size;
    t->n_tokens = B * T;
    t->B = B;
    t->T = T;
    if (m->ops->trainer_new(&t->impl, m, adapters, n_adapters, B, T, err) < 0) {
        free(t->seq_ids);
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int model_trainer_new(model_trainer **out, const model *m, lora_adapter *a, int B, int T,
                      lp_err *err) {
    return model_trainer_new_multi(out, m, &a, 1, B, T, err);
}

void model_trainer_free(model_trainer *t) {
    if (!t) return;
    t->ops->trainer_free(t->impl);
    free(t->seq_ids);
    free(t);
}

size_t model_trainer_arena_bytes(const model_trainer *t) {
    return core_of(t)->arena_bytes;
}

int model_trainer_batch(const model_trainer *t) {
    return t->B;
}

int model_trainer_seq_len(const model_trainer *t) {
    return t->T;
}

int model_trainer_load_params(model_trainer *t, lp_err *err) {
    return trainer_core_load_params(core_of(t), err);
}

void model_trainer_zero_grads(model_trainer *t) {
    trainer_core_zero_grads(core_of(t));
}

int model_trainer_fetch_grads(model_trainer *t, lp_err *err) {
    return trainer_core_fetch_grads(core_of(t), err);
}

void model_trainer_stream_grads(model_trainer *t, grads_ready_fn fn, void *ctx) {
    trainer_core_stream_grads(core_of(t), fn, ctx);
}

int model_trainer_step_multi(model_trainer *t, const int *inputs, const int *targets,
                             const int *adapter_of, const float *grad_scales, uint64_t seed,
                             const uint64_t *seq_ids, model_step *per_adapter, model_step *total,
                             lp_err *err) {
    if (check_tokens(t, inputs, targets, err) < 0) return -1;
    return t->ops->trainer_step(t->impl, inputs, targets, adapter_of, grad_scales, seed, seq_ids,
                                per_adapter, total, err);
}

int model_trainer_step(model_trainer *t, const int *inputs, const int *targets, float grad_scale,
                       uint64_t seed, uint64_t first_seq, model_step *out, lp_err *err) {
    for (int b = 0; b < t->B; b++) t->seq_ids[b] = first_seq + (uint64_t)b;
    return model_trainer_step_multi(t, inputs, targets, NULL, &grad_scale, seed, t->seq_ids, NULL,
                                    out, err);
}

int model_trainer_full_grads(model_trainer *t, float **grads, size_t *n, lp_err *err) {
    return trainer_core_full_grads(core_of(t), grads, n, err);
}

int model_trainer_logits(model_trainer *t, const int *inputs, float *logits, lp_err *err) {
    if (check_tokens(t, inputs, NULL, err) < 0) return -1;
    return t->ops->trainer_logits(t->impl, inputs, logits, err);
}

/* ---- sessions -------------------------------------------------------------------------------- */

struct model_session {
    const model_family_ops *ops;
    void *impl;
    int vocab_size;
};

int model_session_new(model_session **out, const model *m, const lora_adapter *a, int max_len,
                      lp_err *err) {
    if (max_len <= 0 || max_len > m->max_seq_len)
        return lp_fail(err, "session length %d: must be in 1..%d", max_len, m->max_seq_len);
    for (int i = 0; a && i < a->n_sites; i++) {
        const lora_site *s = &a->sites[i];
        if (s->module < 0 || s->module >= m->n_modules || s->in != m->modules[s->module].in ||
            s->out != m->modules[s->module].out)
            return lp_fail(err, "adapter site %d does not fit this model's modules", i);
    }
    model_session *s = calloc(1, sizeof *s);
    if (!s) return lp_fail(err, "out of memory");
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
