/* adapter_diff A B [TOL]: compares two safetensors files (adapters, or model_logits' outputs)
 * tensor by tensor (same names, shapes) and prints the largest relative difference
 * ||a - b|| / ||a|| over the float tensors; integer tensors must be byte-identical. Exits 0 if
 * it is <= TOL (default 1e-5), 1 if not, 2 on bad input. */
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: adapter_diff A.safetensors B.safetensors [TOL]\n");
        return 2;
    }
    double tol = argc > 3 ? atof(argv[3]) : 1e-5;
    st_file a, b;
    lp_err err;
    if (st_open(&a, argv[1], &err) < 0 || st_open(&b, argv[2], &err) < 0) {
        fprintf(stderr, "adapter_diff: error: %s\n", err.msg);
        return 2;
    }
    if (a.n_tensors != b.n_tensors) {
        fprintf(stderr, "adapter_diff: %d tensors vs %d\n", a.n_tensors, b.n_tensors);
        return 1;
    }
    double worst = 0, norm_total = 0;
    const char *worst_name = "";
    for (int i = 0; i < a.n_tensors; i++) {
        const st_tensor *x = &a.tensors[i], *y = st_find(&b, x->name);
        if (!y || y->numel != x->numel) {
            fprintf(stderr, "adapter_diff: %s missing or of another size in B\n", x->name);
            return 1;
        }
        if (x->dtype != DT_F32 && x->dtype != DT_F16 && x->dtype != DT_BF16) {
            /* ids and the like: equal, or infinitely different */
            int same = x->dtype == y->dtype && !memcmp(x->data, y->data, x->nbytes);
            if (!same) worst = INFINITY, worst_name = x->name;
            continue;
        }
        float *u = malloc((size_t)x->numel * sizeof *u), *v = malloc((size_t)x->numel * sizeof *v);
        if (st_read_f32(x, u, (size_t)x->numel, &err) < 0 ||
            st_read_f32(y, v, (size_t)y->numel, &err) < 0) {
            fprintf(stderr, "adapter_diff: error: %s\n", err.msg);
            return 2;
        }
        double d = 0, n = 0;
        for (int64_t k = 0; k < x->numel; k++) {
            d += ((double)u[k] - v[k]) * ((double)u[k] - v[k]);
            n += (double)u[k] * u[k];
        }
        norm_total += n;
        double rel = n > 0 ? sqrt(d / n) : sqrt(d);
        if (rel > worst || !isfinite(rel)) worst = rel, worst_name = x->name;
        free(u);
        free(v);
    }
    printf("max relative difference %.3e (%s), %d tensors, norm %.4f\n", worst, worst_name,
           a.n_tensors, sqrt(norm_total));
    st_close(&a);
    st_close(&b);
    return worst <= tol ? 0 : 1;
}
