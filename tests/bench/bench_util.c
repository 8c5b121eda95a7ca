#include "bench_util.h"

#include <cblas.h>
#include <stdlib.h>
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
