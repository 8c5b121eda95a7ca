/* Validation passes: the ranks' shares cover the pass exactly once, and their token-weighted sum
 * is the one-process pass (what the server reports equals what loraps train reports). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "job.h"
#include "lora_targets.h"
#include "model_load.h"
#include "model.h"
#include "model_init.h"
#include "val_pass.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void test_shares(void **state) {
    (void)state;
    uint64_t cases[][2] = {{10, 3}, {2, 4}, {0, 2}, {64, 1}, {64, 7}, {5, 5}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t n = cases[c][0], next = 0;
        int ranks = (int)cases[c][1];
        for (int r = 0; r < ranks; r++) {
            uint64_t first, count;
            val_share(n, r, ranks, &first, &count);
            if (count) assert_int_equal(first, next); /* contiguous, in rank order */
            next = first + count;
            assert_true(next <= n);
        }
        assert_int_equal(next, n);
    }
}

static void test_ranks_sum_to_whole(void **state) {
    (void)state;
    char dir[] = "/tmp/loraps-val-XXXXXX";
    assert_non_null(mkdtemp(dir));
    gpt2_config c;
    lp_err err;
    assert_int_equal(model_preset("tiny", &c, &err), 0);
    assert_int_equal(model_init_write(dir, &c, 7, &err), 0);
    model *m;
    if (model_load(&m, dir, &err) < 0) fail_msg("%s", err.msg);
    job j;
    job_defaults(&j);
    lora_config lc;
    lora_adapter a;
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    assert_int_equal(job_lora_config(&j, &lc, &err), 0);
    assert_int_equal(lora_adapter_build(&a, &lc, mods, n_mods, &err), 0);
    lora_config_free(&lc);
    lora_adapter_init(&a, 3);
    for (size_t i = 0; i < a.n_params; i++) a.params[i] += 0.01f; /* B != 0: the adapter acts */
    int B = 4, T = 16;
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    int in[4 * 16], tg[4 * 16];
    data_source src;
    data_source_open_demo(&src, 5, model_vocab_size(m));

    val_result whole;
    assert_int_equal(val_pass(t, &src, B, T, 0, 1, in, tg, &whole, &err), 0);
    assert_int_equal(whole.n_sequences, DATA_DEMO_VAL_SEQUENCES);
    assert_true(whole.n_tokens > 0 && isfinite(whole.loss_sum));
    for (int ranks = 2; ranks <= 5; ranks++) {
        double loss = 0;
        uint64_t tokens = 0, seqs = 0;
        for (int r = 0; r < ranks; r++) {
            val_result v;
            assert_int_equal(val_pass(t, &src, B, T, r, ranks, in, tg, &v, &err), 0);
            loss += v.loss_sum, tokens += v.n_tokens, seqs += v.n_sequences;
        }
        assert_int_equal(tokens, whole.n_tokens);
        assert_int_equal(seqs, whole.n_sequences);
        assert_true(fabs(loss - whole.loss_sum) <= 1e-5 * whole.loss_sum);
    }
    /* no gradient: a validation pass leaves the adapter's gradients alone */
    for (size_t i = 0; i < a.n_params; i++) assert_true(a.grads[i] == 0.0f);

    data_source_close(&src);
    model_trainer_free(t);
    lora_adapter_free(&a);
    model_free(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shares),
        cmocka_unit_test(test_ranks_sum_to_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
