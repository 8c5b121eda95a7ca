/* The adapters this shard serves: a table keyed by adapter id. Each entry holds its spec (the
 * whole adapter's tensors), its placement over the shards, this shard's part of the parameters
 * with their AdamW moments and gradient sum, its version and the published snapshot. A job has
 * one adapter today (id 0); every use goes through the table so a job can train several. */
#ifndef LORAPS_PS_ADAPTERS_H
#define LORAPS_PS_ADAPTERS_H

#include "adamw.h"
#include "ps_agg.h"
#include "lora.h"
#include "model_card.h"
#include "ps_config.h"
#include "ps_net.h"
#include "shard_map.h"
#include "wire.h"

#include <stdatomic.h>
#include <stdint.h>

/* The adapter of messages and files that name none (Hello's Welcome, NormShare, ShardState, the
 * checkpoint folder): the one adapter of a one-adapter job. */
#define PS_ADAPTER_DEFAULT 0u

typedef struct ps_spec {
    int n; /* tensors of the whole adapter */
    char **names;
    uint64_t *rows, *cols;
    size_t *numel;
    size_t *offset; /* the spec's own layout: tensors one after another in spec order */
    size_t total;   /* params of the whole adapter */
} ps_spec;

/* A published version in the wire dtype, shared with libzmq's I/O thread while Params frames
 * referring to it are in flight, so a new version never tears a message being sent. */
typedef struct ps_snapshot {
    atomic_int refs;
    uint64_t version;
    size_t bytes;
    void *data;
} ps_snapshot;

typedef struct ps_adapter {
    uint32_t id;
    ps_spec spec;
    shard_map map;
    /* the whole adapter as the model family built it (spec order; its params are scratch):
     * the PEFT folders are written from it with the same config the workers use */
    lora_adapter full;
    adamw_config adamw;
    lr_schedule sched;
    Loraps__WireDtype wire_dtype;
    /* this shard's part */
    int n;           /* tensors on this shard */
    uint32_t *index; /* their spec indices, increasing */
    size_t *numel;
    size_t *offset; /* into the flat buffers below */
    size_t n_params;
    int32_t *pos_of; /* [spec.n]: a spec tensor's position on this shard, or -1 */
    float *params, *m, *v;
    float *grad_sum;  /* sync: sum of n_i * g_i of the open step; async: one push */
    float grad_scale; /* the gradient is grad_sum * grad_scale (sync: 1 / tokens) */
    float **grad_ptr, **param_ptr;
    ps_agg agg;               /* sync: the open step's sum, into grad_sum */
    double close_s, update_s; /* time in closing steps' sums (mean, norm) and in updates */
    uint64_t version;         /* published version */
    uint64_t updates;         /* AdamW's t */
    ps_snapshot *snap;
} ps_adapter;

/* The base model, as every adapter of the job adapts it. */
typedef struct ps_base_model {
    uint64_t fingerprint;
    lora_module *modules; /* the model's module list (resume builds adapters over it) */
    int n_modules;
    int fan_in_fan_out; /* Conv1D weights ([in, out]) */
} ps_base_model;

typedef struct ps_adapters {
    const ps_config *cfg;
    ps_base_model model;
    ps_adapter *entries;
    int n;
} ps_adapters;

/* Loads the base model (fingerprint, modules) and builds the job's adapter over it: its spec,
 * placement, this shard's part with PEFT's initial values (the job seed, identical on every
 * shard), its optimizer, and version 0 published. */
int ps_adapters_init(ps_adapters *t, const ps_config *cfg, lp_err *err);
void ps_adapters_free(ps_adapters *t);
/* The adapter with this id, or NULL. */
ps_adapter *ps_adapters_find(ps_adapters *t, uint32_t id);
/* The adapter of what names none: PS_ADAPTER_DEFAULT's. */
ps_adapter *ps_adapters_default(ps_adapters *t);

/* Makes the current params the published snapshot of `version`. */
int ps_adapter_publish(ps_adapter *a, uint64_t version, lp_err *err);
/* Sends the current snapshot as Params (zero-copy); with `done`, only the header. */
int ps_adapter_send_params(ps_adapter *a, ps_net *net, const void *routing, size_t routing_len,
                           int done, lp_err *err);
/* sync: a checked push or piece of rank r into the open step's sum (ps_agg_add). */
int ps_adapter_add_piece(ps_adapter *a, int rank, uint64_t tokens, wire_msg *m,
                         const int *frame_pos, int complete, lp_err *err);
/* sync: rank r's partial push (if any) rolled back; counted when it was one. */
int ps_adapter_discard_push(ps_adapter *a, int rank);
/* sync: every partial push rolled back (the step closes without them); how many. */
int ps_adapter_discard_partial(ps_adapter *a);
/* async: a checked push is the gradient. */
void ps_adapter_set_grad(ps_adapter *a, const wire_msg *m);
/* sync: the step's sum closed (ranks that did not push are empty); the gradient is its mean
 * over `tokens`. Returns the mean's sum of squares. */
double ps_adapter_mean_grad(ps_adapter *a, uint64_t tokens);
double ps_adapter_grad_sum_sq(const ps_adapter *a);
/* The next sync step: nothing summed. */
void ps_adapter_zero_grad(ps_adapter *a);
/* Clips the gradient by factor and runs AdamW with the lr of update `update_index`, publishing
 * the new params as `version` in the same pass. */
int ps_adapter_update(ps_adapter *a, float clip, uint64_t update_index, uint64_t version,
                      lp_err *err);
/* Writes <out>/adapter_model.safetensors (PEFT) from the whole adapter in spec layout, with the
 * README.md model card saying what card holds. */
int ps_adapters_write_peft(ps_adapters *t, ps_adapter *a, const float *full_params,
                           const model_card *card, lp_err *err);

#endif
