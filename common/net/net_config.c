#include "net_config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void netcfg_env_name(const char *flag, char *out, size_t n) {
    size_t k = (size_t)snprintf(out, n, "LORAPS_");
    for (const char *p = flag; *p && k + 1 < n; p++)
        out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    if (k < n) out[k] = 0;
}

static int on_command_line(const char *name, int argc, char **argv) {
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') continue;
        if (!strncmp(a + 2, name, len) && (a[2 + len] == 0 || a[2 + len] == '=')) return 1;
    }
    return 0;
}

static int truthy(const char *v) {
    return !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
           !strcasecmp(v, "on");
}

static int falsy(const char *v) {
    return !*v || !strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
           !strcasecmp(v, "off");
}

static void note(char *notes, size_t len, const char *var, const char *value) {
    if (!notes || !len) return;
    size_t used = strlen(notes);
    if (used < len)
        snprintf(notes + used, len - used, "  %-24s %s (from the environment)\n", var, value);
}

int netcfg_env_args(const netcfg_flag *flags, int n_flags, int argc, char **argv, int *out_argc,
                    char ***out_argv, char *notes, size_t notes_len, lp_err *err) {
    if (notes && notes_len) notes[0] = 0;
    char **av = calloc((size_t)argc + 2 * (size_t)n_flags + 1, sizeof *av);
    if (!av) return lp_fail(err, "out of memory");
    int n = 0;
    av[n++] = argv[0];
    for (int f = 0; f < n_flags; f++) {
        const char *name = flags[f].name;
        if (on_command_line(name, argc, argv)) continue;
        char var[96];
        netcfg_env_name(name, var, sizeof var);
        const char *v = getenv(var);
        /* An Indexed Job numbers its pods: a worker's rank, or a server's shard when the
         * servers run as an Indexed Job too (deploy/k8s). */
        if (!v && (!strcmp(name, "rank") || !strcmp(name, "shard")) &&
            getenv("JOB_COMPLETION_INDEX")) {
            snprintf(var, sizeof var, "JOB_COMPLETION_INDEX");
            v = getenv(var);
        }
        if (!v) continue;
        char flag[96];
        snprintf(flag, sizeof flag, "--%s", name);
        if (!flags[f].has_value) {
            if (falsy(v)) continue;
            if (!truthy(v)) {
                for (int i = 1; i < n; i++) free(av[i]);
                free(av);
                return lp_fail(err, "%s=%s: expected 1/0, true/false, yes/no", var, v);
            }
            av[n++] = strdup(flag);
        } else {
            av[n++] = strdup(flag);
            av[n++] = strdup(v);
        }
        if (!av[n - 1]) {
            for (int i = 1; i < n; i++) free(av[i]);
            free(av);
            return lp_fail(err, "out of memory");
        }
        note(notes, notes_len, var, v);
    }
    for (int i = 1; i < argc; i++) av[n++] = argv[i];
    av[n] = NULL;
    *out_argc = n;
    *out_argv = av;
    return 0;
}

void netcfg_args_free(int argc, char **argv, int orig_argc) {
    if (!argv) return;
    /* the strings this module added sit between argv[0] and the original arguments */
    for (int i = 1; i < argc - (orig_argc - 1); i++) free(argv[i]);
    free(argv);
}

/* Splits tcp://HOST:PORT; host without brackets. */
static int split_endpoint(const char *s, char *host, size_t hn, int *port, int *v6, lp_err *err) {
    if (strncmp(s, "tcp://", 6)) return lp_fail(err, "'%s': expected tcp://HOST:PORT", s);
    const char *h = s + 6, *colon;
    *v6 = 0;
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':') return lp_fail(err, "'%s': expected tcp://[ADDR]:PORT", s);
        if ((size_t)(close - h - 1) >= hn) return lp_fail(err, "'%s': host too long", s);
        memcpy(host, h + 1, (size_t)(close - h - 1));
        host[close - h - 1] = 0;
        colon = close + 1;
        *v6 = 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon || colon == h) return lp_fail(err, "'%s': expected tcp://HOST:PORT", s);
        if ((size_t)(colon - h) >= hn) return lp_fail(err, "'%s': host too long", s);
        memcpy(host, h, (size_t)(colon - h));
        host[colon - h] = 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 1 || p > 65535)
        return lp_fail(err, "'%s': the port must be 1..65535", s);
    *port = (int)p;
    return 0;
}

int netcfg_check_endpoint(const char *s, lp_err *err) {
    char host[256];
    int port = 0, v6 = 0;
    if (split_endpoint(s, host, sizeof host, &port, &v6, err) < 0) return -1;
    for (const char *p = host; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' || *p == '*' ||
              (v6 && *p == ':')))
            return lp_fail(err, "'%s': '%c' cannot be in a host name", s, *p);
    return 0;
}

int netcfg_bind_for(const char *endpoint, char *out, size_t n, lp_err *err) {
    char host[256];
    int port = 0, v6 = 0;
    if (split_endpoint(endpoint, host, sizeof host, &port, &v6, err) < 0) return -1;
    unsigned char addr[16];
    int numeric = !strcmp(host, "*") || inet_pton(AF_INET, host, addr) == 1 ||
                  inet_pton(AF_INET6, host, addr) == 1;
    if (numeric)
        snprintf(out, n, "%s", endpoint);
    else
        snprintf(out, n, "tcp://0.0.0.0:%d", port);
    return 0;
}

void netcfg_clear_process_env(void) {
    static const char *const vars[] = {
        "LORAPS_RANK",         "JOB_COMPLETION_INDEX", "LORAPS_SHARD", "LORAPS_BIND",
        "LORAPS_PEERS",        "LORAPS_SERVERS",       "LORAPS_STATS", "LORAPS_METRICS_PORT",
        "LORAPS_METRICS_BIND", "LORAPS_METRICS",       "LORAPS_OUT",   "LORAPS_MODEL",
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}
