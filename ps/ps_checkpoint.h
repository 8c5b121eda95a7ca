/* Checkpoints of the server side, per-step durability, and resume.
 *
 * Every shard owns a part of the adapter and of AdamW's moments; a checkpoint is still ONE PEFT
 * folder (common/checkpoint.h), written by shard 0. When a checkpoint is due, each other shard
 * sends shard 0 its whole state at that version (ShardState: params, m, v), and shard 0 writes
 * the folder once it holds every shard's part of the SAME version (ps_checkpoint.c).
 *
 * With --durable-every K, every K-th version is written before any worker is served it
 * (ps_checkpoint_durable.c). Resume reads a folder back on every shard; each takes its part, so
 * the number of shards may change between runs (ps_checkpoint_resume.c). */
#ifndef LORAPS_PS_CHECKPOINT_H
#define LORAPS_PS_CHECKPOINT_H

#include "ps_adapters.h"
#include "ps_config.h"
#include "ps_net.h"
#include "ps_progress.h"
#include "ps_step.h"
#include "ps_validate.h"

#include <stdint.h>

enum { PS_CKPT_PERIODIC = 0, PS_CKPT_FINAL = 1, PS_CKPT_STOP = 2 };

typedef struct ps_checkpoints {
    const ps_config *cfg;
    ps_adapters *adapters;
    ps_step *step; /* the ranks' next steps and data positions, and the data id */
    ps_net *net;
    ps_validate *checks;
    const ps_progress *progress;     /* the run's figures, for the folders' model cards */
    struct ps_ckpt_collect *collect; /* shard 0: states being collected from the shards */
    uint64_t resumed_version;        /* the version training started from */
    uint64_t last_version;           /* shard 0: the newest checkpoint written (+1; 0 none) */
    /* --durable-every */
    int durable_pending; /* the published version is not on disk yet: serve nothing */
    int64_t durable_retry_ms;
    uint64_t durable_writes, durable_failures;
    double durable_ms_sum, durable_ms_max;
} ps_checkpoints;

/* Checks the durability options against the job (and keeps the newest 3 checkpoints with
 * --durable-every when keep_checkpoints is 0: the only change made to the job). */
int ps_checkpoints_init(ps_checkpoints *ck, ps_config *cfg, ps_adapters *adapters, ps_step *step,
                        ps_net *net, ps_validate *checks, const ps_progress *progress, lp_err *err);
void ps_checkpoints_free(ps_checkpoints *ck);

/* --resume: loads the checkpoint (or a PEFT adapter: fresh moments) into this shard's part and
 * restores the version, AdamW's t and the ranks' data positions. */
int ps_checkpoint_resume(ps_checkpoints *ck, lp_err *err);

/* A checkpoint of the current version: shards other than 0 send their state to shard 0, which
 * writes the folder (and, for FINAL and STOP, the --out adapter) once it has every shard's. */
void ps_checkpoint_begin(ps_checkpoints *ck, int kind);
/* shard 0: a ShardState from another shard */
void ps_checkpoint_on_peer(ps_checkpoints *ck, wire_msg *m);
/* shard 0 in PS_FINISHING: 1 once the final state is written (or given up on). */
int ps_checkpoint_final_done(ps_checkpoints *ck);
/* A stop signal (or --idle-exit): a checkpoint of the current version unless the job is done or
 * finishing already. 1 if shard 0 must wait for the other shards' states. */
int ps_checkpoint_stop_begin(ps_checkpoints *ck, int done, int finishing);
/* 1 while shard 0 collects the final or stop states. */
int ps_checkpoint_collecting(const ps_checkpoints *ck);
/* The stop's wait is over: what did not come is given up on. */
void ps_checkpoint_stop_end(ps_checkpoints *ck, int finishing);
/* The job's settings as `key value` lines (job_print), for a checkpoint and for resume. */
void ps_checkpoint_job_text(const job *j, char **out);

/* ps_checkpoint_durable.c: after each published version, a periodic checkpoint when the version
 * is a multiple of save_every, and with --durable-every K, every K-th written to disk now. */
void ps_checkpoint_after_update(ps_checkpoints *ck);
/* 1 while the newest version is not yet durable (a failed write, retried): serve nothing. */
int ps_checkpoint_durable_hold(ps_checkpoints *ck);
void ps_checkpoint_exit_log(const ps_checkpoints *ck);

#endif
