#include "val_pass.h"

#include <string.h>

void val_share(uint64_t n, int rank, int n_ranks, uint64_t *first, uint64_t *count) {
    uint64_t per = (n + (uint64_t)n_ranks - 1) / (uint64_t)n_ranks;
    uint64_t a = per * (uint64_t)rank, b = a + per;
    if (a > n) a = n;
    if (b > n) b = n;
    *first = a;
    *count = b - a;
}

int val_pass(model_trainer *t, data_source *src, int B, int T, int rank, int n_ranks, int *inputs,
             int *targets, val_result *out, lp_err *err) {
    memset(out, 0, sizeof *out);
    uint64_t first, count;
    val_share(data_source_val_sequences(src), rank, n_ranks, &first, &count);
    for (uint64_t done = 0; done < count;) {
        int n = count - done < (uint64_t)B ? (int)(count - done) : B;
        if (data_source_batch(src, DS_VAL, first + done, n, T, inputs, targets, err) < 0) return -1;
        /* a last, partial micro-batch: the rows past it count no tokens */
        for (size_t i = (size_t)n * T; i < (size_t)B * T; i++) inputs[i] = 0, targets[i] = -1;
        model_step s;
        if (model_trainer_step(t, inputs, targets, 0.0f, 0, 0, &s, err) < 0)
            return lp_wrap(err, "validation");
        out->loss_sum += s.loss_sum;
        out->n_tokens += (uint64_t)s.n_tokens;
        done += (uint64_t)n;
    }
    out->n_sequences = count;
    return 0;
}
