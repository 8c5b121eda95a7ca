/* `loraps tokenize` end to end: stdin text -> the golden ids of `tokenizers`, and back with
 * --decode; flags and errors. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define GOLD   LORAPS_TEST_DATA "/reference/golden/tokenizers/"
#define LORAPS LORAPS_BIN_DIR "/loraps"

static char in_path[256], out_path[256];

/* Runs `loraps tokenize ARGS < input`; returns the exit status, output in *out. */
static int run(const char *args, const char *input, size_t len, char **out) {
    FILE *f = fopen(in_path, "wb");
    assert_non_null(f);
    fwrite(input, 1, len, f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tokenize %s < %s > %s 2>&1", LORAPS, args, in_path, out_path);
    int st = system(cmd);
    f = fopen(out_path, "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **s) {
    (void)s;
    snprintf(in_path, sizeof in_path, "/tmp/loraps_test_tokcli_%d.in", (int)getpid());
    snprintf(out_path, sizeof out_path, "/tmp/loraps_test_tokcli_%d.out", (int)getpid());
    return 0;
}

static int teardown(void **s) {
    (void)s;
    unlink(in_path), unlink(out_path);
    return 0;
}

static void check_ids(const char *out, json_t *want) {
    json_error_t je;
    json_t *got = json_loads(out, 0, &je);
    if (!got) fail_msg("not JSON: %s (%s)", out, je.text);
    if (!json_equal(got, want)) fail_msg("ids differ: %s", out);
    json_decref(got);
}

static void test_matches_golden(void **s) {
    (void)s;
    const char *names[] = {"gpt2", "llama3", "llama2"};
    for (int k = 0; k < 3; k++) {
        char path[512], args[600];
        snprintf(path, sizeof path, GOLD "%s.json", names[k]);
        json_t *root = json_load_file(path, 0, NULL);
        assert_non_null(root);
        json_t *cases = json_object_get(root, "cases");
        int checked = 0;
        for (size_t i = 0; i < json_array_size(cases); i += 7) {
            json_t *c = json_array_get(cases, i);
            json_t *text = json_object_get(c, "text");
            char *out;
            snprintf(args, sizeof args, "--model " GOLD "%s --special", names[k]);
            assert_int_equal(run(args, json_string_value(text), json_string_length(text), &out), 0);
            check_ids(out, json_object_get(c, "ids"));
            snprintf(args, sizeof args, "--tokenizer " GOLD "%s/tokenizer.json", names[k]);
            assert_int_equal(run(args, json_string_value(text), json_string_length(text), &out), 0);
            check_ids(out, json_object_get(c, "ids_nospecial"));
            snprintf(args, sizeof args, "--model " GOLD "%s --special --add-special", names[k]);
            assert_int_equal(run(args, json_string_value(text), json_string_length(text), &out), 0);
            check_ids(out, json_object_get(c, "ids_post"));
            /* and back */
            char *ids = json_dumps(json_object_get(c, "ids"), JSON_COMPACT);
            snprintf(args, sizeof args, "--model " GOLD "%s --decode", names[k]);
            assert_int_equal(run(args, ids, strlen(ids), &out), 0);
            assert_string_equal(out, json_string_value(json_object_get(c, "decode")));
            snprintf(args, sizeof args, "--model " GOLD "%s --decode --skip-special", names[k]);
            assert_int_equal(run(args, ids, strlen(ids), &out), 0);
            assert_string_equal(out, json_string_value(json_object_get(c, "decode_skip")));
            free(ids);
            checked++;
        }
        printf("%s: %d strings through loraps tokenize, all 5 ways identical\n", names[k], checked);
        json_decref(root);
    }
}

static void test_errors(void **s) {
    (void)s;
    char *out;
    assert_int_equal(run("--model " GOLD "gpt2", "ok \xff", 4, &out), 1);
    assert_non_null(strstr(out, "invalid UTF-8 at byte 3"));
    assert_int_equal(run("--model " GOLD "gpt2 --decode", "[1, 2", 5, &out), 1);
    assert_non_null(strstr(out, "expected a JSON array"));
    assert_int_equal(run("--model " GOLD "gpt2 --decode", "[1, 999999]", 11, &out), 1);
    assert_non_null(strstr(out, "stdin[1]: not a token id"));
    assert_int_equal(run("--model " GOLD "gpt2 --decode", "[1, \"x\"]", 8, &out), 1);
    assert_int_equal(run("--model /nonexistent", "x", 1, &out), 1);
    assert_non_null(strstr(out, "/nonexistent"));
    assert_int_equal(run("", "x", 1, &out), 2);
    assert_non_null(strstr(out, "--model or --tokenizer is required"));
    assert_int_equal(run("--bogus", "x", 1, &out), 2);
    assert_int_equal(run("--model", "x", 1, &out), 2);
    assert_int_equal(run("--help", "", 0, &out), 0);
    assert_non_null(strstr(out, "usage: loraps tokenize"));
    assert_int_equal(run("--model " GOLD "gpt2", "", 0, &out), 0);
    assert_string_equal(out, "[]\n");
}

static void test_pretokenize(void **s) {
    (void)s;
    char *out, args[1200], bin[300];
    snprintf(bin, sizeof bin, "%s.bin", in_path);
    snprintf(args, sizeof args, "--model " GOLD "demo512 --data " GOLD "train_corpus.txt --out %s",
             bin);
    assert_int_equal(run(args, "", 0, &out), 0);
    assert_non_null(strstr(out, "49 documents"));
    FILE *f = fopen(bin, "rb");
    assert_non_null(f);
    char head[24];
    assert_int_equal(fread(head, 1, 24, f), 24);
    fclose(f);
    assert_memory_equal(head, "LPTK", 4);
    assert_int_equal(head[8], 2); /* vocab 512: 2 bytes per token */
    unlink(bin);
    assert_int_equal(run("--model " GOLD "demo512 --data " GOLD "train_corpus.txt", "", 0, &out),
                     2);
    assert_int_equal(run("--model " GOLD "demo512 --data x --out y --bad-data maybe", "", 0, &out),
                     2);
    assert_non_null(strstr(out, "not one of fail, skip"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_golden),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_pretokenize),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
