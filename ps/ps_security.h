/* The server's protection: CURVE authentication (common/curve_auth.h) and the limits on what a
 * peer may cost the server: message size, live workers, a peer sending too many bad messages.
 * Options are flags and LORAPS_* variables like every other (ps_config.c). */
#ifndef LORAPS_PS_SECURITY_H
#define LORAPS_PS_SECURITY_H

#include "curve_auth.h"
#include "error.h"
#include "wire.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ps_security_config {
    char curve_dir[PATH_MAX];
    int64_t max_msg_bytes; /* ZMQ_MAXMSGSIZE of the server's socket (per frame) */
    int max_workers;       /* live members; 0: the job's workers */
    int reject_limit;      /* rejected messages per window before a peer is cut off */
    int reject_window_s, ban_s;
} ps_security_config;

/* A peer's refused messages in the current window, and its ban. */
typedef struct ps_ban_slot {
    unsigned char routing[WIRE_MAX_ROUTING_BYTES];
    size_t routing_len;
    int64_t window_start_ms, banned_until_ms, last_ms;
    uint32_t count;
} ps_ban_slot;

typedef struct ps_security_stats {
    uint64_t bans, dropped_banned, refused_full;
    curve_stats curve;
} ps_security_stats;

typedef struct ps_security {
    ps_security_config cfg;
    int shard;
    int max_workers;       /* the effective limit */
    ps_ban_slot *ban;      /* [PS_BAN_SLOTS] */
    int64_t ban_until_max; /* no peer is cut off past this: most messages skip the table */
    uint64_t bans, dropped_banned, refused_full;
} ps_security;

void ps_security_defaults(ps_security_config *c);
/* A security/limit flag: 1 if consumed, 0 if not one of them, -1 on a bad value. */
int ps_security_flag(ps_security_config *c, const char *flag, const char *value, lp_err *err);
void ps_security_usage(FILE *out);

/* Loads the CURVE keys (or warns that traffic to `bind` is unauthenticated). */
int ps_security_init(ps_security *sec, const ps_security_config *c, int shard, int workers,
                     const char *bind, lp_err *err);
/* After zmq_ctx_term: joins the ZAP handler. */
void ps_security_free(ps_security *sec);
/* The ROUTER (before bind): ZMQ_MAXMSGSIZE, CURVE server, the ZAP handler and monitor. */
int ps_security_router(ps_security *sec, void *ctx, void *router, lp_err *err);
/* A DEALER to another shard (before connect): CURVE client with the server key pair. */
int ps_security_peer(void *sock, lp_err *err);
void ps_security_print(const ps_security *sec, FILE *out);

/* 1: the sender is cut off (too many refused messages); drop the message unanswered. */
int ps_security_drop(ps_security *sec, const wire_msg *m);
void ps_security_on_reject(ps_security *sec, const wire_msg *m);
/* 0: a Hello would exceed --max-workers (`live` members now; `rank_live`: the rank's own
 * membership is live, and a restart replaces it). */
int ps_security_admit(ps_security *sec, int live, int rank_live);
void ps_security_stats_get(const ps_security *sec, ps_security_stats *out);
void ps_security_exit_log(const ps_security *sec);

#endif
