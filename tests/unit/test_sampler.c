/* Next-token choice: greedy, temperature, top-k and top-p cut the right candidates and sample
 * them in the right proportions (fixed seeds: deterministic, not flaky). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sampler.h"

#include <math.h>
#include <stdio.h>

#define V     4
#define DRAWS 40000

/* probabilities 0.5, 0.3, 0.15, 0.05 */
static const float LOGITS[V] = {-0.6931472f, -1.2039728f, -1.8971200f, -2.9957323f};

static void frequencies(float temperature, int top_k, float top_p, uint64_t seed, double *freq) {
    sampler s;
    assert_int_equal(sampler_init(&s, V, temperature, top_k, top_p, seed), 0);
    int count[V] = {0};
    for (int i = 0; i < DRAWS; i++) count[sampler_next(&s, LOGITS)]++;
    for (int v = 0; v < V; v++) freq[v] = (double)count[v] / DRAWS;
    sampler_free(&s);
}

static void expect(const double *got, const double *want, const char *what) {
    printf("%-24s", what);
    for (int v = 0; v < V; v++) {
        printf(" %.3f/%.3f", got[v], want[v]);
        /* 5 standard deviations of a binomial proportion over DRAWS draws */
        double tol = 5 * sqrt(want[v] * (1 - want[v]) / DRAWS) + 1e-12;
        assert_true(fabs(got[v] - want[v]) <= tol);
    }
    printf("\n");
}

static void test_greedy_and_cuts_to_one(void **state) {
    (void)state;
    double f[V], argmax[V] = {1, 0, 0, 0};
    frequencies(0, 0, 1, 1, f);
    expect(f, argmax, "temperature 0");
    frequencies(1.5f, 1, 1, 2, f);
    expect(f, argmax, "top-k 1");
    frequencies(1, 0, 0.4f, 3, f);
    expect(f, argmax, "top-p 0.4");
}

static void test_proportions(void **state) {
    (void)state;
    double f[V];
    double plain[V] = {0.5, 0.3, 0.15, 0.05};
    frequencies(1, 0, 1, 4, f);
    expect(f, plain, "temperature 1");
    double k2[V] = {0.625, 0.375, 0, 0};
    frequencies(1, 2, 1, 5, f);
    expect(f, k2, "top-k 2");
    double p07[V] = {0.625, 0.375, 0, 0}; /* 0.5 < 0.7 <= 0.8: two tokens */
    frequencies(1, 0, 0.7f, 6, f);
    expect(f, p07, "top-p 0.7");
    double p09[V] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}; /* 0.8 < 0.9 <= 0.95 */
    frequencies(1, 0, 0.9f, 7, f);
    expect(f, p09, "top-p 0.9");
    /* temperature 2: p ~ p^(1/2) */
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.15) + sqrt(0.05);
    double t2[V] = {sqrt(0.5) / z, sqrt(0.3) / z, sqrt(0.15) / z, sqrt(0.05) / z};
    frequencies(2, 0, 1, 8, f);
    expect(f, t2, "temperature 2");
}

static void test_same_seed_same_tokens(void **state) {
    (void)state;
    sampler a, b;
    sampler_init(&a, V, 1, 0, 1, 42);
    sampler_init(&b, V, 1, 0, 1, 42);
    int differ = 0;
    for (int i = 0; i < 1000; i++) differ += sampler_next(&a, LOGITS) != sampler_next(&b, LOGITS);
    assert_int_equal(differ, 0);
    sampler_free(&a);
    sampler_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_cuts_to_one),
        cmocka_unit_test(test_proportions),
        cmocka_unit_test(test_same_seed_same_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
