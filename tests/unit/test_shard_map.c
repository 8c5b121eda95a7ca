/* shard_map: balanced bin-packing of tensors by bytes, deterministic, explicit placement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "shard_map.h"

#include <stdlib.h>

static void test_gpt2_like_adapter_balances(void **state) {
    (void)state;
    /* 12 layers of c_attn (A [8,768], B [2304,8]) and c_proj (A [8,768], B [768,8]) */
    size_t bytes[48];
    for (int l = 0; l < 12; l++) {
        bytes[4 * l + 0] = 8 * 768 * 4;
        bytes[4 * l + 1] = 2304 * 8 * 4;
        bytes[4 * l + 2] = 8 * 768 * 4;
        bytes[4 * l + 3] = 768 * 8 * 4;
    }
    for (int S = 1; S <= 8; S++) {
        shard_map m;
        lp_err err;
        assert_int_equal(shard_map_build(&m, bytes, 48, S, &err), 0);
        size_t total = 0, sum = 0;
        for (int i = 0; i < 48; i++) total += bytes[i];
        for (int s = 0; s < S; s++) sum += m.load[s];
        assert_int_equal(sum, total);
        /* LPT's bound: no shard exceeds the mean by more than the largest tensor */
        for (int s = 0; s < S; s++) assert_true(m.load[s] <= total / S + 2304 * 8 * 4);
        assert_true(shard_map_imbalance(&m) < 1.15);
        /* every tensor on exactly one shard, and the lists cover all */
        uint32_t out[48];
        int n = 0;
        for (int s = 0; s < S; s++) n += shard_map_tensors(&m, s, out);
        assert_int_equal(n, 48);
        /* deterministic: the same input gives the same map */
        shard_map m2;
        assert_int_equal(shard_map_build(&m2, bytes, 48, S, &err), 0);
        assert_memory_equal(m.shard_of, m2.shard_of, 48 * sizeof *m.shard_of);
        shard_map_free(&m);
        shard_map_free(&m2);
    }
}

static void test_more_shards_than_tensors(void **state) {
    (void)state;
    size_t bytes[2] = {100, 50};
    shard_map m;
    lp_err err;
    assert_int_equal(shard_map_build(&m, bytes, 2, 4, &err), 0);
    assert_int_equal(m.shard_of[0], 0);
    assert_int_equal(m.shard_of[1], 1);
    uint32_t out[2];
    assert_int_equal(shard_map_tensors(&m, 3, out), 0);
    shard_map_free(&m);
    assert_int_equal(shard_map_build(&m, bytes, 2, 0, &err), -1);
}

static void test_explicit_placement(void **state) {
    (void)state;
    uint32_t good[3] = {1, 0, 1}, bad[3] = {0, 2, 0};
    size_t bytes[3] = {10, 20, 30};
    shard_map m;
    lp_err err;
    assert_int_equal(shard_map_from_placement(&m, good, 3, 2, bytes, &err), 0);
    assert_int_equal(m.load[0], 20);
    assert_int_equal(m.load[1], 40);
    uint32_t out[3];
    assert_int_equal(shard_map_tensors(&m, 1, out), 2);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 2);
    shard_map_free(&m);
    assert_int_equal(shard_map_from_placement(&m, bad, 3, 2, bytes, &err), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_like_adapter_balances),
        cmocka_unit_test(test_more_shards_than_tensors),
        cmocka_unit_test(test_explicit_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
