/* LoRA training steps on a GPU at the shapes of ../shared/peer/gpu_peft_bench.py (HF + PEFT, the
 * peer measured in the same run by tests/gpu/run.sh): GPT-2 124M (c_attn, c_proj, c_fc), a Llama
 * 1B shape and a Llama 8B shape (all seven targets), r=16, alpha=32, dropout 0, random bf16
 * weights made in memory. One step is what `loraps train --device cuda` does: the adapter to the
 * GPU, forward and backward over the batch, the gradients back, and AdamW on the host. Prints
 * one RESULT line in the peer's format: tokens/s (median of the timed steps), peak GPU memory
 * (the allocator's high-water mark) and MFU against 989 TFLOP/s dense bf16, with the peer's FLOP
 * count (4 x base parameters per token, plus attention).
 *
 *   bench_gpu_step MODEL B T [--steps N] [--device cuda:K]    MODEL: gpt2-124m | llama-1b |
 * llama-8b
 */
#include "adamw.h"
#include "bench_util.h"
#include "lora.h"
#include "lora_targets.h"
#include "model.h"
#include "rng.h"
#include "synthetic_weights.h"
#include "train_step.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEAK_BF16 989e12

static int die(const char *what, const lp_err *err) {
    fprintf(stderr, "bench_gpu_step: error: %s: %s\n", what, err->msg);
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The model and the peer's base parameter count (every weight, embeddings included). */
static int build(const char *name, model **m, double *n_base, int *layers, int *width,
                 const char **targets, lp_err *err) {
    weight_source src = synthetic_weights(1, 0.02f, DT_BF16);
    if (!strcmp(name, "gpt2-124m")) {
        gpt2_config c = {.n_embd = 768,
                         .n_layer = 12,
                         .n_head = 12,
                         .n_positions = 1024,
                         .vocab_size = 50257,
                         .layer_norm_epsilon = 1e-5f,
                         .activation_function = "gelu_new",
                         .tie_word_embeddings = 1};
        double C = c.n_embd;
        *n_base = c.vocab_size * C + c.n_positions * C + 2 * C + c.n_layer * (12 * C * C + 13 * C);
        *layers = c.n_layer, *width = c.n_embd;
        *targets = "c_attn,c_proj,c_fc";
        return model_build_gpt2(m, &c, src, err);
    }
    int big = !strcmp(name, "llama-8b");
    if (!big && strcmp(name, "llama-1b")) {
        if (src.release) src.release(src.ctx);
        return lp_fail(err, "unknown model '%s' (gpt2-124m, llama-1b, llama-8b)", name);
    }
    llama_config c = {.model_type = "llama",
                      .hidden_size = big ? 4096 : 2048,
                      .intermediate_size = big ? 14336 : 8192,
                      .num_hidden_layers = big ? 32 : 16,
                      .num_attention_heads = 32,
                      .num_key_value_heads = 8,
                      .head_dim = big ? 128 : 64,
                      .vocab_size = 128256,
                      .max_position_embeddings = 4096,
                      .rms_norm_eps = 1e-5f,
                      .rope_theta = 500000,
                      .tie_word_embeddings = !big};
    double C = c.hidden_size, I = c.intermediate_size, KV = c.num_key_value_heads * c.head_dim;
    double per_layer = 2 * C * C + 2 * C * KV + 3 * C * I + 2 * C;
    *n_base = c.vocab_size * C * (big ? 2 : 1) + C + c.num_hidden_layers * per_layer;
    *layers = c.num_hidden_layers, *width = c.hidden_size;
    *targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
    return model_build_llama(m, &c, src, err);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_gpu_step MODEL B T [--steps N] [--device cuda:K]\n");
        return 2;
    }
    const char *name = argv[1], *spec = "cuda";
    int B = atoi(argv[2]), T = atoi(argv[3]), steps = 10;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--device")) spec = argv[i + 1];
    }
    lp_err err;
    device *d;
    if (device_open(&d, spec, &err) < 0) return die("device", &err);
    double t0 = bench_now(), n_base = 0;
    model *m;
    int L = 0, C = 0;
    const char *targets = "";
    if (build(name, &m, &n_base, &L, &C, &targets, &err) < 0) return die(name, &err);
    double t_built = bench_now();
    if (model_place(m, d, &err) < 0) return die("model_place", &err);
    double t_placed = bench_now();

    lora_config cfg;
    lora_config_defaults(&cfg);
    cfg.r = 16;
    cfg.alpha = 32;
    lora_adapter a;
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    if (lora_config_set_targets(&cfg, targets, &err) < 0 ||
        lora_adapter_build(&a, &cfg, mods, n_mods, &err) < 0)
        return die("adapter", &err);
    lora_adapter_init(&a, 1);
    model_trainer *t;
    if (model_trainer_new(&t, m, &a, B, T, &err) < 0) return die("trainer", &err);

    size_t n = (size_t)B * T;
    int *in = malloc(n * sizeof(int)), *tg = malloc(n * sizeof(int));
    rng r;
    rng_seed(&r, 3);
    int V = model_vocab_size(m);
    for (size_t i = 0; i < n; i++) in[i] = (int)rng_below(&r, (uint32_t)V);
    for (size_t i = 0; i < n; i++) tg[i] = i + 1 < n ? in[i + 1] : 0; /* the peer's labels=x */
    float *mom = calloc(a.n_params, sizeof(float)), *vel = calloc(a.n_params, sizeof(float));
    adamw_config opt = {0.9f, 0.999f, 1e-8f, 0.0f};
    double *times = calloc((size_t)steps, sizeof(double)), compute_sum = 0;
    train_result res = {0};
    for (int s = -3; s < steps; s++) { /* three warm-up steps */
        double s0 = bench_now();
        train_batch b = {.inputs = in,
                         .targets = tg,
                         .n_micro = 1,
                         .first_seq = (uint64_t)(s + 3) * B,
                         .seed = 1};
        if (train_step(t, &a, &b, &res, &err) < 0) return die("step", &err);
        adamw_update(a.params, a.grads, mom, vel, a.n_params, 1e-4f, &opt, s + 4);
        if (s >= 0) times[s] = bench_now() - s0, compute_sum += res.seconds;
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = times[steps / 2], tok = n / med;
    double flops_tok = 4 * n_base + L * (2.0 * T * C) * 3;
    printf("RESULT model=%s B=%d T=%d engine=loraps base_params=%.1fM lora_params=%.2fM "
           "step_ms=%.1f tok_per_s=%.0f peak_GiB=%.2f mfu=%.3f loss=%.4f compute_share=%.3f\n",
           name, B, T, n_base / 1e6, a.n_params / 1e6, med * 1e3, tok,
           device_peak_bytes(d) / (double)(1u << 30), tok * flops_tok / PEAK_BF16,
           res.loss_sum / res.n_tokens, compute_sum / steps / med);
    printf("  %s; built in %.1f s, placed in %.1f s; arena %.2f GiB; %s\n", device_describe(d),
           t_built - t0, t_placed - t_built, model_trainer_arena_bytes(t) / (double)(1u << 30),
           targets);
    fflush(stdout);
    model_trainer_free(t);
    lora_adapter_free(&a);
    lora_config_free(&cfg);
    model_free(m);
    free(in), free(tg), free(mom), free(vel), free(times);
    device_close(d);
    return 0;
}
