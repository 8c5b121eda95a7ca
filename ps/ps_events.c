/* Shard 0's TensorBoard event file, OUT/runs/events.out.tfevents.* (tb_events.h), as HF Trainer
 * writes runs/: one record per step of the training scalars, one per validation pass, each
 * written through at once so a running TensorBoard shows it. A resumed server opens a new file
 * that starts with SessionLog START at its first step, so TensorBoard drops what the earlier
 * files hold from there on. The event file is a view: when it cannot be opened or written the
 * server says why once and trains on without it. Tags carry no adapter id while a job has one
 * adapter; with several they will be adapter_<id>/<tag>. */
#include "ps_events.h"

#include "ps_log.h"
#include "tb_events.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

#define TRAIN_SCALARS 7 /* a step's scalars besides the workers' bytes */

static double wall_time(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void ps_events_open(ps_events *ev, const ps_config *c, uint64_t resumed_version) {
    ev->cfg = c;
    ev->resumed_version = resumed_version;
    if (c->shard != 0 || !c->out_dir[0] || ev->writer) return;
    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s/runs", c->out_dir);
    /* a resumed run writes from version + 1 on */
    int64_t start = resumed_version ? (int64_t)resumed_version + 1 : -1;
    lp_err err;
    if (tb_writer_open(&ev->writer, dir, start, &err) < 0) {
        ps_log(c->shard, "warning: no TensorBoard events: %s", err.msg);
        return;
    }
    ps_log(c->shard, "TensorBoard events in %s", tb_writer_path(ev->writer));
}

void ps_events_close(ps_events *ev) {
    tb_writer_close(ev->writer);
    ev->writer = NULL;
}

static void write_or_stop(ps_events *ev, int64_t step, const tb_scalar *x, int n) {
    lp_err err;
    if (tb_writer_scalars(ev->writer, step, wall_time(), x, n, &err) == 0) return;
    ps_log(ev->cfg->shard, "warning: TensorBoard events stopped: %s", err.msg);
    ps_events_close(ev);
}

/* The bytes each live worker has sent and received so far: two scalars per worker, whose tags
 * are kept in tags (the scalars point at them). */
static int worker_bytes(const ps_members *mb, tb_scalar *x, char (*tags)[48]) {
    int n = 0;
    for (int i = 0; i < mb->n; i++) {
        const ps_member *m = &mb->list[i];
        if (!m->alive) continue;
        snprintf(tags[n], sizeof tags[n], "net/worker_%d/bytes_sent", m->rank);
        x[n] = (tb_scalar){tags[n], (double)m->bytes_sent, "bytes this worker has sent so far"};
        n++;
        snprintf(tags[n], sizeof tags[n], "net/worker_%d/bytes_received", m->rank);
        x[n] = (tb_scalar){tags[n], (double)m->bytes_received,
                           "bytes this worker has received so far"};
        n++;
    }
    return n;
}

static int train_scalars(const ps_members *mb, const ps_step_figures *f, tb_scalar *x) {
    double step_s = f->step_ms / 1000.0;
    int n = 0;
    x[n++] = (tb_scalar){"train/loss", f->loss, "training loss: mean over the step's tokens"};
    x[n++] = (tb_scalar){"train/learning_rate", f->lr, "the step's learning rate"};
    if (f->grad_norm >= 0)
        x[n++] = (tb_scalar){"train/grad_norm", f->grad_norm,
                             "global norm of the mean gradient, before clipping"};
    if (step_s > 0)
        x[n++] = (tb_scalar){"train/tokens_per_second", (double)f->tokens / step_s,
                             "tokens trained on per second of the step"};
    x[n++] = (tb_scalar){"train/step_time_ms", f->step_ms, "wall time of the step at the server"};
    if (f->compute_s >= 0 && step_s > 0)
        x[n++] = (tb_scalar){"train/compute_share", f->compute_s / step_s,
                             "the workers' compute time over the step's wall time (mean)"};
    x[n++] = (tb_scalar){"train/live_workers", (double)ps_members_alive(mb), "workers alive"};
    return n;
}

void ps_events_step(ps_events *ev, const ps_members *mb, const ps_step_figures *f) {
    if (!ev->writer) return;
    tb_scalar *x = malloc((size_t)(TRAIN_SCALARS + 2 * mb->n) * sizeof *x);
    char(*tags)[48] = malloc((size_t)(2 * mb->n + 1) * sizeof *tags);
    if (x && tags) {
        int n = train_scalars(mb, f, x);
        n += worker_bytes(mb, x + n, tags);
        write_or_stop(ev, (int64_t)f->step, x, n);
    } /* else out of memory: this step is missing from the events */
    free(x);
    free(tags);
    /* A pass over the checkpoint's own adapter (at the step resumed from) was written by the
     * run that made the checkpoint, with the same value: once is enough. */
    int seen_before = ev->resumed_version && f->val_step <= ev->resumed_version;
    if (ev->writer && f->has_val && !seen_before) {
        tb_scalar v[2] = {
            {"eval/loss", f->val_loss, "validation loss of the adapter after this many steps"},
            {"eval/perplexity", exp(f->val_loss), "exp of the validation loss"},
        };
        write_or_stop(ev, (int64_t)f->val_step, v, 2);
    }
}
