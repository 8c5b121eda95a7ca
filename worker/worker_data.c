#include "worker_data.h"

#include "demo_task.h"

#include <stdlib.h>

struct worker_data {
    demo_task demo;
};

int worker_data_open(worker_data **out, const job *j, int vocab_size, lp_err *err) {
    worker_data *d = calloc(1, sizeof *d);
    if (!d) return lp_fail(err, "out of memory");
    demo_task_init(&d->demo, j->seed, vocab_size);
    *out = d;
    return 0;
}

void worker_data_batch(worker_data *d, uint64_t first, int n, int T, int *inputs, int *targets) {
    demo_task_batch(&d->demo, first, n, T, inputs, targets);
}

const char *worker_data_name(const worker_data *d) {
    (void)d;
    return "demo task";
}

void worker_data_free(worker_data *d) {
    free(d);
}
