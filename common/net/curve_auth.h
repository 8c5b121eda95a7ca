/* ZeroMQ CURVE for every loraps socket, and the server's ZAP handler.
 *
 * Keys are Z85 text files made by `loraps keygen --out DIR` (one folder, so one Kubernetes
 * Secret can hold them all; deploy/k8s mounts it at LORAPS_CURVE_DIR):
 *
 *   DIR/server.pub, DIR/server.key            the servers' key pair (every shard shares it)
 *   DIR/client-<i>.pub, DIR/client-<i>.key    a key pair per client (workers)
 *   DIR/authorized_clients                    the client public keys a server accepts, one per
 *                                             line ('#' starts a comment)
 *
 * A server's ROUTER is a CURVE server; its ZAP handler (a thread on inproc://zeromq.zap.01)
 * accepts only the listed client keys and the servers' own public key (shards talk to each other
 * as clients with the server key pair), and logs every refusal. A socket monitor on the ROUTER
 * also logs handshakes that fail before ZAP is asked (a client without CURVE at all).
 * Private key files must not be readable by others (mode 0600 or 0640/0440 for a group, as a
 * Kubernetes Secret mounts them); a world-readable one is refused.
 *
 * The configuration is process-wide: load it once at start-up, then set up each socket. */
#ifndef LORAPS_CURVE_AUTH_H
#define LORAPS_CURVE_AUTH_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define CURVE_KEY_Z85 40 /* characters of a Z85 key (32 bytes) */

/* Loads the server side from dir: server.key (server.pub is derived and checked) and
 * authorized_clients. Returns 1 when keys are configured, 0 when dir is NULL, empty or holds no
 * key at all (the caller warns: traffic is unauthenticated), -1 on an error (a partial or
 * unreadable folder: never silently unauthenticated). */
int curve_load_server(const char *dir, lp_err *err);
/* Loads the client side from dir: server.pub and the key pair <name>.key (<name>.pub derived).
 * name NULL: "client-<rank>" if present, else "client-0". Returns 1, 0 or -1 as above;
 * `used` (may be NULL) receives the key pair's name. */
int curve_load_client(const char *dir, const char *name, int rank, char *used, size_t used_size,
                      lp_err *err);
int curve_enabled(void);

/* Socket set-up (no-ops when CURVE is off). A server socket must be set up before zmq_bind, a
 * client before zmq_connect. curve_client_setup on a server process uses the server key pair. */
int curve_server_setup(void *sock, lp_err *err);
int curve_client_setup(void *sock, lp_err *err);

/* The ZAP handler and the handshake monitor of a server's ROUTER (NULL router: no monitor).
 * Call after curve_load_server and before zmq_bind; log is called from the handler's thread. */
typedef void (*curve_log_fn)(const char *line);
int curve_auth_start(void *ctx, void *router, curve_log_fn log, lp_err *err);
/* After zmq_ctx_term (the handler's sockets see ETERM and close): joins the thread. */
void curve_auth_join(void);

typedef struct curve_stats {
    uint64_t accepted;         /* ZAP: handshakes with a listed key */
    uint64_t refused;          /* ZAP: handshakes with an unlisted key */
    uint64_t handshake_failed; /* the monitor: failed handshakes (refusals, no CURVE, bad data) */
    uint64_t connections;      /* the monitor: TCP connections accepted */
    uint64_t disconnections;   /* the monitor: ... and closed (also: over ZMQ_MAXMSGSIZE) */
} curve_stats;
void curve_get_stats(curve_stats *out);

/* Key files: writes a new key pair as <dir>/<name>.pub (0644) and <dir>/<name>.key (0600). */
int curve_write_keypair(const char *dir, const char *name, char pub[CURVE_KEY_Z85 + 1],
                        lp_err *err);

#endif
