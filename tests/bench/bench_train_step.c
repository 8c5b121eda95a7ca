/* One LoRA training step (forward + backward + AdamW) of the 124m preset at B=4, T=256 on all
 * cores. Prints tokens/s, achieved GFLOP/s over cblas_sgemm's peak measured in the same run,
 * and peak RSS over (frozen weights + activation arena).
 *
 *   bench_train_step [--preset 124m] [--targets c_attn] [--r 8] [--B 4] [--T 256] [--steps 3]
 *                    [--gemm f32|bf16] [--share I/N] [--threads N]
 *
 * Also prints OpenBLAS' core, the CPU's theoretical FMA peak (cores x clock measured now x FMA
 * lanes x 2) and the step's ratio to it. --gemm bf16 runs the frozen-weight GEMMs in bf16
 * (LORAPS_CPU_GEMM, cpu_gemm.h); --share I/N runs on share I of N of the cores, as one of N
 * processes side by side (cpu_share.h); --threads N sets the compute threads (0: every CPU the
 * process may use). */
#include "adamw.h"
#include "lora_targets.h"
#include "model_load.h"
#include "bench_util.h"
#include "demo_model.h"
#include "demo_task.h"
#include "lora.h"
#include "model.h"
#include "ops.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* The best sgemm rate over the shapes a GPT-2 step runs. */
static double sgemm_peak_gflops(int N, int C) {
    int shapes[4][3] = {{N, 3 * C, C}, {N, 4 * C, C}, {N, C, 4 * C}, {N, C, C}};
    return bench_sgemm_peak(shapes, 4);
}

int main(int argc, char **argv) {
    bench_start("bench_train_step", argv);
    const char *preset = "124m", *targets = "c_attn";
    int r = 8, B = 4, T = 256, steps = 3, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset"))
            preset = argv[i + 1];
        else if (!strcmp(argv[i], "--targets"))
            targets = argv[i + 1];
        else if (!strcmp(argv[i], "--r"))
            r = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--B"))
            B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--T"))
            T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--share"))
            bench_share("bench_train_step", argv[i + 1]);
        else if (!strcmp(argv[i], "--gemm"))
            bench_gemm("bench_train_step", argv[i + 1]);
        else {
            fprintf(stderr, "bench_train_step: error: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    lp_err err;
    char dir[4096];
    model *m;
    if (demo_model_ensure(preset, dir, sizeof dir, &err) < 0 || model_load(&m, dir, &err) < 0) {
        fprintf(stderr, "bench_train_step: error: %s\n", err.msg);
        return 1;
    }
    ops_set_threads(threads);
    lora_config lc;
    lora_config_defaults(&lc);
    lc.r = r;
    lc.alpha = 2.0f * r;
    lora_adapter a;
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    if (lora_config_set_targets(&lc, targets, &err) < 0 ||
        lora_adapter_build(&a, &lc, mods, n_mods, &err) < 0) {
        fprintf(stderr, "bench_train_step: error: %s\n", err.msg);
        return 1;
    }
    lora_adapter_init(&a, 1);
    for (size_t i = 0; i < a.n_params; i++) a.params[i] += 1e-3f; /* B != 0: real dA work */
    model_trainer *t;
    if (model_trainer_new(&t, m, &a, B, T, &err) < 0) {
        fprintf(stderr, "bench_train_step: error: %s\n", err.msg);
        return 1;
    }
    demo_task task;
    demo_task_init(&task, 1, model_vocab_size(m));
    int *in = malloc(sizeof(int) * B * T), *tg = malloc(sizeof(int) * B * T);
    float *mom = calloc(a.n_params, 4), *vel = calloc(a.n_params, 4);
    adamw_config opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    double best = 1e30, loss = 0;
    for (int s = 0; s <= steps; s++) { /* step 0 warms up caches and thread pools */
        demo_task_batch(&task, (uint64_t)s * B, B, T, in, tg);
        double t0 = bench_now();
        model_step out;
        lora_adapter_zero_grad(&a);
        if (model_trainer_step(t, in, tg, 1.0f / (B * T), 1, 0, &out, &err) < 0) {
            fprintf(stderr, "bench_train_step: error: %s\n", err.msg);
            return 1;
        }
        adamw_update(a.params, a.grads, mom, vel, a.n_params, 1e-4f, &opt, s + 1);
        double dt = bench_now() - t0;
        loss = out.loss_sum / out.n_tokens;
        if (s > 0 && dt < best) best = dt;
    }
    double flops = model_train_flops(m, &a, B, T);
    double peak = sgemm_peak_gflops(B * T, model_hidden_size(m));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss * 1024;
    double base = (double)model_weight_bytes(m) + (double)model_trainer_arena_bytes(t);
    double achieved = flops / best / 1e9;
    bench_cpu cpu;
    bench_cpu_peak(&cpu, openblas_get_num_threads());
    printf("bench_train_step: preset %s, targets %s, r %d, B %d, T %d, %d threads\n", preset,
           targets, r, B, T, openblas_get_num_threads());
    printf("  adapter          %zu params = %.3f%% of the model's %.1f MB\n", a.n_params,
           100.0 * a.n_params * 4 / model_weight_bytes(m), model_weight_bytes(m) / 1e6);
    printf("  loss             %.4f (last step)\n", loss);
    printf("  step time        %.3f s (best of %d)\n", best, steps);
    printf("  tokens/s         %.0f\n", B * T / best);
    printf("  matmul GFLOP     %.2f per step\n", flops / 1e9);
    printf("  achieved         %.1f GFLOP/s\n", achieved);
    printf("  sgemm peak       %.1f GFLOP/s (same run)\n", peak);
    printf("  ratio            %.2f of sgemm peak\n", achieved / peak);
    bench_print_cpu(&cpu, achieved);
    printf("  peak RSS         %.0f MB\n", rss / 1e6);
    printf("  weights + arena  %.0f MB (%.0f + %.0f)\n", base / 1e6, model_weight_bytes(m) / 1e6,
           model_trainer_arena_bytes(t) / 1e6);
    printf("  RSS ratio        %.2f of weights + arena\n", rss / base);
    model_trainer_free(t);
    lora_adapter_free(&a);
    lora_config_free(&lc);
    model_free(m);
    free(in);
    free(tg);
    free(mom);
    free(vel);
    return 0;
}
