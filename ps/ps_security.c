/* The server's protection: CURVE authentication (common/curve_auth.h), limits on what a peer may
 * cost it (message size, workers, a peer sending too many bad messages), per-step durability,
 * and their /metrics. Options are flags and LORAPS_* variables like every other (ps_main.c). */
#include "ps.h"

#include "curve_auth.h"
#include "metrics_http.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BAN_SLOTS 1024

static struct {
    char curve_dir[PATH_MAX];
    int64_t max_msg_bytes; /* ZMQ_MAXMSGSIZE of the server's socket (per frame) */
    int max_workers;       /* live members; 0: the job's workers */
    int reject_limit;      /* rejected messages per window before a peer is cut off */
    int reject_window_s, ban_s;
    int durable_every;
} g_sec = {"", WIRE_ZMQ_MAXMSGSIZE, 0, 1000, 10, 30, 0};

typedef struct ban_slot {
    unsigned char routing[WIRE_MAX_ROUTING_BYTES];
    size_t routing_len;
    int64_t window_start_ms, banned_until_ms, last_ms;
    uint32_t count;
} ban_slot;

static ban_slot g_ban[BAN_SLOTS];
static int64_t g_ban_until_max; /* no peer is cut off past this: most messages skip the table */
static struct {
    uint64_t bans, dropped_banned, refused_full, durable_writes, durable_failures;
    double durable_ms_sum, durable_ms_max;
} g_sc;

static int parse_long(const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int ps_security_flag(const char *a, const char *v, lp_err *err) {
    static const struct {
        const char *flag;
        long lo, hi;
        void *dst;
        int is64;
    } nums[] = {
        {"--max-msg-bytes", 4096, (long)1 << 40, &g_sec.max_msg_bytes, 1},
        {"--max-workers", 0, 1 << 20, &g_sec.max_workers, 0},
        {"--reject-limit", 0, 1 << 30, &g_sec.reject_limit, 0},
        {"--reject-window", 1, 86400, &g_sec.reject_window_s, 0},
        {"--ban-seconds", 0, 86400, &g_sec.ban_s, 0},
        {"--durable-every", 0, 1 << 30, &g_sec.durable_every, 0},
    };
    if (!strcmp(a, "--curve-dir")) {
        if (!v) return lp_fail(err, "needs a value");
        snprintf(g_sec.curve_dir, sizeof g_sec.curve_dir, "%s", v);
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
            "                   0 never cuts a peer off\n"
            "  --durable-every K  every K-th version is a checkpoint on disk (needs --out) before\n"
            "                   any worker is served it: a kill -9 of the server loses no served\n"
            "                   step (resume with --resume latest); 0: off (save_every only).\n"
            "                   A write that fails (disk full, read-only) is retried every\n"
            "                   second and nothing is served meanwhile (state kept in memory);\n"
            "                   without it a failed checkpoint is logged and training goes on\n",
            (long long)WIRE_ZMQ_MAXMSGSIZE);
}

int ps_security_durable_every(void) {
    return g_sec.durable_every;
}

static void log_auth_line(const char *line) {
    fprintf(stderr, "loraps-ps: auth: %s\n", line);
    fflush(stderr);
}

int ps_security_load(ps *s, lp_err *err) {
    int r = curve_load_server(g_sec.curve_dir, err);
    if (r < 0) return lp_wrap(err, "--curve-dir %s", g_sec.curve_dir);
    if (r == 0)
        ps_log(s,
               "WARNING: no CURVE keys (--curve-dir / LORAPS_CURVE_DIR%s%s): traffic is "
               "unauthenticated and unencrypted; anyone who reaches %s can join the job",
               g_sec.curve_dir[0] ? " " : "", g_sec.curve_dir[0] ? "holds none" : " unset",
               s->cfg.bind);
    if (g_sec.durable_every > 0 && !s->cfg.out_dir[0])
        return lp_fail(err, "--durable-every needs --out (where the checkpoints go)");
    if (g_sec.durable_every > 0 && s->cfg.job.keep_checkpoints == 0) {
        /* a folder per durable version would fill the disk: keep the newest few */
        s->cfg.job.keep_checkpoints = 3;
        ps_log(s, "--durable-every: keeping the newest 3 checkpoints (keep_checkpoints)");
    }
    if (g_sec.durable_every > 0 && s->cfg.n_shards > 1)
        return lp_fail(err, "--durable-every is not supported with several shards yet (each "
                            "shard would have to wait for shard 0's write); use one shard");
    return 0;
}

int ps_security_router(ps *s, lp_err *err) {
    int64_t max = g_sec.max_msg_bytes;
    if (zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &max, sizeof max) < 0)
        return lp_fail(err, "ZMQ_MAXMSGSIZE: %s", zmq_strerror(zmq_errno()));
    if (curve_server_setup(s->router, err) < 0) return -1;
    return curve_auth_start(s->ctx, s->router, log_auth_line, err);
}

int ps_security_peer(void *sock, lp_err *err) {
    return curve_client_setup(sock, err);
}

void ps_security_print(const ps *s, FILE *out) {
    int mw = g_sec.max_workers ? g_sec.max_workers : s->cfg.job.workers;
    fprintf(out, "  authentication   %s\n",
            curve_enabled() ? "CURVE (authorized_clients only)" : "NONE (unauthenticated)");
    if (g_sec.curve_dir[0]) fprintf(out, "  curve dir        %s\n", g_sec.curve_dir);
    fprintf(out, "  max msg bytes    %lld\n", (long long)g_sec.max_msg_bytes);
    fprintf(out, "  max workers      %d\n", mw);
    if (g_sec.reject_limit)
        fprintf(out, "  reject limit     %d in %d s, then ignored %d s\n", g_sec.reject_limit,
                g_sec.reject_window_s, g_sec.ban_s);
    else
        fprintf(out, "  reject limit     none\n");
    fprintf(out, "  durable every    %d%s\n", g_sec.durable_every,
            g_sec.durable_every ? " version(s), before serving them" : " (off)");
}

void ps_security_shutdown(void) {
    curve_auth_join();
}

/* ---- per-peer rejection limit --------------------------------------------------------------- */

static ban_slot *ban_find(const wire_msg *m, int create, int64_t now) {
    if (!m->routing_len) return NULL;
    ban_slot *oldest = NULL;
    for (int i = 0; i < BAN_SLOTS; i++) {
        ban_slot *b = &g_ban[i];
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

int ps_security_drop(ps *s, const wire_msg *m) {
    (void)s;
    if (!g_sec.reject_limit) return 0;
    int64_t now = wire_now_ms();
    if (now >= g_ban_until_max) return 0;
    ban_slot *b = ban_find(m, 0, now);
    if (!b || b->banned_until_ms <= now) return 0;
    g_sc.dropped_banned++;
    return 1;
}

void ps_security_on_reject(ps *s, const wire_msg *m) {
    if (!g_sec.reject_limit) return;
    int64_t now = wire_now_ms();
    ban_slot *b = ban_find(m, 1, now);
    if (!b) return;
    b->last_ms = now;
    if (now - b->window_start_ms > (int64_t)g_sec.reject_window_s * 1000) {
        b->window_start_ms = now;
        b->count = 0;
    }
    if (++b->count < (uint32_t)g_sec.reject_limit || b->banned_until_ms > now) return;
    b->banned_until_ms = now + (int64_t)g_sec.ban_s * 1000;
    if (b->banned_until_ms > g_ban_until_max) g_ban_until_max = b->banned_until_ms;
    b->count = 0;
    b->window_start_ms = now;
    g_sc.bans++;
    char hex[2 * 16 + 1] = "";
    for (size_t i = 0; i < m->routing_len && i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", m->routing[i]);
    ps_log(s,
           "peer %s cut off for %d s: %d refused messages within %d s (--reject-limit); its "
           "messages are dropped unanswered",
           hex, g_sec.ban_s, g_sec.reject_limit, g_sec.reject_window_s);
}

int ps_security_admit(ps *s, int rank) {
    int mw = g_sec.max_workers ? g_sec.max_workers : s->cfg.job.workers;
    /* a restarted rank replaces its own membership: that never needs a new place */
    int old = s->rank_member[rank];
    if (old >= 0 && s->members[old].alive) return 1;
    if (ps_members_alive(s) < mw) return 1;
    g_sc.refused_full++;
    return 0;
}

/* ---- durability ----------------------------------------------------------------------------- */

void ps_security_durable_done(double ms, int ok) {
    if (!ok) {
        g_sc.durable_failures++;
        return;
    }
    g_sc.durable_writes++;
    g_sc.durable_ms_sum += ms;
    if (ms > g_sc.durable_ms_max) g_sc.durable_ms_max = ms;
}

void ps_security_durable_stats(uint64_t *writes, double *mean_ms, double *max_ms) {
    *writes = g_sc.durable_writes;
    *mean_ms = g_sc.durable_writes ? g_sc.durable_ms_sum / (double)g_sc.durable_writes : 0;
    *max_ms = g_sc.durable_ms_max;
}

/* ---- /metrics ------------------------------------------------------------------------------- */

enum {
    SM_AUTH_ACCEPTED,
    SM_AUTH_REFUSED,
    SM_HANDSHAKE_FAILED,
    SM_CONNECTIONS,
    SM_DISCONNECTIONS,
    SM_BANS,
    SM_DROPPED_BANNED,
    SM_REFUSED_FULL,
    SM_MAX_MSG,
    SM_MAX_WORKERS,
    SM_REJECT_LIMIT,
    SM_AUTH_ON,
    SM_DURABLE_WRITES,
    SM_DURABLE_FAILURES,
    SM_DURABLE_MS,
    SM_N
};
static int g_sm[SM_N];

void ps_security_metrics_define(ps *s, metrics *m) {
    static const struct {
        int id;
        const char *name, *help;
        metrics_kind kind;
    } defs[] = {
        {SM_AUTH_ACCEPTED, "loraps_auth_accepted_total", "CURVE handshakes with a listed key",
         METRICS_COUNTER},
        {SM_AUTH_REFUSED, "loraps_auth_refused_total", "CURVE clients refused (key not listed)",
         METRICS_COUNTER},
        {SM_HANDSHAKE_FAILED, "loraps_handshake_failed_total",
         "connections that failed their handshake (refused, no CURVE, garbage)", METRICS_COUNTER},
        {SM_CONNECTIONS, "loraps_connections_accepted_total", "TCP connections accepted",
         METRICS_COUNTER},
        {SM_DISCONNECTIONS, "loraps_connections_closed_total",
         "connections closed (also over --max-msg-bytes)", METRICS_COUNTER},
        {SM_BANS, "loraps_peers_cut_off_total", "peers cut off for too many refused messages",
         METRICS_COUNTER},
        {SM_DROPPED_BANNED, "loraps_messages_dropped_cut_off_total",
         "messages of cut-off peers dropped unanswered", METRICS_COUNTER},
        {SM_REFUSED_FULL, "loraps_hello_refused_full_total", "Hellos refused at --max-workers",
         METRICS_COUNTER},
        {SM_MAX_MSG, "loraps_limit_max_msg_bytes", "largest frame a peer may send", METRICS_GAUGE},
        {SM_MAX_WORKERS, "loraps_limit_max_workers", "live workers at most", METRICS_GAUGE},
        {SM_REJECT_LIMIT, "loraps_limit_reject_per_window",
         "refused messages per window before a peer is cut off (0: never)", METRICS_GAUGE},
        {SM_AUTH_ON, "loraps_auth_enabled", "1 with CURVE authentication, 0 without",
         METRICS_GAUGE},
        {SM_DURABLE_WRITES, "loraps_durable_checkpoints_total",
         "versions made durable before being served", METRICS_COUNTER},
        {SM_DURABLE_FAILURES, "loraps_durable_failures_total",
         "durable checkpoint writes that failed (serving waits, retried)", METRICS_COUNTER},
        {SM_DURABLE_MS, "loraps_durable_write_ms_max", "slowest durable checkpoint write (ms)",
         METRICS_GAUGE},
    };
    if (!m) return;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        g_sm[defs[i].id] = metrics_define(m, defs[i].name, defs[i].kind, defs[i].help);
    metrics_set(m, g_sm[SM_MAX_MSG], (double)g_sec.max_msg_bytes);
    metrics_set(m, g_sm[SM_MAX_WORKERS],
                g_sec.max_workers ? g_sec.max_workers : s->cfg.job.workers);
    metrics_set(m, g_sm[SM_REJECT_LIMIT], g_sec.reject_limit);
    metrics_set(m, g_sm[SM_AUTH_ON], curve_enabled());
}

void ps_security_metrics_update(metrics *m) {
    if (!m) return;
    curve_stats cs;
    curve_get_stats(&cs);
    metrics_set(m, g_sm[SM_AUTH_ACCEPTED], (double)cs.accepted);
    metrics_set(m, g_sm[SM_AUTH_REFUSED], (double)cs.refused);
    metrics_set(m, g_sm[SM_HANDSHAKE_FAILED], (double)cs.handshake_failed);
    metrics_set(m, g_sm[SM_CONNECTIONS], (double)cs.connections);
    metrics_set(m, g_sm[SM_DISCONNECTIONS], (double)cs.disconnections);
    metrics_set(m, g_sm[SM_BANS], (double)g_sc.bans);
    metrics_set(m, g_sm[SM_DROPPED_BANNED], (double)g_sc.dropped_banned);
    metrics_set(m, g_sm[SM_REFUSED_FULL], (double)g_sc.refused_full);
    metrics_set(m, g_sm[SM_DURABLE_WRITES], (double)g_sc.durable_writes);
    metrics_set(m, g_sm[SM_DURABLE_FAILURES], (double)g_sc.durable_failures);
    metrics_set(m, g_sm[SM_DURABLE_MS], g_sc.durable_ms_max);
}

void ps_security_exit_log(ps *s) {
    curve_stats cs;
    curve_get_stats(&cs);
    ps_log(s,
           "security: %llu clients refused, %llu failed handshakes, %llu peers cut off (%llu "
           "messages dropped), %llu Hellos refused at --max-workers",
           (unsigned long long)cs.refused, (unsigned long long)cs.handshake_failed,
           (unsigned long long)g_sc.bans, (unsigned long long)g_sc.dropped_banned,
           (unsigned long long)g_sc.refused_full);
    if (g_sc.durable_writes || g_sc.durable_failures)
        ps_log(s,
               "durable: %llu versions written before serving (mean %.1f ms, max %.1f ms), %llu "
               "failed writes",
               (unsigned long long)g_sc.durable_writes,
               g_sc.durable_ms_sum / (double)(g_sc.durable_writes ? g_sc.durable_writes : 1),
               g_sc.durable_ms_max, (unsigned long long)g_sc.durable_failures);
}

/* ---- per-step durability -------------------------------------------------------------------- */

static int g_durable_pending; /* the published version is not on disk yet: serve nothing */
static int64_t g_durable_retry_ms;

static int durable_write(ps *s) {
    uint64_t V = s->adapter.version;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ps_checkpoint_begin(s, PS_CKPT_PERIODIC); /* one shard: written before this returns */
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    int ok = s->last_ckpt_version == V + 1;
    ps_security_durable_done(ms, ok);
    return ok;
}

void ps_durable_after_update(ps *s) {
    uint64_t V = s->adapter.version;
    int K = g_sec.durable_every;
    /* the job's last version is written by the final collection before "done" is served */
    if (K <= 0 || V >= s->total_updates || V <= s->resumed_version) return;
    /* a version after one that could not be written (async: other workers' pushes go on) must
     * be written too, whatever K says, before anything is served again */
    if (V % (uint64_t)K && !g_durable_pending) return;
    if (durable_write(s)) {
        if (g_durable_pending) ps_log(s, "DURABILITY: version %" PRIu64 " written; serving", V);
        g_durable_pending = 0;
        return;
    }
    if (!g_durable_pending)
        ps_log(s,
               "DURABILITY: version %" PRIu64 " could not be written (above); it is kept in "
               "memory and NOT served to any worker until a write succeeds (retried every "
               "second; the previous checkpoint is untouched)",
               V);
    g_durable_pending = 1;
    g_durable_retry_ms = wire_now_ms() + 1000;
}

int ps_durable_hold(ps *s) {
    if (!g_durable_pending) return 0;
    int64_t now = wire_now_ms();
    if (now < g_durable_retry_ms) return 1;
    if (durable_write(s)) {
        ps_log(s, "DURABILITY: version %" PRIu64 " written on retry; serving it",
               s->adapter.version);
        g_durable_pending = 0;
        return 0;
    }
    g_durable_retry_ms = now + 1000;
    return 1;
}
