/* GPT-2 inference with a KV cache: each call feeds n new tokens (a whole prompt, or one
 * generated token), runs them through every layer in chunks of SESSION_CHUNK rows, appends
 * their keys and values to the cache, and returns the logits after the last token. LoRA branches
 * are applied unmerged, exactly as in training (no dropout). */
#include "gpt2_internal.h"
#include "trainer_core.h"

#include <stdlib.h>
#include <string.h>

#define SESSION_CHUNK 64

typedef struct gpt2_session {
    trainer_core core; /* B = 1 sequence of up to SESSION_CHUNK rows at a time */
    const gpt2 *g;
    int max_len, len;
    act *kcache, *vcache; /* [n_layer][max_len][C] */
    act *x, *ln, *qkv, *atty, *proj, *fch, *fch_gelu;
    float *mean, *rstd, *logits;
} gpt2_session;

static void session_carve(void *impl, arena_carver *cv) {
    gpt2_session *s = impl;
    trainer_core *c = &s->core;
    size_t C = (size_t)s->g->cfg.n_embd, L = (size_t)s->g->cfg.n_layer, M = (size_t)s->max_len;
    size_t CH = SESSION_CHUNK;
    trainer_core_carve(c, cv);
    s->kcache = carve_act(c, cv, L * M * C);
    s->vcache = carve_act(c, cv, L * M * C);
    s->x = carve_act(c, cv, CH * C);
    s->ln = carve_act(c, cv, CH * C);
    s->qkv = carve_act(c, cv, CH * 3 * C);
    s->atty = carve_act(c, cv, CH * C);
    s->proj = carve_act(c, cv, CH * C);
    s->fch = carve_act(c, cv, CH * 4 * C);
    s->fch_gelu = carve_act(c, cv, CH * 4 * C);
    s->mean = carve_f32(cv, CH);
    s->rstd = carve_f32(cv, CH);
    s->logits = carve_f32(cv, (size_t)s->g->cfg.vocab_size);
}

void gpt2_session_free(void *impl) {
    gpt2_session *s = impl;
    if (!s) return;
    trainer_core_free(&s->core);
    free(s);
}

int gpt2_session_new(void **impl, const model *m, const lora_adapter *a, int max_len, lp_err *err) {
    gpt2_session *s = calloc(1, sizeof *s);
    if (!s) return lp_fail(err, "out of memory");
    s->g = m->family;
    s->max_len = max_len;
    const gpt2_config *c = &s->g->cfg;
    ops_limits lim = {.max_rows = SESSION_CHUNK,
                      .max_T = SESSION_CHUNK,
                      .max_heads = c->n_head,
                      .head_dim = c->n_embd / c->n_head,
                      .max_kv = max_len,
                      .vocab = c->vocab_size,
                      .max_matrix = m->max_bf16,
                      .bf16_gemm = m->gemm_bf16};
    lora_adapter *adapters[1] = {(lora_adapter *)a}; /* forward only: never written */
    if (trainer_core_init(&s->core, m, adapters, a ? 1 : 0, 1, SESSION_CHUNK, &lim, err) < 0 ||
        trainer_core_alloc_arena(&s->core, session_carve, s, err) < 0 ||
        trainer_core_load_params(&s->core, err) < 0) {
        gpt2_session_free(s);
        return lp_wrap(err, "a %d-token session", max_len);
    }
    *impl = s;
    return 0;
}

/* n <= SESSION_CHUNK tokens at positions s->len..: their keys and values join the cache; the
 * residual stream of the last one ends in the last row of s->x. */
static void session_chunk(gpt2_session *s, const int *tokens, int n) {
    trainer_core *c = &s->core;
    ops_ctx *x = c->ctx;
    const gpt2 *g = s->g;
    const gpt2_config *cfg = &g->cfg;
    int C = cfg->n_embd, NH = cfg->n_head, pos0 = s->len;
    float eps = cfg->layer_norm_epsilon;
    trainer_core_begin_rows(c, tokens, n);
    encoder_forward(x, s->x, c->tokens, &g->wte, &g->wpe, 1, n, pos0, C);
    for (int l = 0; l < cfg->n_layer; l++) {
        const gpt2_layer *w = &g->layers[l];
        int mod = l * MODS_PER_LAYER;
        act *kc = act_at(x, s->kcache, (size_t)l * s->max_len * C);
        act *vc = act_at(x, s->vcache, (size_t)l * s->max_len * C);
        layernorm_forward(x, s->ln, s->mean, s->rstd, s->x, &w->ln1_w, &w->ln1_b, n, C, eps);
        lora_linear_forward(c, mod + MOD_QKV, s->qkv, s->ln, &w->qkv_w, W_IN_OUT, &w->qkv_b, C,
                            3 * C);
        for (int i = 0; i < n; i++) {
            const act *row = act_at(x, (const act *)s->qkv, (size_t)i * 3 * C);
            ops_copy_act(x, act_at(x, kc, (size_t)(pos0 + i) * C), act_at(x, row, C), (size_t)C);
            ops_copy_act(x, act_at(x, vc, (size_t)(pos0 + i) * C), act_at(x, row, 2 * C),
                         (size_t)C);
        }
        attention_cached(x, s->atty, s->qkv, 3 * C, kc, vc, C, n, pos0, NH, NH, C / NH);
        lora_linear_forward(c, mod + MOD_ATTN_PROJ, s->proj, s->atty, &w->attn_proj_w, W_IN_OUT,
                            &w->attn_proj_b, C, C);
        residual_forward(x, s->x, s->x, s->proj, n * C);
        layernorm_forward(x, s->ln, s->mean, s->rstd, s->x, &w->ln2_w, &w->ln2_b, n, C, eps);
        lora_linear_forward(c, mod + MOD_FC, s->fch, s->ln, &w->fc_w, W_IN_OUT, &w->fc_b, C, 4 * C);
        gelu_forward(x, s->fch_gelu, s->fch, n * 4 * C);
        lora_linear_forward(c, mod + MOD_FC_PROJ, s->proj, s->fch_gelu, &w->fc_proj_w, W_IN_OUT,
                            &w->fc_proj_b, 4 * C, C);
        residual_forward(x, s->x, s->x, s->proj, n * C);
    }
    s->len += n;
}

int gpt2_session_feed(void *impl, const int *tokens, int n, float *logits, lp_err *err) {
    gpt2_session *s = impl;
    const gpt2_config *cfg = &s->g->cfg;
    int C = cfg->n_embd;
    if (s->len + n > s->max_len)
        return lp_fail(err, "the sequence would be %d tokens, past this session's %d", s->len + n,
                       s->max_len);
    int last = 0;
    for (int done = 0; done < n; done += last) {
        last = n - done < SESSION_CHUNK ? n - done : SESSION_CHUNK;
        session_chunk(s, tokens + done, last);
    }
    /* only the last token's logits are asked for */
    ops_ctx *x = s->core.ctx;
    const act *row = act_at(x, (const act *)s->x, (size_t)(last - 1) * C);
    layernorm_forward(x, s->ln, s->mean, s->rstd, row, &s->g->lnf_w, &s->g->lnf_b, 1, C,
                      cfg->layer_norm_epsilon);
    return trainer_core_last_logits(&s->core, s->ln, s->g->lm_head, s->logits, logits, err);
}

int gpt2_session_length(const void *impl) {
    return ((const gpt2_session *)impl)->len;
}

void gpt2_session_reset(void *impl) {
    ((gpt2_session *)impl)->len = 0;
}
