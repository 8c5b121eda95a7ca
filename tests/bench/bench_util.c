#include "bench_util.h"

#include "blas_core.h"
#include "cpu_features.h"
#include "cpu_gemm.h"
#include "cpu_share.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double bench_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double bench_sgemm_peak(const int (*shapes)[3], int n_shapes) {
    double best = 0;
    for (int s = 0; s < n_shapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *a = calloc((size_t)M * K, 4), *b = calloc((size_t)K * N, 4),
              *c = calloc((size_t)M * N, 4);
        for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
        for (int rep = 0; rep < 4; rep++) { /* the first repetition warms up */
            double t0 = bench_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f,
                        c, N);
            double g = 2.0 * M * N * K / (bench_now() - t0) / 1e9;
            if (rep > 0 && g > best) best = g;
        }
        free(a);
        free(b);
        free(c);
    }
    return best;
}

void bench_start(const char *prog, char **argv) {
    if (blas_core_setup(prog, argv) < 0) exit(2);
}

void bench_share(const char *prog, const char *spec) {
    int index, n;
    char tail;
    lp_err err;
    cpu_share share;
    if (sscanf(spec, "%d/%d%c", &index, &n, &tail) != 2) {
        fprintf(stderr, "%s: error: --share %s: expected I/N (share I of N, from 0)\n", prog, spec);
        exit(2);
    }
    if (cpu_share_for(n, index, &share, &err) < 0 || cpu_share_apply(&share, &err) < 0) {
        fprintf(stderr, "%s: error: --share %s: %s\n", prog, spec, err.msg);
        exit(2);
    }
    char desc[256];
    cpu_share_describe(&share, desc, sizeof desc);
    fprintf(stderr, "%s: share %d of %d: %s\n", prog, index, n, desc);
}

void bench_gemm(const char *prog, const char *mode) {
    if (strcmp(mode, "f32") && strcmp(mode, "bf16")) {
        fprintf(stderr, "%s: error: --gemm must be f32 or bf16\n", prog);
        exit(2);
    }
    setenv("LORAPS_CPU_GEMM", mode, 1);
}

void bench_cpu_peak(bench_cpu *c, int threads) {
    cpu_features f;
    cpu_features_detect(&f);
    int cores = cpu_physical_cores();
    c->cores = threads < cores ? threads : cores;
    c->clock_ghz = cpu_measure_clock_ghz(c->cores);
    c->lanes = cpu_fma_lanes(&f);
    c->fma_peak = cpu_fma_peak_gflops(c->cores, c->clock_ghz, c->lanes);
}

void bench_print_cpu(const bench_cpu *c, double achieved_gflops) {
    cpu_features f;
    cpu_features_detect(&f);
    cpu_gemm_mode mode;
    lp_err err;
    char gemm[128];
    if (cpu_gemm_mode_from_env(&mode, &err) < 0) mode = CPU_GEMM_F32;
    cpu_gemm_describe(mode, gemm, sizeof gemm);
    printf("  OpenBLAS core    %s (CPU: %s, family %d, model %d)\n", blas_core_name(),
           cpu_features_isa(&f), f.family, f.model);
    printf("  GEMMs            %s\n", gemm);
    printf("  FMA peak         %.1f GFLOP/s (%d cores x %.2f GHz x %d lanes x 2)\n", c->fma_peak,
           c->cores, c->clock_ghz, c->lanes);
    printf("  FMA ratio        %.2f of FMA peak\n", achieved_gflops / c->fma_peak);
}
