/* The step: the consistency modes and each rank's place in the job.
 *
 * sync (BSP): step V is open until every live member has pushed its gradient for V; the shard
 * then forms the token-weighted mean sum(n_i g_i) / sum(n_i), clips it by the GLOBAL norm, runs
 * AdamW and publishes V+1. With several shards the global norm needs every shard's part: each
 * shard sends its sum of squares to the others (NormShare) and all of them add the S parts in
 * shard order, so every shard computes the same clip factor bit for bit.
 *
 * async (ASP): every accepted push is one update and one new version. A push's global norm is
 * known to the worker that computed it (it has the whole gradient), so it travels in the push.
 * Bounded staleness (staleness k > 0): a Pull for step s waits until the slowest live worker
 * has pushed step s - k.
 *
 * Each rank also has a data position: the first sequence of its part of a step, restored from a
 * checkpoint on resume. */
#ifndef LORAPS_PS_STEP_H
#define LORAPS_PS_STEP_H

#include "ps_adapters.h"
#include "ps_config.h"
#include "ps_members.h"
#include "ps_net.h"

#include <stdint.h>

typedef enum ps_push_verdict {
    PS_PUSH_ACCEPT,
    PS_PUSH_DUPLICATE, /* acknowledged as a duplicate, not used */
    PS_PUSH_STALE,     /* acknowledged as stale, not used */
    PS_PUSH_REFUSE,    /* rejected (ERR_STEP) */
} ps_push_verdict;

typedef struct ps_step {
    int shard, n_shards, workers, sync, staleness, max_steps;
    float max_grad_norm;
    uint64_t per_rank;   /* sequences of one rank in one step */
    uint64_t *rank_next; /* [workers]: the next step each rank should push */
    /* rank r's data is at sequence data_seq[r] at step data_step[r] */
    uint64_t *data_step, *data_seq;
    uint64_t data_id; /* the workers' data (Push.data_id), from the first accepted push; 0: none */
    int data_id_rank; /* whose it is; -1: the checkpoint's */
    /* live ranks by their next step, smallest first (an indexed heap): the slowest in O(1) */
    int *heap, *heap_pos, n_heap; /* heap_pos[r]: r's place, -1 if not live */
    /* sync: live members that owe the open step a push: it closes at none */
    int owing;
    /* sync: the open step; async: the updates since the last progress line */
    unsigned char *contributed; /* [workers] */
    int n_contrib;
    uint64_t tokens;
    double loss, compute_s;
    int closing;         /* waiting for the other shards' sums of squares */
    double local_ss;     /* this shard's sum of squares of the mean gradient */
    uint64_t *peer_step; /* [n_shards]: step of the share received from each shard (+1; 0 none) */
    double *peer_ss;
    /* counters */
    uint64_t pushes_accepted, pushes_duplicate, pushes_stale;
    uint64_t pieces;            /* sync: pieces of pushes accepted before their last */
    uint64_t pushes_incomplete; /* sync: partial pushes dropped (last piece short, worker gone) */
    uint64_t pulls_served;
    uint64_t pulls_held_staleness; /* pulls that waited for the slowest worker */
    uint64_t max_spread;           /* async: most steps a push ran ahead of the slowest */
    /* sync: from accepting a step's last push to the new version handed to libzmq for every
     * waiting pull (the server's own step overhead) */
    double last_push_s, last_push_cpu_s;
    int overhead_pending;
    double overhead_ms_sum, overhead_ms_max;
    double overhead_cpu_ms_sum; /* of it, the server thread's CPU time (its own work) */
    uint64_t overhead_n;
} ps_step;

/* A fresh job: every rank at step 0, its data at its first sequences. */
int ps_step_init(ps_step *st, const ps_config *c, lp_err *err);
void ps_step_free(ps_step *st);

/* The first sequence of rank r's part of step `step`. */
uint64_t ps_data_position(const ps_step *st, int rank, uint64_t step);
/* Resume: rank r pushes `next_step` next; its data is at sequence `seq` at step `data_step`. */
void ps_step_restore_rank(ps_step *st, int rank, uint64_t next_step, uint64_t data_step,
                          uint64_t seq);
/* Resume: the checkpoint's data. */
void ps_step_restore_data(ps_step *st, uint64_t data_id);
/* The first step a joining rank pushes, at published version V. */
uint64_t ps_step_first_step(const ps_step *st, int rank, uint64_t version);

/* Membership as the step sees it, told as it changes (the server keeps it told): a member
 * joined, is about to leave, or asked for another version in a Pull. `version`: the published
 * one. */
void ps_step_member_joined(ps_step *st, const ps_member *mem, uint64_t version);
void ps_step_member_left(ps_step *st, const ps_member *mem, uint64_t version);
void ps_step_member_pulled(ps_step *st, ps_member *mem, uint64_t pull_version, uint64_t version);

/* The slowest live worker's next step (UINT64_MAX: none live). */
uint64_t ps_step_min_clock(const ps_step *st, const ps_members *mb);
/* Bounded staleness: 1 if a Pull for `step` may be answered now. */
int ps_step_within_staleness(const ps_step *st, const ps_members *mb, uint64_t step);
/* async: 1 once every rank has pushed its last step. */
int ps_step_all_ranks_done(const ps_step *st);

/* Where rank r's push of `step` (computed from base_version) stands at version V; counts the
 * duplicates and stale ones. `finishing`: the job is over, every push is stale. why: the
 * reason of a refusal. */
ps_push_verdict ps_step_judge_push(ps_step *st, int finishing, uint64_t version, int rank,
                                   uint64_t step, uint64_t base_version, lp_err *why);
/* -1 (code, why) if rank r's data is not the data the job trains on. */
int ps_step_check_data(const ps_step *st, int rank, uint64_t data_id, Loraps__ErrorCode *code,
                       lp_err *why);
/* An accepted push: counted, and its data id learned if it is the first. */
void ps_step_accepted(ps_step *st, int rank, uint64_t data_id);
/* sync: rank r's push for the open step V is in. */
void ps_step_add_sync(ps_step *st, const ps_members *mb, int rank, uint64_t version,
                      uint64_t tokens, double loss, double compute_s);
/* async: rank r's push of `step` was one update. */
void ps_step_add_async(ps_step *st, const ps_members *mb, int rank, uint64_t step, uint64_t tokens,
                       double loss, double compute_s);
/* async: the updates since the last progress line are reported; start a new window. */
void ps_step_window_reset(ps_step *st);

/* sync: 1 once the open step of adapter a can be applied, with the global sum of squares of
 * its mean gradient; sends this shard's share to the others first when clipping needs it. */
int ps_step_sync_close(ps_step *st, ps_adapter *a, const ps_members *mb, ps_net *net,
                       double *global_ss);
/* A NormShare from another shard; -1 (code, why) if it is refused. */
int ps_step_on_norm_share(ps_step *st, const Loraps__NormShare *ns, uint64_t version,
                          Loraps__ErrorCode *code, lp_err *why);
/* sync: the open step is applied; the next one opens, and the overhead of this one is
 * measured once its pulls are answered. */
void ps_step_next(ps_step *st, const ps_members *mb, uint64_t version);
void ps_step_measure_overhead(ps_step *st);

#endif
