/* For test_blas_core.sh: runs the start-up every main runs (blas_core_setup), then prints what
 * the process ended up with, one "key value" a line: the core, the best core for this CPU, the
 * OPENBLAS_CORETYPE it runs under, whether the restart marker is gone, and its arguments. */
#include "blas_core.h"
#include "cpu_features.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (blas_core_setup("blas_core_probe", argv) < 0) return 2;
    cpu_features f;
    cpu_features_detect(&f);
    const char *best = blas_core_for(&f), *coretype = getenv("OPENBLAS_CORETYPE");
    printf("core %s\n", blas_core_name());
    printf("best %s\n", best ? best : "none");
    printf("coretype %s\n", coretype ? coretype : "unset");
    printf("marker %s\n", getenv("LORAPS_BLAS_CORE_SWITCHED_FROM") ? "set" : "unset");
    for (int i = 1; i < argc; i++) printf("arg %s\n", argv[i]);
    return 0;
}
