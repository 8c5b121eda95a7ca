/* run_metrics_read (common/formats/run_metrics.c), what `loraps report` reads: a metrics.jsonl
 * from the input. Every line is either kept or named with a reason; the steps kept increase
 * strictly (a resumed run's lines replace the earlier ones); the numbers of the bad lines are
 * lines of the file. */
#include "fuzz_util.h"
#include "run_metrics.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[1024];
    if (!path[0]) fuzz_path(path, sizeof path, "", "metrics.jsonl");
    fuzz_write(path, data, size);
    run_metrics m;
    lp_err err;
    if (run_metrics_read(path, &m, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "a failure without a message");
        return 0;
    }
    size_t lines = 1;
    for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
    FUZZ_CHECK(m.n_bad <= m.n_lines && (size_t)m.n_lines <= lines, "%d bad of %d lines (%zu)",
               m.n_bad, m.n_lines, lines);
    FUZZ_CHECK(m.n_steps <= m.n_lines - m.n_bad, "%d steps from %d good lines", m.n_steps,
               m.n_lines - m.n_bad);
    for (int i = 0; i < m.n_bad; i++)
        FUZZ_CHECK(m.bad[i].line >= 1 && (size_t)m.bad[i].line <= lines && m.bad[i].why[0],
                   "bad line %d", m.bad[i].line);
    for (int i = 0; i < m.n_steps; i++) {
        FUZZ_CHECK(m.steps[i].step >= 1 && isfinite(m.steps[i].loss), "step %d", i);
        FUZZ_CHECK(i == 0 || m.steps[i].step > m.steps[i - 1].step, "steps %d, %d not increasing",
                   i - 1, i);
    }
    FUZZ_CHECK(m.n_final_bytes >= 0 && m.n_final_bytes <= RUN_METRICS_MAX_WORKER_BYTES, "bytes");
    run_metrics_free(&m);
    return 0;
}
