/* The adapter in PEFT's own format: a folder with adapter_config.json and
 * adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight, A [r,in], B [out,r]),
 * which PeftModel.from_pretrained loads unchanged. */
#ifndef LORAPS_PEFT_H
#define LORAPS_PEFT_H

#include "error.h"
#include "lora.h"

/* Writes both files atomically into dir (created if needed). fan_in_fan_out is true for
 * GPT-2's Conv1D weights. */
int peft_save(const char *dir, const lora_adapter *a, const char *base_model, int fan_in_fan_out,
              lp_err *err);

#endif
