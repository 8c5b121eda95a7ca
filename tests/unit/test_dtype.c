/* dtype: names and sizes, and the f16/bf16 conversions: round to nearest even, inf, NaN,
 * subnormals, exact round trips. Checked against midpoints of every adjacent pair of
 * representable values, so each rounding decision is tested at its boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dtype.h"

#include <float.h>
#include <math.h>
#include <string.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int f16_is_nan(uint16_t h) {
    return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

static int bf16_is_nan(uint16_t h) {
    return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0;
}

/* f16 value computed independently: sign * 2^(e-15) * (1 + m/1024), or m * 2^-24. */
static double f16_reference(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static void test_names_and_sizes(void **state) {
    (void)state;
    const size_t sizes[DT_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 8, 4, 2, 1, 1};
    for (int i = 0; i < DT_COUNT; i++) {
        dtype t;
        assert_int_equal(dtype_from_name(dtype_name((dtype)i), &t), 0);
        assert_int_equal(t, i);
        assert_int_equal(dtype_size((dtype)i), sizes[i]);
    }
    dtype t;
    assert_int_equal(dtype_from_name("BF16", &t), 0);
    assert_int_equal(t, DT_BF16);
    assert_int_equal(dtype_from_name("bf16", &t), -1);
    assert_int_equal(dtype_from_name("", &t), -1);
    assert_int_equal(dtype_from_name("F8_E4M3", &t), -1);
    assert_string_equal(dtype_name(DT_COUNT), "?");
    assert_int_equal(dtype_size(DT_COUNT), 0);
}

static void test_f16_decodes_every_value(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = f16_to_f32((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00) {
            if (h & 0x3ff) {
                assert_true(isnan(f));
            } else {
                assert_true(isinf(f));
                assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
            }
            continue;
        }
        if ((double)f != f16_reference((uint16_t)h)) fail_msg("f16 %04x decodes to %g", h, f);
        assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0); /* -0 stays -0 */
        assert_int_equal(f32_to_f16(f), h);                   /* exact round trip */
    }
    assert_true(f16_to_f32(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
    assert_true(f16_to_f32(0x03ff) == ldexpf(1023, -24));
    assert_true(f16_to_f32(0x0400) == ldexpf(1, -14)); /* smallest normal */
    assert_true(f16_to_f32(0x7bff) == 65504.0f);
    assert_true(f16_to_f32(0x3c00) == 1.0f);
    assert_true(f16_to_f32(0xc000) == -2.0f);
}

/* Rounds x at the midpoint m between adjacent f16 values lo < hi (|lo| < |hi|) and just
 * beside it. */
static void check_f16_midpoint(uint16_t lo, uint16_t hi, float m) {
    uint16_t even = (lo & 1) ? hi : lo;
    float below = nextafterf(m, 0), above = nextafterf(m, m > 0 ? INFINITY : -INFINITY);
    if (f32_to_f16(m) != even) fail_msg("f16 tie %a -> %04x, want %04x", m, f32_to_f16(m), even);
    if (f32_to_f16(below) != lo)
        fail_msg("f16 %a -> %04x, want %04x", below, f32_to_f16(below), lo);
    if (f32_to_f16(above) != hi)
        fail_msg("f16 %a -> %04x, want %04x", above, f32_to_f16(above), hi);
}

static void test_f16_rounds_to_nearest_even(void **state) {
    (void)state;
    for (uint32_t sign = 0; sign <= 0x8000u; sign += 0x8000u) {
        /* Every adjacent pair of finite values, subnormals included; the midpoint of two
         * f16 values needs 12 significant bits, so it is exact in f32. */
        for (uint16_t h = 0; h < 0x7bff; h++) {
            uint16_t lo = (uint16_t)(sign | h), hi = (uint16_t)(sign | (h + 1u));
            float m = (float)((f16_reference(lo) + f16_reference(hi)) / 2);
            check_f16_midpoint(lo, hi, m);
        }
        /* Past the largest finite value: 65520 is the tie with 65536 (= inf), which is even. */
        float s = sign ? -1.0f : 1.0f;
        check_f16_midpoint((uint16_t)(sign | 0x7bff), (uint16_t)(sign | 0x7c00), s * 65520.0f);
    }
    assert_int_equal(f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);     /* tie, to even */
    assert_int_equal(f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie, to even (up) */
}

static void test_f16_specials(void **state) {
    (void)state;
    assert_int_equal(f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(f32_to_f16(-FLT_MAX), 0xfc00);
    assert_int_equal(f32_to_f16(0.0f), 0x0000);
    assert_int_equal(f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(f32_to_f16(FLT_TRUE_MIN), 0x0000); /* f32 subnormals underflow to zero */
    assert_int_equal(f32_to_f16(-FLT_MIN), 0x8000);
    assert_int_equal(f32_to_f16(ldexpf(1, -25)), 0x0000); /* tie between 0 and 2^-24 */
    assert_int_equal(f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(f32_to_f16(ldexpf(3, -25)), 0x0002); /* tie between 1 and 2 (x 2^-24) */
    assert_true(f16_is_nan(f32_to_f16(NAN)));
    assert_true(f16_is_nan(f32_to_f16(-NAN)));
    assert_true(f16_is_nan(f32_to_f16(from_bits(0x7f800001u)))); /* payload only in low bits */
    assert_true(f16_is_nan(f32_to_f16(from_bits(0xffffffffu))));
    assert_true(isnan(f16_to_f32(0x7e00)));
    assert_true(isnan(f16_to_f32(0x7c01)));
}

static void test_bf16_round_trip_and_decode(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = bf16_to_f32((uint16_t)h);
        assert_int_equal(bits(f), h << 16); /* bf16 is the top half of an f32 */
        if (bf16_is_nan((uint16_t)h)) {
            assert_true(isnan(f));
            assert_true(bf16_is_nan(f32_to_bf16(f)));
        } else {
            assert_int_equal(f32_to_bf16(f), h);
        }
    }
}

static void test_bf16_rounds_to_nearest_even(void **state) {
    (void)state;
    /* For every finite bf16 value h: the f32 values halfway to h+1 and just beside it. The
     * pair spans subnormals, the normal/subnormal boundary and the largest finite value. */
    for (uint32_t sign = 0; sign <= 0x8000u; sign += 0x8000u) {
        for (uint32_t h = 0; h < 0x7f80; h++) {
            uint32_t lo = sign | h, hi = lo + 1, mid = (lo << 16) | 0x8000u;
            uint16_t even = (lo & 1) ? (uint16_t)hi : (uint16_t)lo;
            if (f32_to_bf16(from_bits(mid)) != even) fail_msg("bf16 tie %08x", mid);
            if (f32_to_bf16(from_bits(mid - 1)) != lo) fail_msg("bf16 below tie %08x", mid);
            if (f32_to_bf16(from_bits(mid + 1)) != hi) fail_msg("bf16 above tie %08x", mid);
        }
    }
    assert_int_equal(f32_to_bf16(FLT_MAX), 0x7f80); /* rounds up to inf */
    assert_int_equal(f32_to_bf16(-FLT_MAX), 0xff80);
    assert_int_equal(f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    /* NaN stays NaN even when its payload sits only in the bits rounding drops. */
    assert_true(bf16_is_nan(f32_to_bf16(from_bits(0x7f800001u))));
    assert_true(bf16_is_nan(f32_to_bf16(from_bits(0xff80ffffu))));
    assert_true(bf16_is_nan(f32_to_bf16(NAN)));
    assert_int_equal(f32_to_bf16(from_bits(0xffc00000u)) & 0x8000, 0x8000); /* sign kept */
}

static void test_array_conversions(void **state) {
    (void)state;
    const float src[5] = {1.0f, -0.5f, 3.140625f, 65504.0f, -0.0f};
    uint16_t half[5], brain[5];
    float back[5];
    assert_int_equal(dtype_from_f32(src, DT_F16, half, 5), 0);
    assert_int_equal(dtype_from_f32(src, DT_BF16, brain, 5), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(half[i], f32_to_f16(src[i]));
        assert_int_equal(brain[i], f32_to_bf16(src[i]));
    }
    assert_int_equal(dtype_to_f32(half, DT_F16, back, 5), 0);
    assert_memory_equal(back, src, sizeof src); /* all exact in f16 */
    assert_int_equal(dtype_to_f32(brain, DT_BF16, back, 5), 0);
    for (int i = 0; i < 5; i++) assert_true(back[i] == bf16_to_f32(brain[i]));
    float copy[5];
    assert_int_equal(dtype_from_f32(src, DT_F32, copy, 5), 0);
    assert_memory_equal(copy, src, sizeof src);
    assert_int_equal(dtype_to_f32(copy, DT_F32, back, 5), 0);
    assert_memory_equal(back, src, sizeof src);

    const double d[3] = {0.1, -1e40, 1e-50};
    assert_int_equal(dtype_to_f32(d, DT_F64, back, 3), 0);
    assert_true(back[0] == 0.1f);
    assert_true(isinf(back[1]) && back[1] < 0);
    assert_true(back[2] == 0.0f);

    int32_t ints[2] = {1, 2};
    assert_int_equal(dtype_to_f32(ints, DT_I32, back, 2), -1);
    assert_int_equal(dtype_from_f32(src, DT_F64, back, 2), -1);
    assert_int_equal(dtype_from_f32(src, DT_U8, back, 2), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_sizes),
        cmocka_unit_test(test_f16_decodes_every_value),
        cmocka_unit_test(test_f16_rounds_to_nearest_even),
        cmocka_unit_test(test_f16_specials),
        cmocka_unit_test(test_bf16_round_trip_and_decode),
        cmocka_unit_test(test_bf16_rounds_to_nearest_even),
        cmocka_unit_test(test_array_conversions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
