/* Mixed-task batches: adapters with different targets, ranks and scales share one batch, and
 * each gets exactly the loss and gradients it would get from a batch of its own; for GPT-2 and the
 * Llama family. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "model.h"
#include "lora_targets.h"
#include "model_load.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/"
#define T      12

/* One family's model and three adapters' targets: a few modules, the MLP, a whole layer. */
typedef struct family_case {
    const char *model;
    const char *targets[3];
} family_case;

static const family_case GPT2 = {"gpt2_tiny",
                                 {"c_attn", "mlp.c_fc,mlp.c_proj", "re:transformer\\.h\\.1\\..*"}};
static const family_case LLAMA = {
    "llama_tiny", {"q_proj,v_proj", "gate_proj,up_proj,down_proj", "re:model\\.layers\\.1\\..*"}};

static model *m;

static void open_model(const family_case *f) {
    lp_err err;
    char dir[512];
    snprintf(dir, sizeof dir, "%s%s", GOLDEN, f->model);
    if (model_load(&m, dir, &err) < 0) fail_msg("%s", err.msg);
}

static void build_with_dropout(lora_adapter *a, const char *targets, int r, float alpha, int rslora,
                               float dropout, uint64_t seed) {
    lp_err err;
    lora_config c;
    lora_config_defaults(&c);
    c.dropout = dropout;
    c.r = r;
    c.alpha = alpha;
    c.use_rslora = rslora;
    assert_int_equal(lora_config_set_targets(&c, targets, &err), 0);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    assert_int_equal(lora_adapter_build(a, &c, mods, n, &err), 0);
    lora_config_free(&c);
    rng g;
    rng_seed(&g, seed);
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = 0.1f * rng_normal(&g);
}

static void tokens(int *in, int *tg, int n_seq, uint64_t seed) {
    rng g;
    rng_seed(&g, seed);
    for (int i = 0; i < n_seq * T; i++) {
        in[i] = (int)rng_below(&g, (uint32_t)model_vocab_size(m));
        tg[i] = i % 5 == 0 ? -1 : (int)rng_below(&g, (uint32_t)model_vocab_size(m));
    }
}

/* Loss and gradients of one adapter on its own sequences, in a batch of its own. */
static model_step alone(lora_adapter *a, const int *in, const int *tg, int n_seq, float scale) {
    lp_err err;
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, a, n_seq, T, &err), 0);
    lora_adapter_zero_grad(a);
    model_step s;
    assert_int_equal(model_trainer_step(t, in, tg, scale, 1, 0, &s, &err), 0);
    model_trainer_free(t);
    return s;
}

static double rel_diff(const float *x, const float *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)x[i] - ref[i]));
        scale = fmax(scale, fabs((double)ref[i]));
    }
    return worst / scale;
}

static void check_three_adapters(const family_case *f, float dropout0, float dropout1,
                                 float dropout2, double *loss) {
    lp_err err;
    lora_adapter a[3];
    open_model(f);
    build_with_dropout(&a[0], f->targets[0], 4, 8, 0, dropout0, 1);
    build_with_dropout(&a[1], f->targets[1], 8, 16, 0, dropout1, 2);
    build_with_dropout(&a[2], f->targets[2], 2, 4, 1, dropout2, 3);
    int seqs[3] = {2, 3, 1}, total = 6;
    int in[6 * T], tg[6 * T], adapter_of[6];
    tokens(in, tg, total, 7);
    /* each sequence's global id is its index in its own task's data (as alone() numbers them) */
    uint64_t seq_ids[6];
    for (int b = 0, k = 0, left = seqs[0]; b < total; b++, left--) {
        while (left == 0) left = seqs[++k];
        adapter_of[b] = k;
        seq_ids[b] = (uint64_t)(seqs[k] - left);
    }
    /* references: each adapter alone, on its own sequences */
    float *ref[3];
    model_step ref_step[3];
    float scales[3] = {0.05f, 0.02f, 0.1f};
    for (int k = 0, row = 0; k < 3; row += seqs[k], k++) {
        ref_step[k] = alone(&a[k], in + row * T, tg + row * T, seqs[k], scales[k]);
        ref[k] = malloc(a[k].n_params * sizeof(float));
        memcpy(ref[k], a[k].grads, a[k].n_params * sizeof(float));
    }
    /* all three in one batch */
    lora_adapter *list[3] = {&a[0], &a[1], &a[2]};
    model_trainer *t;
    assert_int_equal(model_trainer_new_multi(&t, m, list, 3, total, T, &err), 0);
    for (int k = 0; k < 3; k++) lora_adapter_zero_grad(&a[k]);
    model_step per[3], sum;
    if (model_trainer_step_multi(t, in, tg, adapter_of, scales, 1, seq_ids, per, &sum, &err) < 0)
        fail_msg("%s", err.msg);
    for (int k = 0; k < 3; k++) {
        double g = rel_diff(a[k].grads, ref[k], a[k].n_params);
        double l = fabs(per[k].loss_sum - ref_step[k].loss_sum) / ref_step[k].loss_sum;
        printf("adapter %d (%d sites): loss rel diff %.2g, grads rel diff %.2g\n", k, a[k].n_sites,
               l, g);
        assert_int_equal(per[k].n_tokens, ref_step[k].n_tokens);
        assert_true(l < 1e-6);
        assert_true(g < 1e-5);
        loss[k] = per[k].loss_sum;
    }
    assert_int_equal(sum.n_tokens, per[0].n_tokens + per[1].n_tokens + per[2].n_tokens);

    /* an adapter without sequences in this batch gets nothing */
    int only_first[6] = {0, 0, 0, 0, 2, 2};
    for (int k = 0; k < 3; k++) lora_adapter_zero_grad(&a[k]);
    assert_int_equal(
        model_trainer_step_multi(t, in, tg, only_first, scales, 1, seq_ids, per, &sum, &err), 0);
    for (size_t i = 0; i < a[1].n_params; i++) assert_true(a[1].grads[i] == 0.0f);
    assert_int_equal(per[1].n_tokens, 0);
    assert_true(per[0].n_tokens > 0 && per[2].n_tokens > 0);

    /* sequences out of adapter order are refused, naming the problem */
    int unsorted[6] = {0, 1, 0, 1, 2, 2};
    assert_int_equal(
        model_trainer_step_multi(t, in, tg, unsorted, scales, 1, seq_ids, per, &sum, &err), -1);
    assert_non_null(strstr(err.msg, "grouped by adapter"));
    int out_of_range[6] = {0, 0, 0, 0, 0, 3};
    assert_int_equal(
        model_trainer_step_multi(t, in, tg, out_of_range, scales, 1, seq_ids, per, &sum, &err), -1);
    assert_non_null(strstr(err.msg, "adapter 3 of 3"));

    model_trainer_free(t);
    for (int k = 0; k < 3; k++) {
        free(ref[k]);
        lora_adapter_free(&a[k]);
    }
    model_free(m);
    m = NULL;
}

static void test_each_adapter_gets_its_own_gradients(void **state) {
    (void)state;
    double loss[3];
    check_three_adapters(&GPT2, 0, 0, 0, loss);
    check_three_adapters(&LLAMA, 0, 0, 0, loss);
}

/* With LoRA dropout (different rates per adapter), each adapter's masks in the mixed batch are
 * the ones it gets alone, so the equality stays exact. */
static void test_with_dropout_too(void **state) {
    (void)state;
    const family_case *families[2] = {&GPT2, &LLAMA};
    for (int i = 0; i < 2; i++) {
        double plain[3], dropped[3];
        check_three_adapters(families[i], 0, 0, 0, plain);
        check_three_adapters(families[i], 0.1f, 0.3f, 0.0f, dropped);
        /* and the dropout really happened where it was asked for, and only there */
        assert_true(plain[0] != dropped[0] && plain[1] != dropped[1]);
        assert_true(plain[2] == dropped[2]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_adapter_gets_its_own_gradients),
        cmocka_unit_test(test_with_dropout_too),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
