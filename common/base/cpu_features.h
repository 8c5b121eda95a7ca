/* What this x86 CPU can run (cpuid, with the OS's consent through xgetbv), how many cores this
 * process may use, its clock measured under load, and the theoretical FMA peak those give. The
 * BLAS core choice (compute/cpu/blas_core.c) and the benchmarks' peak read it. */
#ifndef LORAPS_CPU_FEATURES_H
#define LORAPS_CPU_FEATURES_H

typedef enum cpu_vendor { CPU_OTHER, CPU_INTEL, CPU_AMD } cpu_vendor;

typedef struct cpu_features {
    cpu_vendor vendor;
    int family, model; /* display family and model (extended fields folded in) */
    /* usable: the CPU has it and the OS saves the registers it needs */
    int avx, avx2, fma, avx512f, avx512vl, avx512_bf16, amx_bf16;
} cpu_features;

/* This CPU's (all zero on a CPU that is not x86). */
void cpu_features_detect(cpu_features *f);
/* "AVX-512 BF16", "AVX-512", "AVX2 FMA", "AVX", "SSE": the widest vector ISA f has. */
const char *cpu_features_isa(const cpu_features *f);

/* f32 FMA lanes per core and cycle: vector width x FMA units. Two units everywhere but Zen 1 (two
 * 128-bit halves); Zen 4 runs AVX-512 on 256-bit units. An upper bound for Xeons with one
 * AVX-512 unit (some Silver and Bronze parts), which cpuid cannot tell apart. */
int cpu_fma_lanes(const cpu_features *f);

/* One CPU number per physical core this process may run on (its affinity mask), cores ordered
 * by package and core id; returns how many (at most max). */
int cpu_core_list(int *cpus, int max);
/* Physical cores among the CPUs this process may run on (its affinity mask; siblings of one
 * core count once). */
int cpu_physical_cores(void);

/* The clock in GHz with every one of `threads` threads running a chain of dependent integer
 * multiplies (3 cycles each), so the measure includes the all-core turbo held under load. */
double cpu_measure_clock_ghz(int threads);

/* The theoretical f32 FMA peak in GFLOP/s: cores x clock x lanes x 2. */
double cpu_fma_peak_gflops(int cores, double clock_ghz, int lanes);

#endif
