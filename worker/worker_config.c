/* loraps-worker's flags and LORAPS_* variables. */
#include "worker_config.h"

#include "error.h"
#include "net_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every flag, also as a variable (LORAPS_SERVERS, ...); 1: it takes a value. */
static const netcfg_flag WORKER_ENV_FLAGS[] = {
    {"servers", 1},         {"model", 1},        {"rank", 1},          {"threads", 1},
    {"connect-timeout", 1}, {"stats", 1},        {"step-delay-ms", 1}, {"quiet", 0},
    {"metrics-port", 1},    {"metrics-bind", 1}, {"data", 1},          {"val-file", 1},
    {"tokenizer", 1},       {"curve-dir", 1},    {"curve-client", 1}, /* common/curve_auth.h */
};
#define N_ENV_FLAGS ((int)(sizeof WORKER_ENV_FLAGS / sizeof WORKER_ENV_FLAGS[0]))

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
    return WORKER_CONFIG_BAD;
}

static int parse_int(const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

static void copy(char *dst, size_t n, const char *v) {
    snprintf(dst, n, "%s", v);
}

/* Flag a (a known flag that takes a value) set to v. */
static int set_option(worker_config *c, const char *a, const char *v, const char **servers) {
    int s;
    if (!strcmp(a, "--servers")) *servers = v;
    if (!strcmp(a, "--model")) copy(c->model_dir, sizeof c->model_dir, v);
    if (!strcmp(a, "--stats")) copy(c->stats_path, sizeof c->stats_path, v);
    if (!strcmp(a, "--data")) copy(c->data_path, sizeof c->data_path, v);
    if (!strcmp(a, "--val-file")) copy(c->val_path, sizeof c->val_path, v);
    if (!strcmp(a, "--tokenizer")) copy(c->tokenizer_path, sizeof c->tokenizer_path, v);
    if (!strcmp(a, "--metrics-bind")) copy(c->metrics_bind, sizeof c->metrics_bind, v);
    if (!strcmp(a, "--curve-dir")) copy(c->curve_dir, sizeof c->curve_dir, v);
    if (!strcmp(a, "--curve-client")) copy(c->curve_client, sizeof c->curve_client, v);
    if (!strcmp(a, "--rank") && parse_int(v, 0, 65535, &c->rank) < 0)
        return fail("--rank", "expected an integer in 0..65535");
    if (!strcmp(a, "--step-delay-ms") && parse_int(v, 0, 600000, &c->step_delay_ms) < 0)
        return fail("--step-delay-ms", "expected milliseconds in 0..600000");
    if (!strcmp(a, "--threads") && parse_int(v, 0, 4096, &c->threads) < 0)
        return fail("--threads", "expected an integer in 0..4096");
    if (!strcmp(a, "--metrics-port") && parse_int(v, 0, 65535, &c->metrics_port) < 0)
        return fail("--metrics-port", "expected a port in 0..65535");
    if (!strcmp(a, "--connect-timeout")) {
        if (parse_int(v, 1, 86400, &s) < 0) return fail(a, "expected seconds in 1..86400");
        c->connect_timeout_ms = s * 1000;
    }
    return 0;
}

static int takes_value(const char *a) {
    for (int i = 0; i < N_ENV_FLAGS; i++)
        if (WORKER_ENV_FLAGS[i].has_value && !strncmp(a, "--", 2) &&
            !strcmp(a + 2, WORKER_ENV_FLAGS[i].name))
            return 1;
    return 0;
}

/* The comma-separated endpoints of --servers, each checked. */
static int split_servers(worker_config *c, const char *servers) {
    char *list = strdup(servers);
    int n = 1, rc = 0;
    for (const char *p = servers; *p; p++) n += *p == ',';
    c->servers = calloc((size_t)n, sizeof *c->servers);
    if (!list || !c->servers) rc = fail("--servers", "out of memory");
    for (char *tok = rc ? NULL : strtok(list, ","); tok && !rc; tok = strtok(NULL, ",")) {
        lp_err err;
        if (strlen(tok) >= 256)
            rc = fail("--servers", "endpoint too long");
        else if (netcfg_check_endpoint(tok, &err) < 0)
            rc = fail("--servers", err.msg);
        else
            c->servers[c->n_servers++] = strdup(tok);
    }
    free(list);
    if (!rc && !c->n_servers) rc = fail("--servers", "empty list");
    return rc;
}

static int parse_args(worker_config *c, int argc, char **argv) {
    const char *servers = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return WORKER_CONFIG_HELP;
        }
        if (!strcmp(a, "--quiet")) {
            c->quiet = 1;
            continue;
        }
        if (!takes_value(a)) return fail(a, "unknown option (see --help)");
        if (i + 1 >= argc) return fail(a, "needs a value");
        int rc = set_option(c, a, argv[++i], &servers);
        if (rc) return rc;
    }
    if (!servers) return fail("--servers", "required (the server shards' endpoints)");
    if (!c->model_dir[0]) return fail("--model", "required (the base model folder)");
    if (c->rank < 0)
        return fail("--rank", "required (or LORAPS_RANK, or JOB_COMPLETION_INDEX on Kubernetes)");
    return split_servers(c, servers);
}

int worker_config_load(worker_config *c, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    c->rank = -1;
    c->connect_timeout_ms = 60000;
    c->threads = -1;
    c->metrics_port = -1;
    copy(c->metrics_bind, sizeof c->metrics_bind, "0.0.0.0");
    int env_argc;
    char **env_argv;
    lp_err err;
    if (netcfg_env_args(WORKER_ENV_FLAGS, N_ENV_FLAGS, argc, argv, &env_argc, &env_argv,
                        c->env_notes, sizeof c->env_notes, &err) < 0)
        return fail("environment", err.msg);
    int rc = parse_args(c, env_argc, env_argv);
    netcfg_args_free(env_argc, env_argv, argc);
    return rc;
}

void worker_config_free(worker_config *c) {
    for (int k = 0; k < c->n_servers; k++) free(c->servers[k]);
    free(c->servers);
    c->servers = NULL;
    c->n_servers = 0;
}
