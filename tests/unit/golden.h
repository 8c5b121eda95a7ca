/* Shared by the golden-vector tests (test_golden_gpt2.c, test_llama_golden.c): tolerances,
 * reading the golden safetensors files written by the tests/reference scripts, and comparing
 * logits and LoRA gradients. Included by one test file each (its functions are static). */
#ifndef LORAPS_TEST_GOLDEN_H
#define LORAPS_TEST_GOLDEN_H

#define LOGIT_TOL 1e-4 /* max |diff| */
#define LOSS_TOL  1e-4 /* relative */
#define GRAD_TOL  1e-4 /* max |diff| / max |ref|, per tensor */

static void check_ok(int rc, const lp_err *err, const char *what) {
    if (rc != 0) fail_msg("%s: %s", what, err->msg);
}

static const char *meta(const st_file *f, const char *key) {
    const char *v = st_metadata(f, key);
    if (!v) fail_msg("golden file has no metadata \"%s\"", key);
    return v;
}

/* The tensor as f32 (copied), after checking it exists and has numel elements. */
static float *read_f32(const st_file *f, const char *name, size_t numel) {
    const st_tensor *t = st_find(f, name);
    if (!t) fail_msg("golden file has no tensor \"%s\"", name);
    assert_int_equal(t->numel, (int64_t)numel);
    float *out = malloc(numel * sizeof *out);
    assert_non_null(out);
    lp_err err = {0};
    check_ok(st_read_f32(t, out, numel, &err), &err, name);
    return out;
}

static int *read_i32(const st_file *f, const char *name, size_t numel) {
    const st_tensor *t = st_find(f, name);
    if (!t) fail_msg("golden file has no tensor \"%s\"", name);
    assert_int_equal(t->dtype, DT_I32);
    assert_int_equal(t->numel, (int64_t)numel);
    int32_t *tmp = malloc(numel * sizeof *tmp);
    int *out = malloc(numel * sizeof *out);
    assert_non_null(tmp);
    assert_non_null(out);
    memcpy(tmp, t->data, numel * sizeof *tmp);
    for (size_t i = 0; i < numel; i++) out[i] = tmp[i];
    free(tmp);
    return out;
}

static double max_abs_diff(const float *a, const float *b, size_t n, size_t *where) {
    double worst = 0;
    *where = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || isnan(d)) {
            worst = isnan(d) ? INFINITY : d;
            *where = i;
        }
    }
    return worst;
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

/* Compares every adapter gradient with factor * "grad.<name>"; returns the worst relative
 * error. verbose prints every tensor's, not just the worst. */
__attribute__((unused)) static double compare_grads(const st_file *g, const lora_adapter *a,
                                                    double factor, const char *label, int verbose) {
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < a->n_tensors; i++) {
        const lora_tensor *t = &a->tensors[i];
        char gname[sizeof t->name + 8];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        float *ref = read_f32(g, gname, t->numel);
        for (size_t k = 0; k < t->numel; k++) ref[k] = (float)(ref[k] * factor);
        size_t where;
        double d = max_abs_diff(a->grads + t->offset, ref, t->numel, &where);
        double rel = d / max_abs(ref, t->numel);
        if (verbose)
            print_message("  %s %-60s max|diff| %.3e rel %.3e (at %zu: C %.8g ref %.8g)\n", label,
                          t->name, d, rel, where, (double)a->grads[t->offset + where],
                          (double)ref[where]);
        if (!(rel <= worst)) {
            worst = rel;
            worst_name = t->name;
        }
        free(ref);
    }
    print_message("  %s worst grad: %s rel %.3e\n", label, worst_name, worst);
    return worst;
}

#endif
