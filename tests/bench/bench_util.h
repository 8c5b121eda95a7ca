/* Shared by the benchmarks: a monotonic clock and the machine's sgemm peak, measured in the same
 * run so every benchmark can print ratios rather than raw numbers. */
#ifndef LORAPS_BENCH_UTIL_H
#define LORAPS_BENCH_UTIL_H

double bench_now(void); /* seconds, monotonic */
/* CPU seconds of this process (user + system): for single-threaded work timed on a machine
 * shared with other jobs, where wall time measures the neighbours as much as the code. */
double bench_cpu_now(void);
/* The best cblas_sgemm rate in GFLOP/s over shapes {M, N, K}, each timed a few times. */
double bench_sgemm_peak(const int (*shapes)[3], int n_shapes);

#endif
