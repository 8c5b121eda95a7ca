/* KV-cache inference equals the full forward pass: token by token, in chunks, with and without
 * an adapter, and it refuses to run past its length. */
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

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/gpt2_tiny"
#define T      20

typedef struct fixture {
    model *m;
    lora_config cfg;
    lora_adapter a;
    int V;
    int tokens[T];
    float *full; /* [T, V] logits of the whole sequence through the trainer */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lp_err err;
    if (model_load(&f->m, GOLDEN, &err) < 0) return -1;
    f->V = model_vocab_size(f->m);
    const lora_module *mods;
    int n = model_lora_modules(f->m, &mods);
    lora_config_defaults(&f->cfg);
    lora_config_set_targets(&f->cfg, "c_attn,c_proj,c_fc", &err);
    if (lora_adapter_build(&f->a, &f->cfg, mods, n, &err) < 0) return -1;
    rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < f->a.n_params; i++) f->a.params[i] = 0.05f * rng_normal(&r);
    for (int i = 0; i < T; i++) f->tokens[i] = (int)rng_below(&r, (uint32_t)f->V);
    f->full = malloc(sizeof(float) * T * f->V);
    model_trainer *t;
    if (model_trainer_new(&t, f->m, &f->a, 1, T, &err) < 0 ||
        model_trainer_logits(t, f->tokens, f->full, &err) < 0)
        return -1;
    model_trainer_free(t);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    free(f->full);
    lora_adapter_free(&f->a);
    lora_config_free(&f->cfg);
    model_free(f->m);
    free(f);
    return 0;
}

static double max_diff(const float *a, const float *b, int n) {
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

/* Feeds the sequence in chunks of the given sizes and checks the logits after each chunk. */
static void feed_in_chunks(fixture *f, const int *chunks, int n_chunks) {
    lp_err err;
    model_session *s;
    assert_int_equal(model_session_new(&s, f->m, &f->a, T, &err), 0);
    float *logits = malloc(sizeof(float) * f->V);
    int pos = 0;
    double worst = 0;
    for (int c = 0; c < n_chunks; c++) {
        if (model_session_feed(s, f->tokens + pos, chunks[c], logits, &err) < 0)
            fail_msg("%s", err.msg);
        pos += chunks[c];
        assert_int_equal(model_session_length(s), pos);
        worst = fmax(worst, max_diff(logits, f->full + (size_t)(pos - 1) * f->V, f->V));
    }
    printf("%d chunks: max |session - full forward| = %.3g\n", n_chunks, worst);
    assert_true(worst < 1e-5);
    free(logits);
    model_session_free(s);
}

static void test_token_by_token(void **state) {
    int chunks[T];
    for (int i = 0; i < T; i++) chunks[i] = 1;
    feed_in_chunks(*state, chunks, T);
}

static void test_prompt_then_tokens(void **state) {
    int chunks[] = {11, 1, 1, 4, 1, 2};
    feed_in_chunks(*state, chunks, 6);
}

static void test_whole_sequence_at_once(void **state) {
    int chunks[] = {T};
    feed_in_chunks(*state, chunks, 1);
}

static void test_without_adapter_is_the_base_model(void **state) {
    fixture *f = *state;
    lp_err err;
    /* the base model = the same adapter with B = 0 */
    lora_adapter zero;
    const lora_module *mods;
    int n = model_lora_modules(f->m, &mods);
    assert_int_equal(lora_adapter_build(&zero, &f->cfg, mods, n, &err), 0);
    float *base = malloc(sizeof(float) * T * f->V), *logits = malloc(sizeof(float) * f->V);
    model_trainer *t;
    assert_int_equal(model_trainer_new(&t, f->m, &zero, 1, T, &err), 0);
    assert_int_equal(model_trainer_logits(t, f->tokens, base, &err), 0);
    model_session *s;
    assert_int_equal(model_session_new(&s, f->m, NULL, T, &err), 0);
    assert_int_equal(model_session_feed(s, f->tokens, T, logits, &err), 0);
    double d = max_diff(logits, base + (size_t)(T - 1) * f->V, f->V);
    printf("no adapter vs B = 0: %.3g; vs the adapted model: %.3g\n", d,
           max_diff(logits, f->full + (size_t)(T - 1) * f->V, f->V));
    assert_true(d < 1e-5);
    assert_true(max_diff(logits, f->full + (size_t)(T - 1) * f->V, f->V) > 1e-3);
    model_session_free(s);
    model_trainer_free(t);
    lora_adapter_free(&zero);
    free(base);
    free(logits);
}

static void test_length_limit_and_reset(void **state) {
    fixture *f = *state;
    lp_err err = {{0}};
    model_session *s;
    float *logits = malloc(sizeof(float) * f->V);
    assert_int_equal(model_session_new(&s, f->m, &f->a, 8, &err), 0);
    assert_int_equal(model_session_feed(s, f->tokens, 8, logits, &err), 0);
    assert_int_equal(model_session_feed(s, f->tokens, 1, logits, &err), -1);
    assert_non_null(strstr(err.msg, "past this session's 8"));
    model_session_reset(s);
    assert_int_equal(model_session_length(s), 0);
    assert_int_equal(model_session_feed(s, f->tokens, 3, logits, &err), 0);
    assert_true(max_diff(logits, f->full + 2 * (size_t)f->V, f->V) < 1e-5);
    int bad = f->V;
    assert_int_equal(model_session_feed(s, &bad, 1, logits, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    model_session_free(s);
    assert_int_equal(model_session_new(&s, f->m, &f->a, 100000, &err), -1);
    free(logits);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_by_token),
        cmocka_unit_test(test_prompt_then_tokens),
        cmocka_unit_test(test_whole_sequence_at_once),
        cmocka_unit_test(test_without_adapter_is_the_base_model),
        cmocka_unit_test(test_length_limit_and_reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
