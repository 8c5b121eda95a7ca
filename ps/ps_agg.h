/* The open sync step's gradient sum of one adapter's part on this shard.
 *
 * Pushes, and the pieces of pushes (any whole tensors of the shard, in any order), are summed as
 * they arrive, straight from their received frames (bf16 and f16 converted in the same pass),
 * into a fixed binary tree over the ranks: a node is the sum of its two halves once both are
 * known, so the step's sum is the same bits whatever order the pushes and pieces come in, and
 * however they are cut (a push whole, or in pieces, gives the same adapter). Each arrival costs
 * O(log W) node steps per tensor; a node's sum is computed once.
 *
 * A push in pieces is not counted until its last piece. While any push is partial the tree keeps
 * every value it consumed (frames and partial sums), so a partial push whose worker died, was
 * replaced or never completed it is rolled back exactly: the nodes it reached become pending
 * again over the values they had summed. Without partial pushes nothing is kept (sums are made in
 * place). Ranks that never pushed count as empty when the step closes. */
#ifndef LORAPS_PS_AGG_H
#define LORAPS_PS_AGG_H

#include "accumulate.h"
#include "error.h"
#include "wire.h"

#include <stdint.h>

typedef struct ps_agg_node {
    uint32_t gen; /* the step it was set in; older: its initial state */
    uint8_t kind; /* AGG_PENDING, AGG_EMPTY, AGG_VALUE, AGG_CONSUMED */
    int32_t leaf; /* a leaf's rank, >= 0; -1: the value is `own`; -2: an alias of `alias` */
    int32_t alias;
    float *own; /* a summed value of this node */
} ps_agg_node;

/* Rank r's frames of one tensor this step: segments [seg, seg + n_seg) of the step's list. */
typedef struct ps_agg_leaf {
    uint32_t gen;
    int seg, n_seg;
    int32_t held; /* the message holding them */
} ps_agg_leaf;

/* A received message whose frames the tree reads; closed when no leaf needs it. */
typedef struct ps_agg_held {
    zmq_msg_t *parts;
    int n_parts;
    int refs;
} ps_agg_held;

typedef struct ps_agg_tensor {
    size_t numel;
    float *root;       /* where the step's sum goes (the adapter's gradient sum) */
    ps_agg_node *node; /* [2 P], heap order: 1 the root, P + r rank r's leaf */
    ps_agg_leaf *leaf; /* [workers] */
    float **pool;      /* free buffers of numel floats */
    int n_pool, cap_pool;
    int32_t *kept; /* nodes consumed while a push was partial: released when none is */
    int n_kept, cap_kept;
} ps_agg_tensor;

typedef struct ps_agg_rank {
    uint32_t gen;
    int partial;     /* some of its tensors are in, the push is not complete */
    int complete;    /* its push is in */
    int n_tensors;   /* received this step */
    uint64_t tokens; /* its weight */
} ps_agg_rank;

typedef struct ps_agg {
    int n, workers, P; /* tensors, ranks, leaves of the tree (power of 2 >= workers) */
    dtype type;        /* of the frames */
    ps_agg_tensor *t;
    ps_agg_rank *rank;
    uint32_t gen;
    int n_partial;
    acc_seg *seg;
    int n_seg, cap_seg;
    ps_agg_held *held;
    int n_held, cap_held;
    /* measured */
    uint64_t bytes, messages, rollbacks;
    double seconds; /* in the sums */
} ps_agg;

/* n tensors of numel[i] elements each, summed into root[i]; frames in `type`. */
int ps_agg_init(ps_agg *g, int n, const size_t *numel, float *const *root, int workers, dtype type,
                lp_err *err);
void ps_agg_free(ps_agg *g);

/* 1 if rank r's tensor t (a position in the shard's list) is in this step. */
int ps_agg_has(const ps_agg *g, int rank, int t);
/* Tensors of rank r in this step, and whether its push is partial or complete. */
int ps_agg_rank_tensors(const ps_agg *g, int rank);
int ps_agg_rank_partial(const ps_agg *g, int rank);
/* The token count of rank r's partial push (0: none). */
uint64_t ps_agg_rank_tokens(const ps_agg *g, int rank);
/* Adds rank r's checked piece: frame i of m is (part of) tensor frame_pos[i], every tensor whole
 * and none already in; weighted by `tokens`. Takes m's raw frames. `complete`: the push is whole
 * with it (the caller checked every tensor is in). -1: out of memory (nothing changed). */
int ps_agg_add(ps_agg *g, int rank, uint64_t tokens, wire_msg *m, const int *frame_pos,
               int complete, lp_err *err);
/* Rolls rank r's partial push back, as if none of it had come. */
void ps_agg_discard(ps_agg *g, int rank);
/* Ranks without a push are empty: every tensor's sum is in its root. Partial pushes must have
 * been discarded first. */
void ps_agg_close(ps_agg *g);
/* The next step: no push in. */
void ps_agg_reset(ps_agg *g);

#endif
