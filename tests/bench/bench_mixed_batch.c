/* Mixed-task batches against one batch per task: K adapters, each with its own sequences.
 * "separate" runs K training steps of B sequences (one per task, the seed article's limit);
 * "mixed" runs one step of K*B sequences with every adapter on its own rows. Same tokens, same
 * gradients (tests/unit/test_mixed_batch.c); this prints the speed ratio.
 *
 *   bench_mixed_batch [--preset small] [--tasks 4] [--B 1] [--T 128] [--steps 3]
 */
#include "bench_util.h"
#include "lora_targets.h"
#include "model_load.h"
#include "demo_model.h"
#include "lora.h"
#include "model.h"
#include "ops.h"
#include "rng.h"

#include <cblas.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const lp_err *err) {
    fprintf(stderr, "bench_mixed_batch: error: %s: %s\n", what, err->msg);
    exit(1);
}

int main(int argc, char **argv) {
    const char *preset = "small";
    int K = 4, B = 1, T = 128, steps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset"))
            preset = argv[i + 1];
        else if (!strcmp(argv[i], "--tasks"))
            K = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--B"))
            B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--T"))
            T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_mixed_batch: error: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (K < 1 || K > LORA_MAX_BATCH_ADAPTERS || B < 1 || T < 1 || steps < 1) {
        fprintf(stderr, "bench_mixed_batch: error: --tasks 1..%d, --B, --T, --steps >= 1\n",
                LORA_MAX_BATCH_ADAPTERS);
        return 2;
    }
    lp_err err;
    char dir[4096];
    model *m;
    if (demo_model_ensure(preset, dir, sizeof dir, &err) < 0 || model_load(&m, dir, &err) < 0)
        die("model", &err);
    ops_set_threads(0);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    lora_adapter *adapters = calloc((size_t)K, sizeof *adapters);
    lora_adapter **list = calloc((size_t)K, sizeof *list);
    for (int k = 0; k < K; k++) {
        lora_config c;
        lora_config_defaults(&c);
        if (lora_config_set_targets(&c, "c_attn,c_proj,c_fc", &err) < 0 ||
            lora_adapter_build(&adapters[k], &c, mods, n_mods, &err) < 0)
            die("adapter", &err);
        lora_config_free(&c);
        lora_adapter_init(&adapters[k], (uint64_t)k);
        list[k] = &adapters[k];
    }
    int V = model_vocab_size(m), N = K * B * T;
    int *in = malloc(sizeof(int) * N), *tg = malloc(sizeof(int) * N);
    int *adapter_of = malloc(sizeof(int) * K * B);
    float *scales = malloc(sizeof(float) * K);
    rng g;
    rng_seed(&g, 1);
    for (int i = 0; i < N; i++) in[i] = (int)rng_below(&g, (uint32_t)V), tg[i] = in[i];
    for (int b = 0; b < K * B; b++) adapter_of[b] = b / B;
    for (int k = 0; k < K; k++) scales[k] = 1.0f / (B * T);

    uint64_t *seq_ids = calloc((size_t)K * B, sizeof *seq_ids); /* each task's own sequences */
    for (int b = 0; b < K * B; b++) seq_ids[b] = (uint64_t)(b % B);
    model_trainer *one, *mixed;
    if (model_trainer_new(&one, m, &adapters[0], B, T, &err) < 0 ||
        model_trainer_new_multi(&mixed, m, list, K, K * B, T, &err) < 0)
        die("trainer", &err);
    double best_separate = 1e30, best_mixed = 1e30;
    for (int s = 0; s <= steps; s++) { /* round 0 warms up */
        double t0 = bench_now();
        for (int k = 0; k < K; k++) {
            model_step out;
            /* the single-task trainer is bound to adapter 0; the work is the same for any */
            if (model_trainer_step(one, in + (size_t)k * B * T, tg + (size_t)k * B * T, scales[k],
                                   1, 0, &out, &err) < 0)
                die("step", &err);
        }
        double t1 = bench_now();
        model_step total;
        if (model_trainer_step_multi(mixed, in, tg, adapter_of, scales, 1, seq_ids, NULL, &total,
                                     &err) < 0)
            die("mixed step", &err);
        double t2 = bench_now();
        if (s > 0) {
            if (t1 - t0 < best_separate) best_separate = t1 - t0;
            if (t2 - t1 < best_mixed) best_mixed = t2 - t1;
        }
    }
    printf("bench_mixed_batch: preset %s, %d tasks x %d sequences x %d tokens, %d threads\n",
           preset, K, B, T, openblas_get_num_threads());
    printf("  one batch per task  %.3f s for %d steps  %7.0f tok/s\n", best_separate, K,
           N / best_separate);
    printf("  mixed-task batch    %.3f s for 1 step   %7.0f tok/s\n", best_mixed, N / best_mixed);
    printf("  speed-up            %.2f x (mixed over separate)\n", best_separate / best_mixed);
    model_trainer_free(one);
    model_trainer_free(mixed);
    for (int k = 0; k < K; k++) lora_adapter_free(&adapters[k]);
    free(adapters);
    free(list);
    free(in);
    free(tg);
    free(adapter_of);
    free(seq_ids);
    free(scales);
    model_free(m);
    return 0;
}
