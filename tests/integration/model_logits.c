/* model_logits MODEL_DIR ADAPTER_DIR|- OUT.safetensors: the logits of a model (with a PEFT adapter,
 * or "-" for none) on fixed tokens, for comparisons with other implementations
 * (tests/reference/peft_roundtrip.py). Writes "inputs" (I32 [B,T]) and "logits" (F32 [B,T,V]).
 * The tokens: B=2 rows of T=16, token i of row b = (b * 131 + i * 37 + 5) % vocab. */
#include "model.h"
#include "model_load.h"
#include "peft.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, T = 16 };

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: model_logits MODEL_DIR ADAPTER_DIR|- OUT.safetensors\n");
        return 2;
    }
    lp_err err;
    model *m;
    if (model_load(&m, argv[1], &err) < 0) {
        fprintf(stderr, "model_logits: error: %s\n", err.msg);
        return 1;
    }
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter a;
    memset(&a, 0, sizeof a);
    int rc = 0;
    if (strcmp(argv[2], "-")) {
        rc = peft_load(argv[2], mods, n_mods, &a, &err);
    } else {
        rc = lora_adapter_build_identity(&a, mods, n_mods, &err);
    }
    int V = model_vocab_size(m);
    int *inputs = malloc(B * T * sizeof *inputs);
    float *logits = malloc((size_t)B * T * (size_t)V * sizeof *logits);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) inputs[b * T + i] = (b * 131 + i * 37 + 5) % V;
    model_trainer *tr = NULL;
    if (rc == 0) rc = model_trainer_new(&tr, m, &a, B, T, &err);
    if (rc == 0) rc = model_trainer_logits(tr, inputs, logits, &err);
    if (rc == 0) {
        st_writer *w = st_writer_new();
        int64_t si[2] = {B, T}, sl[3] = {B, T, V};
        rc = st_writer_add(w, "inputs", DT_I32, 2, si, inputs, &err);
        if (rc == 0) rc = st_writer_add(w, "logits", DT_F32, 3, sl, logits, &err);
        if (rc == 0) rc = st_writer_write(w, argv[3], &err);
        st_writer_free(w);
    }
    if (rc) fprintf(stderr, "model_logits: error: %s\n", err.msg);
    model_trainer_free(tr);
    free(inputs);
    free(logits);
    lora_adapter_free(&a);
    model_free(m);
    return rc ? 1 : 0;
}
