/* Shared by the benchmarks: a monotonic clock, the machine's sgemm peak and its theoretical FMA
 * peak, measured in the same run so every benchmark can print ratios rather than raw numbers,
 * and the start-up every main does (OpenBLAS' core, the share of the cores). */
#ifndef LORAPS_BENCH_UTIL_H
#define LORAPS_BENCH_UTIL_H

double bench_now(void); /* seconds, monotonic */
/* CPU seconds of this process (user + system): for single-threaded work timed on a machine
 * shared with other jobs, where wall time measures the neighbours as much as the code. */
double bench_cpu_now(void);
/* The best cblas_sgemm rate in GFLOP/s over shapes {M, N, K}, each timed a few times. */
double bench_sgemm_peak(const int (*shapes)[3], int n_shapes);

/* First thing in a benchmark's main: OpenBLAS' core (blas_core.h; may restart the process).
 * Exits 2 on a bad LORAPS_BLAS_CORE. */
void bench_start(const char *prog, char **argv);
/* --share I/N: this process takes share I of N of the cores (cpu_share.h), before any thread
 * starts. Exits 2 on a bad spec. */
void bench_share(const char *prog, const char *spec);
/* --gemm f32|bf16: the CPU's GEMM precision (LORAPS_CPU_GEMM), before the model loads. */
void bench_gemm(const char *prog, const char *mode);

typedef struct bench_cpu {
    int cores;        /* physical cores the threads run on */
    double clock_ghz; /* measured now, every core busy */
    int lanes;        /* f32 FMA lanes per core and cycle */
    double fma_peak;  /* cores x clock x lanes x 2, GFLOP/s */
} bench_cpu;

/* The theoretical FMA peak of `threads` threads (at most one per physical core). */
void bench_cpu_peak(bench_cpu *c, int threads);
/* The lines every benchmark prints about the CPU: OpenBLAS' core and the GEMM precision, the FMA
 * peak and `achieved` GFLOP/s as a ratio of it. */
void bench_print_cpu(const bench_cpu *c, double achieved_gflops);

#endif
