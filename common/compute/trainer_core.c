#include "trainer_core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- set-up --------------------------------------------------------------------------------- */

static void note_sites(trainer_core *c) {
    size_t M = (size_t)c->m->n_modules;
    c->lowest_site = c->m->n_modules;
    for (int k = 0; k < c->n_adapters; k++) {
        const lora_adapter *a = c->adapters[k];
        c->any_dropout |= a->cfg.dropout > 0;
        for (int i = 0; i < a->n_sites; i++) {
            const lora_site *s = &a->sites[i];
            c->site_of[(size_t)k * M + s->module] = s;
            if (s->module < c->lowest_site) c->lowest_site = s->module;
            if (s->in > c->max_in) c->max_in = s->in;
            if (s->r > c->max_r) c->max_r = s->r;
            if (s->r > c->h_ld[s->module]) c->h_ld[s->module] = s->r;
        }
    }
}

/* On the CPU the ops read the adapter's own arrays; elsewhere device copies. */
static int place_adapters(trainer_core *c, lp_err *err) {
    device *d = ops_device(c->ctx);
    for (int k = 0; k < c->n_adapters; k++) {
        lora_adapter *a = c->adapters[k];
        adapter_on_device *ad = &c->dev[k];
        if (device_is_cpu(d)) {
            *ad = (adapter_on_device){a->params, a->grads, (act *)a->params, 0};
            continue;
        }
        size_t bytes = a->n_params * sizeof(float);
        ad->owned = 1;
        device_pin(d, a->params, bytes);
        device_pin(d, a->grads, bytes);
        if (!(ad->params = device_alloc(d, bytes, err)) ||
            !(ad->grads = device_alloc(d, bytes, err)) ||
            !(ad->params_act = device_alloc(d, a->n_params * ops_act_size(c->ctx), err)))
            return -1;
    }
    return 0;
}

int trainer_core_init(trainer_core *c, const model *m, lora_adapter *const *adapters,
                      int n_adapters, int B, int T, const ops_limits *lim, lp_err *err) {
    memset(c, 0, sizeof *c);
    size_t M = (size_t)m->n_modules, K = (size_t)n_adapters + 1; /* sessions may have none */
    c->m = m;
    c->B = B;
    c->T = T;
    c->N = B * T;
    c->n_adapters = n_adapters;
    c->adapters = calloc(K, sizeof *c->adapters);
    c->dev = calloc(K, sizeof *c->dev);
    c->site_of = calloc(K * M, sizeof *c->site_of);
    c->h_ld = calloc(M, sizeof *c->h_ld);
    c->lora_h = calloc(M, sizeof *c->lora_h);
    c->rows_of = calloc(K, sizeof *c->rows_of);
    c->grad_scale_of = calloc(K, sizeof *c->grad_scale_of);
    c->step_of = calloc(K, sizeof *c->step_of);
    if (!c->adapters || !c->dev || !c->site_of || !c->h_ld || !c->lora_h || !c->rows_of ||
        !c->grad_scale_of || !c->step_of)
        return lp_fail(err, "out of memory");
    if (n_adapters) memcpy(c->adapters, adapters, (size_t)n_adapters * sizeof *adapters);
    note_sites(c);
    c->n_layers = m->n_modules ? m->modules[m->n_modules - 1].layer + 1 : 0;
    c->reported = calloc((size_t)c->n_layers + 1, 1);
    c->pending = calloc((size_t)c->n_layers + 1, sizeof *c->pending);
    if (!c->reported || !c->pending) return lp_fail(err, "out of memory");
    ops_limits with_events = *lim;
    with_events.max_events = c->n_layers; /* one marker per layer: streamed gradients */
    if (ops_ctx_new(&c->ctx, m->dev, &with_events, err) < 0) return -1;
    return place_adapters(c, err);
}

void trainer_core_free(trainer_core *c) {
    device *d = c->ctx ? ops_device(c->ctx) : NULL;
    for (int k = 0; d && c->dev && k < c->n_adapters; k++) {
        if (!c->dev[k].owned) continue;
        device_unpin(d, c->adapters[k]->params);
        device_unpin(d, c->adapters[k]->grads);
        device_free(d, c->dev[k].params);
        device_free(d, c->dev[k].grads);
        device_free(d, c->dev[k].params_act);
    }
    if (d) device_free(d, c->arena);
    ops_ctx_free(c->ctx);
    free(c->adapters);
    free(c->dev);
    free(c->site_of);
    free(c->h_ld);
    free(c->lora_h);
    free(c->rows_of);
    free(c->grad_scale_of);
    free(c->step_of);
    free(c->reported);
    free(c->pending);
    free(c->full_grads);
    free(c->dW_of);
    free(c->db_of);
    memset(c, 0, sizeof *c);
}

act *carve_act(trainer_core *c, arena_carver *cv, size_t n) {
    return arena_carve(cv, n * ops_act_size(c->ctx));
}

float *carve_f32(arena_carver *cv, size_t n) {
    return arena_carve(cv, n * sizeof(float));
}

void trainer_core_carve(trainer_core *c, arena_carver *cv) {
    size_t N = (size_t)c->N;
    c->tokens = arena_carve(cv, N * sizeof(int));
    c->targets = arena_carve(cv, N * sizeof(int));
    c->seq_ids = arena_carve(cv, (size_t)c->B * sizeof(uint64_t));
    c->losses = carve_f32(cv, N);
    for (int i = 0; i < c->m->n_modules; i++)
        c->lora_h[i] = c->h_ld[i] ? carve_act(c, cv, N * (size_t)c->h_ld[i]) : NULL;
    c->lora_dh = carve_act(c, cv, N * (size_t)c->max_r);
    size_t drop = c->any_dropout ? N * (size_t)c->max_in : 0;
    c->drop_x = carve_act(c, cv, drop);
    c->drop_dx = carve_act(c, cv, drop);
}

int trainer_core_alloc_arena(trainer_core *c, void (*carve_all)(void *family, arena_carver *cv),
                             void *family, lp_err *err) {
    arena_carver count = {NULL, 0};
    carve_all(family, &count);
    c->arena_bytes = count.used;
    c->arena = device_alloc(ops_device(c->ctx), count.used, err);
    if (!c->arena)
        return lp_wrap(err, "the %.1f MiB activation arena", (double)count.used / (1 << 20));
    arena_carver real = {c->arena, 0};
    carve_all(family, &real);
    return 0;
}

/* ---- the adapters' factors and gradients ----------------------------------------------------- */

int trainer_core_load_params(trainer_core *c, lp_err *err) {
    for (int k = 0; k < c->n_adapters; k++) {
        const lora_adapter *a = c->adapters[k];
        adapter_on_device *ad = &c->dev[k];
        if (!ad->owned) continue;
        ops_upload(c->ctx, ad->params, a->params, a->n_params * sizeof(float));
        ops_act_from_device_f32(c->ctx, ad->params_act, ad->params, a->n_params);
    }
    return ops_sync(c->ctx, err);
}

void trainer_core_zero_grads(trainer_core *c) {
    for (int k = 0; k < c->n_adapters; k++)
        ops_zero(c->ctx, c->dev[k].grads, c->adapters[k]->n_params * sizeof(float));
}

int trainer_core_fetch_grads(trainer_core *c, lp_err *err) {
    if (c->streamed) { /* the last step put every range in place already */
        c->streamed = 0;
        return 0;
    }
    for (int k = 0; k < c->n_adapters; k++)
        if (c->dev[k].owned)
            ops_download(c->ctx, c->adapters[k]->grads, c->dev[k].grads,
                         c->adapters[k]->n_params * sizeof(float));
    return ops_sync(c->ctx, err);
}

/* ---- one micro-batch ------------------------------------------------------------------------- */

/* Each adapter's rows: sequences are grouped by adapter, in adapter order. */
static int set_rows(trainer_core *c, const int *adapter_of, lp_err *err) {
    for (int k = 0; k < c->n_adapters; k++) c->rows_of[k] = (adapter_rows){0, 0};
    int prev = 0;
    for (int b = 0; b < c->B; b++) {
        int k = adapter_of ? adapter_of[b] : 0;
        if (k < 0 || k >= c->n_adapters)
            return lp_fail(err, "sequence %d names adapter %d of %d", b, k, c->n_adapters);
        if (k < prev)
            return lp_fail(err,
                           "sequences must be grouped by adapter in adapter order "
                           "(sequence %d has adapter %d after %d)",
                           b, k, prev);
        if (c->rows_of[k].rows == 0) c->rows_of[k].row0 = b * c->T;
        c->rows_of[k].rows += c->T;
        prev = k;
    }
    return 0;
}

int trainer_core_begin(trainer_core *c, const int *inputs, const int *targets,
                       const int *adapter_of, const float *grad_scales, uint64_t seed,
                       const uint64_t *seq_ids, lp_err *err) {
    if (set_rows(c, adapter_of, err) < 0) return -1;
    c->training = 0;
    for (int k = 0; k < c->n_adapters; k++) {
        c->grad_scale_of[k] = grad_scales ? grad_scales[k] : 0.0f;
        c->training |= c->grad_scale_of[k] != 0;
    }
    c->seed = seed;
    c->host_targets = targets;
    size_t N = (size_t)c->N;
    ops_upload(c->ctx, c->tokens, inputs, N * sizeof(int));
    if (targets) ops_upload(c->ctx, c->targets, targets, N * sizeof(int));
    if (seq_ids) ops_upload(c->ctx, c->seq_ids, seq_ids, (size_t)c->B * sizeof(uint64_t));
    return 0;
}

void trainer_core_begin_rows(trainer_core *c, const int *tokens, int n) {
    c->N = n;
    c->training = 0;
    for (int k = 0; k < c->n_adapters; k++) c->rows_of[k] = (adapter_rows){0, n};
    ops_upload(c->ctx, c->tokens, tokens, (size_t)n * sizeof(int));
}

void trainer_core_head_loss(trainer_core *c, const act *x, const weight *head, act *dx) {
    int C = c->m->hidden_size, V = c->m->vocab_size;
    for (int k = 0; k < c->n_adapters; k++) {
        const adapter_rows *r = &c->rows_of[k];
        if (r->rows == 0) continue;
        /* an adapter that only evaluates in a training batch sends no gradient down */
        if (c->training && c->grad_scale_of[k] == 0)
            zeroed_act(c, act_at(c->ctx, dx, (size_t)r->row0 * C), (size_t)r->rows * C);
        head_loss(c->ctx, act_at(c->ctx, x, (size_t)r->row0 * C), head, c->targets + r->row0,
                  r->rows, C, V, c->grad_scale_of[k],
                  c->training ? act_at(c->ctx, dx, (size_t)r->row0 * C) : NULL, c->dhead,
                  c->losses + r->row0);
    }
}

int trainer_core_logits(trainer_core *c, const act *x, const weight *head, float *host_logits,
                        lp_err *err) {
    device *d = ops_device(c->ctx);
    int C = c->m->hidden_size, V = c->m->vocab_size;
    size_t bytes = (size_t)c->N * V * sizeof(float);
    if (device_is_cpu(d)) {
        head_logits(c->ctx, host_logits, x, head, c->N, C, V);
        return 0;
    }
    float *logits = device_alloc(d, bytes, err); /* tests and inference only: not the step loop */
    if (!logits) return -1;
    head_logits(c->ctx, logits, x, head, c->N, C, V);
    ops_download(c->ctx, host_logits, logits, bytes);
    int rc = ops_sync(c->ctx, err);
    device_free(d, logits);
    return rc;
}

int trainer_core_last_logits(trainer_core *c, const act *x, const weight *head, float *scratch,
                             float *host_logits, lp_err *err) {
    int C = c->m->hidden_size, V = c->m->vocab_size;
    int on_cpu = device_is_cpu(ops_device(c->ctx));
    head_logits(c->ctx, on_cpu ? host_logits : scratch, x, head, 1, C, V);
    if (!on_cpu) ops_download(c->ctx, host_logits, scratch, (size_t)V * sizeof(float));
    return ops_sync(c->ctx, err);
}

int trainer_core_end(trainer_core *c, model_step *per_adapter, model_step *total, lp_err *err) {
    if (ops_sync(c->ctx, err) < 0) return -1;
    *total = (model_step){0, 0};
    for (int k = 0; k < c->n_adapters; k++) {
        const adapter_rows *r = &c->rows_of[k];
        model_step *st = &c->step_of[k];
        *st = (model_step){0, 0};
        if (r->rows) st->loss_sum = ops_sum_f32(c->ctx, c->losses + r->row0, (size_t)r->rows);
        for (int i = 0; i < r->rows; i++) st->n_tokens += c->host_targets[r->row0 + i] >= 0;
        total->loss_sum += st->loss_sum;
        total->n_tokens += st->n_tokens;
        if (per_adapter) per_adapter[k] = *st;
    }
    return 0;
}

/* ---- the adapted linear layer -----------------------------------------------------------------
 */

/* The LoRA segments of a module this micro-batch: one per adapter that adapts it and has rows. */
static int segments_of(const trainer_core *c, int module, lora_segment *segs, int *owner) {
    int n = 0;
    for (int k = 0; k < c->n_adapters; k++) {
        const lora_site *s = c->site_of[(size_t)k * c->m->n_modules + module];
        if (!s || c->rows_of[k].rows == 0) continue;
        const adapter_on_device *ad = &c->dev[k];
        owner[n] = k;
        segs[n++] = (lora_segment){
            .row0 = c->rows_of[k].row0,
            .rows = c->rows_of[k].rows,
            .r = s->r,
            .scale = s->scale,
            .A = ad->params + s->a_offset,
            .B = ad->params + s->b_offset,
            .A_act = act_at(c->ctx, (const act *)ad->params_act, s->a_offset),
            .B_act = act_at(c->ctx, (const act *)ad->params_act, s->b_offset),
            .dA = ad->grads + s->a_offset,
            .dB = ad->grads + s->b_offset,
        };
    }
    return n;
}

/* Each module draws its own masks. */
static uint64_t dropout_seed_of(const trainer_core *c, int module) {
    return c->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(module + 1));
}

/* x as each segment's adapter sees it: dropout(x) on its rows where it has dropout, x itself
 * elsewhere. Returns inp when nothing is dropped. */
static const act *lora_input(trainer_core *c, int module, const act *inp, const lora_segment *segs,
                             const int *owner, int n, int IC) {
    int any = 0;
    for (int i = 0; i < n; i++) any |= c->adapters[owner[i]]->cfg.dropout > 0;
    if (!any || !c->training) return inp;
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)segs[i].row0 * IC;
        float p = c->adapters[owner[i]]->cfg.dropout;
        if (p > 0)
            dropout_forward(c->ctx, act_at(c->ctx, c->drop_x, off), act_at(c->ctx, inp, off),
                            segs[i].rows, IC, c->T, c->seq_ids + segs[i].row0 / c->T, p,
                            dropout_seed_of(c, module));
        else
            ops_copy_act(c->ctx, act_at(c->ctx, c->drop_x, off), act_at(c->ctx, inp, off),
                         (size_t)segs[i].rows * IC);
    }
    return c->drop_x;
}

void lora_linear_forward(trainer_core *c, int module, act *out, const act *inp, const weight *w,
                         weight_layout layout, const weight *bias, int IC, int OC) {
    matmul_forward(c->ctx, out, inp, w, layout, bias, c->N, IC, OC);
    lora_segment segs[LORA_MAX_BATCH_ADAPTERS];
    int owner[LORA_MAX_BATCH_ADAPTERS];
    int n = segments_of(c, module, segs, owner);
    if (n == 0) return;
    const act *x = lora_input(c, module, inp, segs, owner, n, IC);
    lora_forward(c->ctx, out, c->lora_h[module], x, segs, n, IC, OC, c->h_ld[module]);
}

void lora_linear_backward(trainer_core *c, int module, act *dinp, int accumulate, const act *dout,
                          const act *inp, const weight *w, weight_layout layout, int IC, int OC) {
    if (dinp) matmul_backward(c->ctx, dinp, dout, w, layout, c->N, IC, OC, accumulate);
    if (c->full_grads)
        matmul_backward_weight(c->ctx, c->dW_of[module], c->db_of[module], inp, dout, layout, c->N,
                               IC, OC);
    lora_segment segs[LORA_MAX_BATCH_ADAPTERS];
    int owner[LORA_MAX_BATCH_ADAPTERS];
    int n = segments_of(c, module, segs, owner);
    if (n == 0) return;
    const act *x = lora_input(c, module, inp, segs, owner, n, IC);
    int h_ld = c->h_ld[module];
    if (x == inp) {
        lora_backward(c->ctx, dinp, c->lora_dh, dout, inp, c->lora_h[module], segs, n, IC, OC,
                      h_ld);
        return;
    }
    /* The adapters saw dropout(x): send the gradient back through the same masks. */
    if (dinp) ops_zero(c->ctx, c->drop_dx, (size_t)c->N * IC * ops_act_size(c->ctx));
    lora_backward(c->ctx, dinp ? c->drop_dx : NULL, c->lora_dh, dout, x, c->lora_h[module], segs, n,
                  IC, OC, h_ld);
    if (!dinp) return;
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)segs[i].row0 * IC;
        float p = c->adapters[owner[i]]->cfg.dropout;
        act *d = act_at(c->ctx, dinp, off);
        const act *dd = act_at(c->ctx, (const act *)c->drop_dx, off);
        if (p > 0)
            dropout_backward(c->ctx, d, dd, segs[i].rows, IC, c->T,
                             c->seq_ids + segs[i].row0 / c->T, p, dropout_seed_of(c, module));
        else
            residual_backward(c->ctx, d, dd, segs[i].rows * IC);
    }
}

/* ---- gradients as layers finish ------------------------------------------------------------------ */

void trainer_core_stream_grads(trainer_core *c, grads_ready_fn fn, void *ctx) {
    c->stream_fn = fn;
    c->stream_ctx = ctx;
    c->streaming = fn != NULL;
}

/* Adapter k's parameters of the sites in `layer`: sites are in module order and each site's A and
 * B are contiguous, so a layer's are one range. 0 if it adapts nothing there. */
static size_t layer_range(const trainer_core *c, int k, int layer, size_t *offset) {
    const lora_adapter *a = c->adapters[k];
    size_t lo = SIZE_MAX, hi = 0;
    for (int i = 0; i < a->n_sites; i++) {
        const lora_site *s = &a->sites[i];
        if (c->m->modules[s->module].layer != layer) continue;
        if (s->a_offset < lo) lo = s->a_offset;
        size_t end = s->b_offset + (size_t)s->out * s->r;
        if (end > hi) hi = end;
    }
    *offset = lo;
    return lo < hi ? hi - lo : 0;
}

static void report_layer(trainer_core *c, int layer) {
    for (int k = 0; k < c->n_adapters; k++) {
        size_t off, n = layer_range(c, k, layer, &off);
        if (n) c->stream_fn(c->stream_ctx, k, off, n);
    }
}

void trainer_core_layer_done(trainer_core *c, int layer) {
    if (!c->streaming || layer < 0 || layer >= c->n_layers || c->reported[layer]) return;
    c->reported[layer] = 1;
    if (device_is_cpu(ops_device(c->ctx))) {
        report_layer(c, layer); /* the CPU's gradients are final as the op returns */
        return;
    }
    for (int k = 0; k < c->n_adapters; k++) {
        size_t off, n = layer_range(c, k, layer, &off);
        if (n)
            ops_download(c->ctx, c->adapters[k]->grads + off, c->dev[k].grads + off,
                         n * sizeof(float));
    }
    ops_record_event(c->ctx, layer);
    c->pending[c->n_pending++] = layer;
}

int trainer_core_stream_end(trainer_core *c, lp_err *err) {
    if (!c->streaming) return 0;
    for (int l = c->n_layers - 1; l >= 0; l--) trainer_core_layer_done(c, l);
    int rc = 0;
    for (int i = 0; i < c->n_pending && rc == 0; i++) {
        rc = ops_wait_event(c->ctx, c->pending[i], err);
        if (rc == 0) report_layer(c, c->pending[i]);
    }
    memset(c->reported, 0, (size_t)c->n_layers);
    c->n_pending = 0;
    c->streaming = 0;
    c->streamed = rc == 0;
    return rc;
}

int trainer_core_needs_grad_below(const trainer_core *c, int reader) {
    return c->lowest_site < reader;
}

act *zeroed_act(trainer_core *c, act *buf, size_t n) {
    ops_zero(c->ctx, buf, n * ops_act_size(c->ctx));
    return buf;
}

int trainer_core_adapts(const trainer_core *c, int module) {
    return c->h_ld[module] > 0;
}

/* ---- the full fine-tuning baseline ------------------------------------------------------------
 */

int trainer_core_full_grads(trainer_core *c, float **grads, size_t *n, lp_err *err) {
    if (!device_is_cpu(ops_device(c->ctx)))
        return lp_fail(err, "the full fine-tuning baseline runs on the CPU only");
    if (!c->full_grads) {
        const model *m = c->m;
        size_t n_mods = (size_t)(unsigned)m->n_modules;
        size_t total = (size_t)m->vocab_size * m->hidden_size;
        for (int i = 0; i < m->n_modules; i++)
            total += (size_t)m->modules[i].in * m->modules[i].out + m->modules[i].out;
        c->full_grads = calloc(total, sizeof(float));
        c->dW_of = calloc(n_mods, sizeof *c->dW_of);
        c->db_of = calloc(n_mods, sizeof *c->db_of);
        if (!c->full_grads || !c->dW_of || !c->db_of) {
            free(c->full_grads), free(c->dW_of), free(c->db_of);
            c->full_grads = NULL, c->dW_of = c->db_of = NULL;
            return lp_fail(err, "out of memory for %zu weight gradients", total);
        }
        float *p = c->full_grads;
        for (int i = 0; i < m->n_modules; i++) {
            c->dW_of[i] = p;
            p += (size_t)m->modules[i].in * m->modules[i].out;
            c->db_of[i] = p;
            p += m->modules[i].out;
        }
        c->dhead = p;
        c->n_full_grads = total;
        c->lowest_site = -1; /* every layer needs its input gradient now */
    }
    *grads = c->full_grads;
    *n = c->n_full_grads;
    return 0;
}

double lora_site_flops(const lora_site *s, double N, int dx) {
    double f = 2.0 * N * s->r * (s->in + s->out); /* forward */
    f += 2.0 * N * s->r * (2.0 * s->out + s->in); /* dh, dB, dA */
    if (dx) f += 2.0 * N * s->r * s->in;          /* dx */
    return f;
}
