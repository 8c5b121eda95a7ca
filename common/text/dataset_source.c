/* The worker's data source: the embedded demo task or a file dataset (dataset.h). */
#include "dataset.h"

#include <string.h>

int data_source_open_demo(data_source *s, uint64_t seed, int vocab_size) {
    memset(s, 0, sizeof *s);
    demo_task_init(&s->demo, seed, vocab_size);
    return 0;
}

int data_source_open_file(data_source *s, const char *data_path, const char *tokenizer_path,
                          const dataset_options *o, lp_err *err) {
    memset(s, 0, sizeof *s);
    s->is_file = 1;
    if (tokenizer_path && tokenizer_load(&s->tok, tokenizer_path, err) < 0) return -1;
    if (dataset_open(&s->ds, data_path, s->tok, o, err) < 0) {
        tokenizer_free(s->tok);
        s->tok = NULL;
        return -1;
    }
    return 0;
}

int data_source_batch(data_source *s, int split, uint64_t first, int n, int T, int *inputs,
                      int *targets, lp_err *err) {
    if (!s->is_file) {
        /* the demo task has no held-out part: validation reads sequences far past training's */
        demo_task_batch(&s->demo, split == DS_VAL ? first + (1ull << 62) : first, n, T, inputs,
                        targets);
        return 0;
    }
    if (T != dataset_seq_len(s->ds))
        return lp_fail(err, "data: the dataset was opened for sequences of %d tokens, not %d",
                       dataset_seq_len(s->ds), T);
    if (split == DS_VAL && !dataset_n_sequences(s->ds, DS_VAL))
        return lp_fail(err, "data: no validation split (set a fraction or a file)");
    dataset_batch(s->ds, split, first, n, inputs, targets);
    return 0;
}

uint64_t data_source_val_sequences(const data_source *s) {
    return s->is_file ? dataset_n_sequences(s->ds, DS_VAL) : DATA_DEMO_VAL_SEQUENCES;
}

const char *data_source_name(const data_source *s) {
    return s->is_file ? dataset_summary(s->ds) : "the embedded demo task (token level)";
}

uint64_t data_source_id(const data_source *s) {
    return s->is_file ? dataset_id(s->ds) : 0;
}

void data_source_close(data_source *s) {
    dataset_free(s->ds);
    tokenizer_free(s->tok);
    memset(s, 0, sizeof *s);
}
