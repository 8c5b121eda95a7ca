/* Gradients streamed as backward finishes each layer (train_batch.on_ready, for pushing pieces
 * while backward goes on): the ranges come last layer first, cover every parameter exactly once,
 * hold their final values when they are reported, and streaming changes no gradient. For both
 * families, with gradient accumulation (only the last micro-batch streams), with adapters that
 * adapt only some layers, and for several adapters in one batch. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "lora_targets.h"
#include "model.h"
#include "model_load.h"
#include "rng.h"
#include "train_step.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/"
enum { B = 2, T = 10, ACC = 2, MAX_RANGES = 256 };

typedef struct range {
    int adapter;
    size_t offset, n;
    float *snapshot; /* the range's gradients when reported */
} range;

typedef struct log {
    lora_adapter **adapters;
    range r[MAX_RANGES];
    int n;
} log;

static void on_ready(void *ctx, int adapter, size_t offset, size_t n) {
    log *l = ctx;
    assert_true(l->n < MAX_RANGES);
    range *r = &l->r[l->n++];
    *r = (range){adapter, offset, n, malloc(n * sizeof(float))};
    memcpy(r->snapshot, l->adapters[adapter]->grads + offset, n * sizeof(float));
}

static void build(lora_adapter *a, model *m, const char *targets, uint64_t seed) {
    lora_config c;
    lora_config_defaults(&c);
    c.dropout = 0.1f;
    lp_err err;
    assert_int_equal(lora_config_set_targets(&c, targets, &err), 0);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    assert_int_equal(lora_adapter_build(a, &c, mods, n, &err), 0);
    rng g;
    rng_seed(&g, seed);
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = 0.1f * rng_normal(&g);
    lora_config_free(&c);
}

static void tokens(const model *m, int *in, int *tg, size_t n) {
    rng g;
    rng_seed(&g, 3);
    for (size_t i = 0; i < n; i++) {
        in[i] = (int)rng_below(&g, (uint32_t)model_vocab_size(m));
        tg[i] = i % 7 == 0 ? -1 : (int)rng_below(&g, (uint32_t)model_vocab_size(m));
    }
}

/* The ranges of each adapter: offsets strictly decreasing (last layer first), together exactly
 * [0, n_params), each snapshot equal to the final gradients. */
static void check_ranges(const log *l, lora_adapter **adapters, int n_adapters) {
    for (int k = 0; k < n_adapters; k++) {
        size_t covered = 0, prev = SIZE_MAX;
        for (int i = 0; i < l->n; i++) {
            const range *r = &l->r[i];
            if (r->adapter != k) continue;
            assert_true(r->offset < prev);
            assert_true(r->offset + r->n <= (prev == SIZE_MAX ? adapters[k]->n_params : prev));
            assert_memory_equal(r->snapshot, adapters[k]->grads + r->offset, r->n * sizeof(float));
            covered += r->n;
            prev = r->offset;
        }
        assert_int_equal(covered, adapters[k]->n_params);
        assert_int_equal(prev, 0);
    }
}

static void free_log(log *l) {
    for (int i = 0; i < l->n; i++) free(l->r[i].snapshot);
    l->n = 0;
}

static void one_adapter(const char *model_name, const char *targets) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s%s", GOLDEN, model_name);
    model *m;
    lp_err err;
    assert_int_equal(model_load(&m, dir, &err), 0);
    lora_adapter a;
    build(&a, m, targets, 9);
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, m, &a, B, T, &err), 0);
    size_t n = (size_t)ACC * B * T;
    int *in = malloc(n * sizeof(int)), *tg = malloc(n * sizeof(int));
    tokens(m, in, tg, n);
    /* without streaming: the reference */
    train_batch b = {.inputs = in, .targets = tg, .n_micro = ACC, .first_seq = 5, .seed = 11};
    train_result r;
    assert_int_equal(train_step(t, &a, &b, &r, &err), 0);
    float *ref = malloc(a.n_params * sizeof(float));
    memcpy(ref, a.grads, a.n_params * sizeof(float));
    /* streamed */
    lora_adapter *list[1] = {&a};
    log l = {.adapters = list};
    b.on_ready = on_ready;
    b.ready_ctx = &l;
    assert_int_equal(train_step(t, &a, &b, &r, &err), 0);
    printf("%s, targets %s: %d ranges over %zu parameters\n", model_name, targets, l.n, a.n_params);
    assert_true(l.n >= 1);
    check_ranges(&l, list, 1);
    assert_memory_equal(ref, a.grads, a.n_params * sizeof(float));
    /* the step after streams nothing unless asked again */
    free_log(&l);
    b.on_ready = NULL;
    assert_int_equal(train_step(t, &a, &b, &r, &err), 0);
    assert_int_equal(l.n, 0);
    assert_memory_equal(ref, a.grads, a.n_params * sizeof(float));
    free(ref), free(in), free(tg);
    model_trainer_free(t);
    lora_adapter_free(&a);
    model_free(m);
}

static void test_gpt2(void **state) {
    (void)state;
    one_adapter("gpt2_tiny", LORA_ALL_LINEAR);
    one_adapter("gpt2_tiny", "re:transformer\\.h\\.1\\.mlp\\..*"); /* the top layer only */
}

static void test_llama(void **state) {
    (void)state;
    one_adapter("llama_tiny", LORA_ALL_LINEAR);
    one_adapter("llama_tiny", "q_proj,v_proj");
}

/* Two adapters in one batch: each adapter's ranges, each complete. */
static void test_two_adapters(void **state) {
    (void)state;
    model *m;
    lp_err err;
    assert_int_equal(model_load(&m, GOLDEN "gpt2_tiny", &err), 0);
    lora_adapter a[2];
    build(&a[0], m, "c_attn", 1);
    build(&a[1], m, "mlp.c_fc,mlp.c_proj", 2);
    lora_adapter *list[2] = {&a[0], &a[1]};
    model_trainer *t;
    assert_int_equal(model_trainer_new_multi(&t, m, list, 2, B, T, &err), 0);
    int in[B * T], tg[B * T], adapter_of[B] = {0, 1};
    uint64_t seq_ids[B] = {0, 0};
    float scales[2] = {0.1f, 0.1f};
    tokens(m, in, tg, B * T);
    model_step per[2], total;
    for (int k = 0; k < 2; k++) lora_adapter_zero_grad(&a[k]);
    log l = {.adapters = list};
    model_trainer_stream_grads(t, on_ready, &l);
    assert_int_equal(
        model_trainer_step_multi(t, in, tg, adapter_of, scales, 1, seq_ids, per, &total, &err), 0);
    check_ranges(&l, list, 2);
    free_log(&l);
    model_trainer_free(t);
    lora_adapter_free(&a[0]);
    lora_adapter_free(&a[1]);
    model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2),
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_two_adapters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
