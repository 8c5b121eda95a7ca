/* The one interface every model family sits behind: build a model from its config and its frozen
 * weights, list the modules LoRA may adapt, and run forward/backward/loss on a micro-batch (GPT-2
 * and the Llama family). Loading an HF folder from disk is formats/model_load.h's job: compute
 * knows no files, JSON or regexes. */
#ifndef LORAPS_MODEL_H
#define LORAPS_MODEL_H

#include "device.h"
#include "dtype.h"
#include "error.h"
#include "gpt2_config.h"
#include "llama_config.h"
#include "lora.h"

#include <stddef.h>
#include <stdint.h>

typedef struct model model;
typedef struct model_trainer model_trainer;

/* One frozen tensor as its source holds it (memory the source owns while the model lives). */
typedef struct weight_view {
    dtype dtype;
    int ndim;
    int64_t shape[2];
    const void *data;
    size_t nbytes;
} weight_view;

/* Where a family finds its frozen weights by name: the safetensors files of an HF folder
 * (formats/model_load.c), or synthetic weights in memory (tests, benchmarks). find looks up
 * name, then prefix + name, and returns 0 (found) or 1 (absent); rows and cols are the shape the
 * family expects ([rows] when cols is 0), for sources that make weights on demand. The model
 * calls release(ctx) when it is freed (or fails to build). fingerprint, when not 0, stands for
 * every weight the source holds (formats/model_load.c: its tensors' XXH3, cached beside the
 * files): the model then hashes no tensor itself; with 0 it hashes the names, and unless
 * unhashed the bytes, of the tensors the family reads. */
typedef struct weight_source {
    void *ctx;
    int (*find)(void *ctx, const char *prefix, const char *name, int64_t rows, int64_t cols,
                weight_view *out);
    void (*release)(void *ctx);
    int unhashed; /* the weights are not hashed into the fingerprint (synthetic ones: a function of
                     their seed, and an 8B shape would take seconds to hash) */
    uint64_t fingerprint; /* 0, or it stands for every weight of the source (see above) */
} weight_source;

/* Builds a model over its weights, on the CPU; takes ownership of src (released on failure too).
 * F32 weights are used in place (mapped, not copied). */
int model_build_gpt2(model **out, const gpt2_config *c, weight_source src, lp_err *err);
int model_build_llama(model **out, const llama_config *c, weight_source src, lp_err *err);
void model_free(model *m);
/* Moves the frozen weights to device d (bf16 matrices and tables, f32 vectors on a GPU); the
 * model's trainers and sessions run there from now on. Before any trainer or session exists. */
int model_place(model *m, device *d, lp_err *err);
device *model_device(const model *m);

const char *model_arch(const model *m); /* "gpt2", "llama", "qwen2", "mistral" */
int model_vocab_size(const model *m);
int model_max_seq_len(const model *m);
int model_hidden_size(const model *m);
/* PEFT's fan_in_fan_out for this model: 1 where linear weights are stored [in,out] (GPT-2's
 * Conv1D), 0 for nn.Linear's [out,in]. */
int model_fan_in_fan_out(const model *m);
/* The linear layers LoRA may adapt, in forward order. */
int model_lora_modules(const model *m, const lora_module **modules);
/* A 64-bit hash (XXH3) of the family, the config and the weights (the source's fingerprint, or
 * every weight byte the family reads): workers with a different base model are refused. */
uint64_t model_fingerprint(const model *m);
size_t model_weight_bytes(const model *m);
/* Multiply-adds of the model's matmuls for one training step of B x T tokens (for benchmarks). */
double model_train_flops(const model *m, const lora_adapter *a, int B, int T);

typedef struct model_step {
    double loss_sum; /* sum of cross-entropy over the counted tokens */
    int n_tokens;    /* tokens whose target is >= 0 */
} model_step;

/* The activation arena for micro-batches of B sequences of T tokens, sized once here. */
int model_trainer_new(model_trainer **out, const model *m, lora_adapter *a, int B, int T,
                      lp_err *err);
void model_trainer_free(model_trainer *t);
size_t model_trainer_arena_bytes(const model_trainer *t);
int model_trainer_batch(const model_trainer *t);   /* B */
int model_trainer_seq_len(const model_trainer *t); /* T */
/* The trainer keeps the adapters' factors and gradients where it computes (on the CPU: the
 * adapters' own arrays; on a GPU: device copies). load_params sends a->params after they changed
 * (an optimizer step, a pull); zero_grads clears the gradients; fetch_grads makes a->grads the
 * gradients summed since. On the CPU load and fetch do nothing. */
int model_trainer_load_params(model_trainer *t, lp_err *err);
void model_trainer_zero_grads(model_trainer *t);
int model_trainer_fetch_grads(model_trainer *t, lp_err *err);
/* Gradients as backward produces them: the next model_trainer_step (or _multi) calls fn as each
 * layer's LoRA gradients become final, with adapter k's range [offset, offset + n) of its
 * parameters, already in a->grads on the host; last layer first, every parameter once. On a GPU
 * each range's copy to the host runs while backward goes on below it, so a worker can push it
 * meanwhile. After that step a->grads is complete (model_trainer_fetch_grads has nothing to do). */
typedef void (*grads_ready_fn)(void *ctx, int adapter, size_t offset, size_t n);
void model_trainer_stream_grads(model_trainer *t, grads_ready_fn fn, void *ctx);
/* Forward and loss on inputs/targets [B*T] (targets < 0 are ignored). If grad_scale != 0,
 * also backward: the gradients of grad_scale * (sum of token losses) are ADDED to the trainer's
 * gradients (a->grads on the CPU). The micro-batch's sequences are global sequences
 * first_seq .. first_seq + B - 1 of the job; with the job's seed they define the LoRA dropout
 * masks. */
int model_trainer_step(model_trainer *t, const int *inputs, const int *targets, float grad_scale,
                       uint64_t seed, uint64_t first_seq, model_step *out, lp_err *err);
/* Mixed-task batches: several adapters train in one batch, each on its own sequences. Sequence b
 * of a micro-batch belongs to adapters[adapter_of[b]]; sequences must be grouped by adapter in
 * adapter order, and an adapter may have none in a given micro-batch. Each adapter's gradients
 * (of grad_scales[k] * the sum of its token losses) are added to its own grads; per_adapter
 * (may be NULL) receives each adapter's loss and tokens, total their sum. */
int model_trainer_new_multi(model_trainer **out, const model *m, lora_adapter *const *adapters,
                            int n_adapters, int B, int T, lp_err *err);
/* seq_ids[b] is sequence b's global id in its task's data (its dropout masks). */
int model_trainer_step_multi(model_trainer *t, const int *inputs, const int *targets,
                             const int *adapter_of, const float *grad_scales, uint64_t seed,
                             const uint64_t *seq_ids, model_step *per_adapter, model_step *total,
                             lp_err *err);
/* The full fine-tuning baseline, for measuring what LoRA saves: from now on backward also
 * ADDS the gradients of every frozen linear weight and bias and of the output head into one
 * buffer (returned, with its length), and runs down to the first layer. */
int model_trainer_full_grads(model_trainer *t, float **grads, size_t *n, lp_err *err);
/* Forward only, writing the full logits [B*T, vocab] (for tests), every row through the first
 * adapter. */
int model_trainer_logits(model_trainer *t, const int *inputs, float *logits, lp_err *err);

/* Inference with a KV cache, one sequence at a time (generation, evaluation by hand). The
 * adapter may be NULL for the base model alone. */
typedef struct model_session model_session;

int model_session_new(model_session **out, const model *m, const lora_adapter *a, int max_len,
                      lp_err *err);
void model_session_free(model_session *s);
/* Appends n tokens to the sequence and writes the logits [vocab] after the last of them.
 * Fails once the sequence would exceed max_len. */
int model_session_feed(model_session *s, const int *tokens, int n, float *logits, lp_err *err);
int model_session_length(const model_session *s);
void model_session_reset(model_session *s);

#endif
