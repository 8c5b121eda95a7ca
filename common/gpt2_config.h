/* Hugging Face GPT-2 config.json. */
#ifndef LORAPS_GPT2_CONFIG_H
#define LORAPS_GPT2_CONFIG_H

#include "error.h"

typedef struct gpt2_config {
    int n_embd;
    int n_layer;
    int n_head;
    int n_positions;
    int vocab_size;
    float layer_norm_epsilon;
    char activation_function[32]; /* only "gelu_new" (tanh) and "gelu_pytorch_tanh" accepted */
    int tie_word_embeddings;      /* HF default: true */
} gpt2_config;

/* Reads and validates config.json: model_type "gpt2" (if present), positive sizes, n_embd
 * divisible by n_head, a supported activation. Non-numeric or missing fields name the field. */
int gpt2_config_read(gpt2_config *c, const char *path, lp_err *err);
int gpt2_config_write(const gpt2_config *c, const char *path, lp_err *err);

#endif
