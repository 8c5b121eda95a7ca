/* The consistency modes and the message handlers that drive them.
 *
 * sync (BSP): step V is open until every live member has pushed its gradient for V; the shard
 * then forms the token-weighted mean sum(n_i g_i) / sum(n_i), clips it by the GLOBAL norm, runs
 * AdamW and publishes V+1. With several shards the global norm needs every shard's part: each
 * shard sends its sum of squares to the others (NormShare) and all of them add the S parts in
 * shard order, so every shard computes the same clip factor bit for bit.
 *
 * async (ASP): every accepted push is one update and one new version. A push's global norm is
 * known to the worker that computed it (it has the whole gradient), so it travels in the push.
 * Bounded staleness (staleness k > 0): a Pull for step s waits until the slowest live worker
 * has pushed step s - k. */
#include "ps.h"

#include "jobspec.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void send_ack(ps *s, const wire_msg *m, uint64_t step, Loraps__AckStatus status) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Ack ack = LORAPS__ACK__INIT;
    hdr.job_id = s->job_id;
    hdr.body_case = LORAPS__HEADER__BODY_ACK;
    hdr.ack = &ack;
    ack.step = step;
    ack.status = status;
    ack.version = s->adapter.version;
    wire_send_header(s->router, m->routing, m->routing_len, &hdr, &s->net, NULL);
}

static uint64_t min_clock(const ps *s) {
    uint64_t min = UINT64_MAX;
    for (int i = 0; i < s->n_members; i++)
        if (s->members[i].alive && s->rank_next[s->members[i].rank] < min)
            min = s->rank_next[s->members[i].rank];
    return min;
}

static void eval_close(ps *s);

/* ---- Hello ---------------------------------------------------------------------------------- */

static void handle_hello(ps *s, wire_msg *m) {
    const Loraps__Hello *h = m->hdr->hello;
    if (s->phase >= PS_FINISHING) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN, "the job has finished");
        return;
    }
    if (h->fingerprint != s->fingerprint) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_FINGERPRINT,
                  "base model fingerprint %016llx is not the job's %016llx: load the job's model",
                  (unsigned long long)h->fingerprint, (unsigned long long)s->fingerprint);
        return;
    }
    if (h->rank >= (uint32_t)s->cfg.job.workers) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_BAD_RANK, "rank %u outside [0, %d)", h->rank,
                  s->cfg.job.workers);
        return;
    }
    if (!ps_security_admit(s, (int)h->rank)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE,
                  "server full: %d live workers (--max-workers)", ps_members_alive(s));
        return;
    }
    ps_member *mem = ps_member_join(s, (int)h->rank, h->host, h->pid);
    if (!mem) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "out of memory for members");
        return;
    }
    uint64_t V = s->adapter.version;
    uint64_t start = s->rank_next[h->rank];
    if (s->cfg.sync) {
        uint64_t open = V + (s->closing ? 1 : 0);
        if (start < open) start = open;
    }

    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Welcome w = LORAPS__WELCOME__INIT;
    Loraps__JobSpec js;
    jobspec_from_job(&s->cfg.job, &js);

    int n = s->spec.n;
    Loraps__TensorSpec *specs = calloc((size_t)n, sizeof *specs);
    Loraps__TensorSpec **sp = calloc((size_t)n, sizeof *sp);
    if (!specs || !sp) {
        free(specs);
        free(sp);
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "out of memory for Welcome");
        return;
    }
    for (int i = 0; i < n; i++) {
        loraps__tensor_spec__init(&specs[i]);
        specs[i].name = s->spec.names[i];
        specs[i].rows = s->spec.rows[i];
        specs[i].cols = s->spec.cols[i];
        sp[i] = &specs[i];
    }
    hdr.job_id = s->job_id;
    hdr.body_case = LORAPS__HEADER__BODY_WELCOME;
    hdr.welcome = &w;
    w.worker_id = mem->id;
    w.instance = s->instance;
    w.fingerprint = s->fingerprint;
    w.shard = (uint32_t)s->cfg.shard;
    w.n_shards = (uint32_t)s->cfg.n_shards;
    w.n_spec = (size_t)n;
    w.spec = sp;
    w.n_placement = (size_t)n;
    w.placement = s->map.shard_of;
    w.job = &js;
    w.version = V;
    w.start_step = start;
    w.data_position = ps_data_position(s, (int)h->rank, start);
    wire_send_header(s->router, m->routing, m->routing_len, &hdr, &s->net, NULL);
    free(specs);
    free(sp);
    ps_log(s, "worker %llu joined (rank %u, %s pid %u) at version %llu, first step %llu; %d alive",
           (unsigned long long)mem->id, h->rank, h->host, h->pid, (unsigned long long)V,
           (unsigned long long)start, ps_members_alive(s));
}

/* ---- Pull ----------------------------------------------------------------------------------- */

static int pull_ready(ps *s, const ps_pull *p) {
    if (s->phase >= PS_FINISHING) return 1;
    if (s->phase != PS_RUNNING) return 0;
    if (s->adapter.version < p->version) return 0;
    if (ps_durable_hold(s)) return 0; /* --durable-every: not served before it is on disk */
    if (!s->cfg.sync && s->cfg.job.staleness > 0) {
        uint64_t mc = min_clock(s);
        if (mc != UINT64_MAX && p->step > mc + (uint64_t)s->cfg.job.staleness) return 0;
    }
    return 1;
}

static void answer_pull(ps *s, const ps_pull *p) {
    lp_err err;
    int done = s->phase >= PS_FINISHING;
    if (!s->cfg.sync && p->step >= (uint64_t)s->cfg.job.max_steps) done = 1;
    if (ps_send_params(s, p->routing, p->routing_len, done, &err) < 0)
        ps_log(s, "sending Params to worker %llu: %s", (unsigned long long)p->worker_id, err.msg);
}

static void answer_ready_pulls(ps *s) {
    int k = 0;
    for (int i = 0; i < s->n_pulls; i++) {
        if (pull_ready(s, &s->pulls[i]))
            answer_pull(s, &s->pulls[i]);
        else
            s->pulls[k++] = s->pulls[i];
    }
    s->n_pulls = k;
}

static void handle_pull(ps *s, wire_msg *m, ps_member *mem) {
    const Loraps__Pull *p = m->hdr->pull;
    if (!ps_adapter_find(s, p->adapter_id)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "adapter %u is not in this job",
                  p->adapter_id);
        return;
    }
    if (s->cfg.sync && p->version > s->adapter.version + 1) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_STEP, "version %llu asked; the current is %llu",
                  (unsigned long long)p->version, (unsigned long long)s->adapter.version);
        return;
    }
    mem->pull_version = p->version;
    ps_pull pl;
    memcpy(pl.routing, m->routing, m->routing_len);
    pl.routing_len = m->routing_len;
    pl.worker_id = mem->id;
    pl.version = p->version;
    pl.step = p->step;
    if (pull_ready(s, &pl)) {
        answer_pull(s, &pl);
        return;
    }
    if (s->phase == PS_RUNNING && !s->cfg.sync) s->count.pulls_held_staleness++;
    /* A resent Pull replaces the waiting one: one answer per worker. */
    for (int i = 0; i < s->n_pulls; i++)
        if (s->pulls[i].worker_id == mem->id) {
            s->pulls[i] = pl;
            return;
        }
    if (s->n_pulls == s->cap_pulls) {
        int cap = s->cap_pulls ? 2 * s->cap_pulls : 16;
        ps_pull *np = realloc(s->pulls, (size_t)cap * sizeof *np);
        if (!np) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "out of memory for pulls");
            return;
        }
        s->pulls = np;
        s->cap_pulls = cap;
    }
    s->pulls[s->n_pulls++] = pl;
}

/* ---- progress ------------------------------------------------------------------------------- */

static void human_bytes(char *buf, size_t n, uint64_t b) {
    if (b >= (1ull << 30))
        snprintf(buf, n, "%.2fG", b / 1073741824.0);
    else if (b >= (1ull << 20))
        snprintf(buf, n, "%.1fM", b / 1048576.0);
    else if (b >= 1024)
        snprintf(buf, n, "%.1fK", b / 1024.0);
    else
        snprintf(buf, n, "%lluB", (unsigned long long)b);
}

static void progress(ps *s, uint64_t step, uint64_t tokens, double loss, double compute_s) {
    int64_t now = wire_now_ms();
    double step_ms = (double)(now - s->last_step_ms);
    s->last_step_ms = now;
    s->tokens_total += tokens;
    s->last_loss = loss;
    if (s->cfg.shard == 0 && s->metrics) {
        json_t *o = json_object();
        json_object_set_new(o, "step", json_integer((json_int_t)step + 1));
        json_object_set_new(o, "version", json_integer((json_int_t)s->adapter.version));
        json_object_set_new(o, "loss", json_real(loss));
        json_object_set_new(o, "tokens", json_integer((json_int_t)tokens));
        json_object_set_new(o, "step_ms", json_real(step_ms));
        json_object_set_new(o, "lr", json_real(lr_at(&s->sched, (int)step)));
        if (compute_s >= 0) json_object_set_new(o, "compute_s", json_real(compute_s));
        json_object_set_new(o, "workers", json_integer(ps_members_alive(s)));
        json_t *w = json_object();
        for (int i = 0; i < s->n_members; i++) {
            const ps_member *mb = &s->members[i];
            if (!mb->alive) continue;
            char key[16];
            snprintf(key, sizeof key, "%d", mb->rank);
            json_t *b = json_object();
            json_object_set_new(b, "sent", json_integer((json_int_t)mb->bytes_sent));
            json_object_set_new(b, "received", json_integer((json_int_t)mb->bytes_received));
            json_object_set_new(w, key, b);
        }
        json_object_set_new(o, "bytes", w);
        if (s->val_pending) {
            json_object_set_new(o, "val_loss", json_real(s->val_loss));
            json_object_set_new(o, "val_ppl", json_real(exp(s->val_loss)));
            json_object_set_new(o, "val_tokens", json_integer((json_int_t)s->val_tokens));
            json_object_set_new(o, "val_step", json_integer((json_int_t)s->val_step));
        }
        json_dumpf(o, s->metrics, JSON_COMPACT);
        fputc('\n', s->metrics);
        fflush(s->metrics);
        json_decref(o);
    }
    int val = s->val_pending;
    s->val_pending = 0;
    if (s->cfg.shard != 0 || s->cfg.quiet) return;
    double elapsed = (now - s->start_ms) / 1000.0;
    uint64_t done = s->adapter.version, total = s->total_updates;
    /* a resumed job's rate counts only the steps of this run */
    uint64_t run = done > s->resumed_version ? done - s->resumed_version : 0;
    double eta = run ? elapsed / (double)run * (double)(total - done) : 0;
    char line[4096];
    int n = snprintf(line, sizeof line, "step %llu/%llu  loss %.4f  %.0f tok/s  %.0f ms",
                     (unsigned long long)(step + 1), (unsigned long long)total, loss,
                     step_ms > 0 ? tokens / (step_ms / 1000.0) : 0.0, step_ms);
    if (compute_s >= 0 && step_ms > 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " (compute %.0f%%)",
                      100.0 * compute_s / (step_ms / 1000.0));
    if (val)
        n += snprintf(line + n, sizeof line - (size_t)n, "  val_loss %.4f ppl %.2f (at step %llu)",
                      s->val_loss, exp(s->val_loss), (unsigned long long)s->val_step);
    for (int i = 0; i < s->n_members && n < (int)sizeof line - 64; i++) {
        const ps_member *mb = &s->members[i];
        if (!mb->alive) continue;
        char a[32], b[32];
        human_bytes(a, sizeof a, mb->bytes_sent);
        human_bytes(b, sizeof b, mb->bytes_received);
        n += snprintf(line + n, sizeof line - (size_t)n, "  w%d %s/%s", mb->rank, a, b);
    }
    snprintf(line + n, sizeof line - (size_t)n, "  eta %dm%02ds", (int)eta / 60, (int)eta % 60);
    printf("%s\n", line);
    fflush(stdout);
}

/* ---- finishing ------------------------------------------------------------------------------ */

static void begin_finish(ps *s) {
    s->phase = PS_FINISHING;
    ps_log(s, "finished at version %llu", (unsigned long long)s->adapter.version);
    answer_ready_pulls(s);
    /* Every shard hands its state to shard 0, which writes the final checkpoint and adapter
     * (ps_checkpoint.c); shard 0 is done once they are written. */
    ps_checkpoint_begin(s, PS_CKPT_FINAL);
    if (s->cfg.shard != 0) s->phase = PS_DONE;
}

/* ---- sync steps ----------------------------------------------------------------------------- */

void ps_reset_step(ps *s) {
    memset(s->adapter.grad_sum, 0, s->adapter.n_params * sizeof(float));
    memset(s->contributed, 0, (size_t)s->cfg.job.workers);
    s->n_contrib = 0;
    s->step_tokens = 0;
    s->step_loss = 0;
    s->closing = 0;
    s->local_ss = 0;
}

static double g_step_compute;

static void complete_step(ps *s, double global_ss) {
    uint64_t V = s->adapter.version;
    float clip = clip_factor(global_ss, s->cfg.job.max_grad_norm);
    ps_apply_update(s, clip, V);
    lp_err err;
    if (ps_publish(s, V + 1, &err) < 0) ps_log(s, "publishing: %s", err.msg);
    ps_checkpoint_after_update(s);
    eval_close(s);
    double loss = s->step_tokens ? s->step_loss / (double)s->step_tokens : 0;
    progress(s, V, s->step_tokens, loss, s->n_contrib ? g_step_compute / s->n_contrib : -1);
    g_step_compute = 0;
    ps_reset_step(s);
    s->overhead_pending = 1;
    if (s->adapter.version >= s->total_updates) begin_finish(s);
}

static void send_norm_share(ps *s) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__NormShare ns = LORAPS__NORM_SHARE__INIT;
    hdr.job_id = s->job_id;
    hdr.body_case = LORAPS__HEADER__BODY_NORM_SHARE;
    hdr.norm_share = &ns;
    ns.shard = (uint32_t)s->cfg.shard;
    ns.step = s->adapter.version;
    ns.sum_sq = s->local_ss;
    ns.instance = s->instance;
    for (int k = 0; k < s->cfg.n_shards; k++)
        if (s->peer[k]) wire_send_header(s->peer[k], NULL, 0, &hdr, &s->net, NULL);
}

static void sync_tick(ps *s) {
    ps_adapter *a = &s->adapter;
    if (!s->closing && s->n_contrib > 0) {
        for (int i = 0; i < s->n_members; i++) {
            const ps_member *mb = &s->members[i];
            if (mb->alive && !s->contributed[mb->rank] && mb->pull_version <= a->version) return;
        }
        float inv = 1.0f / (float)s->step_tokens;
        for (size_t i = 0; i < a->n_params; i++) a->grad_sum[i] *= inv;
        s->local_ss = sum_of_squares(a->grad_sum, a->n_params);
        if (s->cfg.n_shards > 1 && s->cfg.job.max_grad_norm > 0) {
            s->closing = 1;
            send_norm_share(s);
        } else {
            complete_step(s, s->local_ss);
            return;
        }
    }
    if (s->closing) {
        double total = 0;
        for (int k = 0; k < s->cfg.n_shards; k++) {
            if (k == s->cfg.shard) {
                total += s->local_ss;
                continue;
            }
            if (s->peer_step[k] != a->version + 1) return;
            total += s->peer_ss[k];
        }
        complete_step(s, total);
    }
}

static void handle_norm_share(ps *s, wire_msg *m) {
    const Loraps__NormShare *ns = m->hdr->norm_share;
    if (ns->shard >= (uint32_t)s->cfg.n_shards || ns->shard == (uint32_t)s->cfg.shard) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED, "NormShare from shard %u", ns->shard);
        return;
    }
    if (!isfinite(ns->sum_sq) || ns->sum_sq < 0) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_NONFINITE, "NormShare sum of squares %g",
                  ns->sum_sq);
        return;
    }
    if (ns->step + 1 < s->adapter.version + 1 || ns->step > s->adapter.version) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_STEP, "NormShare for step %llu at version %llu",
                  (unsigned long long)ns->step, (unsigned long long)s->adapter.version);
        return;
    }
    s->peer_step[ns->shard] = ns->step + 1;
    s->peer_ss[ns->shard] = ns->sum_sq;
}

/* ---- validation ----------------------------------------------------------------------------- */

/* The pass at `step` is complete: it waits for the next progress line. */
static void eval_close(ps *s) {
    if (!s->eval_at) return;
    s->val_step = s->eval_at - 1;
    s->val_tokens = s->eval_tokens;
    s->val_loss = s->eval_tokens ? s->eval_loss / (double)s->eval_tokens : 0;
    s->val_known = s->val_pending = s->eval_tokens > 0;
    if (!s->eval_tokens)
        ps_log(s, "validation at step %llu counted no tokens (no validation data?)",
               (unsigned long long)s->val_step);
    s->eval_at = 0;
    s->eval_tokens = s->eval_seqs = 0;
    s->eval_loss = 0;
    s->eval_n = 0;
}

/* One accepted push's share of the pass at `step`. Sync: the step's pushes are its shares, and
 * complete_step closes it. Async: ranks push `step` at different times; the pass closes when
 * every rank's share is in (or a later pass starts). */
static void eval_add(ps *s, uint64_t step, const Loraps__EvalResult *ev) {
    if (s->eval_at && s->eval_at != step + 1) eval_close(s);
    s->eval_at = step + 1;
    s->eval_tokens += ev->n_tokens;
    s->eval_seqs += ev->n_sequences;
    s->eval_loss += ev->loss_sum;
    s->eval_n++;
    if (!s->cfg.sync && s->eval_n >= s->cfg.job.workers) eval_close(s);
}

/* ---- Push ----------------------------------------------------------------------------------- */

static void handle_push(ps *s, wire_msg *m, ps_member *mem) {
    const Loraps__Push *p = m->hdr->push;
    const job *j = &s->cfg.job;
    int r = mem->rank;
    uint64_t V = s->adapter.version;
    if (!ps_adapter_find(s, p->adapter_id)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "adapter %u is not in this job",
                  p->adapter_id);
        return;
    }
    if (p->kind != LORAPS__UPDATE_KIND__UPDATE_GRADIENT) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED,
                  "update kind %d: this server applies gradients only", p->kind);
        return;
    }
    if (s->phase == PS_WAITING) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_STEP,
                  "the job has not started: %d of %d workers joined", s->ranks_joined, j->workers);
        return;
    }
    if (s->phase >= PS_FINISHING) {
        s->count.pushes_stale++;
        send_ack(s, m, p->step, LORAPS__ACK_STATUS__ACK_STALE);
        return;
    }
    if (s->cfg.sync) {
        if (p->step > V) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_STEP,
                      "step %llu is in the future; current %llu", (unsigned long long)p->step,
                      (unsigned long long)V);
            return;
        }
        if (p->step < V || s->closing || s->contributed[r]) {
            int dup = p->step < s->rank_next[r] || (p->step == V && s->contributed[r]);
            if (dup)
                s->count.pushes_duplicate++;
            else
                s->count.pushes_stale++;
            send_ack(s, m, p->step,
                     dup ? LORAPS__ACK_STATUS__ACK_DUPLICATE : LORAPS__ACK_STATUS__ACK_STALE);
            return;
        }
    } else {
        if (p->step < s->rank_next[r]) {
            s->count.pushes_duplicate++;
            send_ack(s, m, p->step, LORAPS__ACK_STATUS__ACK_DUPLICATE);
            return;
        }
        if (p->step > s->rank_next[r] || p->step >= (uint64_t)j->max_steps) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_STEP,
                      "step %llu; rank %d's next step is %llu of %d", (unsigned long long)p->step,
                      r, (unsigned long long)s->rank_next[r], j->max_steps);
            return;
        }
        if (p->base_version > V) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_STEP,
                      "computed from version %llu; the current is %llu",
                      (unsigned long long)p->base_version, (unsigned long long)V);
            return;
        }
    }
    uint64_t max_tokens = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum * (uint64_t)j->seq_len;
    if (p->n_tokens == 0 || p->n_tokens > max_tokens) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED, "%llu tokens; a step has 1..%llu",
                  (unsigned long long)p->n_tokens, (unsigned long long)max_tokens);
        return;
    }
    if (!isfinite(p->loss_sum) || p->loss_sum < 0 || !isfinite(p->grad_sum_sq) ||
        p->grad_sum_sq < 0 || !isfinite(p->compute_seconds)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_NONFINITE, "loss %g, gradient sum of squares %g",
                  p->loss_sum, p->grad_sum_sq);
        return;
    }
    if (s->data_id && p->data_id != s->data_id) {
        char whose[32] = "the checkpoint's";
        if (s->data_id_rank >= 0) snprintf(whose, sizeof whose, "rank %d's", s->data_id_rank);
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_JOB,
                  "rank %d trains on other data than %s (data id %016llx, theirs %016llx): "
                  "every worker needs the same data file and options",
                  r, whose, (unsigned long long)p->data_id, (unsigned long long)s->data_id);
        return;
    }
    if (p->eval) {
        const Loraps__EvalResult *ev = p->eval;
        uint64_t max_seqs = 1ull << 32;
        if (j->eval_every <= 0 || p->step % (uint64_t)j->eval_every != 0) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED,
                      "a validation result at step %llu; the job validates every %d steps",
                      (unsigned long long)p->step, j->eval_every);
            return;
        }
        if (!isfinite(ev->loss_sum) || ev->loss_sum < 0 || (ev->n_tokens == 0 && ev->loss_sum) ||
            ev->loss_sum > 1e4 * (double)ev->n_tokens) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_NONFINITE,
                      "validation loss sum %g over %llu tokens", ev->loss_sum,
                      (unsigned long long)ev->n_tokens);
            return;
        }
        if (ev->n_sequences > max_seqs || ev->n_tokens > ev->n_sequences * (uint64_t)j->seq_len) {
            ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED,
                      "validation: %llu tokens in %llu sequences of %d",
                      (unsigned long long)ev->n_tokens, (unsigned long long)ev->n_sequences,
                      j->seq_len);
            return;
        }
    }
    Loraps__ErrorCode code;
    lp_err err;
    if (ps_check_tensors(s, m, s->cfg.shard, s->cfg.wire_dtype, &code, &err) < 0) {
        ps_reject(s, m, code, "%s", err.msg);
        return;
    }
    /* Accepted: from here on the push changes state. */
    ps_adapter *a = &s->adapter;
    wire_expect e = {a->n, a->index, a->numel, s->cfg.wire_dtype};
    mem->bytes_sent = p->bytes_sent;
    mem->bytes_received = p->bytes_received;
    mem->compute_seconds += p->compute_seconds;
    s->count.pushes_accepted++;
    if (!s->data_id && p->data_id) {
        s->data_id = p->data_id;
        s->data_id_rank = r;
        ps_log(s, "the workers' data: id %016llx (from rank %d)", (unsigned long long)p->data_id,
               r);
    }
    if (p->eval) eval_add(s, p->step, p->eval);
    if (s->cfg.sync) {
        wire_frames_apply(m, &e, a->grad_ptr, (float)p->n_tokens, 1);
        s->contributed[r] = 1;
        s->n_contrib++;
        s->step_tokens += p->n_tokens;
        s->step_loss += p->loss_sum;
        g_step_compute += p->compute_seconds;
        s->rank_next[r] = V + 1;
        send_ack(s, m, p->step, LORAPS__ACK_STATUS__ACK_ACCEPTED);
        s->last_push_s = now_seconds();
        return;
    }
    uint64_t mc = min_clock(s);
    if (mc != UINT64_MAX && p->step > mc && p->step - mc > s->count.max_spread)
        s->count.max_spread = p->step - mc;
    wire_frames_apply(m, &e, a->grad_ptr, 1.0f, 0);
    double ss = s->cfg.n_shards == 1 ? sum_of_squares(a->grad_sum, a->n_params) : p->grad_sum_sq;
    ps_apply_update(s, clip_factor(ss, j->max_grad_norm), V);
    if (ps_publish(s, V + 1, &err) < 0) ps_log(s, "publishing: %s", err.msg);
    s->rank_next[r] = p->step + 1;
    ps_checkpoint_after_update(s);
    send_ack(s, m, p->step, LORAPS__ACK_STATUS__ACK_ACCEPTED);
    s->step_tokens += p->n_tokens;
    s->step_loss += p->loss_sum;
    g_step_compute += p->compute_seconds;
    s->n_contrib++;
    /* One progress line per `workers` updates. */
    if (s->adapter.version % (uint64_t)j->workers == 0 || s->adapter.version >= s->total_updates) {
        progress(s, s->adapter.version - 1, s->step_tokens, s->step_loss / (double)s->step_tokens,
                 g_step_compute / s->n_contrib);
        s->step_tokens = 0;
        s->step_loss = 0;
        s->n_contrib = 0;
        g_step_compute = 0;
    }
}

/* ---- dispatch ------------------------------------------------------------------------------- */

void ps_handle(ps *s, wire_msg *m) {
    if (ps_check_header(s, m) < 0) return;
    Loraps__Header *h = m->hdr;
    if (m->n_frames && h->body_case != LORAPS__HEADER__BODY_PUSH &&
        h->body_case != LORAPS__HEADER__BODY_SHARD_STATE) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_MALFORMED, "%s carries no tensors",
                  ps_body_name(h));
        return;
    }
    uint64_t worker_id = 0;
    switch (h->body_case) {
    case LORAPS__HEADER__BODY_HELLO:
        handle_hello(s, m);
        return;
    case LORAPS__HEADER__BODY_NORM_SHARE:
        handle_norm_share(s, m);
        return;
    case LORAPS__HEADER__BODY_SHARD_STATE:
        ps_checkpoint_on_peer(s, m);
        return;
    case LORAPS__HEADER__BODY_PULL:
        worker_id = h->pull->worker_id;
        break;
    case LORAPS__HEADER__BODY_PUSH:
        worker_id = h->push->worker_id;
        break;
    case LORAPS__HEADER__BODY_HEARTBEAT:
        worker_id = h->heartbeat->worker_id;
        break;
    case LORAPS__HEADER__BODY_BYE:
        worker_id = h->bye->worker_id;
        break;
    default:
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "a server does not take %s",
                  ps_body_name(h));
        return;
    }
    ps_member *mem = ps_member_find(s, worker_id);
    if (!mem) {
        if (h->body_case == LORAPS__HEADER__BODY_BYE) return;
        if (s->phase >= PS_FINISHING && h->body_case == LORAPS__HEADER__BODY_PULL) {
            ps_pull pl = {.routing_len = m->routing_len, .worker_id = worker_id};
            memcpy(pl.routing, m->routing, m->routing_len);
            answer_pull(s, &pl);
            return;
        }
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER,
                  "worker %llu is not a member (never joined, or dropped): send Hello",
                  (unsigned long long)worker_id);
        return;
    }
    mem->last_seen_ms = wire_now_ms();
    switch (h->body_case) {
    case LORAPS__HEADER__BODY_PULL:
        handle_pull(s, m, mem);
        break;
    case LORAPS__HEADER__BODY_PUSH:
        handle_push(s, m, mem);
        break;
    case LORAPS__HEADER__BODY_HEARTBEAT: {
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
        hdr.job_id = s->job_id;
        hdr.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
        hdr.heartbeat = &hb;
        hb.worker_id = mem->id;
        hb.step = s->adapter.version;
        wire_send_header(s->router, m->routing, m->routing_len, &hdr, &s->net, NULL);
        break;
    }
    case LORAPS__HEADER__BODY_BYE:
        s->count.byes++;
        ps_member_leave(s, mem, "said Bye");
        break;
    default:
        break;
    }
}

void ps_tick(ps *s) {
    if (s->phase == PS_WAITING && s->ranks_joined >= s->cfg.job.workers) {
        s->phase = PS_RUNNING;
        s->start_ms = s->last_step_ms = wire_now_ms();
        ps_log(s, "all %d workers joined; training", s->cfg.job.workers);
    }
    if (s->phase == PS_RUNNING && s->cfg.sync) sync_tick(s);
    if (s->phase == PS_RUNNING && !s->cfg.sync) {
        /* async ends when every rank has pushed its last step, or when the job has run and no
         * member is left (the others finished; a crashed one did not come back). */
        int all_done = 1;
        for (int r = 0; r < s->cfg.job.workers; r++)
            if (s->rank_next[r] < (uint64_t)s->cfg.job.max_steps) all_done = 0;
        if (all_done || s->adapter.version >= s->total_updates ||
            (s->adapter.version > 0 && ps_members_alive(s) == 0))
            begin_finish(s);
    }
    answer_ready_pulls(s);
    if (s->overhead_pending) {
        double ms = (now_seconds() - s->last_push_s) * 1e3;
        s->count.overhead_ms_sum += ms;
        s->count.overhead_n++;
        if (ms > s->count.overhead_ms_max) s->count.overhead_ms_max = ms;
        s->overhead_pending = 0;
    }
    if (s->phase == PS_FINISHING && s->cfg.shard == 0 && ps_checkpoint_final_done(s))
        s->phase = PS_DONE;
}
