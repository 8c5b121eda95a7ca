/* GPT-2 with LoRA: the first model family behind model.h.
 *
 * Forward per layer, as in HF GPT2LMHeadModel (Conv1D weights are [in,out]):
 *   ln1 = LN(res); qkv = ln1 . Wqkv + b; atty = attn(qkv); res2 = res + atty . Wo + b
 *   ln2 = LN(res2); fch = ln2 . Wfc + b; res3 = res2 + gelu(fch) . Wp + b
 * and every adapted module adds s * (x . A^T) . B^T (trainer_core.h's adapted linear layer). The
 * head is tied to wte and the loss is computed chunk by chunk, so the [B*T, V] logits never exist
 * whole.
 *
 * Backward computes only input gradients through the frozen weights, and LoRA gradients. It
 * stops at the lowest adapted module: nothing below it has anything to learn. */
#include "gpt2_internal.h"
#include "hash.h"
#include "trainer_core.h"

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
static int weight_of(model *m, weight *w, weight_kind kind, const char *name, int64_t rows,
                     int64_t cols, lp_err *err) {
    return model_weight(m, w, kind, "transformer.", name, rows, cols, err);
}

static int load_layer(model *m, gpt2_layer *w, int l, int C, lp_err *err) {
    struct {
        weight *slot;
        const char *suffix;
        weight_kind kind;
        int rows, cols;
    } parts[12] = {
        {&w->ln1_w, "ln_1.weight", WK_VECTOR, C, 0},
        {&w->ln1_b, "ln_1.bias", WK_VECTOR, C, 0},
        {&w->qkv_w, "attn.c_attn.weight", WK_MATRIX, C, 3 * C},
        {&w->qkv_b, "attn.c_attn.bias", WK_BIAS, 3 * C, 0},
        {&w->attn_proj_w, "attn.c_proj.weight", WK_MATRIX, C, C},
        {&w->attn_proj_b, "attn.c_proj.bias", WK_BIAS, C, 0},
        {&w->ln2_w, "ln_2.weight", WK_VECTOR, C, 0},
        {&w->ln2_b, "ln_2.bias", WK_VECTOR, C, 0},
        {&w->fc_w, "mlp.c_fc.weight", WK_MATRIX, C, 4 * C},
        {&w->fc_b, "mlp.c_fc.bias", WK_BIAS, 4 * C, 0},
        {&w->fc_proj_w, "mlp.c_proj.weight", WK_MATRIX, 4 * C, C},
        {&w->fc_proj_b, "mlp.c_proj.bias", WK_BIAS, C, 0},
    };
    for (int i = 0; i < 12; i++) {
        char name[96];
        snprintf(name, sizeof name, "h.%d.%s", l, parts[i].suffix);
        if (weight_of(m, parts[i].slot, parts[i].kind, name, parts[i].rows, parts[i].cols, err) < 0)
            return -1;
    }
    return 0;
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
    m->fingerprint = hash_xxh3(m->fingerprint, c, sizeof *c);
    g->layers = calloc((size_t)c->n_layer, sizeof *g->layers);
    if (!g->layers) return lp_fail(err, "out of memory");
    if (weight_of(m, &g->wte, WK_TABLE, "wte.weight", c->vocab_size, C, err) < 0 ||
        weight_of(m, &g->wpe, WK_TABLE, "wpe.weight", c->n_positions, C, err) < 0 ||
        weight_of(m, &g->lnf_w, WK_VECTOR, "ln_f.weight", C, 0, err) < 0 ||
        weight_of(m, &g->lnf_b, WK_VECTOR, "ln_f.bias", C, 0, err) < 0)
        return -1;
    for (int l = 0; l < c->n_layer; l++)
        if (load_layer(m, &g->layers[l], l, C, err) < 0) return -1;
    /* An untied head lives outside "transformer.": lm_head.weight [V,C]. */
    g->lm_head = &g->wte;
    if (!c->tie_word_embeddings) {
        if (model_weight(m, &g->lm_head_own, WK_TABLE, "", "lm_head.weight", c->vocab_size, C,
                         err) < 0)
            return -1;
        g->lm_head = &g->lm_head_own;
    }
    list_modules(m, c);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * the trainer: one arena of activations and gradient scratch, sized here once */

typedef struct layer_acts {
    act *ln1, *qkv, *atty, *res2, *ln2, *fch, *fch_gelu, *res3;
    float *ln1_mean, *ln1_rstd, *att, *ln2_mean, *ln2_rstd;
} layer_acts;

typedef struct gpt2_trainer {
    trainer_core core; /* first: model.c reaches it */
    const gpt2 *g;
    act *encoded;
    layer_acts *acts;
    act *lnf;
    float *lnf_mean, *lnf_rstd;
    act *proj; /* output of c_proj before the residual add */
    act *dres, *dln, *dqkv, *datty, *dfch, *dfch_gelu;
} gpt2_trainer;

static void carve_all(void *impl, arena_carver *cv) {
    gpt2_trainer *t = impl;
    trainer_core *c = &t->core;
    const gpt2_config *cfg = &t->g->cfg;
    size_t N = (size_t)c->N, C = (size_t)cfg->n_embd;
    size_t att = attention_state_floats(c->ctx, c->B, c->T, cfg->n_head);
    trainer_core_carve(c, cv);
    t->encoded = carve_act(c, cv, N * C);
    for (int l = 0; l < cfg->n_layer; l++) {
        layer_acts *a = &t->acts[l];
        a->ln1 = carve_act(c, cv, N * C);
        a->ln1_mean = carve_f32(cv, N);
        a->ln1_rstd = carve_f32(cv, N);
        a->qkv = carve_act(c, cv, N * 3 * C);
        a->att = carve_f32(cv, att);
        a->atty = carve_act(c, cv, N * C);
        a->res2 = carve_act(c, cv, N * C);
        a->ln2 = carve_act(c, cv, N * C);
        a->ln2_mean = carve_f32(cv, N);
        a->ln2_rstd = carve_f32(cv, N);
        a->fch = carve_act(c, cv, N * 4 * C);
        a->fch_gelu = carve_act(c, cv, N * 4 * C);
        a->res3 = carve_act(c, cv, N * C);
    }
    t->lnf = carve_act(c, cv, N * C);
    t->lnf_mean = carve_f32(cv, N);
    t->lnf_rstd = carve_f32(cv, N);
    t->proj = carve_act(c, cv, N * C);
    t->dres = carve_act(c, cv, N * C);
    t->dln = carve_act(c, cv, N * C);
    t->dqkv = carve_act(c, cv, N * 3 * C);
    t->datty = carve_act(c, cv, N * C);
    t->dfch = carve_act(c, cv, N * 4 * C);
    t->dfch_gelu = carve_act(c, cv, N * 4 * C);
}

static void trainer_free(void *impl) {
    gpt2_trainer *t = impl;
    if (!t) return;
    trainer_core_free(&t->core);
    free(t->acts);
    free(t);
}

static ops_limits limits_of(const model *m, const gpt2_config *c, int rows, int T, int kv) {
    return (ops_limits){.max_rows = rows,
                        .max_T = T,
                        .max_heads = c->n_head,
                        .head_dim = c->n_embd / c->n_head,
                        .max_kv = kv,
                        .vocab = c->vocab_size,
                        .max_matrix = m->max_bf16,
                      .bf16_gemm = m->gemm_bf16};
}

/* model.c has checked B, T and that every adapter's sites fit the modules. */
static int trainer_new(void **out, const model *m, lora_adapter *const *adapters, int n_adapters,
                       int B, int T, lp_err *err) {
    gpt2_trainer *t = calloc(1, sizeof *t);
    if (!t) return lp_fail(err, "out of memory");
    t->g = m->family;
    t->acts = calloc((size_t)t->g->cfg.n_layer, sizeof *t->acts);
    ops_limits lim = limits_of(m, &t->g->cfg, B * T, T, 0);
    if (!t->acts || trainer_core_init(&t->core, m, adapters, n_adapters, B, T, &lim, err) < 0 ||
        trainer_core_alloc_arena(&t->core, carve_all, t, err) < 0) {
        if (!t->acts) lp_fail(err, "out of memory");
        trainer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * forward and backward */

static void forward(gpt2_trainer *t) {
    trainer_core *c = &t->core;
    ops_ctx *x = c->ctx;
    const gpt2 *m = t->g;
    const gpt2_config *cfg = &m->cfg;
    int B = c->B, T = c->T, C = cfg->n_embd, NH = cfg->n_head, N = c->N;
    float eps = cfg->layer_norm_epsilon;
    encoder_forward(x, t->encoded, c->tokens, &m->wte, &m->wpe, B, T, 0, C);
    const act *res = t->encoded;
    for (int l = 0; l < cfg->n_layer; l++) {
        const gpt2_layer *w = &m->layers[l];
        layer_acts *a = &t->acts[l];
        int mod = l * MODS_PER_LAYER;
        layernorm_forward(x, a->ln1, a->ln1_mean, a->ln1_rstd, res, &w->ln1_w, &w->ln1_b, N, C,
                          eps);
        lora_linear_forward(c, mod + MOD_QKV, a->qkv, a->ln1, &w->qkv_w, W_IN_OUT, &w->qkv_b, C,
                            3 * C);
        attention_forward(x, a->atty, a->att, a->qkv, act_at(x, a->qkv, C),
                          act_at(x, a->qkv, 2 * C), 3 * C, 3 * C, B, T, NH, NH, C / NH);
        lora_linear_forward(c, mod + MOD_ATTN_PROJ, t->proj, a->atty, &w->attn_proj_w, W_IN_OUT,
                            &w->attn_proj_b, C, C);
        residual_forward(x, a->res2, res, t->proj, N * C);
        layernorm_forward(x, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, &w->ln2_w, &w->ln2_b, N, C,
                          eps);
        lora_linear_forward(c, mod + MOD_FC, a->fch, a->ln2, &w->fc_w, W_IN_OUT, &w->fc_b, C,
                            4 * C);
        gelu_forward(x, a->fch_gelu, a->fch, N * 4 * C);
        lora_linear_forward(c, mod + MOD_FC_PROJ, t->proj, a->fch_gelu, &w->fc_proj_w, W_IN_OUT,
                            &w->fc_proj_b, 4 * C, C);
        residual_forward(x, a->res3, a->res2, t->proj, N * C);
        res = a->res3;
    }
    layernorm_forward(x, t->lnf, t->lnf_mean, t->lnf_rstd, res, &m->lnf_w, &m->lnf_b, N, C, eps);
}

/* The gradient of module mod's input is needed only if an adapted module lies below it. */
static act *input_grad(gpt2_trainer *t, int mod, act *buf) {
    return trainer_core_needs_grad_below(&t->core, mod) ? buf : NULL;
}

static void backward(gpt2_trainer *t) {
    trainer_core *c = &t->core;
    ops_ctx *x = c->ctx;
    const gpt2 *m = t->g;
    const gpt2_config *cfg = &m->cfg;
    int B = c->B, T = c->T, C = cfg->n_embd, NH = cfg->n_head, L = cfg->n_layer;
    size_t N = (size_t)c->N;
    /* dres holds the gradient of the residual stream, updated in place from layer to layer:
     * res3 = res2 + proj passes it to both terms unchanged. */
    zeroed_act(c, t->dres, N * C);
    layernorm_backward(x, t->dres, t->dln, t->acts[L - 1].res3, &m->lnf_w, t->lnf_mean, t->lnf_rstd,
                       (int)N, C);
    for (int l = L - 1; l >= 0; l--) {
        const gpt2_layer *w = &m->layers[l];
        const layer_acts *a = &t->acts[l];
        const act *res_in = l > 0 ? t->acts[l - 1].res3 : t->encoded;
        int mod = l * MODS_PER_LAYER;
        if (c->lowest_site > mod + MOD_FC_PROJ) break;
        /* MLP */
        act *d_gelu = input_grad(t, mod + MOD_FC_PROJ, t->dfch_gelu);
        lora_linear_backward(c, mod + MOD_FC_PROJ, d_gelu, 0, t->dres, a->fch_gelu, &w->fc_proj_w,
                             W_IN_OUT, 4 * C, C);
        if (!d_gelu) break;
        gelu_backward(x, t->dfch, a->fch, d_gelu, (int)N * 4 * C);
        act *d_ln2 = input_grad(t, mod + MOD_FC, t->dln);
        lora_linear_backward(c, mod + MOD_FC, d_ln2, 0, t->dfch, a->ln2, &w->fc_w, W_IN_OUT, C,
                             4 * C);
        if (!d_ln2) break;
        layernorm_backward(x, t->dres, d_ln2, a->res2, &w->ln2_w, a->ln2_mean, a->ln2_rstd, (int)N,
                           C);
        /* attention */
        act *d_atty = input_grad(t, mod + MOD_ATTN_PROJ, t->datty);
        lora_linear_backward(c, mod + MOD_ATTN_PROJ, d_atty, 0, t->dres, a->atty, &w->attn_proj_w,
                             W_IN_OUT, C, C);
        if (!d_atty) break;
        attention_backward(x, t->dqkv, act_at(x, t->dqkv, C), act_at(x, t->dqkv, 2 * C), d_atty,
                           a->atty, a->qkv, act_at(x, (const act *)a->qkv, C),
                           act_at(x, (const act *)a->qkv, 2 * C), a->att, 3 * C, 3 * C, B, T, NH,
                           NH, C / NH);
        act *d_ln1 = input_grad(t, mod + MOD_QKV, t->dln);
        lora_linear_backward(c, mod + MOD_QKV, d_ln1, 0, t->dqkv, a->ln1, &w->qkv_w, W_IN_OUT, C,
                             3 * C);
        if (!d_ln1) break;
        layernorm_backward(x, t->dres, d_ln1, res_in, &w->ln1_w, a->ln1_mean, a->ln1_rstd, (int)N,
                           C);
        trainer_core_layer_done(c, l); /* its LoRA gradients are final now */
    }
}

static int trainer_step(void *impl, const int *inputs, const int *targets, const int *adapter_of,
                        const float *grad_scales, uint64_t seed, const uint64_t *seq_ids,
                        model_step *per_adapter, model_step *total, lp_err *err) {
    gpt2_trainer *t = impl;
    trainer_core *c = &t->core;
    if (trainer_core_begin(c, inputs, targets, adapter_of, grad_scales, seed, seq_ids, err) < 0)
        return -1;
    forward(t);
    trainer_core_head_loss(c, t->lnf, t->g->lm_head, t->dln);
    if (c->training) backward(t);
    if (c->training && trainer_core_stream_end(c, err) < 0) return -1;
    return trainer_core_end(c, per_adapter, total, err);
}

static int trainer_logits(void *impl, const int *inputs, float *logits, lp_err *err) {
    gpt2_trainer *t = impl;
    trainer_core *c = &t->core;
    if (trainer_core_begin(c, inputs, NULL, NULL, NULL, 0, NULL, err) < 0) return -1;
    forward(t);
    return trainer_core_logits(c, t->lnf, t->g->lm_head, logits, err);
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
            if (s) f += lora_site_flops(s, N, lo < mod);
        }
    }
    return f;
}

static const model_family_ops GPT2_OPS = {
    .trainer_new = trainer_new,
    .trainer_free = trainer_free,
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
