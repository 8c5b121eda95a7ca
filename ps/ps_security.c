/* The server's protection: CURVE, and the limits on what a peer may cost it. */
#include "ps_security.h"

#include "ps_log.h"

#include <stdlib.h>
#include <string.h>

#define PS_BAN_SLOTS 1024

void ps_security_defaults(ps_security_config *c) {
    memset(c, 0, sizeof *c);
    c->max_msg_bytes = WIRE_ZMQ_MAXMSGSIZE;
    c->reject_limit = 1000;
    c->reject_window_s = 10;
    c->ban_s = 30;
}

static int parse_long(const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int ps_security_flag(ps_security_config *c, const char *a, const char *v, lp_err *err) {
    const struct {
        const char *flag;
        long lo, hi;
        void *dst;
        int is64;
    } nums[] = {
        {"--max-msg-bytes", 4096, (long)1 << 40, &c->max_msg_bytes, 1},
        {"--max-workers", 0, 1 << 20, &c->max_workers, 0},
        {"--reject-limit", 0, 1 << 30, &c->reject_limit, 0},
        {"--reject-window", 1, 86400, &c->reject_window_s, 0},
        {"--ban-seconds", 0, 86400, &c->ban_s, 0},
    };
    if (!strcmp(a, "--curve-dir")) {
        if (!v) return lp_fail(err, "needs a value");
        snprintf(c->curve_dir, sizeof c->curve_dir, "%s", v);
        return 1;
    }
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(a, nums[i].flag)) continue;
        long x;
        if (!v) return lp_fail(err, "needs a value");
        if (parse_long(v, nums[i].lo, nums[i].hi, &x) < 0)
            return lp_fail(err, "expected an integer in %ld..%ld", nums[i].lo, nums[i].hi);
        if (nums[i].is64)
            *(int64_t *)nums[i].dst = x;
        else
            *(int *)nums[i].dst = (int)x;
        return 1;
    }
    return 0;
}

void ps_security_usage(FILE *out) {
    fprintf(out,
            "security and limits:\n"
            "  --curve-dir DIR  CURVE keys from `loraps keygen` (server.key, authorized_clients):\n"
            "                   only listed clients may connect; without keys traffic is\n"
            "                   unauthenticated (a warning at start-up)\n"
            "  --max-msg-bytes N  largest frame a peer may send (ZMQ_MAXMSGSIZE; a larger one\n"
            "                   closes its connection; default %lld)\n"
            "  --max-workers N  live workers at most (default: the job's workers); a Hello past\n"
            "                   it is refused\n"
            "  --reject-limit N a peer with N refused messages within --reject-window S seconds\n"
            "                   (default 1000 in 10) is ignored for --ban-seconds B (default 30);\n"
            "                   0 never cuts a peer off\n",
            (long long)WIRE_ZMQ_MAXMSGSIZE);
}

static void log_auth_line(const char *line) {
    fprintf(stderr, "loraps-ps: auth: %s\n", line);
    fflush(stderr);
}

int ps_security_init(ps_security *sec, const ps_security_config *c, int shard, int workers,
                     const char *bind, lp_err *err) {
    memset(sec, 0, sizeof *sec);
    sec->cfg = *c;
    sec->shard = shard;
    sec->max_workers = c->max_workers ? c->max_workers : workers;
    sec->ban = calloc(PS_BAN_SLOTS, sizeof *sec->ban);
    if (!sec->ban) return lp_fail(err, "out of memory");
    int r = curve_load_server(c->curve_dir, err);
    if (r < 0) return lp_wrap(err, "--curve-dir %s", c->curve_dir);
    if (r == 0)
        ps_log(shard,
               "WARNING: no CURVE keys (--curve-dir / LORAPS_CURVE_DIR%s%s): traffic is "
               "unauthenticated and unencrypted; anyone who reaches %s can join the job",
               c->curve_dir[0] ? " " : "", c->curve_dir[0] ? "holds none" : " unset", bind);
    return 0;
}

void ps_security_free(ps_security *sec) {
    curve_auth_join();
    free(sec->ban);
    sec->ban = NULL;
}

int ps_security_router(ps_security *sec, void *ctx, void *router, lp_err *err) {
    int64_t max = sec->cfg.max_msg_bytes;
    if (zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &max, sizeof max) < 0)
        return lp_fail(err, "ZMQ_MAXMSGSIZE: %s", zmq_strerror(zmq_errno()));
    if (curve_server_setup(router, err) < 0) return -1;
    return curve_auth_start(ctx, router, log_auth_line, err);
}

int ps_security_peer(void *sock, lp_err *err) {
    return curve_client_setup(sock, err);
}

void ps_security_print(const ps_security *sec, FILE *out) {
    const ps_security_config *c = &sec->cfg;
    fprintf(out, "  authentication   %s\n",
            curve_enabled() ? "CURVE (authorized_clients only)" : "NONE (unauthenticated)");
    if (c->curve_dir[0]) fprintf(out, "  curve dir        %s\n", c->curve_dir);
    fprintf(out, "  max msg bytes    %lld\n", (long long)c->max_msg_bytes);
    fprintf(out, "  max workers      %d\n", sec->max_workers);
    if (c->reject_limit)
        fprintf(out, "  reject limit     %d in %d s, then ignored %d s\n", c->reject_limit,
                c->reject_window_s, c->ban_s);
    else
        fprintf(out, "  reject limit     none\n");
}

/* ---- per-peer rejection limit --------------------------------------------------------------- */

static ps_ban_slot *ban_find(ps_security *sec, const wire_msg *m, int create, int64_t now) {
    if (!m->routing_len) return NULL;
    ps_ban_slot *oldest = NULL;
    for (int i = 0; i < PS_BAN_SLOTS; i++) {
        ps_ban_slot *b = &sec->ban[i];
        if (b->routing_len == m->routing_len && !memcmp(b->routing, m->routing, m->routing_len))
            return b;
        if (!oldest || b->last_ms < oldest->last_ms) oldest = b;
    }
    if (!create) return NULL;
    /* a banned peer is never evicted for a newer one while its ban runs */
    if (oldest->banned_until_ms > now) return NULL;
    memset(oldest, 0, sizeof *oldest);
    memcpy(oldest->routing, m->routing, m->routing_len);
    oldest->routing_len = m->routing_len;
    oldest->window_start_ms = now;
    oldest->last_ms = now;
    return oldest;
}

int ps_security_drop(ps_security *sec, const wire_msg *m) {
    if (!sec->cfg.reject_limit) return 0;
    int64_t now = wire_now_ms();
    if (now >= sec->ban_until_max) return 0;
    ps_ban_slot *b = ban_find(sec, m, 0, now);
    if (!b || b->banned_until_ms <= now) return 0;
    sec->dropped_banned++;
    return 1;
}

void ps_security_on_reject(ps_security *sec, const wire_msg *m) {
    const ps_security_config *c = &sec->cfg;
    if (!c->reject_limit) return;
    int64_t now = wire_now_ms();
    ps_ban_slot *b = ban_find(sec, m, 1, now);
    if (!b) return;
    b->last_ms = now;
    if (now - b->window_start_ms > (int64_t)c->reject_window_s * 1000) {
        b->window_start_ms = now;
        b->count = 0;
    }
    if (++b->count < (uint32_t)c->reject_limit || b->banned_until_ms > now) return;
    b->banned_until_ms = now + (int64_t)c->ban_s * 1000;
    if (b->banned_until_ms > sec->ban_until_max) sec->ban_until_max = b->banned_until_ms;
    b->count = 0;
    b->window_start_ms = now;
    sec->bans++;
    char hex[2 * 16 + 1] = "";
    for (size_t i = 0; i < m->routing_len && i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", m->routing[i]);
    ps_log(sec->shard,
           "peer %s cut off for %d s: %d refused messages within %d s (--reject-limit); its "
           "messages are dropped unanswered",
           hex, c->ban_s, c->reject_limit, c->reject_window_s);
}

int ps_security_admit(ps_security *sec, int live, int rank_live) {
    /* a restarted rank replaces its own membership: that never needs a new place */
    if (rank_live || live < sec->max_workers) return 1;
    sec->refused_full++;
    return 0;
}

void ps_security_stats_get(const ps_security *sec, ps_security_stats *out) {
    out->bans = sec->bans;
    out->dropped_banned = sec->dropped_banned;
    out->refused_full = sec->refused_full;
    curve_get_stats(&out->curve);
}

void ps_security_exit_log(const ps_security *sec) {
    ps_security_stats st;
    ps_security_stats_get(sec, &st);
    ps_log(sec->shard,
           "security: %llu clients refused, %llu failed handshakes, %llu peers cut off (%llu "
           "messages dropped), %llu Hellos refused at --max-workers",
           (unsigned long long)st.curve.refused, (unsigned long long)st.curve.handshake_failed,
           (unsigned long long)st.bans, (unsigned long long)st.dropped_banned,
           (unsigned long long)st.refused_full);
}
