/* The Llama family's weights as the family holds them, shared by training (llama.c) and
 * inference (llama_infer.c). */
#ifndef LORAPS_LLAMA_INTERNAL_H
#define LORAPS_LLAMA_INTERNAL_H

#include "llama_config.h"
#include "model_family.h"

enum { MOD_Q, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, MODS_PER_LAYER };

typedef struct llama_layer {
    weight ln1, ln2;
    weight w[MODS_PER_LAYER];
    weight bias_own[MODS_PER_LAYER];
    const weight *bias[MODS_PER_LAYER]; /* &bias_own[k], or NULL where the module has none */
} llama_layer;

typedef struct llama {
    llama_config cfg;
    weight embed, norm, lm_head_own;
    const weight *lm_head; /* &embed when tied */
    llama_layer *layers;
} llama;

/* The module's [in, out]. */
void llama_module_dims(const llama_config *c, int k, int *in, int *out);
/* cos_sin [P, head_dim] on the host for the config's rotary embeddings. */
int llama_rope_host_table(const llama_config *c, int P, float **out, lp_err *err);

/* The KV-cache inference ops for the family table (llama_infer.c). */
int llama_session_new(void **impl, const model *m, const lora_adapter *a, int max_len, lp_err *err);
void llama_session_free(void *impl);
int llama_session_feed(void *impl, const int *tokens, int n, float *logits, lp_err *err);
int llama_session_length(const void *impl);
void llama_session_reset(void *impl);

#endif
