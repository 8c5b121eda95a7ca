/* bench_ps: the parameter server under load, and a whole local job.
 *
 * 1. Server side: a loraps-ps (found next to this binary) serving a GPT-2 124M r=8 c_attn
 *    adapter in sync mode to 8 and then 32 synthetic workers (threads of this process, each
 *    with its own socket on loopback, pushing a fixed gradient). Reports pushes/s, aggregation
 *    bandwidth (gradient bytes accepted per second) as GB/s and as a fraction of this machine's
 *    memcpy bandwidth, and the sync-step overhead: from the last push of a step to the first
 *    worker holding the new version.
 * 2. Compute + communication: `loraps run --workers 2` on the small preset; the fraction of the
 *    workers' step time spent outside compute (pull, push, waiting at the barrier).
 *
 * usage: bench_ps [--model DIR] [--steps N] [--skip-run]
 * Prints ratios; asserts nothing. */
#include "model.h"
#include "model_load.h"
#include "model_init.h"
#include "wire.h"

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_bin[4096];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int free_port(void) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "%s/free_ports 1", g_bin);
    FILE *p = popen(cmd, "r");
    int port = -1;
    if (p) {
        if (fscanf(p, "%d", &port) != 1) port = -1;
        pclose(p);
    }
    return port;
}

typedef struct synth {
    int rank, steps;
    const char *ep;
    uint64_t fingerprint;
    void *ctx;
    double *push_sent, *params_at; /* [steps + 1] */
    size_t adapter_bytes;
    int ok;
} synth;

static Loraps__Header *wait_msg(void *sock, wire_msg *m, int body) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    for (int tries = 0; tries < 1200; tries++) {
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        Loraps__ErrorCode code;
        lp_err err;
        if (wire_recv(sock, 0, m, NULL, &code, &err) != WIRE_OK) {
            wire_msg_close(m);
            continue;
        }
        if ((int)m->hdr->body_case == body) return m->hdr;
        if (m->hdr->body_case == LORAPS__HEADER__BODY_ERROR)
            fprintf(stderr, "bench_ps: error from the server: %s\n", m->hdr->error->message);
        wire_msg_close(m);
    }
    return NULL;
}

static void *synth_main(void *arg) {
    synth *w = arg;
    void *sock = zmq_socket(w->ctx, ZMQ_DEALER);
    wire_socket_setup(sock, 0, NULL);
    zmq_connect(sock, w->ep);
    Loraps__Header h = LORAPS__HEADER__INIT;
    Loraps__Hello he = LORAPS__HELLO__INIT;
    h.body_case = LORAPS__HEADER__BODY_HELLO;
    h.hello = &he;
    he.fingerprint = w->fingerprint;
    he.rank = (uint32_t)w->rank;
    he.host = "bench";
    wire_send_header(sock, NULL, 0, &h, NULL, NULL);
    wire_msg m;
    Loraps__Header *r = wait_msg(sock, &m, LORAPS__HEADER__BODY_WELCOME);
    if (!r) {
        zmq_close(sock);
        return NULL;
    }
    uint64_t job = r->job_id, wid = r->welcome->worker_id;
    int n = (int)r->welcome->n_spec;
    wire_src *src = calloc((size_t)n, sizeof *src);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += r->welcome->spec[i]->rows * r->welcome->spec[i]->cols;
    float *grad = malloc(total * sizeof *grad);
    for (size_t i = 0; i < total; i++) grad[i] = 1e-4f * (float)((int)(i % 13) - 6 + w->rank);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t k = r->welcome->spec[i]->rows * r->welcome->spec[i]->cols;
        src[i] = (wire_src){(uint32_t)i, k, grad + off};
        off += k;
    }
    w->adapter_bytes = total * 4;
    wire_msg_close(&m);
    wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .zero_copy_unowned = 1};
    for (int s = 0; s <= w->steps; s++) {
        Loraps__Header ph = LORAPS__HEADER__INIT;
        Loraps__Pull pl = LORAPS__PULL__INIT;
        ph.job_id = job;
        ph.body_case = LORAPS__HEADER__BODY_PULL;
        ph.pull = &pl;
        pl.worker_id = wid;
        pl.version = (uint64_t)s;
        wire_send_header(sock, NULL, 0, &ph, NULL, NULL);
        if (!wait_msg(sock, &m, LORAPS__HEADER__BODY_PARAMS)) goto out;
        w->params_at[s] = now_s();
        int done = m.hdr->params->done;
        wire_msg_close(&m);
        if (done || s == w->steps) break;
        Loraps__Header uh = LORAPS__HEADER__INIT;
        Loraps__Push pu = LORAPS__PUSH__INIT;
        uh.job_id = job;
        uh.body_case = LORAPS__HEADER__BODY_PUSH;
        uh.push = &pu;
        pu.worker_id = wid;
        pu.step = (uint64_t)s;
        pu.base_version = (uint64_t)s;
        pu.n_tokens = 64;
        pu.loss_sum = 64 * 3.0;
        pu.kind = LORAPS__UPDATE_KIND__UPDATE_GRADIENT;
        wire_send(sock, &uh, src, n, &o, NULL, NULL);
        w->push_sent[s] = now_s();
        if (!wait_msg(sock, &m, LORAPS__HEADER__BODY_ACK)) goto out;
        wire_msg_close(&m);
    }
    w->ok = 1;
out:;
    Loraps__Header bh = LORAPS__HEADER__INIT;
    Loraps__Bye by = LORAPS__BYE__INIT;
    bh.job_id = job;
    bh.body_case = LORAPS__HEADER__BODY_BYE;
    bh.bye = &by;
    by.worker_id = wid;
    int linger = 200;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    wire_send_header(sock, NULL, 0, &bh, NULL, NULL);
    zmq_close(sock);
    free(src);
    free(grad);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double memcpy_gbs(void) {
    size_t n = 64u << 20;
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double t0 = now_s();
    for (int i = 0; i < 5; i++) memcpy(b, a, n), a[i] = b[n - 1 - i];
    double t = now_s() - t0;
    free(a);
    free(b);
    return 5.0 * n / t / 1e9;
}

static void bench_server(const char *model_dir, uint64_t fingerprint, int workers, int steps,
                         double mem_gbs) {
    int port = free_port();
    char ep[64], ps_bin[4200], wstr[16], sstr[16];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    snprintf(ps_bin, sizeof ps_bin, "%s/loraps-ps", g_bin);
    snprintf(wstr, sizeof wstr, "%d", workers);
    snprintf(sstr, sizeof sstr, "%d", steps);
    char out[] = "/tmp/loraps-bench-ps.XXXXXX";
    if (!mkdtemp(out)) return;
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(ps_bin, ps_bin, "--model", model_dir, "--bind", ep, "--workers", wstr, "--max-steps",
              sstr, "--quiet", "--target-modules", "c_attn", "--r", "8", "--heartbeat-timeout-ms",
              "120000", "--threads", "1", "--out", out, (char *)NULL);
        _exit(127);
    }
    void *ctx = zmq_ctx_new();
    synth *ws = calloc((size_t)workers, sizeof *ws);
    pthread_t *th = calloc((size_t)workers, sizeof *th);
    for (int k = 0; k < workers; k++) {
        ws[k] = (synth){k,
                        steps,
                        ep,
                        fingerprint,
                        ctx,
                        calloc((size_t)steps + 1, sizeof(double)),
                        calloc((size_t)steps + 1, sizeof(double)),
                        0,
                        0};
        pthread_create(&th[k], NULL, synth_main, &ws[k]);
    }
    for (int k = 0; k < workers; k++) pthread_join(th[k], NULL);
    int ok = 1;
    for (int k = 0; k < workers; k++) ok &= ws[k].ok;
    int status;
    waitpid(pid, &status, 0);
    if (!ok) {
        printf("server, %2d synthetic workers: FAILED (a worker did not finish)\n", workers);
    } else {
        /* Steady state: from version 1 being served to the last version being served. */
        double t0 = 1e300, t1 = 0;
        for (int k = 0; k < workers; k++) {
            if (ws[k].params_at[1] < t0) t0 = ws[k].params_at[1];
            if (ws[k].params_at[steps] > t1) t1 = ws[k].params_at[steps];
        }
        double pushes = (double)workers * (steps - 1);
        double secs = t1 - t0;
        double gbs = pushes * (double)ws[0].adapter_bytes / secs / 1e9;
        double *over = calloc((size_t)steps, sizeof *over);
        int n_over = 0;
        for (int s = 1; s < steps; s++) {
            double last_push = 0, first_params = 1e300;
            for (int k = 0; k < workers; k++) {
                if (ws[k].push_sent[s] > last_push) last_push = ws[k].push_sent[s];
                if (ws[k].params_at[s + 1] < first_params) first_params = ws[k].params_at[s + 1];
            }
            over[n_over++] = (first_params - last_push) * 1e3;
        }
        qsort(over, (size_t)n_over, sizeof *over, cmp_double);
        double step_ms = secs / (steps - 1) * 1e3;
        char path[200];
        snprintf(path, sizeof path, "%s/ps_stats_0.json", out);
        json_t *st = json_load_file(path, 0, NULL);
        double srv = st ? json_real_value(json_object_get(st, "step_overhead_ms_mean")) : -1;
        double srv_max = st ? json_real_value(json_object_get(st, "step_overhead_ms_max")) : -1;
        json_decref(st);
        printf("server, %2d synthetic workers: %6.0f pushes/s, aggregation %.3f GB/s (%.3f of "
               "memcpy), step %.2f ms\n"
               "    sync-step overhead (server: last push accepted -> new version sent to all): "
               "mean %.2f ms, max %.2f ms (%.3f of the step)\n"
               "    seen by the workers (last push sent -> first new version received, incl. "
               "the transfer of every push): median %.2f ms\n",
               workers, pushes / secs, gbs, gbs / mem_gbs, step_ms, srv, srv_max, srv / step_ms,
               over[n_over / 2]);
        free(over);
    }
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", out);
    if (system(rm) != 0) fprintf(stderr, "bench_ps: could not remove %s\n", out);
    for (int k = 0; k < workers; k++) free(ws[k].push_sent), free(ws[k].params_at);
    free(ws);
    free(th);
    zmq_ctx_term(ctx);
}

static void bench_run(void) {
    char out[] = "/tmp/loraps-bench-run.XXXXXX";
    if (!mkdtemp(out)) return;
    char cmd[8400];
    snprintf(cmd, sizeof cmd,
             "%s/loraps run --workers 2 --preset small --out %s --max-steps 20 --seq-len 128 "
             "--micro-batch 4 > %s/run.out 2>&1",
             g_bin, out, out);
    double t0 = now_s();
    int rc = system(cmd);
    double wall = now_s() - t0;
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

int main(int argc, char **argv) {
    const char *model_dir = "/tmp/loraps-bench-gpt2-124m";
    int steps = 30, skip_run = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-run"))
            skip_run = 1;
        else {
            fprintf(stderr, "usage: bench_ps [--model DIR] [--steps N] [--skip-run]\n");
            return 2;
        }
    }
    if (steps < 3) steps = 3;
    ssize_t n = readlink("/proc/self/exe", g_bin, sizeof g_bin - 1);
    if (n <= 0) return 1;
    g_bin[n] = 0;
    *strrchr(g_bin, '/') = 0;
    signal(SIGPIPE, SIG_IGN);
    lp_err err;
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", model_dir);
    if (access(cfg, R_OK) != 0) {
        gpt2_config c;
        printf("bench_ps: writing a random GPT-2 124M to %s\n", model_dir);
        if (model_preset("124m", &c, &err) < 0 || model_init_write(model_dir, &c, 1, &err) < 0) {
            fprintf(stderr, "bench_ps: %s\n", err.msg);
            return 1;
        }
    }
    model *m;
    if (model_load(&m, model_dir, &err) < 0) {
        fprintf(stderr, "bench_ps: %s\n", err.msg);
        return 1;
    }
    uint64_t fp = model_fingerprint(m);
    model_free(m);
    double mem = memcpy_gbs();
    printf("bench_ps: memcpy %.2f GB/s; adapter GPT-2 124M r=8 c_attn (294912 params, 1.18 MB)\n",
           mem);
    bench_server(model_dir, fp, 8, steps, mem);
    bench_server(model_dir, fp, 32, steps, mem);
    if (!skip_run) bench_run();
    return 0;
}
