/* When checkpoints are written: periodically (save_every), and with --durable-every K every K-th
 * version before any worker is served it, so a kill -9 of the server loses no served step. */
#include "ps_checkpoint.h"

#include "ps_log.h"

#include <inttypes.h>
#include <time.h>

static double elapsed_ms(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/* Writes the current version now (one shard: written before ps_checkpoint_begin returns);
 * 1 if it is on disk. */
static int durable_write(ps_checkpoints *ck, uint64_t version) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ps_checkpoint_begin(ck, PS_CKPT_PERIODIC);
    clock_gettime(CLOCK_MONOTONIC, &b);
    int ok = ck->last_version == version + 1;
    if (!ok) {
        ck->durable_failures++;
        return 0;
    }
    double ms = elapsed_ms(&a, &b);
    ck->durable_writes++;
    ck->durable_ms_sum += ms;
    if (ms > ck->durable_ms_max) ck->durable_ms_max = ms;
    return 1;
}

static void durable_after_update(ps_checkpoints *ck, uint64_t V) {
    const ps_config *c = ck->cfg;
    int K = c->durable_every;
    /* the job's last version is written by the final collection before "done" is served */
    if (K <= 0 || V >= c->total_updates || V <= ck->resumed_version) return;
    /* a version after one that could not be written (async: other workers' pushes go on) must
     * be written too, whatever K says, before anything is served again */
    if (V % (uint64_t)K && !ck->durable_pending) return;
    if (durable_write(ck, V)) {
        if (ck->durable_pending)
            ps_log(c->shard, "DURABILITY: version %" PRIu64 " written; serving", V);
        ck->durable_pending = 0;
        return;
    }
    if (!ck->durable_pending)
        ps_log(c->shard,
               "DURABILITY: version %" PRIu64 " could not be written (above); it is kept in "
               "memory and NOT served to any worker until a write succeeds (retried every "
               "second; the previous checkpoint is untouched)",
               V);
    ck->durable_pending = 1;
    ck->durable_retry_ms = wire_now_ms() + 1000;
}

void ps_checkpoint_after_update(ps_checkpoints *ck) {
    const ps_config *c = ck->cfg;
    const job *j = &c->job;
    uint64_t V = ps_adapters_default(ck->adapters)->version;
    durable_after_update(ck, V);
    /* the job's last version is checkpointed by the final collection */
    if (j->save_every <= 0 || V % (uint64_t)j->save_every || V >= c->total_updates ||
        V <= ck->resumed_version)
        return;
    ps_checkpoint_begin(ck, PS_CKPT_PERIODIC);
}

int ps_checkpoint_durable_hold(ps_checkpoints *ck) {
    if (!ck->durable_pending) return 0;
    int64_t now = wire_now_ms();
    if (now < ck->durable_retry_ms) return 1;
    uint64_t V = ps_adapters_default(ck->adapters)->version;
    if (durable_write(ck, V)) {
        ps_log(ck->cfg->shard, "DURABILITY: version %" PRIu64 " written on retry; serving it", V);
        ck->durable_pending = 0;
        return 0;
    }
    ck->durable_retry_ms = now + 1000;
    return 1;
}

void ps_checkpoint_exit_log(const ps_checkpoints *ck) {
    if (!ck->durable_writes && !ck->durable_failures) return;
    ps_log(ck->cfg->shard,
           "durable: %llu versions written before serving (mean %.1f ms, max %.1f ms), %llu "
           "failed writes",
           (unsigned long long)ck->durable_writes,
           ck->durable_ms_sum / (double)(ck->durable_writes ? ck->durable_writes : 1),
           ck->durable_ms_max, (unsigned long long)ck->durable_failures);
}
