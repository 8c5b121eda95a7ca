/* Health and metrics over HTTP for every process (libmicrohttpd, one internal thread):
 *   GET /healthz  200 "ok" while the process is alive and its loop is not stalled, else 503
 *   GET /readyz   200 "ready" once the process says it is ready (server: listening; worker:
 *                 joined every shard), 503 before and while finishing
 *   GET /metrics  the registry in Prometheus text format (version 0.0.4)
 * The registry is a small fixed table of gauges and counters that the owning process fills from
 * its loop; every call takes a mutex, so the HTTP thread reads a consistent value. Every
 * function accepts a NULL registry and then does nothing, so callers need no "metrics on?" test. */
#ifndef LORAPS_METRICS_HTTP_H
#define LORAPS_METRICS_HTTP_H

#include "error.h"

typedef struct metrics metrics;

typedef enum metrics_kind { METRICS_GAUGE, METRICS_COUNTER } metrics_kind;

#define METRICS_MAX 64

/* Starts the endpoint on bind_addr (an IPv4 or IPv6 literal; "0.0.0.0", "::" or NULL for every
 * interface, as orchestrators' probes need) and port (0: the kernel picks; see metrics_port).
 * labels are constant labels added to every sample, e.g. `role="ps",shard="0"` (may be NULL). */
int metrics_start(metrics **out, const char *bind_addr, int port, const char *labels, lp_err *err);
/* Stops the HTTP thread and frees the registry. */
void metrics_stop(metrics *m);
/* The port actually bound. */
int metrics_port(const metrics *m);

/* Adds a metric; returns its id (>= 0), or -1 when the table is full or the name is invalid.
 * Names follow Prometheus' rules ([a-zA-Z_:][a-zA-Z0-9_:]*); counters should end in _total. */
int metrics_define(metrics *m, const char *name, metrics_kind kind, const char *help);
void metrics_set(metrics *m, int id, double value);
void metrics_add(metrics *m, int id, double delta);
double metrics_get(metrics *m, int id);

/* /readyz answers 200 while ready is non-zero. */
void metrics_set_ready(metrics *m, int ready);
/* /healthz answers 503 once the loop has not called metrics_touch for stall_s seconds
 * (0, the default: never; for processes whose loop may legitimately block, e.g. long compute). */
void metrics_set_stall_limit(metrics *m, double stall_s);
void metrics_touch(metrics *m);
/* The wall-clock time (Unix seconds) of the latest checkpoint written; /metrics then shows
 * loraps_checkpoint_age_seconds and loraps_checkpoint_timestamp_seconds. Until it is called,
 * neither is shown (no checkpoint yet). */
void metrics_set_checkpoint_time(metrics *m, double unix_seconds);

/* The text /metrics would answer now (malloc'd; for tests and logs). NULL on out of memory. */
char *metrics_render(metrics *m);

#endif
