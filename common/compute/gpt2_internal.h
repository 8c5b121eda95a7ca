/* GPT-2's weights as the family holds them, shared by training (gpt2.c) and inference
 * (gpt2_infer.c). */
#ifndef LORAPS_GPT2_INTERNAL_H
#define LORAPS_GPT2_INTERNAL_H

#include "gpt2_config.h"
#include "model_family.h"

enum { MOD_QKV, MOD_ATTN_PROJ, MOD_FC, MOD_FC_PROJ, MODS_PER_LAYER };

typedef struct gpt2_layer {
    weight ln1_w, ln1_b, qkv_w, qkv_b, attn_proj_w, attn_proj_b;
    weight ln2_w, ln2_b, fc_w, fc_b, fc_proj_w, fc_proj_b;
} gpt2_layer;

typedef struct gpt2 {
    gpt2_config cfg;
    weight wte, wpe, lnf_w, lnf_b, lm_head_own;
    const weight *lm_head; /* &wte when tied, else &lm_head_own */
    gpt2_layer *layers;
} gpt2;

/* The KV-cache inference ops for the family table (gpt2_infer.c). */
int gpt2_session_new(void **impl, const model *m, const lora_adapter *a, int max_len, lp_err *err);
void gpt2_session_free(void *impl);
int gpt2_session_feed(void *impl, const int *tokens, int n, float *logits, lp_err *err);
int gpt2_session_length(const void *impl);
void gpt2_session_reset(void *impl);

#endif
