/* Llama-family inference with a KV cache: one sequence, fed in chunks of SESSION_CHUNK tokens;
 * keys and values (after RoPE) join the cache, and the logits after the last token come back.
 * LoRA branches are applied unmerged, exactly as in training (no dropout). */
#include "llama_internal.h"
#include "trainer_core.h"

#include <stdlib.h>

#define SESSION_CHUNK 64

typedef struct llama_session {
    trainer_core core; /* B = 1 sequence of up to SESSION_CHUNK rows at a time */
    const llama *g;
    int max_len, len;
    act *kcache, *vcache; /* [L, max_len, NKV*hd] */
    float *cos_sin;       /* [max_len, hd] */
    act *x, *ln, *q, *atty, *proj, *gate, *up, *h;
    float *rstd, *logits;
} llama_session;

static void session_carve(void *impl, arena_carver *cv) {
    llama_session *s = impl;
    trainer_core *c = &s->core;
    const llama_config *cfg = &s->g->cfg;
    size_t L = (size_t)cfg->num_hidden_layers, C = (size_t)cfg->hidden_size;
    size_t hd = (size_t)cfg->head_dim, QD = (size_t)cfg->num_attention_heads * hd;
    size_t KVD = (size_t)cfg->num_key_value_heads * hd, I = (size_t)cfg->intermediate_size;
    size_t M = (size_t)s->max_len, CH = SESSION_CHUNK;
    trainer_core_carve(c, cv);
    s->kcache = carve_act(c, cv, L * M * KVD);
    s->vcache = carve_act(c, cv, L * M * KVD);
    s->cos_sin = carve_f32(cv, M * hd);
    s->x = carve_act(c, cv, CH * C);
    s->ln = carve_act(c, cv, CH * C);
    s->q = carve_act(c, cv, CH * QD);
    s->atty = carve_act(c, cv, CH * QD);
    s->proj = carve_act(c, cv, CH * C);
    s->gate = carve_act(c, cv, CH * I);
    s->up = carve_act(c, cv, CH * I);
    s->h = carve_act(c, cv, CH * I);
    s->rstd = carve_f32(cv, CH);
    s->logits = carve_f32(cv, (size_t)cfg->vocab_size);
}

void llama_session_free(void *impl) {
    llama_session *s = impl;
    if (!s) return;
    trainer_core_free(&s->core);
    free(s);
}

static int upload_rope(llama_session *s, lp_err *err) {
    float *host;
    if (llama_rope_host_table(&s->g->cfg, s->max_len, &host, err) < 0) return -1;
    int rc = device_upload(ops_device(s->core.ctx), s->cos_sin, host,
                           (size_t)s->max_len * s->g->cfg.head_dim * sizeof(float), err);
    free(host);
    return rc;
}

int llama_session_new(void **impl, const model *m, const lora_adapter *a, int max_len,
                      lp_err *err) {
    llama_session *s = calloc(1, sizeof *s);
    if (!s) return lp_fail(err, "out of memory");
    s->g = m->family;
    s->max_len = max_len;
    const llama_config *c = &s->g->cfg;
    ops_limits lim = {.max_rows = SESSION_CHUNK,
                      .max_T = SESSION_CHUNK,
                      .max_heads = c->num_attention_heads,
                      .head_dim = c->head_dim,
                      .max_kv = max_len,
                      .vocab = c->vocab_size,
                      .max_matrix = m->max_bf16,
                      .bf16_gemm = m->gemm_bf16};
    lora_adapter *adapters[1] = {(lora_adapter *)a}; /* forward only: never written */
    if (trainer_core_init(&s->core, m, adapters, a ? 1 : 0, 1, SESSION_CHUNK, &lim, err) < 0 ||
        trainer_core_alloc_arena(&s->core, session_carve, s, err) < 0 ||
        trainer_core_load_params(&s->core, err) < 0 || upload_rope(s, err) < 0) {
        llama_session_free(s);
        return lp_wrap(err, "a %d-token session", max_len);
    }
    *impl = s;
    return 0;
}

static void session_linear(llama_session *s, int module, act *out, const act *inp) {
    const llama_layer *w = &s->g->layers[module / MODS_PER_LAYER];
    int k = module % MODS_PER_LAYER, IC, OC;
    llama_module_dims(&s->g->cfg, k, &IC, &OC);
    lora_linear_forward(&s->core, module, out, inp, &w->w[k], W_OUT_IN, w->bias[k], IC, OC);
}

/* n <= SESSION_CHUNK tokens at positions s->len.. ; the residual stream of the last one ends in
 * the last row of s->x. */
static void session_chunk(llama_session *s, const int *tokens, int n) {
    trainer_core *c = &s->core;
    ops_ctx *x = c->ctx;
    const llama *g = s->g;
    const llama_config *cfg = &g->cfg;
    int C = cfg->hidden_size, I = cfg->intermediate_size, NH = cfg->num_attention_heads;
    int NKV = cfg->num_key_value_heads, hd = cfg->head_dim, KVD = NKV * hd, past = s->len;
    float eps = cfg->rms_norm_eps;
    trainer_core_begin_rows(c, tokens, n);
    embedding_forward(x, s->x, c->tokens, &g->embed, n, C);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const llama_layer *w = &g->layers[l];
        int mod = l * MODS_PER_LAYER;
        act *kc = act_at(x, s->kcache, (size_t)l * s->max_len * KVD);
        act *vc = act_at(x, s->vcache, (size_t)l * s->max_len * KVD);
        act *k_new = act_at(x, kc, (size_t)past * KVD), *v_new = act_at(x, vc, (size_t)past * KVD);
        rmsnorm_forward(x, s->ln, s->rstd, s->x, &w->ln1, n, C, eps);
        session_linear(s, mod + MOD_Q, s->q, s->ln);
        session_linear(s, mod + MOD_K, k_new, s->ln);
        session_linear(s, mod + MOD_V, v_new, s->ln);
        rope_forward(x, s->q, s->cos_sin, n, n, past, NH, hd);
        rope_forward(x, k_new, s->cos_sin, n, n, past, NKV, hd);
        attention_cached(x, s->atty, s->q, NH * hd, kc, vc, KVD, n, past, NH, NKV, hd);
        session_linear(s, mod + MOD_O, s->proj, s->atty);
        residual_forward(x, s->x, s->x, s->proj, n * C);
        rmsnorm_forward(x, s->ln, s->rstd, s->x, &w->ln2, n, C, eps);
        session_linear(s, mod + MOD_GATE, s->gate, s->ln);
        session_linear(s, mod + MOD_UP, s->up, s->ln);
        swiglu_forward(x, s->h, s->gate, s->up, n * I);
        session_linear(s, mod + MOD_DOWN, s->proj, s->h);
        residual_forward(x, s->x, s->x, s->proj, n * C);
    }
    s->len += n;
}

int llama_session_feed(void *impl, const int *tokens, int n, float *logits, lp_err *err) {
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
    ops_ctx *x = s->core.ctx;
    int C = c->hidden_size;
    const act *row = act_at(x, (const act *)s->x, (size_t)(last - 1) * C);
    rmsnorm_forward(x, s->ln, s->rstd, row, &s->g->norm, 1, C, c->rms_norm_eps);
    return trainer_core_last_logits(&s->core, s->ln, s->g->lm_head, s->logits, logits, err);
}

int llama_session_length(const void *impl) {
    return ((const llama_session *)impl)->len;
}

void llama_session_reset(void *impl) {
    ((llama_session *)impl)->len = 0;
}
