/* What every model family's trainer shares, so a family writes only its own layers: the ops
 * context and the activation arena; the adapters a batch trains and which rows of it each owns;
 * the adapted linear layer (the frozen matmul plus each adapter's LoRA branch, with dropout); the
 * output head's loss over each adapter's rows; and the adapters' factors and gradients on the
 * device. Private to compute. */
#ifndef LORAPS_TRAINER_CORE_H
#define LORAPS_TRAINER_CORE_H

#include "arena.h"
#include "model_family.h"
#include "ops.h"

/* The rows of one adapter in the current micro-batch: [row0, row0 + rows). */
typedef struct adapter_rows {
    int row0, rows;
} adapter_rows;

/* One adapter's factors and gradients where the ops read them: on the CPU the adapter's own
 * arrays; on a GPU device copies, plus the factors as activations for the GEMMs. */
typedef struct adapter_on_device {
    float *params, *grads;
    act *params_act;
    int owned; /* allocated here (not the adapter's own arrays) */
} adapter_on_device;

typedef struct trainer_core {
    const model *m;
    ops_ctx *ctx;
    int B, T, N; /* N = B * T rows */
    lora_adapter **adapters;
    int n_adapters;
    adapter_on_device *dev;    /* per adapter */
    const lora_site **site_of; /* [adapter * n_modules + module]: its site there, or NULL */
    int *h_ld;                 /* per module: the largest rank adapted there (0: none) */
    act **lora_h;              /* per module with a site: x . A^T [N, h_ld] */
    int lowest_site;           /* lowest adapted module: backward stops there */
    int max_in, max_r, any_dropout;

    /* the step in progress */
    adapter_rows *rows_of;   /* per adapter */
    float *grad_scale_of;    /* per adapter */
    model_step *step_of;     /* per adapter: its loss and tokens */
    const int *host_targets; /* this micro-batch's targets (host) */
    uint64_t seed;
    int training; /* LoRA dropout is active only while training, as in PEFT */

    /* device buffers (carved by trainer_core_carve) */
    int *tokens, *targets; /* [N] */
    uint64_t *seq_ids;     /* [B]: each sequence's global id (dropout masks) */
    float *losses;         /* [N] per-token losses */
    act *lora_dh, *drop_x, *drop_dx;

    /* the full fine-tuning baseline (off unless asked): f32 gradients of every linear weight and
     * bias and of the head, module by module, then the head */
    float *full_grads;
    size_t n_full_grads;
    float **dW_of, **db_of;
    float *dhead;

    /* gradients streamed as layers finish (model_trainer_stream_grads): armed for one step */
    grads_ready_fn stream_fn;
    void *stream_ctx;
    int streaming, streamed;    /* armed; the last step streamed every range (no fetch needed) */
    int n_layers;
    unsigned char *reported;    /* [n_layers] this step */
    int *pending, n_pending;    /* GPU: layers whose copy is queued, in order (event slot = layer) */

    /* the arena: one device allocation */
    void *arena;
    size_t arena_bytes;
} trainer_core;

/* Checks nothing the caller has not (model.c checked shapes); records the adapters' sites and
 * opens the context with the family's limits. */
int trainer_core_init(trainer_core *c, const model *m, lora_adapter *const *adapters,
                      int n_adapters, int B, int T, const ops_limits *lim, lp_err *err);
void trainer_core_free(trainer_core *c);
/* The core's own buffers, carved with the family's. */
void trainer_core_carve(trainer_core *c, arena_carver *cv);
/* Sizes the arena by carving once with carve_all(family, carver), allocates it on the device and
 * carves again. */
int trainer_core_alloc_arena(trainer_core *c, void (*carve_all)(void *family, arena_carver *cv),
                             void *family, lp_err *err);

/* Typed slices of the arena. */
act *carve_act(trainer_core *c, arena_carver *cv, size_t n);
float *carve_f32(arena_carver *cv, size_t n);

/* The adapters' factors to the device (and as activations); gradients zeroed; gradients to the
 * adapters' own arrays. On the CPU the first and last do nothing (the arrays are shared). */
int trainer_core_load_params(trainer_core *c, lp_err *err);
void trainer_core_zero_grads(trainer_core *c);
int trainer_core_fetch_grads(trainer_core *c, lp_err *err);

/* A micro-batch begins: which rows belong to which adapter (sequences grouped by adapter in
 * adapter order; adapter_of NULL: all the first's), their gradient scales (training if any is
 * not 0), the tokens and the sequences' global ids on the device. */
int trainer_core_begin(trainer_core *c, const int *inputs, const int *targets,
                       const int *adapter_of, const float *grad_scales, uint64_t seed,
                       const uint64_t *seq_ids, lp_err *err);
/* Inference: the next n rows (n <= the B*T the core was made for) are tokens of one sequence,
 * every adapter's, no dropout; the tokens go to the device. */
void trainer_core_begin_rows(trainer_core *c, const int *tokens, int n);
/* The head and its loss over each adapter's rows (each with its own gradient scale), from the
 * final norm's output x; with training also dx (overwritten). */
void trainer_core_head_loss(trainer_core *c, const act *x, const weight *head, act *dx);
/* The logits [N, V] of the final norm's output x, into host memory. */
int trainer_core_logits(trainer_core *c, const act *x, const weight *head, float *host_logits,
                        lp_err *err);
/* Inference: the logits [V] of one normed row x into host memory (scratch: V floats on the
 * device, unused on the CPU). */
int trainer_core_last_logits(trainer_core *c, const act *x, const weight *head, float *scratch,
                             float *host_logits, lp_err *err);
/* The micro-batch's losses and counted tokens, per adapter and in total (waits for the device). */
int trainer_core_end(trainer_core *c, model_step *per_adapter, model_step *total, lp_err *err);

/* An adapted linear layer: out[N,OC] = inp . W (+ bias), plus every adapter's LoRA branch on its
 * rows (on dropout(inp) where it has dropout and training is on). */
void lora_linear_forward(trainer_core *c, int module, act *out, const act *inp, const weight *w,
                         weight_layout layout, const weight *bias, int IC, int OC);
/* Its backward: dinp (NULL when nothing below needs it) = or += (accumulate) dout . W^T plus the
 * LoRA branches' input gradients; the adapters' factor gradients are added to. */
void lora_linear_backward(trainer_core *c, int module, act *dinp, int accumulate, const act *dout,
                          const act *inp, const weight *w, weight_layout layout, int IC, int OC);

/* Streaming gradients: arm for the next step; a family calls layer_done as each layer's backward
 * finishes, and stream_end after backward (it reports what is left and, on a GPU, waits for each
 * copy in turn before reporting it). */
void trainer_core_stream_grads(trainer_core *c, grads_ready_fn fn, void *ctx);
void trainer_core_layer_done(trainer_core *c, int layer);
int trainer_core_stream_end(trainer_core *c, lp_err *err);

/* Whether backward needs the gradient of an input first read by module `reader`: only if an
 * adapted module lies below it. */
int trainer_core_needs_grad_below(const trainer_core *c, int reader);
/* buf zeroed, returned. */
act *zeroed_act(trainer_core *c, act *buf, size_t n);
/* 1 if any adapter adapts module `module`. */
int trainer_core_adapts(const trainer_core *c, int module);

/* The full fine-tuning baseline's gradients (model.h's model_trainer_full_grads). */
int trainer_core_full_grads(trainer_core *c, float **grads, size_t *n, lp_err *err);

/* FLOPs of one site's LoRA branch for N rows: forward, backward (dh, dB, dA) and, with dx, the
 * input gradient. */
double lora_site_flops(const lora_site *s, double N, int dx);

#endif
