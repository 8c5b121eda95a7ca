/* The adapter spec, this shard's part of the adapter with its AdamW moments, published
 * snapshots, and the final adapter file. */
#include "ps.h"
#include "lora_targets.h"
#include "model_load.h"

#include "dtype.h"
#include "fsutil.h"
#include "hash.h"
#include "lora.h"
#include "model.h"
#include "peft.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* The spec comes from the model folder through the model family's own module list, so the
 * server and the workers can never disagree on names or shapes; the weights are mmap'd, read
 * once for the fingerprint, and unmapped again. Initial values: PEFT's init with the job seed,
 * computed identically on every shard. */
static float *g_initial; /* full initial params, freed once the shard has copied its part */
/* The adapter as built from the model, kept (without gradients' use) to write the final PEFT
 * folder with the same config the workers used. */
static lora_adapter g_adapter;
static int g_fan_in_fan_out;
static lora_module *g_modules; /* the model's module list (resume builds adapters over it) */
static int g_n_modules;

lora_adapter *ps_full_adapter(void) {
    return &g_adapter;
}

const lora_module *ps_model_modules(int *n) {
    *n = g_n_modules;
    return g_modules;
}

int ps_fan_in_fan_out(void) {
    return g_fan_in_fan_out;
}

int ps_spec_from_model(ps *s, lp_err *err) {
    model *mdl;
    if (model_load(&mdl, s->cfg.model_dir, err) < 0) return lp_wrap(err, "%s", s->cfg.model_dir);
    s->fingerprint = model_fingerprint(mdl);
    const lora_module *mods;
    int n_mods = model_lora_modules(mdl, &mods);
    lora_config lc;
    lora_adapter a;
    memset(&a, 0, sizeof a);
    int rc = job_lora_config(&s->cfg.job, &lc, err);
    if (rc == 0) {
        rc = lora_adapter_build(&a, &lc, mods, n_mods, err);
        lora_config_free(&lc);
    }
    g_fan_in_fan_out = model_fan_in_fan_out(mdl);
    free(g_modules);
    g_modules = malloc((size_t)(n_mods ? n_mods : 1) * sizeof *g_modules);
    if (g_modules) memcpy(g_modules, mods, (size_t)n_mods * sizeof *g_modules);
    g_n_modules = g_modules ? n_mods : 0;
    model_free(mdl);
    if (rc < 0) return -1;
    if (a.n_tensors == 0) {
        lora_adapter_free(&a);
        return lp_fail(err, "target_modules '%s' match no module of the model",
                       s->cfg.job.target_modules);
    }
    lora_adapter_init(&a, s->cfg.job.seed);
    ps_spec *sp = &s->spec;
    sp->n = a.n_tensors;
    sp->names = calloc((size_t)sp->n, sizeof *sp->names);
    sp->rows = calloc((size_t)sp->n, sizeof *sp->rows);
    sp->cols = calloc((size_t)sp->n, sizeof *sp->cols);
    sp->numel = calloc((size_t)sp->n, sizeof *sp->numel);
    g_initial = malloc(a.n_params * sizeof(float));
    if (!sp->names || !sp->rows || !sp->cols || !sp->numel || !g_initial) {
        lora_adapter_free(&a);
        return lp_fail(err, "out of memory");
    }
    size_t pos = 0;
    for (int i = 0; i < sp->n; i++) {
        sp->names[i] = strdup(a.tensors[i].name);
        sp->rows[i] = (uint64_t)a.tensors[i].rows;
        sp->cols[i] = (uint64_t)a.tensors[i].cols;
        sp->numel[i] = a.tensors[i].numel;
        /* the spec's own layout: tensors one after another in spec order */
        memcpy(g_initial + pos, a.params + a.tensors[i].offset, a.tensors[i].numel * sizeof(float));
        pos += a.tensors[i].numel;
    }
    g_adapter = a;
    return 0;
}

void ps_spec_free(ps_spec *sp) {
    for (int i = 0; i < sp->n; i++) free(sp->names[i]);
    free(sp->names);
    free(sp->rows);
    free(sp->cols);
    free(sp->numel);
    memset(sp, 0, sizeof *sp);
}

int ps_adapter_init(ps *s, lp_err *err) {
    ps_adapter *a = &s->adapter;
    memset(a, 0, sizeof *a);
    size_t *bytes = malloc((size_t)s->spec.n * sizeof *bytes);
    if (!bytes) return lp_fail(err, "out of memory");
    for (int i = 0; i < s->spec.n; i++) bytes[i] = s->spec.numel[i] * sizeof(float);
    int rc = shard_map_build(&s->map, bytes, s->spec.n, s->cfg.n_shards, err);
    free(bytes);
    if (rc < 0) return -1;
    a->index = malloc((size_t)s->spec.n * sizeof *a->index);
    a->numel = malloc((size_t)s->spec.n * sizeof *a->numel);
    a->offset = malloc((size_t)s->spec.n * sizeof *a->offset);
    a->grad_ptr = malloc((size_t)s->spec.n * sizeof *a->grad_ptr);
    a->param_ptr = malloc((size_t)s->spec.n * sizeof *a->param_ptr);
    if (!a->index || !a->numel || !a->offset || !a->grad_ptr || !a->param_ptr)
        return lp_fail(err, "out of memory");
    a->n = shard_map_tensors(&s->map, s->cfg.shard, a->index);
    size_t *spec_off = malloc((size_t)s->spec.n * sizeof *spec_off);
    if (!spec_off) return lp_fail(err, "out of memory");
    size_t pos = 0;
    for (int i = 0; i < s->spec.n; i++) spec_off[i] = pos, pos += s->spec.numel[i];
    for (int t = 0; t < a->n; t++) {
        a->numel[t] = s->spec.numel[a->index[t]];
        a->offset[t] = a->n_params;
        a->n_params += a->numel[t];
    }
    size_t n = a->n_params ? a->n_params : 1;
    a->params = malloc(n * sizeof(float));
    a->m = calloc(n, sizeof(float));
    a->v = calloc(n, sizeof(float));
    a->grad_sum = calloc(n, sizeof(float));
    if (!a->params || !a->m || !a->v || !a->grad_sum) {
        free(spec_off);
        return lp_fail(err, "out of memory");
    }
    for (int t = 0; t < a->n; t++) {
        memcpy(a->params + a->offset[t], g_initial + spec_off[a->index[t]],
               a->numel[t] * sizeof(float));
        a->grad_ptr[t] = a->grad_sum + a->offset[t];
        a->param_ptr[t] = a->params + a->offset[t];
    }
    free(spec_off);
    free(g_initial);
    g_initial = NULL;
    return ps_publish(s, 0, err);
}

ps_adapter *ps_adapter_find(ps *s, uint32_t id) {
    return s->adapter.id == id ? &s->adapter : NULL;
}

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

int ps_publish(ps *s, uint64_t version, lp_err *err) {
    ps_adapter *a = &s->adapter;
    size_t wsz = wire_dtype_size(s->cfg.wire_dtype);
    ps_snapshot *sn = a->snap;
    /* Reuse the buffer when no frame of it is in flight; else leave it to libzmq. */
    if (!sn || atomic_load(&sn->refs) != 1) {
        if (sn) snap_unref(NULL, sn);
        sn = calloc(1, sizeof *sn);
        if (!sn) return lp_fail(err, "out of memory");
        sn->bytes = a->n_params * wsz;
        sn->data = malloc(sn->bytes ? sn->bytes : 1);
        if (!sn->data) {
            free(sn);
            a->snap = NULL;
            return lp_fail(err, "out of memory");
        }
        atomic_init(&sn->refs, 1);
        a->snap = sn;
    }
    if (s->cfg.wire_dtype == LORAPS__WIRE_DTYPE__WIRE_F32)
        memcpy(sn->data, a->params, a->n_params * sizeof(float));
    else
        dtype_from_f32(a->params,
                       s->cfg.wire_dtype == LORAPS__WIRE_DTYPE__WIRE_BF16 ? DT_BF16 : DT_F16,
                       sn->data, a->n_params);
    sn->version = version;
    a->version = version;
    return 0;
}

int ps_send_params(ps *s, const void *routing, size_t routing_len, int done, lp_err *err) {
    ps_adapter *a = &s->adapter;
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Params p = LORAPS__PARAMS__INIT;
    hdr.job_id = s->job_id;
    hdr.body_case = LORAPS__HEADER__BODY_PARAMS;
    hdr.params = &p;
    p.version = a->version;
    p.done = done;
    if (done) return wire_send_header(s->router, routing, routing_len, &hdr, &s->net, err);
    size_t wsz = wire_dtype_size(s->cfg.wire_dtype);
    wire_src *src = malloc((size_t)(a->n ? a->n : 1) * sizeof *src);
    if (!src) return lp_fail(err, "out of memory");
    for (int t = 0; t < a->n; t++)
        src[t] = (wire_src){a->index[t], a->numel[t], (char *)a->snap->data + a->offset[t] * wsz};
    wire_owner owner = {snap_ref, snap_unref, a->snap};
    wire_send_opts o = {.routing = routing,
                        .routing_len = routing_len,
                        .src_dtype = s->cfg.wire_dtype,
                        .wire_dtype = s->cfg.wire_dtype,
                        .owner = &owner};
    int rc = wire_send(s->router, &hdr, src, a->n, &o, &s->net, err);
    free(src);
    if (rc == 0) s->count.pulls_served++;
    return rc;
}

void ps_apply_update(ps *s, float clip, uint64_t update_index) {
    ps_adapter *a = &s->adapter;
    if (clip != 1.0f)
        for (size_t i = 0; i < a->n_params; i++) a->grad_sum[i] *= clip;
    float lr = lr_at(&s->sched, (int)update_index);
    a->updates++;
    adamw_update(a->params, a->grad_sum, a->m, a->v, a->n_params, lr, &s->adamw, (int)a->updates);
}

int ps_write_adapter(ps *s, const float *full, lp_err *err) {
    if (!s->cfg.out_dir[0]) return 0;
    size_t pos = 0;
    for (int i = 0; i < g_adapter.n_tensors; i++) {
        memcpy(g_adapter.params + g_adapter.tensors[i].offset, full + pos,
               g_adapter.tensors[i].numel * sizeof(float));
        pos += g_adapter.tensors[i].numel;
    }
    return peft_save(s->cfg.out_dir, &g_adapter, s->cfg.model_dir, g_fan_in_fan_out, err);
}

int ps_write_stats(ps *s, lp_err *err) {
    if (!s->cfg.out_dir[0]) return 0;
    if (fs_mkdirs(s->cfg.out_dir, err) < 0) return -1;
    json_t *o = json_object();
    json_object_set_new(o, "shard", json_integer(s->cfg.shard));
    json_object_set_new(o, "version", json_integer((json_int_t)s->adapter.version));
    json_object_set_new(o, "pushes_accepted", json_integer((json_int_t)s->count.pushes_accepted));
    json_object_set_new(o, "pushes_duplicate", json_integer((json_int_t)s->count.pushes_duplicate));
    json_object_set_new(o, "pushes_stale", json_integer((json_int_t)s->count.pushes_stale));
    json_object_set_new(o, "pulls_served", json_integer((json_int_t)s->count.pulls_served));
    json_object_set_new(o, "pulls_held_staleness",
                        json_integer((json_int_t)s->count.pulls_held_staleness));
    json_object_set_new(o, "max_spread", json_integer((json_int_t)s->count.max_spread));
    json_object_set_new(o, "step_overhead_ms_mean",
                        json_real(s->count.overhead_n
                                      ? s->count.overhead_ms_sum / (double)s->count.overhead_n
                                      : 0));
    json_object_set_new(o, "step_overhead_ms_max", json_real(s->count.overhead_ms_max));
    json_object_set_new(o, "joins", json_integer((json_int_t)s->count.joins));
    json_object_set_new(o, "drops", json_integer((json_int_t)s->count.drops));
    json_object_set_new(o, "rejected", json_integer((json_int_t)s->count.rejected_total));
    json_t *by = json_object();
    for (int c = 1; c < 32; c++)
        if (s->count.rejected[c])
            json_object_set_new(by, wire_error_name((Loraps__ErrorCode)c),
                                json_integer((json_int_t)s->count.rejected[c]));
    json_object_set_new(o, "rejected_by_code", by);
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)s->net.bytes_sent));
    json_object_set_new(o, "bytes_received", json_integer((json_int_t)s->net.bytes_received));
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/ps_stats_%d.json", s->cfg.out_dir, s->cfg.shard);
    int rc = fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

uint64_t ps_compute_job_id(const ps *s) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    uint64_t h = HASH64_INIT;
    if (f) {
        job_print(&s->cfg.job, f, "");
        fclose(f);
        h = hash64(h, text, len);
        free(text);
    }
    h = hash64(h, &s->fingerprint, sizeof s->fingerprint);
    h = hash64(h, &s->cfg.n_shards, sizeof s->cfg.n_shards);
    return h ? h : 1; /* 0 means "not known yet" in Hello */
}

void ps_adapter_free(ps_adapter *a) {
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
    memset(a, 0, sizeof *a);
    lora_adapter_free(&g_adapter);
    free(g_modules);
    g_modules = NULL;
    g_n_modules = 0;
}
