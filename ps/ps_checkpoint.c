/* Checkpoints of the server side, and resume.
 *
 * Every shard owns a part of the adapter and of AdamW's moments; a checkpoint is still ONE PEFT
 * folder (common/checkpoint.h), written by shard 0. When a checkpoint is due, each other shard
 * sends shard 0 its whole state at that version (ShardState: params, m, v), and shard 0 writes
 * the folder once it holds every shard's part of the SAME version:
 *
 * - periodic (version % save_every == 0): states are collected per version. In sync mode every
 *   shard publishes the same versions in the same order, so each one reaches the version and
 *   sends it; shard 0 keeps a state until every part is in (it may be a step behind or ahead).
 * - final (the job's end) and stop (SIGTERM/SIGINT): each shard sends its state as it is. If the
 *   shards' versions differ (a stop between two shards' updates), no checkpoint is written from
 *   them (it would not be a state the job ever had); the --out adapter still is, and `latest`
 *   stays on the newest consistent checkpoint.
 *
 * Resume reads the folder back on every shard; each takes its part, so the number of shards may
 * change between runs. */
#include "ps.h"

#include "checkpoint.h"
#include "fsutil.h"
#include "peft.h"

#include <inttypes.h>
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

struct ps_ckpt {
    ckpt_slot slot[3]; /* two periodic versions in flight, and the end */
    size_t total;      /* params of the whole adapter */
    size_t *spec_off;  /* [spec.n] */
    int final_done;
};

static struct ps_ckpt *ckpt_state(ps *s) {
    if (s->ckpt) return s->ckpt;
    struct ps_ckpt *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->spec_off = malloc((size_t)(s->spec.n ? s->spec.n : 1) * sizeof *c->spec_off);
    if (!c->spec_off) {
        free(c);
        return NULL;
    }
    for (int i = 0; i < s->spec.n; i++) c->spec_off[i] = c->total, c->total += s->spec.numel[i];
    s->ckpt = c;
    return c;
}

static void slot_free(ckpt_slot *sl) {
    free(sl->params);
    free(sl->m);
    free(sl->v);
    free(sl->have);
    free(sl->versions);
    memset(sl, 0, sizeof *sl);
}

static int slot_open(ps *s, ckpt_slot *sl, uint64_t version, int end) {
    struct ps_ckpt *c = s->ckpt;
    size_t n = c->total ? c->total : 1;
    slot_free(sl);
    sl->params = malloc(n * sizeof(float));
    sl->m = malloc(n * sizeof(float));
    sl->v = malloc(n * sizeof(float));
    sl->have = calloc((size_t)s->cfg.n_shards, 1);
    sl->versions = calloc((size_t)s->cfg.n_shards, sizeof *sl->versions);
    if (!sl->params || !sl->m || !sl->v || !sl->have || !sl->versions) {
        slot_free(sl);
        return -1;
    }
    sl->active = 1;
    sl->end = end;
    sl->version = version;
    sl->missing = s->cfg.n_shards;
    sl->started_ms = wire_now_ms();
    return 0;
}

/* The slot collecting `version` (or the end slot), opened if needed; NULL if the version is
 * older than every periodic one in flight. */
static ckpt_slot *slot_for(ps *s, uint64_t version, int end) {
    struct ps_ckpt *c = s->ckpt;
    if (end) {
        ckpt_slot *sl = &c->slot[2];
        if (!sl->active && slot_open(s, sl, version, 1) < 0) return NULL;
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
        ps_log(s, "checkpoint at step %" PRIu64 " dropped: %d shard state(s) never came",
               victim->version, victim->missing);
    }
    if (slot_open(s, victim, version, 0) < 0) return NULL;
    return victim;
}

static void job_settings_text(const job *j, char **out) {
    size_t len = 0;
    *out = NULL;
    FILE *f = open_memstream(out, &len);
    if (!f) return;
    job_print(j, f, "");
    fclose(f);
}

/* Writes a complete slot: the checkpoint folder (when consistent and new) and, at the end or on
 * a stop, the --out adapter. */
static void slot_write(ps *s, ckpt_slot *sl) {
    struct ps_ckpt *c = s->ckpt;
    lp_err err;
    int consistent = 1;
    for (int k = 0; k < s->cfg.n_shards; k++)
        if (sl->versions[k] != sl->version) consistent = 0;
    if (sl->end && (sl->final || sl->stop)) {
        if (ps_write_adapter(s, sl->params, &err) < 0)
            ps_log(s, "writing the adapter: %s", err.msg);
        else if (s->cfg.out_dir[0])
            ps_log(s, "wrote %s/adapter_model.safetensors (version %" PRIu64 ")", s->cfg.out_dir,
                   sl->version);
    }
    int due = s->cfg.out_dir[0] && sl->version > 0 && sl->version > s->resumed_version &&
              s->last_ckpt_version != sl->version + 1;
    if (due && !consistent) {
        ps_log(s,
               "no checkpoint on %s: the shards stopped at different versions (shard 0 at %" PRIu64
               "); `latest` stays on the previous checkpoint",
               sl->final ? "finishing" : "stopping", sl->version);
        due = 0;
    }
    if (due) {
        lora_adapter *a = ps_full_adapter();
        float *m = malloc((a->n_params ? a->n_params : 1) * sizeof(float));
        float *v = malloc((a->n_params ? a->n_params : 1) * sizeof(float));
        if (!m || !v) {
            ps_log(s, "checkpoint at step %" PRIu64 ": out of memory", sl->version);
        } else {
            /* spec layout -> the adapter's layout (tensor by tensor) */
            for (int i = 0; i < a->n_tensors; i++) {
                size_t n = a->tensors[i].numel, o = a->tensors[i].offset;
                memcpy(a->params + o, sl->params + c->spec_off[i], n * sizeof(float));
                memcpy(m + o, sl->m + c->spec_off[i], n * sizeof(float));
                memcpy(v + o, sl->v + c->spec_off[i], n * sizeof(float));
            }
            const job *j = &s->cfg.job;
            ckpt_info info;
            memset(&info, 0, sizeof info);
            info.step = sl->version;
            info.updates = sl->updates;
            info.total_updates = s->total_updates;
            info.base_fingerprint = s->fingerprint;
            info.job_id = s->job_id;
            info.seed = j->seed;
            info.sequences_per_step =
                (uint64_t)j->micro_batch * (uint64_t)j->grad_accum * (uint64_t)j->workers;
            info.n_shards = s->cfg.n_shards;
            info.data_id = s->data_id;
            snprintf(info.mode, sizeof info.mode, "%s", j->mode);
            snprintf(info.base_model, sizeof info.base_model, "%s", s->cfg.model_dir);
            info.n_ranks = j->workers;
            info.ranks = calloc((size_t)j->workers, sizeof *info.ranks);
            for (int r = 0; info.ranks && r < j->workers; r++) {
                /* sync: every rank computes step `version` next; async: its own next step */
                uint64_t next = s->cfg.sync ? sl->version : s->rank_next[r];
                info.ranks[r].next_step = next;
                info.ranks[r].next_sequence = ps_data_position(s, r, next);
            }
            job_settings_text(j, &info.job_settings);
            ckpt_write_opts o = {s->cfg.model_dir, ps_fan_in_fan_out(), j->keep_checkpoints};
            char where[PATH_MAX];
            if (!info.ranks)
                ps_log(s, "checkpoint at step %" PRIu64 ": out of memory", sl->version);
            else if (ckpt_write(s->cfg.out_dir, a, m, v, &info, &o, where, sizeof where, &err) < 0)
                ps_log(s, "checkpoint at step %" PRIu64 " failed: %s", sl->version, err.msg);
            else {
                s->last_ckpt_version = sl->version + 1;
                ps_log(s, "checkpoint %s (step %" PRIu64 ", %" PRIu64 " optimizer updates)", where,
                       sl->version, sl->updates);
            }
            free(info.ranks);
            free(info.job_settings);
        }
        free(m);
        free(v);
    }
    int was_end = sl->end && sl->final;
    slot_free(sl);
    if (was_end) c->final_done = 1;
}

/* Copies shard 0's own part into the slot. */
static void slot_take_own(ps *s, ckpt_slot *sl) {
    struct ps_ckpt *c = s->ckpt;
    ps_adapter *a = &s->adapter;
    for (int t = 0; t < a->n; t++) {
        size_t dst = c->spec_off[a->index[t]], n = a->numel[t], src = a->offset[t];
        memcpy(sl->params + dst, a->params + src, n * sizeof(float));
        memcpy(sl->m + dst, a->m + src, n * sizeof(float));
        memcpy(sl->v + dst, a->v + src, n * sizeof(float));
    }
}

static void slot_mark(ps *s, ckpt_slot *sl, int shard, uint64_t version, uint64_t updates,
                      int final, int stop) {
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
    if (sl->missing == 0) slot_write(s, sl);
}

void ps_checkpoint_begin(ps *s, int kind) {
    ps_adapter *a = &s->adapter;
    if (s->cfg.shard != 0) {
        /* Hand this shard's state to shard 0, which writes the one checkpoint folder. */
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__ShardState st = LORAPS__SHARD_STATE__INIT;
        hdr.job_id = s->job_id;
        hdr.body_case = LORAPS__HEADER__BODY_SHARD_STATE;
        hdr.shard_state = &st;
        st.shard = (uint32_t)s->cfg.shard;
        st.version = a->version;
        st.updates = a->updates;
        st.instance = s->instance;
        st.final = kind != PS_CKPT_PERIODIC;
        int n = a->n;
        wire_src *src = calloc((size_t)3 * (size_t)n + 1, sizeof *src);
        for (int t = 0; src && t < n; t++) {
            uint32_t ix = a->index[t];
            src[t] = (wire_src){ix, a->numel[t], a->params + a->offset[t]};
            src[n + t] = (wire_src){ix + (uint32_t)s->spec.n, a->numel[t], a->m + a->offset[t]};
            src[2 * n + t] =
                (wire_src){ix + 2u * (uint32_t)s->spec.n, a->numel[t], a->v + a->offset[t]};
        }
        /* copied, not zero-copy: the buffers change with the next update */
        wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                            .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32};
        lp_err err;
        if (!src || wire_send(s->peer[0], &hdr, src, 3 * n, &o, &s->net, &err) < 0)
            ps_log(s, "sending this shard's state (version %" PRIu64 ") to shard 0 failed",
                   a->version);
        free(src);
        return;
    }
    if (!ckpt_state(s)) {
        ps_log(s, "checkpoint: out of memory");
        return;
    }
    if (!s->cfg.out_dir[0]) { /* shard 0 writes nothing without --out */
        if (kind == PS_CKPT_FINAL) s->ckpt->final_done = 1;
        return;
    }
    ckpt_slot *sl = slot_for(s, a->version, kind != PS_CKPT_PERIODIC);
    if (!sl) {
        ps_log(s, "checkpoint at step %" PRIu64 " skipped (out of memory)", a->version);
        if (kind == PS_CKPT_FINAL) s->ckpt->final_done = 1;
        return;
    }
    slot_take_own(s, sl);
    slot_mark(s, sl, 0, a->version, a->updates, kind == PS_CKPT_FINAL, kind == PS_CKPT_STOP);
}

void ps_checkpoint_after_update(ps *s) {
    const job *j = &s->cfg.job;
    uint64_t V = s->adapter.version;
    ps_durable_after_update(s); /* --durable-every (ps_security.c) */
    /* the job's last version is checkpointed by the final collection */
    if (j->save_every <= 0 || V % (uint64_t)j->save_every || V >= s->total_updates ||
        V <= s->resumed_version)
        return;
    ps_checkpoint_begin(s, PS_CKPT_PERIODIC);
}

void ps_checkpoint_on_peer(ps *s, wire_msg *m) {
    const Loraps__ShardState *st = m->hdr->shard_state;
    if (s->cfg.shard != 0 || s->cfg.n_shards < 2) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "ShardState goes to shard 0 only");
        return;
    }
    if (st->shard == 0 || st->shard >= (uint32_t)s->cfg.n_shards) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED, "ShardState from shard %u", st->shard);
        return;
    }
    int from = (int)st->shard;
    /* Shards connect with the routing id "shard-<k>" (ps_main.c): a state must come from the
     * shard it claims to be. */
    char rid[32];
    int rl = snprintf(rid, sizeof rid, "shard-%d", from);
    if (m->routing_len != (size_t)rl || memcmp(m->routing, rid, (size_t)rl)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED,
                  "ShardState of shard %d from a connection that is not that shard", from);
        return;
    }
    if (!s->cfg.out_dir[0]) return; /* nothing is written without --out */
    uint32_t idx[3 * s->spec.n + 1];
    size_t numel[3 * s->spec.n + 1];
    int n = shard_map_tensors(&s->map, from, idx);
    for (int t = 0; t < n; t++) {
        numel[t] = numel[n + t] = numel[2 * n + t] = s->spec.numel[idx[t]];
        idx[n + t] = idx[t] + (uint32_t)s->spec.n;
        idx[2 * n + t] = idx[t] + 2u * (uint32_t)s->spec.n;
    }
    wire_expect e = {3 * n, idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
    Loraps__ErrorCode code;
    lp_err err;
    if (wire_check_frames(m, &e, &code, &err) < 0) {
        ps_reject(s, m, code, "state of shard %d: %s", from, err.msg);
        return;
    }
    if (!wire_frames_finite(m)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_NONFINITE, "state of shard %d: NaN or Inf", from);
        return;
    }
    if (!ckpt_state(s)) return;
    ckpt_slot *sl = slot_for(s, st->version, st->final);
    if (!sl) {
        ps_log(s, "state of shard %d at version %" PRIu64 " is older than any checkpoint due", from,
               st->version);
        return;
    }
    struct ps_ckpt *c = s->ckpt;
    float *dst[3 * s->spec.n + 1];
    for (int t = 0; t < n; t++) {
        size_t off = c->spec_off[idx[t]];
        dst[t] = sl->params + off;
        dst[n + t] = sl->m + off;
        dst[2 * n + t] = sl->v + off;
    }
    wire_frames_apply(m, &e, dst, 1.0f, 0);
    slot_mark(s, sl, from, st->version, st->updates, 0, 0);
}

int ps_checkpoint_final_done(ps *s) {
    if (!s->ckpt) return 0;
    if (s->ckpt->final_done) return 1;
    ckpt_slot *sl = &s->ckpt->slot[2];
    if (sl->active && wire_now_ms() - sl->started_ms > 60000) {
        ps_log(s, "gave up waiting for %d shard(s)' final state: no final adapter written",
               sl->missing);
        slot_free(sl);
        s->ckpt->final_done = 1;
    }
    return s->ckpt->final_done;
}

void ps_checkpoint_on_stop(ps *s) {
    if (s->phase == PS_DONE || (s->cfg.shard == 0 && !s->cfg.out_dir[0])) return;
    /* Finishing already: the final collection is under way; wait for it instead. */
    int finishing = s->phase == PS_FINISHING;
    if (!finishing) ps_checkpoint_begin(s, PS_CKPT_STOP);
    if (s->cfg.shard != 0 || s->cfg.n_shards < 2 || !s->ckpt) return;
    /* Wait (bounded) for the other shards' states; everything else is turned away. */
    int64_t until = wire_now_ms() + 10000;
    while (s->ckpt->slot[2].active && wire_now_ms() < until) {
        zmq_pollitem_t it = {s->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        for (int i = 0; i < 100; i++) {
            wire_msg m;
            Loraps__ErrorCode code;
            lp_err err;
            int r = wire_recv(s->router, 1, &m, &s->net, &code, &err);
            if (r == WIRE_OK && m.hdr->body_case == LORAPS__HEADER__BODY_SHARD_STATE)
                ps_handle(s, &m);
            else if (r == WIRE_OK && m.routing_len)
                wire_send_error(s->router, m.routing, m.routing_len, s->job_id,
                                LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN, "the server is stopping",
                                &s->net);
            wire_msg_close(&m);
            if (r != WIRE_OK) break;
        }
    }
    if (s->ckpt->slot[2].active) {
        ps_log(s, "stopping without the other shards' states (%d missing): no %s",
               s->ckpt->slot[2].missing, finishing ? "final adapter" : "checkpoint");
        slot_free(&s->ckpt->slot[2]);
    }
}

void ps_checkpoint_free(ps *s) {
    if (!s->ckpt) return;
    for (int i = 0; i < 3; i++) slot_free(&s->ckpt->slot[i]);
    free(s->ckpt->spec_off);
    free(s->ckpt);
    s->ckpt = NULL;
    free(s->data_step);
    free(s->data_seq);
    s->data_step = s->data_seq = NULL;
}

/* ---- resume --------------------------------------------------------------------------------- */

uint64_t ps_data_position(const ps *s, int rank, uint64_t step) {
    const job *j = &s->cfg.job;
    uint64_t per_rank = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum;
    uint64_t global = per_rank * (uint64_t)j->workers;
    if (!s->data_step) return step * global + (uint64_t)rank * per_rank;
    return s->data_seq[rank] + (step - s->data_step[rank]) * global;
}

static int data_init(ps *s, lp_err *err) {
    const job *j = &s->cfg.job;
    uint64_t per_rank = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum;
    s->data_step = calloc((size_t)j->workers, sizeof *s->data_step);
    s->data_seq = calloc((size_t)j->workers, sizeof *s->data_seq);
    if (!s->data_step || !s->data_seq) return lp_fail(err, "out of memory");
    for (int r = 0; r < j->workers; r++) s->data_seq[r] = (uint64_t)r * per_rank;
    return 0;
}

/* "key value" lines: the value of key, or NULL. */
static const char *setting(const char *text, const char *key, char *buf, size_t size) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *k = p;
        while (*k == ' ') k++;
        if (!strncmp(k, key, kl) && k[kl] == ' ') {
            const char *v = k + kl;
            while (*v == ' ') v++;
            size_t vl = (size_t)(p + len - v);
            if (vl >= size) vl = size - 1;
            memcpy(buf, v, vl);
            buf[vl] = 0;
            return buf;
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}

/* Warns about every job setting that differs from the checkpoint's: the resumed run then is not
 * the run the checkpoint came from (the LoRA shape itself was checked already). */
static void compare_settings(ps *s, const char *saved) {
    static const char *quiet_keys[] = {"save_every",   "keep_checkpoints",     "threads",
                                       "heartbeat_ms", "heartbeat_timeout_ms", "eval_every"};
    char *now = NULL;
    job_settings_text(&s->cfg.job, &now);
    int n_diff = 0;
    for (const char *p = now; p && *p;) {
        const char *eol = strchr(p, '\n');
        char key[64] = "";
        sscanf(p, "%63s", key);
        int quiet = 0;
        for (size_t i = 0; i < sizeof quiet_keys / sizeof quiet_keys[0]; i++)
            quiet |= !strcmp(key, quiet_keys[i]);
        char a[600], b[600];
        const char *x = setting(now, key, a, sizeof a), *y = setting(saved, key, b, sizeof b);
        if (!quiet && key[0] && x && (!y || strcmp(x, y))) {
            ps_log(s, "warning: %s is %s; the checkpoint's job had %s", key, x, y ? y : "(none)");
            n_diff++;
        }
        p = eol ? eol + 1 : NULL;
    }
    if (n_diff)
        ps_log(s,
               "warning: %d job setting(s) differ from the checkpoint's: training continues, "
               "but not exactly as the original job would have",
               n_diff);
    free(now);
}

int ps_resume(ps *s, lp_err *err) {
    if (data_init(s, err) < 0) return -1;
    if (!s->cfg.resume[0]) return 0;
    char dir[PATH_MAX];
    if (ckpt_resolve(s->cfg.resume, s->cfg.out_dir, dir, sizeof dir, err) < 0)
        return lp_wrap(err, "--resume");
    int n_mods;
    const lora_module *mods = ps_model_modules(&n_mods);
    ckpt_loaded ck;
    if (ckpt_load(dir, mods, n_mods, &ck, err) < 0) return lp_wrap(err, "--resume");
    int rc = 0;
    const lora_adapter *full = ps_full_adapter(), *got = &ck.adapter;
    /* The checkpoint's adapter must be the job's, tensor by tensor and scale by scale. */
    if (got->n_tensors != full->n_tensors)
        rc = lp_fail(err,
                     "--resume %s: the adapter has %d tensors, the job's LoRA settings give %d: "
                     "resume with the r, lora_alpha, target_modules and patterns of its "
                     "adapter_config.json",
                     dir, got->n_tensors, full->n_tensors);
    for (int i = 0; rc == 0 && i < full->n_tensors; i++) {
        const lora_tensor *x = &got->tensors[i], *y = &full->tensors[i];
        if (strcmp(x->name, y->name) || x->rows != y->rows || x->cols != y->cols)
            rc = lp_fail(err,
                         "--resume %s: tensor %d is %s [%lld,%lld], the job gives %s [%lld,%lld]: "
                         "resume with the LoRA settings of its adapter_config.json",
                         dir, i, x->name, (long long)x->rows, (long long)x->cols, y->name,
                         (long long)y->rows, (long long)y->cols);
    }
    for (int i = 0; rc == 0 && i < full->n_sites; i++)
        if (got->sites[i].scale != full->sites[i].scale)
            rc = lp_fail(err,
                         "--resume %s: module %s has LoRA scale %g there, %g in this job: set "
                         "lora_alpha (and use_rslora, alpha_pattern) as in its "
                         "adapter_config.json",
                         dir, mods[full->sites[i].module].name, got->sites[i].scale,
                         full->sites[i].scale);
    if (rc == 0 && ck.has_state) {
        if (ck.info.base_fingerprint != s->fingerprint)
            rc = lp_fail(err,
                         "--resume %s: trained on the base model with fingerprint %016" PRIx64
                         ", --model %s has %016" PRIx64,
                         dir, ck.info.base_fingerprint, s->cfg.model_dir, s->fingerprint);
        else if (ck.info.step >= s->total_updates)
            rc = lp_fail(err,
                         "--resume %s: the checkpoint is at step %" PRIu64
                         " and the job ends at %" PRIu64 ": nothing left to train (raise "
                         "max_steps)",
                         dir, ck.info.step, s->total_updates);
        else if (strcmp(ck.info.mode, s->cfg.job.mode))
            ps_log(s, "warning: the checkpoint was trained in %s mode, this job is %s",
                   ck.info.mode, s->cfg.job.mode);
    }
    if (rc < 0) {
        ckpt_loaded_free(&ck);
        return -1;
    }
    /* This shard's part. */
    ps_adapter *a = &s->adapter;
    for (int t = 0; t < a->n; t++) {
        const lora_tensor *lt = &got->tensors[a->index[t]];
        memcpy(a->params + a->offset[t], got->params + lt->offset, a->numel[t] * sizeof(float));
        if (ck.has_optimizer) {
            memcpy(a->m + a->offset[t], ck.m + lt->offset, a->numel[t] * sizeof(float));
            memcpy(a->v + a->offset[t], ck.v + lt->offset, a->numel[t] * sizeof(float));
        }
    }
    const job *j = &s->cfg.job;
    uint64_t per_rank = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum;
    uint64_t global = per_rank * (uint64_t)j->workers;
    uint64_t V = 0;
    if (ck.has_state) {
        V = ck.info.step;
        a->updates = ck.has_optimizer ? ck.info.updates : 0;
        s->resumed_version = V;
        compare_settings(s, ck.info.job_settings);
        /* the data must be the checkpoint's, or its positions mean other sequences */
        s->data_id = ck.info.data_id;
        s->data_id_rank = -1;
        int same_split = ck.info.n_ranks == j->workers && ck.info.sequences_per_step == global;
        if (!same_split)
            ps_log(s,
                   "warning: the data split changed (%d workers, %" PRIu64
                   " sequences a step in the checkpoint; %d and %" PRIu64
                   " now): the data continues after the sequences the checkpoint consumed",
                   ck.info.n_ranks, ck.info.sequences_per_step, j->workers, global);
        uint64_t consumed = ck.info.n_ranks > 0 ? ck.info.ranks[0].next_sequence : 0;
        for (int r = 0; r < j->workers; r++) {
            if (same_split) {
                s->data_step[r] = ck.info.ranks[r].next_step;
                s->data_seq[r] = ck.info.ranks[r].next_sequence;
            } else {
                s->data_step[r] = V;
                s->data_seq[r] = consumed + (uint64_t)r * per_rank;
            }
            s->rank_next[r] = s->cfg.sync ? V : s->data_step[r];
        }
        if (!ck.has_optimizer)
            ps_log(s, "warning: %s has no optimizer state: AdamW's moments start at zero", dir);
    } else {
        ps_log(s,
               "warning: %s is a PEFT adapter without trainer state: training starts at step 0 "
               "from its weights, with fresh AdamW moments",
               dir);
    }
    ps_log(s,
           "resumed from %s: step %" PRIu64 ", %" PRIu64 " optimizer updates%s; rank 0's data at "
           "sequence %" PRIu64,
           dir, V, a->updates, ck.has_optimizer ? "" : " (fresh moments)",
           ps_data_position(s, 0, s->rank_next[0]));
    ckpt_loaded_free(&ck);
    return ps_publish(s, V, err);
}
