/* loraps-ps: flags, the effective configuration, signals and the event loop. */
#include "ps.h"

#include "ops.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;
static int g_shard_for_log;

static void on_signal(int sig) {
    g_stop = sig;
}

void ps_log(ps *s, const char *fmt, ...) {
    (void)s;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loraps-ps[%d]: %s\n", g_shard_for_log, msg);
    fflush(stderr);
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps-ps --model DIR [--bind tcp://HOST:PORT] [--out DIR] [--job FILE]\n"
            "                 [--shard I --peers EP0,EP1,...] [job settings]\n\n"
            "One shard of the parameter server: holds its part of the LoRA adapter and the AdamW\n"
            "state, aggregates the workers' gradients and serves new versions.\n\n"
            "  --model DIR      the base model (HF folder); gives the adapter spec and the\n"
            "                   fingerprint every worker must match\n"
            "  --bind EP        where to listen (default tcp://127.0.0.1:5555; with --peers,\n"
            "                   the shard's own entry)\n"
            "  --shard I        this shard's index (default 0)\n"
            "  --peers LIST     every shard's endpoint in shard order (several shards)\n"
            "  --out DIR        write DIR/adapter_model.safetensors at the end (shard 0)\n"
            "  --job FILE       a JSON job file; flags override it, LORAPS_* variables override\n"
            "                   flags\n"
            "  --ps-threads N   threads for the optimizer on this shard (default 1)\n"
            "  --metrics FILE   append one JSON line per step (shard 0)\n"
            "  --quiet          no progress lines\n"
            "  --help           this text\n\njob settings:\n");
    job_print_help(out);
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps-ps: error: %s: %s\n", what, why);
    return 2;
}

static int split_peers(ps_config *c, const char *list) {
    char *copy = strdup(list);
    int n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    c->peers = calloc((size_t)n, sizeof *c->peers);
    c->n_shards = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
        c->peers[c->n_shards++] = strdup(tok);
    free(copy);
    return c->n_shards;
}

static int parse_args(ps_config *c, int argc, char **argv) {
    lp_err err;
    memset(c, 0, sizeof *c);
    job_defaults(&c->job);
    c->n_shards = 1;
    c->threads = 1;
    const char *job_file = NULL, *peers = NULL;
    /* The job file first: flags and then the environment override it. */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--job") && i + 1 < argc) job_file = argv[i + 1];
    if (job_file && job_load_file(&c->job, job_file, &err) < 0) return fail("--job", err.msg);
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--quiet")) {
            c->quiet = 1;
            i++;
            continue;
        }
        int r = job_parse_flag(&c->job, argc, argv, &i, &err);
        if (r < 0) return fail(a, err.msg);
        if (r > 0) continue;
        if (!strcmp(a, "--model") || !strcmp(a, "--bind") || !strcmp(a, "--out") ||
            !strcmp(a, "--job") || !strcmp(a, "--shard") || !strcmp(a, "--peers") ||
            !strcmp(a, "--ps-threads") || !strcmp(a, "--metrics")) {
            if (!v) return fail(a, "needs a value");
            if (!strcmp(a, "--model")) snprintf(c->model_dir, sizeof c->model_dir, "%s", v);
            if (!strcmp(a, "--bind")) snprintf(c->bind, sizeof c->bind, "%s", v);
            if (!strcmp(a, "--out")) snprintf(c->out_dir, sizeof c->out_dir, "%s", v);
            if (!strcmp(a, "--peers")) peers = v;
            if (!strcmp(a, "--metrics")) snprintf(c->metrics_path, sizeof c->metrics_path, "%s", v);
            if (!strcmp(a, "--ps-threads")) {
                char *end;
                long t = strtol(v, &end, 10);
                if (*end || !*v || t < 1 || t > 1024)
                    return fail("--ps-threads", "expected 1..1024");
                c->threads = (int)t;
            }
            if (!strcmp(a, "--shard")) {
                char *end;
                long s = strtol(v, &end, 10);
                if (*end || s < 0 || s > 1024) return fail("--shard", "expected 0..1024");
                c->shard = (int)s;
            }
            i += 2;
            continue;
        }
        return fail(a, "unknown option (see --help)");
    }
    if (job_apply_env(&c->job, &err) < 0) return fail("environment", err.msg);
    if (job_validate(&c->job, &err) < 0) return fail("job", err.msg);
    if (!c->model_dir[0]) return fail("--model", "required (the base model folder)");
    if (c->job.max_steps <= 0) return fail("max_steps", "must be positive for this data source");
    if (peers && split_peers(c, peers) < 1) return fail("--peers", "empty list");
    if (c->shard >= c->n_shards) return fail("--shard", "not below the number of --peers");
    if (!c->bind[0])
        snprintf(c->bind, sizeof c->bind, "%s",
                 peers ? c->peers[c->shard] : "tcp://127.0.0.1:5555");
    wire_dtype_parse(c->job.wire_dtype, &c->wire_dtype);
    c->sync = !strcmp(c->job.mode, "sync");
    return 0;
}

static uint64_t random_u64(void) {
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&x, sizeof x, 1, f) != 1)
        x = (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid();
    if (f) fclose(f);
    return x;
}

static int setup(ps *s, lp_err *err) {
    ps_config *c = &s->cfg;
    ops_set_threads(c->threads);
    if (c->metrics_path[0] && c->shard == 0 && !(s->metrics = fopen(c->metrics_path, "a")))
        return lp_fail(err, "%s: %s", c->metrics_path, strerror(errno));
    if (ps_spec_from_model(s, err) < 0) return -1;
    if (ps_adapter_init(s, err) < 0) return -1;
    job_adamw(&c->job, &s->adamw);
    s->total_updates = (uint64_t)c->job.max_steps * (c->sync ? 1u : (uint64_t)c->job.workers);
    job_schedule(&c->job, (int)s->total_updates, &s->sched);
    s->job_id = ps_compute_job_id(s);
    s->instance = random_u64();
    int W = c->job.workers;
    s->rank_member = malloc((size_t)W * sizeof *s->rank_member);
    s->rank_seen = calloc((size_t)W, 1);
    s->rank_next = calloc((size_t)W, sizeof *s->rank_next);
    s->contributed = calloc((size_t)W, 1);
    s->peer_step = calloc((size_t)c->n_shards, sizeof *s->peer_step);
    s->peer_ss = calloc((size_t)c->n_shards, sizeof *s->peer_ss);
    s->peer_final = calloc((size_t)c->n_shards, 1);
    s->peer = calloc((size_t)c->n_shards, sizeof *s->peer);
    if (!s->rank_member || !s->rank_seen || !s->rank_next || !s->contributed || !s->peer_step ||
        !s->peer_ss || !s->peer_final || !s->peer)
        return lp_fail(err, "out of memory");
    for (int r = 0; r < W; r++) s->rank_member[r] = -1;

    s->ctx = zmq_ctx_new();
    s->router = zmq_socket(s->ctx, ZMQ_ROUTER);
    if (!s->router || wire_socket_setup(s->router, 0, err) < 0) return -1;
    /* No ROUTER_MANDATORY: a reply to a peer that went away, or that stopped reading (its
     * queue at the high-water mark), is dropped instead of blocking the server. */
    if (zmq_bind(s->router, c->bind) < 0)
        return lp_fail(err, "bind %s: %s", c->bind, zmq_strerror(zmq_errno()));
    for (int k = 0; k < c->n_shards && c->n_shards > 1; k++) {
        if (k == c->shard) continue;
        s->peer[k] = zmq_socket(s->ctx, ZMQ_DEALER);
        char id[32];
        snprintf(id, sizeof id, "shard-%d", c->shard);
        zmq_setsockopt(s->peer[k], ZMQ_ROUTING_ID, id, strlen(id));
        /* The final tensors must reach shard 0 even as this shard exits. */
        if (wire_socket_setup(s->peer[k], 30000, err) < 0) return -1;
        if (zmq_connect(s->peer[k], c->peers[k]) < 0)
            return lp_fail(err, "connect %s: %s", c->peers[k], zmq_strerror(zmq_errno()));
    }
    return 0;
}

static void print_config(ps *s) {
    ps_config *c = &s->cfg;
    ps_adapter *a = &s->adapter;
    size_t total = 0;
    for (int i = 0; i < s->spec.n; i++) total += s->spec.numel[i];
    fprintf(stderr, "loraps-ps[%d]: effective configuration\n", c->shard);
    fprintf(stderr, "  shard            %d of %d\n", c->shard, c->n_shards);
    fprintf(stderr, "  bind             %s\n", c->bind);
    for (int k = 0; k < c->n_shards && c->n_shards > 1; k++)
        fprintf(stderr, "  peer %-11d %s\n", k, c->peers[k]);
    fprintf(stderr, "  model            %s\n", c->model_dir);
    fprintf(stderr, "  fingerprint      %016llx\n", (unsigned long long)s->fingerprint);
    fprintf(stderr, "  job id           %016llx\n", (unsigned long long)s->job_id);
    fprintf(stderr, "  out              %s\n", c->out_dir[0] ? c->out_dir : "(none)");
    fprintf(stderr, "  adapter          %d tensors, %zu params (%zu bytes f32)\n", s->spec.n, total,
            total * 4);
    fprintf(stderr, "  this shard       %d tensors, %zu params (balance %.3f)\n", a->n, a->n_params,
            shard_map_imbalance(&s->map));
    fprintf(stderr, "  updates          %llu\n", (unsigned long long)s->total_updates);
    fprintf(stderr, "  ps threads       %d\n", c->threads);
    job_print(&c->job, stderr, "  ");
    fflush(stderr);
}

static void shutdown_ps(ps *s) {
    for (int k = 0; k < s->cfg.n_shards; k++)
        if (s->peer && s->peer[k]) zmq_close(s->peer[k]);
    if (s->router) zmq_close(s->router);
    if (s->ctx) zmq_ctx_term(s->ctx);
    ps_adapter_free(&s->adapter);
    ps_spec_free(&s->spec);
    shard_map_free(&s->map);
    free(s->members);
    free(s->pulls);
    free(s->rank_member);
    free(s->rank_seen);
    free(s->rank_next);
    free(s->contributed);
    free(s->peer_step);
    free(s->peer_ss);
    free(s->peer_final);
    free(s->peer);
    for (int k = 0; s->cfg.peers && k < s->cfg.n_shards; k++) free(s->cfg.peers[k]);
    free(s->cfg.peers);
    if (s->metrics) fclose(s->metrics);
}

int main(int argc, char **argv) {
    static ps s; /* big; zero-initialised */
    int rc = parse_args(&s.cfg, argc, argv);
    if (rc) return rc;
    g_shard_for_log = s.cfg.shard;
    lp_err err;
    if (setup(&s, &err) < 0) {
        fail("start-up", err.msg);
        shutdown_ps(&s);
        return 1;
    }
    print_config(&s);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int n_items = 1;
    zmq_pollitem_t items[1 + s.cfg.n_shards];
    items[0] = (zmq_pollitem_t){s.router, 0, ZMQ_POLLIN, 0};
    for (int k = 0; k < s.cfg.n_shards; k++)
        if (s.peer[k]) items[n_items++] = (zmq_pollitem_t){s.peer[k], 0, ZMQ_POLLIN, 0};
    s.phase = PS_WAITING;
    s.log_window_ms = wire_now_ms();
    ps_log(&s, "listening on %s; waiting for %d workers", s.cfg.bind, s.cfg.job.workers);
    int64_t done_ms = 0;
    int exit_code = 0;
    while (!g_stop) {
        int n = zmq_poll(items, n_items, 50);
        if (n < 0 && zmq_errno() != EINTR) {
            ps_log(&s, "poll: %s", zmq_strerror(zmq_errno()));
            exit_code = 1;
            break;
        }
        for (int i = 0; i < 1000 && !g_stop; i++) {
            wire_msg m;
            Loraps__ErrorCode code;
            int r = wire_recv(s.router, 1, &m, &s.net, &code, &err);
            if (r == WIRE_OK)
                ps_handle(&s, &m);
            else if (r == WIRE_BAD)
                ps_reject(&s, &m, code, "%s", err.msg);
            wire_msg_close(&m);
            if (r == WIRE_NONE) break;
            if (r == WIRE_FATAL) {
                ps_log(&s, "%s", err.msg);
                g_stop = -1;
            }
        }
        for (int i = 1; i < n_items; i++) {
            wire_msg m;
            Loraps__ErrorCode code;
            while (wire_recv(items[i].socket, 0, &m, &s.net, &code, &err) != WIRE_NONE) {
                if (m.hdr && m.hdr->body_case == LORAPS__HEADER__BODY_ERROR)
                    ps_log(&s, "another shard refused our message: %s: %s",
                           wire_error_name(m.hdr->error->code), m.hdr->error->message);
                wire_msg_close(&m);
            }
            wire_msg_close(&m);
        }
        int64_t now = wire_now_ms();
        if (s.phase == PS_RUNNING || s.phase == PS_WAITING) ps_members_expire(&s, now);
        ps_tick(&s);
        if (s.phase == PS_DONE) {
            if (!done_ms) done_ms = now;
            /* Linger briefly so workers hear "done" and say Bye. */
            if (ps_members_alive(&s) == 0 || now - done_ms > 3000) break;
        }
    }
    if (g_stop > 0) {
        ps_log(&s, "stopped by signal %d at version %llu", (int)g_stop,
               (unsigned long long)s.adapter.version);
        if (s.cfg.n_shards == 1 && s.cfg.out_dir[0]) {
            float *full = s.adapter.params; /* one shard: its layout is the spec's */
            if (ps_write_adapter(&s, full, &err) < 0)
                ps_log(&s, "writing the adapter: %s", err.msg);
        }
    }
    if (ps_write_stats(&s, &err) < 0) ps_log(&s, "writing stats: %s", err.msg);
    ps_log(&s,
           "exit: version %llu, pushes %llu accepted %llu duplicate %llu stale, %llu rejected, "
           "%llu dropped, sent %llu B, received %llu B",
           (unsigned long long)s.adapter.version, (unsigned long long)s.count.pushes_accepted,
           (unsigned long long)s.count.pushes_duplicate, (unsigned long long)s.count.pushes_stale,
           (unsigned long long)s.count.rejected_total, (unsigned long long)s.count.drops,
           (unsigned long long)s.net.bytes_sent, (unsigned long long)s.net.bytes_received);
    shutdown_ps(&s);
    return exit_code;
}
