/* What a model family (GPT-2, Llama, ...) implements behind model.h. model.c owns what all
 * families share: the weight source, the module list, the fingerprint and the dispatch. */
#ifndef LORAPS_MODEL_FAMILY_H
#define LORAPS_MODEL_FAMILY_H

#include "model.h"
#include "ops.h"

typedef struct model_family_ops {
    int (*trainer_new)(void **impl, const model *m, lora_adapter *a, int B, int T, lp_err *err);
    void (*trainer_free)(void *impl);
    size_t (*trainer_arena_bytes)(const void *impl);
    int (*trainer_step)(void *impl, const int *inputs, const int *targets, float grad_scale,
                        uint64_t seed, uint64_t first_seq, model_step *out, lp_err *err);
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
    weight_source src;
    float **owned; /* converted copies of weights that could not be mapped as f32 */
    int n_owned;
    void *family; /* the family's config and weight pointers */
};

/* For the families' builders: the weight called name (or prefix + name), checked to be
 * [rows, cols] ([rows] when cols is 0), hashed into the fingerprint. model_weight_view returns
 * it as the source holds it; model_weight as f32: used in place when stored as aligned F32,
 * else converted into a copy the model owns. */
int model_weight_view(model *m, const char *prefix, const char *name, int64_t rows, int64_t cols,
                      weight_view *out, lp_err *err);
const float *model_weight(model *m, const char *prefix, const char *name, int64_t rows,
                          int64_t cols, lp_err *err);
/* A viewed weight as f32 (in place or converted, as model_weight does). */
const float *model_weight_f32(model *m, const char *name, const weight_view *t, lp_err *err);

/* Each family's builder fills in m (all but src, set first, and the fingerprint's start). */
int gpt2_build(model *m, const gpt2_config *c, lp_err *err);
int llama_build(model *m, const llama_config *c, lp_err *err);

#endif
