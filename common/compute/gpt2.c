/* GPT-2 with LoRA: the first model family behind model.h.
 *
 * Forward per layer, as in HF GPT2LMHeadModel (Conv1D weights are [in,out]):
 *   ln1 = LN(res); qkv = ln1 . Wqkv + b; atty = attn(qkv); res2 = res + atty . Wo + b
 *   ln2 = LN(res2); fch = ln2 . Wfc + b; res3 = res2 + gelu(fch) . Wp + b
 * and every adapted module adds s * (x . A^T) . B^T. The head is tied to wte and the loss is
 * computed chunk by chunk, so the [B*T, V] logits never exist whole.
 *
 * Backward computes only input gradients through the frozen weights, and LoRA gradients. It
 * stops at the lowest adapted module: nothing below it has anything to learn. */
#include "arena.h"
#include "gpt2_internal.h"
#include "hash.h"
#include "rng.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * loading */

static void list_modules(model *m, const gpt2_config *c) {
    static const char *names[MODS_PER_LAYER] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                "mlp.c_proj"};
    int C = c->n_embd;
    int dims[MODS_PER_LAYER][2] = {{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}};
    m->n_modules = c->n_layer * MODS_PER_LAYER;
    m->modules = calloc((size_t)m->n_modules, sizeof *m->modules);
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < MODS_PER_LAYER; k++) {
            lora_module *mod = &m->modules[l * MODS_PER_LAYER + k];
            snprintf(mod->name, sizeof mod->name, "transformer.h.%d.%s", l, names[k]);
            mod->layer = l;
            mod->in = dims[k][0];
            mod->out = dims[k][1];
        }
    }
}

/* HF saves GPT2LMHeadModel's weights with a "transformer." prefix and GPT2Model's without. */
static const float *weight(model *m, const char *name, int64_t rows, int64_t cols, lp_err *err) {
    return model_weight(m, "transformer.", name, rows, cols, err);
}

static int load_layer(model *m, gpt2_layer *w, int l, int C, lp_err *err) {
    char n[12][96];
    static const char *suffix[12] = {"ln_1.weight",      "ln_1.bias",          "attn.c_attn.weight",
                                     "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                                     "ln_2.weight",      "ln_2.bias",          "mlp.c_fc.weight",
                                     "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
    for (int i = 0; i < 12; i++) snprintf(n[i], sizeof n[i], "h.%d.%s", l, suffix[i]);
    return (w->ln1_w = weight(m, n[0], C, 0, err)) && (w->ln1_b = weight(m, n[1], C, 0, err)) &&
                   (w->qkv_w = weight(m, n[2], C, 3 * C, err)) &&
                   (w->qkv_b = weight(m, n[3], 3 * C, 0, err)) &&
                   (w->attn_proj_w = weight(m, n[4], C, C, err)) &&
                   (w->attn_proj_b = weight(m, n[5], C, 0, err)) &&
                   (w->ln2_w = weight(m, n[6], C, 0, err)) &&
                   (w->ln2_b = weight(m, n[7], C, 0, err)) &&
                   (w->fc_w = weight(m, n[8], C, 4 * C, err)) &&
                   (w->fc_b = weight(m, n[9], 4 * C, 0, err)) &&
                   (w->fc_proj_w = weight(m, n[10], 4 * C, C, err)) &&
                   (w->fc_proj_b = weight(m, n[11], C, 0, err))
               ? 0
               : -1;
}

static void gpt2_free_family(void *family) {
    gpt2 *g = family;
    free(g->layers);
    free(g);
}

static const model_family_ops GPT2_OPS;

int gpt2_build(model *m, const gpt2_config *cfg, lp_err *err) {
    gpt2 *g = calloc(1, sizeof *g);
    if (!g) return lp_fail(err, "out of memory");
    m->ops = &GPT2_OPS;
    m->family = g;
    g->cfg = *cfg;
    const gpt2_config *c = &g->cfg;
    int C = c->n_embd;
    m->arch = "gpt2";
    m->vocab_size = c->vocab_size;
    m->max_seq_len = c->n_positions;
    m->hidden_size = C;
    m->layout = W_IN_OUT; /* Conv1D */
    m->fingerprint = hash64(m->fingerprint, c, sizeof *c);
    g->layers = calloc((size_t)c->n_layer, sizeof *g->layers);
    if (!(g->wte = weight(m, "wte.weight", c->vocab_size, C, err)) ||
        !(g->wpe = weight(m, "wpe.weight", c->n_positions, C, err)) ||
        !(g->lnf_w = weight(m, "ln_f.weight", C, 0, err)) ||
        !(g->lnf_b = weight(m, "ln_f.bias", C, 0, err)))
        return -1;
    for (int l = 0; l < c->n_layer; l++)
        if (load_layer(m, &g->layers[l], l, C, err) < 0) return -1;
    /* An untied head lives outside "transformer.": lm_head.weight [V,C]. */
    g->lm_head = c->tie_word_embeddings
                     ? g->wte
                     : model_weight(m, "", "lm_head.weight", c->vocab_size, C, err);
    if (!g->lm_head) return -1;
    list_modules(m, c);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * the trainer: one arena of activations and gradient scratch, sized here once */

#define HEAD_CHUNK 128 /* tokens per chunk of logits */

typedef struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *atty, *res2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *res3;
} layer_acts;

/* The rows of one adapter in the current micro-batch: tokens [row0, row0 + rows). */
typedef struct adapter_rows {
    int row0, rows;
} adapter_rows;

typedef struct gpt2_trainer {
    const model *m;
    const gpt2 *g;
    lora_adapter **adapters; /* one batch may train several: rows are grouped by adapter */
    int n_adapters;
    adapter_rows *rows_of; /* per adapter, set each step */
    float *grad_scale_of;  /* per adapter, set each step */
    model_step *step_of;   /* per adapter: its loss and tokens this step */
    int B, T;
    float *arena;
    size_t arena_floats;
    const lora_site **site_of; /* [adapter][module]: the adapter's site there, or NULL */
    float **lora_h;            /* per module with a site: x . A^T [N, h_ld] */
    int *h_ld;                 /* per module: the largest rank adapted there */
    int lowest_site;           /* lowest adapted module: backward stops there */
    int max_in;                /* widest adapted input, for the dropout scratch */
    int max_r;
    int any_dropout;
    /* The full fine-tuning baseline (off unless asked): gradients of every linear weight and
     * bias and of the tied head, laid out module by module, then the head. */
    float *full_grads;
    size_t n_full_grads;
    float **dW_of, **db_of; /* per module, into full_grads */
    float *dhead;
    float *encoded;
    layer_acts *acts;
    float *lnf, *lnf_mean, *lnf_rstd;
    float *proj; /* output of c_proj before the residual add */
    float *dres, *dln, *dqkv, *datty, *dfch, *dfch_gelu, *att_scratch, *lora_dh;
    int att_slots;           /* threads attention backward may use */
    float *drop_x, *drop_dx; /* dropout: x as the adapter saw it, and its gradient */
    float *logits, *losses;  /* one head chunk */
    uint64_t dropout_seed;
    int training; /* LoRA dropout is active only while training, as in PEFT */
} gpt2_trainer;

static void carve_all(gpt2_trainer *t, arena_carver *c) {
    const gpt2_config *cfg = &t->g->cfg;
    size_t N = (size_t)t->B * t->T, C = (size_t)cfg->n_embd, NH = (size_t)cfg->n_head;
    size_t V = (size_t)cfg->vocab_size;
    t->encoded = arena_carve(c, N * C);
    for (int l = 0; l < cfg->n_layer; l++) {
        layer_acts *a = &t->acts[l];
        a->ln1 = arena_carve(c, N * C);
        a->ln1_mean = arena_carve(c, N);
        a->ln1_rstd = arena_carve(c, N);
        a->qkv = arena_carve(c, N * 3 * C);
        a->att = arena_carve(c, (size_t)t->B * NH * t->T * t->T);
        a->atty = arena_carve(c, N * C);
        a->res2 = arena_carve(c, N * C);
        a->ln2 = arena_carve(c, N * C);
        a->ln2_mean = arena_carve(c, N);
        a->ln2_rstd = arena_carve(c, N);
        a->fch = arena_carve(c, N * 4 * C);
        a->fch_gelu = arena_carve(c, N * 4 * C);
        a->res3 = arena_carve(c, N * C);
    }
    t->lnf = arena_carve(c, N * C);
    t->lnf_mean = arena_carve(c, N);
    t->lnf_rstd = arena_carve(c, N);
    t->proj = arena_carve(c, N * C);
    for (int i = 0; i < t->m->n_modules; i++)
        t->lora_h[i] = t->h_ld[i] ? arena_carve(c, N * (size_t)t->h_ld[i]) : NULL;
    t->dres = arena_carve(c, N * C);
    t->dln = arena_carve(c, N * C);
    t->dqkv = arena_carve(c, N * 3 * C);
    t->datty = arena_carve(c, N * C);
    t->dfch = arena_carve(c, N * 4 * C);
    t->dfch_gelu = arena_carve(c, N * 4 * C);
    t->att_scratch = arena_carve(c, (size_t)t->T * t->T * (size_t)t->att_slots);
    t->lora_dh = arena_carve(c, N * (size_t)t->max_r);
    size_t drop = t->any_dropout ? N * (size_t)t->max_in : 0;
    t->drop_x = arena_carve(c, drop);
    t->drop_dx = arena_carve(c, drop);
    t->logits = arena_carve(c, (size_t)HEAD_CHUNK * V);
    t->losses = arena_carve(c, HEAD_CHUNK);
}

static void trainer_free(void *impl) {
    gpt2_trainer *t = impl;
    if (!t) return;
    free(t->arena);
    free(t->site_of);
    free(t->lora_h);
    free(t->h_ld);
    free(t->adapters);
    free(t->rows_of);
    free(t->grad_scale_of);
    free(t->step_of);
    free(t->full_grads);
    free(t->dW_of);
    free(t->db_of);
    free(t->acts);
    free(t);
}

/* model.c has checked B, T and that the adapter's sites fit the modules. */
/* model.c has checked B, T and that every adapter's sites fit the modules. */
static int trainer_new_multi(void **out, const model *m, lora_adapter *const *adapters,
                             int n_adapters, int B, int T, lp_err *err) {
    gpt2_trainer *t = calloc(1, sizeof *t);
    size_t M = (size_t)m->n_modules;
    t->m = m;
    t->g = m->family;
    t->n_adapters = n_adapters;
    t->adapters = calloc((size_t)n_adapters, sizeof *t->adapters);
    memcpy(t->adapters, adapters, (size_t)n_adapters * sizeof *adapters);
    t->rows_of = calloc((size_t)n_adapters, sizeof *t->rows_of);
    t->grad_scale_of = calloc((size_t)n_adapters, sizeof *t->grad_scale_of);
    t->step_of = calloc((size_t)n_adapters, sizeof *t->step_of);
    t->B = B;
    t->T = T;
    t->site_of = calloc((size_t)n_adapters * M, sizeof *t->site_of);
    t->lora_h = calloc(M, sizeof *t->lora_h);
    t->h_ld = calloc(M, sizeof *t->h_ld);
    t->acts = calloc((size_t)t->g->cfg.n_layer, sizeof *t->acts);
    t->lowest_site = m->n_modules;
    for (int k = 0; k < n_adapters; k++) {
        const lora_adapter *a = adapters[k];
        t->any_dropout |= a->cfg.dropout > 0;
        for (int i = 0; i < a->n_sites; i++) {
            const lora_site *s = &a->sites[i];
            t->site_of[(size_t)k * M + s->module] = s;
            if (s->module < t->lowest_site) t->lowest_site = s->module;
            if (s->in > t->max_in) t->max_in = s->in;
            if (s->r > t->max_r) t->max_r = s->r;
            if (s->r > t->h_ld[s->module]) t->h_ld[s->module] = s->r;
        }
    }
    t->att_slots = omp_get_max_threads();
    arena_carver count = {NULL, 0};
    carve_all(t, &count);
    t->arena_floats = count.used;
    if (posix_memalign((void **)&t->arena, 64, t->arena_floats * sizeof(float)) != 0) {
        t->arena = NULL;
        trainer_free(t);
        return lp_fail(err, "cannot allocate the %.1f MiB activation arena",
                       (double)count.used * 4 / (1 << 20));
    }
    arena_carver real = {t->arena, 0};
    carve_all(t, &real);
    *out = t;
    return 0;
}

static int trainer_new(void **out, const model *m, lora_adapter *a, int B, int T, lp_err *err) {
    return trainer_new_multi(out, m, &a, 1, B, T, err);
}

static size_t trainer_arena_bytes(const void *impl) {
    return ((const gpt2_trainer *)impl)->arena_floats * sizeof(float);
}

/* ---------------------------------------------------------------------------------------------
 * an adapted linear layer: frozen matmul plus, where the adapter has a site, its LoRA branch */

/* The LoRA segments of a module this step: one per adapter that adapts it and has rows. */
static int segments_of(const gpt2_trainer *t, int module, lora_segment *segs, int *owner) {
    int n = 0;
    for (int k = 0; k < t->n_adapters; k++) {
        const lora_site *s = t->site_of[(size_t)k * t->m->n_modules + module];
        const lora_adapter *a = t->adapters[k];
        if (!s || t->rows_of[k].rows == 0) continue;
        owner[n] = k;
        segs[n++] = (lora_segment){
            .row0 = t->rows_of[k].row0,
            .rows = t->rows_of[k].rows,
            .r = s->r,
            .scale = s->scale,
            .A = a->params + s->a_offset,
            .B = a->params + s->b_offset,
            .dA = a->grads + s->a_offset,
            .dB = a->grads + s->b_offset,
        };
    }
    return n;
}

/* The mask is indexed from the start of each adapter's rows, so an adapter's masks in a mixed
 * batch are the ones it would get in a batch of its own. */
static uint64_t dropout_seed_of(const gpt2_trainer *t, int module) {
    return t->dropout_seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(module + 1));
}

/* x as each segment's adapter sees it: dropout(x) on its rows where it has dropout, x itself
 * elsewhere. Returns inp when nothing is dropped. */
static const float *lora_input(gpt2_trainer *t, int module, const float *inp,
                               const lora_segment *segs, const int *owner, int n, int IC) {
    int any = 0;
    for (int i = 0; i < n; i++) any |= t->adapters[owner[i]]->cfg.dropout > 0;
    if (!any || !t->training) return inp;
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)segs[i].row0 * IC, len = (size_t)segs[i].rows * IC;
        float p = t->adapters[owner[i]]->cfg.dropout;
        if (p > 0)
            dropout_forward(t->drop_x + off, inp + off, (int)len, p, dropout_seed_of(t, module));
        else
            memcpy(t->drop_x + off, inp + off, len * sizeof(float));
    }
    return t->drop_x;
}

static void linear_forward(gpt2_trainer *t, int module, float *out, const float *inp,
                           const float *weight, const float *bias, int IC, int OC) {
    int N = t->B * t->T;
    matmul_forward(out, inp, weight, W_IN_OUT, bias, N, IC, OC);
    lora_segment segs[LORA_MAX_BATCH_ADAPTERS];
    int owner[LORA_MAX_BATCH_ADAPTERS];
    int n = segments_of(t, module, segs, owner);
    if (n == 0) return;
    const float *x = lora_input(t, module, inp, segs, owner, n, IC);
    lora_forward(out, t->lora_h[module], x, segs, n, IC, OC, t->h_ld[module]);
}

/* dinp may be NULL when nothing below needs the input gradient. */
static void linear_backward(gpt2_trainer *t, int module, float *dinp, const float *dout,
                            const float *inp, const float *weight, int IC, int OC) {
    int N = t->B * t->T;
    if (dinp) matmul_backward(dinp, dout, weight, W_IN_OUT, N, IC, OC);
    if (t->full_grads)
        matmul_backward_weight(t->dW_of[module], t->db_of[module], inp, dout, W_IN_OUT, N, IC, OC);
    lora_segment segs[LORA_MAX_BATCH_ADAPTERS];
    int owner[LORA_MAX_BATCH_ADAPTERS];
    int n = segments_of(t, module, segs, owner);
    if (n == 0) return;
    const float *x = lora_input(t, module, inp, segs, owner, n, IC);
    if (x == inp) {
        lora_backward(dinp, t->lora_dh, dout, inp, t->lora_h[module], segs, n, IC, OC,
                      t->h_ld[module]);
        return;
    }
    /* The adapters saw dropout(x): send the gradient back through the same masks. */
    if (dinp) memset(t->drop_dx, 0, (size_t)N * IC * sizeof(float));
    lora_backward(dinp ? t->drop_dx : NULL, t->lora_dh, dout, x, t->lora_h[module], segs, n, IC, OC,
                  t->h_ld[module]);
    if (!dinp) return;
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)segs[i].row0 * IC;
        int len = segs[i].rows * IC;
        float p = t->adapters[owner[i]]->cfg.dropout;
        if (p > 0)
            dropout_backward(dinp + off, t->drop_dx + off, len, p, dropout_seed_of(t, module));
        else
            residual_forward(dinp + off, dinp + off, t->drop_dx + off, len);
    }
}

/* ---------------------------------------------------------------------------------------------
 * forward and backward */

static void forward(gpt2_trainer *t, const int *inputs) {
    const gpt2 *m = t->g;
    const gpt2_config *c = &m->cfg;
    int B = t->B, T = t->T, C = c->n_embd, NH = c->n_head, N = B * T;
    float eps = c->layer_norm_epsilon;
    encoder_forward(t->encoded, inputs, m->wte, m->wpe, B, T, C);
    const float *res = t->encoded;
    for (int l = 0; l < c->n_layer; l++) {
        const gpt2_layer *w = &m->layers[l];
        layer_acts *a = &t->acts[l];
        int mod = l * MODS_PER_LAYER;
        layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, res, w->ln1_w, w->ln1_b, N, C, eps);
        linear_forward(t, mod + MOD_QKV, a->qkv, a->ln1, w->qkv_w, w->qkv_b, C, 3 * C);
        attention_forward(a->atty, a->att, a->qkv, a->qkv + C, a->qkv + 2 * C, 3 * C, 3 * C, B, T,
                          NH, NH, C / NH);
        linear_forward(t, mod + MOD_ATTN_PROJ, t->proj, a->atty, w->attn_proj_w, w->attn_proj_b, C,
                       C);
        residual_forward(a->res2, res, t->proj, N * C);
        layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, w->ln2_w, w->ln2_b, N, C, eps);
        linear_forward(t, mod + MOD_FC, a->fch, a->ln2, w->fc_w, w->fc_b, C, 4 * C);
        gelu_forward(a->fch_gelu, a->fch, N * 4 * C);
        linear_forward(t, mod + MOD_FC_PROJ, t->proj, a->fch_gelu, w->fc_proj_w, w->fc_proj_b,
                       4 * C, C);
        residual_forward(a->res3, a->res2, t->proj, N * C);
        res = a->res3;
    }
    layernorm_forward(t->lnf, t->lnf_mean, t->lnf_rstd, res, m->lnf_w, m->lnf_b, N, C, eps);
}

/* Logits, softmax and cross-entropy chunk by chunk; with grad_scale != 0 also their backward
 * into dlnf (= t->dln). Returns the summed loss. */
/* Logits, softmax and cross-entropy chunk by chunk within each adapter's rows (so each chunk has
 * one gradient scale: the adapter's own 1/tokens); with training also their backward into
 * dlnf (= t->dln). Fills t->step_of. */
static void head_loss(gpt2_trainer *t, const int *targets) {
    const gpt2_config *c = &t->g->cfg;
    int N = t->B * t->T, C = c->n_embd, V = c->vocab_size;
    if (t->training) memset(t->dln, 0, (size_t)N * C * sizeof(float));
    for (int k = 0; k < t->n_adapters; k++) {
        size_t row0 = (size_t)t->rows_of[k].row0;
        model_step *st = &t->step_of[k];
        st->n_tokens = 0;
        st->loss_sum =
            head_crossentropy(t->lnf + row0 * C, t->g->lm_head, targets + row0, t->rows_of[k].rows,
                              C, V, t->grad_scale_of[k], t->dln + row0 * C, t->dhead, t->logits,
                              t->losses, HEAD_CHUNK, &st->n_tokens);
    }
}

static float *zeroed(float *p, size_t n) {
    memset(p, 0, n * sizeof(float));
    return p;
}

/* The gradient of the input of module `mod` is needed only if an adapted module lies below. */
static float *input_grad(const gpt2_trainer *t, int mod, float *buf, size_t n) {
    return t->lowest_site < mod ? zeroed(buf, n) : NULL;
}

static void backward(gpt2_trainer *t) {
    const gpt2 *m = t->g;
    const gpt2_config *c = &m->cfg;
    int B = t->B, T = t->T, C = c->n_embd, NH = c->n_head, L = c->n_layer;
    size_t N = (size_t)B * T;
    int lo = t->lowest_site;
    /* dres holds the gradient of the residual stream, updated in place from layer to layer:
     * res3 = res2 + proj passes it to both terms unchanged. */
    zeroed(t->dres, N * C);
    layernorm_backward(t->dres, t->dln, t->acts[L - 1].res3, m->lnf_w, t->lnf_mean, t->lnf_rstd,
                       (int)N, C);
    for (int l = L - 1; l >= 0; l--) {
        const gpt2_layer *w = &m->layers[l];
        const layer_acts *a = &t->acts[l];
        const float *res_in = l > 0 ? t->acts[l - 1].res3 : t->encoded;
        int mod = l * MODS_PER_LAYER;
        if (lo > mod + MOD_FC_PROJ) break;
        /* MLP */
        float *d_gelu = input_grad(t, mod + MOD_FC_PROJ, t->dfch_gelu, N * 4 * C);
        linear_backward(t, mod + MOD_FC_PROJ, d_gelu, t->dres, a->fch_gelu, w->fc_proj_w, 4 * C, C);
        if (!d_gelu) break;
        gelu_backward(zeroed(t->dfch, N * 4 * C), a->fch, d_gelu, (int)N * 4 * C);
        float *d_ln2 = input_grad(t, mod + MOD_FC, t->dln, N * C);
        linear_backward(t, mod + MOD_FC, d_ln2, t->dfch, a->ln2, w->fc_w, C, 4 * C);
        if (!d_ln2) break;
        layernorm_backward(t->dres, d_ln2, a->res2, w->ln2_w, a->ln2_mean, a->ln2_rstd, (int)N, C);
        /* attention */
        float *d_atty = input_grad(t, mod + MOD_ATTN_PROJ, t->datty, N * C);
        linear_backward(t, mod + MOD_ATTN_PROJ, d_atty, t->dres, a->atty, w->attn_proj_w, C, C);
        if (!d_atty) break;
        float *dqkv = zeroed(t->dqkv, N * 3 * C);
        attention_backward(dqkv, dqkv + C, dqkv + 2 * C, t->att_scratch, t->att_slots, d_atty,
                           a->qkv, a->qkv + C, a->qkv + 2 * C, 3 * C, 3 * C, a->att, B, T, NH, NH,
                           C / NH);
        float *d_ln1 = input_grad(t, mod + MOD_QKV, t->dln, N * C);
        linear_backward(t, mod + MOD_QKV, d_ln1, t->dqkv, a->ln1, w->qkv_w, C, 3 * C);
        if (!d_ln1) break;
        layernorm_backward(t->dres, d_ln1, res_in, w->ln1_w, a->ln1_mean, a->ln1_rstd, (int)N, C);
    }
}

static int trainer_full_grads(void *impl, float **grads, size_t *n, lp_err *err) {
    gpt2_trainer *t = impl;
    if (!t->full_grads) {
        const gpt2_config *c = &t->g->cfg;
        unsigned n_mods = (unsigned)t->m->n_modules;
        size_t total = (size_t)c->vocab_size * c->n_embd;
        for (unsigned i = 0; i < n_mods; i++)
            total += (size_t)t->m->modules[i].in * t->m->modules[i].out + t->m->modules[i].out;
        t->full_grads = calloc(total, sizeof(float));
        t->dW_of = calloc(n_mods, sizeof *t->dW_of);
        t->db_of = calloc(n_mods, sizeof *t->db_of);
        if (!t->full_grads || !t->dW_of || !t->db_of) {
            free(t->full_grads), free(t->dW_of), free(t->db_of);
            t->full_grads = NULL, t->dW_of = t->db_of = NULL;
            return lp_fail(err, "out of memory for %zu weight gradients", total);
        }
        float *p = t->full_grads;
        for (int i = 0; i < t->m->n_modules; i++) {
            t->dW_of[i] = p;
            p += (size_t)t->m->modules[i].in * t->m->modules[i].out;
            t->db_of[i] = p;
            p += t->m->modules[i].out;
        }
        t->dhead = p;
        t->n_full_grads = total;
        t->lowest_site = -1; /* every layer needs its input gradient now */
    }
    *grads = t->full_grads;
    *n = t->n_full_grads;
    return 0;
}

/* Each adapter's rows: sequences are grouped by adapter, in adapter order. */
static int set_rows(gpt2_trainer *t, const int *adapter_of, lp_err *err) {
    for (int k = 0; k < t->n_adapters; k++) t->rows_of[k] = (adapter_rows){0, 0};
    int prev = 0;
    for (int b = 0; b < t->B; b++) {
        int k = adapter_of ? adapter_of[b] : 0;
        if (k < 0 || k >= t->n_adapters)
            return lp_fail(err, "sequence %d names adapter %d of %d", b, k, t->n_adapters);
        if (k < prev)
            return lp_fail(err,
                           "sequences must be grouped by adapter in adapter order "
                           "(sequence %d has adapter %d after %d)",
                           b, k, prev);
        if (t->rows_of[k].rows == 0) t->rows_of[k].row0 = b * t->T;
        t->rows_of[k].rows += t->T;
        prev = k;
    }
    return 0;
}

static int trainer_step_multi(void *impl, const int *inputs, const int *targets,
                              const int *adapter_of, const float *grad_scales,
                              uint64_t dropout_seed, model_step *per_adapter, model_step *total,
                              lp_err *err) {
    gpt2_trainer *t = impl;
    if (set_rows(t, adapter_of, err) < 0) return -1;
    t->dropout_seed = rng_mix(dropout_seed, 0);
    t->training = 0;
    for (int k = 0; k < t->n_adapters; k++) {
        t->grad_scale_of[k] = grad_scales[k];
        t->training |= grad_scales[k] != 0;
    }
    forward(t, inputs);
    head_loss(t, targets);
    *total = (model_step){0, 0};
    for (int k = 0; k < t->n_adapters; k++) {
        total->loss_sum += t->step_of[k].loss_sum;
        total->n_tokens += t->step_of[k].n_tokens;
        if (per_adapter) per_adapter[k] = t->step_of[k];
    }
    if (t->training) backward(t);
    return 0;
}

static int trainer_step(void *impl, const int *inputs, const int *targets, float grad_scale,
                        uint64_t seed, uint64_t first_seq, model_step *out, lp_err *err) {
    (void)first_seq; /* masks are indexed from each adapter's first row (per sequence: next) */
    return trainer_step_multi(impl, inputs, targets, NULL, &grad_scale, seed, NULL, out, err);
}

static int trainer_logits(void *impl, const int *inputs, float *logits, lp_err *err) {
    gpt2_trainer *t = impl;
    if (set_rows(t, NULL, err) < 0) return -1;
    t->training = 0;
    forward(t, inputs);
    const gpt2_config *c = &t->g->cfg;
    matmul_forward(logits, t->lnf, t->g->lm_head, W_OUT_IN, NULL, t->B * t->T, c->n_embd,
                   c->vocab_size);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * FLOPs of one training step, counted the way the code runs it (2 per multiply-add; attention
 * scores over the full T x T square, as computed before masking). */

static double train_flops(const model *m, const lora_adapter *a, int B, int T) {
    const gpt2_config *c = &((const gpt2 *)m->family)->cfg;
    double N = (double)B * T, C = c->n_embd, V = c->vocab_size;
    int lo = m->n_modules;
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].module < lo) lo = a->sites[i].module;
    double attn = 2.0 * 2.0 * B * (double)T * T * C; /* scores and att . v */
    double f = 2.0 * N * C * V * 2.0;                /* head forward and dlnf */
    for (int l = 0; l < c->n_layer; l++) {
        f += attn;
        if (lo <= l * MODS_PER_LAYER + MOD_QKV) f += 2.0 * attn; /* four GEMMs backward */
        for (int k = 0; k < MODS_PER_LAYER; k++) {
            int mod = l * MODS_PER_LAYER + k;
            const lora_module *x = &m->modules[mod];
            f += 2.0 * N * x->in * x->out;
            if (lo < mod) f += 2.0 * N * x->in * x->out;
            const lora_site *s = lora_adapter_site_for(a, mod);
            if (!s) continue;
            f += 2.0 * N * s->r * (s->in + s->out);       /* forward */
            f += 2.0 * N * s->r * (2.0 * s->out + s->in); /* dh, dB, dA */
            if (lo < mod) f += 2.0 * N * s->r * s->in;    /* dx */
        }
    }
    return f;
}

static const model_family_ops GPT2_OPS = {
    .trainer_new = trainer_new,
    .trainer_new_multi = trainer_new_multi,
    .trainer_step_multi = trainer_step_multi,
    .trainer_full_grads = trainer_full_grads,
    .trainer_free = trainer_free,
    .trainer_arena_bytes = trainer_arena_bytes,
    .trainer_step = trainer_step,
    .trainer_logits = trainer_logits,
    .train_flops = train_flops,
    .free_family = gpt2_free_family,
    .session_new = gpt2_session_new,
    .session_free = gpt2_session_free,
    .session_feed = gpt2_session_feed,
    .session_length = gpt2_session_length,
    .session_reset = gpt2_session_reset,
};
