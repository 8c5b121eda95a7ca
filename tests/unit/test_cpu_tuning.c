/* Running at the CPU's speed: which OpenBLAS core a CPU's features select and what start-up does
 * with it (switch, keep, refuse), how N processes split the cores, the FMA lanes behind the
 * theoretical peak, and the features read from this machine's cpuid. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "blas_core.h"
#include "cpu_features.h"
#include "cpu_share.h"

#include <string.h>

/* ---- feature sets -------------------------------------------------------------------------- */

static cpu_features cpu(cpu_vendor v, int family, int model, const char *isa) {
    cpu_features f = {.vendor = v, .family = family, .model = model};
    int level = !strcmp(isa, "sse")          ? 0
                : !strcmp(isa, "avx")        ? 1
                : !strcmp(isa, "avx2")       ? 2
                : !strcmp(isa, "avx512")     ? 3
                : !strcmp(isa, "avx512bf16") ? 4
                                             : -1;
    assert_true(level >= 0);
    f.avx = level >= 1;
    f.avx2 = f.fma = level >= 2;
    f.avx512f = f.avx512vl = level >= 3;
    f.avx512_bf16 = level >= 4;
    return f;
}

#define INTEL(family, model, isa) cpu(CPU_INTEL, family, model, isa)
#define AMD(family, model, isa)   cpu(CPU_AMD, family, model, isa)

static void test_features_select_the_core(void **state) {
    (void)state;
    struct {
        cpu_features f;
        const char *core; /* NULL: OpenBLAS' own choice stands */
    } table[] = {
        {INTEL(6, 0x1a, "sse"), NULL},                 /* Nehalem */
        {INTEL(6, 0x2d, "avx"), "Sandybridge"},        /* Sandy Bridge-EP */
        {INTEL(6, 0x3f, "avx2"), "Haswell"},           /* Haswell-EP */
        {INTEL(6, 0x55, "avx512"), "SkylakeX"},        /* Skylake-SP, Cascade Lake */
        {INTEL(6, 0x6a, "avx512"), "SkylakeX"},        /* Ice Lake-SP */
        {INTEL(6, 0x8f, "avx512bf16"), "Cooperlake"},  /* Sapphire Rapids */
        {INTEL(6, 0xcf, "avx512bf16"), "Cooperlake"},  /* Emerald Rapids: 0.3.21 runs Prescott */
        {INTEL(6, 0xad, "avx512bf16"), "Cooperlake"},  /* Granite Rapids */
        {INTEL(6, 0x97, "avx2"), "Haswell"},           /* Alder Lake (AVX-512 fused off) */
        {AMD(0x17, 0x01, "avx2"), "Zen"},              /* Zen 1 */
        {AMD(0x19, 0x01, "avx2"), "Zen"},              /* Zen 3 */
        {AMD(0x19, 0x11, "avx512bf16"), "Cooperlake"}, /* Zen 4 (Genoa) */
        {AMD(0x1a, 0x02, "avx512bf16"), "Cooperlake"}, /* Zen 5 (Turin) */
        {AMD(0x15, 0x02, "avx"), "Sandybridge"},       /* Piledriver: no AVX2 */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const char *got = blas_core_for(&table[i].f);
        if (!table[i].core)
            assert_null(got);
        else
            assert_string_equal(got, table[i].core);
    }
    /* AVX-512F without VL (Knights Landing) is not what SkylakeX's kernels need */
    cpu_features knl = INTEL(6, 0x57, "avx2");
    knl.avx512f = 1;
    assert_string_equal(blas_core_for(&knl), "Haswell");
    /* AVX2 without FMA: only the AVX kernels */
    cpu_features no_fma = INTEL(6, 0x3f, "avx2");
    no_fma.fma = 0;
    assert_string_equal(blas_core_for(&no_fma), "Sandybridge");
}

/* ---- start-up plans ------------------------------------------------------------------------ */

static blas_core_plan plan_ok(const char *mode, const char *forced, const char *running,
                              cpu_features f) {
    blas_core_plan p;
    lp_err err;
    if (blas_core_plan_for(mode, forced, running, &f, &p, &err) < 0) fail_msg("%s", err.msg);
    return p;
}

static void assert_switch(blas_core_plan p, const char *core) {
    assert_int_equal(p.action, BLAS_CORE_SWITCH);
    assert_string_equal(p.core, core);
    assert_non_null(strstr(p.note, core));
}

static void assert_keep_silently(blas_core_plan p) {
    assert_int_equal(p.action, BLAS_CORE_KEEP);
    assert_string_equal(p.note, "");
}

static void test_auto_switches_from_kernels_below_the_cpu(void **state) {
    (void)state;
    cpu_features emr = INTEL(6, 0xcf, "avx512bf16");
    blas_core_plan p = plan_ok(NULL, NULL, "Prescott", emr);
    assert_switch(p, "Cooperlake");
    assert_non_null(strstr(p.note, "Prescott"));
    assert_non_null(strstr(p.note, "model 207"));
    assert_non_null(strstr(p.note, "LORAPS_BLAS_CORE=keep"));
    assert_switch(plan_ok("auto", NULL, "Prescott", emr), "Cooperlake");
    assert_switch(plan_ok("", NULL, "Prescott", emr), "Cooperlake");
    assert_switch(plan_ok("AUTO", "", "Haswell", emr), "Cooperlake"); /* empty: unset */
    assert_switch(plan_ok(NULL, NULL, "Unknown", INTEL(6, 0x3f, "avx2")), "Haswell");
    assert_switch(plan_ok(NULL, NULL, "Nehalem", AMD(0x19, 1, "avx2")), "Zen");
}

static void test_auto_keeps_matching_kernels(void **state) {
    (void)state;
    assert_keep_silently(plan_ok(NULL, NULL, "Cooperlake", INTEL(6, 0x8f, "avx512bf16")));
    assert_keep_silently(plan_ok(NULL, NULL, "SkylakeX", INTEL(6, 0x55, "avx512")));
    /* SkylakeX's f32 kernels are Cooperlake's: no restart for bf16 GEMMs loraps does not use */
    assert_keep_silently(plan_ok(NULL, NULL, "SkylakeX", INTEL(6, 0x8f, "avx512bf16")));
    assert_keep_silently(plan_ok(NULL, NULL, "Haswell", AMD(0x19, 1, "avx2"))); /* same level */
    assert_keep_silently(plan_ok(NULL, NULL, "Zen", AMD(0x17, 1, "avx2")));
    assert_keep_silently(
        plan_ok(NULL, NULL, "Nehalem", INTEL(6, 0x1a, "sse"))); /* nothing better */
}

static void test_keep_and_a_set_coretype_are_never_overridden(void **state) {
    (void)state;
    cpu_features emr = INTEL(6, 0xcf, "avx512bf16");
    assert_keep_silently(plan_ok("keep", NULL, "Prescott", emr));
    assert_keep_silently(plan_ok("KEEP", "Haswell", "Haswell", emr));
    /* an operator's OPENBLAS_CORETYPE stands, and start-up says what it costs */
    blas_core_plan p = plan_ok(NULL, "Prescott", "Prescott", emr);
    assert_int_equal(p.action, BLAS_CORE_KEEP);
    assert_non_null(strstr(p.note, "OPENBLAS_CORETYPE=Prescott"));
    assert_non_null(strstr(p.note, "Cooperlake"));
    /* ... over a LORAPS_BLAS_CORE name too */
    p = plan_ok("Cooperlake", "Haswell", "Haswell", emr);
    assert_int_equal(p.action, BLAS_CORE_KEEP);
    assert_non_null(strstr(p.note, "not applied"));
    /* a set OPENBLAS_CORETYPE that matches: nothing to say */
    assert_keep_silently(plan_ok(NULL, "Cooperlake", "Cooperlake", emr));
}

static void test_a_named_core(void **state) {
    (void)state;
    cpu_features emr = INTEL(6, 0xcf, "avx512bf16");
    assert_switch(plan_ok("haswell", NULL, "Prescott", emr), "Haswell");     /* any case */
    assert_switch(plan_ok("SkylakeX", NULL, "Cooperlake", emr), "SkylakeX"); /* even down */
    assert_keep_silently(plan_ok("Cooperlake", NULL, "Cooperlake", emr));
    assert_switch(plan_ok("Prescott", NULL, "Cooperlake", emr), "Prescott");
}

static void test_bad_modes_are_refused(void **state) {
    (void)state;
    blas_core_plan p;
    lp_err err;
    cpu_features zen3 = AMD(0x19, 1, "avx2");
    assert_int_equal(blas_core_plan_for("Skylake", NULL, "Zen", &zen3, &p, &err), -1);
    assert_non_null(strstr(err.msg, "LORAPS_BLAS_CORE=Skylake"));
    assert_non_null(strstr(err.msg, "not auto, keep or an OpenBLAS core"));
    /* a core the CPU cannot run would die of an illegal instruction */
    assert_int_equal(blas_core_plan_for("SkylakeX", NULL, "Zen", &zen3, &p, &err), -1);
    assert_non_null(strstr(err.msg, "needs more than this CPU has (AVX2 FMA)"));
    assert_int_equal(
        blas_core_plan_for(
            "Cooperlake", NULL, "SkylakeX",
            &(cpu_features){.avx = 1, .avx2 = 1, .fma = 1, .avx512f = 1, .avx512vl = 1}, &p, &err),
        -1);
}

/* ---- shares of the cores ------------------------------------------------------------------- */

static int cpus_of(const cpu_share *s, int *out) {
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &s->cpus)) out[n++] = cpu;
    return n;
}

static void assert_share(const int *cores, int n_cores, int n_procs, int index, const int *want,
                         int n_want, int shared) {
    cpu_share s;
    lp_err err;
    if (cpu_share_split(cores, n_cores, n_procs, index, &s, &err) < 0) fail_msg("%s", err.msg);
    int got[1024];
    int n = cpus_of(&s, got);
    assert_int_equal(n, n_want);
    assert_memory_equal(got, want, sizeof(int) * (size_t)n_want);
    assert_int_equal(s.threads, n_want);
    assert_int_equal(s.shared, shared);
}

static void test_processes_split_the_cores(void **state) {
    (void)state;
    int sixteen[16];
    for (int i = 0; i < 16; i++) sixteen[i] = i;
    int all[16], first8[8] = {0, 1, 2, 3, 4, 5, 6, 7}, last8[8] = {8, 9, 10, 11, 12, 13, 14, 15};
    memcpy(all, sixteen, sizeof all);
    assert_share(sixteen, 16, 1, 0, all, 16, 0);
    assert_share(sixteen, 16, 2, 0, first8, 8, 0);
    assert_share(sixteen, 16, 2, 1, last8, 8, 0);
    /* 16 over 3: 6, 5, 5, contiguous, every core once */
    int a[6] = {0, 1, 2, 3, 4, 5}, b[5] = {6, 7, 8, 9, 10}, c[5] = {11, 12, 13, 14, 15};
    assert_share(sixteen, 16, 3, 0, a, 6, 0);
    assert_share(sixteen, 16, 3, 1, b, 5, 0);
    assert_share(sixteen, 16, 3, 2, c, 5, 0);
    /* one CPU per core: the siblings 1, 3, 5, 7 are not in the list and stay out */
    int cores[4] = {0, 2, 4, 6}, lo[2] = {0, 2}, hi[2] = {4, 6};
    assert_share(cores, 4, 2, 0, lo, 2, 0);
    assert_share(cores, 4, 2, 1, hi, 2, 0);
    /* more processes than cores: one core each, round robin, marked shared */
    int two[2] = {0, 1}, zero[1] = {0}, one[1] = {1};
    assert_share(two, 2, 3, 0, zero, 1, 1);
    assert_share(two, 2, 3, 1, one, 1, 1);
    assert_share(two, 2, 3, 2, zero, 1, 1);
}

static void test_bad_shares_are_refused(void **state) {
    (void)state;
    int two[2] = {0, 1};
    cpu_share s;
    lp_err err;
    assert_int_equal(cpu_share_split(two, 2, 2, 2, &s, &err), -1);
    assert_non_null(strstr(err.msg, "process 2 of 2"));
    assert_int_equal(cpu_share_split(two, 2, 0, 0, &s, &err), -1);
    assert_int_equal(cpu_share_split(two, 0, 1, 0, &s, &err), -1);
    assert_int_equal(cpu_share_for(1, -1, &s, &err), -1);
}

static void test_share_description(void **state) {
    (void)state;
    int cores[6] = {0, 1, 2, 3, 8, 10};
    cpu_share s;
    lp_err err;
    char buf[128];
    assert_int_equal(cpu_share_split(cores, 6, 1, 0, &s, &err), 0);
    cpu_share_describe(&s, buf, sizeof buf);
    assert_string_equal(buf, "cpus 0-3,8,10 (6 threads)");
    assert_int_equal(cpu_share_split(cores, 6, 7, 6, &s, &err), 0);
    cpu_share_describe(&s, buf, sizeof buf);
    assert_string_equal(buf, "cpus 0 (1 thread, cores shared)");
}

/* ---- the peak ------------------------------------------------------------------------------ */

static void test_fma_lanes(void **state) {
    (void)state;
    cpu_features spr = INTEL(6, 0x8f, "avx512bf16"), skx = INTEL(6, 0x55, "avx512");
    cpu_features hsw = INTEL(6, 0x3f, "avx2"), snb = INTEL(6, 0x2d, "avx");
    cpu_features nhm = INTEL(6, 0x1a, "sse");
    cpu_features zen1 = AMD(0x17, 0x01, "avx2"), zen2 = AMD(0x17, 0x31, "avx2");
    cpu_features zen4 = AMD(0x19, 0x11, "avx512bf16"), zen5 = AMD(0x1a, 0x02, "avx512bf16");
    assert_int_equal(cpu_fma_lanes(&spr), 32); /* 2 x 16 */
    assert_int_equal(cpu_fma_lanes(&skx), 32);
    assert_int_equal(cpu_fma_lanes(&hsw), 16); /* 2 x 8 */
    assert_int_equal(cpu_fma_lanes(&snb), 8);
    assert_int_equal(cpu_fma_lanes(&nhm), 4);
    assert_int_equal(cpu_fma_lanes(&zen1), 8); /* 2 x 128-bit */
    assert_int_equal(cpu_fma_lanes(&zen2), 16);
    assert_int_equal(cpu_fma_lanes(&zen4), 16); /* AVX-512 on 256-bit units */
    assert_int_equal(cpu_fma_lanes(&zen5), 32);
    assert_true(cpu_fma_peak_gflops(16, 2.0, 32) == 2048.0);
}

static void test_this_machine(void **state) {
    (void)state;
    cpu_features f;
    cpu_features_detect(&f);
#if defined(__x86_64__)
    assert_int_not_equal(f.family, 0);
    /* the implications the selection relies on */
    if (f.avx2 || f.fma) assert_true(f.avx);
    if (f.avx512vl) assert_true(f.avx512f);
    if (f.avx512_bf16) assert_true(f.avx512vl);
#ifdef __AVX2__ /* built with -march=native on an AVX2 machine */
    assert_true(f.avx2);
#endif
#ifdef __AVX512BF16__
    assert_true(f.avx512_bf16);
#endif
    double ghz = cpu_measure_clock_ghz(1);
    assert_true(ghz > 0.2 && ghz < 10.0);
#endif
    assert_true(cpu_physical_cores() >= 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_select_the_core),
        cmocka_unit_test(test_auto_switches_from_kernels_below_the_cpu),
        cmocka_unit_test(test_auto_keeps_matching_kernels),
        cmocka_unit_test(test_keep_and_a_set_coretype_are_never_overridden),
        cmocka_unit_test(test_a_named_core),
        cmocka_unit_test(test_bad_modes_are_refused),
        cmocka_unit_test(test_processes_split_the_cores),
        cmocka_unit_test(test_bad_shares_are_refused),
        cmocka_unit_test(test_share_description),
        cmocka_unit_test(test_fma_lanes),
        cmocka_unit_test(test_this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
