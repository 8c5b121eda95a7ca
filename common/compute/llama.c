/* The Llama family with LoRA behind model.h: LlamaForCausalLM, Qwen2ForCausalLM (q/k/v biases)
 * and MistralForCausalLM. nn.Linear weights are [out,in] (W_OUT_IN).
 *
 * Forward per layer, as in HF's LlamaDecoderLayer:
 *   ln1 = RMSNorm(res); q,k,v = ln1 . W{q,k,v}^T (+ b); rope(q), rope(k)
 *   atty = GQA-attention(q, k, v); res2 = res + atty . Wo^T
 *   ln2 = RMSNorm(res2); res3 = res2 + (silu(ln2 . Wg^T) * (ln2 . Wu^T)) . Wd^T
 * and every adapted module adds s * (x . A^T) . B^T (trainer_core.h's adapted linear layer). The
 * final RMSNorm feeds the head (tied to embed_tokens or lm_head.weight), whose loss is computed
 * chunk by chunk.
 *
 * Backward computes only input gradients through the frozen weights, and LoRA gradients, and
 * stops at the lowest adapted module. */
#include "hash.h"
#include "llama_internal.h"
#include "trainer_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const MOD_NAMES[MODS_PER_LAYER] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

/* The first module of the layer reading the same input (q/k/v read ln1, gate/up read ln2): the
 * input gradient of module k is needed only if an adapted module lies below that one. */
static const int INPUT_OWNER[MODS_PER_LAYER] = {MOD_Q,    MOD_Q,    MOD_Q,   MOD_O,
                                                MOD_GATE, MOD_GATE, MOD_DOWN};

void llama_module_dims(const llama_config *c, int k, int *in, int *out) {
    int C = c->hidden_size, I = c->intermediate_size;
    int QD = c->num_attention_heads * c->head_dim, KVD = c->num_key_value_heads * c->head_dim;
    const int dims[MODS_PER_LAYER][2] = {{C, QD}, {C, KVD}, {C, KVD}, {QD, C},
                                         {C, I},  {C, I},   {I, C}};
    *in = dims[k][0];
    *out = dims[k][1];
}

int llama_rope_host_table(const llama_config *c, int P, float **out, lp_err *err) {
    double inv_freq[4096];
    if (c->head_dim / 2 > 4096) return lp_fail(err, "head_dim %d is too large", c->head_dim);
    float *t = malloc((size_t)P * c->head_dim * sizeof(float));
    if (!t) return lp_fail(err, "out of memory");
    llama_rope_inv_freq(c, inv_freq);
    rope_table(t, inv_freq, P, c->head_dim);
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * loading */

static void list_modules(model *m, const llama_config *c) {
    m->n_modules = c->num_hidden_layers * MODS_PER_LAYER;
    m->modules = calloc((size_t)m->n_modules, sizeof *m->modules);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        for (int k = 0; k < MODS_PER_LAYER; k++) {
            lora_module *mod = &m->modules[l * MODS_PER_LAYER + k];
            snprintf(mod->name, sizeof mod->name, "model.layers.%d.%s", l, MOD_NAMES[k]);
            mod->layer = l;
            llama_module_dims(c, k, &mod->in, &mod->out);
        }
    }
}

/* LlamaForCausalLM saves "model.layers..."; a bare LlamaModel saves "layers...". */
static int weight_of(model *m, weight *w, weight_kind kind, const char *name, int64_t rows,
                     int64_t cols, lp_err *err) {
    return model_weight(m, w, kind, "model.", name, rows, cols, err);
}

static int load_layer(model *m, llama *g, int l, lp_err *err) {
    const llama_config *c = &g->cfg;
    llama_layer *w = &g->layers[l];
    char name[128];
    int C = c->hidden_size;
    snprintf(name, sizeof name, "layers.%d.input_layernorm.weight", l);
    if (weight_of(m, &w->ln1, WK_VECTOR, name, C, 0, err) < 0) return -1;
    snprintf(name, sizeof name, "layers.%d.post_attention_layernorm.weight", l);
    if (weight_of(m, &w->ln2, WK_VECTOR, name, C, 0, err) < 0) return -1;
    for (int k = 0; k < MODS_PER_LAYER; k++) {
        int in, out;
        llama_module_dims(c, k, &in, &out);
        snprintf(name, sizeof name, "layers.%d.%s.weight", l, MOD_NAMES[k]);
        if (weight_of(m, &w->w[k], WK_MATRIX, name, out, in, err) < 0) return -1;
        int has_bias = k <= MOD_V ? c->qkv_bias : k == MOD_O ? c->o_bias : c->mlp_bias;
        if (!has_bias) continue;
        snprintf(name, sizeof name, "layers.%d.%s.bias", l, MOD_NAMES[k]);
        if (weight_of(m, &w->bias_own[k], WK_BIAS, name, out, 0, err) < 0) return -1;
        w->bias[k] = &w->bias_own[k];
    }
    return 0;
}

static void llama_free_family(void *family) {
    llama *g = family;
    free(g->layers);
    free(g);
}

static const model_family_ops LLAMA_OPS;

int llama_build(model *m, const llama_config *cfg, lp_err *err) {
    llama *g = calloc(1, sizeof *g);
    if (!g) return lp_fail(err, "out of memory");
    m->ops = &LLAMA_OPS;
    m->family = g;
    g->cfg = *cfg;
    const llama_config *c = &g->cfg;
    int C = c->hidden_size;
    m->arch = !strcmp(c->model_type, "qwen2")     ? "qwen2"
              : !strcmp(c->model_type, "mistral") ? "mistral"
                                                  : "llama";
    m->vocab_size = c->vocab_size;
    m->max_seq_len = c->max_position_embeddings;
    /* Mistral's sliding window: sequences no longer than it attend to everything before. */
    if (c->sliding_window > 0 && c->sliding_window < m->max_seq_len)
        m->max_seq_len = c->sliding_window;
    m->hidden_size = C;
    m->layout = W_OUT_IN;
    m->fingerprint = hash_xxh3(m->fingerprint, c, sizeof *c);
    g->layers = calloc((size_t)c->num_hidden_layers, sizeof *g->layers);
    if (!g->layers) return lp_fail(err, "out of memory");
    if (weight_of(m, &g->embed, WK_TABLE, "embed_tokens.weight", c->vocab_size, C, err) < 0)
        return -1;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (load_layer(m, g, l, err) < 0) return -1;
    if (weight_of(m, &g->norm, WK_VECTOR, "norm.weight", C, 0, err) < 0) return -1;
    /* The head lives outside "model.": lm_head.weight [V,C], absent when tied. */
    g->lm_head = &g->embed;
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

/* Per layer, what backward needs. The normalised inputs of q/k/v and gate/up are not kept:
 * backward recomputes them from the residual stream and the saved rstd where a LoRA site needs
 * them (12 % of the arena for SmolLM2-135M's shapes). */
typedef struct layer_acts {
    act *q, *k, *v, *atty, *res2, *gate, *up, *res3;
    float *rstd1, *att, *rstd2;
} layer_acts;

typedef struct llama_trainer {
    trainer_core core; /* first: model.c reaches it */
    const llama *g;
    float *cos_sin; /* [T, head_dim] */
    act *encoded;
    layer_acts *acts;
    act *lnf;
    float *rstd_f;
    act *xn;    /* the current RMSNorm output feeding q/k/v or gate/up [N, C] */
    act *proj;  /* o_proj / down_proj output before the residual add [N, C] */
    act *mlp_h; /* silu(gate) * up [N, I]: down_proj's input, recomputed in backward */
    act *dres, *dln, *dq_rot, *dk_rot, *dq, *dk, *dv, *datty, *dgate, *dup, *dh;
} llama_trainer;

static void carve_all(void *impl, arena_carver *cv) {
    llama_trainer *t = impl;
    trainer_core *c = &t->core;
    const llama_config *cfg = &t->g->cfg;
    size_t N = (size_t)c->N, C = (size_t)cfg->hidden_size, I = (size_t)cfg->intermediate_size;
    size_t NH = (size_t)cfg->num_attention_heads, hd = (size_t)cfg->head_dim;
    size_t QD = NH * hd, KVD = (size_t)cfg->num_key_value_heads * hd;
    size_t att = attention_state_floats(c->ctx, c->B, c->T, (int)NH);
    trainer_core_carve(c, cv);
    t->cos_sin = carve_f32(cv, (size_t)c->T * hd);
    t->encoded = carve_act(c, cv, N * C);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        layer_acts *a = &t->acts[l];
        a->rstd1 = carve_f32(cv, N);
        a->q = carve_act(c, cv, N * QD);
        a->k = carve_act(c, cv, N * KVD);
        a->v = carve_act(c, cv, N * KVD);
        a->att = carve_f32(cv, att);
        a->atty = carve_act(c, cv, N * QD);
        a->res2 = carve_act(c, cv, N * C);
        a->rstd2 = carve_f32(cv, N);
        a->gate = carve_act(c, cv, N * I);
        a->up = carve_act(c, cv, N * I);
        a->res3 = carve_act(c, cv, N * C);
    }
    t->lnf = carve_act(c, cv, N * C);
    t->rstd_f = carve_f32(cv, N);
    t->xn = carve_act(c, cv, N * C);
    t->proj = carve_act(c, cv, N * C);
    t->mlp_h = carve_act(c, cv, N * I);
    t->dres = carve_act(c, cv, N * C);
    t->dln = carve_act(c, cv, N * C);
    t->dq_rot = carve_act(c, cv, N * QD);
    t->dk_rot = carve_act(c, cv, N * KVD);
    t->dq = carve_act(c, cv, N * QD);
    t->dk = carve_act(c, cv, N * KVD);
    t->dv = carve_act(c, cv, N * KVD);
    t->datty = carve_act(c, cv, N * QD);
    t->dgate = carve_act(c, cv, N * I);
    t->dup = carve_act(c, cv, N * I);
    t->dh = carve_act(c, cv, N * I);
}

static void trainer_free(void *impl) {
    llama_trainer *t = impl;
    if (!t) return;
    trainer_core_free(&t->core);
    free(t->acts);
    free(t);
}

static int upload_rope(llama_trainer *t, lp_err *err) {
    float *host;
    if (llama_rope_host_table(&t->g->cfg, t->core.T, &host, err) < 0) return -1;
    int rc = device_upload(ops_device(t->core.ctx), t->cos_sin, host,
                           (size_t)t->core.T * t->g->cfg.head_dim * sizeof(float), err);
    free(host);
    return rc;
}

/* model.c has checked B, T and that every adapter's sites fit the modules. */
static int trainer_new(void **out, const model *m, lora_adapter *const *adapters, int n_adapters,
                       int B, int T, lp_err *err) {
    llama_trainer *t = calloc(1, sizeof *t);
    if (!t) return lp_fail(err, "out of memory");
    t->g = m->family;
    const llama_config *c = &t->g->cfg;
    t->acts = calloc((size_t)c->num_hidden_layers, sizeof *t->acts);
    ops_limits lim = {.max_rows = B * T,
                      .max_T = T,
                      .max_heads = c->num_attention_heads,
                      .head_dim = c->head_dim,
                      .vocab = c->vocab_size,
                      .max_matrix = m->max_bf16,
                      .bf16_gemm = m->gemm_bf16};
    if (!t->acts || trainer_core_init(&t->core, m, adapters, n_adapters, B, T, &lim, err) < 0 ||
        trainer_core_alloc_arena(&t->core, carve_all, t, err) < 0 || upload_rope(t, err) < 0) {
        if (!t->acts) lp_fail(err, "out of memory");
        trainer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * forward and backward */

static void linear_forward(llama_trainer *t, int module, act *out, const act *inp) {
    const llama_layer *w = &t->g->layers[module / MODS_PER_LAYER];
    int k = module % MODS_PER_LAYER, IC, OC;
    llama_module_dims(&t->g->cfg, k, &IC, &OC);
    lora_linear_forward(&t->core, module, out, inp, &w->w[k], W_OUT_IN, w->bias[k], IC, OC);
}

/* dinp may be NULL when nothing below needs the input gradient. */
static void linear_backward(llama_trainer *t, int module, act *dinp, int accumulate,
                            const act *dout, const act *inp) {
    const llama_layer *w = &t->g->layers[module / MODS_PER_LAYER];
    int k = module % MODS_PER_LAYER, IC, OC;
    llama_module_dims(&t->g->cfg, k, &IC, &OC);
    lora_linear_backward(&t->core, module, dinp, accumulate, dout, inp, &w->w[k], W_OUT_IN, IC, OC);
}

static void forward(llama_trainer *t) {
    trainer_core *c = &t->core;
    ops_ctx *x = c->ctx;
    const llama *g = t->g;
    const llama_config *cfg = &g->cfg;
    int B = c->B, T = c->T, N = c->N, C = cfg->hidden_size, I = cfg->intermediate_size;
    int NH = cfg->num_attention_heads, NKV = cfg->num_key_value_heads, hd = cfg->head_dim;
    float eps = cfg->rms_norm_eps;
    embedding_forward(x, t->encoded, c->tokens, &g->embed, N, C);
    const act *res = t->encoded;
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const llama_layer *w = &g->layers[l];
        layer_acts *a = &t->acts[l];
        int mod = l * MODS_PER_LAYER;
        rmsnorm_forward(x, t->xn, a->rstd1, res, &w->ln1, N, C, eps);
        linear_forward(t, mod + MOD_Q, a->q, t->xn);
        linear_forward(t, mod + MOD_K, a->k, t->xn);
        linear_forward(t, mod + MOD_V, a->v, t->xn);
        rope_forward(x, a->q, t->cos_sin, N, T, 0, NH, hd);
        rope_forward(x, a->k, t->cos_sin, N, T, 0, NKV, hd);
        attention_forward(x, a->atty, a->att, a->q, a->k, a->v, NH * hd, NKV * hd, B, T, NH, NKV,
                          hd);
        linear_forward(t, mod + MOD_O, t->proj, a->atty);
        residual_forward(x, a->res2, res, t->proj, N * C);
        rmsnorm_forward(x, t->xn, a->rstd2, a->res2, &w->ln2, N, C, eps);
        linear_forward(t, mod + MOD_GATE, a->gate, t->xn);
        linear_forward(t, mod + MOD_UP, a->up, t->xn);
        swiglu_forward(x, t->mlp_h, a->gate, a->up, N * I);
        linear_forward(t, mod + MOD_DOWN, t->proj, t->mlp_h);
        residual_forward(x, a->res3, a->res2, t->proj, N * C);
        res = a->res3;
    }
    rmsnorm_forward(x, t->lnf, t->rstd_f, res, &g->norm, N, C, eps);
}

/* The gradient of module mod's input, if an adapted module lies below the first module that
 * reads that input; else NULL. */
static act *input_grad(const llama_trainer *t, int mod, act *buf) {
    int owner = mod - mod % MODS_PER_LAYER + INPUT_OWNER[mod % MODS_PER_LAYER];
    return trainer_core_needs_grad_below(&t->core, owner) ? buf : NULL;
}

/* Whether backward needs a module's input again (recomputed, not kept): where a LoRA branch or
 * the full fine-tuning baseline reads it. */
static int adapts_any(const llama_trainer *t, int m0, int m1, int m2) {
    const trainer_core *c = &t->core;
    return c->full_grads || trainer_core_adapts(c, m0) || (m1 >= 0 && trainer_core_adapts(c, m1)) ||
           (m2 >= 0 && trainer_core_adapts(c, m2));
}

static void backward(llama_trainer *t) {
    trainer_core *c = &t->core;
    ops_ctx *x = c->ctx;
    const llama *g = t->g;
    const llama_config *cfg = &g->cfg;
    int B = c->B, T = c->T, C = cfg->hidden_size, I = cfg->intermediate_size;
    int L = cfg->num_hidden_layers;
    int NH = cfg->num_attention_heads, NKV = cfg->num_key_value_heads, hd = cfg->head_dim;
    size_t N = (size_t)c->N, QD = (size_t)NH * hd, KVD = (size_t)NKV * hd;
    zeroed_act(c, t->dres, N * C);
    rmsnorm_backward(x, t->dres, t->dln, t->acts[L - 1].res3, &g->norm, t->rstd_f, (int)N, C);
    for (int l = L - 1; l >= 0; l--) {
        const llama_layer *w = &g->layers[l];
        const layer_acts *a = &t->acts[l];
        const act *res_in = l > 0 ? t->acts[l - 1].res3 : t->encoded;
        int mod = l * MODS_PER_LAYER;
        if (c->lowest_site > mod + MOD_DOWN) break;
        /* MLP: down_proj's input is recomputed rather than kept per layer */
        act *d_h = input_grad(t, mod + MOD_DOWN, t->dh);
        if (adapts_any(t, mod + MOD_DOWN, -1, -1))
            swiglu_forward(x, t->mlp_h, a->gate, a->up, (int)(N * I));
        linear_backward(t, mod + MOD_DOWN, d_h, 0, t->dres, t->mlp_h);
        if (!d_h) break;
        swiglu_backward(x, t->dgate, t->dup, a->gate, a->up, d_h, (int)(N * I));
        act *d_ln2 = input_grad(t, mod + MOD_UP, t->dln);
        if (adapts_any(t, mod + MOD_GATE, mod + MOD_UP, -1))
            rmsnorm_recompute(x, t->xn, a->res2, &w->ln2, a->rstd2, (int)N, C);
        linear_backward(t, mod + MOD_UP, d_ln2, 0, t->dup, t->xn);
        linear_backward(t, mod + MOD_GATE, d_ln2, 1, t->dgate, t->xn);
        if (!d_ln2) break;
        rmsnorm_backward(x, t->dres, d_ln2, a->res2, &w->ln2, a->rstd2, (int)N, C);
        /* attention */
        act *d_atty = input_grad(t, mod + MOD_O, t->datty);
        linear_backward(t, mod + MOD_O, d_atty, 0, t->dres, a->atty);
        if (!d_atty) break;
        attention_backward(x, t->dq_rot, t->dk_rot, t->dv, d_atty, a->atty, a->q, a->k, a->v,
                           a->att, (int)QD, (int)KVD, B, T, NH, NKV, hd);
        rope_backward(x, t->dq, t->dq_rot, t->cos_sin, (int)N, T, 0, NH, hd);
        rope_backward(x, t->dk, t->dk_rot, t->cos_sin, (int)N, T, 0, NKV, hd);
        act *d_ln1 = input_grad(t, mod + MOD_Q, t->dln);
        if (adapts_any(t, mod + MOD_Q, mod + MOD_K, mod + MOD_V))
            rmsnorm_recompute(x, t->xn, res_in, &w->ln1, a->rstd1, (int)N, C);
        linear_backward(t, mod + MOD_V, d_ln1, 0, t->dv, t->xn);
        linear_backward(t, mod + MOD_K, d_ln1, 1, t->dk, t->xn);
        linear_backward(t, mod + MOD_Q, d_ln1, 1, t->dq, t->xn);
        if (!d_ln1) break;
        rmsnorm_backward(x, t->dres, d_ln1, res_in, &w->ln1, a->rstd1, (int)N, C);
        trainer_core_layer_done(c, l); /* its LoRA gradients are final now */
    }
}

static int trainer_step(void *impl, const int *inputs, const int *targets, const int *adapter_of,
                        const float *grad_scales, uint64_t seed, const uint64_t *seq_ids,
                        model_step *per_adapter, model_step *total, lp_err *err) {
    llama_trainer *t = impl;
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
    llama_trainer *t = impl;
    trainer_core *c = &t->core;
    if (trainer_core_begin(c, inputs, NULL, NULL, NULL, 0, NULL, err) < 0) return -1;
    forward(t);
    return trainer_core_logits(c, t->lnf, t->g->lm_head, logits, err);
}

/* ---------------------------------------------------------------------------------------------
 * FLOPs of one training step, counted the way the code runs it (2 per multiply-add; attention
 * scores over the full T x T square). */

static double train_flops(const model *m, const lora_adapter *a, int B, int T) {
    const llama_config *c = &((const llama *)m->family)->cfg;
    double N = (double)B * T, C = c->hidden_size, V = c->vocab_size;
    int lo = m->n_modules;
    for (int i = 0; i < a->n_sites; i++)
        if (a->sites[i].module < lo) lo = a->sites[i].module;
    double attn = 2.0 * 2.0 * B * (double)T * T * c->num_attention_heads * c->head_dim;
    double f = 2.0 * N * C * V * 2.0; /* head forward and dlnf */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int base = l * MODS_PER_LAYER;
        f += attn;
        if (lo < base + MOD_O) f += 2.0 * attn; /* four GEMMs backward */
        for (int k = 0; k < MODS_PER_LAYER; k++) {
            int mod = base + k;
            const lora_module *x = &m->modules[mod];
            int dinp = lo < base + INPUT_OWNER[k];
            f += 2.0 * N * x->in * x->out;
            if (dinp) f += 2.0 * N * x->in * x->out;
            const lora_site *s = lora_adapter_site_for(a, mod);
            if (s) f += lora_site_flops(s, N, dinp);
        }
    }
    return f;
}

static const model_family_ops LLAMA_OPS = {
    .trainer_new = trainer_new,
    .trainer_free = trainer_free,
    .trainer_step = trainer_step,
    .trainer_logits = trainer_logits,
    .train_flops = train_flops,
    .free_family = llama_free_family,
    .session_new = llama_session_new,
    .session_free = llama_session_free,
    .session_feed = llama_session_feed,
    .session_length = llama_session_length,
    .session_reset = llama_session_reset,
};
