/* The adapter in PEFT's own format: a folder with adapter_config.json and
 * adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight, A [r,in], B [out,r]),
 * which PeftModel.from_pretrained loads unchanged. */
#ifndef LORAPS_PEFT_H
#define LORAPS_PEFT_H

#include "error.h"
#include "lora.h"
#include "model_card.h"

/* Writes both files atomically into dir (created if needed), and the README.md model card
 * (model_card.h) beside them, as save_pretrained does. fan_in_fan_out is true for GPT-2's Conv1D
 * weights. peft_save's card records no training; peft_save_card's says what card holds. */
int peft_save(const char *dir, const lora_adapter *a, const char *base_model, int fan_in_fan_out,
              lp_err *err);
int peft_save_card(const char *dir, const lora_adapter *a, const char *base_model,
                   int fan_in_fan_out, const model_card *card, lp_err *err);

/* Reads a PEFT LoRA folder (ours or one PEFT wrote) and builds the adapter it describes over the
 * model's modules: adapter_config.json gives r, lora_alpha, target_modules, rank_pattern,
 * alpha_pattern, use_rslora and lora_dropout; adapter_model.safetensors must hold exactly the
 * A and B tensors those imply, in F32, F16 or BF16. Features loraps does not implement (DoRA,
 * trained biases, lora_bias, modules_to_save, layers_to_transform, layer_replication,
 * exclude_modules, target_parameters, trainable_token_indices, QA-LoRA, aLoRA) are refused by
 * name. PEFT 0.21's other keys (loftq_config, megatron_*, ...) only matter at init and are
 * ignored. */
int peft_load(const char *dir, const lora_module *modules, int n_modules, lora_adapter *a,
              lp_err *err);

/* Folds a PEFT LoRA adapter into its base model: writes out_dir/model.safetensors with
 * W + s·(B·A) for every adapted module (transposed, W += s·Aᵀ·Bᵀ, for Conv1D weights stored
 * [in, out]), every other tensor unchanged, each in its original dtype, plus config.json and the
 * tokenizer files copied: a plain HF model folder. The adapter is loaded with peft_load over the
 * model's modules. out_dir must not be the model's folder. */
int peft_merge(const char *model_dir, const char *adapter_dir, const char *out_dir, lp_err *err);

#endif
