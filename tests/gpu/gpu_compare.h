/* What the GPU tests share: a CPU and a CUDA context side by side, buffers on both filled with the
 * same bf16-representable random values, and the comparison of a CUDA result with the CPU's (the
 * f32 reference) under a stated tolerance. Every CUDA output buffer is poisoned with NaN before
 * the op runs, so an element the op forgot to write fails the test. Included by one test file
 * each. */
#ifndef LORAPS_TEST_GPU_COMPARE_H
#define LORAPS_TEST_GPU_COMPARE_H

#include "dtype.h"
#include "ops.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pair {
    ops_ctx *cpu, *gpu;
    device *dev;
    rng r;
} pair;

static pair P; /* one pair of contexts for the whole test program */

/* Exit status ctest reports as "skipped" (SKIP_RETURN_CODE): these tests need a GPU, and a
 * machine without one says so rather than failing. */
#define NO_GPU_EXIT 77

static void pair_open(void) {
    lp_err err;
    if (device_open(&P.dev, "cuda", &err) < 0) {
        fprintf(stderr, "SKIPPED: this test needs a GPU: %s\n", err.msg);
        exit(NO_GPU_EXIT);
    }
    ops_limits lim = {.max_rows = 8192,
                      .max_T = 512,
                      .max_heads = 32,
                      .head_dim = 128,
                      .max_kv = 0,
                      .vocab = 4096,
                      .max_matrix = 0};
    if (ops_ctx_new(&P.cpu, device_cpu(), &lim, &err) < 0 ||
        ops_ctx_new(&P.gpu, P.dev, &lim, &err) < 0)
        fail_msg("contexts: %s", err.msg);
    rng_seed(&P.r, 20261203);
}

/* A tensor on both sides: the host copy (f32, bf16-representable) is the CPU's buffer. */
typedef struct both {
    float *cpu;
    void *gpu; /* bf16 activations or f32, by `f32` */
    size_t n;
    int f32;
} both;

static float bf16_round(float x) {
    return bf16_to_f32(f32_to_bf16(x));
}

static both make(size_t n, float std, int f32) {
    both b = {.cpu = calloc(n ? n : 1, sizeof(float)), .n = n, .f32 = f32};
    for (size_t i = 0; i < n; i++) b.cpu[i] = bf16_round(std * rng_normal(&P.r));
    lp_err err;
    b.gpu = device_alloc(P.dev, n * (f32 ? 4 : 2) + 16, &err);
    if (!b.gpu) fail_msg("%s", err.msg);
    if (f32)
        ops_upload(P.gpu, b.gpu, b.cpu, n * 4);
    else
        ops_act_from_f32(P.gpu, (act *)b.gpu, b.cpu, n);
    return b;
}

static both act_buf(size_t n, float std) {
    return make(n, std, 0);
}

static both f32_buf(size_t n, float std) {
    return make(n, std, 1);
}

/* The GPU copy filled with NaN (an output the op must write in full). */
static void poison(both *b) {
    float *nan = malloc((b->n ? b->n : 1) * sizeof(float));
    for (size_t i = 0; i < b->n; i++) nan[i] = NAN;
    if (b->f32)
        ops_upload(P.gpu, b->gpu, nan, b->n * 4);
    else
        ops_act_from_f32(P.gpu, (act *)b->gpu, nan, b->n);
    ops_sync(P.gpu, NULL);
    free(nan);
}

static void drop(both *b) {
    free(b->cpu);
    device_free(P.dev, b->gpu);
}

/* A frozen weight: f32 on the CPU, as model_place puts it on the GPU (bf16 unless f32). */
typedef struct wboth {
    weight cpu, gpu;
    both data;
} wboth;

static wboth make_weight(size_t n, float std, int f32) {
    wboth w;
    w.data = make(n, std, f32);
    w.cpu = (weight){.data = w.data.cpu, .dtype = DT_F32, .numel = n};
    w.gpu = (weight){.data = w.data.gpu, .dtype = f32 ? DT_F32 : DT_BF16, .numel = n};
    return w;
}

/* The GPU result on the host, after waiting for the device (and failing on its errors). */
static float *fetch(const both *b) {
    lp_err err;
    float *h = malloc((b->n ? b->n : 1) * sizeof(float));
    if (b->f32)
        ops_download(P.gpu, h, b->gpu, b->n * 4);
    else
        ops_act_to_f32(P.gpu, h, (const act *)b->gpu, b->n);
    if (ops_sync(P.gpu, &err) < 0) fail_msg("%s", err.msg);
    return h;
}

/* ||gpu - cpu|| / ||cpu|| over the tensor must be <= tol, with no NaN (an unwritten element) and
 * no element off by more than 8 * tol * max|cpu|. Prints the figures either way. */
static double compare(const char *what, const both *b, double tol) {
    float *g = fetch(b);
    double num = 0, den = 0, maxref = 0, worst = 0;
    size_t at = 0, bad = 0;
    for (size_t i = 0; i < b->n; i++) {
        double d = (double)g[i] - (double)b->cpu[i];
        if (!isfinite(g[i])) bad++;
        num += d * d;
        den += (double)b->cpu[i] * b->cpu[i];
        maxref = fmax(maxref, fabs(b->cpu[i]));
        if (fabs(d) > worst) worst = fabs(d), at = i;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  %-44s n=%-8zu rel %.2e (tol %.0e)  max|diff| %.3g at %zu (gpu %.6g cpu %.6g)%s\n",
           what, b->n, rel, tol, worst, at, b->n ? (double)g[at] : 0.0,
           b->n ? (double)b->cpu[at] : 0.0, bad ? "  NOT WRITTEN" : "");
    fflush(stdout);
    free(g);
    if (bad) fail_msg("%s: %zu elements are NaN (not written, or overflowed)", what, bad);
    if (!(rel <= tol)) fail_msg("%s: relative error %.3e over the tolerance %.0e", what, rel, tol);
    if (!(worst <= 8 * tol * maxref + 1e-30))
        fail_msg("%s: element %zu off by %.3g (max|ref| %.3g)", what, at, worst, maxref);
    return rel;
}

#endif
