#include "worker_metrics.h"
#include "worker.h"

#include <stdio.h>

int worker_metrics_start(worker *w, lp_err *err) {
    worker_metrics *wm = &w->metrics;
    if (w->cfg.metrics_port < 0) return 0;
    char labels[64];
    snprintf(labels, sizeof labels, "role=\"worker\",rank=\"%d\"", w->cfg.rank);
    if (metrics_start(&wm->reg, w->cfg.metrics_bind, w->cfg.metrics_port, labels, err) < 0)
        return -1;
    wm->port = metrics_port(wm->reg);
    static const struct {
        int id;
        const char *name, *help;
        metrics_kind kind;
    } defs[] = {
        {WM_STEP, "loraps_step", "the step this worker computed last", METRICS_GAUGE},
        {WM_STEPS, "loraps_worker_steps_total", "steps this worker pushed", METRICS_COUNTER},
        {WM_LOSS, "loraps_loss", "mean loss of this worker's latest step", METRICS_GAUGE},
        {WM_TOKENS, "loraps_tokens_total", "tokens this worker trained on", METRICS_COUNTER},
        {WM_TOKENS_PER_S, "loraps_tokens_per_second", "tokens/s of the latest step (wall)",
         METRICS_GAUGE},
        {WM_BYTES_IN, "loraps_bytes_received_total", "bytes received (wire)", METRICS_COUNTER},
        {WM_BYTES_OUT, "loraps_bytes_sent_total", "bytes sent (wire)", METRICS_COUNTER},
        {WM_STEP_BYTES, "loraps_step_bytes", "bytes sent and received in the latest step",
         METRICS_GAUGE},
        {WM_COMPUTE, "loraps_compute_seconds_total", "seconds of forward and backward",
         METRICS_COUNTER},
        {WM_SHARDS, "loraps_server_shards", "server shards this worker is joined to",
         METRICS_GAUGE},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        wm->id[defs[i].id] = metrics_define(wm->reg, defs[i].name, defs[i].kind, defs[i].help);
    return 0;
}

void worker_metrics_joined(worker *w) {
    metrics_set(w->metrics.reg, w->metrics.id[WM_SHARDS], w->cfg.n_servers);
    metrics_set_ready(w->metrics.reg, 1);
}

void worker_metrics_step(worker *w, uint64_t step, double loss, uint64_t tokens, uint64_t bytes,
                         double wall_s) {
    metrics *m = w->metrics.reg;
    const int *id = w->metrics.id;
    if (!m) return;
    metrics_set(m, id[WM_STEP], (double)step);
    metrics_set(m, id[WM_STEPS], (double)w->steps_done);
    metrics_set(m, id[WM_LOSS], tokens ? loss / (double)tokens : 0);
    metrics_add(m, id[WM_TOKENS], (double)tokens);
    if (wall_s > 0) metrics_set(m, id[WM_TOKENS_PER_S], (double)tokens / wall_s);
    metrics_set(m, id[WM_BYTES_IN], (double)w->net.bytes_received);
    metrics_set(m, id[WM_BYTES_OUT], (double)w->net.bytes_sent);
    metrics_set(m, id[WM_STEP_BYTES], (double)bytes);
    metrics_set(m, id[WM_COMPUTE], w->compute_s);
}

void worker_metrics_finishing(worker *w) {
    metrics_set_ready(w->metrics.reg, 0);
}

void worker_metrics_stop(worker *w) {
    metrics_stop(w->metrics.reg);
    w->metrics.reg = NULL;
}
