/* loraps-worker: flags, set-up from Welcome, and the training loop. */
#include "worker.h"
#include "model_load.h"
#include "lora_targets.h"

#include "adamw.h"
#include "curve_auth.h"
#include "jobspec.h"
#include "metrics_http.h"
#include "net_config.h"
#include "ops.h"
#include "train_step.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t worker_stop;
static int g_rank_for_log;
static int g_quiet;
/* Orchestration options (common/net_config.h, common/metrics_http.h). */
static int g_metrics_port = -1; /* -1: no HTTP endpoint */
static char g_metrics_bind[64] = "0.0.0.0";
static char g_env_notes[2048];
static metrics *g_metrics;
static const netcfg_flag WORKER_ENV_FLAGS[] = {
    {"servers", 1},         {"model", 1},        {"rank", 1},          {"threads", 1},
    {"connect-timeout", 1}, {"stats", 1},        {"step-delay-ms", 1}, {"quiet", 0},
    {"metrics-port", 1},    {"metrics-bind", 1}, {"data", 1},          {"val-file", 1},
    {"tokenizer", 1},       {"curve-dir", 1},    {"curve-client", 1}, /* common/curve_auth.h */
};
static char g_curve_dir[PATH_MAX], g_curve_client[128];

static void on_signal(int sig) {
    worker_stop = sig;
}

void worker_log(const worker *w, const char *fmt, ...) {
    (void)w;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loraps-worker[%d]: %s\n", g_rank_for_log, msg);
    fflush(stderr);
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps-worker --servers EP[,EP...] --model DIR --rank K [options]\n\n"
            "Rank K of the job's N workers: pulls the adapter from every server shard, computes\n"
            "gradients on its part of each global batch, pushes them back. The job's settings\n"
            "come from the servers (Welcome).\n\n"
            "  --servers LIST        every server shard's endpoint (any order)\n"
            "  --model DIR           the base model (HF folder); must match the job's\n"
            "                        fingerprint\n"
            "  --rank K              this worker's data shard, 0 <= K < the job's workers\n"
            "  --data FILE           training data: .txt, .jsonl ({\"text\"} or {\"prompt\",\n"
            "                        \"completion\"}) or a .bin of token ids; the job says how it\n"
            "                        becomes sequences (seq_len, layout, val_fraction, ...).\n"
            "                        Without it: the embedded token-level demo task\n"
            "  --val-file FILE       validation data (default: the job's val_fraction of --data)\n"
            "  --tokenizer PATH      tokenizer.json (default: the model folder's)\n"
            "  --threads N           compute threads (default: the job's setting)\n"
            "  --connect-timeout S   give up joining after S seconds (default 60)\n"
            "  --stats FILE          write traffic and timing statistics (JSON) at exit\n"
            "  --step-delay-ms MS    sleep this long per step (simulates a straggler)\n"
            "  --quiet               no per-step lines\n"
            "  --metrics-port P      serve /healthz, /readyz and Prometheus /metrics on port P\n"
            "  --metrics-bind A      address for that port (default 0.0.0.0; :: for IPv6)\n"
            "  --curve-dir DIR       CURVE keys from `loraps keygen` (server.pub and this\n"
            "                        worker's pair); without them traffic is unauthenticated\n"
            "  --curve-client NAME   the key pair DIR/NAME.key (default client-<rank>, else\n"
            "                        client-0)\n"
            "  --help                this text\n\n"
            "Every option is also a variable (a flag wins): LORAPS_SERVERS, LORAPS_MODEL,\n"
            "LORAPS_RANK, LORAPS_CONNECT_TIMEOUT, LORAPS_METRICS_PORT, ...; without --rank and\n"
            "LORAPS_RANK, Kubernetes' JOB_COMPLETION_INDEX (an Indexed Job) is the rank.\n");
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps-worker: error: %s: %s\n", what, why);
    return 2;
}

static int parse_int(const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

static int parse_args(worker_config *c, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    c->rank = -1;
    c->connect_timeout_ms = 60000;
    c->threads = -1;
    const char *servers = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--quiet")) {
            c->quiet = 1;
            continue;
        }
        int known = !strcmp(a, "--servers") || !strcmp(a, "--model") || !strcmp(a, "--rank") ||
                    !strcmp(a, "--stats") || !strcmp(a, "--connect-timeout") ||
                    !strcmp(a, "--step-delay-ms") || !strcmp(a, "--threads") ||
                    !strcmp(a, "--metrics-port") || !strcmp(a, "--metrics-bind") ||
                    !strcmp(a, "--data") || !strcmp(a, "--val-file") || !strcmp(a, "--tokenizer") ||
                    !strcmp(a, "--curve-dir") || !strcmp(a, "--curve-client");
        if (!known) return fail(a, "unknown option (see --help)");
        if (i + 1 >= argc) return fail(a, "needs a value");
        const char *v = argv[++i];
        if (!strcmp(a, "--servers")) servers = v;
        if (!strcmp(a, "--model")) snprintf(c->model_dir, sizeof c->model_dir, "%s", v);
        if (!strcmp(a, "--stats")) snprintf(c->stats_path, sizeof c->stats_path, "%s", v);
        if (!strcmp(a, "--data")) snprintf(c->data_path, sizeof c->data_path, "%s", v);
        if (!strcmp(a, "--val-file")) snprintf(c->val_path, sizeof c->val_path, "%s", v);
        if (!strcmp(a, "--tokenizer"))
            snprintf(c->tokenizer_path, sizeof c->tokenizer_path, "%s", v);
        if (!strcmp(a, "--rank") && parse_int(v, 0, 65535, &c->rank) < 0)
            return fail("--rank", "expected an integer in 0..65535");
        if (!strcmp(a, "--step-delay-ms") && parse_int(v, 0, 600000, &c->step_delay_ms) < 0)
            return fail("--step-delay-ms", "expected milliseconds in 0..600000");
        if (!strcmp(a, "--threads") && parse_int(v, 0, 4096, &c->threads) < 0)
            return fail("--threads", "expected an integer in 0..4096");
        if (!strcmp(a, "--metrics-port") && parse_int(v, 0, 65535, &g_metrics_port) < 0)
            return fail("--metrics-port", "expected a port in 0..65535");
        if (!strcmp(a, "--metrics-bind")) snprintf(g_metrics_bind, sizeof g_metrics_bind, "%s", v);
        if (!strcmp(a, "--curve-dir")) snprintf(g_curve_dir, sizeof g_curve_dir, "%s", v);
        if (!strcmp(a, "--curve-client")) snprintf(g_curve_client, sizeof g_curve_client, "%s", v);
        if (!strcmp(a, "--connect-timeout")) {
            int s;
            if (parse_int(v, 1, 86400, &s) < 0) return fail(a, "expected seconds in 1..86400");
            c->connect_timeout_ms = s * 1000;
        }
    }
    if (!servers) return fail("--servers", "required (the server shards' endpoints)");
    if (!c->model_dir[0]) return fail("--model", "required (the base model folder)");
    if (c->rank < 0)
        return fail("--rank", "required (or LORAPS_RANK, or JOB_COMPLETION_INDEX on Kubernetes)");
    char *copy = strdup(servers);
    int n = 1;
    for (const char *p = servers; *p; p++) n += *p == ',';
    c->servers = calloc((size_t)n, sizeof *c->servers);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        if (strlen(tok) >= 256) {
            free(copy);
            return fail("--servers", "endpoint too long");
        }
        lp_err err;
        if (netcfg_check_endpoint(tok, &err) < 0) {
            free(copy);
            return fail("--servers", err.msg);
        }
        c->servers[c->n_servers++] = strdup(tok);
    }
    free(copy);
    if (!c->n_servers) return fail("--servers", "empty list");
    return 0;
}

int worker_setup_from_welcome(worker *w, const Loraps__Welcome *wel, uint64_t job_id, lp_err *err) {
    const Loraps__JobSpec *js = wel->job;
    job *j = &w->job;
    if (jobspec_to_job(js, j, err) < 0) return -1;
    if (w->cfg.rank >= j->workers)
        return lp_fail(err, "rank %d, but the job has %d workers", w->cfg.rank, j->workers);
    w->wire_dtype = js->wire_dtype;
    atomic_store(&w->job_id, job_id);

    /* The adapter as the model family builds it from the job's LoRA settings: it must be the
     * spec the servers sent, name by name and shape by shape. */
    lora_config lc;
    if (job_lora_config(j, &lc, err) < 0) return -1;
    const lora_module *mods;
    int n_mods = model_lora_modules(w->mdl, &mods);
    int rc = lora_adapter_build(&w->adapter, &lc, mods, n_mods, err);
    lora_config_free(&lc);
    if (rc < 0) return -1;
    if ((size_t)w->adapter.n_tensors != wel->n_spec || wel->n_placement != wel->n_spec)
        return lp_fail(err, "the servers' adapter has %zu tensors, this model gives %d",
                       wel->n_spec, w->adapter.n_tensors);
    w->n_spec = (int)wel->n_spec;
    w->spec_names = calloc(wel->n_spec, sizeof *w->spec_names);
    w->spec_rows = calloc(wel->n_spec, sizeof *w->spec_rows);
    w->spec_cols = calloc(wel->n_spec, sizeof *w->spec_cols);
    w->placement = calloc(wel->n_spec, sizeof *w->placement);
    if (!w->spec_names || !w->spec_rows || !w->spec_cols || !w->placement)
        return lp_fail(err, "out of memory");
    for (int i = 0; i < w->n_spec; i++) {
        const lora_tensor *t = &w->adapter.tensors[i];
        const Loraps__TensorSpec *s = wel->spec[i];
        if (strcmp(t->name, s->name) || (uint64_t)t->rows != s->rows ||
            (uint64_t)t->cols != s->cols)
            return lp_fail(
                err, "tensor %d: the servers have %s [%llu, %llu], this model %s [%lld, %lld]", i,
                s->name, (unsigned long long)s->rows, (unsigned long long)s->cols, t->name,
                (long long)t->rows, (long long)t->cols);
        if (wel->placement[i] >= wel->n_shards)
            return lp_fail(err, "tensor %d placed on shard %u of %u", i, wel->placement[i],
                           wel->n_shards);
        w->spec_names[i] = strdup(s->name);
        w->spec_rows[i] = s->rows;
        w->spec_cols[i] = s->cols;
        w->placement[i] = wel->placement[i];
    }
    if (model_trainer_new(&w->trainer, w->mdl, &w->adapter, j->micro_batch, j->seq_len, err) < 0)
        return -1;
    worker_data_paths dp = {NULL, NULL, NULL};
    if (w->cfg.data_path[0]) {
        dp.data = w->cfg.data_path;
        dp.val_file = w->cfg.val_path[0] ? w->cfg.val_path : NULL;
        /* a .bin needs no tokenizer; text takes the model's unless told otherwise */
        size_t n = strlen(dp.data);
        int is_bin = n >= 4 && !strcmp(dp.data + n - 4, ".bin");
        dp.tokenizer = w->cfg.tokenizer_path[0] ? w->cfg.tokenizer_path
                       : is_bin                 ? NULL
                                                : w->cfg.model_dir;
    } else if (w->cfg.val_path[0]) {
        return lp_fail(err, "--val-file needs --data");
    }
    if (worker_data_open(&w->data, j, model_vocab_size(w->mdl), &dp, err) < 0)
        return lp_wrap(err, "data");
    /* a whole step's sequences (train_step); a validation pass uses the first micro-batch */
    size_t n = (size_t)j->grad_accum * (size_t)j->micro_batch * (size_t)j->seq_len;
    w->inputs = malloc(n * sizeof *w->inputs);
    w->targets = malloc(n * sizeof *w->targets);
    if (!w->inputs || !w->targets) return lp_fail(err, "out of memory");
    ops_set_threads(w->cfg.threads >= 0 ? w->cfg.threads : j->threads);

    fprintf(stderr, "loraps-worker[%d]: effective configuration\n", w->cfg.rank);
    fprintf(stderr, "  rank             %d of %d\n", w->cfg.rank, j->workers);
    for (int k = 0; k < w->cfg.n_servers; k++)
        fprintf(stderr, "  server           %s\n", w->cfg.servers[k]);
    fprintf(stderr, "  model            %s (fingerprint %016llx)\n", w->cfg.model_dir,
            (unsigned long long)w->fingerprint);
    fprintf(stderr, "  job id           %016llx\n", (unsigned long long)job_id);
    fprintf(stderr, "  adapter          %d tensors, %zu params\n", w->adapter.n_tensors,
            w->adapter.n_params);
    fprintf(stderr, "  data             %s\n", worker_data_name(w->data));
    fprintf(stderr, "  arena            %.1f MiB\n",
            model_trainer_arena_bytes(w->trainer) / 1048576.0);
    if (g_metrics_port >= 0)
        fprintf(stderr, "  metrics          http://%s:%d/metrics (and /healthz, /readyz)\n",
                g_metrics_bind, g_metrics_port);
    fputs(g_env_notes, stderr);
    job_print(j, stderr, "  ");
    fflush(stderr);
    return 0;
}

/* ---- health and Prometheus metrics ----------------------------------------------------------- */

enum {
    WM_STEP,
    WM_STEPS,
    WM_LOSS,
    WM_TOKENS,
    WM_TOKENS_PER_S,
    WM_BYTES_IN,
    WM_BYTES_OUT,
    WM_STEP_BYTES,
    WM_COMPUTE,
    WM_SHARDS,
    WM_N
};
static int g_wm[WM_N];

static int worker_metrics_start(const worker_config *c, lp_err *err) {
    if (g_metrics_port < 0) return 0;
    char labels[64];
    snprintf(labels, sizeof labels, "role=\"worker\",rank=\"%d\"", c->rank);
    if (metrics_start(&g_metrics, g_metrics_bind, g_metrics_port, labels, err) < 0) return -1;
    g_metrics_port = metrics_port(g_metrics);
    static const struct {
        int id;
        const char *name, *help;
        metrics_kind kind;
    } defs[] = {
        {WM_STEP, "loraps_step", "the step this worker computed last", METRICS_GAUGE},
        {WM_STEPS, "loraps_worker_steps_total", "steps this worker pushed", METRICS_COUNTER},
        {WM_LOSS, "loraps_loss", "mean loss of this worker's latest step", METRICS_GAUGE},
        {WM_TOKENS, "loraps_tokens_total", "tokens this worker trained on", METRICS_COUNTER},
        {WM_TOKENS_PER_S, "loraps_tokens_per_second", "tokens/s of the latest step (wall)",
         METRICS_GAUGE},
        {WM_BYTES_IN, "loraps_bytes_received_total", "bytes received (wire)", METRICS_COUNTER},
        {WM_BYTES_OUT, "loraps_bytes_sent_total", "bytes sent (wire)", METRICS_COUNTER},
        {WM_STEP_BYTES, "loraps_step_bytes", "bytes sent and received in the latest step",
         METRICS_GAUGE},
        {WM_COMPUTE, "loraps_compute_seconds_total", "seconds of forward and backward",
         METRICS_COUNTER},
        {WM_SHARDS, "loraps_server_shards", "server shards this worker is joined to",
         METRICS_GAUGE},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        g_wm[defs[i].id] = metrics_define(g_metrics, defs[i].name, defs[i].kind, defs[i].help);
    return 0;
}

static void worker_metrics_step(const worker *w, uint64_t step, double loss, uint64_t tokens,
                                uint64_t bytes, double wall_s) {
    metrics *m = g_metrics;
    if (!m) return;
    metrics_set(m, g_wm[WM_STEP], (double)step);
    metrics_set(m, g_wm[WM_STEPS], (double)w->steps_done);
    metrics_set(m, g_wm[WM_LOSS], tokens ? loss / (double)tokens : 0);
    metrics_add(m, g_wm[WM_TOKENS], (double)tokens);
    if (wall_s > 0) metrics_set(m, g_wm[WM_TOKENS_PER_S], (double)tokens / wall_s);
    metrics_set(m, g_wm[WM_BYTES_IN], (double)w->net.bytes_received);
    metrics_set(m, g_wm[WM_BYTES_OUT], (double)w->net.bytes_sent);
    metrics_set(m, g_wm[WM_STEP_BYTES], (double)bytes);
    metrics_set(m, g_wm[WM_COMPUTE], w->compute_s);
}

/* The mean gradient of this rank's part of global batch `step`: its grad_accum * micro_batch
 * sequences, from the first one the data position says. */
static int compute(worker *w, uint64_t step, train_result *r, lp_err *err) {
    const job *j = &w->job;
    worker_wait_inflight(w);
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

static int write_stats(worker *w, lp_err *err) {
    if (!w->cfg.stats_path[0]) return 0;
    json_t *o = json_object();
    json_object_set_new(o, "rank", json_integer(w->cfg.rank));
    json_object_set_new(o, "steps", json_integer((json_int_t)w->steps_done));
    json_object_set_new(o, "adapter_params", json_integer((json_int_t)w->adapter.n_params));
    json_object_set_new(o, "adapter_bytes_f32", json_integer((json_int_t)w->adapter.n_params * 4));
    json_object_set_new(o, "wire_dtype", json_string(wire_dtype_name(w->wire_dtype)));
    json_object_set_new(o, "bytes_sent", json_integer((json_int_t)w->net.bytes_sent));
    json_object_set_new(o, "bytes_received", json_integer((json_int_t)w->net.bytes_received));
    json_object_set_new(o, "heartbeat_bytes", json_integer((json_int_t)atomic_load(&w->hb_bytes)));
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

static int train(worker *w, lp_err *err) {
    uint64_t step = 0, start = 0;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        uint64_t st;
        int rc = worker_join(w, k, &st, err);
        if (rc == WN_DONE) return 0;
        if (rc != WN_OK) return rc == WN_STOP ? 0 : -1;
        if (st > start) start = st;
    }
    if (worker_heartbeat_start(w, err) < 0) return -1;
    step = start;
    int sync = !strcmp(w->job.mode, "sync");
    worker_log(w, "joined %d server shard(s); first step %llu", w->cfg.n_servers,
               (unsigned long long)step);
    metrics_set(g_metrics, g_wm[WM_SHARDS], w->cfg.n_servers);
    metrics_set_ready(g_metrics, 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!worker_stop) {
        if (!sync && step >= (uint64_t)w->job.max_steps) break;
        uint64_t before = w->net.bytes_sent + w->net.bytes_received;
        struct timespec ts0, ts1;
        clock_gettime(CLOCK_MONOTONIC, &ts0);
        int rc = worker_pull_all(w, sync ? step : 0, step, err);
        if (rc == WN_REJOIN) {
            if ((rc = worker_rejoin_lost(w, &step, err)) != WN_OK) return rc == WN_FATAL ? -1 : 0;
            continue;
        }
        if (rc == WN_STOP || rc == WN_DONE) break;
        if (rc != WN_OK) return -1;
        int done = 0;
        uint64_t vmax = 0, vmin = UINT64_MAX;
        for (int k = 0; k < w->cfg.n_servers; k++) {
            done |= w->shards[k].done;
            if (w->shards[k].version > vmax) vmax = w->shards[k].version;
            if (w->shards[k].version < vmin) vmin = w->shards[k].version;
        }
        if (done) break;
        if (sync) {
            if (vmin != vmax) { /* a shard is ahead: catch up with all of them */
                step = vmax;
                continue;
            }
            step = vmax;
            if (step >= (uint64_t)w->job.max_steps) break;
        }
        /* Validation at the adapter this step starts from, before its gradient. */
        val_result eval, *evp = NULL;
        if (w->job.eval_every > 0 && step % (uint64_t)w->job.eval_every == 0) {
            if (worker_data_validate(w->data, w->trainer, w->job.micro_batch, w->job.seq_len,
                                     w->cfg.rank, w->job.workers, w->inputs, w->targets, &eval,
                                     err) < 0)
                return -1;
            evp = &eval;
        }
        train_result r;
        if (compute(w, step, &r, err) < 0) return -1;
        uint64_t tokens = r.n_tokens;
        double loss = r.loss_sum, ss = r.grad_sum_sq, secs = r.seconds;
        w->compute_s += secs;
        if (w->cfg.step_delay_ms) {
            struct timespec d = {w->cfg.step_delay_ms / 1000,
                                 (long)(w->cfg.step_delay_ms % 1000) * 1000000L};
            nanosleep(&d, NULL);
        }
        rc = worker_push_all(w, step, vmin, tokens, loss, ss, secs, evp, err);
        if (rc == WN_REJOIN) {
            if ((rc = worker_rejoin_lost(w, &step, err)) != WN_OK) return rc == WN_FATAL ? -1 : 0;
            continue;
        }
        if (rc == WN_STOP || rc == WN_DONE) break;
        if (rc != WN_OK) return -1;
        uint64_t bytes = w->net.bytes_sent + w->net.bytes_received - before;
        record_step_bytes(w, bytes);
        w->steps_done++;
        clock_gettime(CLOCK_MONOTONIC, &ts1);
        worker_metrics_step(w, step, loss, tokens, bytes,
                            (double)(ts1.tv_sec - ts0.tv_sec) +
                                (double)(ts1.tv_nsec - ts0.tv_nsec) / 1e9);
        if (!g_quiet)
            worker_log(w, "step %llu loss %.4f tokens %llu compute %.1f ms bytes %llu%s%s",
                       (unsigned long long)step, loss / (double)tokens, (unsigned long long)tokens,
                       secs * 1000, (unsigned long long)bytes,
                       evp ? " (with its share of the validation pass)" : "",
                       w->shards[0].ack_status == LORAPS__ACK_STATUS__ACK_ACCEPTED ? ""
                                                                                   : " (dropped)");
        step++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    w->wall_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    return 0;
}

int main(int argc, char **argv) {
    static worker w;
    /* Every option also as LORAPS_*; the rank also from JOB_COMPLETION_INDEX. */
    int orig_argc = argc, env_argc;
    char **env_argv;
    lp_err env_err;
    if (netcfg_env_args(WORKER_ENV_FLAGS,
                        (int)(sizeof WORKER_ENV_FLAGS / sizeof WORKER_ENV_FLAGS[0]), argc, argv,
                        &env_argc, &env_argv, g_env_notes, sizeof g_env_notes, &env_err) < 0)
        return fail("environment", env_err.msg);
    int rc = parse_args(&w.cfg, env_argc, env_argv);
    netcfg_args_free(env_argc, env_argv, orig_argc);
    if (rc) return rc;
    g_rank_for_log = w.cfg.rank;
    g_quiet = w.cfg.quiet;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    lp_err err;
    char key_name[128];
    int curve =
        curve_load_client(g_curve_dir, g_curve_client, w.cfg.rank, key_name, sizeof key_name, &err);
    if (curve < 0) return fail("--curve-dir", err.msg);
    if (curve)
        worker_log(&w, "CURVE: authenticating with %s/%s.key", g_curve_dir, key_name);
    else
        worker_log(&w, "WARNING: no CURVE keys (--curve-dir / LORAPS_CURVE_DIR): traffic is "
                       "unauthenticated and unencrypted");
    if (worker_metrics_start(&w.cfg, &err) < 0) return fail("--metrics-port", err.msg) - 1;
    if (model_load(&w.mdl, w.cfg.model_dir, &err) < 0) {
        metrics_stop(g_metrics);
        return fail(w.cfg.model_dir, err.msg) - 1;
    }
    w.fingerprint = model_fingerprint(w.mdl);
    w.ctx = zmq_ctx_new();
    w.shards = calloc((size_t)w.cfg.n_servers, sizeof *w.shards);
    for (int k = 0; k < w.cfg.n_servers; k++) {
        snprintf(w.shards[k].endpoint, sizeof w.shards[k].endpoint, "%s", w.cfg.servers[k]);
        w.shards[k].shard = -1;
    }
    atomic_init(&w.inflight, 0);
    /* Start-up never waits silently: say whom we wait for, and for how long at most. */
    for (int k = 0; k < w.cfg.n_servers; k++)
        worker_log(&w, "connecting to server %s (giving up after %d s: --connect-timeout)",
                   w.cfg.servers[k], w.cfg.connect_timeout_ms / 1000);
    int status = train(&w, &err);
    metrics_set_ready(g_metrics, 0);
    worker_heartbeat_stop(&w);
    if (status == 0) worker_bye_all(&w);
    if (status < 0)
        fprintf(stderr, "loraps-worker: error: %s\n", err.msg);
    else if (worker_stop)
        worker_log(&w, "stopped by signal %d", (int)worker_stop);
    else
        worker_log(&w, "done: %llu steps", (unsigned long long)w.steps_done);
    if (write_stats(&w, &err) < 0) fprintf(stderr, "loraps-worker: error: %s\n", err.msg);
    for (int k = 0; k < w.cfg.n_servers; k++) {
        if (w.shards[k].sock) zmq_close(w.shards[k].sock);
        free(w.shards[k].index);
        free(w.shards[k].numel);
        free(w.shards[k].param_ptr);
        free(w.shards[k].grad_ptr);
        free(w.cfg.servers[k]);
    }
    zmq_ctx_term(w.ctx);
    free(w.shards);
    free(w.cfg.servers);
    for (int i = 0; i < w.n_spec; i++) free(w.spec_names[i]);
    free(w.spec_names);
    free(w.spec_rows);
    free(w.spec_cols);
    free(w.placement);
    free(w.step_bytes);
    free(w.inputs);
    free(w.targets);
    worker_data_free(w.data);
    model_trainer_free(w.trainer);
    lora_adapter_free(&w.adapter);
    model_free(w.mdl);
    metrics_stop(g_metrics);
    return status < 0 ? 1 : 0;
}
