/* What a model family (GPT-2, Llama, ...) implements behind model.h. model.c owns what all
 * families share: the weight source, the weights' placement on a device, the module list, the
 * fingerprint and the dispatch; trainer_core.h what their trainers share. */
#ifndef LORAPS_MODEL_FAMILY_H
#define LORAPS_MODEL_FAMILY_H

#include "model.h"
#include "ops.h"

typedef struct model_family_ops {
    /* A trainer's impl begins with its trainer_core (trainer_core.h), which model.c reaches. */
    int (*trainer_new)(void **impl, const model *m, lora_adapter *const *adapters, int n_adapters,
                       int B, int T, lp_err *err);
    void (*trainer_free)(void *impl);
    /* seq_ids[b]: sequence b's global id; adapter_of may be NULL (every row the first's) */
    int (*trainer_step)(void *impl, const int *inputs, const int *targets, const int *adapter_of,
                        const float *grad_scales, uint64_t seed, const uint64_t *seq_ids,
                        model_step *per_adapter, model_step *total, lp_err *err);
    /* the logits [B*T, V] into host memory */
    int (*trainer_logits)(void *impl, const int *inputs, float *logits, lp_err *err);
    double (*train_flops)(const model *m, const lora_adapter *a, int B, int T);
    void (*free_family)(void *family);
    /* inference with a KV cache (model.h's model_session_*); a NULL adapter means none */
    int (*session_new)(void **impl, const model *m, const lora_adapter *a, int max_len,
                       lp_err *err);
    void (*session_free)(void *impl);
    int (*session_feed)(void *impl, const int *tokens, int n, float *logits, lp_err *err);
    int (*session_length)(const void *impl);
    void (*session_reset)(void *impl);
} model_family_ops;

/* What a frozen tensor is to the model, which decides how each device stores it. */
typedef enum weight_kind {
    WK_VECTOR, /* norm weights: f32 everywhere */
    WK_BIAS,   /* a linear layer's bias: f32 on the CPU, bf16 on a GPU (the GEMM epilogue adds it
                  in the output's type, as autocast does) */
    WK_MATRIX, /* a linear layer's weight: bf16 kept where the file stores bf16 (CPU), bf16 on a
                  GPU */
    WK_TABLE,  /* an embedding (and tied head): f32 on the CPU (the head reads all of it in every
                  chunk), bf16 on a GPU */
} weight_kind;

/* Where the model keeps one of its weights, so model_place can move it to a device. */
typedef struct weight_slot {
    weight *w;
    weight_kind kind;
    int64_t rows, cols;
} weight_slot;

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
    device *dev;     /* where the weights live (the CPU until model_place) */
    int keep_bf16;   /* matrices stored as BF16 stay bf16 on the CPU (LORAPS_BF16_WEIGHTS) */
    size_t max_bf16; /* elements of the largest matrix kept in bf16 on the CPU (0: none) */
    int gemm_bf16;   /* LORAPS_CPU_GEMM=bf16: matrices and tables held in bf16, GEMMs in bf16 */
    weight_slot *slots;
    int n_slots, cap_slots;
    float **owned; /* converted copies of weights that could not be used in place */
    int n_owned;
    void **placed; /* device copies made by model_place */
    int n_placed;
    void *family; /* the family's config and weights */
};

/* For the families' builders: the weight called name (or prefix + name), checked to be
 * [rows, cols] ([rows] when cols is 0), hashed into the fingerprint (unless the source brings
 * its own), and held as its kind asks (used in place when it can be, else converted into a copy
 * the model owns). The slot w must stay where it is: model_place rewrites it. */
int model_weight(model *m, weight *w, weight_kind kind, const char *prefix, const char *name,
                 int64_t rows, int64_t cols, lp_err *err);

/* Each family's builder fills in m (all but src, set first, and the fingerprint's start). */
int gpt2_build(model *m, const gpt2_config *c, lp_err *err);
int llama_build(model *m, const llama_config *c, lp_err *err);

#endif
