/* A single-process training run on the tiny preset learns the demo task: the loss must fall
 * far below where it starts. (The frozen weights cannot move: they are mapped read-only.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "job.h"
#include "lora_targets.h"
#include "model_load.h"
#include "local_train.h"
#include "model.h"
#include "model_init.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct losses {
    double first, last_avg;
    int steps;
    int finite;
} losses;

static void record(const train_progress *p, void *ctx) {
    losses *l = ctx;
    if (p->step == 1) l->first = p->loss;
    if (p->step > p->total_steps - 10) l->last_avg += p->loss / 10;
    l->steps = p->step;
    l->finite &= isfinite(p->loss) && isfinite(p->grad_norm);
}

static void run(const char *targets, int grad_accum, float dropout, double max_ratio) {
    char dir[] = "/tmp/loraps-train-XXXXXX";
    assert_non_null(mkdtemp(dir));
    gpt2_config c;
    lp_err err;
    assert_int_equal(model_preset("tiny", &c, &err), 0);
    assert_int_equal(model_init_write(dir, &c, 7, &err), 0);

    job j;
    job_defaults(&j);
    j.max_steps = 120;
    j.micro_batch = 4;
    j.seq_len = 32;
    j.grad_accum = grad_accum;
    j.lr = 3e-3f;
    j.lora_dropout = dropout;
    j.threads = 2;
    snprintf(j.target_modules, sizeof j.target_modules, "%s", targets);
    assert_int_equal(job_validate(&j, &err), 0);

    model *m;
    if (model_load(&m, dir, &err) < 0) fail_msg("%s", err.msg);
    lora_config lc;
    lora_adapter a;
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    assert_int_equal(job_lora_config(&j, &lc, &err), 0);
    assert_int_equal(lora_adapter_build(&a, &lc, mods, n, &err), 0);
    lora_config_free(&lc);
    lora_adapter_init(&a, 11);

    losses l = {0, 0, 0, 1};
    if (local_train(&j, m, &a, record, &l, &err) < 0) fail_msg("%s", err.msg);
    printf("targets %s accum %d dropout %.2f: loss %.3f -> %.3f (ratio %.3f, bound %.2f)\n",
           targets, grad_accum, dropout, l.first, l.last_avg, l.last_avg / l.first, max_ratio);
    assert_int_equal(l.steps, 120);
    assert_true(l.finite);
    assert_true(l.last_avg < max_ratio * l.first);
    for (size_t i = 0; i < a.n_params; i++) assert_true(isfinite(a.params[i]));

    lora_adapter_free(&a);
    model_free(m);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_all_linear_layers_learn_the_task(void **state) {
    (void)state;
    run("c_attn,c_proj,c_fc", 1, 0.0f, 0.35);
}

static void test_gradient_accumulation_and_dropout_learn_too(void **state) {
    (void)state;
    run("c_attn,c_proj,c_fc", 2, 0.1f, 0.45);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_linear_layers_learn_the_task),
        cmocka_unit_test(test_gradient_accumulation_and_dropout_learn_too),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
