/* loraps keygen: CURVE keys for a job (common/curve_auth.h describes the folder). */
#include "commands.h"
#include "curve_auth.h"
#include "fsutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps keygen --out DIR [--clients N] [--force]\n\n"
            "Writes ZeroMQ CURVE keys (Z85 text) for a job:\n"
            "  DIR/server.pub, DIR/server.key          the servers' key pair (all shards)\n"
            "  DIR/client-<i>.pub, DIR/client-<i>.key  N client key pairs (workers; default 1)\n"
            "  DIR/authorized_clients                  the client public keys servers accept\n"
            "Private keys (.key) are mode 0600. Give servers and workers the folder with\n"
            "--curve-dir DIR (or LORAPS_CURVE_DIR); a worker uses client-<rank>, else client-0\n"
            "(--curve-client NAME picks one). To revoke a client, delete its line from\n"
            "authorized_clients and restart the servers. On Kubernetes:\n"
            "  kubectl create secret generic loraps-curve --from-file=DIR\n\n"
            "  --out DIR     where to write (created; must not hold keys already)\n"
            "  --clients N   client key pairs to make (1..4096)\n"
            "  --force       overwrite keys already in DIR\n");
}

/* A step's result: GO_ON, or the exit status the command ends with. */
enum { GO_ON = -1 };

static int fail(const char *msg) {
    fprintf(stderr, "loraps keygen: error: %s\n", msg);
    return 1;
}

typedef struct keygen_opts {
    const char *out;
    long clients;
    int force;
} keygen_opts;

static int parse_options(keygen_opts *o, int argc, char **argv) {
    *o = (keygen_opts){NULL, 1, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--force")) {
            o->force = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loraps keygen: error: %s: unknown or missing its value\n", a);
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--out")) {
            o->out = argv[++i];
        } else if (!strcmp(a, "--clients")) {
            char *end;
            o->clients = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || o->clients < 1 || o->clients > 4096) {
                fprintf(stderr, "loraps keygen: error: --clients: expected 1..4096\n");
                return 2;
            }
        } else {
            fprintf(stderr, "loraps keygen: error: %s: unknown option\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o->out) {
        fprintf(stderr, "loraps keygen: error: --out: required\n");
        usage(stderr);
        return 2;
    }
    return GO_ON;
}

/* The folder, holding no keys yet unless --force; then the servers' pair. */
static int write_server_keys(const keygen_opts *o) {
    lp_err err;
    char path[PATH_MAX], pub[CURVE_KEY_Z85 + 1];
    if (fs_mkdirs(o->out, &err) < 0) return fail(err.msg);
    snprintf(path, sizeof path, "%s/server.key", o->out);
    if (fs_exists(path) && !o->force) {
        fprintf(stderr,
                "loraps keygen: error: %s: keys exist already (--force replaces them; running "
                "jobs then refuse the old ones)\n",
                path);
        return 1;
    }
    if (curve_write_keypair(o->out, "server", pub, &err) < 0) return fail(err.msg);
    return GO_ON;
}

/* The client pairs, and authorized_clients listing their public keys. */
static int write_client_keys(const keygen_opts *o) {
    lp_err err;
    char path[PATH_MAX], pub[CURVE_KEY_Z85 + 1];
    size_t cap = (size_t)o->clients * 64 + 256, len = 0;
    char *list = malloc(cap);
    if (!list) return fail("out of memory");
    len += (size_t)snprintf(
        list, cap,
        "# CURVE public keys of the clients a loraps server accepts, one per "
        "line\n# (then a name). Delete a line to revoke that client (restart the servers).\n");
    int rc = GO_ON;
    for (long i = 0; i < o->clients && rc == GO_ON; i++) {
        char name[32];
        snprintf(name, sizeof name, "client-%ld", i);
        if (curve_write_keypair(o->out, name, pub, &err) < 0)
            rc = fail(err.msg);
        else
            len += (size_t)snprintf(list + len, cap - len, "%s %s\n", pub, name);
    }
    snprintf(path, sizeof path, "%s/authorized_clients", o->out);
    if (rc == GO_ON && fs_write_atomic(path, list, len, &err) < 0) rc = fail(err.msg);
    free(list);
    return rc;
}

int cmd_keygen(int argc, char **argv) {
    keygen_opts o;
    int rc = parse_options(&o, argc, argv);
    if (rc == GO_ON) rc = write_server_keys(&o);
    if (rc == GO_ON) rc = write_client_keys(&o);
    if (rc != GO_ON) return rc;
    printf("wrote %s: server.pub, server.key, %ld client key pair%s, authorized_clients\n", o.out,
           o.clients, o.clients == 1 ? "" : "s");
    return 0;
}
