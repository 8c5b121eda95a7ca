/* loraps-ps: start-up, the effective configuration, signals and the event loop. */
#include "blas_core.h"
#include "ps.h"

#include "hash.h"
#include "ops.h"
#include "ps_log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop; /* the signal that stops the loop; -1: a dead socket */

static void on_signal(int sig) {
    g_stop = sig;
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps-ps: error: %s: %s\n", what, why);
    return 2;
}

static uint64_t random_u64(void) {
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&x, sizeof x, 1, f) != 1)
        x = (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid();
    if (f) fclose(f);
    return x;
}

/* The job's identity: its settings, the base model and the number of shards. */
static uint64_t compute_job_id(const ps_config *c, uint64_t fingerprint) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    uint64_t h = 0;
    if (f) {
        job_print(&c->job, f, "");
        fclose(f);
        h = hash_xxh3(h, text, len);
        free(text);
    }
    h = hash_xxh3(h, &fingerprint, sizeof fingerprint);
    h = hash_xxh3(h, &c->n_shards, sizeof c->n_shards);
    return h ? h : 1; /* 0 means "not known yet" in Hello */
}

/* Every module, in the order their checks and their state depend on each other. */
static int setup(ps *s, lp_err *err) {
    ps_config *c = &s->cfg;
    ops_set_threads(c->threads);
    if (ps_security_init(&s->security, &c->security, c->shard, c->job.workers, c->bind, err) < 0)
        return -1;
    /* before the job id: --durable-every may set keep_checkpoints */
    if (ps_checkpoints_init(&s->ckpt, c, &s->adapters, &s->step, &s->net, &s->checks, &s->progress,
                            err) < 0)
        return -1;
    if (ps_progress_init(&s->progress, c, err) < 0) return -1;
    if (ps_adapters_init(&s->adapters, c, err) < 0) return -1;
    s->net.job_id = compute_job_id(c, s->adapters.model.fingerprint);
    s->net.instance = random_u64();
    if (ps_members_init(&s->members, c->job.workers, c->job.heartbeat_timeout_ms, c->shard, err) <
        0)
        return -1;
    s->members.on_leave = ps_on_member_left;
    s->members.on_leave_ctx = s;
    if (ps_step_init(&s->step, c, err) < 0) return -1;
    if (ps_checkpoint_resume(&s->ckpt, err) < 0) return -1;
    return ps_net_open(&s->net, c, &s->security, err);
}

static void print_config(ps *s) {
    const ps_config *c = &s->cfg;
    const ps_adapter *a = ps_adapters_default(&s->adapters);
    fprintf(stderr, "loraps-ps[%d]: effective configuration\n", c->shard);
    fprintf(stderr, "  shard            %d of %d\n", c->shard, c->n_shards);
    fprintf(stderr, "  bind             %s\n", c->bind);
    for (int k = 0; k < c->n_shards && c->n_shards > 1; k++)
        fprintf(stderr, "  peer %-11d %s\n", k, c->peers[k]);
    fprintf(stderr, "  model            %s%s\n", c->model_dir,
            c->shapes_only ? " (shapes only)" : "");
    fprintf(stderr, "  fingerprint      %016llx\n",
            (unsigned long long)s->adapters.model.fingerprint);
    fprintf(stderr, "  job id           %016llx\n", (unsigned long long)s->net.job_id);
    fprintf(stderr, "  out              %s\n", c->out_dir[0] ? c->out_dir : "(none)");
    fprintf(stderr, "  adapter          %d tensors, %zu params (%zu bytes f32)\n", a->spec.n,
            a->spec.total, a->spec.total * 4);
    fprintf(stderr, "  this shard       %d tensors, %zu params (balance %.3f)\n", a->n, a->n_params,
            shard_map_imbalance(&a->map));
    fprintf(stderr, "  updates          %llu\n", (unsigned long long)c->total_updates);
    fprintf(stderr, "  ps threads       %d\n", c->threads);
    if (s->progress.port >= 0)
        fprintf(stderr, "  metrics          http://%s:%d/metrics (and /healthz, /readyz)\n",
                c->metrics_bind, s->progress.port);
    ps_security_print(&s->security, stderr);
    fprintf(stderr, "  durable every    %d%s\n", c->durable_every,
            c->durable_every ? " version(s), before serving them" : " (off)");
    fputs(c->env_notes, stderr);
    job_print(&c->job, stderr, "  ");
    fflush(stderr);
}

static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- the loop ------------------------------------------------------------------------------- */

/* A message, and what it moves on at once (a push that completes a step closes it now, not
 * after the rest of the batch), with the time it took. */
static void handle_and_tick(ps *s, wire_msg *m) {
    double t0 = wire_cpu_s();
    int push = m->hdr->body_case == LORAPS__HEADER__BODY_PUSH;
    size_t bytes = m->bytes;
    ps_handle(s, m);
    double t1 = wire_cpu_s();
    if (push)
        s->costs.push_s += t1 - t0, s->costs.pushes++, s->costs.push_bytes += bytes;
    else if (m->hdr->body_case != LORAPS__HEADER__BODY_PULL)
        s->costs.other_s += t1 - t0, s->costs.others++;
    if (push) ps_tick(s);
}

/* What waits on the ROUTER, up to 1000 messages; a dead socket stops the loop. */
static void receive_messages(ps *s) {
    for (int i = 0; i < 1000 && !g_stop; i++) {
        wire_msg m;
        Loraps__ErrorCode code;
        lp_err err;
        double t0 = wire_cpu_s();
        int r = wire_recv(s->net.router, 1, &m, &s->net.bytes, &code, &err);
        if (r != WIRE_NONE) s->costs.recv_s += wire_cpu_s() - t0, s->costs.recv_msgs++;
        if ((r == WIRE_OK || r == WIRE_BAD) && ps_security_drop(&s->security, &m))
            ; /* a peer cut off by --reject-limit: dropped unanswered */
        else if (r == WIRE_OK)
            handle_and_tick(s, &m);
        else if (r == WIRE_BAD)
            ps_reject(&s->checks, &m, code, "%s", err.msg);
        wire_msg_close(&m);
        if (r == WIRE_NONE) break;
        if (r == WIRE_FATAL) {
            ps_log(s->cfg.shard, "%s", err.msg);
            g_stop = -1;
        }
    }
}

typedef struct loop_state {
    int64_t done_ms, idle_since;
    int idle_stop;
} loop_state;

/* 1 when the loop should end: the job is done (and its workers heard it), or --idle-exit. */
static int loop_over(ps *s, loop_state *l, int64_t now) {
    /* A server whose workers never came, or are all gone for good (a failed Job), must not
     * wait forever: orchestrators only see a process that ends. */
    int alive = ps_members_alive(&s->members);
    if (alive > 0 || s->phase >= PS_FINISHING) l->idle_since = now;
    if (s->cfg.idle_exit_s > 0 && now - l->idle_since > (int64_t)s->cfg.idle_exit_s * 1000) {
        l->idle_stop = 1;
        return 1;
    }
    if (s->phase != PS_DONE) return 0;
    if (!l->done_ms) l->done_ms = now;
    /* Linger briefly so workers hear "done" and say Bye. */
    return alive == 0 || now - l->done_ms > 3000;
}

/* Shard 0 on a stop: waits (bounded) for the other shards' states; everything else is turned
 * away. */
static void wait_for_shard_states(ps *s) {
    int64_t until = wire_now_ms() + 10000;
    while (ps_checkpoint_collecting(&s->ckpt) && wire_now_ms() < until) {
        zmq_pollitem_t it = {s->net.router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        for (int i = 0; i < 100; i++) {
            wire_msg m;
            Loraps__ErrorCode code;
            lp_err err;
            int r = wire_recv(s->net.router, 1, &m, &s->net.bytes, &code, &err);
            if (r == WIRE_OK && m.hdr->body_case == LORAPS__HEADER__BODY_SHARD_STATE)
                ps_handle(s, &m);
            else if (r == WIRE_OK && m.routing_len)
                wire_send_error(s->net.router, m.routing, m.routing_len, s->net.job_id,
                                LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN, "the server is stopping",
                                &s->net.bytes);
            wire_msg_close(&m);
            if (r != WIRE_OK) break;
        }
    }
}

/* A checkpoint of the current version and the --out adapter (ps_checkpoint.c). */
static void checkpoint_on_stop(ps *s) {
    int finishing = s->phase == PS_FINISHING;
    if (!ps_checkpoint_stop_begin(&s->ckpt, s->phase == PS_DONE, finishing)) return;
    wait_for_shard_states(s);
    ps_checkpoint_stop_end(&s->ckpt, finishing);
}

static int serve(ps *s) {
    uint64_t *version = &ps_adapters_default(&s->adapters)->version;
    s->phase = PS_WAITING;
    ps_validate_init(&s->checks, s->cfg.shard, &s->net, &s->security);
    ps_log(s->cfg.shard, "listening on %s; waiting for %d workers", s->cfg.bind,
           s->cfg.job.workers);
    loop_state l = {0, wire_now_ms(), 0};
    int exit_code = 0;
    while (!g_stop) {
        if (ps_net_wait(&s->net, 50) < 0 && zmq_errno() != EINTR) {
            ps_log(s->cfg.shard, "poll: %s", zmq_strerror(zmq_errno()));
            exit_code = 1;
            break;
        }
        receive_messages(s);
        ps_net_drain_peers(&s->net);
        int64_t now = wire_now_ms();
        if (s->phase == PS_RUNNING || s->phase == PS_WAITING) ps_members_expire(&s->members, now);
        ps_tick(s);
        ps_update_gauges(s, now);
        if (s->phase == PS_WAITING) ps_members_log_missing(&s->members, now, s->cfg.bind);
        if (loop_over(s, &l, now)) break;
    }
    if (g_stop > 0) {
        ps_log(s->cfg.shard, "stopped by signal %d at version %llu", (int)g_stop,
               (unsigned long long)*version);
        checkpoint_on_stop(s);
    } else if (l.idle_stop) {
        ps_log(s->cfg.shard,
               "no live worker for %d s (--idle-exit) at version %llu: checkpointing and exiting",
               s->cfg.idle_exit_s, (unsigned long long)*version);
        checkpoint_on_stop(s);
        exit_code = 3;
    }
    return exit_code;
}

static void shutdown_ps(ps *s) {
    ps_progress_metrics_stop(&s->progress);
    ps_net_close(&s->net);
    ps_security_free(&s->security);
    ps_checkpoints_free(&s->ckpt);
    ps_step_free(&s->step);
    ps_members_free(&s->members);
    ps_adapters_free(&s->adapters);
    ps_progress_free(&s->progress);
    ps_config_free(&s->cfg);
}

int main(int argc, char **argv) {
    /* OpenBLAS picks slow kernels on CPUs it does not know: restart on the right ones */
    if (blas_core_setup("loraps-ps", argv) < 0) return 2;
    static ps s; /* big; zero-initialised */
    int rc = ps_config_load(&s.cfg, argc, argv);
    if (rc) return rc;
    lp_err err;
    if (setup(&s, &err) < 0) {
        fail("start-up", err.msg);
        shutdown_ps(&s);
        return 1;
    }
    if (ps_progress_metrics_start(&s.progress, &s.security, &err) < 0) {
        fail("--metrics-port", err.msg);
        shutdown_ps(&s);
        return 1;
    }
    print_config(&s);
    catch_signals();
    int exit_code = serve(&s);
    if (ps_write_stats(&s, &err) < 0) ps_log(s.cfg.shard, "writing stats: %s", err.msg);
    ps_exit_log(&s);
    shutdown_ps(&s);
    return exit_code;
}
