/* OpenBLAS' core: the choice (a table of cores and the ISA each needs) and the restart. */
#include "blas_core.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Set in a process this file restarted: the core it ran before, so the new one checks the switch
 * took and says nothing more. Removed at once, so children start afresh. */
#define SWITCHED_FROM "LORAPS_BLAS_CORE_SWITCHED_FROM"

/* What a core needs, from least to most. */
typedef enum isa_level { ISA_SSE, ISA_AVX, ISA_AVX2, ISA_AVX512, ISA_AVX512_BF16 } isa_level;

/* The x86-64 cores OpenBLAS 0.3.21's dynamic build has (openblas_get_corename's names). */
static const struct {
    const char *name;
    isa_level needs;
} CORES[] = {
    {"Prescott", ISA_SSE},    {"Core2", ISA_SSE},
    {"Penryn", ISA_SSE},      {"Dunnington", ISA_SSE},
    {"Nehalem", ISA_SSE},     {"Atom", ISA_SSE},
    {"Opteron", ISA_SSE},     {"Opteron_SSE3", ISA_SSE},
    {"Barcelona", ISA_SSE},   {"Bobcat", ISA_SSE},
    {"Nano", ISA_SSE},        {"Sandybridge", ISA_AVX},
    {"Bulldozer", ISA_AVX},   {"Piledriver", ISA_AVX},
    {"Steamroller", ISA_AVX}, {"Excavator", ISA_AVX},
    {"Haswell", ISA_AVX2},    {"Zen", ISA_AVX2},
    {"SkylakeX", ISA_AVX512}, {"Cooperlake", ISA_AVX512_BF16},
};
#define N_CORES ((int)(sizeof CORES / sizeof CORES[0]))

static int core_index(const char *name) {
    for (int i = 0; name && i < N_CORES; i++)
        if (!strcasecmp(name, CORES[i].name)) return i;
    return -1;
}

/* An unknown name ranks lowest: it never stops a switch to a core the CPU runs. */
static int core_level(const char *name) {
    int i = core_index(name);
    return i < 0 ? -1 : (int)CORES[i].needs;
}

static isa_level cpu_level(const cpu_features *f) {
    if (f->avx512_bf16) return ISA_AVX512_BF16;
    if (f->avx512vl) return ISA_AVX512;
    if (f->avx2 && f->fma) return ISA_AVX2;
    if (f->avx) return ISA_AVX;
    return ISA_SSE;
}

const char *blas_core_for(const cpu_features *f) {
    switch (cpu_level(f)) {
    case ISA_AVX512_BF16:
        return "Cooperlake";
    case ISA_AVX512:
        return "SkylakeX";
    case ISA_AVX2:
        return f->vendor == CPU_AMD ? "Zen" : "Haswell";
    case ISA_AVX:
        return "Sandybridge";
    default:
        return NULL;
    }
}

static int plan_auto(const char *running, const cpu_features *f, blas_core_plan *plan) {
    const char *best = blas_core_for(f);
    if (!best) return 0;
    /* Cooperlake adds bf16 GEMMs to SkylakeX's f32 kernels (measured equal in f32), which
     * loraps does not call through OpenBLAS: a restart from SkylakeX would buy nothing */
    int wanted = core_level(best) > ISA_AVX512 ? ISA_AVX512 : core_level(best);
    if (core_level(running) >= wanted) return 0;
    plan->action = BLAS_CORE_SWITCH;
    plan->core = best;
    snprintf(plan->note, sizeof plan->note,
             "OpenBLAS chose its %s kernels on a CPU with %s (family %d, model %d): restarting "
             "with OPENBLAS_CORETYPE=%s (LORAPS_BLAS_CORE=keep keeps them)",
             running, cpu_features_isa(f), f->family, f->model, best);
    return 0;
}

static int plan_named(const char *mode, const char *running, const cpu_features *f,
                      blas_core_plan *plan, lp_err *err) {
    int i = core_index(mode);
    if (CORES[i].needs > cpu_level(f))
        return lp_fail(err, "LORAPS_BLAS_CORE=%s: that core needs more than this CPU has (%s)",
                       mode, cpu_features_isa(f));
    if (core_index(running) == i) return 0;
    plan->action = BLAS_CORE_SWITCH;
    plan->core = CORES[i].name;
    snprintf(plan->note, sizeof plan->note,
             "OpenBLAS chose its %s kernels; LORAPS_BLAS_CORE asks for %s: restarting with "
             "OPENBLAS_CORETYPE=%s",
             running, CORES[i].name, CORES[i].name);
    return 0;
}

int blas_core_plan_for(const char *mode, const char *forced, const char *running,
                       const cpu_features *f, blas_core_plan *plan, lp_err *err) {
    memset(plan, 0, sizeof *plan);
    plan->action = BLAS_CORE_KEEP;
    if (!mode || !*mode) mode = "auto";
    int is_auto = !strcasecmp(mode, "auto"), keep = !strcasecmp(mode, "keep");
    if (!is_auto && !keep && core_index(mode) < 0)
        return lp_fail(err,
                       "LORAPS_BLAS_CORE=%s: not auto, keep or an OpenBLAS core (Cooperlake, "
                       "SkylakeX, Haswell, Zen, Sandybridge, Prescott...)",
                       mode);
    if (keep) return 0;
    if (forced && *forced) {
        const char *best = blas_core_for(f);
        if (!is_auto && strcasecmp(mode, forced))
            snprintf(plan->note, sizeof plan->note,
                     "OPENBLAS_CORETYPE=%s is set and kept: LORAPS_BLAS_CORE=%s is not applied",
                     forced, mode);
        else if (is_auto && best && core_level(running) < core_level(best))
            snprintf(plan->note, sizeof plan->note,
                     "OPENBLAS_CORETYPE=%s is set and kept: OpenBLAS runs its %s kernels where "
                     "this CPU (%s) could run %s",
                     forced, running, cpu_features_isa(f), best);
        return 0;
    }
    return is_auto ? plan_auto(running, f, plan) : plan_named(mode, running, f, plan, err);
}

const char *blas_core_name(void) {
    return openblas_get_corename();
}

/* In the restarted process: whether OpenBLAS took the core asked for. */
static void check_switch(const char *prog, const char *was) {
    const char *asked = getenv("OPENBLAS_CORETYPE"), *running = blas_core_name();
    if (asked && strcasecmp(asked, running))
        fprintf(stderr, "%s: OpenBLAS did not take OPENBLAS_CORETYPE=%s: it runs %s (was %s)\n",
                prog, asked, running, was);
    unsetenv(SWITCHED_FROM);
}

int blas_core_setup(const char *prog, char **argv) {
    const char *was = getenv(SWITCHED_FROM);
    if (was) {
        check_switch(prog, was);
        return 0;
    }
    cpu_features f;
    cpu_features_detect(&f);
    const char *running = blas_core_name();
    blas_core_plan plan;
    lp_err err;
    if (blas_core_plan_for(getenv("LORAPS_BLAS_CORE"), getenv("OPENBLAS_CORETYPE"), running, &f,
                           &plan, &err) < 0) {
        fprintf(stderr, "%s: error: %s\n", prog, err.msg);
        return -1;
    }
    if (plan.note[0]) fprintf(stderr, "%s: %s\n", prog, plan.note);
    if (plan.action != BLAS_CORE_SWITCH) return 0;
    setenv("OPENBLAS_CORETYPE", plan.core, 1);
    setenv(SWITCHED_FROM, running, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "%s: could not restart with OPENBLAS_CORETYPE=%s (%s): it keeps %s\n", prog,
            plan.core, strerror(errno), running);
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(SWITCHED_FROM);
    return 0;
}
