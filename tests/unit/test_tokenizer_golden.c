/* The tokenizer against the `tokenizers` library: golden/tokenizers/<name>.json holds, for an
 * edge-case corpus, the ids, decodes and normalizer output that tokenizers 0.23 produced with
 * golden/tokenizers/<name>/tokenizer.json, and normalizers.json what each normalizer makes of
 * 8,497 strings (tests/reference/tokenizer_reference.py). Every id, decode and normalized string
 * must be identical. */
#include "tokenizer.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define GOLD LORAPS_TEST_DATA "/reference/golden/tokenizers/"

static void show(const char *what, const char *text, const int *got, size_t n, json_t *want) {
    fprintf(stderr, "  %s mismatch on \"%.60s\" (%zu bytes)\n    got :", what, text, strlen(text));
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", got[i]);
    fprintf(stderr, "%s\n    want:", n > 40 ? " ..." : "");
    for (size_t i = 0; i < json_array_size(want) && i < 40; i++)
        fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
    fprintf(stderr, "\n");
}

static int same_ids(const int *got, size_t n, json_t *want) {
    if (n != json_array_size(want)) return 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != json_integer_value(json_array_get(want, i))) return 0;
    return 1;
}

/* Returns the number of failed checks; counts the checks made. */
static int check_one(const char *name, int *n_checks, int *n_cases) {
    char path[512];
    snprintf(path, sizeof path, GOLD "%s.json", name);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) fail_msg("%s: %s", path, je.text);
    snprintf(path, sizeof path, GOLD "%s/tokenizer.json", name);
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, path, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(tokenizer_vocab_size(t),
                     (int)json_integer_value(json_object_get(root, "vocab_size")));
    json_t *cases = json_object_get(root, "cases"), *c;
    size_t k;
    int failed = 0;
    json_array_foreach(cases, k, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        struct {
            const char *key;
            int allow, add;
        } modes[] = {{"ids", 1, 0}, {"ids_nospecial", 0, 0}, {"ids_post", 1, 1}};
        for (int m = 0; m < 3; m++) {
            int *ids;
            size_t n;
            if (tokenizer_encode(t, text, len, modes[m].allow, modes[m].add, &ids, &n, &err) < 0)
                fail_msg("%s: encode: %s", name, err.msg);
            json_t *want = json_object_get(c, modes[m].key);
            (*n_checks)++;
            if (!same_ids(ids, n, want)) {
                failed++;
                show(modes[m].key, text, ids, n, want);
            }
            if (m == 0) {
                for (int skip = 0; skip < 2; skip++) {
                    char *d = tokenizer_decode(t, ids, n, skip);
                    const char *wd =
                        json_string_value(json_object_get(c, skip ? "decode_skip" : "decode"));
                    assert_non_null(d);
                    (*n_checks)++;
                    if (strcmp(d, wd)) {
                        failed++;
                        fprintf(stderr,
                                "  decode%s mismatch on \"%.60s\": got \"%.80s\" want \"%.80s\"\n",
                                skip ? "(skip special)" : "", text, d, wd);
                    }
                    free(d);
                }
            }
            free(ids);
        }
        char *norm;
        size_t norm_len;
        json_t *want_norm = json_object_get(c, "normalized");
        if (tokenizer_normalize(t, text, len, &norm, &norm_len, &err) < 0)
            fail_msg("%s: normalize: %s", name, err.msg);
        (*n_checks)++;
        if (norm_len != json_string_length(want_norm) ||
            memcmp(norm, json_string_value(want_norm), norm_len)) {
            failed++;
            fprintf(stderr, "  normalized mismatch on \"%.60s\": got \"%.80s\"\n", text, norm);
        }
        free(norm);
        (*n_cases)++;
    }
    tokenizer_free(t);
    json_decref(root);
    return failed;
}

static void run_golden(const char *name) {
    int checks = 0, cases = 0;
    int failed = check_one(name, &checks, &cases);
    printf("%s: %d strings, %d checks (3 encodings + 2 decodes + the normalizer each), %d differ "
           "from tokenizers",
           name, cases, checks, failed);
    printf("\n");
    assert_int_equal(failed, 0);
}

static void test_gpt2(void **s) {
    (void)s;
    run_golden("gpt2");
}
static void test_gpt2_prefix(void **s) {
    (void)s;
    run_golden("gpt2_prefix");
}
static void test_llama3(void **s) {
    (void)s;
    run_golden("llama3");
}
static void test_llama2(void **s) {
    (void)s;
    run_golden("llama2");
}
static void test_metaspace(void **s) {
    (void)s;
    run_golden("metaspace");
}
static void test_qwen2(void **s) {
    (void)s;
    run_golden("qwen2");
}
static void test_digits(void **s) {
    (void)s;
    run_golden("digits");
}
static void test_demo4096(void **s) {
    (void)s;
    run_golden("demo4096");
}
static void test_demo512(void **s) {
    (void)s;
    run_golden("demo512");
}
static void test_nfkc(void **s) {
    (void)s;
    run_golden("nfkc");
}
static void test_nfd_lower(void **s) {
    (void)s;
    run_golden("nfd_lower");
}
static void test_accents(void **s) {
    (void)s;
    run_golden("accents");
}
static void test_sp_nfkc(void **s) {
    (void)s;
    run_golden("sp_nfkc");
}

/* Each normalizer of normalizers.json, in the gpt2 golden file in place of its (absent) one, on
 * every string: every code point with a decomposition or a lowercase mapping alone, Hangul,
 * starters with marks, the edge cases. */
static void test_normalizers(void **s) {
    (void)s;
    json_t *root = json_load_file(GOLD "normalizers.json", 0, NULL);
    assert_non_null(root);
    json_t *texts = json_object_get(root, "texts"), *norms = json_object_get(root, "normalizers");
    json_t *n;
    size_t k;
    int failed_total = 0;
    json_array_foreach(norms, k, n) {
        json_t *tj = json_load_file(GOLD "gpt2/tokenizer.json", 0, NULL);
        assert_non_null(tj);
        json_object_set(tj, "normalizer", json_object_get(n, "normalizer"));
        char path[128];
        snprintf(path, sizeof path, "/tmp/loraps_normalizer_%d.json", (int)getpid());
        assert_int_equal(json_dump_file(tj, path, 0), 0);
        json_decref(tj);
        tokenizer *t;
        lp_err err;
        if (tokenizer_load(&t, path, &err) < 0) fail_msg("%s", err.msg);
        unlink(path);
        json_t *outs = json_object_get(n, "out"), *text;
        size_t i;
        int failed = 0;
        json_array_foreach(texts, i, text) {
            char *got;
            size_t got_len;
            json_t *want = json_array_get(outs, i);
            if (tokenizer_normalize(t, json_string_value(text), json_string_length(text), &got,
                                    &got_len, &err) < 0)
                fail_msg("%s", err.msg);
            if (got_len != json_string_length(want) ||
                memcmp(got, json_string_value(want), got_len)) {
                if (failed++ < 5)
                    fprintf(stderr, "  %s: string %zu: got \"%s\", want \"%s\"\n",
                            json_string_value(json_object_get(n, "name")), i, got,
                            json_string_value(want));
            }
            free(got);
        }
        printf("normalizer %-28s %zu strings, %d differ from tokenizers %s\n",
               json_string_value(json_object_get(n, "name")), json_array_size(texts), failed,
               json_string_value(json_object_get(root, "tokenizers_version")));
        failed_total += failed;
        tokenizer_free(t);
    }
    json_decref(root);
    assert_int_equal(failed_total, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2),      cmocka_unit_test(test_gpt2_prefix),
        cmocka_unit_test(test_llama3),    cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_metaspace), cmocka_unit_test(test_demo512),
        cmocka_unit_test(test_qwen2),     cmocka_unit_test(test_digits),
        cmocka_unit_test(test_demo4096),  cmocka_unit_test(test_nfkc),
        cmocka_unit_test(test_nfd_lower), cmocka_unit_test(test_accents),
        cmocka_unit_test(test_sp_nfkc),   cmocka_unit_test(test_normalizers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
