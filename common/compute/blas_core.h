/* Which OpenBLAS kernels ("core") the process runs. Debian 12's OpenBLAS 0.3.21 does not know
 * every current CPU: on an Intel family 6 model it has no entry for (Emerald Rapids, Granite
 * Rapids...) it falls through to its Prescott (SSE3) kernels, a quarter of the machine's speed.
 * It reads OPENBLAS_CORETYPE once, when it loads, so a process that runs the wrong kernels
 * re-executes itself with the variable set. LORAPS_BLAS_CORE controls this: auto (the default:
 * switch when OpenBLAS chose kernels below what the CPU can run), keep (never switch), or a core
 * name. An OPENBLAS_CORETYPE already set is never overridden: operators set it where a kernel is
 * known to misbehave on a processor. */
#ifndef LORAPS_BLAS_CORE_H
#define LORAPS_BLAS_CORE_H

#include "cpu_features.h"
#include "error.h"

/* The best of OpenBLAS' cores that f can run: "Cooperlake" (AVX-512 BF16), "SkylakeX"
 * (AVX-512), "Haswell" or, on AMD, "Zen" (AVX2 + FMA), "Sandybridge" (AVX); NULL where only SSE
 * cores fit (OpenBLAS' own choice stands). */
const char *blas_core_for(const cpu_features *f);

typedef enum blas_core_action { BLAS_CORE_KEEP, BLAS_CORE_SWITCH } blas_core_action;

typedef struct blas_core_plan {
    blas_core_action action;
    const char *core; /* BLAS_CORE_SWITCH: the OPENBLAS_CORETYPE to set */
    char note[320];   /* the one line to print at start-up ("" for none) */
} blas_core_plan;

/* The plan for a process whose OpenBLAS runs core `running` on CPU f, given LORAPS_BLAS_CORE
 * (`mode`, NULL: auto) and OPENBLAS_CORETYPE (`forced`, NULL: unset). A mode that is not auto,
 * keep or a core name, or names a core f cannot run, is an error. */
int blas_core_plan_for(const char *mode, const char *forced, const char *running,
                       const cpu_features *f, blas_core_plan *plan, lp_err *err);

/* Called first thing in main(), before anything reads input or starts threads: plans from the
 * environment, prints the plan's note on stderr ("prog: ..."), and to switch re-executes the
 * program (/proc/self/exe with argv) with OPENBLAS_CORETYPE set; in the re-executed process it
 * checks the core took. Returns -1 (after printing "prog: error: ...") only for a bad
 * LORAPS_BLAS_CORE, so a main exits with `if (blas_core_setup("prog", argv) < 0) return 2;`. A
 * restart that fails keeps the current core, with a line that says so. */
int blas_core_setup(const char *prog, char **argv);

/* The core OpenBLAS runs now. */
const char *blas_core_name(void);

#endif
