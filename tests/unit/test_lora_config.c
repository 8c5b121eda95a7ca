/* lora: target matching, rank/alpha patterns and adapter layout against what PEFT 0.21 itself
 * adapts (tests/reference/golden/peft_matching.json, made by tests/reference/peft_matching.py on
 * a tiny GPT2LMHeadModel), over the module list of the same tiny model written by
 * model_init_write and listed by model_lora_modules, as the server and `loraps train` build it.
 * Every case is built twice: with lora_config_set_targets/_set_patterns, and through the job
 * settings and job_lora_config. Also PEFT's init (A uniform in ±1/sqrt(in), B = 0) and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "gpt2_config.h"
#include "lora_targets.h"
#include "model_load.h"
#include "job.h"
#include "lora.h"
#include "model.h"
#include "model_init.h"

#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GOLDEN LORAPS_TEST_DATA "/reference/golden/peft_matching.json"

static json_t *golden;
static char tmpdir[256];
static model *mdl;
static const lora_module *mods;
static int n_mods;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* The model peft_matching.py builds: GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64,
 * n_positions=16). */
static int setup(void **state) {
    (void)state;
    json_error_t je;
    golden = json_load_file(GOLDEN, 0, &je);
    if (!golden) {
        fprintf(stderr, "%s:%d: %s\n", GOLDEN, je.line, je.text);
        return -1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loraps_test_lora_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    gpt2_config c;
    lp_err err;
    if (model_preset("tiny", &c, &err) < 0) return -1;
    c.n_layer = 2, c.n_embd = 32, c.n_head = 4, c.vocab_size = 64, c.n_positions = 16;
    if (model_init_write(tmpdir, &c, 5, &err) < 0 || model_load(&mdl, tmpdir, &err) < 0) {
        fprintf(stderr, "tiny model: %s\n", err.msg);
        return -1;
    }
    n_mods = model_lora_modules(mdl, &mods);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    model_free(mdl);
    json_decref(golden);
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *str(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static double num(const json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static void expect_error(int rc, const lp_err *err, const char *needle1, const char *needle2) {
    assert_int_equal(rc, -1);
    if ((needle1 && !strstr(err->msg, needle1)) || (needle2 && !strstr(err->msg, needle2))) {
        fprintf(stderr, "error '%s' lacks '%s' / '%s'\n", err->msg, needle1 ? needle1 : "",
                needle2 ? needle2 : "");
        fail();
    }
}

/* The model's linear modules, names and dimensions, are HF's (lm_head is not a LoRA site). */
static void test_module_list_is_hf(void **state) {
    (void)state;
    json_t *hf = json_object_get(golden, "linear_modules");
    assert_int_equal(n_mods + 1, json_array_size(hf));
    for (int i = 0; i < n_mods; i++)
        assert_string_equal(mods[i].name, json_string_value(json_array_get(hf, (size_t)i)));
    assert_string_equal(json_string_value(json_array_get(hf, (size_t)n_mods)), "lm_head");
    /* dimensions from the case that adapts every module */
    size_t i;
    json_t *cs;
    json_array_foreach(json_object_get(golden, "cases"), i, cs) {
        if (strcmp(str(cs, "name"), "list_all_rslora")) continue;
        json_t *ms = json_object_get(cs, "modules");
        assert_int_equal(json_array_size(ms), n_mods);
        for (int k = 0; k < n_mods; k++) {
            json_t *m = json_array_get(ms, (size_t)k);
            assert_int_equal(mods[k].in, (int)num(m, "in"));
            assert_int_equal(mods[k].out, (int)num(m, "out"));
            assert_int_equal(mods[k].layer, k / 4);
        }
        return;
    }
    fail_msg("case list_all_rslora missing from %s", GOLDEN);
}

/* The C spelling of a golden case as a lora_config, directly or through the job settings. */
static int build_config(const json_t *cc, int via_job, lora_config *c, lp_err *err) {
    int r = (int)num(cc, "r");
    double alpha = num(cc, "alpha");
    int rslora = json_is_true(json_object_get(cc, "use_rslora"));
    const char *rank = str(cc, "rank_pattern"), *alph = str(cc, "alpha_pattern");
    if (!via_job) {
        lora_config_defaults(c);
        c->r = r;
        c->alpha = (float)alpha;
        c->use_rslora = rslora;
        if (lora_config_set_targets(c, str(cc, "targets"), err) < 0 ||
            (*rank && lora_config_set_patterns(c, 0, rank, err) < 0) ||
            (*alph && lora_config_set_patterns(c, 1, alph, err) < 0)) {
            lora_config_free(c);
            return -1;
        }
        return 0;
    }
    job j;
    char text[32];
    job_defaults(&j);
    snprintf(text, sizeof text, "%d", r);
    assert_int_equal(job_set(&j, "r", text, err), 0);
    snprintf(text, sizeof text, "%g", alpha);
    assert_int_equal(job_set(&j, "lora-alpha", text, err), 0);
    assert_int_equal(job_set(&j, "use_rslora", rslora ? "true" : "false", err), 0);
    assert_int_equal(job_set(&j, "target_modules", str(cc, "targets"), err), 0);
    assert_int_equal(job_set(&j, "rank_pattern", rank, err), 0);
    assert_int_equal(job_set(&j, "alpha_pattern", alph, err), 0);
    assert_int_equal(job_validate(&j, err), 0);
    return job_lora_config(&j, c, err);
}

static void check_against_peft(const char *name, const lora_adapter *a, const json_t *cs) {
    json_t *ms = json_object_get(cs, "modules"), *sd = json_object_get(cs, "state_dict");
    if ((size_t)a->n_sites != json_array_size(ms)) {
        fprintf(stderr, "%s: C adapts %d modules, PEFT %zu:", name, a->n_sites,
                json_array_size(ms));
        for (int k = 0; k < a->n_sites; k++) fprintf(stderr, " %s", mods[a->sites[k].module].name);
        fprintf(stderr, "\n");
        fail();
    }
    for (int k = 0; k < a->n_sites; k++) {
        const lora_site *s = &a->sites[k];
        json_t *m = json_array_get(ms, (size_t)k);
        const char *mn = mods[s->module].name;
        assert_string_equal(mn, str(m, "name"));
        int r;
        float alpha;
        lp_err err;
        assert_int_equal(lora_config_match(&a->cfg, mn, &r, &alpha, &err), 1);
        if (s->r != (int)num(m, "r") || r != s->r || alpha != (float)num(m, "lora_alpha") ||
            fabs(s->scale - num(m, "scaling")) > 1e-6 * num(m, "scaling")) {
            fprintf(stderr, "%s: %s: C r %d alpha %g scale %.7g, PEFT r %d alpha %g scale %.7g\n",
                    name, mn, s->r, alpha, s->scale, (int)num(m, "r"), num(m, "lora_alpha"),
                    num(m, "scaling"));
            fail();
        }
        assert_int_equal(s->in, (int)num(m, "in"));
        assert_int_equal(s->out, (int)num(m, "out"));
        assert_ptr_equal(lora_adapter_site_for(a, s->module), s);
    }
    for (int i = 0; i < n_mods; i++) {
        int adapted = 0;
        for (int k = 0; k < a->n_sites; k++) adapted |= a->sites[k].module == i;
        if (!adapted) assert_null(lora_adapter_site_for(a, i));
    }
    /* get_peft_model_state_dict: names, shapes and order */
    assert_int_equal(a->n_tensors, json_array_size(sd));
    size_t offset = 0;
    for (int k = 0; k < a->n_tensors; k++) {
        const lora_tensor *t = &a->tensors[k];
        json_t *e = json_array_get(sd, (size_t)k), *shape = json_object_get(e, "shape");
        assert_string_equal(t->name, str(e, "key"));
        assert_int_equal(json_array_size(shape), 2);
        assert_int_equal(t->rows, json_integer_value(json_array_get(shape, 0)));
        assert_int_equal(t->cols, json_integer_value(json_array_get(shape, 1)));
        assert_int_equal(t->offset, offset);
        assert_int_equal(t->numel, (size_t)(t->rows * t->cols));
        assert_ptr_equal(lora_adapter_find(a, t->name), t);
        const lora_site *s = &a->sites[k / 2];
        assert_int_equal(k % 2 ? s->b_offset : s->a_offset, t->offset);
        offset += t->numel;
    }
    assert_int_equal(a->n_params, offset);
    assert_null(lora_adapter_find(a, "base_model.model.transformer.h.0.attn.c_attn.lora_C.weight"));
}

static void test_same_as_peft(void **state) {
    (void)state;
    json_t *cases = json_object_get(golden, "cases");
    int n_ok = 0, n_refused = 0, n_diverge = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        const char *name = str(cs, "name");
        json_t *cc = json_object_get(cs, "c");
        int peft_ok = json_is_true(json_object_get(cs, "ok"));
        const char *peft_err = peft_ok ? "" : str(cs, "error");
        for (int via_job = 0; via_job < 2; via_job++) {
            lora_config c;
            lora_adapter a;
            lp_err err;
            if (build_config(cc, via_job, &c, &err) < 0) {
                fprintf(stderr, "%s: config: %s\n", name, err.msg);
                fail();
            }
            int rc = lora_adapter_build(&a, &c, mods, n_mods, &err);
            if (peft_ok) {
                if (rc < 0) fail_msg("%s: %s", name, err.msg);
                check_against_peft(name, &a, cs);
                n_ok += !via_job;
            } else if (strstr(peft_err, "not found in the base model")) {
                /* PEFT: NoMatchingPeftModuleError. C: an error that says nothing matched. */
                expect_error(rc, &err, "target_modules", "matches none");
                n_refused += !via_job;
            } else if (strstr(peft_err, "is not supported")) {
                /* The regex also matches a non-linear module (the MLP's activation), which PEFT
                 * refuses. loraps only ever sees the linear modules, so it adapts those. */
                assert_int_equal(rc, 0);
                assert_true(a.n_sites > 0);
                for (int k = 0; k < a.n_sites; k++)
                    assert_non_null(strstr(mods[a.sites[k].module].name, ".1.mlp.c_"));
                if (!via_job)
                    printf("note: %s: PEFT refuses (%.60s...), loraps adapts %d linear modules\n",
                           name, peft_err, a.n_sites);
                n_diverge += !via_job;
            } else {
                fail_msg("%s: unexpected PEFT error %s", name, peft_err);
            }
            if (rc == 0) lora_adapter_free(&a);
            lora_config_free(&c);
        }
    }
    printf("PEFT %s: %d cases as PEFT adapts them, %d refused as PEFT does, %d known divergence\n",
           str(json_object_get(golden, "versions"), "peft"), n_ok, n_refused, n_diverge);
    assert_true(n_ok >= 15);
    assert_true(n_refused >= 2);
}

/* rank_pattern keys are tried in order and the first match wins, as in PEFT (a dict in insertion
 * order): a general key before a specific one hides it. */
static void test_pattern_order(void **state) {
    (void)state;
    lora_config c;
    lp_err err;
    int r;
    float alpha;
    lora_config_defaults(&c);
    assert_int_equal(lora_config_set_patterns(&c, 0, "c_attn=4,h.1.attn.c_attn=2", &err), 0);
    assert_int_equal(lora_config_match(&c, "transformer.h.1.attn.c_attn", &r, &alpha, &err), 1);
    assert_int_equal(r, 4);
    lora_config_free(&c);
    lora_config_defaults(&c);
    assert_int_equal(lora_config_set_patterns(&c, 0, "h.1.attn.c_attn=2,c_attn=4", &err), 0);
    assert_int_equal(lora_config_match(&c, "transformer.h.1.attn.c_attn", &r, &alpha, &err), 1);
    assert_int_equal(r, 2);
    assert_int_equal(lora_config_match(&c, "transformer.h.0.attn.c_attn", &r, &alpha, &err), 1);
    assert_int_equal(r, 4);
    assert_float_equal(alpha, 16.0f, 0);
    /* a module outside target_modules is not adapted, whatever the patterns say */
    assert_int_equal(lora_config_match(&c, "transformer.h.1.mlp.c_fc", &r, &alpha, &err), 0);
    /* set_patterns adds to the list */
    assert_int_equal(lora_config_set_patterns(&c, 1, "c_attn=3.5", &err), 0);
    assert_int_equal(lora_config_set_patterns(&c, 1, "h.0.attn.c_attn=7", &err), 0);
    assert_int_equal(c.n_alpha_pattern, 2);
    assert_int_equal(lora_config_match(&c, "transformer.h.0.attn.c_attn", &r, &alpha, &err), 1);
    assert_float_equal(alpha, 3.5f, 0);
    lora_config_free(&c);
}

static void test_bad_targets_and_patterns(void **state) {
    (void)state;
    lora_config c;
    lp_err err;
    lora_config_defaults(&c);
    expect_error(lora_config_set_targets(&c, "re:h.(0|1", &err), &err, "h.(0|1", "target_modules");
    expect_error(lora_config_set_targets(&c, "re:*c_attn", &err), &err, "*c_attn", NULL);
    expect_error(lora_config_set_targets(&c, "", &err), &err, "target_modules", "empty");
    expect_error(lora_config_set_targets(&c, " , ,", &err), &err, "names no module", NULL);
    /* a refused spec keeps the targets there were */
    assert_int_equal(c.n_targets, 1);
    assert_string_equal(c.targets[0], "c_attn");
    assert_null(c.target_regex);
    expect_error(lora_config_set_patterns(&c, 0, "c_attn(=4", &err), &err, "c_attn(",
                 "rank_pattern");
    expect_error(lora_config_set_patterns(&c, 1, "[c_attn=4", &err), &err, "[c_attn",
                 "alpha_pattern");
    expect_error(lora_config_set_patterns(&c, 0, "c_attn=0", &err), &err, "rank_pattern", "'0'");
    expect_error(lora_config_set_patterns(&c, 0, "c_attn=2.5", &err), &err, "rank_pattern", "2.5");
    expect_error(lora_config_set_patterns(&c, 0, "c_attn=x", &err), &err, "rank_pattern", "'x'");
    expect_error(lora_config_set_patterns(&c, 0, "c_attn", &err), &err, "name=value", "c_attn");
    expect_error(lora_config_set_patterns(&c, 0, "=4", &err), &err, "name=value", NULL);
    expect_error(lora_config_set_patterns(&c, 1, "c_attn=-1", &err), &err, "alpha_pattern", "-1");
    assert_int_equal(c.n_rank_pattern, 0);
    assert_int_equal(c.n_alpha_pattern, 0);
    assert_int_equal(lora_config_set_patterns(&c, 1, "c_attn=2.5", &err), 0); /* alpha: any > 0 */
    lora_config_free(&c);

    /* no match: an error naming target_modules, and a model module as an example */
    lora_adapter a;
    const char *none[] = {"q_proj,v_proj", "re:c_attn", "re:transformer\\.h\\.2\\..*",
                          "h.2.attn.c_attn"};
    for (size_t k = 0; k < sizeof none / sizeof none[0]; k++) {
        lora_config_defaults(&c);
        assert_int_equal(lora_config_set_targets(&c, none[k], &err), 0);
        expect_error(lora_adapter_build(&a, &c, mods, n_mods, &err), &err, "matches none",
                     "transformer.h.0.attn.c_attn");
        assert_int_equal(a.n_sites, 0);
        assert_null(a.params);
        lora_adapter_free(&a); /* freeing a failed build is safe */
        lora_config_free(&c);
    }
}

static void build_all(lora_adapter *a, int r) {
    lora_config c;
    lp_err err;
    lora_config_defaults(&c);
    c.r = r;
    assert_int_equal(lora_config_set_targets(&c, "c_attn,c_proj,c_fc", &err), 0);
    if (lora_adapter_build(a, &c, mods, n_mods, &err) < 0) fail_msg("%s", err.msg);
    lora_config_free(&c);
}

/* PEFT's init: A = kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0. */
static void test_init(void **state) {
    (void)state;
    size_t i;
    json_t *cs;
    json_array_foreach(json_object_get(golden, "cases"), i, cs) {
        if (!json_is_true(json_object_get(cs, "ok"))) continue;
        json_t *init = json_object_get(cs, "init");
        assert_true(num(init, "max_abs_A_times_sqrt_in") <= 1.0 + 1e-6); /* PEFT's own bound */
        assert_true(num(init, "max_abs_B") == 0.0);
    }
    lora_adapter a, b;
    build_all(&a, 8);
    build_all(&b, 8);
    for (size_t k = 0; k < a.n_params; k++) assert_true(a.grads[k] == 0.0f);
    lora_adapter_init(&a, 1234);
    lora_adapter_init(&b, 1234);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof(float));
    double sq = 0;
    size_t n_a = 0;
    for (int k = 0; k < a.n_sites; k++) {
        const lora_site *s = &a.sites[k];
        const float *A = a.params + s->a_offset, *B = a.params + s->b_offset;
        float bound = 1.0f / sqrtf((float)s->in), lo = A[0], hi = A[0];
        for (size_t e = 0; e < (size_t)s->r * s->in; e++) {
            assert_true(A[e] >= -bound && A[e] < bound);
            lo = fminf(lo, A[e]), hi = fmaxf(hi, A[e]);
            sq += (double)(A[e] / bound) * (A[e] / bound);
            n_a++;
        }
        assert_true(hi - lo > 1.8f * bound); /* spread over the range, not all equal */
        for (size_t e = 0; e < (size_t)s->out * s->r; e++) {
            uint32_t bits;
            memcpy(&bits, &B[e], 4);
            assert_int_equal(bits, 0); /* +0.0 exactly */
        }
        if (k > 0) /* each site draws its own stream */
            assert_memory_not_equal(A, a.params + a.sites[k - 1].a_offset, 16 * sizeof(float));
    }
    double mean_sq = sq / (double)n_a; /* U(-1,1): E[u^2] = 1/3 */
    printf("init: %zu A values, mean (A*sqrt(in))^2 = %.4f (uniform: 0.3333)\n", n_a, mean_sq);
    assert_true(fabs(mean_sq - 1.0 / 3.0) < 0.02);
    lora_adapter_init(&b, 1235);
    assert_memory_not_equal(a.params, b.params, a.n_params * sizeof(float));
    lora_adapter_free(&a);
    lora_adapter_free(&b);
}

/* The adapter keeps its own deep copy of the config. */
static void test_config_copy(void **state) {
    (void)state;
    lora_config c, d;
    lp_err err;
    lora_config_defaults(&c);
    assert_int_equal(lora_config_set_targets(&c, "re:.*\\.(c_attn|c_fc)", &err), 0);
    assert_int_equal(lora_config_set_patterns(&c, 0, "c_fc=2", &err), 0);
    assert_int_equal(lora_config_set_patterns(&c, 1, "h.1.attn.c_attn=4", &err), 0);
    lora_config_copy(&d, &c);
    lora_config_free(&c);
    lora_adapter a;
    if (lora_adapter_build(&a, &d, mods, n_mods, &err) < 0) fail_msg("%s", err.msg);
    lora_config_free(&d);
    assert_int_equal(a.n_sites, 4);
    assert_int_equal(a.sites[1].r, 2);
    assert_float_equal(a.sites[2].scale, 4.0f / 8.0f, 0);
    assert_string_equal(a.cfg.target_regex, ".*\\.(c_attn|c_fc)");
    assert_string_equal(a.cfg.alpha_pattern[0].pattern, "h.1.attn.c_attn");
    lora_adapter_free(&a);
}

/* A rank_pattern value beyond int is refused with an error naming it. Today "c_attn=1e10" is
 * accepted, lora_config_match converts 1e10 to int (undefined; INT_MIN on x86), and the build
 * fails with "out of memory for 18446743798831644672 adapter parameters". */
static void test_rank_pattern_value_range(void **state) {
    (void)state;
    const char *huge[] = {"c_attn=1e10", "c_attn=3e9"};
    for (int i = 0; i < 2; i++) {
        lora_config c;
        lp_err err;
        lora_config_defaults(&c);
        int rc = lora_config_set_patterns(&c, 0, huge[i], &err);
        if (rc == 0) {
            int r = 0;
            float alpha;
            lora_config_match(&c, "transformer.h.0.attn.c_attn", &r, &alpha, &err);
            fprintf(stderr, "rank_pattern '%s' accepted; the matched rank is %d\n", huge[i], r);
        }
        lora_config_free(&c);
        expect_error(rc, &err, "rank_pattern", "c_attn");
    }
}

/* A key given twice in one pattern list cannot be written as PEFT's rank_pattern dict: matching
 * here takes the first value (4), while common/peft.c's JSON object keeps the last (2), so the
 * adapter_config.json would give PEFT r=2 for tensors of rank 4. */
static void test_rank_pattern_duplicate_key(void **state) {
    (void)state;
    lora_config c;
    lp_err err;
    int r = 0;
    float alpha;
    lora_config_defaults(&c);
    int rc = lora_config_set_patterns(&c, 0, "c_attn=4,c_attn=2", &err);
    if (rc == 0) {
        lora_config_match(&c, "transformer.h.0.attn.c_attn", &r, &alpha, &err);
        fprintf(stderr, "rank_pattern 'c_attn=4,c_attn=2' accepted; the matched rank is %d\n", r);
    }
    lora_config_free(&c);
    expect_error(rc, &err, "rank_pattern", "c_attn");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_module_list_is_hf),
        cmocka_unit_test(test_same_as_peft),
        cmocka_unit_test(test_pattern_order),
        cmocka_unit_test(test_bad_targets_and_patterns),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_config_copy),
        cmocka_unit_test(test_rank_pattern_value_range),
        cmocka_unit_test(test_rank_pattern_duplicate_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
