/* GPT-2 inference with a KV cache: each call feeds n new tokens (a whole prompt, or one
 * generated token), runs them through every layer as an n-row batch, appends their keys and
 * values to the cache, and returns the logits after the last token. LoRA branches are applied
 * unmerged, exactly as in training (no dropout). */
#include "gpt2_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct gpt2_session {
    const gpt2 *g;
    const lora_adapter *a;
    const lora_site **site_of; /* per module */
    int max_len, len, slots;
    float *kcache, *vcache; /* [n_layer][max_len][C] */
    float *x, *ln, *mean, *rstd, *qkv, *atty, *proj, *fch, *fch_gelu, *lora_h, *scratch;
} gpt2_session;

void gpt2_session_free(void *impl) {
    gpt2_session *s = impl;
    if (!s) return;
    free(s->site_of);
    free(s->kcache);
    free(s->vcache);
    free(s->x);
    free(s->ln);
    free(s->mean);
    free(s->rstd);
    free(s->qkv);
    free(s->atty);
    free(s->proj);
    free(s->fch);
    free(s->fch_gelu);
    free(s->lora_h);
    free(s->scratch);
    free(s);
}

int gpt2_session_new(void **impl, const model *m, const lora_adapter *a, int max_len, lp_err *err) {
    gpt2_session *s = calloc(1, sizeof *s);
    s->g = m->family;
    s->a = a;
    s->max_len = max_len;
    s->slots = omp_get_max_threads();
    s->site_of = calloc((size_t)m->n_modules, sizeof *s->site_of);
    int max_r = 1;
    for (int i = 0; a && i < a->n_sites; i++) {
        const lora_site *site = &a->sites[i];
        if (site->module >= m->n_modules || site->in != m->modules[site->module].in ||
            site->out != m->modules[site->module].out) {
            gpt2_session_free(s);
            return lp_fail(err, "adapter site %d does not fit this model's modules", i);
        }
        s->site_of[site->module] = site;
        if (site->r > max_r) max_r = site->r;
    }
    size_t C = (size_t)s->g->cfg.n_embd, L = (size_t)s->g->cfg.n_layer, N = (size_t)max_len;
    s->kcache = malloc(L * N * C * sizeof(float));
    s->vcache = malloc(L * N * C * sizeof(float));
    s->x = malloc(N * C * sizeof(float));
    s->ln = malloc(N * C * sizeof(float));
    s->mean = malloc(N * sizeof(float));
    s->rstd = malloc(N * sizeof(float));
    s->qkv = malloc(N * 3 * C * sizeof(float));
    s->atty = malloc(N * C * sizeof(float));
    s->proj = malloc(N * C * sizeof(float));
    s->fch = malloc(N * 4 * C * sizeof(float));
    s->fch_gelu = malloc(N * 4 * C * sizeof(float));
    s->lora_h = malloc(N * (size_t)max_r * sizeof(float));
    s->scratch = malloc((size_t)s->slots * N * N * sizeof(float));
    if (!s->kcache || !s->vcache || !s->x || !s->fch || !s->fch_gelu || !s->scratch) {
        gpt2_session_free(s);
        return lp_fail(err, "out of memory for a %d-token KV cache", max_len);
    }
    *impl = s;
    return 0;
}

/* A frozen linear layer plus, where the adapter has a site, its LoRA branch. */
static void linear(const gpt2_session *s, int module, float *out, const float *inp,
                   const float *weight, const float *bias, int n, int IC, int OC) {
    matmul_forward(out, inp, weight, W_IN_OUT, bias, n, IC, OC);
    const lora_site *site = s->site_of[module];
    if (!site) return;
    lora_segment seg = {.row0 = 0,
                        .rows = n,
                        .r = site->r,
                        .scale = site->scale,
                        .A = s->a->params + site->a_offset,
                        .B = s->a->params + site->b_offset};
    lora_forward(out, s->lora_h, inp, &seg, 1, IC, OC, site->r);
}

int gpt2_session_feed(void *impl, const int *tokens, int n, float *logits, lp_err *err) {
    gpt2_session *s = impl;
    const gpt2 *g = s->g;
    const gpt2_config *c = &g->cfg;
    int C = c->n_embd, NH = c->n_head, pos0 = s->len;
    float eps = c->layer_norm_epsilon;
    if (pos0 + n > s->max_len)
        return lp_fail(err, "the sequence would be %d tokens, past this session's %d", pos0 + n,
                       s->max_len);
    /* positions pos0 .. pos0+n-1: the position table starts at row pos0 */
    encoder_forward(s->x, tokens, g->wte, g->wpe + (size_t)pos0 * C, 1, n, C);
    for (int l = 0; l < c->n_layer; l++) {
        const gpt2_layer *w = &g->layers[l];
        int mod = l * MODS_PER_LAYER;
        float *kc = s->kcache + (size_t)l * s->max_len * C,
              *vc = s->vcache + (size_t)l * s->max_len * C;
        layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->ln1_w, w->ln1_b, n, C, eps);
        linear(s, mod + MOD_QKV, s->qkv, s->ln, w->qkv_w, w->qkv_b, n, C, 3 * C);
        for (int i = 0; i < n; i++) {
            memcpy(kc + (size_t)(pos0 + i) * C, s->qkv + (size_t)i * 3 * C + C, C * sizeof(float));
            memcpy(vc + (size_t)(pos0 + i) * C, s->qkv + (size_t)i * 3 * C + 2 * C,
                   C * sizeof(float));
        }
        attention_cached(s->atty, s->scratch, s->slots, s->qkv, 3 * C, kc, vc, C, n, pos0, NH, NH,
                         C / NH);
        linear(s, mod + MOD_ATTN_PROJ, s->proj, s->atty, w->attn_proj_w, w->attn_proj_b, n, C, C);
        residual_forward(s->x, s->x, s->proj, n * C);
        layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->ln2_w, w->ln2_b, n, C, eps);
        linear(s, mod + MOD_FC, s->fch, s->ln, w->fc_w, w->fc_b, n, C, 4 * C);
        gelu_forward(s->fch_gelu, s->fch, n * 4 * C);
        linear(s, mod + MOD_FC_PROJ, s->proj, s->fch_gelu, w->fc_proj_w, w->fc_proj_b, n, 4 * C, C);
        residual_forward(s->x, s->x, s->proj, n * C);
    }
    /* only the last token's logits are asked for */
    const float *last = s->x + (size_t)(n - 1) * C;
    layernorm_forward(s->ln, s->mean, s->rstd, last, g->lnf_w, g->lnf_b, 1, C, eps);
    matmul_forward(logits, s->ln, g->lm_head, W_OUT_IN, NULL, 1, C, c->vocab_size);
    s->len += n;
    return 0;
}

int gpt2_session_length(const void *impl) {
    return ((const gpt2_session *)impl)->len;
}

void gpt2_session_reset(void *impl) {
    ((gpt2_session *)impl)->len = 0;
}
