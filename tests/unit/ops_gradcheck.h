/* Finite-difference checks for the compute ops, shared by test_ops_gradcheck.c and
 * test_llama_ops.c: tolerances, random fills, the projected loss L = sum(w * forward), central
 * differences (extrapolated for smooth ops), the add-into and overwrite checks of a backward, and
 * the check of a forward against a double-precision reference. Included by one test file each. */
#ifndef LORAPS_TEST_OPS_GRADCHECK_H
#define LORAPS_TEST_OPS_GRADCHECK_H

#include "rng.h"

#define REL_FLOOR       1e-3 /* of the largest |gradient| of the checked tensor */
#define FD_STEP_LINEAR  0.25f
#define FD_BOUND_LINEAR 1e-3
#define FD_STEP_SMOOTH  0.1f /* and 0.05: see fd_kind */
#define FD_BOUND_SMOOTH 1e-2
#define ADD_TOL         1e-6 /* relative: prefilled backward vs prefill + zero-buffer backward */
#define FWD_TOL         1e-5 /* relative to the sum of |terms|: float forward vs double reference */

/* ---------------------------------------------------------------------------------------------
 * helpers */

static float *fvec(size_t n) {
    float *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

static float *fdup(const float *src, size_t n) {
    float *p = fvec(n);
    memcpy(p, src, n * sizeof *p);
    return p;
}

static void fill_normal(rng *r, float *p, size_t n, float mean, float stddev) {
    for (size_t i = 0; i < n; i++) p[i] = mean + stddev * rng_normal(r);
}

static double dotw(const float *w, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * (double)y[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* FD_LINEAR: L is linear in the checked input; one central difference with a large step is exact
 * up to rounding. FD_SMOOTH: Richardson extrapolation of central differences at h and h/2,
 * (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4), so h can be large enough for the float
 * rounding noise of the forward to stay small. */
typedef enum fd_kind { FD_LINEAR, FD_SMOOTH } fd_kind;

static double central_diff(float *x, size_t i, loss_fn L, void *ctx, float h) {
    float xi = x[i];
    float xp = xi + h, xm = xi - h;
    x[i] = xp;
    double lp = L(ctx);
    x[i] = xm;
    double lm = L(ctx);
    x[i] = xi;
    return (lp - lm) / ((double)xp - (double)xm);
}

/* Checks analytic[i] against the central difference of L over every element of x (which L reads
 * through ctx). Prints and returns the worst error; fails above bound. */
static double fd_check(const char *what, float *x, size_t n, const float *analytic, loss_fn L,
                       void *ctx, fd_kind kind) {
    const float h = kind == FD_LINEAR ? FD_STEP_LINEAR : FD_STEP_SMOOTH;
    const double bound = kind == FD_LINEAR ? FD_BOUND_LINEAR : FD_BOUND_SMOOTH;
    double *num = calloc(n, sizeof *num);
    assert_non_null(num);
    double scale = 0, amax = 0;
    for (size_t i = 0; i < n; i++) {
        num[i] = central_diff(x, i, L, ctx, h);
        if (kind == FD_SMOOTH) num[i] = (4 * central_diff(x, i, L, ctx, h / 2) - num[i]) / 3;
        scale = fmax(scale, fabs(num[i]));
        amax = fmax(amax, fabs((double)analytic[i]));
    }
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double a = analytic[i], d = fabs(a - num[i]);
        double e = d / fmax(fmax(fabs(a), fabs(num[i])), REL_FLOOR * scale);
        if (!(e <= worst)) {
            worst = isnan(e) ? INFINITY : e;
            at = i;
        }
    }
    print_message("  %-44s n=%-4zu h=%-6g max|grad| %.3e  worst rel err %.2e (bound %.0e; at %zu: "
                  "analytic %.6g fd %.6g)\n",
                  what, n, (double)h, scale, worst, bound, at, (double)analytic[at], num[at]);
    /* A gradient that is zero everywhere would pass vacuously. */
    if (!(scale > 0 && amax > 0)) fail_msg("%s: gradient is zero everywhere", what);
    if (!(worst <= bound))
        fail_msg("%s: worst relative error %.3e > %.0e at %zu (analytic %.8g, fd %.8g)", what,
                 worst, bound, at, (double)analytic[at], num[at]);
    free(num);
    return worst;
}

/* got must equal prefill + base (up to float rounding): backward adds. */
static void check_added(const char *what, const float *got, const float *prefill, const float *base,
                        size_t n) {
    for (size_t i = 0; i < n; i++) {
        double want = (double)prefill[i] + (double)base[i];
        double tol = ADD_TOL * (fabs((double)prefill[i]) + fabs((double)base[i])) + 1e-30;
        double d = fabs((double)got[i] - want);
        if (!(d <= tol))
            fail_msg("%s: element %zu is %.8g, expected prefill %.8g + gradient %.8g: backward "
                     "must add into its output",
                     what, i, (double)got[i], (double)prefill[i], (double)base[i]);
    }
}

/* A backward that overwrites its output: run on a buffer prefilled with garbage it must give
 * exactly what it gives on a zero buffer (it never reads what was there). */
static void check_overwritten(const char *what, const float *got, const float *base, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != base[i])
            fail_msg("%s: element %zu is %.8g on a prefilled buffer, %.8g on a zero one: backward "
                     "must overwrite its output",
                     what, i, (double)got[i], (double)base[i]);
}

/* |got - ref| <= FWD_TOL * mag (+ a tiny absolute term) element by element. */
static void check_forward(const char *what, const float *got, const double *ref, const double *mag,
                          size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = FWD_TOL * mag[i] + 1e-7;
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol))
            fail_msg("%s forward: element %zu is %.8g, reference %.8g (tolerance %.2g)", what, i,
                     (double)got[i], ref[i], tol);
        worst = fmax(worst, d / (mag[i] + 1e-30));
    }
    print_message("  %-44s forward vs double reference: worst |diff|/scale %.2e\n", what, worst);
}

#endif
