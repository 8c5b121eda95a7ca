/* The worker's /healthz, /readyz and Prometheus /metrics (common/metrics_http.h), when
 * --metrics-port is given; without it every call does nothing. */
#ifndef LORAPS_WORKER_METRICS_H
#define LORAPS_WORKER_METRICS_H

#include "error.h"
#include "metrics_http.h"

#include <stdint.h>

typedef struct worker worker;

enum {
    WM_STEP,
    WM_STEPS,
    WM_LOSS,
    WM_TOKENS,
    WM_TOKENS_PER_S,
    WM_BYTES_IN,
    WM_BYTES_OUT,
    WM_STEP_BYTES,
    WM_COMPUTE,
    WM_SHARDS,
    WM_N
};

typedef struct worker_metrics {
    metrics *reg; /* NULL: no endpoint */
    int port;     /* the port bound (--metrics-port 0: the kernel's choice) */
    int id[WM_N];
} worker_metrics;

/* Starts the endpoint on the configured port and defines the worker's metrics. */
int worker_metrics_start(worker *w, lp_err *err);
/* Every shard joined: ready. */
void worker_metrics_joined(worker *w);
/* After each step pushed. */
void worker_metrics_step(worker *w, uint64_t step, double loss, uint64_t tokens, uint64_t bytes,
                         double wall_s);
/* Training over: not ready any more (the endpoint stays up until worker_metrics_stop). */
void worker_metrics_finishing(worker *w);
void worker_metrics_stop(worker *w);

#endif
