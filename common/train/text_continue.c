#include "text_continue.h"

#include "sampler.h"

#include <stdlib.h>
#include <string.h>

int text_continue(const model *m, const lora_adapter *a, const tokenizer *tok, const char *prompt,
                  int max_new, char **out, lp_err *err) {
    *out = NULL;
    int *ids = NULL;
    size_t n_ids = 0;
    if (tokenizer_encode(tok, prompt, strlen(prompt), 0, 1, &ids, &n_ids, err) < 0) return -1;
    int max_len = model_max_seq_len(m);
    if (n_ids == 0 || (int)n_ids >= max_len) {
        free(ids);
        return lp_fail(err, "prompt of %zu tokens (the model takes 1..%d)", n_ids, max_len - 1);
    }
    int budget = (int)n_ids + max_new <= max_len ? max_new : max_len - (int)n_ids;
    int V = model_vocab_size(m), eos = tokenizer_eos_id(tok), n_out = 0, rc = 0;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int *gen = malloc(sizeof(int) * (size_t)(budget > 0 ? budget : 1));
    model_session *s = NULL;
    sampler smp = {0};
    if (!logits || !gen) {
        rc = lp_fail(err, "out of memory");
        goto done;
    }
    if (model_session_new(&s, m, a, (int)n_ids + budget, err) < 0 ||
        model_session_feed(s, ids, (int)n_ids, logits, err) < 0 ||
        sampler_init(&smp, V, 0.0f, 0, 1.0f, 1) < 0) {
        rc = -1;
        goto done;
    }
    for (int i = 0; i < budget; i++) {
        int next = sampler_next(&smp, logits);
        if (next == eos) break;
        gen[n_out++] = next;
        if (i + 1 < budget && model_session_feed(s, &next, 1, logits, err) < 0) {
            rc = -1;
            goto done;
        }
    }
    *out = tokenizer_decode(tok, gen, (size_t)n_out, 1);
    if (!*out) rc = lp_fail(err, "out of memory");
done:
    sampler_free(&smp);
    model_session_free(s);
    free(logits);
    free(gen);
    free(ids);
    return rc;
}
