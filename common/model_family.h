/* What a model family (GPT-2, Llama, ...) implements behind model.h. model.c owns what all
 * families share: the weight files, the module list, the fingerprint and the dispatch. */
#ifndef LORAPS_MODEL_FAMILY_H
#define LORAPS_MODEL_FAMILY_H

#include "hf_weights.h"
#include "model.h"
#include "ops.h"

typedef struct model_family_ops {
    int (*trainer_new)(void **impl, const model *m, lora_adapter *a, int B, int T, lp_err *err);
    void (*trainer_free)(void *impl);
    size_t (*trainer_arena_bytes)(const void *impl);
    int (*trainer_step)(void *impl, const int *inputs, const int *targets, float grad_scale,
                        uint64_t dropout_seed, model_step *out, lp_err *err);
    int (*trainer_logits)(void *impl, const int *inputs, float *logits, lp_err *err);
    double (*train_flops)(const model *m, const lora_adapter *a, int B, int T);
    /* several adapters in one batch (optional: NULL where a family has not implemented it) */
    int (*trainer_new_multi)(void **impl, const model *m, lora_adapter *const *adapters,
                             int n_adapters, int B, int T, lp_err *err);
    int (*trainer_step_multi)(void *impl, const int *inputs, const int *targets,
                              const int *adapter_of, const float *grad_scales,
                              uint64_t dropout_seed, model_step *per_adapter, model_step *total,
                              lp_err *err);
    /* the full fine-tuning baseline (optional) */
    int (*trainer_full_grads)(void *impl, float **grads, size_t *n, lp_err *err);
    void (*free_family)(void *family);
    /* inference with a KV cache (model.h's model_session_*); a NULL adapter means none */
    int (*session_new)(void **impl, const model *m, const lora_adapter *a, int max_len,
                       lp_err *err);
    void (*session_free)(void *impl);
    int (*session_feed)(void *impl, const int *tokens, int n, float *logits, lp_err *err);
    int (*session_length)(const void *impl);
    void (*session_reset)(void *impl);
} model_family_ops;

struct model {
    const model_family_ops *ops;
    const char *arch;
    int vocab_size, max_seq_len, hidden_size;
    weight_layout layout; /* how the linear weights are stored */
    lora_module *modules; /* filled by the family, in forward order */
    int n_modules;
    uint64_t fingerprint;
    size_t weight_bytes;
    hf_weights files;
    float **owned; /* converted copies of weights that could not be mapped as f32 */
    int n_owned;
    void *family; /* the family's config and weight pointers */
};

/* For the families' loaders: the weight called prefix + name (or name alone), checked to be
 * [rows, cols] ([rows] when cols is 0), hashed into the fingerprint, and returned as f32: mapped
 * without a copy when stored as aligned F32, else converted into a copy the model owns. */
const float *model_weight(model *m, const char *prefix, const char *name, int64_t rows,
                          int64_t cols, lp_err *err);

/* Each family's loader fills in m (all but files, which model_load opens first). */
int gpt2_load(model *m, const char *dir, lp_err *err);
int llama_load(model *m, const char *dir, lp_err *err);

#endif
