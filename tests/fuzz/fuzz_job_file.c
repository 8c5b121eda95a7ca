/* job_load_file on a job file written from the input, then what the server does next with it:
 * validation, the LoRA config and the optimizer and schedule views, and the printed settings. */
#include "fuzz_util.h"
#include "job.h"
#include "lora_targets.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[1024];
    static FILE *sink;
    if (!path[0]) {
        fuzz_path(path, sizeof path, "", "job.json");
        sink = fopen("/dev/null", "w");
    }
    fuzz_write(path, data, size);
    job j;
    lp_err err;
    job_defaults(&j);
    if (job_load_file(&j, path, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "a failure without a message");
        return 0;
    }
    FUZZ_CHECK(memchr(j.target_modules, 0, sizeof j.target_modules) &&
                   memchr(j.rank_pattern, 0, sizeof j.rank_pattern) &&
                   memchr(j.alpha_pattern, 0, sizeof j.alpha_pattern) &&
                   memchr(j.lr_scheduler, 0, sizeof j.lr_scheduler) &&
                   memchr(j.mode, 0, sizeof j.mode) && memchr(j.wire_dtype, 0, sizeof j.wire_dtype),
               "a text setting not terminated");
    if (sink) job_print(&j, sink, "fuzz: ");
    if (job_validate(&j, &err) < 0) return 0;
    lora_config lc;
    if (job_lora_config(&j, &lc, &err) == 0) {
        int rank;
        float alpha;
        lora_config_match(&lc, "transformer.h.0.attn.c_attn", &rank, &alpha, &err);
        lora_config_match(&lc, "model.layers.1.self_attn.q_proj", &rank, &alpha, &err);
        lora_config_free(&lc);
    }
    adamw_config ac;
    job_adamw(&j, &ac);
    lr_schedule s;
    int total = j.max_steps > 0 ? j.max_steps : 100;
    job_schedule(&j, total, &s);
    for (int step = 0; step <= total && step < 1000; step += 1 + total / 8) (void)lr_at(&s, step);
    return 0;
}
