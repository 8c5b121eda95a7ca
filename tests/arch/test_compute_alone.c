/* The compute library stands alone: this program links loraps_compute (and loraps_base) and
 * nothing else, no JSON, regex or network library, and still builds both model families from
 * weights made in memory and trains a LoRA adapter on a fixed batch. If compute code ever calls
 * into formats, text or net, this program no longer links. */
#include "adamw.h"
#include "lora.h"
#include "model.h"
#include "synthetic_weights.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, T = 16, STEPS = 12 };

/* Every module adapted at rank 4. */
static void adapt_all(const model *m, lora_adapter *a) {
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    lora_plan_entry *plan = calloc((size_t)n, sizeof *plan);
    for (int i = 0; i < n; i++) plan[i] = (lora_plan_entry){.module = i, .r = 4, .alpha = 8};
    lora_config cfg;
    lora_config_defaults(&cfg);
    lp_err err;
    assert_int_equal(lora_adapter_layout(a, &cfg, mods, plan, n, &err), 0);
    lora_adapter_init(a, 7);
    lora_config_free(&cfg);
    free(plan);
}

/* A repeating token pattern the random base model cannot predict and an adapter can learn. */
static void batch(int V, int *inputs, int *targets) {
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (i * 7) % (V / 4);
        targets[i] = ((i + 1) * 7) % (V / 4);
    }
}

/* A few AdamW steps on one batch: the loss starts near ln(V), B gets gradients first, and the
 * loss falls. */
static void train_and_check(model *m) {
    int V = model_vocab_size(m);
    lora_adapter a;
    adapt_all(m, &a);
    model_trainer *t;
    lp_err err;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    int inputs[B * T], targets[B * T];
    batch(V, inputs, targets);
    float *mom = calloc(a.n_params, sizeof(float)), *vel = calloc(a.n_params, sizeof(float));
    adamw_config opt = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0};
    double first = 0, last = 0;
    for (int step = 0; step < STEPS; step++) {
        lora_adapter_zero_grad(&a);
        model_step s;
        assert_int_equal(model_trainer_step(t, inputs, targets, 1.0f / (B * T), 1, 0, &s, &err), 0);
        assert_int_equal(s.n_tokens, B * T);
        double loss = s.loss_sum / s.n_tokens;
        assert_true(isfinite(loss));
        if (step == 0) {
            first = loss;
            assert_true(loss > 0.5 * log(V) && loss < 2.0 * log(V));
            double ss = sum_of_squares(a.grads, a.n_params);
            assert_true(ss > 0);
        }
        last = loss;
        adamw_update(a.params, a.grads, mom, vel, a.n_params, 1e-2f, &opt, step + 1);
    }
    assert_true(last < first - 0.1);
    free(mom);
    free(vel);
    model_trainer_free(t);
    lora_adapter_free(&a);
}

static void gpt2_from_memory(void **state) {
    (void)state;
    gpt2_config c = {.n_embd = 32,
                     .n_layer = 2,
                     .n_head = 4,
                     .n_positions = 32,
                     .vocab_size = 128,
                     .layer_norm_epsilon = 1e-5f,
                     .activation_function = "gelu_new",
                     .tie_word_embeddings = 1};
    model *m;
    lp_err err;
    assert_int_equal(model_build_gpt2(&m, &c, synthetic_weights(1, 0.1f, DT_F32), &err), 0);
    assert_string_equal(model_arch(m), "gpt2");
    train_and_check(m);
    model_free(m);
}

static void llama_from_memory(void **state) {
    (void)state;
    llama_config c = {.model_type = "llama",
                      .hidden_size = 32,
                      .intermediate_size = 64,
                      .num_hidden_layers = 2,
                      .num_attention_heads = 4,
                      .num_key_value_heads = 2,
                      .head_dim = 8,
                      .vocab_size = 128,
                      .max_position_embeddings = 32,
                      .rms_norm_eps = 1e-5f,
                      .rope_theta = 10000,
                      .tie_word_embeddings = 1};
    model *m;
    lp_err err;
    assert_int_equal(model_build_llama(&m, &c, synthetic_weights(2, 0.1f, DT_BF16), &err), 0);
    assert_string_equal(model_arch(m), "llama");
    train_and_check(m);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gpt2_from_memory),
        cmocka_unit_test(llama_from_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
