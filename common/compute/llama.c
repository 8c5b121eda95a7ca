/* The Llama family with LoRA behind model.h: LlamaForCausalLM, Qwen2ForCausalLM (q/k/v biases)
 * and MistralForCausalLM. nn.Linear weights are [out,in] (W_OUT_IN).
 *
 * Forward per layer, as in HF's LlamaDecoderLayer:
 *   ln1 = RMSNorm(res); q,k,v = ln1 . W{q,k,v}^T (+ b); rope(q), rope(k)
 *   atty = GQA-attention(q, k, v); res2 = res + atty . Wo^T
 *   ln2 = RMSNorm(res2); res3 = res2 + (silu(ln2 . Wg^T) * (ln2 . Wu^T)) . Wd^T
 * and every adapted module adds s * (x . A^T) . B^T. The final RMSNorm feeds the head (tied to
 * embed_tokens or lm_head.weight), whose loss is computed chunk by chunk.
 *
 * Backward computes only input gradients through the frozen weights, and LoRA gradients, and
 * stops at the lowest adapted module.
 *
 * Frozen weights stored as BF16 are either widened to f32 copies at load (model_weight) or kept
 * in bf16, mapped from the file, and widened one matrix at a time into a scratch as they are
 * used (LORAPS_BF16_WEIGHTS=keep|f32; see the default below). The embedding/head matrix is
 * always f32: the head reads all of it in every chunk. */
#include "arena.h"
#include "hash.h"
#include "llama_config.h"
#include "model_family.h"
#include "ops_llama.h"
#include "rng.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MOD_Q, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, MODS_PER_LAYER };

static const char *const MOD_NAMES[MODS_PER_LAYER] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

/* The first module of the layer reading the same input (q/k/v read ln1, gate/up read ln2): the
 * input gradient of module k is needed only if an adapted module lies below that one. */
static const int INPUT_OWNER[MODS_PER_LAYER] = {MOD_Q,    MOD_Q,    MOD_Q,   MOD_O,
                                                MOD_GATE, MOD_GATE, MOD_DOWN};

/* A frozen matrix [out,in]: f32 (mapped or converted), or bf16 mapped from the file. */
typedef struct wmat {
    const float *f32;
    const uint16_t *bf16;
    size_t numel;
} wmat;

typedef struct llama_layer {
    const float *ln1, *ln2;
    wmat w[MODS_PER_LAYER];
    const float *bias[MODS_PER_LAYER]; /* NULL where the module has none */
} llama_layer;

typedef struct llama {
    llama_config cfg;
    const float *embed, *norm, *lm_head; /* lm_head == embed when tied */
    llama_layer *layers;
    size_t max_bf16; /* numel of the largest matrix kept in bf16 (0: none) */
} llama;

/* The module's [in, out]. */
static void module_dims(const llama_config *c, int k, int *in, int *out) {
    int C = c->hidden_size, I = c->intermediate_size;
    int QD = c->num_attention_heads * c->head_dim, KVD = c->num_key_value_heads * c->head_dim;
    const int dims[MODS_PER_LAYER][2] = {{C, QD}, {C, KVD}, {C, KVD}, {QD, C},
                                         {C, I},  {C, I},   {I, C}};
    *in = dims[k][0];
    *out = dims[k][1];
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
            module_dims(c, k, &mod->in, &mod->out);
        }
    }
}

/* LlamaForCausalLM saves "model.layers..."; a bare LlamaModel saves "layers...". */
static const float *weight(model *m, const char *name, int64_t rows, int64_t cols, lp_err *err) {
    return model_weight(m, "model.", name, rows, cols, err);
}

/* Whether BF16 frozen matrices stay bf16 (mapped) rather than being widened at load. */
static int keep_bf16(void) {
    const char *v = getenv("LORAPS_BF16_WEIGHTS");
    return !(v && !strcmp(v, "f32"));
}

/* A linear weight [rows, cols]: kept as mapped bf16 when the file stores it so (and keeping is
 * on), hashed into the fingerprint exactly as model_weight hashes it; else through
 * model_weight. */
static int load_matrix(model *m, llama *g, wmat *w, const char *name, int64_t rows, int64_t cols,
                       lp_err *err) {
    weight_view t;
    w->numel = (size_t)rows * (size_t)cols;
    if (model_weight_view(m, "model.", name, rows, cols, &t, err) < 0) return -1;
    if (keep_bf16() && t.dtype == DT_BF16 && ((uintptr_t)t.data & 1) == 0) {
        m->weight_bytes += t.nbytes;
        w->bf16 = t.data;
        if (w->numel > g->max_bf16) g->max_bf16 = w->numel;
        return 0;
    }
    w->f32 = model_weight_f32(m, name, &t, err);
    return w->f32 ? 0 : -1;
}

static int load_layer(model *m, llama *g, int l, lp_err *err) {
    const llama_config *c = &g->cfg;
    llama_layer *w = &g->layers[l];
    char name[128];
    int C = c->hidden_size;
    snprintf(name, sizeof name, "layers.%d.input_layernorm.weight", l);
    if (!(w->ln1 = weight(m, name, C, 0, err))) return -1;
    snprintf(name, sizeof name, "layers.%d.post_attention_layernorm.weight", l);
    if (!(w->ln2 = weight(m, name, C, 0, err))) return -1;
    for (int k = 0; k < MODS_PER_LAYER; k++) {
        int in, out;
        module_dims(c, k, &in, &out);
        snprintf(name, sizeof name, "layers.%d.%s.weight", l, MOD_NAMES[k]);
        if (load_matrix(m, g, &w->w[k], name, out, in, err) < 0) return -1;
        int has_bias = k <= MOD_V ? c->qkv_bias : k == MOD_O ? c->o_bias : c->mlp_bias;
        if (!has_bias) continue;
        snprintf(name, sizeof name, "layers.%d.%s.bias", l, MOD_NAMES[k]);
        if (!(w->bias[k] = weight(m, name, out, 0, err))) return -1;
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
    m->fingerprint = hash64(m->fingerprint, c, sizeof *c);
    g->layers = calloc((size_t)c->num_hidden_layers, sizeof *g->layers);
    if (!(g->embed = weight(m, "embed_tokens.weight", c->vocab_size, C, err))) return -1;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (load_layer(m, g, l, err) < 0) return -1;
    if (!(g->norm = weight(m, "norm.weight", C, 0, err))) return -1;
    /* The head lives outside "model.": lm_head.weight [V,C], absent when tied. */
    g->lm_head = c->tie_word_embeddings
                     ? g->embed
                     : model_weight(m, "", "lm_head.weight", c->vocab_size, C, err);
    if (!g->lm_head) return -1;
    list_modules(m, c);
    return 0;
}

/* The matrix as f32: itself, or widened into scratch. */
static const float *matrix_f32(const wmat *w, float *scratch) {
    if (w->f32) return w->f32;
    bf16_widen(scratch, w->bf16, w->numel);
    return scratch;
}

/* ---------------------------------------------------------------------------------------------
 * the trainer: one arena of activations and gradient scratch, sized here once */

#define HEAD_CHUNK 128 /* tokens per chunk of logits */

/* Per layer, what backward needs. The normalised inputs of q/k/v and gate/up are not kept:
 * backward recomputes them from the residual stream and the saved rstd where a LoRA site needs
 * them (12 % of the arena for SmolLM2-135M's shapes). */
typedef struct layer_acts {
    float *rstd1, *q, *k, *v, *att, *atty, *res2, *rstd2, *gate, *up, *res3;
} layer_acts;

typedef struct llama_trainer {
    const model *m;
    const llama *g;
    lora_adapter *a;
    int B, T;
    float *arena;
    size_t arena_floats;
    const lora_site **site_of; /* per module: its LoRA site or NULL */
    float **lora_h;            /* per module with a site: x . A^T [N, r] */
    int lowest_site;
    int max_in, max_r;
    float *cos_sin; /* [T, head_dim] */
    float *encoded;
    layer_acts *acts;
    float *lnf, *rstd_f;
    float *xn;    /* the current RMSNorm output feeding q/k/v or gate/up [N, C] */
    float *proj;  /* o_proj / down_proj output before the residual add [N, C] */
    float *mlp_h; /* silu(gate) * up [N, I]: down_proj's input, recomputed in backward */
    float *dres, *dln, *dq_rot, *dk_rot, *dq, *dk, *dv, *datty, *dgate, *dup, *dh;
    float *att_scratch, *lora_dh;
    int att_slots;
    float *drop_x, *drop_dx;
    float *logits, *losses;
    float *wbuf; /* one bf16 matrix widened */
    uint64_t dropout_seed;
    int training;
} llama_trainer;

static void carve_all(llama_trainer *t, arena_carver *c) {
    const llama_config *cfg = &t->g->cfg;
    size_t N = (size_t)t->B * t->T, C = (size_t)cfg->hidden_size,
           I = (size_t)cfg->intermediate_size;
    size_t NH = (size_t)cfg->num_attention_heads, hd = (size_t)cfg->head_dim;
    size_t QD = NH * hd, KVD = (size_t)cfg->num_key_value_heads * hd, V = (size_t)cfg->vocab_size;
    t->cos_sin = arena_carve(c, (size_t)t->T * hd);
    t->encoded = arena_carve(c, N * C);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        layer_acts *a = &t->acts[l];
        a->rstd1 = arena_carve(c, N);
        a->q = arena_carve(c, N * QD);
        a->k = arena_carve(c, N * KVD);
        a->v = arena_carve(c, N * KVD);
        a->att = arena_carve(c, (size_t)t->B * NH * t->T * t->T);
        a->atty = arena_carve(c, N * QD);
        a->res2 = arena_carve(c, N * C);
        a->rstd2 = arena_carve(c, N);
        a->gate = arena_carve(c, N * I);
        a->up = arena_carve(c, N * I);
        a->res3 = arena_carve(c, N * C);
    }
    t->lnf = arena_carve(c, N * C);
    t->rstd_f = arena_carve(c, N);
    t->xn = arena_carve(c, N * C);
    t->proj = arena_carve(c, N * C);
    t->mlp_h = arena_carve(c, N * I);
    for (int i = 0; i < t->m->n_modules; i++)
        t->lora_h[i] = t->site_of[i] ? arena_carve(c, N * (size_t)t->site_of[i]->r) : NULL;
    t->dres = arena_carve(c, N * C);
    t->dln = arena_carve(c, N * C);
    t->dq_rot = arena_carve(c, N * QD);
    t->dk_rot = arena_carve(c, N * KVD);
    t->dq = arena_carve(c, N * QD);
    t->dk = arena_carve(c, N * KVD);
    t->dv = arena_carve(c, N * KVD);
    t->datty = arena_carve(c, N * QD);
    t->dgate = arena_carve(c, N * I);
    t->dup = arena_carve(c, N * I);
    t->dh = arena_carve(c, N * I);
    t->att_scratch = arena_carve(c, (size_t)t->T * t->T * (size_t)t->att_slots);
    t->lora_dh = arena_carve(c, N * (size_t)t->max_r);
    size_t drop = t->a->cfg.dropout > 0 ? N * (size_t)t->max_in : 0;
    t->drop_x = arena_carve(c, drop);
    t->drop_dx = arena_carve(c, drop);
    t->logits = arena_carve(c, (size_t)HEAD_CHUNK * V);
    t->losses = arena_carve(c, HEAD_CHUNK);
    t->wbuf = arena_carve(c, t->g->max_bf16);
}

static void trainer_free(void *impl) {
    llama_trainer *t = impl;
    if (!t) return;
    free(t->arena);
    free(t->site_of);
    free(t->lora_h);
    free(t->acts);
    free(t);
}

static int trainer_new(void **out, const model *m, lora_adapter *a, int B, int T, lp_err *err) {
    llama_trainer *t = calloc(1, sizeof *t);
    t->m = m;
    t->g = m->family;
    t->a = a;
    t->B = B;
    t->T = T;
    t->site_of = calloc((size_t)m->n_modules, sizeof *t->site_of);
    t->lora_h = calloc((size_t)m->n_modules, sizeof *t->lora_h);
    t->acts = calloc((size_t)t->g->cfg.num_hidden_layers, sizeof *t->acts);
    t->lowest_site = m->n_modules;
    for (int i = 0; i < a->n_sites; i++) {
        const lora_site *s = &a->sites[i];
        t->site_of[s->module] = s;
        if (s->module < t->lowest_site) t->lowest_site = s->module;
        if (s->in > t->max_in) t->max_in = s->in;
        if (s->r > t->max_r) t->max_r = s->r;
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
    const llama_config *c = &t->g->cfg;
    double inv_freq[4096];
    if (c->head_dim / 2 > 4096) {
        trainer_free(t);
        return lp_fail(err, "head_dim %d is too large", c->head_dim);
    }
    llama_rope_inv_freq(c, inv_freq);
    rope_table(t->cos_sin, inv_freq, T, c->head_dim);
    *out = t;
    return 0;
}

static size_t trainer_arena_bytes(const void *impl) {
    return ((const llama_trainer *)impl)->arena_floats * sizeof(float);
}

/* ---------------------------------------------------------------------------------------------
 * an adapted linear layer */

static lora_segment segment_of(const lora_adapter *a, const lora_site *s, int rows) {
    lora_segment g = {
        .row0 = 0,
        .rows = rows,
        .r = s->r,
        .scale = s->scale,
        .A = a->params + s->a_offset,
        .B = a->params + s->b_offset,
        .dA = a->grads ? a->grads + s->a_offset : NULL,
        .dB = a->grads ? a->grads + s->b_offset : NULL,
    };
    return g;
}

static uint64_t dropout_seed_of(const llama_trainer *t, int module) {
    return t->dropout_seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(module + 1));
}

static void linear_forward(llama_trainer *t, int module, float *out, const float *inp) {
    const llama_layer *w = &t->g->layers[module / MODS_PER_LAYER];
    int k = module % MODS_PER_LAYER, N = t->B * t->T, IC, OC;
    module_dims(&t->g->cfg, k, &IC, &OC);
    matmul_forward(out, inp, matrix_f32(&w->w[k], t->wbuf), W_OUT_IN, w->bias[k], N, IC, OC);
    const lora_site *s = t->site_of[module];
    if (!s) return;
    const float *x = inp;
    float p = t->training ? t->a->cfg.dropout : 0;
    if (p > 0) {
        dropout_forward(t->drop_x, inp, N * IC, p, dropout_seed_of(t, module));
        x = t->drop_x;
    }
    lora_segment g = segment_of(t->a, s, N);
    lora_forward(out, t->lora_h[module], x, &g, 1, IC, OC, s->r);
}

/* dinp may be NULL when nothing below needs the input gradient. */
static void linear_backward(llama_trainer *t, int module, float *dinp, const float *dout,
                            const float *inp) {
    const llama_layer *w = &t->g->layers[module / MODS_PER_LAYER];
    int k = module % MODS_PER_LAYER, N = t->B * t->T, IC, OC;
    module_dims(&t->g->cfg, k, &IC, &OC);
    if (dinp) matmul_backward(dinp, dout, matrix_f32(&w->w[k], t->wbuf), W_OUT_IN, N, IC, OC);
    const lora_site *s = t->site_of[module];
    if (!s) return;
    lora_segment g = segment_of(t->a, s, N);
    float p = t->a->cfg.dropout;
    if (p == 0) {
        lora_backward(dinp, t->lora_dh, dout, inp, t->lora_h[module], &g, 1, IC, OC, s->r);
        return;
    }
    uint64_t seed = dropout_seed_of(t, module);
    dropout_forward(t->drop_x, inp, N * IC, p, seed);
    if (dinp) memset(t->drop_dx, 0, (size_t)N * IC * sizeof(float));
    lora_backward(dinp ? t->drop_dx : NULL, t->lora_dh, dout, t->drop_x, t->lora_h[module], &g, 1,
                  IC, OC, s->r);
    if (dinp) dropout_backward(dinp, t->drop_dx, N * IC, p, seed);
}

/* ---------------------------------------------------------------------------------------------
 * forward and backward */

static void forward(llama_trainer *t, const int *inputs) {
    const llama *g = t->g;
    const llama_config *c = &g->cfg;
    int B = t->B, T = t->T, N = B * T, C = c->hidden_size, I = c->intermediate_size;
    int NH = c->num_attention_heads, NKV = c->num_key_value_heads, hd = c->head_dim;
    float eps = c->rms_norm_eps;
    embedding_forward(t->encoded, inputs, g->embed, N, C);
    const float *res = t->encoded;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const llama_layer *w = &g->layers[l];
        layer_acts *a = &t->acts[l];
        int mod = l * MODS_PER_LAYER;
        rmsnorm_forward(t->xn, a->rstd1, res, w->ln1, N, C, eps);
        linear_forward(t, mod + MOD_Q, a->q, t->xn);
        linear_forward(t, mod + MOD_K, a->k, t->xn);
        linear_forward(t, mod + MOD_V, a->v, t->xn);
        rope_forward(a->q, t->cos_sin, N, T, 0, NH, hd);
        rope_forward(a->k, t->cos_sin, N, T, 0, NKV, hd);
        attention_forward(a->atty, a->att, a->q, a->k, a->v, NH * hd, NKV * hd, B, T, NH, NKV, hd);
        linear_forward(t, mod + MOD_O, t->proj, a->atty);
        residual_forward(a->res2, res, t->proj, N * C);
        rmsnorm_forward(t->xn, a->rstd2, a->res2, w->ln2, N, C, eps);
        linear_forward(t, mod + MOD_GATE, a->gate, t->xn);
        linear_forward(t, mod + MOD_UP, a->up, t->xn);
        swiglu_forward(t->mlp_h, a->gate, a->up, N * I);
        linear_forward(t, mod + MOD_DOWN, t->proj, t->mlp_h);
        residual_forward(a->res3, a->res2, t->proj, N * C);
        res = a->res3;
    }
    rmsnorm_forward(t->lnf, t->rstd_f, res, g->norm, N, C, eps);
}

static float *zeroed(float *p, size_t n) {
    memset(p, 0, n * sizeof(float));
    return p;
}

/* The gradient of module mod's input, if an adapted module lies below the first module that
 * reads that input; else NULL. */
static float *input_grad(const llama_trainer *t, int mod, float *buf, size_t n) {
    int owner = mod - mod % MODS_PER_LAYER + INPUT_OWNER[mod % MODS_PER_LAYER];
    return t->lowest_site < owner ? zeroed(buf, n) : NULL;
}

static void backward(llama_trainer *t) {
    const llama *g = t->g;
    const llama_config *c = &g->cfg;
    int B = t->B, T = t->T, C = c->hidden_size, I = c->intermediate_size, L = c->num_hidden_layers;
    int NH = c->num_attention_heads, NKV = c->num_key_value_heads, hd = c->head_dim;
    size_t N = (size_t)B * T, QD = (size_t)NH * hd, KVD = (size_t)NKV * hd;
    int lo = t->lowest_site;
    zeroed(t->dres, N * C);
    rmsnorm_backward(t->dres, t->dln, t->acts[L - 1].res3, g->norm, t->rstd_f, (int)N, C);
    for (int l = L - 1; l >= 0; l--) {
        const llama_layer *w = &g->layers[l];
        const layer_acts *a = &t->acts[l];
        const float *res_in = l > 0 ? t->acts[l - 1].res3 : t->encoded;
        int mod = l * MODS_PER_LAYER;
        if (lo > mod + MOD_DOWN) break;
        /* MLP: down_proj's input is recomputed rather than kept per layer */
        float *d_h = input_grad(t, mod + MOD_DOWN, t->dh, N * I);
        if (t->site_of[mod + MOD_DOWN]) swiglu_forward(t->mlp_h, a->gate, a->up, (int)(N * I));
        linear_backward(t, mod + MOD_DOWN, d_h, t->dres, t->mlp_h);
        if (!d_h) break;
        swiglu_backward(zeroed(t->dgate, N * I), zeroed(t->dup, N * I), a->gate, a->up, d_h,
                        (int)(N * I));
        float *d_ln2 = input_grad(t, mod + MOD_UP, t->dln, N * C);
        if (t->site_of[mod + MOD_GATE] || t->site_of[mod + MOD_UP])
            rmsnorm_recompute(t->xn, a->res2, w->ln2, a->rstd2, (int)N, C);
        linear_backward(t, mod + MOD_UP, d_ln2, t->dup, t->xn);
        linear_backward(t, mod + MOD_GATE, d_ln2, t->dgate, t->xn);
        if (!d_ln2) break;
        rmsnorm_backward(t->dres, d_ln2, a->res2, w->ln2, a->rstd2, (int)N, C);
        /* attention */
        float *d_atty = input_grad(t, mod + MOD_O, t->datty, N * QD);
        linear_backward(t, mod + MOD_O, d_atty, t->dres, a->atty);
        if (!d_atty) break;
        attention_backward(zeroed(t->dq_rot, N * QD), zeroed(t->dk_rot, N * KVD),
                           zeroed(t->dv, N * KVD), t->att_scratch, t->att_slots, d_atty, a->q, a->k,
                           a->v, (int)QD, (int)KVD, a->att, B, T, NH, NKV, hd);
        rope_backward(zeroed(t->dq, N * QD), t->dq_rot, t->cos_sin, (int)N, T, 0, NH, hd);
        rope_backward(zeroed(t->dk, N * KVD), t->dk_rot, t->cos_sin, (int)N, T, 0, NKV, hd);
        float *d_ln1 = input_grad(t, mod + MOD_Q, t->dln, N * C);
        if (t->site_of[mod + MOD_Q] || t->site_of[mod + MOD_K] || t->site_of[mod + MOD_V])
            rmsnorm_recompute(t->xn, res_in, w->ln1, a->rstd1, (int)N, C);
        linear_backward(t, mod + MOD_V, d_ln1, t->dv, t->xn);
        linear_backward(t, mod + MOD_K, d_ln1, t->dk, t->xn);
        linear_backward(t, mod + MOD_Q, d_ln1, t->dq, t->xn);
        if (!d_ln1) break;
        rmsnorm_backward(t->dres, d_ln1, res_in, w->ln1, a->rstd1, (int)N, C);
    }
}

static int trainer_step(void *impl, const int *inputs, const int *targets, float grad_scale,
                        uint64_t seed, uint64_t first_seq, model_step *out, lp_err *err) {
    (void)err; /* model.c has checked the tokens; nothing here can fail */
    llama_trainer *t = impl;
    const llama_config *c = &t->g->cfg;
    int N = t->B * t->T, C = c->hidden_size;
    t->dropout_seed = rng_mix(seed, first_seq);
    t->training = grad_scale != 0;
    forward(t, inputs);
    if (t->training) memset(t->dln, 0, (size_t)N * C * sizeof(float));
    out->n_tokens = 0;
    out->loss_sum =
        head_crossentropy(t->lnf, t->g->lm_head, targets, N, C, c->vocab_size, grad_scale, t->dln,
                          NULL, t->logits, t->losses, HEAD_CHUNK, &out->n_tokens);
    if (grad_scale != 0) backward(t);
    return 0;
}

static int trainer_logits(void *impl, const int *inputs, float *logits, lp_err *err) {
    (void)err;
    llama_trainer *t = impl;
    const llama_config *c = &t->g->cfg;
    t->training = 0;
    forward(t, inputs);
    matmul_forward(logits, t->lnf, t->g->lm_head, W_OUT_IN, NULL, t->B * t->T, c->hidden_size,
                   c->vocab_size);
    return 0;
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
            if (!s) continue;
            f += 2.0 * N * s->r * (s->in + s->out);
            f += 2.0 * N * s->r * (2.0 * s->out + s->in);
            if (dinp) f += 2.0 * N * s->r * s->in;
        }
    }
    return f;
}

/* ---------------------------------------------------------------------------------------------
 * inference with a KV cache: one sequence, fed in chunks of SESSION_CHUNK tokens */

#define SESSION_CHUNK 64

typedef struct llama_session {
    const model *m;
    const llama *g;
    const lora_adapter *a; /* may be NULL */
    const lora_site **site_of;
    int max_len, len, max_r, slots;
    float *buf;             /* everything below, one allocation */
    float *kcache, *vcache; /* [L, max_len, NKV*hd] */
    float *cos_sin;         /* [max_len, hd] */
    float *x, *ln, *rstd, *q, *atty, *proj, *gate, *up, *h, *lora_h, *att_scratch, *wbuf;
} llama_session;

static void session_free(void *impl) {
    llama_session *s = impl;
    if (!s) return;
    free(s->buf);
    free(s->site_of);
    free(s);
}

static void session_carve(llama_session *s, arena_carver *cv) {
    const llama_config *c = &s->g->cfg;
    size_t L = (size_t)c->num_hidden_layers, C = (size_t)c->hidden_size, hd = (size_t)c->head_dim;
    size_t QD = (size_t)c->num_attention_heads * hd, KVD = (size_t)c->num_key_value_heads * hd;
    size_t I = (size_t)c->intermediate_size, M = (size_t)s->max_len, CH = SESSION_CHUNK;
    s->kcache = arena_carve(cv, L * M * KVD);
    s->vcache = arena_carve(cv, L * M * KVD);
    s->cos_sin = arena_carve(cv, M * hd);
    s->x = arena_carve(cv, CH * C);
    s->ln = arena_carve(cv, CH * C);
    s->rstd = arena_carve(cv, CH);
    s->q = arena_carve(cv, CH * QD);
    s->atty = arena_carve(cv, CH * QD);
    s->proj = arena_carve(cv, CH * C);
    s->gate = arena_carve(cv, CH * I);
    s->up = arena_carve(cv, CH * I);
    s->h = arena_carve(cv, CH * I);
    s->lora_h = arena_carve(cv, CH * (size_t)(s->max_r ? s->max_r : 1));
    s->att_scratch = arena_carve(cv, CH * M * (size_t)s->slots);
    s->wbuf = arena_carve(cv, s->g->max_bf16);
}

static int session_new(void **out, const model *m, const lora_adapter *a, int max_len,
                       lp_err *err) {
    llama_session *s = calloc(1, sizeof *s);
    s->m = m;
    s->g = m->family;
    s->a = a;
    s->max_len = max_len;
    s->slots = omp_get_max_threads();
    s->site_of = calloc((size_t)m->n_modules, sizeof *s->site_of);
    for (int i = 0; a && i < a->n_sites; i++) {
        const lora_site *site = &a->sites[i];
        if (site->module < 0 || site->module >= m->n_modules ||
            site->in != m->modules[site->module].in || site->out != m->modules[site->module].out) {
            session_free(s);
            return lp_fail(err, "adapter site %d does not fit this model's modules", i);
        }
        s->site_of[site->module] = site;
        if (site->r > s->max_r) s->max_r = site->r;
    }
    arena_carver count = {NULL, 0};
    session_carve(s, &count);
    if (posix_memalign((void **)&s->buf, 64, count.used * sizeof(float)) != 0) {
        s->buf = NULL;
        session_free(s);
        return lp_fail(err, "cannot allocate the %.1f MiB KV cache",
                       (double)count.used * 4 / (1 << 20));
    }
    arena_carver real = {s->buf, 0};
    session_carve(s, &real);
    const llama_config *c = &s->g->cfg;
    double inv_freq[4096];
    if (c->head_dim / 2 > 4096) {
        session_free(s);
        return lp_fail(err, "head_dim %d is too large", c->head_dim);
    }
    llama_rope_inv_freq(c, inv_freq);
    rope_table(s->cos_sin, inv_freq, max_len, c->head_dim);
    *out = s;
    return 0;
}

static void session_linear(llama_session *s, int module, float *out, const float *inp, int n) {
    const llama_layer *w = &s->g->layers[module / MODS_PER_LAYER];
    int k = module % MODS_PER_LAYER, IC, OC;
    module_dims(&s->g->cfg, k, &IC, &OC);
    matmul_forward(out, inp, matrix_f32(&w->w[k], s->wbuf), W_OUT_IN, w->bias[k], n, IC, OC);
    const lora_site *site = s->site_of[module];
    if (!site) return;
    lora_segment g = segment_of(s->a, site, n);
    g.dA = g.dB = NULL;
    lora_forward(out, s->lora_h, inp, &g, 1, IC, OC, site->r);
}

/* n <= SESSION_CHUNK tokens at positions s->len.. ; the residual stream of the last one ends in
 * s->x[n-1]. */
static void session_chunk(llama_session *s, const int *tokens, int n) {
    const llama *g = s->g;
    const llama_config *c = &g->cfg;
    int C = c->hidden_size, I = c->intermediate_size, NH = c->num_attention_heads;
    int NKV = c->num_key_value_heads, hd = c->head_dim, KVD = NKV * hd, past = s->len;
    float eps = c->rms_norm_eps;
    embedding_forward(s->x, tokens, g->embed, n, C);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const llama_layer *w = &g->layers[l];
        int mod = l * MODS_PER_LAYER;
        float *kc = s->kcache + (size_t)l * s->max_len * KVD;
        float *vc = s->vcache + (size_t)l * s->max_len * KVD;
        rmsnorm_forward(s->ln, s->rstd, s->x, w->ln1, n, C, eps);
        session_linear(s, mod + MOD_Q, s->q, s->ln, n);
        session_linear(s, mod + MOD_K, kc + (size_t)past * KVD, s->ln, n);
        session_linear(s, mod + MOD_V, vc + (size_t)past * KVD, s->ln, n);
        rope_forward(s->q, s->cos_sin, n, n, past, NH, hd);
        rope_forward(kc + (size_t)past * KVD, s->cos_sin, n, n, past, NKV, hd);
        attention_cached(s->atty, s->att_scratch, s->slots, s->q, NH * hd, kc, vc, KVD, n, past, NH,
                         NKV, hd);
        session_linear(s, mod + MOD_O, s->proj, s->atty, n);
        residual_forward(s->x, s->x, s->proj, n * C);
        rmsnorm_forward(s->ln, s->rstd, s->x, w->ln2, n, C, eps);
        session_linear(s, mod + MOD_GATE, s->gate, s->ln, n);
        session_linear(s, mod + MOD_UP, s->up, s->ln, n);
        swiglu_forward(s->h, s->gate, s->up, n * I);
        session_linear(s, mod + MOD_DOWN, s->proj, s->h, n);
        residual_forward(s->x, s->x, s->proj, n * C);
    }
    s->len += n;
}

static int session_feed(void *impl, const int *tokens, int n, float *logits, lp_err *err) {
    llama_session *s = impl;
    const llama_config *c = &s->g->cfg;
    if (n > s->max_len - s->len)
        return lp_fail(err, "session: %d more tokens would exceed its length %d (%d used)", n,
                       s->max_len, s->len);
    int last = 0;
    for (int done = 0; done < n; done += last) {
        last = n - done < SESSION_CHUNK ? n - done : SESSION_CHUNK;
        session_chunk(s, tokens + done, last);
    }
    int C = c->hidden_size;
    float rstd;
    rmsnorm_forward(s->ln, &rstd, s->x + (size_t)(last - 1) * C, s->g->norm, 1, C, c->rms_norm_eps);
    matmul_forward(logits, s->ln, s->g->lm_head, W_OUT_IN, NULL, 1, C, c->vocab_size);
    return 0;
}

static int session_length(const void *impl) {
    return ((const llama_session *)impl)->len;
}

static void session_reset(void *impl) {
    ((llama_session *)impl)->len = 0;
}

static const model_family_ops LLAMA_OPS = {
    .trainer_new = trainer_new,
    .trainer_free = trainer_free,
    .trainer_arena_bytes = trainer_arena_bytes,
    .trainer_step = trainer_step,
    .trainer_logits = trainer_logits,
    .train_flops = train_flops,
    .free_family = llama_free_family,
    .session_new = session_new,
    .session_free = session_free,
    .session_feed = session_feed,
    .session_length = session_length,
    .session_reset = session_reset,
};
