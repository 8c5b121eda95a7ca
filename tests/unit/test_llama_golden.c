/* The C Llama family + LoRA against the golden vectors of tests/reference/llama_reference.py:
 * logits, loss and LoRA gradients of transformers' LlamaForCausalLM / Qwen2ForCausalLM + peft in
 * float64 (see tests/reference/README.md). Cases: a Llama with grouped-query attention, an
 * untied head and llama3 rope scaling, every linear module adapted with a rank_pattern and an
 * alpha_pattern; a Qwen2 (q/k/v biases, one KV head, tied head) with q/v/up adapted, rsLoRA and
 * a rank_pattern. For each: the adapter built from the case's LoraConfig must have exactly the
 * golden tensors; then logits, the mean loss and the gradient of the mean loss for every A and
 * B, and the step contract (grad_scale 0 adds nothing, a second step doubles the gradients). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora.h"
#include "model_load.h"
#include "lora_targets.h"
#include "model.h"
#include "safetensors.h"

#define GOLDEN_DIR LORAPS_TEST_DATA "/reference/golden"

#include "golden.h"

static void run_case(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", GOLDEN_DIR, name);
    lp_err err = {0};
    st_file g;
    check_ok(st_open(&g, path, &err), &err, path);

    const int B = atoi(meta(&g, "B")), T = atoi(meta(&g, "T"));
    lora_config cfg;
    lora_config_defaults(&cfg);
    cfg.r = atoi(meta(&g, "r"));
    cfg.alpha = strtof(meta(&g, "lora_alpha"), NULL);
    cfg.use_rslora = strcmp(meta(&g, "use_rslora"), "true") == 0;
    cfg.dropout = 0;
    check_ok(lora_config_set_targets(&cfg, meta(&g, "target_modules"), &err), &err,
             "lora_config_set_targets");
    if (*meta(&g, "rank_pattern"))
        check_ok(lora_config_set_patterns(&cfg, 0, meta(&g, "rank_pattern"), &err), &err,
                 "rank_pattern");
    if (*meta(&g, "alpha_pattern"))
        check_ok(lora_config_set_patterns(&cfg, 1, meta(&g, "alpha_pattern"), &err), &err,
                 "alpha_pattern");
    print_message("case %s on %s: B=%d T=%d r=%d alpha=%g rslora=%d targets=%s rank_pattern=%s "
                  "alpha_pattern=%s\n  golden from: %s\n",
                  name, meta(&g, "model"), B, T, cfg.r, (double)cfg.alpha, cfg.use_rslora,
                  meta(&g, "target_modules"), meta(&g, "rank_pattern"), meta(&g, "alpha_pattern"),
                  meta(&g, "source"));

    model *m = NULL;
    char model_dir[512];
    snprintf(model_dir, sizeof model_dir, "%s/%s", GOLDEN_DIR, meta(&g, "model"));
    check_ok(model_load(&m, model_dir, &err), &err, "model_load");
    const int V = model_vocab_size(m);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);

    lora_adapter a;
    check_ok(lora_adapter_build(&a, &cfg, mods, n_mods, &err), &err, "lora_adapter_build");

    /* The adapter must have exactly the golden file's A/B tensors, shapes included. */
    int n_golden = 0;
    for (int i = 0; i < g.n_tensors; i++)
        if (strncmp(g.tensors[i].name, "base_model.model.", 17) == 0) n_golden++;
    if (a.n_tensors != n_golden)
        fail_msg("adapter has %d tensors, golden file %d", a.n_tensors, n_golden);
    for (int i = 0; i < a.n_tensors; i++) {
        const lora_tensor *t = &a.tensors[i];
        const st_tensor *gt = st_find(&g, t->name);
        if (!gt) fail_msg("adapter tensor %s is not in the golden file", t->name);
        assert_int_equal(gt->ndim, 2);
        if (gt->shape[0] != t->rows || gt->shape[1] != t->cols)
            fail_msg("%s: adapter [%lld,%lld], golden [%lld,%lld]", t->name, (long long)t->rows,
                     (long long)t->cols, (long long)gt->shape[0], (long long)gt->shape[1]);
        assert_ptr_equal(lora_adapter_find(&a, t->name), t);
        check_ok(st_read_f32(gt, a.params + t->offset, t->numel, &err), &err, t->name);
    }

    const size_t n_tok = (size_t)B * T;
    int *inputs = read_i32(&g, "inputs", n_tok);
    int *targets = read_i32(&g, "targets", n_tok);
    int n_valid = 0;
    for (size_t i = 0; i < n_tok; i++) n_valid += targets[i] >= 0;

    model_trainer *tr = NULL;
    check_ok(model_trainer_new(&tr, m, &a, B, T, &err), &err, "model_trainer_new");

    /* Logits. */
    float *ref_logits = read_f32(&g, "logits", n_tok * V);
    float *logits = calloc(n_tok * V, sizeof *logits);
    assert_non_null(logits);
    check_ok(model_trainer_logits(tr, inputs, logits, &err), &err, "model_trainer_logits");
    size_t where;
    double dl = max_abs_diff(logits, ref_logits, n_tok * V, &where);
    print_message("  logits max|diff| %.3e (max|ref| %.4f; at token %zu vocab %zu: C %.8g ref "
                  "%.8g)\n",
                  dl, max_abs(ref_logits, n_tok * V), where / V, where % V, (double)logits[where],
                  (double)ref_logits[where]);

    /* Loss and gradients of the mean loss. */
    float *ref_loss = read_f32(&g, "loss", 1);
    lora_adapter_zero_grad(&a);
    model_step st = {0};
    check_ok(model_trainer_step(tr, inputs, targets, 1.0f / (float)n_valid, 0, 0, &st, &err), &err,
             "model_trainer_step");
    double loss = st.loss_sum / st.n_tokens;
    double loss_rel = fabs(loss - ref_loss[0]) / fabs(ref_loss[0]);
    print_message("  loss C %.8f ref %.8f rel %.3e; tokens %d (golden %d)\n", loss,
                  (double)ref_loss[0], loss_rel, st.n_tokens, n_valid);
    double grad_rel = compare_grads(&g, &a, 1.0, "step1", 1);

    /* The contract: gradients are ADDED, and grad_scale 0 runs no backward. */
    model_step st0 = {0};
    check_ok(model_trainer_step(tr, inputs, targets, 0.0f, 0, 0, &st0, &err), &err,
             "model_trainer_step (forward only)");
    double rel0 = compare_grads(&g, &a, 1.0, "after a grad_scale 0 step:", 0);
    model_step st2 = {0};
    check_ok(model_trainer_step(tr, inputs, targets, 1.0f / (float)n_valid, 0, 0, &st2, &err), &err,
             "model_trainer_step (accumulate)");
    double rel2 = compare_grads(&g, &a, 2.0, "after a second step (2x):", 0);

    assert_true(dl <= LOGIT_TOL);
    assert_int_equal(st.n_tokens, n_valid);
    assert_true(loss_rel <= LOSS_TOL);
    assert_true(grad_rel <= GRAD_TOL);
    assert_int_equal(st0.n_tokens, n_valid);
    assert_true(fabs(st0.loss_sum - st.loss_sum) <= LOSS_TOL * fabs(st.loss_sum));
    assert_true(rel0 <= GRAD_TOL);
    assert_true(fabs(st2.loss_sum - st.loss_sum) <= LOSS_TOL * fabs(st.loss_sum));
    assert_true(rel2 <= GRAD_TOL);

    free(ref_loss);
    free(logits);
    free(ref_logits);
    model_trainer_free(tr);
    free(inputs);
    free(targets);
    lora_adapter_free(&a);
    model_free(m);
    lora_config_free(&cfg);
    st_close(&g);
}

static void test_llama_all_targets(void **state) {
    (void)state;
    run_case("llama_all_targets");
}

static void test_qwen2_qv_up_rslora(void **state) {
    (void)state;
    run_case("qwen2_qv_up_rslora");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_all_targets),
        cmocka_unit_test(test_qwen2_qv_up_rslora),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
