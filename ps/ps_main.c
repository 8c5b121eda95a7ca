/* loraps-ps: flags, the effective configuration, signals and the event loop. */
#include "ps.h"

#include "metrics_http.h"
#include "net_config.h"
#include "ops.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;
static int g_shard_for_log;
/* Orchestration options (common/net_config.h, common/metrics_http.h): kept here, not in
 * ps_config, so the server's own state stays the checkpoint code's. */
static int g_metrics_port = -1; /* -1: no HTTP endpoint */
static int g_idle_exit_s;       /* 0: wait for workers forever */
static char g_metrics_bind[64] = "0.0.0.0";
static char g_env_notes[2048];
static const netcfg_flag PS_ENV_FLAGS[] = {
    {"model", 1},        {"bind", 1},          {"out", 1},           {"job", 1},
    {"shard", 1},        {"peers", 1},         {"ps-threads", 1},    {"metrics", 1},
    {"quiet", 0},        {"metrics-port", 1},  {"metrics-bind", 1},  {"resume", 1},
    {"idle-exit", 1},    {"curve-dir", 1},     {"max-msg-bytes", 1}, {"max-workers", 1},
    {"reject-limit", 1}, {"reject-window", 1}, {"ban-seconds", 1},   {"durable-every", 1},
};

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
            "  --out DIR        write DIR/adapter_model.safetensors at the end (shard 0), and\n"
            "                   checkpoints DIR/checkpoint-<step> (save_every, SIGTERM, the end)\n"
            "  --resume DIR     continue from a checkpoint folder, `latest` (DIR/latest of --out)\n"
            "                   or a PEFT adapter (fresh optimizer moments)\n"
            "  --job FILE       a JSON job file; flags override it, LORAPS_* variables override\n"
            "                   flags\n"
            "  --ps-threads N   threads for the optimizer on this shard (default 1)\n"
            "  --metrics FILE   append one JSON line per step (shard 0)\n"
            "  --metrics-port P serve /healthz, /readyz and Prometheus /metrics on port P\n"
            "  --metrics-bind A address for that port (default 0.0.0.0; :: for IPv6)\n"
            "  --idle-exit S    no live worker for S seconds (none came, or all are gone):\n"
            "                   checkpoint and exit with status 3 (default 0: wait forever)\n"
            "  --quiet          no progress lines\n"
            "  --help           this text\n\n"
            "Every option above is also a variable: LORAPS_BIND, LORAPS_PEERS, LORAPS_SHARD,\n"
            "LORAPS_METRICS_PORT, ... (a flag wins over its variable). A --bind is not needed on\n"
            "a cluster: a shard whose --peers entry is a DNS name listens on 0.0.0.0.\n\n");
    ps_security_usage(out);
    fprintf(out, "\njob settings:\n");
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
            /* one write: `loraps-ps --help | grep -q` must not die of SIGPIPE mid-text */
            static char help_buf[1 << 16];
            setvbuf(stdout, help_buf, _IOFBF, sizeof help_buf);
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
        r = ps_security_flag(a, v, &err);
        if (r < 0) return fail(a, err.msg);
        if (r > 0) {
            i += 2;
            continue;
        }
        if (!strcmp(a, "--model") || !strcmp(a, "--bind") || !strcmp(a, "--out") ||
            !strcmp(a, "--job") || !strcmp(a, "--shard") || !strcmp(a, "--peers") ||
            !strcmp(a, "--ps-threads") || !strcmp(a, "--metrics") || !strcmp(a, "--metrics-port") ||
            !strcmp(a, "--metrics-bind") || !strcmp(a, "--resume") || !strcmp(a, "--idle-exit")) {
            if (!v) return fail(a, "needs a value");
            if (!strcmp(a, "--resume")) snprintf(c->resume, sizeof c->resume, "%s", v);
            if (!strcmp(a, "--model")) snprintf(c->model_dir, sizeof c->model_dir, "%s", v);
            if (!strcmp(a, "--bind")) snprintf(c->bind, sizeof c->bind, "%s", v);
            if (!strcmp(a, "--out")) snprintf(c->out_dir, sizeof c->out_dir, "%s", v);
            if (!strcmp(a, "--peers")) peers = v;
            if (!strcmp(a, "--metrics")) snprintf(c->metrics_path, sizeof c->metrics_path, "%s", v);
            if (!strcmp(a, "--metrics-bind"))
                snprintf(g_metrics_bind, sizeof g_metrics_bind, "%s", v);
            if (!strcmp(a, "--idle-exit")) {
                char *end;
                long t = strtol(v, &end, 10);
                if (*end || !*v || t < 0 || t > 30 * 86400)
                    return fail("--idle-exit", "expected seconds in 0..2592000");
                g_idle_exit_s = (int)t;
            }
            if (!strcmp(a, "--metrics-port")) {
                char *end;
                long p = strtol(v, &end, 10);
                if (*end || !*v || p < 0 || p > 65535)
                    return fail("--metrics-port", "expected a port in 0..65535");
                g_metrics_port = (int)p;
            }
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
    for (int k = 0; peers && k < c->n_shards; k++)
        if (netcfg_check_endpoint(c->peers[k], &err) < 0) return fail("--peers", err.msg);
    /* Peers reach a shard by name (a Kubernetes Service, a host name); a name cannot be bound,
     * so such a shard listens on every interface at its port. */
    if (!c->bind[0] && peers &&
        netcfg_bind_for(c->peers[c->shard], c->bind, sizeof c->bind, &err) < 0)
        return fail("--peers", err.msg);
    if (!c->bind[0]) snprintf(c->bind, sizeof c->bind, "tcp://127.0.0.1:5555");
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
    if (ps_security_load(s, err) < 0) return -1;
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
    if (ps_resume(s, err) < 0) return -1;

    s->ctx = zmq_ctx_new();
    s->router = zmq_socket(s->ctx, ZMQ_ROUTER);
    if (!s->router || wire_socket_setup(s->router, 0, err) < 0) return -1;
    if (ps_security_router(s, err) < 0) return -1;
    /* No ROUTER_MANDATORY: a reply to a peer that went away, or that stopped reading (its
     * queue at the high-water mark), is dropped instead of blocking the server. */
    if (strchr(c->bind, '[')) { /* tcp://[::]:P: IPv6 (and IPv4 too, for [::]) */
        int on = 1;
        zmq_setsockopt(s->router, ZMQ_IPV6, &on, sizeof on);
    }
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
        if (ps_security_peer(s->peer[k], err) < 0) return -1;
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
    if (g_metrics_port >= 0)
        fprintf(stderr, "  metrics          http://%s:%d/metrics (and /healthz, /readyz)\n",
                g_metrics_bind, g_metrics_port);
    ps_security_print(s, stderr);
    fputs(g_env_notes, stderr);
    job_print(&c->job, stderr, "  ");
    fflush(stderr);
}

/* ---- health and Prometheus metrics ----------------------------------------------------------- */

enum {
    PM_STEP,
    PM_UPDATES_TOTAL,
    PM_LOSS,
    PM_TOKENS_TOTAL,
    PM_TOKENS_PER_S,
    PM_BYTES_IN,
    PM_BYTES_OUT,
    PM_WORKERS_LIVE,
    PM_WORKERS_EXPECTED,
    PM_REJECTED,
    PM_PUSHES,
    PM_DUPLICATE,
    PM_STALE,
    PM_JOINS,
    PM_DROPS,
    PM_PHASE,
    PM_VAL_LOSS,
    PM_VAL_PPL,
    PM_N
};
static int g_pm[PM_N];

static int ps_metrics_start(ps *s, metrics **m, lp_err *err) {
    if (g_metrics_port < 0) return 0;
    char labels[64];
    snprintf(labels, sizeof labels, "role=\"ps\",shard=\"%d\"", s->cfg.shard);
    if (metrics_start(m, g_metrics_bind, g_metrics_port, labels, err) < 0) return -1;
    g_metrics_port = metrics_port(*m);
    static const struct {
        int id;
        const char *name, *help;
        metrics_kind kind;
    } defs[] = {
        {PM_STEP, "loraps_step", "published adapter version (completed steps)", METRICS_GAUGE},
        {PM_UPDATES_TOTAL, "loraps_total_steps", "updates the job runs in all", METRICS_GAUGE},
        {PM_LOSS, "loraps_loss", "mean training loss of the latest step", METRICS_GAUGE},
        {PM_TOKENS_TOTAL, "loraps_tokens_total", "tokens trained on", METRICS_COUNTER},
        {PM_TOKENS_PER_S, "loraps_tokens_per_second", "tokens/s over the last seconds",
         METRICS_GAUGE},
        {PM_BYTES_IN, "loraps_bytes_received_total", "bytes received (wire)", METRICS_COUNTER},
        {PM_BYTES_OUT, "loraps_bytes_sent_total", "bytes sent (wire)", METRICS_COUNTER},
        {PM_WORKERS_LIVE, "loraps_workers_live", "workers that are members now", METRICS_GAUGE},
        {PM_WORKERS_EXPECTED, "loraps_workers_expected", "the job's workers", METRICS_GAUGE},
        {PM_REJECTED, "loraps_rejected_messages_total", "messages refused with an Error",
         METRICS_COUNTER},
        {PM_PUSHES, "loraps_pushes_accepted_total", "gradient pushes accepted", METRICS_COUNTER},
        {PM_DUPLICATE, "loraps_pushes_duplicate_total", "repeated pushes dropped", METRICS_COUNTER},
        {PM_STALE, "loraps_pushes_stale_total", "late pushes dropped", METRICS_COUNTER},
        {PM_JOINS, "loraps_worker_joins_total", "workers that joined", METRICS_COUNTER},
        {PM_DROPS, "loraps_worker_drops_total", "workers dropped as silent", METRICS_COUNTER},
        {PM_PHASE, "loraps_phase", "0 waiting for workers, 1 running, 2 finishing, 3 done",
         METRICS_GAUGE},
        {PM_VAL_LOSS, "loraps_validation_loss", "mean validation loss of the latest pass",
         METRICS_GAUGE},
        {PM_VAL_PPL, "loraps_validation_perplexity", "exp(validation loss) of the latest pass",
         METRICS_GAUGE},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        g_pm[defs[i].id] = metrics_define(*m, defs[i].name, defs[i].kind, defs[i].help);
    ps_security_metrics_define(s, *m);
    metrics_set(*m, g_pm[PM_UPDATES_TOTAL], (double)s->total_updates);
    metrics_set(*m, g_pm[PM_WORKERS_EXPECTED], s->cfg.job.workers);
    /* The loop polls every 50 ms: a minute without a pass means it is stuck. */
    metrics_set_stall_limit(*m, 60);
    return 0;
}

static void ps_metrics_update(ps *s, metrics *m, int64_t now_ms) {
    static int64_t rate_ms;
    static uint64_t rate_tokens;
    if (!m) return;
    metrics_touch(m);
    metrics_set(m, g_pm[PM_STEP], (double)s->adapter.version);
    metrics_set(m, g_pm[PM_LOSS], s->last_loss);
    metrics_set(m, g_pm[PM_TOKENS_TOTAL], (double)s->tokens_total);
    if (!rate_ms) rate_ms = now_ms, rate_tokens = s->tokens_total;
    if (now_ms - rate_ms >= 2000) {
        metrics_set(m, g_pm[PM_TOKENS_PER_S],
                    (double)(s->tokens_total - rate_tokens) * 1000.0 / (double)(now_ms - rate_ms));
        rate_ms = now_ms;
        rate_tokens = s->tokens_total;
    }
    metrics_set(m, g_pm[PM_BYTES_IN], (double)s->net.bytes_received);
    metrics_set(m, g_pm[PM_BYTES_OUT], (double)s->net.bytes_sent);
    metrics_set(m, g_pm[PM_WORKERS_LIVE], ps_members_alive(s));
    metrics_set(m, g_pm[PM_REJECTED], (double)s->count.rejected_total);
    metrics_set(m, g_pm[PM_PUSHES], (double)s->count.pushes_accepted);
    metrics_set(m, g_pm[PM_DUPLICATE], (double)s->count.pushes_duplicate);
    metrics_set(m, g_pm[PM_STALE], (double)s->count.pushes_stale);
    metrics_set(m, g_pm[PM_JOINS], (double)s->count.joins);
    metrics_set(m, g_pm[PM_DROPS], (double)s->count.drops);
    metrics_set(m, g_pm[PM_PHASE], (double)s->phase);
    ps_security_metrics_update(m);
    if (s->val_known) {
        metrics_set(m, g_pm[PM_VAL_LOSS], s->val_loss);
        metrics_set(m, g_pm[PM_VAL_PPL], exp(s->val_loss));
    }
    /* Checkpoint age: `latest` is replaced once a checkpoint is complete (common/checkpoint.h),
     * so the link's own time is when the newest one was written. Shard 0 writes them. */
    static int64_t ckpt_checked_ms;
    if (s->cfg.shard == 0 && s->cfg.out_dir[0] && now_ms - ckpt_checked_ms >= 1000) {
        ckpt_checked_ms = now_ms;
        char latest[PATH_MAX + 16];
        struct stat st;
        snprintf(latest, sizeof latest, "%s/latest", s->cfg.out_dir);
        if (lstat(latest, &st) == 0)
            metrics_set_checkpoint_time(m, (double)st.st_mtim.tv_sec +
                                               (double)st.st_mtim.tv_nsec / 1e9);
    }
    /* Ready while it takes workers: not once the job is finishing. */
    metrics_set_ready(m, s->phase == PS_WAITING || s->phase == PS_RUNNING);
}

/* Start-up never waits silently: every 10 s before the job starts, name the ranks missing. */
static void log_waiting(ps *s, int64_t now_ms) {
    static int64_t last;
    if (s->phase != PS_WAITING) return;
    if (!last) last = now_ms;
    if (now_ms - last < 10000) return;
    last = now_ms;
    char missing[512] = "";
    size_t n = 0;
    int count = 0;
    for (int r = 0; r < s->cfg.job.workers; r++) {
        if (s->rank_seen[r]) continue;
        if (count++ < 32 && n < sizeof missing - 16)
            n += (size_t)snprintf(missing + n, sizeof missing - n, "%s%d", n ? "," : "", r);
    }
    ps_log(s, "still waiting for %d of %d workers (ranks %s%s) on %s", count, s->cfg.job.workers,
           missing, count > 32 ? ",..." : "", s->cfg.bind);
}

static void shutdown_ps(ps *s) {
    for (int k = 0; k < s->cfg.n_shards; k++)
        if (s->peer && s->peer[k]) zmq_close(s->peer[k]);
    if (s->router) zmq_close(s->router);
    if (s->ctx) zmq_ctx_term(s->ctx);
    ps_security_shutdown();
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
    ps_checkpoint_free(s);
    free(s->peer);
    for (int k = 0; s->cfg.peers && k < s->cfg.n_shards; k++) free(s->cfg.peers[k]);
    free(s->cfg.peers);
    if (s->metrics) fclose(s->metrics);
}

int main(int argc, char **argv) {
    static ps s; /* big; zero-initialised */
    /* Every option also as LORAPS_*: the variables become flags the command line lacks. */
    int orig_argc = argc, env_argc;
    char **env_argv;
    lp_err env_err;
    if (netcfg_env_args(PS_ENV_FLAGS, (int)(sizeof PS_ENV_FLAGS / sizeof PS_ENV_FLAGS[0]), argc,
                        argv, &env_argc, &env_argv, g_env_notes, sizeof g_env_notes, &env_err) < 0)
        return fail("environment", env_err.msg);
    int rc = parse_args(&s.cfg, env_argc, env_argv);
    netcfg_args_free(env_argc, env_argv, orig_argc);
    if (rc) return rc;
    g_shard_for_log = s.cfg.shard;
    lp_err err;
    if (setup(&s, &err) < 0) {
        fail("start-up", err.msg);
        shutdown_ps(&s);
        return 1;
    }
    metrics *pm = NULL;
    if (ps_metrics_start(&s, &pm, &err) < 0) {
        fail("--metrics-port", err.msg);
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
    int64_t done_ms = 0, idle_since = wire_now_ms();
    int exit_code = 0, idle_stop = 0;
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
            if ((r == WIRE_OK || r == WIRE_BAD) && ps_security_drop(&s, &m))
                ; /* a peer cut off by --reject-limit: dropped unanswered */
            else if (r == WIRE_OK)
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
        ps_metrics_update(&s, pm, now);
        log_waiting(&s, now);
        /* A server whose workers never came, or are all gone for good (a failed Job), must not
         * wait forever: orchestrators only see a process that ends. */
        if (ps_members_alive(&s) > 0 || s.phase >= PS_FINISHING) idle_since = now;
        if (g_idle_exit_s > 0 && now - idle_since > (int64_t)g_idle_exit_s * 1000) {
            idle_stop = 1;
            break;
        }
        if (s.phase == PS_DONE) {
            if (!done_ms) done_ms = now;
            /* Linger briefly so workers hear "done" and say Bye. */
            if (ps_members_alive(&s) == 0 || now - done_ms > 3000) break;
        }
    }
    if (g_stop > 0) {
        ps_log(&s, "stopped by signal %d at version %llu", (int)g_stop,
               (unsigned long long)s.adapter.version);
        /* a checkpoint of the current version and the --out adapter (ps_checkpoint.c) */
        ps_checkpoint_on_stop(&s);
    } else if (idle_stop) {
        ps_log(&s,
               "no live worker for %d s (--idle-exit) at version %llu: checkpointing and exiting",
               g_idle_exit_s, (unsigned long long)s.adapter.version);
        ps_checkpoint_on_stop(&s);
        exit_code = 3;
    }
    if (ps_write_stats(&s, &err) < 0) ps_log(&s, "writing stats: %s", err.msg);
    ps_security_exit_log(&s);
    ps_log(&s,
           "exit: version %llu, pushes %llu accepted %llu duplicate %llu stale, %llu rejected, "
           "%llu dropped, sent %llu B, received %llu B",
           (unsigned long long)s.adapter.version, (unsigned long long)s.count.pushes_accepted,
           (unsigned long long)s.count.pushes_duplicate, (unsigned long long)s.count.pushes_stale,
           (unsigned long long)s.count.rejected_total, (unsigned long long)s.count.drops,
           (unsigned long long)s.net.bytes_sent, (unsigned long long)s.net.bytes_received);
    metrics_stop(pm);
    shutdown_ps(&s);
    return exit_code;
}
