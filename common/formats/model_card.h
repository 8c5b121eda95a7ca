/* The model card: the README.md that PEFT's save_pretrained writes into every adapter folder,
 * here filled in. YAML front matter as the Hugging Face Hub reads it (base_model,
 * library_name: peft, tags), the LoRA settings, what training made the adapter, and how to load
 * it with PeftModel.from_pretrained and with loraps. peft_save writes one into every adapter and
 * checkpoint folder; a card is for people, so no loader reads it and checkpoints do not hash
 * it (editing it before publishing breaks nothing). */
#ifndef LORAPS_MODEL_CARD_H
#define LORAPS_MODEL_CARD_H

#include "error.h"
#include "lora.h"

#include <stdint.h>

#define MODEL_CARD_FILE "README.md"

/* What the card says beyond the adapter itself. Zero (and NULL) fields are unknown; the losses
 * are unknown when NAN. model_card_unknown() gives such a card. */
typedef struct model_card {
    const char *folder;       /* the folder the loading examples name; NULL: the one written */
    const char *data;         /* what it was trained on (a file, the demo task) */
    uint64_t step, max_steps; /* optimizer steps done, and planned; step 0: training not recorded */
    uint64_t tokens;          /* tokens trained on */
    double train_loss;        /* the last step's */
    double val_loss;          /* the last validation pass' (NAN: none), at val_step */
    uint64_t val_step;
    int workers;              /* 0: one process (loraps train) */
    const char *mode;         /* sync or async */
    const char *job_settings; /* the job's settings as "key value" lines */
} model_card;

model_card model_card_unknown(void);

/* The card's Markdown (malloc'd; NULL when out of memory). targets: target_modules as
 * adapter_config.json holds them, as text. */
char *model_card_text(const lora_adapter *a, const char *base_model, const char *targets,
                      const char *folder, const model_card *c);
/* Writes dir/README.md atomically. c NULL: a card without training facts. */
int model_card_write(const char *dir, const lora_adapter *a, const char *base_model,
                     const char *targets, const model_card *c, lp_err *err);

#endif
