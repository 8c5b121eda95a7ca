/* ZeroMQ CURVE keys, socket set-up, the ZAP handler and the handshake monitor (curve_auth.h). */
#include "curve_auth.h"

#include "fsutil.h"

#include <zmq.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZAP_ENDPOINT     "inproc://zeromq.zap.01"
#define MONITOR_ENDPOINT "inproc://loraps-router-monitor"
#define MAX_AUTHORIZED   4096

static struct {
    int enabled, is_server;
    char server_pub[CURVE_KEY_Z85 + 1], server_key[CURVE_KEY_Z85 + 1];
    char pub[CURVE_KEY_Z85 + 1], key[CURVE_KEY_Z85 + 1]; /* this process as a client */
    unsigned char (*allowed)[32];
    int n_allowed;
} g;

static struct {
    pthread_t thread;
    int started;
    void *zap, *mon;
    curve_log_fn log;
    atomic_ullong accepted, refused, failed, connections, disconnections;
} g_auth;

int curve_enabled(void) {
    return g.enabled;
}

static int is_z85_key(const char *s) {
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";
    if (strlen(s) != CURVE_KEY_Z85) return 0;
    for (const char *p = s; *p; p++)
        if (!strchr(alphabet, *p)) return 0;
    return 1;
}

/* Blank, or '#' then white space: Z85 has no white space, but a key may begin with '#'. */
static int is_comment(const char *line) {
    return !*line || (line[0] == '#' && (!line[1] || line[1] == ' ' || line[1] == '\t'));
}

/* Reads one Z85 key (the first non-comment line) from path. secret: the file must not be
 * readable by others. */
static int read_key(const char *path, int secret, char out[CURVE_KEY_Z85 + 1], lp_err *err) {
    struct stat st;
    if (stat(path, &st) < 0) return lp_fail(err, "%s: %s", path, strerror(errno));
    if (secret && (st.st_mode & S_IROTH))
        return lp_fail(err, "%s: a private key readable by everyone (chmod 600 it)", path);
    char *text;
    size_t len;
    if (fs_read_all(path, &text, &len, err) < 0) return -1;
    int found = 0;
    for (char *line = strtok(text, "\r\n"); line && !found; line = strtok(NULL, "\r\n")) {
        while (*line == ' ' || *line == '\t') line++;
        if (is_comment(line)) continue;
        line[strcspn(line, " \t")] = 0;
        if (!is_z85_key(line)) {
            free(text);
            return lp_fail(err, "%s: not a Z85 CURVE key (40 characters)", path);
        }
        memcpy(out, line, CURVE_KEY_Z85 + 1);
        found = 1;
    }
    free(text);
    if (!found) return lp_fail(err, "%s: no key in the file", path);
    return 0;
}

/* The public key of a secret key, checked against the .pub file when there is one. */
static int pair_from_secret(const char *dir, const char *name, char pub[CURVE_KEY_Z85 + 1],
                            char key[CURVE_KEY_Z85 + 1], lp_err *err) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (read_key(path, 1, key, err) < 0) return -1;
    if (zmq_curve_public(pub, key) < 0)
        return lp_fail(err, "%s: not a CURVE secret key: %s", path, zmq_strerror(zmq_errno()));
    char listed[CURVE_KEY_Z85 + 1];
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    if (fs_exists(path)) {
        if (read_key(path, 0, listed, err) < 0) return -1;
        if (strcmp(listed, pub))
            return lp_fail(err, "%s does not match %s/%s.key", path, dir, name);
    }
    return 0;
}

/* 1 if dir holds any file at all (an empty Secret mount means "no keys"). */
static int dir_has_keys(const char *dir) {
    const char *names[] = {"server.pub", "server.key", "authorized_clients", "client-0.key"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (fs_exists(path)) return 1;
    }
    return 0;
}

int curve_load_server(const char *dir, lp_err *err) {
    if (!dir || !*dir || !dir_has_keys(dir)) return 0;
    if (!zmq_has("curve")) return lp_fail(err, "this libzmq was built without CURVE");
    if (pair_from_secret(dir, "server", g.server_pub, g.server_key, err) < 0) return -1;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/authorized_clients", dir);
    char *text;
    size_t len;
    if (fs_read_all(path, &text, &len, err) < 0)
        return lp_wrap(err, "the server needs the list of client public keys");
    free(g.allowed);
    g.allowed = calloc(MAX_AUTHORIZED + 1, sizeof *g.allowed);
    if (!g.allowed) {
        free(text);
        return lp_fail(err, "out of memory");
    }
    g.n_allowed = 0;
    /* the shards reach each other with the server key pair */
    zmq_z85_decode(g.allowed[g.n_allowed++], g.server_pub);
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        /* a line is a key, then anything after white space (a name); '#' starts a comment
         * line only when a space follows it (Z85 keys may start with '#') */
        while (*line == ' ' || *line == '\t' || *line == '\r') line++;
        if (is_comment(line)) continue;
        line[strcspn(line, " \t\r")] = 0;
        if (!is_z85_key(line)) {
            free(text);
            return lp_fail(err, "%s line %d: not a Z85 public key", path, lineno);
        }
        if (g.n_allowed > MAX_AUTHORIZED) {
            free(text);
            return lp_fail(err, "%s: more than %d keys", path, MAX_AUTHORIZED);
        }
        zmq_z85_decode(g.allowed[g.n_allowed++], line);
    }
    free(text);
    if (g.n_allowed == 1) return lp_fail(err, "%s: no client key listed", path);
    /* a server process's own client sockets (to the other shards) use the server pair */
    memcpy(g.pub, g.server_pub, sizeof g.pub);
    memcpy(g.key, g.server_key, sizeof g.key);
    g.enabled = 1;
    g.is_server = 1;
    return 1;
}

int curve_load_client(const char *dir, const char *name, int rank, char *used, size_t used_size,
                      lp_err *err) {
    if (!dir || !*dir || !dir_has_keys(dir)) return 0;
    if (!zmq_has("curve")) return lp_fail(err, "this libzmq was built without CURVE");
    char path[PATH_MAX], pick[128];
    snprintf(path, sizeof path, "%s/server.pub", dir);
    if (read_key(path, 0, g.server_pub, err) < 0) return -1;
    if (name && *name) {
        snprintf(pick, sizeof pick, "%s", name);
    } else {
        snprintf(pick, sizeof pick, "client-%d", rank);
        snprintf(path, sizeof path, "%s/%s.key", dir, pick);
        if (!fs_exists(path)) snprintf(pick, sizeof pick, "client-0");
    }
    if (strchr(pick, '/')) return lp_fail(err, "key name %s: no '/' allowed", pick);
    if (pair_from_secret(dir, pick, g.pub, g.key, err) < 0) return -1;
    if (used) snprintf(used, used_size, "%s", pick);
    g.enabled = 1;
    return 1;
}

int curve_server_setup(void *sock, lp_err *err) {
    if (!g.enabled) return 0;
    int on = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &on, sizeof on) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, g.server_key, CURVE_KEY_Z85) < 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "loraps", 6) < 0)
        return lp_fail(err, "CURVE server options: %s", zmq_strerror(zmq_errno()));
    return 0;
}

int curve_client_setup(void *sock, lp_err *err) {
    if (!g.enabled) return 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, g.server_pub, CURVE_KEY_Z85) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, g.pub, CURVE_KEY_Z85) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, g.key, CURVE_KEY_Z85) < 0)
        return lp_fail(err, "CURVE client options: %s", zmq_strerror(zmq_errno()));
    return 0;
}

/* ---- the ZAP handler (RFC 27) and the monitor ---------------------------------------------- */

static void auth_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void auth_log(const char *fmt, ...) {
    if (!g_auth.log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    g_auth.log(line);
}

/* Refusals are logged, but a client retrying every second must not flood the log: the first
 * refusals of a key are logged, then one line per 100. */
typedef struct refused_key {
    unsigned char key[32];
    uint64_t count;
} refused_key;

static void zap_answer(void *zap, zmq_msg_t *parts, int n, refused_key *seen, int *n_seen) {
    /* request: version, request id, domain, address, identity, mechanism, credentials... */
    char address[128] = "?", mech[16] = "";
    const char *status = "400", *text = "not an authorized client";
    int ok_version =
        n >= 6 && zmq_msg_size(&parts[0]) == 3 && !memcmp(zmq_msg_data(&parts[0]), "1.0", 3);
    if (n >= 4) {
        size_t l = zmq_msg_size(&parts[3]);
        if (l >= sizeof address) l = sizeof address - 1;
        memcpy(address, zmq_msg_data(&parts[3]), l);
        address[l] = 0;
    }
    if (n >= 6) {
        size_t l = zmq_msg_size(&parts[5]);
        if (l >= sizeof mech) l = sizeof mech - 1;
        memcpy(mech, zmq_msg_data(&parts[5]), l);
        mech[l] = 0;
    }
    char user[CURVE_KEY_Z85 + 1] = "";
    if (!ok_version) {
        status = "500", text = "bad ZAP request";
    } else if (strcmp(mech, "CURVE") || n < 7 || zmq_msg_size(&parts[6]) != 32) {
        status = "400", text = "CURVE required";
        atomic_fetch_add(&g_auth.refused, 1);
        auth_log("refused a client from %s: mechanism %s, CURVE required", address, mech);
    } else {
        const unsigned char *key = zmq_msg_data(&parts[6]);
        zmq_z85_encode(user, key, 32);
        int found = 0;
        for (int i = 0; i < g.n_allowed && !found; i++) found = !memcmp(g.allowed[i], key, 32);
        if (found) {
            status = "200", text = "OK";
            atomic_fetch_add(&g_auth.accepted, 1);
        } else {
            atomic_fetch_add(&g_auth.refused, 1);
            int k = 0;
            while (k < *n_seen && memcmp(seen[k].key, key, 32)) k++;
            if (k == *n_seen && *n_seen < 64) memcpy(seen[(*n_seen)++].key, key, 32);
            uint64_t c = k < 64 ? ++seen[k].count : 0;
            if (c <= 3 || c % 100 == 0)
                auth_log("refused a client from %s: public key %s is not in authorized_clients "
                         "(%llu time%s)",
                         address, user, (unsigned long long)c, c == 1 ? "" : "s");
        }
    }
    /* reply: version, request id, status code, status text, user id, metadata */
    const char *reply[6] = {"1.0", NULL, status, text, status[0] == '2' ? user : "", ""};
    for (int i = 0; i < 6; i++) {
        int more = i < 5 ? ZMQ_SNDMORE : 0;
        if (i == 1) {
            if (n >= 2)
                zmq_send(zap, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), more);
            else
                zmq_send(zap, "", 0, more);
        } else {
            zmq_send(zap, reply[i], strlen(reply[i]), more);
        }
    }
}

static void monitor_event(void *mon) {
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    if (zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
        return;
    }
    int more = zmq_msg_more(&ev);
    if (more) zmq_msg_recv(&addr, mon, 0);
    if (zmq_msg_size(&ev) >= 6) {
        const unsigned char *d = zmq_msg_data(&ev);
        uint16_t event = (uint16_t)(d[0] | d[1] << 8);
        uint32_t value =
            (uint32_t)d[2] | (uint32_t)d[3] << 8 | (uint32_t)d[4] << 16 | (uint32_t)d[5] << 24;
        if (event == ZMQ_EVENT_ACCEPTED) atomic_fetch_add(&g_auth.connections, 1);
        if (event == ZMQ_EVENT_DISCONNECTED) atomic_fetch_add(&g_auth.disconnections, 1);
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            uint64_t c = atomic_fetch_add(&g_auth.failed, 1) + 1;
            if (c <= 5 || c % 100 == 0)
                auth_log("a connection failed its handshake (%s, code 0x%x; %llu so far): a "
                         "client without CURVE or with the wrong server key?",
                         event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol error"
                                                                      : "no detail",
                         value, (unsigned long long)c);
        }
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) atomic_fetch_add(&g_auth.failed, 1);
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
}

static void *auth_main(void *arg) {
    (void)arg;
    refused_key seen[64];
    int n_seen = 0;
    memset(seen, 0, sizeof seen);
    for (;;) {
        zmq_pollitem_t items[2];
        int n = 0;
        if (g_auth.zap) items[n++] = (zmq_pollitem_t){g_auth.zap, 0, ZMQ_POLLIN, 0};
        if (g_auth.mon) items[n++] = (zmq_pollitem_t){g_auth.mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, n, -1) < 0) {
            if (zmq_errno() == EINTR) continue;
            break; /* ETERM: the context is being terminated */
        }
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            if (items[i].socket == g_auth.mon) {
                monitor_event(g_auth.mon);
                continue;
            }
            zmq_msg_t parts[16];
            int np = 0, more = 1, bad = 0;
            while (more) {
                zmq_msg_t part;
                zmq_msg_init(&part);
                if (zmq_msg_recv(&part, g_auth.zap, 0) < 0) {
                    zmq_msg_close(&part);
                    bad = 1;
                    break;
                }
                more = zmq_msg_more(&part);
                if (np < 16)
                    parts[np++] = part;
                else
                    zmq_msg_close(&part);
            }
            if (!bad) zap_answer(g_auth.zap, parts, np, seen, &n_seen);
            for (int k = 0; k < np; k++) zmq_msg_close(&parts[k]);
        }
    }
    if (g_auth.zap) zmq_close(g_auth.zap);
    if (g_auth.mon) zmq_close(g_auth.mon);
    return NULL;
}

int curve_auth_start(void *ctx, void *router, curve_log_fn log, lp_err *err) {
    g_auth.log = log;
    int linger = 0;
    if (g.enabled && g.is_server) {
        g_auth.zap = zmq_socket(ctx, ZMQ_REP);
        if (!g_auth.zap || zmq_bind(g_auth.zap, ZAP_ENDPOINT) < 0)
            return lp_fail(err, "ZAP handler: %s", zmq_strerror(zmq_errno()));
        zmq_setsockopt(g_auth.zap, ZMQ_LINGER, &linger, sizeof linger);
    }
    if (router) {
        int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED |
                     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
        if (zmq_socket_monitor(router, MONITOR_ENDPOINT, events) < 0)
            return lp_fail(err, "socket monitor: %s", zmq_strerror(zmq_errno()));
        g_auth.mon = zmq_socket(ctx, ZMQ_PAIR);
        if (!g_auth.mon || zmq_connect(g_auth.mon, MONITOR_ENDPOINT) < 0)
            return lp_fail(err, "socket monitor: %s", zmq_strerror(zmq_errno()));
        zmq_setsockopt(g_auth.mon, ZMQ_LINGER, &linger, sizeof linger);
    }
    if (!g_auth.zap && !g_auth.mon) return 0;
    if (pthread_create(&g_auth.thread, NULL, auth_main, NULL) != 0)
        return lp_fail(err, "ZAP handler thread: %s", strerror(errno));
    g_auth.started = 1;
    return 0;
}

void curve_auth_join(void) {
    if (g_auth.started) pthread_join(g_auth.thread, NULL);
    g_auth.started = 0;
    g_auth.zap = g_auth.mon = NULL;
}

void curve_get_stats(curve_stats *out) {
    out->accepted = atomic_load(&g_auth.accepted);
    out->refused = atomic_load(&g_auth.refused);
    out->handshake_failed = atomic_load(&g_auth.failed);
    out->connections = atomic_load(&g_auth.connections);
    out->disconnections = atomic_load(&g_auth.disconnections);
}

/* ---- key files ------------------------------------------------------------------------------ */

int curve_write_keypair(const char *dir, const char *name, char pub[CURVE_KEY_Z85 + 1],
                        lp_err *err) {
    char key[CURVE_KEY_Z85 + 1], path[PATH_MAX], text[128];
    if (zmq_curve_keypair(pub, key) < 0)
        return lp_fail(err, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    /* the secret never exists with a wider mode, not even as the temporary file */
    char tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(text, sizeof text, "%s\n", key);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return lp_fail(err, "%s: %s", tmp, strerror(errno));
    int bad = write(fd, text, (size_t)n) != n || fsync(fd) < 0;
    int saved = errno;
    close(fd);
    memset(key, 0, sizeof key);
    memset(text, 0, sizeof text);
    if (bad || rename(tmp, path) < 0) {
        if (!bad) saved = errno;
        unlink(tmp);
        return lp_fail(err, "%s: %s", path, strerror(saved));
    }
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    n = snprintf(text, sizeof text, "%s\n", pub);
    if (fs_write_atomic(path, text, (size_t)n, err) < 0) return -1;
    return fs_fsync_dir(dir, err);
}
