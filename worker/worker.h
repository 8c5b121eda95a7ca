/* loraps-worker: rank i of N. Joins every server shard (Hello/Welcome), then loops: pull the
 * adapter from all shards in parallel, compute the mean gradient of its part of the global
 * batch (gradient accumulation over micro-batches), push each shard its tensors, wait for the
 * Acks. A heartbeat thread keeps the membership alive during long compute and notices a server
 * that went away; the worker then reconnects and joins again by itself.
 *
 * struct worker composes what the modules own:
 *   worker_config.c    flags and LORAPS_* variables            -> worker_config
 *   worker_setup.c     the job, adapter, trainer and data from the first Welcome
 *   worker_net.c       joining and the pull / push exchanges   -> worker_shard
 *   worker_grads.c     the gradient frames libzmq still sends zero-copy (never overwritten)
 *   worker_heartbeat.c the heartbeat thread                    -> worker_heartbeat
 *   worker_metrics.c   /healthz, /readyz, /metrics             -> worker_metrics
 *   worker_loop.c      the training loop and its statistics
 *   worker_main.c      start-up and shut-down */
#ifndef LORAPS_WORKER_H
#define LORAPS_WORKER_H

#include "error.h"
#include "job.h"
#include "lora.h"
#include "model.h"
#include "wire.h"
#include "worker_config.h"
#include "worker_data.h"
#include "worker_heartbeat.h"
#include "worker_metrics.h"

#include <stdatomic.h>
#include <stdint.h>

/* Why a shard must be joined again (worker_shard.rejoin). */
enum {
    WORKER_REJOIN_NOT_MEMBER = 1,   /* it answered "unknown worker" or a step error */
    WORKER_REJOIN_DISCONNECTED = 2, /* the heartbeat connection dropped (a restart, a crash) */
    WORKER_REJOIN_SOCKET_CLOSED = 3 /* closed to drop the frames of a push it never took */
};

typedef struct worker_shard {
    char endpoint[256];
    void *sock; /* DEALER: requests and replies; NULL once closed to drop unsent frames */
    int shard;  /* index from Welcome; -1 before */
    _Atomic uint64_t worker_id;
    uint64_t instance;
    _Atomic int64_t last_ok_ms; /* last reply of any kind (heartbeats included) */
    atomic_int rejoin;          /* join again: why (WORKER_REJOIN_*), or 0 */
    atomic_int frames_held;     /* zero-copy gradient frames libzmq still holds (worker_grads.c) */
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

    worker_heartbeat hb;
    worker_metrics metrics;

    /* statistics */
    uint64_t steps_done;
    double compute_s, wall_s;
    uint64_t *step_bytes; /* sent + received on the request sockets, per step */
    int n_step_bytes, cap_step_bytes;
} worker;

/* The results of the network exchanges (worker_net.c, worker_grads.c) and of a step. */
enum { WN_OK = 0, WN_REJOIN = 1, WN_DONE = 2, WN_STOP = 3, WN_FATAL = -1 };

#endif
