/* A GPT-2 model's shapes, as Hugging Face's GPT2Config names them (formats/hf_config.h reads and
 * writes config.json). */
#ifndef LORAPS_GPT2_CONFIG_H
#define LORAPS_GPT2_CONFIG_H

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

#endif
