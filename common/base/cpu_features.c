#include "cpu_features.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void read_cpuid(cpu_features *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = 0;
    f->vendor = !strcmp(vendor, "GenuineIntel")                                      ? CPU_INTEL
                : !strcmp(vendor, "AuthenticAMD") || !strcmp(vendor, "HygonGenuine") ? CPU_AMD
                                                                                     : CPU_OTHER;
    __get_cpuid(1, &a, &b, &c, &d);
    f->family = (a >> 8) & 0xf;
    f->model = (a >> 4) & 0xf;
    if (f->family == 0xf) f->family += (a >> 20) & 0xff;
    if (f->family == 0x6 || f->family >= 0xf) f->model += ((a >> 16) & 0xf) << 4;
    int osxsave = (c >> 27) & 1;
    uint64_t xcr = osxsave ? xcr0() : 0;
    int ymm_saved = (xcr & 0x6) == 0x6, zmm_saved = ymm_saved && (xcr & 0xe0) == 0xe0;
    int tiles_saved = (xcr & 0x60000) == 0x60000;
    f->avx = ymm_saved && ((c >> 28) & 1);
    f->fma = f->avx && ((c >> 12) & 1);
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned sub_leaves = a;
    f->avx2 = f->avx && ((b >> 5) & 1);
    f->avx512f = zmm_saved && ((b >> 16) & 1);
    f->avx512vl = f->avx512f && ((b >> 31) & 1);
    f->amx_bf16 = tiles_saved && ((d >> 22) & 1) && ((d >> 24) & 1);
    if (sub_leaves < 1) return;
    __cpuid_count(7, 1, a, b, c, d);
    f->avx512_bf16 = f->avx512vl && ((a >> 5) & 1);
}

/* 16 dependent integer multiplies an iteration, 3 cycles each on every x86 core since Core 2 and
 * Zen (adds of an immediate would not do: Golden Cove and later retire them at rename). */
static uint64_t mul_chain(uint64_t iterations) {
    uint64_t x = 3, one = 1;
    for (uint64_t i = 0; i < iterations; i++)
        __asm__ volatile(".rept 16\n\timul %1, %0\n\t.endr" : "+r"(x) : "r"(one));
    return x;
}
#define CYCLES_PER_ITERATION (16 * 3)
#else
static void read_cpuid(cpu_features *f) {
    (void)f;
}
static uint64_t mul_chain(uint64_t iterations) {
    return iterations;
}
#define CYCLES_PER_ITERATION 0
#endif

void cpu_features_detect(cpu_features *f) {
    memset(f, 0, sizeof *f);
    read_cpuid(f);
}

const char *cpu_features_isa(const cpu_features *f) {
    if (f->avx512_bf16) return "AVX-512 BF16";
    if (f->avx512vl) return "AVX-512";
    if (f->avx2 && f->fma) return "AVX2 FMA";
    if (f->avx) return "AVX";
    return "SSE";
}

int cpu_fma_lanes(const cpu_features *f) {
    int amd = f->vendor == CPU_AMD;
    if (f->avx512f) return amd && f->family == 0x19 ? 16 : 32;
    if (f->avx2 && f->fma) return amd && f->family == 0x17 && f->model < 0x30 ? 8 : 16;
    if (f->avx) return 8; /* one 8-wide multiply and one 8-wide add a cycle */
    return 4;
}

/* ---- cores ---------------------------------------------------------------------------------- */

static int read_int(const char *path) {
    FILE *fp = fopen(path, "r");
    int v = -1;
    if (fp) {
        if (fscanf(fp, "%d", &v) != 1) v = -1;
        fclose(fp);
    }
    return v;
}

static int compare_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int cpu_core_list(int *cpus, int max) {
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) != 0) return 0;
    enum { MAX_CORES = 1024 };
    long key[MAX_CORES]; /* package, core id, cpu: sorted, the first cpu of each core is kept */
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < MAX_CORES; cpu++) {
        if (!CPU_ISSET(cpu, &mask)) continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        int core = read_int(path);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id",
                 cpu);
        int package = read_int(path);
        if (core < 0 || package < 0) core = cpu, package = 0; /* no topology: a cpu is a core */
        key[n++] = ((long)package << 40) | ((long)core << 20) | cpu;
    }
    qsort(key, (size_t)n, sizeof *key, compare_long);
    int cores = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && key[i] >> 20 == key[i - 1] >> 20) continue; /* a sibling of the last core */
        if (cores < max) cpus[cores] = (int)(key[i] & 0xfffff);
        cores++;
    }
    return cores < max ? cores : max;
}

int cpu_physical_cores(void) {
    int cpus[1024];
    int n = cpu_core_list(cpus, 1024);
    return n > 0 ? n : 1;
}

/* ---- the clock ------------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct clock_probe {
    const int *go; /* set once every thread exists, so they measure together */
    double ghz;
} clock_probe;

static void *probe_clock(void *arg) {
    clock_probe *p = arg;
    const uint64_t iterations = 1 << 18; /* ~4 ms at 3 GHz */
    while (!__atomic_load_n(p->go, __ATOMIC_ACQUIRE)) sched_yield();
    mul_chain(iterations);               /* wakes the core up to its load clock */
    for (int rep = 0; rep < 16; rep++) { /* the best: other processes may take slices */
        double t0 = now_s();
        mul_chain(iterations);
        double ghz = (double)iterations * CYCLES_PER_ITERATION / (now_s() - t0) / 1e9;
        if (ghz > p->ghz) p->ghz = ghz;
    }
    return NULL;
}

double cpu_measure_clock_ghz(int threads) {
    enum { MAX_THREADS = 512 };
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_t tid[MAX_THREADS];
    clock_probe probe[MAX_THREADS];
    int go = 0, started = 1; /* this thread is probe 0 */
    for (int i = 0; i < threads; i++) probe[i] = (clock_probe){&go, 0};
    while (started < threads &&
           pthread_create(&tid[started], NULL, probe_clock, &probe[started]) == 0)
        started++;
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    probe_clock(&probe[0]);
    double sum = probe[0].ghz;
    for (int i = 1; i < started; i++) {
        pthread_join(tid[i], NULL);
        sum += probe[i].ghz;
    }
    return sum / started;
}

double cpu_fma_peak_gflops(int cores, double clock_ghz, int lanes) {
    return cores * clock_ghz * lanes * 2.0;
}
