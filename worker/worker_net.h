/* The worker's side of the protocol on its request sockets (one DEALER per shard): joining
 * (Hello/Welcome), and the pull and push exchanges with every shard in parallel. Each returns
 * WN_OK, WN_REJOIN (a shard lost us or went away: worker_rejoin_lost), WN_DONE (the job is
 * over), WN_STOP (a signal) or WN_FATAL (err says why). */
#ifndef LORAPS_WORKER_NET_H
#define LORAPS_WORKER_NET_H

#include "error.h"
#include "val_pass.h"

#include <stdint.h>

typedef struct worker worker;

/* Connects and joins shard k, retrying until --connect-timeout; fills *start_step. The first
 * Welcome sets the worker up (worker_setup.c). */
int worker_join(worker *w, int k, uint64_t *start_step, lp_err *err);
/* Joins every shard that needs it (lost, told us we are not a member, or its socket closed). */
int worker_rejoin_lost(worker *w, uint64_t *start_step, lp_err *err);
int worker_pull_all(worker *w, uint64_t version, uint64_t step, lp_err *err);

/* What a push carries besides the gradients. */
typedef struct worker_push {
    uint64_t step, base_version, n_tokens;
    double loss_sum, grad_sum_sq, compute_seconds;
    const val_result *eval; /* this rank's share of the validation pass at `step`, or NULL */
} worker_push;
int worker_push_all(worker *w, const worker_push *p, lp_err *err);
/* Says goodbye to every joined shard (sent within a short linger). */
void worker_bye_all(worker *w);

#endif
