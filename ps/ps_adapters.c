/* The adapter table: specs, this shard's parts with their AdamW moments, published snapshots,
 * and the PEFT file. */
#include "ps_adapters.h"

#include "dtype.h"
#include "lora_targets.h"
#include "model.h"
#include "model_load.h"
#include "peft.h"

#include <stdlib.h>
#include <string.h>

static dtype wire_to_dtype(Loraps__WireDtype d) {
    return d == LORAPS__WIRE_DTYPE__WIRE_BF16  ? DT_BF16
           : d == LORAPS__WIRE_DTYPE__WIRE_F16 ? DT_F16
                                               : DT_F32;
}

/* The spec comes from the model folder through the model family's own module list, so the
 * server and the workers can never disagree on names or shapes; the weights are mmap'd, read
 * once for the fingerprint, and unmapped again. */
static int load_base_model(ps_adapters *t, lora_adapter *full, lp_err *err) {
    const ps_config *c = t->cfg;
    model *mdl;
    int rc = c->shapes_only ? model_load_shapes(&mdl, c->model_dir, err)
                            : model_load(&mdl, c->model_dir, err);
    if (rc < 0) return lp_wrap(err, "%s", c->model_dir);
    ps_base_model *bm = &t->model;
    bm->fingerprint = model_fingerprint(mdl);
    const lora_module *mods;
    int n_mods = model_lora_modules(mdl, &mods);
    lora_config lc;
    rc = job_lora_config(&c->job, &lc, err);
    if (rc == 0) {
        rc = lora_adapter_build(full, &lc, mods, n_mods, err);
        lora_config_free(&lc);
    }
    bm->fan_in_fan_out = model_fan_in_fan_out(mdl);
    bm->modules = malloc((size_t)(n_mods ? n_mods : 1) * sizeof *bm->modules);
    if (bm->modules) memcpy(bm->modules, mods, (size_t)n_mods * sizeof *bm->modules);
    bm->n_modules = bm->modules ? n_mods : 0;
    model_free(mdl);
    if (rc < 0) return -1;
    if (full->n_tensors == 0)
        return lp_fail(err, "target_modules '%s' match no module of the model",
                       c->job.target_modules);
    lora_adapter_init(full, c->job.seed);
    return 0;
}

static int spec_from_adapter(ps_spec *sp, const lora_adapter *full, lp_err *err) {
    sp->n = full->n_tensors;
    sp->names = calloc((size_t)sp->n, sizeof *sp->names);
    sp->rows = calloc((size_t)sp->n, sizeof *sp->rows);
    sp->cols = calloc((size_t)sp->n, sizeof *sp->cols);
    sp->numel = calloc((size_t)sp->n, sizeof *sp->numel);
    sp->offset = calloc((size_t)sp->n, sizeof *sp->offset);
    if (!sp->names || !sp->rows || !sp->cols || !sp->numel || !sp->offset)
        return lp_fail(err, "out of memory");
    for (int i = 0; i < sp->n; i++) {
        sp->names[i] = strdup(full->tensors[i].name);
        sp->rows[i] = (uint64_t)full->tensors[i].rows;
        sp->cols[i] = (uint64_t)full->tensors[i].cols;
        sp->numel[i] = full->tensors[i].numel;
        sp->offset[i] = sp->total;
        sp->total += sp->numel[i];
    }
    return 0;
}

static void spec_free(ps_spec *sp) {
    for (int i = 0; sp->names && i < sp->n; i++) free(sp->names[i]);
    free(sp->names);
    free(sp->rows);
    free(sp->cols);
    free(sp->numel);
    free(sp->offset);
    memset(sp, 0, sizeof *sp);
}

static int place_on_shards(ps_adapter *a, const ps_config *c, lp_err *err) {
    size_t *bytes = malloc((size_t)(a->spec.n ? a->spec.n : 1) * sizeof *bytes);
    if (!bytes) return lp_fail(err, "out of memory");
    for (int i = 0; i < a->spec.n; i++) bytes[i] = a->spec.numel[i] * sizeof(float);
    int rc = shard_map_build(&a->map, bytes, a->spec.n, c->n_shards, err);
    free(bytes);
    return rc;
}

/* This shard's tensors, with the initial values of the whole adapter. */
static int part_init(ps_adapter *a, int shard, int workers, lp_err *err) {
    size_t n_spec = (size_t)(a->spec.n ? a->spec.n : 1);
    a->index = malloc(n_spec * sizeof *a->index);
    a->numel = malloc(n_spec * sizeof *a->numel);
    a->offset = malloc(n_spec * sizeof *a->offset);
    a->grad_ptr = malloc(n_spec * sizeof *a->grad_ptr);
    a->param_ptr = malloc(n_spec * sizeof *a->param_ptr);
    if (!a->index || !a->numel || !a->offset || !a->grad_ptr || !a->param_ptr)
        return lp_fail(err, "out of memory");
    a->pos_of = malloc(n_spec * sizeof *a->pos_of);
    if (!a->pos_of) return lp_fail(err, "out of memory");
    for (int i = 0; i < a->spec.n; i++) a->pos_of[i] = -1;
    a->n = shard_map_tensors(&a->map, shard, a->index);
    for (int t = 0; t < a->n; t++) {
        a->numel[t] = a->spec.numel[a->index[t]];
        a->offset[t] = a->n_params;
        a->n_params += a->numel[t];
        a->pos_of[a->index[t]] = t;
    }
    size_t n = a->n_params ? a->n_params : 1;
    a->params = malloc(n * sizeof(float));
    a->m = calloc(n, sizeof(float));
    a->v = calloc(n, sizeof(float));
    a->grad_sum = calloc(n, sizeof(float));
    if (!a->params || !a->m || !a->v || !a->grad_sum) return lp_fail(err, "out of memory");
    for (int t = 0; t < a->n; t++) {
        const lora_tensor *lt = &a->full.tensors[a->index[t]];
        memcpy(a->params + a->offset[t], a->full.params + lt->offset, a->numel[t] * sizeof(float));
        a->grad_ptr[t] = a->grad_sum + a->offset[t];
        a->param_ptr[t] = a->params + a->offset[t];
    }
    a->grad_scale = 1.0f;
    return ps_agg_init(&a->agg, a->n, a->numel, a->grad_ptr, workers, wire_to_dtype(a->wire_dtype),
                       err);
}

static int adapter_init(ps_adapters *t, ps_adapter *a, uint32_t id, lp_err *err) {
    const ps_config *c = t->cfg;
    a->id = id;
    a->wire_dtype = c->wire_dtype;
    if (load_base_model(t, &a->full, err) < 0) return -1;
    if (spec_from_adapter(&a->spec, &a->full, err) < 0) return -1;
    if (place_on_shards(a, c, err) < 0) return -1;
    if (part_init(a, c->shard, c->job.workers, err) < 0) return -1;
    if (ps_adapter_publish(a, 0, err) < 0) return -1;
    job_adamw(&c->job, &a->adamw);
    job_schedule(&c->job, (int)c->total_updates, &a->sched);
    return 0;
}

int ps_adapters_init(ps_adapters *t, const ps_config *cfg, lp_err *err) {
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->entries = calloc(1, sizeof *t->entries);
    if (!t->entries) return lp_fail(err, "out of memory");
    t->n = 1;
    return adapter_init(t, &t->entries[0], PS_ADAPTER_DEFAULT, err);
}

ps_adapter *ps_adapters_find(ps_adapters *t, uint32_t id) {
    for (int i = 0; i < t->n; i++)
        if (t->entries[i].id == id) return &t->entries[i];
    return NULL;
}

ps_adapter *ps_adapters_default(ps_adapters *t) {
    return ps_adapters_find(t, PS_ADAPTER_DEFAULT);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

static void snap_ref(void *hint) {
    atomic_fetch_add(&((ps_snapshot *)hint)->refs, 1);
}

static void snap_unref(void *data, void *hint) {
    (void)data;
    ps_snapshot *sn = hint;
    if (atomic_fetch_sub(&sn->refs, 1) == 1) {
        free(sn->data);
        free(sn);
    }
}

/* The snapshot to write the next version into: the current one's buffer when no frame of it is
 * in flight, else a new one (the old one left to libzmq). */
static ps_snapshot *writable_snapshot(ps_adapter *a, lp_err *err) {
    ps_snapshot *sn = a->snap;
    if (sn && atomic_load(&sn->refs) == 1) return sn;
    if (sn) snap_unref(NULL, sn);
    a->snap = NULL;
    sn = calloc(1, sizeof *sn);
    if (!sn) return lp_fail(err, "out of memory"), NULL;
    sn->bytes = a->n_params * wire_dtype_size(a->wire_dtype);
    sn->data = malloc(sn->bytes ? sn->bytes : 1);
    if (!sn->data) {
        free(sn);
        return lp_fail(err, "out of memory"), NULL;
    }
    atomic_init(&sn->refs, 1);
    a->snap = sn;
    return sn;
}

int ps_adapter_publish(ps_adapter *a, uint64_t version, lp_err *err) {
    ps_snapshot *sn = writable_snapshot(a, err);
    if (!sn) return -1;
    dtype_from_f32(a->params, wire_to_dtype(a->wire_dtype), sn->data, a->n_params);
    sn->version = version;
    a->version = version;
    return 0;
}

int ps_adapter_send_params(ps_adapter *a, ps_net *net, const void *routing, size_t routing_len,
                           int done, lp_err *err) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Params p = LORAPS__PARAMS__INIT;
    hdr.job_id = net->job_id;
    hdr.body_case = LORAPS__HEADER__BODY_PARAMS;
    hdr.params = &p;
    p.version = a->version;
    p.done = done;
    if (done) return wire_send_header(net->router, routing, routing_len, &hdr, &net->bytes, err);
    size_t wsz = wire_dtype_size(a->wire_dtype);
    wire_src *src = malloc((size_t)(a->n ? a->n : 1) * sizeof *src);
    if (!src) return lp_fail(err, "out of memory");
    for (int t = 0; t < a->n; t++)
        src[t] = (wire_src){a->index[t], a->numel[t], (char *)a->snap->data + a->offset[t] * wsz};
    wire_owner owner = {snap_ref, snap_unref, a->snap};
    wire_send_opts o = {.routing = routing,
                        .routing_len = routing_len,
                        .src_dtype = a->wire_dtype,
                        .wire_dtype = a->wire_dtype,
                        .owner = &owner};
    int rc = wire_send(net->router, &hdr, src, a->n, &o, &net->bytes, err);
    free(src);
    return rc;
}

/* ---- gradients and the update --------------------------------------------------------------- */

int ps_adapter_add_piece(ps_adapter *a, int rank, uint64_t tokens, wire_msg *m,
                         const int *frame_pos, int complete, lp_err *err) {
    return ps_agg_add(&a->agg, rank, tokens, m, frame_pos, complete, err);
}

int ps_adapter_discard_push(ps_adapter *a, int rank) {
    if (!ps_agg_rank_partial(&a->agg, rank)) return 0;
    ps_agg_discard(&a->agg, rank);
    return 1;
}

int ps_adapter_discard_partial(ps_adapter *a) {
    int n = 0;
    for (int r = 0; a->agg.n_partial > 0 && r < a->agg.workers; r++)
        n += ps_adapter_discard_push(a, r);
    return n;
}

void ps_adapter_set_grad(ps_adapter *a, const wire_msg *m) {
    wire_expect e = {a->n, a->index, a->numel, a->wire_dtype};
    wire_frames_apply(m, &e, a->grad_ptr, 1.0f, 0);
    a->grad_scale = 1.0f;
}

double ps_adapter_mean_grad(ps_adapter *a, uint64_t tokens) {
    double t0 = wire_cpu_s();
    ps_agg_close(&a->agg);
    a->grad_scale = 1.0f / (float)tokens;
    double ss = sum_of_squares_scaled(a->grad_sum, a->grad_scale, a->n_params);
    a->close_s += wire_cpu_s() - t0;
    return ss;
}

double ps_adapter_grad_sum_sq(const ps_adapter *a) {
    return sum_of_squares_scaled(a->grad_sum, a->grad_scale, a->n_params);
}

void ps_adapter_zero_grad(ps_adapter *a) {
    ps_agg_reset(&a->agg);
}

int ps_adapter_update(ps_adapter *a, float clip, uint64_t update_index, uint64_t version,
                      lp_err *err) {
    ps_snapshot *sn = writable_snapshot(a, err);
    if (!sn) return -1; /* nothing changed */
    double t0 = wire_cpu_s();
    float lr = lr_at(&a->sched, (int)update_index);
    a->updates++;
    adamw_update_from_sum(a->params, a->grad_sum, a->grad_scale, clip, a->m, a->v, a->n_params, lr,
                          &a->adamw, (int)a->updates, sn->data, wire_to_dtype(a->wire_dtype));
    a->version = version;
    sn->version = version;
    a->update_s += wire_cpu_s() - t0;
    return 0;
}

int ps_adapters_write_peft(ps_adapters *t, ps_adapter *a, const float *full, const model_card *card,
                           lp_err *err) {
    const ps_config *c = t->cfg;
    if (!c->out_dir[0]) return 0;
    for (int i = 0; i < a->full.n_tensors; i++)
        memcpy(a->full.params + a->full.tensors[i].offset, full + a->spec.offset[i],
               a->full.tensors[i].numel * sizeof(float));
    return peft_save_card(c->out_dir, &a->full, c->model_dir, t->model.fan_in_fan_out, card, err);
}

/* ---- free ----------------------------------------------------------------------------------- */

static void adapter_free(ps_adapter *a) {
    ps_agg_free(&a->agg);
    free(a->pos_of);
    free(a->index);
    free(a->numel);
    free(a->offset);
    free(a->params);
    free(a->m);
    free(a->v);
    free(a->grad_sum);
    free(a->grad_ptr);
    free(a->param_ptr);
    if (a->snap) snap_unref(NULL, a->snap);
    spec_free(&a->spec);
    shard_map_free(&a->map);
    lora_adapter_free(&a->full);
    memset(a, 0, sizeof *a);
}

void ps_adapters_free(ps_adapters *t) {
    for (int i = 0; i < t->n; i++) adapter_free(&t->entries[i]);
    free(t->entries);
    free(t->model.modules);
    memset(t, 0, sizeof *t);
}
