/* The worker's training loop and its statistics. */
#include "worker_loop.h"
#include "worker.h"
#include "worker_grads.h"
#include "worker_log.h"
#include "worker_net.h"
#include "worker_signal.h"

#include "train_step.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int is_sync(const worker *w) {
    return !strcmp(w->job.mode, "sync");
}

/* Joins every shard; the first step is the latest any of them is at. */
static int join_all(worker *w, uint64_t *first_step, lp_err *err) {
    uint64_t start = 0;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        uint64_t st;
        int rc = worker_join(w, k, &st, err);
        if (rc != WN_OK) return rc;
        if (st > start) start = st;
    }
    *first_step = start;
    return WN_OK;
}

/* The mean gradient of this rank's part of global batch `step`: its grad_accum * micro_batch
 * sequences, from the first one the data position says. */
static int compute(worker *w, uint64_t step, train_result *r, lp_err *err) {
    const job *j = &w->job;
    uint64_t per_rank = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum;
    uint64_t global = per_rank * (uint64_t)j->workers;
    uint64_t first = step * global + (uint64_t)w->cfg.rank * per_rank + (uint64_t)w->data_offset;
    if (worker_data_batch(w->data, first, (int)per_rank, j->seq_len, w->inputs, w->targets, err) <
        0)
        return -1;
    train_batch batch = {.inputs = w->inputs,
                         .targets = w->targets,
                         .n_micro = j->grad_accum,
                         .first_seq = first,
                         .seed = j->seed};
    if (train_step(w->trainer, &w->adapter, &batch, r, err) < 0)
        return lp_wrap(err, "step %llu", (unsigned long long)step);
    return 0;
}

static void record_step_bytes(worker *w, uint64_t bytes) {
    if (w->n_step_bytes == w->cap_step_bytes) {
        int cap = w->cap_step_bytes ? 2 * w->cap_step_bytes : 64;
        uint64_t *p = realloc(w->step_bytes, (size_t)cap * sizeof *p);
        if (!p) return;
        w->step_bytes = p;
        w->cap_step_bytes = cap;
    }
    w->step_bytes[w->n_step_bytes++] = bytes;
}

/* The versions the shards sent: *done if any says the job is over. */
static void pulled_versions(const worker *w, uint64_t *vmin, uint64_t *vmax, int *done) {
    *vmin = UINT64_MAX, *vmax = 0, *done = 0;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        *done |= w->shards[k].done;
        if (w->shards[k].version > *vmax) *vmax = w->shards[k].version;
        if (w->shards[k].version < *vmin) *vmin = w->shards[k].version;
    }
}

/* one_step's result besides the WN_* codes: a shard is ahead, start the step over at its version */
enum { STEP_AGAIN = 100 };

/* One step in progress: what the loop passes between its parts. */
typedef struct step_state {
    uint64_t step, base_version;
    uint64_t bytes_before;
    double started;
    val_result eval;
    int has_eval;
    train_result r;
} step_state;

/* Pulls the adapter for the step. WN_OK: compute it; STEP_AGAIN: a shard is ahead (st->step is
 * now its version); WN_REJOIN / WN_DONE / WN_STOP / WN_FATAL. */
static int pull(worker *w, step_state *st, lp_err *err) {
    int sync = is_sync(w);
    int rc = worker_pull_all(w, sync ? st->step : 0, st->step, err);
    if (rc != WN_OK) return rc;
    uint64_t vmin, vmax;
    int done;
    pulled_versions(w, &vmin, &vmax, &done);
    if (done) return WN_DONE;
    st->base_version = vmin;
    if (!sync) return WN_OK;
    int behind = vmin != vmax; /* a shard is ahead: catch up with all of them */
    st->step = vmax;
    if (behind) return STEP_AGAIN;
    return st->step >= (uint64_t)w->job.max_steps ? WN_DONE : WN_OK;
}

/* Validation at the adapter this step starts from, before its gradient, when one is due. */
static int validate_if_due(worker *w, step_state *st, lp_err *err) {
    const job *j = &w->job;
    st->has_eval = j->eval_every > 0 && st->step % (uint64_t)j->eval_every == 0;
    if (!st->has_eval) return 0;
    return worker_data_validate(w->data, w->trainer, j->micro_batch, j->seq_len, w->cfg.rank,
                                j->workers, w->inputs, w->targets, &st->eval, err);
}

static void straggle(const worker *w) {
    if (!w->cfg.step_delay_ms) return;
    struct timespec d = {w->cfg.step_delay_ms / 1000,
                         (long)(w->cfg.step_delay_ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
}

static int push(worker *w, const step_state *st, lp_err *err) {
    worker_push p = {st->step,
                     st->base_version,
                     st->r.n_tokens,
                     st->r.loss_sum,
                     st->r.grad_sum_sq,
                     st->r.seconds,
                     st->has_eval ? &st->eval : NULL};
    return worker_push_all(w, &p, err);
}

static void report_step(worker *w, const step_state *st) {
    uint64_t bytes = w->net.bytes_sent + w->net.bytes_received - st->bytes_before;
    uint64_t tokens = st->r.n_tokens;
    record_step_bytes(w, bytes);
    w->steps_done++;
    worker_metrics_step(w, st->step, st->r.loss_sum, tokens, bytes, now_s() - st->started);
    if (w->cfg.quiet) return;
    worker_log(w, "step %llu loss %.4f tokens %llu compute %.1f ms bytes %llu%s%s",
               (unsigned long long)st->step, st->r.loss_sum / (double)tokens,
               (unsigned long long)tokens, st->r.seconds * 1000, (unsigned long long)bytes,
               st->has_eval ? " (with its share of the validation pass)" : "",
               w->shards[0].ack_status == LORAPS__ACK_STATUS__ACK_ACCEPTED ? "" : " (dropped)");
}

/* One step: pull, validate if due, compute, push. The result as the exchanges give it. The
 * gradient buffer is rewritten only once libzmq has let go of the last push's frames. */
static int one_step(worker *w, step_state *st, lp_err *err) {
    st->bytes_before = w->net.bytes_sent + w->net.bytes_received;
    st->started = now_s();
    int rc = pull(w, st, err);
    if (rc == WN_OK) rc = worker_grads_release(w, err);
    if (rc != WN_OK) return rc;
    if (validate_if_due(w, st, err) < 0 || compute(w, st->step, &st->r, err) < 0) return WN_FATAL;
    w->compute_s += st->r.seconds;
    straggle(w);
    if ((rc = push(w, st, err)) != WN_OK) return rc;
    report_step(w, st);
    st->step++;
    return WN_OK;
}

static int steps(worker *w, uint64_t first_step, lp_err *err) {
    step_state st = {.step = first_step};
    int rc = WN_OK;
    while (!worker_stop_signal()) {
        if (!is_sync(w) && st.step >= (uint64_t)w->job.max_steps) break;
        rc = one_step(w, &st, err);
        if (rc == WN_REJOIN) rc = worker_rejoin_lost(w, &st.step, err);
        if (rc != WN_OK && rc != STEP_AGAIN) break;
    }
    return rc == WN_FATAL ? -1 : 0;
}

int worker_train(worker *w, lp_err *err) {
    uint64_t first_step;
    int rc = join_all(w, &first_step, err);
    if (rc != WN_OK) return rc == WN_FATAL ? -1 : 0;
    if (worker_heartbeat_start(w, err) < 0) return -1;
    worker_log(w, "joined %d server shard(s); first step %llu", w->cfg.n_servers,
               (unsigned long long)first_step);
    worker_metrics_joined(w);
    double t0 = now_s();
    rc = steps(w, first_step, err);
    w->wall_s = now_s() - t0;
    return rc;
}

int worker_write_stats(const worker *w, lp_err *err) {
    if (!w->cfg.stats_path[0]) return 0;
    json_t *o = json_object();
    json_object_set_new(o, "rank", json_integer(w->cfg.rank));
    json_object_set_new(o, "steps", json_integer((json_int_t)w->steps_done));
    json_object_set_new(o, "adapter_params", json_integer((json_int_t)w->adapter.n_params));
    json_object_set_new(o, "adapter_bytes_f32", json_integer((json_int_t)w->adapter.n_params * 4));
    json_object_set_new(o, "wire_dtype", json_string(wire_dtype_name(w->wire_dtype)));
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)w->net.bytes_sent));
    json_object_set_new(o, "bytes_received", json_integer((json_int_t)w->net.bytes_received));
    json_object_set_new(o, "heartbeat_bytes", json_integer((json_int_t)atomic_load(&w->hb.bytes)));
    json_object_set_new(o, "compute_seconds", json_real(w->compute_s));
    json_object_set_new(o, "wall_seconds", json_real(w->wall_s));
    json_t *per = json_array();
    for (int i = 0; i < w->n_step_bytes; i++)
        json_array_append_new(per, json_integer((json_int_t)w->step_bytes[i]));
    json_object_set_new(o, "step_bytes", per);
    int rc = json_dump_file(o, w->cfg.stats_path, JSON_INDENT(2));
    json_decref(o);
    return rc < 0 ? lp_fail(err, "cannot write %s", w->cfg.stats_path) : 0;
}
