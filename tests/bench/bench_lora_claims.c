/* The seed article's claims for LoRA, measured against a full fine-tuning baseline run through
 * the same code in the same process:
 *   1. faster training: no gradients for the frozen weights (step time, LoRA vs full);
 *   2. less memory: no optimizer state or gradients for them (bytes, and RSS measured);
 *   3. tiny checkpoints (adapter file vs model file, as written);
 *   4. no extra inference latency once merged (ms/token: unmerged adapter vs the base
 *      architecture, which is what a merged model runs).
 *
 *   bench_lora_claims [--preset 124m] [--targets c_attn] [--r 8] [--B 4] [--T 256] [--steps 2]
 */
#include "adamw.h"
#include "lora_targets.h"
#include "model_load.h"
#include "bench_util.h"
#include "demo_model.h"
#include "demo_task.h"
#include "lora.h"
#include "model.h"
#include "ops.h"
#include "peft.h"

#include <cblas.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void die(const char *what, const lp_err *err) {
    fprintf(stderr, "bench_lora_claims: error: %s: %s\n", what, err->msg);
    exit(1);
}

/* Resident memory now, from /proc (peak RSS cannot go back down between the two phases). */
static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return (double)resident * 4096.0;
}

static double file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size : 0;
}

/* One step: forward, backward, AdamW over n parameters; the best time of `steps`. */
static double time_steps(model_trainer *t, lora_adapter *a, float *params, float *grads, size_t n,
                         int B, int T, int steps, const demo_task *task) {
    int *in = malloc(sizeof(int) * B * T), *tg = malloc(sizeof(int) * B * T);
    float *mom = calloc(n, sizeof(float)), *vel = calloc(n, sizeof(float));
    adamw_config opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    double best = 1e30;
    lp_err err;
    for (int s = 0; s <= steps; s++) {
        demo_task_batch(task, (uint64_t)s * B, B, T, in, tg);
        double t0 = bench_now();
        memset(grads, 0, n * sizeof(float));
        lora_adapter_zero_grad(a);
        model_step out;
        if (model_trainer_step(t, in, tg, 1.0f / (B * T), 1, 0, &out, &err) < 0) die("step", &err);
        adamw_update(params, grads, mom, vel, n, 1e-5f, &opt, s + 1);
        double dt = bench_now() - t0;
        if (s > 0 && dt < best) best = dt;
    }
    free(in);
    free(tg);
    free(mom);
    free(vel);
    return best;
}

static double ms_per_token(const model *m, const lora_adapter *a, int prompt, int new_tokens) {
    lp_err err;
    model_session *s;
    int V = model_vocab_size(m);
    if (model_session_new(&s, m, a, prompt + new_tokens, &err) < 0) die("session", &err);
    int *tokens = malloc(sizeof(int) * prompt);
    float *logits = malloc(sizeof(float) * V);
    for (int i = 0; i < prompt; i++) tokens[i] = (i * 31 + 7) % V;
    if (model_session_feed(s, tokens, prompt, logits, &err) < 0) die("prompt", &err);
    double t0 = bench_now();
    for (int i = 0; i < new_tokens; i++) {
        int next = 0;
        for (int v = 1; v < V; v++) next = logits[v] > logits[next] ? v : next;
        if (model_session_feed(s, &next, 1, logits, &err) < 0) die("generate", &err);
    }
    double ms = (bench_now() - t0) * 1e3 / new_tokens;
    model_session_free(s);
    free(tokens);
    free(logits);
    return ms;
}

int main(int argc, char **argv) {
    const char *preset = "124m", *targets = "c_attn";
    int r = 8, B = 4, T = 256, steps = 2;
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
        else {
            fprintf(stderr, "bench_lora_claims: error: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    lp_err err;
    char dir[4096], path[4400];
    model *m;
    if (demo_model_ensure(preset, dir, sizeof dir, &err) < 0 || model_load(&m, dir, &err) < 0)
        die("model", &err);
    ops_set_threads(0);
    lora_config c;
    lora_config_defaults(&c);
    c.r = r;
    c.alpha = 2.0f * r;
    lora_adapter a;
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    if (lora_config_set_targets(&c, targets, &err) < 0 ||
        lora_adapter_build(&a, &c, mods, n_mods, &err) < 0)
        die("adapter", &err);
    lora_adapter_init(&a, 1);
    demo_task task;
    demo_task_init(&task, 1, model_vocab_size(m));
    double adapter_bytes = (double)a.n_params * sizeof(float);
    double model_bytes = (double)model_weight_bytes(m);

    /* LoRA */
    model_trainer *lora_t;
    if (model_trainer_new(&lora_t, m, &a, B, T, &err) < 0) die("trainer", &err);
    double rss0 = rss_bytes();
    double lora_step = time_steps(lora_t, &a, a.params, a.grads, a.n_params, B, T, steps, &task);
    double rss_lora = rss_bytes();
    model_trainer_free(lora_t);

    /* Full fine-tuning: every weight gets a gradient, AdamW moments and a writable copy. */
    model_trainer *full_t;
    if (model_trainer_new(&full_t, m, &a, B, T, &err) < 0) die("trainer", &err);
    float *full_grads;
    size_t n_full;
    if (model_trainer_full_grads(full_t, &full_grads, &n_full, &err) < 0) die("full", &err);
    float *weights = calloc(n_full, sizeof(float));
    double full_step = time_steps(full_t, &a, weights, full_grads, n_full, B, T, steps, &task);
    double rss_full = rss_bytes();
    model_trainer_free(full_t);
    free(weights);

    /* checkpoints as written */
    char tmp[] = "/tmp/loraps-claims-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    if (peft_save(tmp, &a, dir, model_fan_in_fan_out(m), &err) < 0) die("save", &err);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmp);
    double ckpt_adapter = file_bytes(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    double ckpt_model = file_bytes(path);
    snprintf(path, sizeof path, "rm -rf %s", tmp);
    if (system(path) != 0) return 1;

    /* inference: B = 0 would still run the branch, so give the adapter real values */
    for (size_t i = 0; i < a.n_params; i++) a.params[i] = 1e-3f;
    double ms_unmerged = ms_per_token(m, &a, 32, 64), ms_merged = ms_per_token(m, NULL, 32, 64);

    printf("bench_lora_claims: preset %s, LoRA r=%d on %s, B %d, T %d, %d threads\n", preset, r,
           targets, B, T, openblas_get_num_threads());
    printf("  1. training step      LoRA %.3f s, full %.3f s: LoRA is %.2f x faster\n", lora_step,
           full_step, full_step / lora_step);
    /* what training holds per trained parameter: the value, its gradient and two moments */
    printf("  2. trained state      LoRA %.2f MB, full %.1f MB (values, grads, 2 moments): %.0f x "
           "less\n",
           4 * adapter_bytes / 1e6, 4 * model_bytes / 1e6, model_bytes / adapter_bytes);
    printf("     RSS growth         LoRA %.0f MB, full %.0f MB over the loaded model (measured)\n",
           (rss_lora - rss0) / 1e6 > 0 ? (rss_lora - rss0) / 1e6 : 0, (rss_full - rss0) / 1e6);
    printf("  3. checkpoint         adapter %.2f MB, model %.1f MB: %.4f of the model (%.0f x "
           "smaller)\n",
           ckpt_adapter / 1e6, ckpt_model / 1e6, ckpt_adapter / ckpt_model,
           ckpt_model / ckpt_adapter);
    printf("  4. inference          unmerged %.2f ms/token, merged (base shape) %.2f ms/token: "
           "merged is %.3f of unmerged\n",
           ms_unmerged, ms_merged, ms_merged / ms_unmerged);
    lora_adapter_free(&a);
    lora_config_free(&c);
    model_free(m);
    return 0;
}
