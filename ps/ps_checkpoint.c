/* Checkpoints of the server side: collecting the shards' states on shard 0 and writing them.
 *
 * - periodic (version % save_every == 0): states are collected per version. In sync mode every
 *   shard publishes the same versions in the same order, so each one reaches the version and
 *   sends it; shard 0 keeps a state until every part is in (it may be a step behind or ahead).
 * - final (the job's end) and stop (SIGTERM/SIGINT): each shard sends its state as it is. If the
 *   shards' versions differ (a stop between two shards' updates), no checkpoint is written from
 *   them (it would not be a state the job ever had); the --out adapter still is, and `latest`
 *   stays on the newest consistent checkpoint. */
#include "ps_checkpoint.h"

#include "checkpoint.h"
#include "ps_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ckpt_slot {
    int active;
    int end; /* the final/stop collection: takes every shard's state, whatever its version */
    int final, stop;
    uint64_t version, updates;
    float *params, *m, *v; /* spec layout, whole adapter */
    unsigned char *have;   /* [n_shards] */
    uint64_t *versions;    /* [n_shards] (end slot) */
    int missing;
    int64_t started_ms;
} ckpt_slot;

struct ps_ckpt_collect {
    ckpt_slot slot[3]; /* two periodic versions in flight, and the end */
    int final_done;
};

enum { END_SLOT = 2 };

int ps_checkpoints_init(ps_checkpoints *ck, ps_config *cfg, ps_adapters *adapters, ps_step *step,
                        ps_net *net, ps_validate *checks, const ps_progress *progress,
                        lp_err *err) {
    memset(ck, 0, sizeof *ck);
    ck->cfg = cfg;
    ck->adapters = adapters;
    ck->step = step;
    ck->net = net;
    ck->checks = checks;
    ck->progress = progress;
    if (cfg->durable_every > 0 && !cfg->out_dir[0])
        return lp_fail(err, "--durable-every needs --out (where the checkpoints go)");
    if (cfg->durable_every > 0 && cfg->job.keep_checkpoints == 0) {
        /* a folder per durable version would fill the disk: keep the newest few */
        cfg->job.keep_checkpoints = 3;
        ps_log(cfg->shard, "--durable-every: keeping the newest 3 checkpoints (keep_checkpoints)");
    }
    if (cfg->durable_every > 0 && cfg->n_shards > 1)
        return lp_fail(err, "--durable-every is not supported with several shards yet (each "
                            "shard would have to wait for shard 0's write); use one shard");
    return 0;
}

static void slot_free(ckpt_slot *sl) {
    free(sl->params);
    free(sl->m);
    free(sl->v);
    free(sl->have);
    free(sl->versions);
    memset(sl, 0, sizeof *sl);
}

void ps_checkpoints_free(ps_checkpoints *ck) {
    if (!ck->collect) return;
    for (int i = 0; i < 3; i++) slot_free(&ck->collect->slot[i]);
    free(ck->collect);
    ck->collect = NULL;
}

static struct ps_ckpt_collect *collect_state(ps_checkpoints *ck) {
    if (!ck->collect) ck->collect = calloc(1, sizeof *ck->collect);
    return ck->collect;
}

void ps_checkpoint_job_text(const job *j, char **out) {
    *out = job_print_text(j);
}

/* What the model card of a folder written at `version` says (model_card.h); *settings is the
 * job's text, for the caller to free. The server knows the workers' data by its id only
 * (Push.data_id; 0: the built-in demo task). */
static model_card card_for(const ps_checkpoints *ck, uint64_t version, char *data, size_t n,
                           char **settings) {
    const ps_config *c = ck->cfg;
    model_card card = model_card_unknown();
    if (ck->step->data_id)
        snprintf(data, n, "the workers' data (id %016llx)", (unsigned long long)ck->step->data_id);
    else
        snprintf(data, n, "the built-in demo task");
    card.data = data;
    card.max_steps = c->sync ? (uint64_t)c->job.max_steps : 0;
    card.workers = c->job.workers;
    card.mode = c->job.mode;
    ps_checkpoint_job_text(&c->job, settings);
    card.job_settings = *settings;
    ps_progress_card(ck->progress, version, &card);
    return card;
}

/* ---- the slots ------------------------------------------------------------------------------ */

static int slot_open(ps_checkpoints *ck, ckpt_slot *sl, uint64_t version, int end) {
    int S = ck->cfg->n_shards;
    size_t total = ps_adapters_default(ck->adapters)->spec.total;
    size_t n = total ? total : 1;
    slot_free(sl);
    sl->params = malloc(n * sizeof(float));
    sl->m = malloc(n * sizeof(float));
    sl->v = malloc(n * sizeof(float));
    sl->have = calloc((size_t)S, 1);
    sl->versions = calloc((size_t)S, sizeof *sl->versions);
    if (!sl->params || !sl->m || !sl->v || !sl->have || !sl->versions) {
        slot_free(sl);
        return -1;
    }
    sl->active = 1;
    sl->end = end;
    sl->version = version;
    sl->missing = S;
    sl->started_ms = wire_now_ms();
    return 0;
}

/* The slot collecting `version` (or the end slot), opened if needed; NULL if the version is
 * older than every periodic one in flight. */
static ckpt_slot *slot_for(ps_checkpoints *ck, uint64_t version, int end) {
    struct ps_ckpt_collect *c = ck->collect;
    if (end) {
        ckpt_slot *sl = &c->slot[END_SLOT];
        if (!sl->active && slot_open(ck, sl, version, 1) < 0) return NULL;
        return sl;
    }
    for (int i = 0; i < 2; i++)
        if (c->slot[i].active && c->slot[i].version == version) return &c->slot[i];
    /* a free slot, else the older incomplete one gives way to the newer version */
    ckpt_slot *victim = NULL;
    for (int i = 0; i < 2 && !victim; i++)
        if (!c->slot[i].active) victim = &c->slot[i];
    if (!victim) {
        victim = c->slot[0].version < c->slot[1].version ? &c->slot[0] : &c->slot[1];
        if (victim->version > version) return NULL;
        ps_log(ck->cfg->shard,
               "checkpoint at step %" PRIu64 " dropped: %d shard state(s) never came",
               victim->version, victim->missing);
    }
    if (slot_open(ck, victim, version, 0) < 0) return NULL;
    return victim;
}

/* ---- writing a complete slot ---------------------------------------------------------------- */

static int slot_consistent(const ps_checkpoints *ck, const ckpt_slot *sl) {
    for (int k = 0; k < ck->cfg->n_shards; k++)
        if (sl->versions[k] != sl->version) return 0;
    return 1;
}

static void write_out_adapter(ps_checkpoints *ck, const ckpt_slot *sl) {
    lp_err err;
    const ps_config *c = ck->cfg;
    char data[64], *settings = NULL;
    model_card card = card_for(ck, sl->version, data, sizeof data, &settings);
    int rc = ps_adapters_write_peft(ck->adapters, ps_adapters_default(ck->adapters), sl->params,
                                    &card, &err);
    free(settings);
    if (rc < 0)
        ps_log(c->shard, "writing the adapter: %s", err.msg);
    else if (c->out_dir[0])
        ps_log(c->shard, "wrote %s/adapter_model.safetensors (version %" PRIu64 ")", c->out_dir,
               sl->version);
}

/* The trainer state of the checkpoint: where the job is and where each rank's data is.
 * -1: out of memory. */
static int fill_info(ps_checkpoints *ck, const ckpt_slot *sl, ckpt_info *info) {
    const ps_config *c = ck->cfg;
    const job *j = &c->job;
    const ps_step *st = ck->step;
    memset(info, 0, sizeof *info);
    info->step = sl->version;
    info->updates = sl->updates;
    info->total_updates = c->total_updates;
    info->base_fingerprint = ck->adapters->model.fingerprint;
    info->job_id = ck->net->job_id;
    info->seed = j->seed;
    info->sequences_per_step =
        (uint64_t)j->micro_batch * (uint64_t)j->grad_accum * (uint64_t)j->workers;
    info->n_shards = c->n_shards;
    info->data_id = st->data_id;
    snprintf(info->mode, sizeof info->mode, "%s", j->mode);
    snprintf(info->base_model, sizeof info->base_model, "%s", c->model_dir);
    info->n_ranks = j->workers;
    info->ranks = calloc((size_t)j->workers, sizeof *info->ranks);
    for (int r = 0; info->ranks && r < j->workers; r++) {
        /* sync: every rank computes step `version` next; async: its own next step */
        uint64_t next = c->sync ? sl->version : st->rank_next[r];
        info->ranks[r].next_step = next;
        info->ranks[r].next_sequence = ps_data_position(st, r, next);
    }
    ps_checkpoint_job_text(j, &info->job_settings);
    return info->ranks ? 0 : -1;
}

/* spec layout -> the adapter's layout (tensor by tensor) */
static void to_adapter_layout(const ps_adapter *a, const ckpt_slot *sl, float *params, float *m,
                              float *v) {
    for (int i = 0; i < a->full.n_tensors; i++) {
        size_t n = a->full.tensors[i].numel, o = a->full.tensors[i].offset;
        size_t from = a->spec.offset[i];
        memcpy(params + o, sl->params + from, n * sizeof(float));
        memcpy(m + o, sl->m + from, n * sizeof(float));
        memcpy(v + o, sl->v + from, n * sizeof(float));
    }
}

static void write_checkpoint(ps_checkpoints *ck, const ckpt_slot *sl) {
    const ps_config *c = ck->cfg;
    ps_adapter *a = ps_adapters_default(ck->adapters);
    size_t n = a->full.n_params ? a->full.n_params : 1;
    float *m = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    ckpt_info info;
    memset(&info, 0, sizeof info);
    lp_err err;
    char where[PATH_MAX];
    if (!m || !v || fill_info(ck, sl, &info) < 0) {
        ps_log(c->shard, "checkpoint at step %" PRIu64 ": out of memory", sl->version);
        goto done;
    }
    to_adapter_layout(a, sl, a->full.params, m, v);
    char data[64], *settings = NULL;
    model_card card = card_for(ck, sl->version, data, sizeof data, &settings);
    ckpt_write_opts o = {c->model_dir, ck->adapters->model.fan_in_fan_out, c->job.keep_checkpoints,
                         &card};
    if (ckpt_write(c->out_dir, &a->full, m, v, &info, &o, where, sizeof where, &err) < 0) {
        ps_log(c->shard, "checkpoint at step %" PRIu64 " failed: %s", sl->version, err.msg);
        goto done;
    }
    ck->last_version = sl->version + 1;
    ps_log(c->shard, "checkpoint %s (step %" PRIu64 ", %" PRIu64 " optimizer updates)", where,
           sl->version, sl->updates);
done:
    free(info.ranks);
    free(info.job_settings);
    free(settings);
    free(m);
    free(v);
}

/* A complete slot: the checkpoint folder (when consistent and new) and, at the end or on a
 * stop, the --out adapter. */
static void slot_write(ps_checkpoints *ck, ckpt_slot *sl) {
    const ps_config *c = ck->cfg;
    int consistent = slot_consistent(ck, sl);
    if (sl->end && (sl->final || sl->stop)) write_out_adapter(ck, sl);
    int due = c->out_dir[0] && sl->version > 0 && sl->version > ck->resumed_version &&
              ck->last_version != sl->version + 1;
    if (due && !consistent) {
        ps_log(c->shard,
               "no checkpoint on %s: the shards stopped at different versions (shard 0 at %" PRIu64
               "); `latest` stays on the previous checkpoint",
               sl->final ? "finishing" : "stopping", sl->version);
        due = 0;
    }
    if (due) write_checkpoint(ck, sl);
    int was_end = sl->end && sl->final;
    slot_free(sl);
    if (was_end) ck->collect->final_done = 1;
}

/* Copies shard 0's own part into the slot. */
static void slot_take_own(ps_checkpoints *ck, ckpt_slot *sl) {
    const ps_adapter *a = ps_adapters_default(ck->adapters);
    for (int t = 0; t < a->n; t++) {
        size_t dst = a->spec.offset[a->index[t]], n = a->numel[t], src = a->offset[t];
        memcpy(sl->params + dst, a->params + src, n * sizeof(float));
        memcpy(sl->m + dst, a->m + src, n * sizeof(float));
        memcpy(sl->v + dst, a->v + src, n * sizeof(float));
    }
}

static void slot_mark(ps_checkpoints *ck, ckpt_slot *sl, int shard, uint64_t version,
                      uint64_t updates, int final, int stop) {
    if (!sl->have[shard]) {
        sl->have[shard] = 1;
        sl->missing--;
    }
    sl->versions[shard] = version;
    if (shard == 0) {
        sl->version = version;
        sl->updates = updates;
    }
    sl->final |= final;
    sl->stop |= stop;
    if (sl->missing == 0) slot_write(ck, sl);
}

/* ---- beginning a checkpoint ----------------------------------------------------------------- */

/* Hands this shard's state to shard 0, which writes the one checkpoint folder. */
static void send_shard_state(ps_checkpoints *ck, int kind) {
    const ps_adapter *a = ps_adapters_default(ck->adapters);
    ps_net *net = ck->net;
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__ShardState st = LORAPS__SHARD_STATE__INIT;
    hdr.job_id = net->job_id;
    hdr.body_case = LORAPS__HEADER__BODY_SHARD_STATE;
    hdr.shard_state = &st;
    st.shard = (uint32_t)ck->cfg->shard;
    st.version = a->version;
    st.updates = a->updates;
    st.instance = net->instance;
    st.final = kind != PS_CKPT_PERIODIC;
    int n = a->n;
    uint32_t S = (uint32_t)a->spec.n;
    wire_src *src = calloc((size_t)3 * (size_t)n + 1, sizeof *src);
    for (int t = 0; src && t < n; t++) {
        uint32_t ix = a->index[t];
        src[t] = (wire_src){ix, a->numel[t], a->params + a->offset[t]};
        src[n + t] = (wire_src){ix + S, a->numel[t], a->m + a->offset[t]};
        src[2 * n + t] = (wire_src){ix + 2u * S, a->numel[t], a->v + a->offset[t]};
    }
    /* copied, not zero-copy: the buffers change with the next update */
    wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32};
    lp_err err;
    if (!src || wire_send(net->peer[0], &hdr, src, 3 * n, &o, &net->bytes, &err) < 0)
        ps_log(ck->cfg->shard, "sending this shard's state (version %" PRIu64 ") to shard 0 failed",
               a->version);
    free(src);
}

/* Shard 0 collects its own part; the slot is written once the others' parts are in. */
static void collect_own(ps_checkpoints *ck, int kind) {
    const ps_config *c = ck->cfg;
    const ps_adapter *a = ps_adapters_default(ck->adapters);
    if (!collect_state(ck)) {
        ps_log(c->shard, "checkpoint: out of memory");
        return;
    }
    if (!c->out_dir[0]) { /* shard 0 writes nothing without --out */
        if (kind == PS_CKPT_FINAL) ck->collect->final_done = 1;
        return;
    }
    ckpt_slot *sl = slot_for(ck, a->version, kind != PS_CKPT_PERIODIC);
    if (!sl) {
        ps_log(c->shard, "checkpoint at step %" PRIu64 " skipped (out of memory)", a->version);
        if (kind == PS_CKPT_FINAL) ck->collect->final_done = 1;
        return;
    }
    slot_take_own(ck, sl);
    slot_mark(ck, sl, 0, a->version, a->updates, kind == PS_CKPT_FINAL, kind == PS_CKPT_STOP);
}

void ps_checkpoint_begin(ps_checkpoints *ck, int kind) {
    if (ck->cfg->shard != 0)
        send_shard_state(ck, kind);
    else
        collect_own(ck, kind);
}

/* ---- another shard's state ------------------------------------------------------------------ */

/* A ShardState must go to shard 0 and come from the shard it claims to be. */
static int state_from_peer(ps_checkpoints *ck, const wire_msg *m) {
    const ps_config *c = ck->cfg;
    const Loraps__ShardState *st = m->hdr->shard_state;
    if (c->shard != 0 || c->n_shards < 2) {
        ps_reject(ck->checks, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED,
                  "ShardState goes to shard 0 only");
        return 0;
    }
    if (st->shard == 0 || st->shard >= (uint32_t)c->n_shards) {
        ps_reject(ck->checks, m, LORAPS__ERROR_CODE__ERR_MALFORMED, "ShardState from shard %u",
                  st->shard);
        return 0;
    }
    /* Shards connect with the routing id "shard-<k>" (ps_net.c). */
    char rid[32];
    int from = (int)st->shard;
    int rl = snprintf(rid, sizeof rid, "shard-%d", from);
    if (m->routing_len != (size_t)rl || memcmp(m->routing, rid, (size_t)rl)) {
        ps_reject(ck->checks, m, LORAPS__ERROR_CODE__ERR_MALFORMED,
                  "ShardState of shard %d from a connection that is not that shard", from);
        return 0;
    }
    return 1;
}

/* The frames a state of shard `from` carries: its params, then m, then v (spec index + n and
 * + 2n); idx and numel have 3 * spec.n + 1 places. */
static wire_expect state_frames(const ps_adapter *a, int from, uint32_t *idx, size_t *numel) {
    uint32_t S = (uint32_t)a->spec.n;
    int n = shard_map_tensors(&a->map, from, idx);
    for (int t = 0; t < n; t++) {
        numel[t] = numel[n + t] = numel[2 * n + t] = a->spec.numel[idx[t]];
        idx[n + t] = idx[t] + S;
        idx[2 * n + t] = idx[t] + 2u * S;
    }
    return (wire_expect){3 * n, idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
}

static int state_frames_valid(ps_checkpoints *ck, const wire_msg *m, const wire_expect *e,
                              int from) {
    Loraps__ErrorCode code;
    lp_err err;
    if (wire_check_frames(m, e, &code, &err) < 0) {
        ps_reject(ck->checks, m, code, "state of shard %d: %s", from, err.msg);
        return 0;
    }
    if (!wire_frames_finite(m)) {
        ps_reject(ck->checks, m, LORAPS__ERROR_CODE__ERR_NONFINITE, "state of shard %d: NaN or Inf",
                  from);
        return 0;
    }
    return 1;
}

void ps_checkpoint_on_peer(ps_checkpoints *ck, wire_msg *m) {
    const Loraps__ShardState *st = m->hdr->shard_state;
    if (!state_from_peer(ck, m)) return;
    if (!ck->cfg->out_dir[0]) return; /* nothing is written without --out */
    const ps_adapter *a = ps_adapters_default(ck->adapters);
    int from = (int)st->shard, places = 3 * a->spec.n + 1;
    uint32_t idx[places];
    size_t numel[places];
    float *dst[places];
    wire_expect e = state_frames(a, from, idx, numel);
    if (!state_frames_valid(ck, m, &e, from) || !collect_state(ck)) return;
    ckpt_slot *sl = slot_for(ck, st->version, st->final);
    if (!sl) {
        ps_log(ck->cfg->shard,
               "state of shard %d at version %" PRIu64 " is older than any checkpoint due", from,
               st->version);
        return;
    }
    int n = e.n / 3;
    for (int t = 0; t < n; t++) {
        size_t off = a->spec.offset[idx[t]];
        dst[t] = sl->params + off;
        dst[n + t] = sl->m + off;
        dst[2 * n + t] = sl->v + off;
    }
    wire_frames_apply(m, &e, dst, 1.0f, 0);
    slot_mark(ck, sl, from, st->version, st->updates, 0, 0);
}

/* ---- the end -------------------------------------------------------------------------------- */

int ps_checkpoint_final_done(ps_checkpoints *ck) {
    struct ps_ckpt_collect *c = ck->collect;
    if (!c) return 0;
    if (c->final_done) return 1;
    ckpt_slot *sl = &c->slot[END_SLOT];
    if (sl->active && wire_now_ms() - sl->started_ms > 60000) {
        ps_log(ck->cfg->shard,
               "gave up waiting for %d shard(s)' final state: no final adapter written",
               sl->missing);
        slot_free(sl);
        c->final_done = 1;
    }
    return c->final_done;
}

int ps_checkpoint_stop_begin(ps_checkpoints *ck, int done, int finishing) {
    const ps_config *c = ck->cfg;
    if (done || (c->shard == 0 && !c->out_dir[0])) return 0;
    /* Finishing already: the final collection is under way; wait for it instead. */
    if (!finishing) ps_checkpoint_begin(ck, PS_CKPT_STOP);
    return c->shard == 0 && c->n_shards >= 2 && ck->collect;
}

int ps_checkpoint_collecting(const ps_checkpoints *ck) {
    return ck->collect && ck->collect->slot[END_SLOT].active;
}

void ps_checkpoint_stop_end(ps_checkpoints *ck, int finishing) {
    if (!ps_checkpoint_collecting(ck)) return;
    ckpt_slot *sl = &ck->collect->slot[END_SLOT];
    ps_log(ck->cfg->shard, "stopping without the other shards' states (%d missing): no %s",
           sl->missing, finishing ? "final adapter" : "checkpoint");
    slot_free(sl);
}
