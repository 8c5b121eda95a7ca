/* /healthz, /readyz and Prometheus /metrics (common/metrics_http.h): the gauges of progress,
 * of the other modules' counters, of security and of durability. */
#include "ps_progress.h"

#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    int id;
    const char *name, *help;
    metrics_kind kind;
} GAUGES[] = {
    {PG_STEP, "loraps_step", "published adapter version (completed steps)", METRICS_GAUGE},
    {PG_UPDATES_TOTAL, "loraps_total_steps", "updates the job runs in all", METRICS_GAUGE},
    {PG_LOSS, "loraps_loss", "mean training loss of the latest step", METRICS_GAUGE},
    {PG_TOKENS_TOTAL, "loraps_tokens_total", "tokens trained on", METRICS_COUNTER},
    {PG_TOKENS_PER_S, "loraps_tokens_per_second", "tokens/s over the last seconds", METRICS_GAUGE},
    {PG_BYTES_IN, "loraps_bytes_received_total", "bytes received (wire)", METRICS_COUNTER},
    {PG_BYTES_OUT, "loraps_bytes_sent_total", "bytes sent (wire)", METRICS_COUNTER},
    {PG_WORKERS_LIVE, "loraps_workers_live", "workers that are members now", METRICS_GAUGE},
    {PG_WORKERS_EXPECTED, "loraps_workers_expected", "the job's workers", METRICS_GAUGE},
    {PG_REJECTED, "loraps_rejected_messages_total", "messages refused with an Error",
     METRICS_COUNTER},
    {PG_PUSHES, "loraps_pushes_accepted_total", "gradient pushes accepted", METRICS_COUNTER},
    {PG_DUPLICATE, "loraps_pushes_duplicate_total", "repeated pushes dropped", METRICS_COUNTER},
    {PG_STALE, "loraps_pushes_stale_total", "late pushes dropped", METRICS_COUNTER},
    {PG_JOINS, "loraps_worker_joins_total", "workers that joined", METRICS_COUNTER},
    {PG_DROPS, "loraps_worker_drops_total", "workers dropped as silent", METRICS_COUNTER},
    {PG_PHASE, "loraps_phase", "0 waiting for workers, 1 running, 2 finishing, 3 done",
     METRICS_GAUGE},
    {PG_VAL_LOSS, "loraps_validation_loss", "mean validation loss of the latest pass",
     METRICS_GAUGE},
    {PG_VAL_PPL, "loraps_validation_perplexity", "exp(validation loss) of the latest pass",
     METRICS_GAUGE},
    {PG_AUTH_ACCEPTED, "loraps_auth_accepted_total", "CURVE handshakes with a listed key",
     METRICS_COUNTER},
    {PG_AUTH_REFUSED, "loraps_auth_refused_total", "CURVE clients refused (key not listed)",
     METRICS_COUNTER},
    {PG_HANDSHAKE_FAILED, "loraps_handshake_failed_total",
     "connections that failed their handshake (refused, no CURVE, garbage)", METRICS_COUNTER},
    {PG_CONNECTIONS, "loraps_connections_accepted_total", "TCP connections accepted",
     METRICS_COUNTER},
    {PG_DISCONNECTIONS, "loraps_connections_closed_total",
     "connections closed (also over --max-msg-bytes)", METRICS_COUNTER},
    {PG_BANS, "loraps_peers_cut_off_total", "peers cut off for too many refused messages",
     METRICS_COUNTER},
    {PG_DROPPED_BANNED, "loraps_messages_dropped_cut_off_total",
     "messages of cut-off peers dropped unanswered", METRICS_COUNTER},
    {PG_REFUSED_FULL, "loraps_hello_refused_full_total", "Hellos refused at --max-workers",
     METRICS_COUNTER},
    {PG_MAX_MSG, "loraps_limit_max_msg_bytes", "largest frame a peer may send", METRICS_GAUGE},
    {PG_MAX_WORKERS, "loraps_limit_max_workers", "live workers at most", METRICS_GAUGE},
    {PG_REJECT_LIMIT, "loraps_limit_reject_per_window",
     "refused messages per window before a peer is cut off (0: never)", METRICS_GAUGE},
    {PG_AUTH_ON, "loraps_auth_enabled", "1 with CURVE authentication, 0 without", METRICS_GAUGE},
    {PG_DURABLE_WRITES, "loraps_durable_checkpoints_total",
     "versions made durable before being served", METRICS_COUNTER},
    {PG_DURABLE_FAILURES, "loraps_durable_failures_total",
     "durable checkpoint writes that failed (serving waits, retried)", METRICS_COUNTER},
    {PG_DURABLE_MS, "loraps_durable_write_ms_max", "slowest durable checkpoint write (ms)",
     METRICS_GAUGE},
};

int ps_progress_metrics_start(ps_progress *pg, const ps_security *sec, lp_err *err) {
    const ps_config *c = pg->cfg;
    if (pg->port < 0) return 0;
    char labels[64];
    snprintf(labels, sizeof labels, "role=\"ps\",shard=\"%d\"", c->shard);
    if (metrics_start(&pg->http, c->metrics_bind, pg->port, labels, err) < 0) return -1;
    metrics *m = pg->http;
    pg->port = metrics_port(m);
    for (size_t i = 0; i < sizeof GAUGES / sizeof GAUGES[0]; i++)
        pg->gauge[GAUGES[i].id] = metrics_define(m, GAUGES[i].name, GAUGES[i].kind, GAUGES[i].help);
    metrics_set(m, pg->gauge[PG_MAX_MSG], (double)sec->cfg.max_msg_bytes);
    metrics_set(m, pg->gauge[PG_MAX_WORKERS], sec->max_workers);
    metrics_set(m, pg->gauge[PG_REJECT_LIMIT], sec->cfg.reject_limit);
    metrics_set(m, pg->gauge[PG_AUTH_ON], curve_enabled());
    metrics_set(m, pg->gauge[PG_UPDATES_TOTAL], (double)c->total_updates);
    metrics_set(m, pg->gauge[PG_WORKERS_EXPECTED], c->job.workers);
    /* The loop polls every 50 ms: a minute without a pass means it is stuck. */
    metrics_set_stall_limit(m, 60);
    return 0;
}

static void set(ps_progress *pg, int id, double value) {
    metrics_set(pg->http, pg->gauge[id], value);
}

/* tokens/s over windows of at least 2 s */
static void update_rate(ps_progress *pg, int64_t now_ms) {
    if (!pg->rate_ms) pg->rate_ms = now_ms, pg->rate_tokens = pg->tokens_total;
    if (now_ms - pg->rate_ms < 2000) return;
    set(pg, PG_TOKENS_PER_S,
        (double)(pg->tokens_total - pg->rate_tokens) * 1000.0 / (double)(now_ms - pg->rate_ms));
    pg->rate_ms = now_ms;
    pg->rate_tokens = pg->tokens_total;
}

/* Checkpoint age: `latest` is replaced once a checkpoint is complete (common/checkpoint.h), so
 * the link's own time is when the newest one was written. Shard 0 writes them. */
static void update_checkpoint_time(ps_progress *pg, int64_t now_ms) {
    const ps_config *c = pg->cfg;
    if (c->shard != 0 || !c->out_dir[0] || now_ms - pg->ckpt_checked_ms < 1000) return;
    pg->ckpt_checked_ms = now_ms;
    char latest[PATH_MAX + 16];
    struct stat st;
    snprintf(latest, sizeof latest, "%s/latest", c->out_dir);
    if (lstat(latest, &st) == 0)
        metrics_set_checkpoint_time(pg->http,
                                    (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9);
}

static void update_security(ps_progress *pg, const ps_gauge_sample *x) {
    const ps_security_stats *s = &x->security;
    set(pg, PG_AUTH_ACCEPTED, (double)s->curve.accepted);
    set(pg, PG_AUTH_REFUSED, (double)s->curve.refused);
    set(pg, PG_HANDSHAKE_FAILED, (double)s->curve.handshake_failed);
    set(pg, PG_CONNECTIONS, (double)s->curve.connections);
    set(pg, PG_DISCONNECTIONS, (double)s->curve.disconnections);
    set(pg, PG_BANS, (double)s->bans);
    set(pg, PG_DROPPED_BANNED, (double)s->dropped_banned);
    set(pg, PG_REFUSED_FULL, (double)s->refused_full);
    set(pg, PG_DURABLE_WRITES, (double)x->durable_writes);
    set(pg, PG_DURABLE_FAILURES, (double)x->durable_failures);
    set(pg, PG_DURABLE_MS, x->durable_ms_max);
}

void ps_progress_metrics_update(ps_progress *pg, const ps_gauge_sample *x, int64_t now_ms) {
    if (!pg->http) return;
    metrics_touch(pg->http);
    set(pg, PG_STEP, (double)x->version);
    set(pg, PG_LOSS, pg->last_loss);
    set(pg, PG_TOKENS_TOTAL, (double)pg->tokens_total);
    update_rate(pg, now_ms);
    set(pg, PG_BYTES_IN, (double)x->bytes_in);
    set(pg, PG_BYTES_OUT, (double)x->bytes_out);
    set(pg, PG_WORKERS_LIVE, x->workers_live);
    set(pg, PG_REJECTED, (double)x->rejected);
    set(pg, PG_PUSHES, (double)x->pushes);
    set(pg, PG_DUPLICATE, (double)x->duplicate);
    set(pg, PG_STALE, (double)x->stale);
    set(pg, PG_JOINS, (double)x->joins);
    set(pg, PG_DROPS, (double)x->drops);
    set(pg, PG_PHASE, (double)x->phase);
    update_security(pg, x);
    if (pg->val_known) {
        set(pg, PG_VAL_LOSS, pg->val_loss);
        set(pg, PG_VAL_PPL, exp(pg->val_loss));
    }
    update_checkpoint_time(pg, now_ms);
    /* Ready while it takes workers: not once the job is finishing. */
    metrics_set_ready(pg->http, x->ready);
}

void ps_progress_metrics_stop(ps_progress *pg) {
    metrics_stop(pg->http);
    pg->http = NULL;
}
