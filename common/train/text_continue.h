/* Greedy continuation of a text prompt through the KV-cache session: the before/after samples
 * of the main demo (loraps run). loraps generate has the full sampler and streaming. */
#ifndef LORAPS_TEXT_CONTINUE_H
#define LORAPS_TEXT_CONTINUE_H

#include "error.h"
#include "lora.h"
#include "model.h"
#include "tokenizer.h"

/* *out (malloc'd): the decoded new text, up to max_new tokens or an end-of-text. a may be NULL
 * (the base model). */
int text_continue(const model *m, const lora_adapter *a, const tokenizer *tok, const char *prompt,
                  int max_new, char **out, lp_err *err);

#endif
