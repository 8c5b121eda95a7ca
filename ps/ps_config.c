/* loraps-ps: flags, LORAPS_* variables and the job file into a ps_config. */
#include "ps_config.h"

#include "net_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const netcfg_flag PS_ENV_FLAGS[] = {
    {"model", 1},        {"bind", 1},          {"out", 1},           {"job", 1},
    {"shard", 1},        {"peers", 1},         {"ps-threads", 1},    {"metrics", 1},
    {"quiet", 0},        {"metrics-port", 1},  {"metrics-bind", 1},  {"resume", 1},
    {"idle-exit", 1},    {"curve-dir", 1},     {"max-msg-bytes", 1}, {"max-workers", 1},
    {"reject-limit", 1}, {"reject-window", 1}, {"ban-seconds", 1},   {"durable-every", 1},
    {"shapes-only", 0},
};

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
            "                   checkpoints DIR/checkpoint-<step> (save_every, SIGTERM, the end),\n"
            "                   each with a README.md model card; shard 0 writes TensorBoard\n"
            "                   events to DIR/runs (a new file on each start)\n"
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
            "  --shapes-only    read only --model's config.json (no weights): the adapter's\n"
            "                   shapes, and a fingerprint of the config that real workers do\n"
            "                   not match (benchmarks with synthetic workers; an 8B shape)\n"
            "  --quiet          no progress lines\n"
            "  --help           this text\n\n"
            "Every option above is also a variable: LORAPS_BIND, LORAPS_PEERS, LORAPS_SHARD,\n"
            "LORAPS_METRICS_PORT, ... (a flag wins over its variable). A --bind is not needed on\n"
            "a cluster: a shard whose --peers entry is a DNS name listens on 0.0.0.0.\n\n");
    ps_security_usage(out);
    fprintf(out,
            "  --durable-every K  every K-th version is a checkpoint on disk (needs --out) before\n"
            "                   any worker is served it: a kill -9 of the server loses no served\n"
            "                   step (resume with --resume latest); 0: off (save_every only).\n"
            "                   A write that fails (disk full, read-only) is retried every\n"
            "                   second and nothing is served meanwhile (state kept in memory);\n"
            "                   without it a failed checkpoint is logged and training goes on\n");
    fprintf(out, "\njob settings:\n");
    job_print_help(out);
}

/* One write at exit: `loraps-ps --help | grep -q` must not die of SIGPIPE mid-text. The buffer
 * lives until exit() has flushed it, since exit() never returns here. */
static void help_and_exit(void) {
    char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    usage(stdout);
    exit(0);
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

/* The server's own flags that take a value: 1 if consumed, 0 if not one of them, or the exit
 * status of a bad value (2). */
static int server_flag(ps_config *c, const char *a, const char *v, const char **peers) {
    const struct {
        const char *flag;
        char *dst;
        size_t size;
    } text[] = {
        {"--resume", c->resume, sizeof c->resume},
        {"--model", c->model_dir, sizeof c->model_dir},
        {"--bind", c->bind, sizeof c->bind},
        {"--out", c->out_dir, sizeof c->out_dir},
        {"--metrics", c->metrics_path, sizeof c->metrics_path},
        {"--metrics-bind", c->metrics_bind, sizeof c->metrics_bind},
        {"--job", NULL, 0}, /* read before the other flags */
        {"--peers", NULL, 0},
    };
    const struct {
        const char *flag;
        long lo, hi;
        int *dst;
        int empty_is_zero; /* as strtol reads it */
        const char *expected;
    } number[] = {
        {"--idle-exit", 0, 30 * 86400, &c->idle_exit_s, 0, "expected seconds in 0..2592000"},
        {"--metrics-port", 0, 65535, &c->metrics_port, 0, "expected a port in 0..65535"},
        {"--ps-threads", 1, 1024, &c->threads, 0, "expected 1..1024"},
        {"--shard", 0, 1024, &c->shard, 1, "expected 0..1024"},
        {"--durable-every", 0, 1 << 30, &c->durable_every, 0,
         "expected an integer in 0..1073741824"},
    };
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++) {
        if (strcmp(a, text[i].flag)) continue;
        if (!v) return fail(a, "needs a value");
        if (text[i].dst) snprintf(text[i].dst, text[i].size, "%s", v);
        if (!strcmp(a, "--peers")) *peers = v;
        return 1;
    }
    for (size_t i = 0; i < sizeof number / sizeof number[0]; i++) {
        if (strcmp(a, number[i].flag)) continue;
        if (!v) return fail(a, "needs a value");
        char *end;
        long x = strtol(v, &end, 10);
        if (*end || (!*v && !number[i].empty_is_zero) || x < number[i].lo || x > number[i].hi)
            return fail(a, number[i].expected);
        *number[i].dst = (int)x;
        return 1;
    }
    return 0;
}

static void defaults(ps_config *c) {
    memset(c, 0, sizeof *c);
    job_defaults(&c->job);
    ps_security_defaults(&c->security);
    c->n_shards = 1;
    c->threads = 1;
    c->metrics_port = -1;
    snprintf(c->metrics_bind, sizeof c->metrics_bind, "0.0.0.0");
}

/* The flags in order; the job file first: flags and then the environment override it. */
static int parse_flags(ps_config *c, int argc, char **argv, const char **peers) {
    lp_err err;
    const char *job_file = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--job") && i + 1 < argc) job_file = argv[i + 1];
    if (job_file && job_load_file(&c->job, job_file, &err) < 0) return fail("--job", err.msg);
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) help_and_exit();
        if (!strcmp(a, "--quiet") || !strcmp(a, "--shapes-only")) {
            *(!strcmp(a, "--quiet") ? &c->quiet : &c->shapes_only) = 1;
            i++;
            continue;
        }
        int r = job_parse_flag(&c->job, argc, argv, &i, &err);
        if (r < 0) return fail(a, err.msg);
        if (r > 0) continue;
        r = ps_security_flag(&c->security, a, v, &err);
        if (r < 0) return fail(a, err.msg);
        if (r == 0) r = server_flag(c, a, v, peers);
        if (r > 1) return r;
        if (r == 0) return fail(a, "unknown option (see --help)");
        i += 2;
    }
    return 0;
}

/* The job and the shard layout after every flag and variable is in. */
static int finish(ps_config *c, const char *peers) {
    lp_err err;
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
    c->total_updates = (uint64_t)c->job.max_steps * (c->sync ? 1u : (uint64_t)c->job.workers);
    return 0;
}

int ps_config_load(ps_config *c, int argc, char **argv) {
    defaults(c);
    /* Every option also as LORAPS_*: the variables become flags the command line lacks. */
    int env_argc;
    char **env_argv;
    lp_err err;
    if (netcfg_env_args(PS_ENV_FLAGS, (int)(sizeof PS_ENV_FLAGS / sizeof PS_ENV_FLAGS[0]), argc,
                        argv, &env_argc, &env_argv, c->env_notes, sizeof c->env_notes, &err) < 0)
        return fail("environment", err.msg);
    const char *peers = NULL;
    int rc = parse_flags(c, env_argc, env_argv, &peers);
    if (rc == 0) rc = finish(c, peers);
    netcfg_args_free(env_argc, env_argv, argc);
    return rc;
}

void ps_config_free(ps_config *c) {
    for (int k = 0; c->peers && k < c->n_shards; k++) free(c->peers[k]);
    free(c->peers);
    c->peers = NULL;
}
