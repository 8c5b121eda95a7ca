/* loraps-ps: one shard of the parameter server. One thread, one ROUTER socket, one event loop:
 * every message is validated (ps_validate.c), members are tracked by heartbeats
 * (ps_members.c), gradients are aggregated and applied by the consistency mode (ps_sync.c) to
 * the adapter shard and its AdamW state (ps_state.c), and ps_main.c owns flags and the loop. */
#ifndef LORAPS_PS_H
#define LORAPS_PS_H

#include "adamw.h"
#include "error.h"
#include "job.h"
#include "shard_map.h"
#include "wire.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

/* ---- configuration ------------------------------------------------------------------------ */

typedef struct ps_config {
    job job;
    char model_dir[PATH_MAX];
    char out_dir[PATH_MAX];
    char bind[256];
    char metrics_path[PATH_MAX]; /* shard 0: one JSON line per step */
    int shard, n_shards;
    char **peers; /* endpoints of all shards, in shard order (n_shards of them) */
    int quiet;    /* no progress lines */
    int threads;  /* for AdamW and the norm (OpenMP); the job's threads are the workers' */
    Loraps__WireDtype wire_dtype;
    int sync;              /* mode == sync */
    char resume[PATH_MAX]; /* --resume: a checkpoint or adapter folder, or "latest" */
} ps_config;

/* ---- the adapter spec and this shard's state ------------------------------------------------ */

typedef struct ps_spec {
    int n; /* tensors of the whole adapter */
    char **names;
    uint64_t *rows, *cols;
    size_t *numel;
} ps_spec;

/* A published version in the wire dtype, shared with libzmq's I/O thread while Params frames
 * referring to it are in flight, so a new version never tears a message being sent. */
typedef struct ps_snapshot {
    atomic_int refs;
    uint64_t version;
    size_t bytes;
    void *data;
} ps_snapshot;

/* One adapter's part on this shard. The server is keyed by adapter id; one adapter today. */
typedef struct ps_adapter {
    uint32_t id;
    int n;           /* tensors on this shard */
    uint32_t *index; /* their spec indices, increasing */
    size_t *numel;
    size_t *offset; /* into the flat buffers below */
    size_t n_params;
    float *params, *m, *v;
    float *grad_sum; /* sync: sum of n_i * g_i of the open step; async: one push */
    float **grad_ptr, **param_ptr;
    uint64_t version; /* published version */
    uint64_t updates; /* AdamW's t */
    ps_snapshot *snap;
} ps_adapter;

/* ---- members ------------------------------------------------------------------------------- */

typedef struct ps_member {
    int alive;
    uint64_t id;
    int rank;
    int64_t last_seen_ms;
    char host[64];
    uint32_t pid;
    /* reported by the worker in its pushes */
    uint64_t bytes_sent, bytes_received;
    double compute_seconds;
    /* the version its latest Pull asked for: a member waiting for a later version than the
     * open step will not push for it, and the step does not wait for it */
    uint64_t pull_version;
} ps_member;

typedef struct ps_pull {
    unsigned char routing[WIRE_MAX_ROUTING_BYTES];
    size_t routing_len;
    uint64_t worker_id;
    uint64_t version, step;
} ps_pull;

typedef struct ps_counters {
    uint64_t rejected[32]; /* by error code */
    uint64_t rejected_total;
    uint64_t pushes_accepted, pushes_duplicate, pushes_stale;
    uint64_t pulls_served, joins, drops, byes;
    uint64_t log_suppressed;
    uint64_t pulls_held_staleness; /* pulls that waited for the slowest worker */
    uint64_t max_spread;           /* async: most steps a push ran ahead of the slowest */
    /* sync: from accepting a step's last push to the new version handed to libzmq for every
     * waiting pull (the server's own step overhead) */
    double overhead_ms_sum, overhead_ms_max;
    uint64_t overhead_n;
} ps_counters;

typedef enum ps_phase { PS_WAITING, PS_RUNNING, PS_FINISHING, PS_DONE } ps_phase;

typedef struct ps {
    ps_config cfg;
    ps_spec spec;
    shard_map map;
    uint64_t fingerprint, job_id, instance;
    adamw_config adamw;
    lr_schedule sched;
    uint64_t total_updates; /* sync: max_steps; async: max_steps * workers */
    ps_adapter adapter;

    void *ctx, *router;
    void **peer; /* DEALER to each other shard (NULL for self) */
    wire_counters net;
    ps_counters count;

    ps_member *members;
    int n_members, cap_members;
    uint64_t next_worker_id;
    int *rank_member; /* [workers]: index into members of the rank's live member, or -1 */
    int ranks_joined; /* distinct ranks ever joined (the start barrier) */
    unsigned char *rank_seen;
    uint64_t *rank_next; /* [workers]: the next step each rank should push */

    ps_pull *pulls;
    int n_pulls, cap_pulls;

    ps_phase phase;
    /* sync: the open step */
    unsigned char *contributed; /* [workers] */
    int n_contrib;
    uint64_t step_tokens;
    double step_loss;
    int closing;         /* waiting for the other shards' sums of squares */
    double local_ss;     /* this shard's sum of squares of the mean gradient */
    uint64_t *peer_step; /* [n_shards]: step of the share received from each shard (+1; 0 none) */
    double *peer_ss;
    unsigned char *peer_final; /* [n_shards] (allocated by ps_main.c; unused since ShardState) */
    /* checkpoints and resume (ps_checkpoint.c) */
    uint64_t *data_step, *data_seq; /* [workers]: rank r's data is at sequence data_seq[r] at
                                       step data_step[r] (restored from a checkpoint) */
    uint64_t resumed_version;       /* the version training started from */
    uint64_t last_ckpt_version;     /* shard 0: the newest checkpoint written (+1; 0 none) */
    struct ps_ckpt *ckpt;           /* shard 0: states being collected from the shards */

    /* validation every eval_every steps: the workers' shares of the pass at step eval_at - 1
     * (eval_at 0: none open), summed token-weighted; a complete pass waits in val_* for the next
     * progress line (val_pending) */
    uint64_t data_id; /* the workers' data (Push.data_id), from the first accepted push; 0: none */
    int data_id_rank;
    uint64_t eval_at, eval_tokens, eval_seqs;
    double eval_loss;
    int eval_n;
    int val_pending, val_known;
    uint64_t val_step, val_tokens;
    double val_loss;

    /* progress */
    FILE *metrics;
    int64_t start_ms, last_step_ms;
    uint64_t tokens_total;
    double last_loss;
    int64_t log_window_ms;
    double last_push_s;   /* when the open step's latest push was accepted */
    int overhead_pending; /* a version was published; measure once its pulls are answered */
    int log_in_window;
} ps;

/* ps_main.c */
void ps_log(ps *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ps_state.c */
int ps_spec_from_model(ps *s, lp_err *err);
int ps_adapter_init(ps *s, lp_err *err);
/* The adapter with this id, or NULL. State is keyed by adapter id so a job can later train
 * several adapters (mixed-task batches); one adapter, id 0, today. */
ps_adapter *ps_adapter_find(ps *s, uint32_t id);
void ps_adapter_free(ps_adapter *a);
void ps_spec_free(ps_spec *sp);
/* Makes the adapter's current params the published snapshot of version `version`. */
int ps_publish(ps *s, uint64_t version, lp_err *err);
/* Sends the current snapshot as Params (zero-copy). */
int ps_send_params(ps *s, const void *routing, size_t routing_len, int done, lp_err *err);
/* Clips grad (already the mean gradient) by factor, runs AdamW with the lr of update t. */
void ps_apply_update(ps *s, float clip, uint64_t update_index);
/* Writes <out>/adapter_model.safetensors from the full adapter (all shards' parts). */
int ps_write_adapter(ps *s, const float *full_params, lp_err *err);
/* The whole adapter as the model family built it (spec order; its params are scratch), the
 * model's module list, and whether the weights are Conv1D ([in, out]). */
lora_adapter *ps_full_adapter(void);
const lora_module *ps_model_modules(int *n);
int ps_fan_in_fan_out(void);
int ps_write_stats(ps *s, lp_err *err);
uint64_t ps_compute_job_id(const ps *s);

/* ps_members.c */
ps_member *ps_member_find(ps *s, uint64_t id);
ps_member *ps_member_join(ps *s, int rank, const char *host, uint32_t pid);
void ps_member_leave(ps *s, ps_member *m, const char *why);
int ps_members_alive(const ps *s);
/* Drops members silent past the timeout; returns how many. */
int ps_members_expire(ps *s, int64_t now_ms);

/* ps_validate.c */
/* Rejects a message: Error reply, log line, counter. Returns 0 so handlers can return it. */
int ps_reject(ps *s, const wire_msg *m, Loraps__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Protocol version and job id; Hello may carry job id 0. Returns 0 if fine, else rejected. */
int ps_check_header(ps *s, const wire_msg *m);
const char *ps_body_name(const Loraps__Header *h);
/* The frames of a push or of a peer's final params against this (or a peer) shard's tensors. */
int ps_check_tensors(ps *s, const wire_msg *m, int shard, Loraps__WireDtype dtype,
                     Loraps__ErrorCode *code, lp_err *err);

/* ps_checkpoint.c */
/* --resume: loads the checkpoint (or a PEFT adapter: fresh moments) into this shard's part and
 * restores the version, AdamW's t and the ranks' data positions. Without --resume, sets the
 * data positions of a fresh job. */
int ps_resume(ps *s, lp_err *err);
/* The first sequence of rank r's part of step `step`. */
uint64_t ps_data_position(const ps *s, int rank, uint64_t step);
/* After each published version: a periodic checkpoint when the version is a multiple of
 * save_every. */
void ps_checkpoint_after_update(ps *s);
/* The end of the job (final) or a stop signal: each shard sends its state to shard 0, which
 * writes the checkpoint and the --out adapter once it has every shard's. */
enum { PS_CKPT_PERIODIC = 0, PS_CKPT_FINAL = 1, PS_CKPT_STOP = 2 };
void ps_checkpoint_begin(ps *s, int kind);
/* shard 0: a ShardState from another shard */
void ps_checkpoint_on_peer(ps *s, wire_msg *m);
/* shard 0 in PS_FINISHING: 1 once the final state is written (or given up on). */
int ps_checkpoint_final_done(ps *s);
/* On a stop signal: checkpoint (shard 0 waits a bounded time for the other shards' states). */
void ps_checkpoint_on_stop(ps *s);
void ps_checkpoint_free(ps *s);

/* ps_security.c: CURVE, the limits that protect the server, per-step durability */
struct metrics;
/* A security/limit flag: 1 if consumed, 0 if not one of them, -1 on a bad value. */
int ps_security_flag(const char *flag, const char *value, lp_err *err);
void ps_security_usage(FILE *out);
/* Loads the CURVE keys (or warns that traffic is unauthenticated) and checks the options. */
int ps_security_load(ps *s, lp_err *err);
/* The ROUTER (before bind): ZMQ_MAXMSGSIZE, CURVE server, the ZAP handler and monitor. */
int ps_security_router(ps *s, lp_err *err);
/* A DEALER to another shard (before connect): CURVE client with the server key pair. */
int ps_security_peer(void *sock, lp_err *err);
void ps_security_print(const ps *s, FILE *out);
void ps_security_shutdown(void); /* after zmq_ctx_term */
/* 1: the sender is cut off (too many refused messages); drop the message unanswered. */
int ps_security_drop(ps *s, const wire_msg *m);
void ps_security_on_reject(ps *s, const wire_msg *m);
/* 0: a Hello of this rank would exceed --max-workers. */
int ps_security_admit(ps *s, int rank);
void ps_security_metrics_define(ps *s, struct metrics *m);
void ps_security_metrics_update(struct metrics *m);
void ps_security_exit_log(ps *s);
/* After each published version: with --durable-every K, every K-th is written to disk now. */
void ps_durable_after_update(ps *s);
/* 1 while the newest version is not yet durable (a failed write, retried): serve nothing. */
int ps_durable_hold(ps *s);

/* ps_sync.c */
void ps_handle(ps *s, wire_msg *m);
/* Progress the state machine: complete steps, answer pulls, finish. */
void ps_tick(ps *s);
void ps_reset_step(ps *s);

#endif
