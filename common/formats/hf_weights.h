/* The weights of an HF model folder: model.safetensors, or several files listed by
 * model.safetensors.index.json ({"weight_map": {name: file}}). Lookups go by tensor name
 * across all files. */
#ifndef LORAPS_HF_WEIGHTS_H
#define LORAPS_HF_WEIGHTS_H

#include "error.h"
#include "safetensors.h"

typedef struct hf_weights {
    int n_files;
    st_file *files;
} hf_weights;

int hf_weights_open(hf_weights *w, const char *dir, lp_err *err);
void hf_weights_close(hf_weights *w);
/* The tensor called name, or, if absent, called prefix + name (e.g. "transformer." for
 * GPT-2 saved from GPT2LMHeadModel); NULL if neither exists. */
const st_tensor *hf_weights_find(const hf_weights *w, const char *prefix, const char *name);
size_t hf_weights_total_bytes(const hf_weights *w);

#endif
