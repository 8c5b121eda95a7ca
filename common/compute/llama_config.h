/* A Llama-family model's shapes, as Hugging Face's configs name them: LlamaForCausalLM,
 * Qwen2ForCausalLM and MistralForCausalLM (SmolLM2 and TinyLlama are model_type "llama").
 * formats/hf_config.h reads and writes config.json. */
#ifndef LORAPS_LLAMA_CONFIG_H
#define LORAPS_LLAMA_CONFIG_H

typedef enum llama_rope_type {
    LLAMA_ROPE_DEFAULT,
    LLAMA_ROPE_LINEAR,
    LLAMA_ROPE_LLAMA3
} llama_rope_type;

typedef struct llama_config {
    char model_type[16]; /* "llama", "qwen2" or "mistral" */
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads; /* divides num_attention_heads; < it is grouped-query attention */
    int head_dim;            /* default hidden_size / num_attention_heads */
    int vocab_size;
    int max_position_embeddings;
    int sliding_window; /* Mistral: 0 when absent or null; tokens further back are not seen */
    float rms_norm_eps;
    double rope_theta;
    llama_rope_type rope_type;
    /* rope scaling: factor for "linear" and "llama3"; the rest for "llama3" only */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position_embeddings;
    int tie_word_embeddings;
    int qkv_bias; /* q/k/v_proj have biases: Qwen2 always, Llama with attention_bias */
    int o_bias;   /* o_proj has a bias: Llama with attention_bias */
    int mlp_bias; /* gate/up/down_proj have biases: Llama with mlp_bias */
} llama_config;

/* The rotary inverse frequencies [head_dim / 2], with the config's scaling applied. */
void llama_rope_inv_freq(const llama_config *c, double *inv_freq);

#endif
