/* Progress: one line per step on stdout, one JSON line per step in the metrics file (shard 0),
 * the validation passes summed from the workers' shares, the Prometheus gauges of /metrics
 * (ps_progress_metrics.c) and the step's TensorBoard events (ps_events.c). */
#ifndef LORAPS_PS_PROGRESS_H
#define LORAPS_PS_PROGRESS_H

#include "metrics_http.h"
#include "model_card.h"
#include "ps_config.h"
#include "ps_events.h"
#include "ps_members.h"
#include "ps_security.h"

#include <stdint.h>
#include <stdio.h>

enum {
    PG_STEP,
    PG_UPDATES_TOTAL,
    PG_LOSS,
    PG_TOKENS_TOTAL,
    PG_TOKENS_PER_S,
    PG_BYTES_IN,
    PG_BYTES_OUT,
    PG_WORKERS_LIVE,
    PG_WORKERS_EXPECTED,
    PG_REJECTED,
    PG_PUSHES,
    PG_DUPLICATE,
    PG_STALE,
    PG_JOINS,
    PG_DROPS,
    PG_PHASE,
    PG_VAL_LOSS,
    PG_VAL_PPL,
    PG_AUTH_ACCEPTED,
    PG_AUTH_REFUSED,
    PG_HANDSHAKE_FAILED,
    PG_CONNECTIONS,
    PG_DISCONNECTIONS,
    PG_BANS,
    PG_DROPPED_BANNED,
    PG_REFUSED_FULL,
    PG_MAX_MSG,
    PG_MAX_WORKERS,
    PG_REJECT_LIMIT,
    PG_AUTH_ON,
    PG_DURABLE_WRITES,
    PG_DURABLE_FAILURES,
    PG_DURABLE_MS,
    PG_N
};

typedef struct ps_progress {
    const ps_config *cfg;
    FILE *metrics;            /* shard 0, --metrics */
    uint64_t resumed_version; /* a resumed job's rate counts only the steps of this run */
    int64_t start_ms, last_step_ms;
    uint64_t tokens_total;
    double last_loss;
    /* validation every eval_every steps: the workers' shares of the pass at step eval_at - 1
     * (eval_at 0: none open), summed token-weighted; a complete pass waits in val_* for the
     * next progress line (val_pending) */
    uint64_t eval_at, eval_tokens, eval_seqs;
    double eval_loss;
    int eval_n;
    int val_pending, val_known;
    uint64_t val_step, val_tokens;
    double val_loss;
    /* /metrics (--metrics-port) */
    metrics *http;
    int port; /* the port bound (--metrics-port 0: one the system chose) */
    int gauge[PG_N];
    int64_t rate_ms;
    uint64_t rate_tokens;
    int64_t ckpt_checked_ms;
    ps_events events; /* shard 0 with --out: the TensorBoard event file */
} ps_progress;

/* What the gauges show, gathered from the other modules on every pass of the loop. */
typedef struct ps_gauge_sample {
    uint64_t version;
    uint64_t bytes_in, bytes_out;
    int workers_live;
    uint64_t rejected, pushes, duplicate, stale, joins, drops;
    int phase, ready;
    ps_security_stats security;
    uint64_t durable_writes, durable_failures;
    double durable_ms_max;
} ps_gauge_sample;

/* Opens the metrics file (shard 0, --metrics). */
int ps_progress_init(ps_progress *pg, const ps_config *c, lp_err *err);
void ps_progress_free(ps_progress *pg);
/* Training starts (every rank joined) from `resumed_version`. */
void ps_progress_begin(ps_progress *pg, uint64_t resumed_version);
/* Step `step` made version `version` from `tokens` tokens: the line, the JSON line and the
 * step's events. compute_s, grad_norm (of the mean gradient, before clipping) < 0: unknown. */
void ps_progress_step(ps_progress *pg, const ps_members *mb, uint64_t step, uint64_t version,
                      double lr, uint64_t tokens, double loss, double compute_s, double grad_norm);
/* What the run's model cards say of it at `step` (model_card.h): the last loss, the last
 * validation pass, the tokens of this run. */
void ps_progress_card(const ps_progress *pg, uint64_t step, model_card *card);

/* One accepted push's share of the validation pass at `step`. Sync: the step's pushes are its
 * shares, and the step's completion closes it. Async: ranks push `step` at different times;
 * the pass closes when every rank's share is in (or a later pass starts). */
void ps_progress_eval_add(ps_progress *pg, uint64_t step, const Loraps__EvalResult *ev);
/* The open pass is complete: it waits for the next progress line. */
void ps_progress_eval_close(ps_progress *pg);

/* ps_progress_metrics.c: /healthz, /readyz and Prometheus /metrics on --metrics-port. */
int ps_progress_metrics_start(ps_progress *pg, const ps_security *sec, lp_err *err);
void ps_progress_metrics_update(ps_progress *pg, const ps_gauge_sample *x, int64_t now_ms);
void ps_progress_metrics_stop(ps_progress *pg);

#endif
