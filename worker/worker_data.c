#include "worker_data.h"

#include "dataset.h"

#include <stdlib.h>

struct worker_data {
    data_source src;
};

int worker_data_open(worker_data **out, const job *j, int vocab_size, const worker_data_paths *p,
                     lp_err *err) {
    *out = NULL;
    worker_data *d = calloc(1, sizeof *d);
    if (!d) return lp_fail(err, "out of memory");
    if (!p || !p->data) {
        if (p && p->val_file) {
            free(d);
            return lp_fail(err, "--val-file needs --data");
        }
        data_source_open_demo(&d->src, j->seed, vocab_size);
        *out = d;
        return 0;
    }
    dataset_options o;
    if (job_data_options(j, &o, err) < 0) {
        free(d);
        return -1;
    }
    o.val_path = p->val_file;
    o.vocab_size = vocab_size; /* ids must fit the model, whatever the tokenizer says */
    if (data_source_open_file(&d->src, p->data, p->tokenizer, &o, err) < 0) {
        free(d);
        return -1;
    }
    if (j->eval_every > 0 && !data_source_val_sequences(&d->src)) {
        data_source_close(&d->src);
        free(d);
        return lp_fail(err,
                       "%s: the job validates every %d steps, but the data has no validation "
                       "sequences (set val_fraction, or --val-file)",
                       p->data, j->eval_every);
    }
    *out = d;
    return 0;
}

int worker_data_batch(worker_data *d, uint64_t first, int n, int T, int *inputs, int *targets,
                      lp_err *err) {
    return data_source_batch(&d->src, DS_TRAIN, first, n, T, inputs, targets, err);
}

int worker_data_validate(worker_data *d, model_trainer *t, int B, int T, int rank, int n_ranks,
                         int *inputs, int *targets, val_result *out, lp_err *err) {
    return val_pass(t, &d->src, B, T, rank, n_ranks, inputs, targets, out, err);
}

const char *worker_data_name(const worker_data *d) {
    return data_source_name(&d->src);
}

uint64_t worker_data_id(const worker_data *d) {
    return data_source_id(&d->src);
}

void worker_data_free(worker_data *d) {
    if (!d) return;
    data_source_close(&d->src);
    free(d);
}
