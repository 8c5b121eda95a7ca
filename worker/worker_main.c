/* loraps-worker: start-up (options, keys, metrics, the model, one socket per shard), the
 * training loop (worker_loop.c), and shut-down. */
#include "blas_core.h"
#include "worker.h"
#include "worker_log.h"
#include "worker_loop.h"
#include "worker_net.h"
#include "worker_setup.h"
#include "worker_signal.h"

#include "curve_auth.h"
#include "model_load.h"

#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, const char *why, int status) {
    fprintf(stderr, "loraps-worker: error: %s: %s\n", what, why);
    return status;
}

/* CURVE keys if --curve-dir gives them, else a warning that traffic is in the clear. */
static int load_keys(worker *w, lp_err *err) {
    char key_name[128];
    int curve = curve_load_client(w->cfg.curve_dir, w->cfg.curve_client, w->cfg.rank, key_name,
                                  sizeof key_name, err);
    if (curve < 0) return -1;
    if (curve)
        worker_log(w, "CURVE: authenticating with %s/%s.key", w->cfg.curve_dir, key_name);
    else
        worker_log(w, "WARNING: no CURVE keys (--curve-dir / LORAPS_CURVE_DIR): traffic is "
                      "unauthenticated and unencrypted");
    return 0;
}

static int open_shards(worker *w, lp_err *err) {
    w->ctx = zmq_ctx_new();
    w->shards = calloc((size_t)w->cfg.n_servers, sizeof *w->shards);
    if (!w->ctx || !w->shards) return lp_fail(err, "out of memory");
    for (int k = 0; k < w->cfg.n_servers; k++) {
        snprintf(w->shards[k].endpoint, sizeof w->shards[k].endpoint, "%s", w->cfg.servers[k]);
        w->shards[k].shard = -1;
        atomic_init(&w->shards[k].frames_held, 0);
    }
    /* Start-up never waits silently: say whom we wait for, and for how long at most. */
    for (int k = 0; k < w->cfg.n_servers; k++)
        worker_log(w, "connecting to server %s (giving up after %d s: --connect-timeout)",
                   w->cfg.servers[k], w->cfg.connect_timeout_ms / 1000);
    return 0;
}

/* Everything before the first Hello; the exit status on failure, else 0. */
static int start(worker *w) {
    lp_err err;
    if (load_keys(w, &err) < 0) return fail("--curve-dir", err.msg, 2);
    if (worker_metrics_start(w, &err) < 0) return fail("--metrics-port", err.msg, 1);
    if (model_load(&w->mdl, w->cfg.model_dir, &err) < 0) return fail(w->cfg.model_dir, err.msg, 1);
    w->fingerprint = model_fingerprint(w->mdl);
    if (open_shards(w, &err) < 0) return fail("start-up", err.msg, 1);
    return 0;
}

/* Training over (status < 0: with the error in err): say goodbye, say how it ended. */
static void finish(worker *w, int status, const lp_err *err) {
    worker_metrics_finishing(w);
    worker_heartbeat_stop(w);
    if (status == 0) worker_bye_all(w);
    if (status < 0)
        fprintf(stderr, "loraps-worker: error: %s\n", err->msg);
    else if (worker_stop_signal())
        worker_log(w, "stopped by signal %d", worker_stop_signal());
    else
        worker_log(w, "done: %llu steps", (unsigned long long)w->steps_done);
    lp_err stats_err;
    if (worker_write_stats(w, &stats_err) < 0)
        fprintf(stderr, "loraps-worker: error: %s\n", stats_err.msg);
}

static void close_shards(worker *w) {
    for (int k = 0; w->shards && k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        if (s->sock) zmq_close(s->sock);
        free(s->index);
        free(s->numel);
        free(s->param_ptr);
        free(s->grad_ptr);
    }
    /* Returns once libzmq has sent (within the linger) or dropped every queued frame: only then
     * may the gradient buffer they point into be freed. */
    if (w->ctx) zmq_ctx_term(w->ctx);
    free(w->shards);
}

static void worker_free(worker *w) {
    close_shards(w);
    free(w->step_bytes);
    worker_setup_free(w);
    model_free(w->mdl);
    worker_metrics_stop(w);
    worker_config_free(&w->cfg);
}

int main(int argc, char **argv) {
    /* OpenBLAS picks slow kernels on CPUs it does not know: restart on the right ones */
    if (blas_core_setup("loraps-worker", argv) < 0) return 2;
    worker w = {0};
    int rc = worker_config_load(&w.cfg, argc, argv);
    if (rc) return rc == WORKER_CONFIG_HELP ? 0 : rc;
    worker_signals_install();
    rc = start(&w);
    if (rc == 0) {
        lp_err err;
        int status = worker_train(&w, &err);
        finish(&w, status, &err);
        rc = status < 0 ? 1 : 0;
    }
    worker_free(&w);
    return rc;
}
