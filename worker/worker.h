/* loraps-worker: rank i of N. Joins every server shard (Hello/Welcome), then loops: pull the
 * adapter from all shards in parallel, compute the mean gradient of its part of the global
 * batch (gradient accumulation over micro-batches), push each shard its tensors, wait for the
 * Acks. A heartbeat thread keeps the membership alive during long compute and notices a server
 * that went away; the worker then reconnects and joins again by itself. */
#ifndef LORAPS_WORKER_H
#define LORAPS_WORKER_H

#include "error.h"
#include "job.h"
#include "lora.h"
#include "model.h"
#include "wire.h"
#include "worker_data.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct worker_shard {
    char endpoint[256];
    void *sock; /* DEALER: requests and replies */
    int shard;  /* index from Welcome; -1 before */
    _Atomic uint64_t worker_id;
    uint64_t instance;
    _Atomic int64_t last_ok_ms; /* last reply of any kind (heartbeats included) */
    atomic_int rejoin;          /* the heartbeat thread was told we are not a member */
    int n;                      /* tensors on this shard */
    uint32_t *index;
    size_t *numel;
    float **param_ptr, **grad_ptr;
    /* the reply of the exchange in progress */
    int replied;
    uint64_t version;
    int done;
    int ack_status;
} worker_shard;

typedef struct worker_config {
    char **servers;
    int n_servers;
    char model_dir[PATH_MAX];
    int rank;
    int quiet;
    char stats_path[PATH_MAX];
    int connect_timeout_ms;
    int threads;       /* -1: the job's */
    int step_delay_ms; /* a simulated straggler, for tests and benchmarks */
    /* data (--data; without it the demo task); the job says how to cut it into sequences */
    char data_path[PATH_MAX];
    char val_path[PATH_MAX];       /* --val-file */
    char tokenizer_path[PATH_MAX]; /* --tokenizer; default: the model folder's */
} worker_config;

typedef struct worker {
    worker_config cfg;
    model *mdl;
    uint64_t fingerprint;
    /* from the first Welcome */
    int joined;
    job job;
    _Atomic uint64_t job_id;
    Loraps__WireDtype wire_dtype;
    int n_spec;
    char **spec_names;
    uint64_t *spec_rows, *spec_cols;
    uint32_t *placement;
    lora_adapter adapter;
    model_trainer *trainer;
    worker_data *data;
    int *inputs, *targets;
    /* The data position the servers sent (Welcome.data_position, restored from a checkpoint's
     * trainer state on resume), as an offset to the default mapping step -> sequences: the
     * first sequence of step s is s * global + rank * per_rank + data_offset. */
    int64_t data_offset;

    void *ctx;
    worker_shard *shards;
    wire_counters net;
    atomic_int inflight; /* zero-copy gradient frames libzmq still holds */

    pthread_t hb_thread;
    int hb_started;
    atomic_int hb_stop;
    _Atomic uint64_t hb_bytes;

    /* statistics */
    uint64_t steps_done;
    double compute_s, wall_s;
    uint64_t *step_bytes; /* sent + received on the request sockets, per step */
    int n_step_bytes, cap_step_bytes;
} worker;

extern volatile sig_atomic_t worker_stop;

/* worker_net.c */
enum { WN_OK = 0, WN_REJOIN = 1, WN_DONE = 2, WN_STOP = 3, WN_FATAL = -1 };
/* Connects and joins shard k (retrying until the connect timeout); fills *start_step. */
int worker_join(worker *w, int k, uint64_t *start_step, lp_err *err);
/* Joins every shard that needs it (lost, or told us we are not a member). */
int worker_rejoin_lost(worker *w, uint64_t *start_step, lp_err *err);
int worker_pull_all(worker *w, uint64_t version, uint64_t step, lp_err *err);
/* eval: this rank's share of the validation pass at `step`, or NULL. */
int worker_push_all(worker *w, uint64_t step, uint64_t base_version, uint64_t n_tokens,
                    double loss_sum, double grad_ss, double compute_s, const val_result *eval,
                    lp_err *err);
void worker_bye_all(worker *w);
int worker_heartbeat_start(worker *w, lp_err *err);
void worker_heartbeat_stop(worker *w);
/* Waits until libzmq has let go of every zero-copy gradient frame. */
void worker_wait_inflight(worker *w);

/* worker_main.c */
void worker_log(const worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Builds the job, the adapter and the trainer from the first Welcome. */
int worker_setup_from_welcome(worker *w, const Loraps__Welcome *wel, uint64_t job_id, lp_err *err);

#endif
