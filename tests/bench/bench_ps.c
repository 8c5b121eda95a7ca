/* bench_ps: the parameter server under load, against this machine's memcpy in the same run.
 *
 * Synthetic workers are threads of this process, each with its own socket to every shard
 * (loopback), pulling the adapter and pushing a fixed gradient; servers are real loraps-ps
 * processes (found next to this binary), whose own timers (ps_stats_<shard>.json "costs") say
 * where their time went.
 *
 * 1. kernel: the aggregation kernel (w * frame added into a sum, f32 and bf16 frames) in this
 *    process, against memcpy.
 * 2. server: GPT-2 124M, r=8 on c_attn (1.18 MB), one shard, 8, 32 and 256 workers: pushes/s,
 *    the bytes a shard sums per second of its summing (against memcpy), and the sync-step
 *    overhead (last push accepted -> the new version handed to libzmq for every waiting pull).
 * 3. 8b: the Llama-8B shape, all 7 targets at r=16 (42M parameters, 168 MB), 4 shards, 8
 *    workers that compute for 300 ms a step (a forward third, then backward pushing one piece
 *    per layer as it goes): the step time beyond 300 ms.
 * 4. model: the server's per-message and per-byte costs measured at 2 and 8 workers predict the
 *    sync-step overhead at 4..64 workers (checked against runs) and at 64, 256 and 1024 workers
 *    with 1, 4 and 16 shards, for both adapters.
 * 5. run: `loraps run --workers 2` on the small preset: worker time outside compute.
 *
 * usage: bench_ps [--model DIR] [--steps N] [--only kernel|server|8b|model|run] [--quick]
 * Prints ratios; asserts nothing. */
#include "accumulate.h"
#include "bench_util.h"
#include "model.h"
#include "model_init.h"
#include "model_load.h"
#include "wire.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SHARDS 16

typedef struct bench {
    char bin[4096];
    double memcpy_gbs;
} bench;

/* ---- a job: servers and synthetic workers --------------------------------------------------- */

typedef struct job_cfg {
    const char *model_dir;
    int shapes_only;
    const char *targets;
    int r, workers, shards, steps;
    double compute_ms; /* simulated per step: a third forward, then backward in pieces */
    int pieces;        /* per push: groups of layers, last first; 1: whole */
    const char *wire;  /* f32 | bf16 */
} job_cfg;

typedef struct job_result {
    int ok;
    size_t adapter_bytes;
    double step_ms;            /* median, steady state */
    double worker_overhead_ms; /* median: last piece sent -> every shard's new version in */
    json_t *stats[MAX_SHARDS]; /* each shard's ps_stats */
} job_result;

/* What every worker shares: the spec, the placement, the gradient (in the wire dtype). */
typedef struct shared {
    const job_cfg *cfg;
    const char *ep[MAX_SHARDS];
    uint64_t fingerprint;
    pthread_mutex_t lock;
    int n;               /* spec tensors */
    size_t *numel, *off; /* spec layout */
    uint32_t *placement;
    void *grad; /* the whole adapter's gradient, wire dtype */
    Loraps__WireDtype dtype;
} shared;

typedef struct synth {
    shared *sh;
    int rank;
    void *ctx;
    double *params_at, *pushed_at; /* [steps + 1] */
    int ok;
} synth;

static Loraps__Header *wait_msg(void **socks, int n, wire_msg *m, int body, int *from) {
    zmq_pollitem_t it[MAX_SHARDS];
    for (int k = 0; k < n; k++) it[k] = (zmq_pollitem_t){socks[k], 0, ZMQ_POLLIN, 0};
    for (int tries = 0; tries < 1200; tries++) {
        if (zmq_poll(it, n, 100) <= 0) continue;
        for (int k = 0; k < n; k++) {
            if (!(it[k].revents & ZMQ_POLLIN)) continue;
            Loraps__ErrorCode code;
            lp_err err;
            if (wire_recv(socks[k], 0, m, NULL, &code, &err) != WIRE_OK) {
                wire_msg_close(m);
                continue;
            }
            if ((int)m->hdr->body_case == body) {
                if (from) *from = k;
                return m->hdr;
            }
            if (m->hdr->body_case == LORAPS__HEADER__BODY_ERROR)
                fprintf(stderr, "bench_ps: error from shard %d: %s\n", k, m->hdr->error->message);
            wire_msg_close(m);
        }
    }
    return NULL;
}

static void send_header_to(void *sock, uint64_t job, Loraps__Header *h) {
    h->job_id = job;
    wire_send_header(sock, NULL, 0, h, NULL, NULL);
}

/* The spec from a Welcome, once for all workers. */
static int learn_spec(shared *sh, const Loraps__Welcome *w) {
    pthread_mutex_lock(&sh->lock);
    int rc = 0;
    if (!sh->numel) {
        sh->n = (int)w->n_spec;
        sh->numel = calloc((size_t)sh->n, sizeof *sh->numel);
        sh->off = calloc((size_t)sh->n, sizeof *sh->off);
        sh->placement = calloc((size_t)sh->n, sizeof *sh->placement);
        size_t total = 0;
        for (int i = 0; i < sh->n; i++) {
            sh->numel[i] = w->spec[i]->rows * w->spec[i]->cols;
            sh->off[i] = total;
            total += sh->numel[i];
            sh->placement[i] = w->placement[i];
        }
        size_t esz = wire_dtype_size(sh->dtype);
        sh->grad = malloc(total * esz);
        float *g = malloc(total * sizeof *g);
        rc = sh->grad && g ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < total; i++) g[i] = 1e-4f * (float)((int)(i % 13) - 6);
        if (rc == 0)
            dtype_from_f32(g, sh->dtype == LORAPS__WIRE_DTYPE__WIRE_BF16 ? DT_BF16 : DT_F32,
                           sh->grad, total);
        free(g);
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/* Spec tensors [lo, hi) that live on shard k, as one message's sources. */
static int piece_sources(const shared *sh, int k, int lo, int hi, wire_src *src) {
    size_t esz = wire_dtype_size(sh->dtype);
    int n = 0;
    for (int i = lo; i < hi; i++)
        if ((int)sh->placement[i] == k)
            src[n++] = (wire_src){(uint32_t)i, sh->numel[i], (char *)sh->grad + sh->off[i] * esz};
    return n;
}

static void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

/* Backward as pieces: groups of spec tensors, last group first, each sent to its shards when
 * "produced"; the last piece to every shard completes the push. */
static void push_in_pieces(synth *w, void **socks, uint64_t job, const uint64_t *wid, int step,
                           wire_src *src) {
    shared *sh = w->sh;
    const job_cfg *c = sh->cfg;
    int P = c->pieces < 1 ? 1 : c->pieces > sh->n ? sh->n : c->pieces;
    wire_send_opts o = {.src_dtype = sh->dtype, .wire_dtype = sh->dtype, .zero_copy_unowned = 1};
    for (int p = P - 1; p >= 0; p--) {
        sleep_ms(c->compute_ms * 2.0 / 3.0 / P);
        int lo = (int)((long)sh->n * p / P), hi = (int)((long)sh->n * (p + 1) / P);
        for (int k = 0; k < c->shards; k++) {
            int n = piece_sources(sh, k, lo, hi, src);
            if (n == 0 && p > 0) continue;
            Loraps__Header h = LORAPS__HEADER__INIT;
            Loraps__Push pu = LORAPS__PUSH__INIT;
            h.job_id = job;
            h.body_case = LORAPS__HEADER__BODY_PUSH;
            h.push = &pu;
            pu.worker_id = wid[k];
            pu.step = pu.base_version = (uint64_t)step;
            pu.n_tokens = 64;
            pu.loss_sum = 64 * 3.0;
            pu.more_pieces = p > 0;
            wire_send(socks[k], &h, src, n, &o, NULL, NULL);
        }
    }
}

static void *synth_main(void *arg) {
    synth *w = arg;
    shared *sh = w->sh;
    const job_cfg *c = sh->cfg;
    int S = c->shards;
    void *socks[MAX_SHARDS];
    uint64_t wid[MAX_SHARDS], job = 0;
    wire_msg m;
    for (int k = 0; k < S; k++) {
        socks[k] = zmq_socket(w->ctx, ZMQ_DEALER);
        wire_socket_setup(socks[k], 0, NULL);
        zmq_connect(socks[k], sh->ep[k]);
        Loraps__Header h = LORAPS__HEADER__INIT;
        Loraps__Hello he = LORAPS__HELLO__INIT;
        h.body_case = LORAPS__HEADER__BODY_HELLO;
        h.hello = &he;
        he.fingerprint = sh->fingerprint;
        he.rank = (uint32_t)w->rank;
        he.host = "bench";
        send_header_to(socks[k], 0, &h);
        Loraps__Header *r = wait_msg(&socks[k], 1, &m, LORAPS__HEADER__BODY_WELCOME, NULL);
        if (!r) goto out;
        job = r->job_id;
        wid[k] = r->welcome->worker_id;
        int bad = learn_spec(sh, r->welcome);
        wire_msg_close(&m);
        if (bad) goto out;
    }
    wire_src *src = calloc((size_t)sh->n, sizeof *src);
    for (int s = 0; s <= c->steps; s++) {
        for (int k = 0; k < S; k++) {
            Loraps__Header h = LORAPS__HEADER__INIT;
            Loraps__Pull pl = LORAPS__PULL__INIT;
            h.body_case = LORAPS__HEADER__BODY_PULL;
            h.pull = &pl;
            pl.worker_id = wid[k];
            pl.version = pl.step = (uint64_t)s;
            send_header_to(socks[k], job, &h);
        }
        int done = 0;
        for (int got = 0; got < S; got++) {
            if (!wait_msg(socks, S, &m, LORAPS__HEADER__BODY_PARAMS, NULL)) goto out_src;
            done |= m.hdr->params->done;
            wire_msg_close(&m);
        }
        w->params_at[s] = bench_now();
        if (done || s == c->steps) break;
        sleep_ms(c->compute_ms / 3.0);
        push_in_pieces(w, socks, job, wid, s, src);
        w->pushed_at[s] = bench_now();
        for (int got = 0; got < S; got++) {
            if (!wait_msg(socks, S, &m, LORAPS__HEADER__BODY_ACK, NULL)) goto out_src;
            wire_msg_close(&m);
        }
    }
    w->ok = 1;
out_src:
    free(src);
out:
    for (int k = 0; k < S; k++) {
        Loraps__Header h = LORAPS__HEADER__INIT;
        Loraps__Bye by = LORAPS__BYE__INIT;
        h.body_case = LORAPS__HEADER__BODY_BYE;
        h.bye = &by;
        by.worker_id = wid[k];
        int linger = 200;
        zmq_setsockopt(socks[k], ZMQ_LINGER, &linger, sizeof linger);
        send_header_to(socks[k], job, &h);
        zmq_close(socks[k]);
    }
    return NULL;
}

static int free_ports(const bench *b, int n, int *out) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "%s/free_ports %d", b->bin, n);
    FILE *p = popen(cmd, "r");
    int k = 0;
    while (p && k < n && fscanf(p, "%d", &out[k]) == 1) k++;
    if (p) pclose(p);
    return k == n ? 0 : -1;
}

static pid_t start_server(const bench *b, const job_cfg *c, int k, const char *peers,
                          const char *out) {
    char ps_bin[4200], wstr[16], sstr[16], rstr[16], kstr[16];
    snprintf(ps_bin, sizeof ps_bin, "%s/loraps-ps", b->bin);
    snprintf(wstr, sizeof wstr, "%d", c->workers);
    snprintf(sstr, sizeof sstr, "%d", c->steps);
    snprintf(rstr, sizeof rstr, "%d", c->r);
    snprintf(kstr, sizeof kstr, "%d", k);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (!getenv("BENCH_PS_LOGS")) dup2(devnull, 2); /* the servers' logs, when asked */
        const char *argv[40];
        int n = 0;
        const char *fixed[] = {ps_bin,
                               "--model",
                               c->model_dir,
                               "--peers",
                               peers,
                               "--shard",
                               kstr,
                               "--workers",
                               wstr,
                               "--max-steps",
                               sstr,
                               "--quiet",
                               "--target-modules",
                               c->targets,
                               "--r",
                               rstr,
                               "--heartbeat-timeout-ms",
                               "120000",
                               "--wire-dtype",
                               c->wire,
                               "--out",
                               out};
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) argv[n++] = fixed[i];
        if (c->shapes_only) argv[n++] = "--shapes-only";
        argv[n] = NULL;
        execv(ps_bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

static void summarize(const job_cfg *c, synth *ws, job_result *res) {
    int W = c->workers, steps = c->steps;
    double *step = calloc((size_t)steps, sizeof *step), *over = calloc((size_t)steps, sizeof *over);
    int n_step = 0, n_over = 0;
    for (int s = 1; s < steps; s++) {
        double first = 1e300, prev = 1e300, last_push = 0;
        for (int k = 0; k < W; k++) {
            if (ws[k].params_at[s + 1] < first) first = ws[k].params_at[s + 1];
            if (ws[k].params_at[s] < prev) prev = ws[k].params_at[s];
            if (ws[k].pushed_at[s] > last_push) last_push = ws[k].pushed_at[s];
        }
        step[n_step++] = (first - prev) * 1e3;
        over[n_over++] = (first - last_push) * 1e3;
    }
    res->step_ms = median(step, n_step);
    res->worker_overhead_ms = median(over, n_over);
    free(step);
    free(over);
}

static uint64_t fingerprint_of(const job_cfg *c) {
    model *m;
    lp_err err;
    int rc = c->shapes_only ? model_load_shapes(&m, c->model_dir, &err)
                            : model_load(&m, c->model_dir, &err);
    if (rc < 0) {
        fprintf(stderr, "bench_ps: %s\n", err.msg);
        return 0;
    }
    uint64_t fp = model_fingerprint(m);
    model_free(m);
    return fp;
}

static int run_job(const bench *b, const job_cfg *c, job_result *res) {
    memset(res, 0, sizeof *res);
    int ports[MAX_SHARDS];
    if (c->shards > MAX_SHARDS || free_ports(b, c->shards, ports) < 0) return -1;
    shared sh = {.cfg = c, .fingerprint = fingerprint_of(c)};
    sh.dtype =
        !strcmp(c->wire, "bf16") ? LORAPS__WIRE_DTYPE__WIRE_BF16 : LORAPS__WIRE_DTYPE__WIRE_F32;
    pthread_mutex_init(&sh.lock, NULL);
    char peers[MAX_SHARDS * 40] = "", eps[MAX_SHARDS][40];
    for (int k = 0; k < c->shards; k++) {
        snprintf(eps[k], sizeof eps[k], "tcp://127.0.0.1:%d", ports[k]);
        sh.ep[k] = eps[k];
        snprintf(peers + strlen(peers), sizeof peers - strlen(peers), "%s%s", k ? "," : "", eps[k]);
    }
    char out[] = "/tmp/loraps-bench-ps.XXXXXX";
    if (!mkdtemp(out)) return -1;
    pid_t pids[MAX_SHARDS];
    for (int k = 0; k < c->shards; k++) pids[k] = start_server(b, c, k, peers, out);
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 2);
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 8192);
    synth *ws = calloc((size_t)c->workers, sizeof *ws);
    pthread_t *th = calloc((size_t)c->workers, sizeof *th);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    for (int k = 0; k < c->workers; k++) {
        ws[k] = (synth){&sh,
                        k,
                        ctx,
                        calloc((size_t)c->steps + 1, sizeof(double)),
                        calloc((size_t)c->steps + 1, sizeof(double)),
                        0};
        pthread_create(&th[k], &attr, synth_main, &ws[k]);
    }
    for (int k = 0; k < c->workers; k++) pthread_join(th[k], NULL);
    res->ok = 1;
    for (int k = 0; k < c->workers; k++) res->ok &= ws[k].ok;
    for (int k = 0; k < c->shards; k++) {
        int status;
        waitpid(pids[k], &status, 0);
        char path[200];
        snprintf(path, sizeof path, "%s/ps_stats_%d.json", out, k);
        res->stats[k] = json_load_file(path, 0, NULL);
        if (getenv("BENCH_PS_STATS") && res->stats[k]) /* what the servers measured, whole */
            json_dumpf(res->stats[k], stdout, JSON_COMPACT), printf("\n");
        res->ok &= res->stats[k] != NULL;
    }
    if (res->ok) summarize(c, ws, res);
    for (int i = 0; i < sh.n; i++) res->adapter_bytes += sh.numel[i] * 4;
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", out);
    if (system(rm) != 0) fprintf(stderr, "bench_ps: could not remove %s\n", out);
    for (int k = 0; k < c->workers; k++) free(ws[k].params_at), free(ws[k].pushed_at);
    free(ws);
    free(th);
    zmq_ctx_term(ctx);
    free(sh.numel);
    free(sh.off);
    free(sh.placement);
    free(sh.grad);
    return res->ok ? 0 : -1;
}

static void free_result(job_result *r) {
    for (int k = 0; k < MAX_SHARDS; k++) json_decref(r->stats[k]);
}

static double stat_of(const job_result *r, int shard, const char *key) {
    json_t *v = json_object_get(r->stats[shard], key);
    return json_number_value(v);
}

static double cost(const job_result *r, int shard, const char *key) {
    return json_number_value(json_object_get(json_object_get(r->stats[shard], "costs"), key));
}

/* ---- 1. the kernel -------------------------------------------------------------------------- */

static double memcpy_gbs(void) {
    size_t n = 64u << 20;
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = bench_now();
        memcpy(b, a, n);
        double g = (double)n / (bench_now() - t0) / 1e9;
        a[i] = b[n - 1 - i];
        if (g > best) best = g;
    }
    free(a);
    free(b);
    return best;
}

static void bench_kernel(const bench *b) {
    size_t n = 16u << 20; /* 64 MB of f32 */
    float *acc = calloc(n, 4), *x = malloc(n * 4);
    uint16_t *xb = malloc(n * 2);
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 97) * 1e-3f;
    dtype_from_f32(x, DT_BF16, xb, n);
    for (int d = 0; d < 2; d++) {
        double best = 0;
        for (int rep = 0; rep < 5; rep++) {
            acc_seg sa, sx = {d ? (const void *)xb : x, 0, n};
            acc_src src[2] = {acc_f32(&sa, acc, n), {&sx, 1, d ? DT_BF16 : DT_F32, 37.0f}};
            double t0 = bench_now();
            acc_sum(acc, src, 2, n);
            double t = bench_now() - t0;
            double gbs = (double)n * (d ? 2 : 4) / t / 1e9; /* frame bytes summed per second */
            if (gbs > best) best = gbs;
        }
        printf("kernel: sum += w * frame, %s frames: %.2f GB/s of frames, %.3f of memcpy (one "
               "thread; it also reads and writes the sum)\n",
               d ? "bf16" : "f32", best, best / b->memcpy_gbs);
    }
    free(acc);
    free(x);
    free(xb);
}

/* ---- 2. one shard under many workers -------------------------------------------------------- */

static void print_server(const bench *b, const job_cfg *c, const job_result *r) {
    double pushes = cost(r, 0, "pushes"), sum_s = cost(r, 0, "sum_s");
    double sum_gbs = sum_s > 0 ? cost(r, 0, "sum_bytes") / sum_s / 1e9 : 0;
    double push_gbs = (double)c->workers * (double)r->adapter_bytes / (r->step_ms / 1e3) / 1e9;
    printf("server, %3d synthetic workers: %7.0f pushes/s, step %.2f ms; pushes accepted at "
           "%.3f GB/s (%.3f of memcpy); summed at %.2f GB/s of frames (%.3f of memcpy)\n",
           c->workers, c->workers / (r->step_ms / 1e3), r->step_ms, push_gbs,
           push_gbs / b->memcpy_gbs, sum_gbs, sum_gbs / b->memcpy_gbs);
    printf("    sync-step overhead (server: last push accepted -> new version handed to libzmq "
           "for every waiting pull): mean %.3f ms (of it the server's own CPU %.3f ms), max %.3f "
           "ms; per push %.1f us of the server's CPU\n",
           stat_of(r, 0, "step_overhead_ms_mean"), stat_of(r, 0, "step_overhead_cpu_ms_mean"),
           stat_of(r, 0, "step_overhead_ms_max"), pushes ? cost(r, 0, "push_s") / pushes * 1e6 : 0);
}

static void bench_server(const bench *b, const char *model_dir, int steps, int quick) {
    static const int WS[] = {8, 32, 256};
    for (int i = 0; i < (quick ? 2 : 3); i++) {
        job_cfg c = {model_dir, 0, "c_attn", 8, WS[i], 1, steps, 0, 1, "f32"};
        job_result r;
        if (run_job(b, &c, &r) < 0)
            printf("server, %3d synthetic workers: FAILED\n", WS[i]);
        else
            print_server(b, &c, &r);
        free_result(&r);
    }
}

/* ---- 3. the 8B shape ------------------------------------------------------------------------ */

static int write_8b_config(const char *dir) {
    mkdir(dir, 0755);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(
        f, "{\"model_type\": \"llama\", \"hidden_size\": 4096, \"intermediate_size\": 14336, "
           "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
           "\"vocab_size\": 128256, \"max_position_embeddings\": 8192, \"rms_norm_eps\": 1e-5, "
           "\"rope_theta\": 500000.0, \"tie_word_embeddings\": false, \"hidden_act\": \"silu\"}\n");
    return fclose(f);
}

static void bench_8b(const bench *b, int steps) {
    const char *dir = "/tmp/loraps-bench-llama8b-shape";
    if (write_8b_config(dir) < 0) return;
    for (int d = 0; d < 2; d++) {
        for (int pieces = 1; pieces <= 32; pieces += 31) {
            job_cfg c = {dir, 1, "all-linear", 16, 8, 4, steps, 300, pieces, d ? "bf16" : "f32"};
            job_result r;
            if (run_job(b, &c, &r) < 0) {
                printf("8B shape, %s, %d piece(s): FAILED\n", c.wire, pieces);
            } else {
                double over = 0;
                for (int k = 0; k < 4; k++) over += stat_of(&r, k, "step_overhead_ms_mean") / 4;
                printf("8B shape (%.0f MB adapter, 4 shards, 8 workers, 300 ms compute), %s, %2d "
                       "piece(s) a push: step %.1f ms, %.3f beyond the compute; servers' sync "
                       "overhead %.2f ms\n",
                       r.adapter_bytes / 1e6, c.wire, pieces, r.step_ms, (r.step_ms - 300) / 300,
                       over);
            }
            free_result(&r);
        }
    }
}

/* ---- 4. the cost model ---------------------------------------------------------------------- */

/* Per message and per byte, from one run's server timers (shard 0). */
typedef struct costs {
    double push_msg_s;  /* a push's handling beyond its bytes' checks and sums */
    double push_byte_s; /* checking and summing a byte of a push */
    double pull_msg_s;  /* answering a pull (Params handed to libzmq: zero-copy) */
    double step_byte_s; /* closing (mean, norm) and updating a byte of the shard, per step */
} costs;

static costs costs_of(const job_result *r) {
    double pushes = cost(r, 0, "pushes"), bytes = cost(r, 0, "push_bytes");
    double per_byte = cost(r, 0, "check_s") + cost(r, 0, "sum_s");
    double recv = cost(r, 0, "recv_s") / (cost(r, 0, "recv_msgs") ? cost(r, 0, "recv_msgs") : 1);
    costs k;
    k.push_byte_s = per_byte / bytes;
    k.push_msg_s = (cost(r, 0, "push_s") - per_byte) / pushes + recv;
    k.pull_msg_s = cost(r, 0, "pull_s") / cost(r, 0, "pulls");
    k.step_byte_s = (cost(r, 0, "close_s") + cost(r, 0, "update_s")) / cost(r, 0, "updates") /
                    (cost(r, 0, "shard_params") * 4);
    return k;
}

/* The sync-step overhead on a shard of `bytes`: the last push, the close and the update, every
 * worker's pull answered. */
static double predict_ms(const costs *k, int workers, double bytes) {
    return 1e3 * (k->push_msg_s + k->push_byte_s * bytes + k->step_byte_s * bytes +
                  workers * k->pull_msg_s);
}

static void bench_model(const bench *b, const char *model_dir, int steps, int quick) {
    static const int WS[] = {2, 8, 4, 16, 32, 64};
    int n_runs = quick ? 4 : 6;
    costs cal[2];
    double bytes = 0;
    printf("model: per-message and per-byte costs from the servers' timers at 2 and 8 workers "
           "(124M c_attn r=8, one shard)\n");
    for (int i = 0; i < n_runs; i++) {
        job_cfg c = {model_dir, 0, "c_attn", 8, WS[i], 1, steps, 0, 1, "f32"};
        job_result r;
        if (run_job(b, &c, &r) < 0) {
            printf("    %2d workers: FAILED\n", WS[i]);
            free_result(&r);
            return;
        }
        bytes = (double)r.adapter_bytes;
        if (i < 2) {
            cal[i] = costs_of(&r);
            printf("    %2d workers: push %.1f us + %.3f ns/B, pull %.1f us, close + update %.3f "
                   "ns/B of the shard\n",
                   WS[i], cal[i].push_msg_s * 1e6, cal[i].push_byte_s * 1e9,
                   cal[i].pull_msg_s * 1e6, cal[i].step_byte_s * 1e9);
        }
        if (i == 1) { /* the calibration: the mean of both runs */
            costs *k = &cal[0];
            k->push_msg_s = (k->push_msg_s + cal[1].push_msg_s) / 2;
            k->push_byte_s = (k->push_byte_s + cal[1].push_byte_s) / 2;
            k->pull_msg_s = (k->pull_msg_s + cal[1].pull_msg_s) / 2;
            k->step_byte_s = (k->step_byte_s + cal[1].step_byte_s) / 2;
        }
        if (i >= 1) {
            double want = predict_ms(&cal[0], WS[i], bytes);
            double got = stat_of(&r, 0, "step_overhead_ms_mean");
            printf("    %2d workers: sync-step overhead predicted %.3f ms, measured %.3f ms "
                   "(%+.0f %%)%s\n",
                   WS[i], want, got, 100 * (want - got) / got,
                   fabs(want - got) <= 0.25 * got ? "" : "  (outside 25 %)");
        }
        free_result(&r);
    }
    static const int BIG[] = {64, 256, 1024}, SHARDS[] = {1, 4, 16};
    static const double ADAPTERS[] = {0, 41943040.0 * 4};
    for (int a = 0; a < 2; a++) {
        double B = a ? ADAPTERS[1] : bytes;
        printf("    predicted sync-step overhead, %s (%.1f MB):", a ? "8B shape" : "124M c_attn",
               B / 1e6);
        for (int s = 0; s < 3; s++)
            for (int w = 0; w < 3; w++)
                printf("%s%d workers / %d shards %.2f ms", w || s ? ", " : " ", BIG[w], SHARDS[s],
                       predict_ms(&cal[0], BIG[w], B / SHARDS[s]));
        printf("\n");
    }
}

/* ---- 5. a whole local job ------------------------------------------------------------------- */

static void bench_run(const bench *b) {
    char out[] = "/tmp/loraps-bench-run.XXXXXX";
    if (!mkdtemp(out)) return;
    char cmd[8400];
    snprintf(cmd, sizeof cmd,
             "%s/loraps run --workers 2 --preset small --out %s --max-steps 20 --seq-len 128 "
             "--micro-batch 4 > %s/run.out 2>&1",
             b->bin, out, out);
    double t0 = bench_now();
    int rc = system(cmd);
    double wall = bench_now() - t0;
    if (rc != 0) {
        printf("loraps run --workers 2 (small): FAILED (see %s)\n", out);
        return;
    }
    double compute = 0, total = 0;
    for (int k = 0; k < 2; k++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/worker_stats_%d.json", out, k);
        json_t *j = json_load_file(path, 0, NULL);
        if (!j) continue;
        compute += json_real_value(json_object_get(j, "compute_seconds"));
        total += json_real_value(json_object_get(j, "wall_seconds"));
        json_decref(j);
    }
    printf("loraps run --workers 2 (small preset, 20 steps, %.1f s): fraction of worker step time "
           "outside compute %.3f\n",
           wall, total > 0 ? 1.0 - compute / total : -1.0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", out);
    if (system(cmd) != 0) fprintf(stderr, "bench_ps: could not remove %s\n", out);
}

/* ---- main ----------------------------------------------------------------------------------- */

static int ensure_124m(const char *model_dir) {
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", model_dir);
    if (access(cfg, R_OK) == 0) return 0;
    gpt2_config c;
    lp_err err;
    printf("bench_ps: writing a random GPT-2 124M to %s\n", model_dir);
    if (model_preset("124m", &c, &err) < 0 || model_init_write(model_dir, &c, 1, &err) < 0) {
        fprintf(stderr, "bench_ps: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model_dir = "/tmp/loraps-bench-gpt2-124m", *only = NULL;
    int steps = 30, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else {
            fprintf(stderr, "usage: bench_ps [--model DIR] [--steps N] "
                            "[--only kernel|server|8b|model|run] [--quick]\n");
            return 2;
        }
    }
    if (steps < 4) steps = 4;
    bench b;
    ssize_t n = readlink("/proc/self/exe", b.bin, sizeof b.bin - 1);
    if (n <= 0) return 1;
    b.bin[n] = 0;
    *strrchr(b.bin, '/') = 0;
    signal(SIGPIPE, SIG_IGN);
    if (ensure_124m(model_dir) < 0) return 1;
    b.memcpy_gbs = memcpy_gbs();
    printf("bench_ps: memcpy %.2f GB/s (one thread, 64 MB)\n", b.memcpy_gbs);
#define RUN(name) (!only || !strcmp(only, name))
    if (RUN("kernel")) bench_kernel(&b);
    if (RUN("server")) bench_server(&b, model_dir, steps, quick);
    if (RUN("8b")) bench_8b(&b, quick ? 4 : 8);
    if (RUN("model")) bench_model(&b, model_dir, steps, quick);
    if (RUN("run")) bench_run(&b);
    return 0;
}
