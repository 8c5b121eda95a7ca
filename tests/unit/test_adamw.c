/* adamw: adamw_update, lr_at, clip_factor and sum_of_squares against torch.optim.AdamW, HF's
 * get_*_schedule_with_warmup (through a LambdaLR, as HF Trainer steps it) and
 * torch.nn.utils.clip_grad_norm_, from tests/reference/golden/optimizer.json
 * (tests/reference/optimizer_reference.py). The schedules are built through job_schedule and
 * the update loop is the one local_train and the server run: clip, lr_at(step), update t=step+1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "adamw.h"
#include "job.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/optimizer.json"

static json_t *golden;

static int load_golden(void **state) {
    (void)state;
    json_error_t e;
    golden = json_load_file(GOLDEN, 0, &e);
    if (!golden) fprintf(stderr, "%s:%d: %s\n", GOLDEN, e.line, e.text);
    return golden ? 0 : -1;
}

static int free_golden(void **state) {
    (void)state;
    json_decref(golden);
    return 0;
}

static double num(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    assert_non_null(v);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static const char *str(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* A JSON array of numbers into floats (exactly: the golden values are float32 values). */
static float *floats(const json_t *arr, size_t *n) {
    assert_true(json_is_array(arr));
    *n = json_array_size(arr);
    float *x = malloc((*n ? *n : 1) * sizeof *x);
    for (size_t i = 0; i < *n; i++) {
        json_t *v = json_array_get(arr, i);
        assert_true(json_is_number(v));
        x[i] = (float)json_number_value(v);
        assert_true((double)x[i] == json_number_value(v));
    }
    return x;
}

static void make_schedule(const char *kind, double lr, int warmup, int total, lr_schedule *s) {
    job j;
    lp_err err;
    char text[64];
    job_defaults(&j);
    snprintf(text, sizeof text, "%.17g", lr);
    assert_int_equal(job_set(&j, "lr", text, &err), 0);
    assert_int_equal(job_set(&j, "lr_scheduler", kind, &err), 0);
    snprintf(text, sizeof text, "%d", warmup);
    assert_int_equal(job_set(&j, "warmup_steps", text, &err), 0);
    assert_int_equal(job_validate(&j, &err), 0);
    job_schedule(&j, total, s);
    assert_int_equal(s->total_steps, total);
    assert_int_equal(s->warmup_steps, warmup);
}

/* lr_at(s, k) is the lr HF uses for update k (0-based). */
static void test_lr_schedules(void **state) {
    (void)state;
    json_t *list = json_object_get(golden, "lr_schedules");
    assert_true(json_array_size(list) >= 8);
    double worst = 0;
    size_t i;
    json_t *sc;
    json_array_foreach(list, i, sc) {
        const char *kind = str(sc, "kind");
        double lr = num(sc, "lr");
        int warmup = (int)num(sc, "warmup_steps"), total = (int)num(sc, "total_steps");
        lr_schedule s;
        make_schedule(kind, lr, warmup, total, &s);
        json_t *ref = json_object_get(sc, "lr_at");
        assert_int_equal(json_array_size(ref), total);
        for (int k = 0; k < total; k++) {
            double want = json_number_value(json_array_get(ref, (size_t)k));
            double got = lr_at(&s, k);
            double rel = fabs(got - want) / lr;
            if (rel > worst) worst = rel;
            if (rel > 1e-6) {
                fprintf(stderr, "%s lr %g warmup %d total %d: lr_at(%d) = %.9g, HF %.9g\n", kind,
                        lr, warmup, total, k, got, want);
                fail();
            }
            if (want == 0) assert_true(got == 0); /* warm-up's first update really is lr 0 */
        }
    }
    printf("lr_at: %zu schedules, worst |diff| / lr = %.2e\n", json_array_size(list), worst);
}

typedef struct worst {
    double param, m, v; /* |diff| / max(1, |ref|) for params and m; relative for v */
    double lr, ss, clip;
} worst;

static void compare(const char *run, int step, const char *what, const float *got,
                    const float *want, size_t n, double *worst, double tol, int relative) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double e = relative ? (want[i] != 0 ? d / fabs((double)want[i]) : d)
                            : d / fmax(1.0, fabs((double)want[i]));
        if (e > *worst) *worst = e;
        if (!(e <= tol)) {
            fprintf(stderr, "%s step %d %s[%zu]: C %.9g, torch %.9g (error %.2e > %.0e)\n", run,
                    step, what, i, got[i], want[i], e, tol);
            fail();
        }
    }
}

static void run_adamw(const json_t *run, worst *w) {
    const char *name = str(run, "name");
    json_t *sizes = json_object_get(run, "sizes");
    size_t n_t = json_array_size(sizes);
    assert_true(n_t >= 1 && n_t <= 8);
    adamw_config c = {(float)num(run, "beta1"), (float)num(run, "beta2"), (float)num(run, "eps"),
                      (float)num(run, "weight_decay")};
    lr_schedule s;
    make_schedule(str(run, "kind"), num(run, "lr"), (int)num(run, "warmup_steps"),
                  (int)num(run, "total_steps"), &s);
    float *p[8], *m[8], *v[8];
    size_t n[8];
    json_t *init = json_object_get(run, "init");
    for (size_t t = 0; t < n_t; t++) {
        p[t] = floats(json_array_get(init, t), &n[t]);
        assert_int_equal(n[t], (size_t)json_integer_value(json_array_get(sizes, t)));
        m[t] = calloc(n[t], sizeof(float));
        v[t] = calloc(n[t], sizeof(float));
    }
    json_t *steps = json_object_get(run, "steps");
    assert_int_equal(json_array_size(steps), (size_t)s.total_steps);
    int clipped = 0;
    for (int k = 0; k < s.total_steps; k++) {
        json_t *rec = json_array_get(steps, (size_t)k);
        float *g[8];
        double ss = 0;
        for (size_t t = 0; t < n_t; t++) {
            size_t len;
            g[t] = floats(json_array_get(json_object_get(rec, "grads"), t), &len);
            assert_int_equal(len, n[t]);
            ss += sum_of_squares(g[t], n[t]); /* each shard sums its own part */
        }
        double ss_ref = num(rec, "sum_of_squares");
        w->ss = fmax(w->ss, fabs(ss - ss_ref) / ss_ref);
        assert_true(fabs(ss - ss_ref) <= 1e-12 * ss_ref);
        float max_norm = (float)num(rec, "max_grad_norm");
        float f = clip_factor(ss, max_norm);
        if (max_norm > 0) {
            double want = num(rec, "clip_factor");
            w->clip = fmax(w->clip, fabs(f - want) / want);
            assert_true(fabs(f - want) <= 1e-6 * want);
            assert_true(f < 1.0f); /* these steps really clip */
            clipped++;
        } else {
            assert_true(f == 1.0f);
        }
        float lr = lr_at(&s, k);
        double lr_ref = num(rec, "lr");
        w->lr = fmax(w->lr, fabs(lr - lr_ref) / num(run, "lr"));
        assert_true(fabs(lr - lr_ref) <= 1e-6 * num(run, "lr"));
        for (size_t t = 0; t < n_t; t++) {
            size_t len;
            if (f != 1.0f)
                for (size_t i = 0; i < n[t]; i++) g[t][i] *= f;
            adamw_update(p[t], g[t], m[t], v[t], n[t], lr, &c, k + 1);
            float *want_p = floats(json_array_get(json_object_get(rec, "params"), t), &len);
            float *want_m = floats(json_array_get(json_object_get(rec, "exp_avg"), t), &len);
            float *want_v = floats(json_array_get(json_object_get(rec, "exp_avg_sq"), t), &len);
            compare(name, k, "param", p[t], want_p, n[t], &w->param, 1e-6, 0);
            compare(name, k, "exp_avg", m[t], want_m, n[t], &w->m, 1e-6, 0);
            /* v carries (1 - beta2) computed from the float beta2 (1 - 0.999f = 0.00099998713,
             * 1.3e-5 from torch's double 0.001); the bias correction cancels it in the update. */
            compare(name, k, "exp_avg_sq", v[t], want_v, n[t], &w->v, 2e-5, 1);
            free(want_p);
            free(want_m);
            free(want_v);
            free(g[t]);
        }
    }
    for (size_t t = 0; t < n_t; t++) free(p[t]), free(m[t]), free(v[t]);
    printf("adamw run %s: %d updates over %zu tensors, %d clipped\n", name, s.total_steps, n_t,
           clipped);
}

static void test_adamw_matches_torch(void **state) {
    (void)state;
    json_t *runs = json_object_get(golden, "adamw");
    assert_true(json_array_size(runs) >= 3);
    worst w = {0};
    size_t i;
    json_t *run;
    json_array_foreach(runs, i, run) run_adamw(run, &w);
    printf("adamw vs torch, worst: param %.2e, exp_avg %.2e (abs, or rel above 1), exp_avg_sq "
           "%.2e rel; lr %.2e, sum_of_squares %.2e, clip factor %.2e rel\n",
           w.param, w.m, w.v, w.lr, w.ss, w.clip);
}

/* The parameters move away from where they start after the first non-zero lr, and weight decay
 * is decoupled: a zero gradient with zero moments only shrinks the parameter by lr * wd. */
static void test_adamw_decoupled_decay(void **state) {
    (void)state;
    adamw_config c = {0.9f, 0.999f, 1e-8f, 0.1f};
    float p[2] = {2.0f, -4.0f}, g[2] = {0, 0}, m[2] = {0, 0}, v[2] = {0, 0};
    adamw_update(p, g, m, v, 2, 0.01f, &c, 1);
    assert_true(p[0] == 2.0f * (1.0f - 0.01f * 0.1f));
    assert_true(p[1] == -4.0f * (1.0f - 0.01f * 0.1f));
    assert_true(m[0] == 0 && v[0] == 0);
    /* lr 0 (warm-up's first update) changes no parameter, but the moments still accumulate */
    float q[1] = {1.5f}, gq[1] = {0.25f}, mq[1] = {0}, vq[1] = {0};
    adamw_update(q, gq, mq, vq, 1, 0.0f, &c, 1);
    assert_true(q[0] == 1.5f);
    assert_true(fabsf(mq[0] - 0.025f) < 1e-8f);
    assert_true(fabsf(vq[0] - 0.0000625f) < 2e-5f * 0.0000625f);
    /* first step of Adam without decay moves each parameter by about lr against its gradient's
     * sign, whatever the gradient's size */
    adamw_config nd = {0.9f, 0.999f, 1e-8f, 0.0f};
    float r[3] = {0, 0, 0}, gr[3] = {1e-3f, -5.0f, 300.0f}, mr[3] = {0}, vr[3] = {0};
    adamw_update(r, gr, mr, vr, 3, 0.1f, &nd, 1);
    assert_true(fabsf(r[0] + 0.1f) < 1e-5f);
    assert_true(fabsf(r[1] - 0.1f) < 1e-6f);
    assert_true(fabsf(r[2] + 0.1f) < 1e-6f);
}

/* Above 65536 elements the loops run under OpenMP: the result must equal the serial one. */
static void test_large_n_same_as_small(void **state) {
    (void)state;
    size_t n = 200003;
    float *p = malloc(n * sizeof(float)), *q = malloc(n * sizeof(float));
    float *g = malloc(n * sizeof(float));
    float *m1 = calloc(n, sizeof(float)), *v1 = calloc(n, sizeof(float));
    float *m2 = calloc(n, sizeof(float)), *v2 = calloc(n, sizeof(float));
    double serial = 0;
    for (size_t i = 0; i < n; i++) {
        p[i] = q[i] = (float)sin((double)i * 0.37);
        g[i] = (float)cos((double)i * 0.11) * (float)(1 + i % 7);
        serial += (double)g[i] * g[i];
    }
    double ss = sum_of_squares(g, n);
    assert_true(fabs(ss - serial) <= 1e-12 * serial);
    adamw_config c = {0.9f, 0.95f, 1e-6f, 0.05f};
    for (int t = 1; t <= 3; t++) {
        adamw_update(p, g, m1, v1, n, 1e-3f, &c, t);
        for (size_t i = 0; i < n; i += 1000) {
            size_t len = n - i < 1000 ? n - i : 1000;
            adamw_update(q + i, g + i, m2 + i, v2 + i, len, 1e-3f, &c, t);
        }
    }
    assert_memory_equal(p, q, n * sizeof(float));
    assert_memory_equal(m1, m2, n * sizeof(float));
    assert_memory_equal(v1, v2, n * sizeof(float));
    free(p), free(q), free(g), free(m1), free(v1), free(m2), free(v2);
}

static void test_clip_matches_torch(void **state) {
    (void)state;
    json_t *list = json_object_get(golden, "clip");
    assert_true(json_array_size(list) >= 6);
    double worst_ss = 0, worst_f = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(list, i, cs) {
        size_t n;
        float *g = floats(json_object_get(cs, "grad"), &n);
        double ss = sum_of_squares(g, n), ss_ref = num(cs, "sum_of_squares");
        worst_ss = fmax(worst_ss, fabs(ss - ss_ref) / ss_ref);
        assert_true(fabs(ss - ss_ref) <= 1e-12 * ss_ref);
        float max_norm = (float)num(cs, "max_grad_norm");
        double want = num(cs, "clip_factor");
        float f = clip_factor(ss, max_norm);
        double rel = fabs(f - want) / want;
        worst_f = fmax(worst_f, rel);
        if (rel > 1e-6) {
            fprintf(stderr, "norm %g max %g: clip_factor %.9g, torch %.9g\n", sqrt(ss_ref),
                    max_norm, f, want);
            fail();
        }
        if (want == 1.0) assert_true(f == 1.0f); /* within the norm: untouched, exactly */
        free(g);
    }
    printf("clip: %zu cases, worst sum_of_squares rel %.2e, clip factor rel %.2e\n",
           json_array_size(list), worst_ss, worst_f);
}

/* max_grad_norm <= 0 turns clipping off (HF Trainer clips only when max_grad_norm > 0). */
static void test_clip_off_and_edges(void **state) {
    (void)state;
    assert_true(clip_factor(1e6, 0.0f) == 1.0f);
    assert_true(clip_factor(1e6, -1.0f) == 1.0f);
    assert_true(clip_factor(0.0, 1.0f) == 1.0f);
    assert_true(clip_factor(4.0, 2.0f) < 1.0f); /* norm exactly max: torch's +1e-6 still clips */
    assert_true(fabsf(clip_factor(4.0, 2.0f) - 2.0f / (2.0f + 1e-6f)) < 1e-7f);
    assert_true(fabsf(clip_factor(100.0, 1.0f) - 0.1f) < 1e-7f);
    float z[4] = {0, 0, 0, 0};
    assert_true(sum_of_squares(z, 4) == 0.0);
    assert_true(sum_of_squares(z, 0) == 0.0);
}

/* Shapes every kind shares: warm-up is linear from 0, the peak is reached right after it, and
 * the decays end at 0 at total_steps. */
static void test_schedule_shapes(void **state) {
    (void)state;
    lr_schedule s = {1.0f, LR_LINEAR, 4, 14};
    assert_true(lr_at(&s, 0) == 0.0f);
    assert_true(fabsf(lr_at(&s, 2) - 0.5f) < 1e-7f);
    assert_true(lr_at(&s, 4) == 1.0f);
    assert_true(fabsf(lr_at(&s, 9) - 0.5f) < 1e-7f);
    assert_true(fabsf(lr_at(&s, 14)) < 1e-7f);
    s.kind = LR_COSINE;
    assert_true(lr_at(&s, 4) == 1.0f);
    assert_true(fabsf(lr_at(&s, 9) - 0.5f) < 1e-6f);
    assert_true(fabsf(lr_at(&s, 14)) < 1e-7f);
    for (int k = 5; k < 14; k++) assert_true(lr_at(&s, k) < lr_at(&s, k - 1));
    s.kind = LR_CONSTANT;
    s.warmup_steps = 0;
    for (int k = 0; k < 20; k++) assert_true(lr_at(&s, k) == 1.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_schedules),          cmocka_unit_test(test_adamw_matches_torch),
        cmocka_unit_test(test_adamw_decoupled_decay), cmocka_unit_test(test_large_n_same_as_small),
        cmocka_unit_test(test_clip_matches_torch),    cmocka_unit_test(test_clip_off_and_edges),
        cmocka_unit_test(test_schedule_shapes),
    };
    return cmocka_run_group_tests(tests, load_golden, free_golden);
}
