/* One LoRA training step (forward + backward + AdamW) of a Llama-family model, by default the
 * smollm-135m-shape preset (SmolLM2-135M's shapes, random weights) at B=4, T=256 on all cores.
 * Prints tokens/s, achieved GFLOP/s over cblas_sgemm's peak measured in the same run, and peak
 * RSS over (frozen weights + activation arena).
 *
 *   bench_llama_step [--preset smollm-135m-shape] [--targets q_proj,v_proj] [--r 8] [--B 4]
 *                    [--T 256] [--steps 3] [--dtype f32|bf16] [--gemm f32|bf16] [--share I/N]
 *                    [--threads N]
 *
 * The model folder is written once under $LORAPS_CACHE (else ~/.cache/loraps) by a child
 * process, so its build does not count in this process's peak RSS. --dtype bf16 stores the
 * weights as BF16; they are then kept in bf16 and widened per use, unless
 * LORAPS_BF16_WEIGHTS=f32 asks for f32 copies at load (compare the two RSS lines). */
#include "adamw.h"
#include "lora_targets.h"
#include "model_load.h"
#include "bench_util.h"
#include "demo_task.h"
#include "fsutil.h"
#include "llama_init.h"
#include "lora.h"
#include "model.h"
#include "ops.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The sgemm rate of one MLP-shaped GEMM (x [N,C] . W^T, W [I,C]), best of reps: measured just
 * before each step, so that on a shared machine the step and its peak see the same load. */
static double sgemm_quick_gflops(int N, const llama_config *c, int reps) {
    int M = N, Nn = c->intermediate_size, K = c->hidden_size;
    float *a = calloc((size_t)M * K, 4), *b = calloc((size_t)K * Nn, 4),
          *o = calloc((size_t)M * Nn, 4);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * Nn; i++) b[i] = (float)(i % 5) * 0.1f;
    double best = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Nn, K, 1.0f, a, K, b, K, 0.0f, o,
                    Nn);
        double g = 2.0 * M * Nn * K / (bench_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(a);
    free(b);
    free(o);
    return best;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The best sgemm rate over the shapes a Llama step runs. */
static double sgemm_peak_gflops(int N, const llama_config *c) {
    int C = c->hidden_size, FF = c->intermediate_size, QD = c->num_attention_heads * c->head_dim;
    const int shapes[4][3] = {{N, QD, C}, {N, FF, C}, {N, C, FF}, {N, C, QD}};
    return bench_sgemm_peak(shapes, 4);
}

static int ensure_model(const char *preset, const char *dtype_name, char *dir, size_t size,
                        llama_config *c, lp_err *err) {
    const char *cache = getenv("LORAPS_CACHE"), *home = getenv("HOME");
    if (cache && *cache)
        snprintf(dir, size, "%s/bench-llama-%s-%s", cache, preset, dtype_name);
    else
        snprintf(dir, size, "%s/.cache/loraps/bench-llama-%s-%s", home ? home : "/tmp", preset,
                 dtype_name);
    if (llama_preset(preset, c, err) < 0) return -1;
    char config[4096 + 16];
    snprintf(config, sizeof config, "%s/config.json", dir);
    if (fs_exists(config)) return 0;
    fprintf(stderr, "creating %s (llama %s, %s)\n", dir, preset, dtype_name);
    pid_t pid = fork();
    if (pid == 0) {
        lp_err e;
        int rc =
            llama_init_write_as(dir, c, 1, strcmp(dtype_name, "bf16") ? DT_F32 : DT_BF16, 0, &e);
        if (rc < 0) fprintf(stderr, "bench_llama_step: error: %s\n", e.msg);
        _exit(rc < 0 ? 1 : 0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
        return lp_fail(err, "could not create %s", dir);
    return 0;
}

int main(int argc, char **argv) {
    bench_start("bench_llama_step", argv);
    const char *preset = "smollm-135m-shape", *targets = "q_proj,v_proj", *dt = "f32";
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
            bench_share("bench_llama_step", argv[i + 1]);
        else if (!strcmp(argv[i], "--gemm"))
            bench_gemm("bench_llama_step", argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype"))
            dt = argv[i + 1];
        else {
            fprintf(stderr, "bench_llama_step: error: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (strcmp(dt, "f32") && strcmp(dt, "bf16")) {
        fprintf(stderr, "bench_llama_step: error: --dtype must be f32 or bf16\n");
        return 2;
    }
    lp_err err;
    char dir[4096];
    llama_config cfg;
    model *m;
    if (ensure_model(preset, dt, dir, sizeof dir, &cfg, &err) < 0 ||
        model_load(&m, dir, &err) < 0) {
        fprintf(stderr, "bench_llama_step: error: %s\n", err.msg);
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
        fprintf(stderr, "bench_llama_step: error: %s\n", err.msg);
        return 1;
    }
    lora_adapter_init(&a, 1);
    for (size_t i = 0; i < a.n_params; i++) a.params[i] += 1e-3f; /* B != 0: real dA work */
    model_trainer *t;
    if (model_trainer_new(&t, m, &a, B, T, &err) < 0) {
        fprintf(stderr, "bench_llama_step: error: %s\n", err.msg);
        return 1;
    }
    demo_task task;
    demo_task_init(&task, 1, model_vocab_size(m));
    int *in = malloc(sizeof(int) * B * T), *tg = malloc(sizeof(int) * B * T);
    float *mom = calloc(a.n_params, 4), *vel = calloc(a.n_params, 4);
    adamw_config opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    double best = 1e30, loss = 0, flops = model_train_flops(m, &a, B, T);
    double *step_ratio = calloc((size_t)steps + 1, sizeof *step_ratio);
    for (int s = 0; s <= steps; s++) { /* step 0 warms up caches and thread pools */
        demo_task_batch(&task, (uint64_t)s * B, B, T, in, tg);
        double adjacent_peak = sgemm_quick_gflops(B * T, &cfg, 3);
        double t0 = bench_now();
        model_step out;
        lora_adapter_zero_grad(&a);
        if (model_trainer_step(t, in, tg, 1.0f / (B * T), 1, 0, &out, &err) < 0) {
            fprintf(stderr, "bench_llama_step: error: %s\n", err.msg);
            return 1;
        }
        adamw_update(a.params, a.grads, mom, vel, a.n_params, 1e-4f, &opt, s + 1);
        double dt_s = bench_now() - t0;
        loss = out.loss_sum / out.n_tokens;
        if (s > 0 && dt_s < best) best = dt_s;
        if (s > 0) step_ratio[s - 1] = flops / dt_s / 1e9 / adjacent_peak;
    }
    qsort(step_ratio, (size_t)steps, sizeof *step_ratio, cmp_double);
    double peak = sgemm_peak_gflops(B * T, &cfg);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss * 1024;
    double base = (double)model_weight_bytes(m) + (double)model_trainer_arena_bytes(t);
    double achieved = flops / best / 1e9;
    bench_cpu cpu;
    bench_cpu_peak(&cpu, openblas_get_num_threads());
    const char *mode = getenv("LORAPS_BF16_WEIGHTS");
    printf("bench_llama_step: preset %s, weights %s%s, targets %s, r %d, B %d, T %d, %d threads\n",
           preset, dt,
           strcmp(dt, "bf16")
               ? ""
               : (mode && !strcmp(mode, "f32") ? " (widened to f32 at load)" : " (kept in bf16)"),
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
    printf("  ratio per step   %.2f (median over %d steps; each against an MLP-shaped sgemm timed "
           "just before it)\n",
           step_ratio[steps / 2], steps);
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
    free(step_ratio);
    return 0;
}
