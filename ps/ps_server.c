/* The step's life across the modules: pulls answered when their version is out, updates
 * published and checkpointed, the progress of each step, the start and the end of the job. */
#include "ps.h"

#include "fsutil.h"
#include "ps_log.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- pulls ---------------------------------------------------------------------------------- */

int ps_pull_ready(ps *s, const ps_pull *p) {
    if (s->phase >= PS_FINISHING) return 1;
    if (s->phase != PS_RUNNING) return 0;
    const ps_adapter *a = ps_adapters_find(&s->adapters, p->adapter_id);
    if (!a || a->version < p->version) return 0;
    if (ps_checkpoint_durable_hold(&s->ckpt)) return 0; /* not served before it is on disk */
    return ps_step_within_staleness(&s->step, &s->members, p->step);
}

void ps_answer_pull(ps *s, const ps_pull *p) {
    double t0 = wire_cpu_s();
    uint64_t sent = s->net.bytes.bytes_sent;
    lp_err err;
    int done = s->phase >= PS_FINISHING;
    if (!s->cfg.sync && p->step >= (uint64_t)s->cfg.job.max_steps) done = 1;
    /* a finished job answers every Pull with done, whatever adapter it names */
    ps_adapter *a = ps_adapters_find(&s->adapters, p->adapter_id);
    if (!a) a = ps_adapters_default(&s->adapters);
    if (ps_adapter_send_params(a, &s->net, p->routing, p->routing_len, done, &err) < 0)
        ps_log(s->cfg.shard, "sending Params to worker %llu: %s", (unsigned long long)p->worker_id,
               err.msg);
    else if (!done)
        s->step.pulls_served++;
    s->costs.pull_s += wire_cpu_s() - t0;
    s->costs.pulls++;
    s->costs.pull_bytes += s->net.bytes.bytes_sent - sent;
}

static int pull_ready_cb(void *ctx, const ps_pull *p) {
    return ps_pull_ready(ctx, p);
}

static void answer_pull_cb(void *ctx, const ps_pull *p) {
    ps_answer_pull(ctx, p);
}

static void answer_ready_pulls(ps *s) {
    ps_members_answer_pulls(&s->members, pull_ready_cb, answer_pull_cb, s);
}

static ps_pulls_key pulls_key(ps *s) {
    ps_pulls_key k = {(uint64_t)s->phase, (uint64_t)ps_checkpoint_durable_hold(&s->ckpt),
                      ps_step_min_clock(&s->step, &s->members), 0};
    for (int i = 0; i < s->adapters.n; i++) k.versions += s->adapters.entries[i].version;
    return k;
}

/* A waiting Pull becomes ready only when what it waits on changes: a look at them then, not
 * on every message. */
static void answer_pulls_if_changed(ps *s) {
    ps_pulls_key k = pulls_key(s);
    if (!memcmp(&k, &s->pulls_key, sizeof k)) return;
    s->pulls_key = k;
    answer_ready_pulls(s);
}

/* ---- membership ----------------------------------------------------------------------------- */

void ps_on_member_left(void *ctx, const ps_member *mem) {
    ps *s = ctx;
    ps_step_member_left(&s->step, mem, ps_adapters_default(&s->adapters)->version);
}

/* ---- updates -------------------------------------------------------------------------------- */

void ps_publish_update(ps *s, ps_adapter *a, double global_ss) {
    uint64_t V = a->version;
    lp_err err;
    if (ps_adapter_update(a, clip_factor(global_ss, s->cfg.job.max_grad_norm), V, V + 1, &err) < 0)
        ps_log(s->cfg.shard, "update of version %llu: %s", (unsigned long long)V, err.msg);
}

static void begin_finish(ps *s) {
    s->phase = PS_FINISHING;
    ps_log(s->cfg.shard, "finished at version %llu",
           (unsigned long long)ps_adapters_default(&s->adapters)->version);
    answer_ready_pulls(s);
    /* Every shard hands its state to shard 0, which writes the final checkpoint and adapter
     * (ps_checkpoint.c); shard 0 is done once they are written. */
    ps_checkpoint_begin(&s->ckpt, PS_CKPT_FINAL);
    if (s->cfg.shard != 0) s->phase = PS_DONE;
}

/* sync: the open step V is in and its global norm known: V+1 is published. */
static void complete_step(ps *s, ps_adapter *a, double global_ss) {
    ps_step *st = &s->step;
    uint64_t V = a->version;
    ps_publish_update(s, a, global_ss);
    ps_checkpoint_after_update(&s->ckpt);
    ps_progress_eval_close(&s->progress);
    double loss = st->tokens ? st->loss / (double)st->tokens : 0;
    ps_progress_step(&s->progress, &s->members, V, a->version, lr_at(&a->sched, (int)V), st->tokens,
                     loss, st->n_contrib ? st->compute_s / st->n_contrib : -1, sqrt(global_ss));
    ps_step_next(st, &s->members, a->version);
    ps_adapter_zero_grad(a);
    if (a->version >= s->cfg.total_updates) begin_finish(s);
}

static void sync_tick(ps *s) {
    ps_adapter *a = ps_adapters_default(&s->adapters);
    double global_ss;
    if (ps_step_sync_close(&s->step, a, &s->members, &s->net, &global_ss))
        complete_step(s, a, global_ss);
}

/* async ends when every rank has pushed its last step, or when the job has run and no member
 * is left (the others finished; a crashed one did not come back). */
static int async_over(ps *s) {
    uint64_t V = ps_adapters_default(&s->adapters)->version;
    return ps_step_all_ranks_done(&s->step) || V >= s->cfg.total_updates ||
           (V > 0 && ps_members_alive(&s->members) == 0);
}

static void start_when_all_joined(ps *s) {
    if (s->phase != PS_WAITING || s->members.ranks_joined < s->cfg.job.workers) return;
    s->phase = PS_RUNNING;
    ps_progress_begin(&s->progress, s->ckpt.resumed_version);
    ps_log(s->cfg.shard, "all %d workers joined; training", s->cfg.job.workers);
}

void ps_tick(ps *s) {
    start_when_all_joined(s);
    if (s->phase == PS_RUNNING && s->cfg.sync) sync_tick(s);
    if (s->phase == PS_RUNNING && !s->cfg.sync && async_over(s)) begin_finish(s);
    answer_pulls_if_changed(s);
    ps_step_measure_overhead(&s->step);
    if (s->phase == PS_FINISHING && s->cfg.shard == 0 && ps_checkpoint_final_done(&s->ckpt))
        s->phase = PS_DONE;
}

/* ---- reports -------------------------------------------------------------------------------- */

void ps_update_gauges(ps *s, int64_t now_ms) {
    if (!s->progress.http) return;
    ps_gauge_sample x = {
        .version = ps_adapters_default(&s->adapters)->version,
        .bytes_in = s->net.bytes.bytes_received,
        .bytes_out = s->net.bytes.bytes_sent,
        .workers_live = ps_members_alive(&s->members),
        .rejected = s->checks.rejected_total,
        .pushes = s->step.pushes_accepted,
        .duplicate = s->step.pushes_duplicate,
        .stale = s->step.pushes_stale,
        .joins = s->members.joins,
        .drops = s->members.drops,
        .phase = (int)s->phase,
        .ready = s->phase == PS_WAITING || s->phase == PS_RUNNING,
        .durable_writes = s->ckpt.durable_writes,
        .durable_failures = s->ckpt.durable_failures,
        .durable_ms_max = s->ckpt.durable_ms_max,
    };
    ps_security_stats_get(&s->security, &x.security);
    ps_progress_metrics_update(&s->progress, &x, now_ms);
}

/* Where the server's time went: the cost model's inputs (bench_ps). */
static json_t *costs_json(ps *s) {
    const ps_costs *c = &s->costs;
    const ps_adapter *a = ps_adapters_default(&s->adapters);
    json_t *o = json_object();
    json_object_set_new(o, "recv_s", json_real(c->recv_s));
    json_object_set_new(o, "recv_msgs", json_integer((json_int_t)c->recv_msgs));
    json_object_set_new(o, "push_s", json_real(c->push_s));
    json_object_set_new(o, "pushes", json_integer((json_int_t)c->pushes));
    json_object_set_new(o, "push_bytes", json_integer((json_int_t)c->push_bytes));
    json_object_set_new(o, "check_s", json_real(c->check_s));
    json_object_set_new(o, "sum_s", json_real(a->agg.seconds));
    json_object_set_new(o, "sum_bytes", json_integer((json_int_t)a->agg.bytes));
    json_object_set_new(o, "pull_s", json_real(c->pull_s));
    json_object_set_new(o, "pulls", json_integer((json_int_t)c->pulls));
    json_object_set_new(o, "pull_bytes", json_integer((json_int_t)c->pull_bytes));
    json_object_set_new(o, "other_s", json_real(c->other_s));
    json_object_set_new(o, "others", json_integer((json_int_t)c->others));
    json_object_set_new(o, "close_s", json_real(a->close_s));
    json_object_set_new(o, "update_s", json_real(a->update_s));
    json_object_set_new(o, "updates", json_integer((json_int_t)a->updates));
    json_object_set_new(o, "shard_params", json_integer((json_int_t)a->n_params));
    return o;
}

static json_t *stats_json(ps *s) {
    const ps_step *st = &s->step;
    json_t *o = json_object();
    json_object_set_new(o, "shard", json_integer(s->cfg.shard));
    json_object_set_new(o, "version",
                        json_integer((json_int_t)ps_adapters_default(&s->adapters)->version));
    json_object_set_new(o, "pushes_accepted", json_integer((json_int_t)st->pushes_accepted));
    json_object_set_new(o, "pushes_duplicate", json_integer((json_int_t)st->pushes_duplicate));
    json_object_set_new(o, "pushes_stale", json_integer((json_int_t)st->pushes_stale));
    json_object_set_new(o, "pulls_served", json_integer((json_int_t)st->pulls_served));
    json_object_set_new(o, "pulls_held_staleness",
                        json_integer((json_int_t)st->pulls_held_staleness));
    json_object_set_new(o, "max_spread", json_integer((json_int_t)st->max_spread));
    json_object_set_new(
        o, "step_overhead_ms_mean",
        json_real(st->overhead_n ? st->overhead_ms_sum / (double)st->overhead_n : 0));
    json_object_set_new(o, "step_overhead_ms_max", json_real(st->overhead_ms_max));
    json_object_set_new(
        o, "step_overhead_cpu_ms_mean",
        json_real(st->overhead_n ? st->overhead_cpu_ms_sum / (double)st->overhead_n : 0));
    json_object_set_new(o, "joins", json_integer((json_int_t)s->members.joins));
    json_object_set_new(o, "drops", json_integer((json_int_t)s->members.drops));
    json_object_set_new(o, "rejected", json_integer((json_int_t)s->checks.rejected_total));
    json_t *by = json_object();
    for (int c = 1; c < 32; c++)
        if (s->checks.rejected[c])
            json_object_set_new(by, wire_error_name((Loraps__ErrorCode)c),
                                json_integer((json_int_t)s->checks.rejected[c]));
    json_object_set_new(o, "rejected_by_code", by);
    json_object_set_new(o, "pieces", json_integer((json_int_t)st->pieces));
    json_object_set_new(o, "pushes_incomplete", json_integer((json_int_t)st->pushes_incomplete));
    json_object_set_new(o, "costs", costs_json(s));
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)s->net.bytes.bytes_sent));
    json_object_set_new(o, "bytes_received", json_integer((json_int_t)s->net.bytes.bytes_received));
    return o;
}

int ps_write_stats(ps *s, lp_err *err) {
    if (!s->cfg.out_dir[0]) return 0;
    if (fs_mkdirs(s->cfg.out_dir, err) < 0) return -1;
    json_t *o = stats_json(s);
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/ps_stats_%d.json", s->cfg.out_dir, s->cfg.shard);
    int rc = fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

void ps_exit_log(ps *s) {
    ps_security_exit_log(&s->security);
    ps_checkpoint_exit_log(&s->ckpt);
    const ps_step *st = &s->step;
    ps_log(s->cfg.shard,
           "exit: version %llu, pushes %llu accepted %llu duplicate %llu stale, %llu rejected, "
           "%llu dropped, sent %llu B, received %llu B",
           (unsigned long long)ps_adapters_default(&s->adapters)->version,
           (unsigned long long)st->pushes_accepted, (unsigned long long)st->pushes_duplicate,
           (unsigned long long)st->pushes_stale, (unsigned long long)s->checks.rejected_total,
           (unsigned long long)s->members.drops, (unsigned long long)s->net.bytes.bytes_sent,
           (unsigned long long)s->net.bytes.bytes_received);
}
