/* gpt2_config: reading HF config.json, errors that name the file and field, writing a config
 * transformers loads as GPT2LMHeadModel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsutil.h"
#include "hf_config.h"

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];
static char cfg_path[512];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loraps_test_cfg_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", tmpdir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The config.json of the released gpt2 checkpoint (trimmed of task_specific_params). */
static const char *GPT2_SMALL =
    "{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"],"
    " \"attn_pdrop\": 0.1, \"bos_token_id\": 50256, \"embd_pdrop\": 0.1,"
    " \"eos_token_id\": 50256, \"initializer_range\": 0.02, \"layer_norm_epsilon\": 1e-05,"
    " \"model_type\": \"gpt2\", \"n_ctx\": 1024, \"n_embd\": 768, \"n_head\": 12,"
    " \"n_layer\": 12, \"n_positions\": 1024, \"resid_pdrop\": 0.1,"
    " \"summary_activation\": null, \"summary_first_dropout\": 0.1,"
    " \"summary_proj_to_labels\": true, \"summary_type\": \"cls_index\","
    " \"summary_use_proj\": true, \"vocab_size\": 50257}";

static void write_config(const char *json) {
    lp_err err;
    assert_int_equal(fs_write_atomic(cfg_path, json, strlen(json), &err), 0);
}

/* A minimal valid config with `extra` spliced in as more fields (may override earlier ones
 * only where names differ: duplicates are rejected). */
static void write_minimal(const char *extra) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 4, \"n_positions\": 128%s%s}",
             extra[0] ? ", " : "", extra);
    write_config(json);
}

static void expect_error(const char *phrase) {
    gpt2_config c;
    lp_err err = {{0}};
    assert_int_equal(gpt2_config_read(&c, cfg_path, &err), -1);
    if (!strstr(err.msg, phrase) || !strstr(err.msg, cfg_path)) {
        fail_msg("error '%s' lacks '%s' or the path", err.msg, phrase);
    }
}

static void test_reads_gpt2_small(void **state) {
    (void)state;
    write_config(GPT2_SMALL);
    gpt2_config c;
    lp_err err;
    assert_int_equal(gpt2_config_read(&c, cfg_path, &err), 0);
    assert_int_equal(c.n_embd, 768);
    assert_int_equal(c.n_layer, 12);
    assert_int_equal(c.n_head, 12);
    assert_int_equal(c.n_positions, 1024);
    assert_int_equal(c.vocab_size, 50257);
    assert_true(c.layer_norm_epsilon == 1e-5f);
    assert_string_equal(c.activation_function, "gelu_new");
    assert_int_equal(c.tie_word_embeddings, 1);
}

static void test_defaults_and_fallbacks(void **state) {
    (void)state;
    gpt2_config c;
    lp_err err;
    write_config("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 4, \"n_ctx\": 256,"
                 " \"vocab_size\": 100}");
    assert_int_equal(gpt2_config_read(&c, cfg_path, &err), 0);
    assert_int_equal(c.n_positions, 256); /* n_ctx stands in for n_positions */
    assert_true(c.layer_norm_epsilon == 1e-5f);
    assert_string_equal(c.activation_function, "gelu_new");
    assert_int_equal(c.tie_word_embeddings, 1);

    write_minimal("\"vocab_size\": 100, \"n_ctx\": 999, \"layer_norm_epsilon\": 0.001,"
                  " \"activation_function\": \"gelu_pytorch_tanh\","
                  " \"tie_word_embeddings\": false, \"n_inner\": 256");
    assert_int_equal(gpt2_config_read(&c, cfg_path, &err), 0);
    assert_int_equal(c.n_positions, 128); /* n_positions wins over n_ctx */
    assert_true(c.layer_norm_epsilon == 1e-3f);
    assert_string_equal(c.activation_function, "gelu_pytorch_tanh");
    assert_int_equal(c.tie_word_embeddings, 0);

    write_minimal("\"vocab_size\": 100, \"layer_norm_epsilon\": 1");
    assert_int_equal(gpt2_config_read(&c, cfg_path, &err), 0);
    assert_true(c.layer_norm_epsilon == 1.0f); /* an integer is a number too */
}

static void test_bad_integer_fields(void **state) {
    (void)state;
    write_config("{\"n_embd\": \"abc\", \"n_layer\": 2, \"n_head\": 4, \"n_positions\": 128,"
                 " \"vocab_size\": 100}");
    gpt2_config c;
    lp_err err;
    assert_int_equal(gpt2_config_read(&c, cfg_path, &err), -1);
    char want[600];
    snprintf(want, sizeof want, "%s: field 'n_embd' must be a positive integer, got \"abc\"",
             cfg_path);
    assert_string_equal(err.msg, want);

    write_minimal("\"vocab_size\": 0");
    expect_error("field 'vocab_size' must be a positive integer, got 0");
    write_minimal("\"vocab_size\": -5");
    expect_error("field 'vocab_size' must be a positive integer, got -5");
    write_minimal("\"vocab_size\": 100.0");
    expect_error("field 'vocab_size' must be a positive integer, got 100.0");
    write_minimal("\"vocab_size\": 3000000000");
    expect_error("field 'vocab_size' must be a positive integer, got 3000000000");
    write_minimal("\"vocab_size\": null");
    expect_error("field 'vocab_size' must be a positive integer, got null");
    write_minimal("\"vocab_size\": [1]");
    expect_error("field 'vocab_size' must be a positive integer, got [1]");
    write_minimal("");
    expect_error("field 'vocab_size' is missing");
    write_config("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 100}");
    expect_error("field 'n_positions' is missing");
    write_config("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 4, \"n_ctx\": \"x\","
                 " \"vocab_size\": 100}");
    expect_error("field 'n_ctx' must be a positive integer");
    write_config("{\"n_embd\": 64, \"n_head\": 4, \"n_positions\": 8, \"vocab_size\": 100}");
    expect_error("field 'n_layer' is missing");
    write_config("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 0, \"n_positions\": 8,"
                 " \"vocab_size\": 100}");
    expect_error("field 'n_head' must be a positive integer, got 0");
}

static void test_bad_other_fields(void **state) {
    (void)state;
    write_minimal("\"vocab_size\": 100, \"activation_function\": \"relu\"");
    expect_error("field 'activation_function' must be \"gelu_new\" or \"gelu_pytorch_tanh\"");
    write_minimal("\"vocab_size\": 100, \"activation_function\": \"gelu\"");
    expect_error("got \"gelu\"");
    write_minimal("\"vocab_size\": 100, \"activation_function\": 1");
    expect_error("field 'activation_function'");
    write_minimal("\"vocab_size\": 100, \"layer_norm_epsilon\": \"small\"");
    expect_error("field 'layer_norm_epsilon' must be a positive number, got \"small\"");
    write_minimal("\"vocab_size\": 100, \"layer_norm_epsilon\": -1e-5");
    expect_error("field 'layer_norm_epsilon' must be a positive number");
    write_minimal("\"vocab_size\": 100, \"layer_norm_epsilon\": 1e300");
    expect_error("field 'layer_norm_epsilon' must be a positive number");
    write_minimal("\"vocab_size\": 100, \"tie_word_embeddings\": \"yes\"");
    expect_error("field 'tie_word_embeddings' must be true or false, got \"yes\"");
    write_minimal("\"vocab_size\": 100, \"model_type\": \"llama\"");
    expect_error("field 'model_type' must be \"gpt2\", got \"llama\"");
    write_minimal("\"vocab_size\": 100, \"n_inner\": 100");
    expect_error("field 'n_inner' must be null or 4 * n_embd, got 100");
    write_config("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 5, \"n_positions\": 8,"
                 " \"vocab_size\": 100}");
    expect_error("n_embd (64) must be divisible by n_head (5)");
}

static void test_bad_files(void **state) {
    (void)state;
    write_config("{\"n_embd\": 64,");
    expect_error("malformed JSON");
    write_config("[64]");
    expect_error("not a JSON object");
    write_minimal("\"vocab_size\": 100, \"n_embd\": 32");
    expect_error("duplicate");
    unlink(cfg_path);
    expect_error("No such file or directory");
}

static void test_write_then_read(void **state) {
    (void)state;
    gpt2_config c = {.n_embd = 96,
                     .n_layer = 3,
                     .n_head = 6,
                     .n_positions = 512,
                     .vocab_size = 1000,
                     .layer_norm_epsilon = 1e-5f,
                     .activation_function = "gelu_pytorch_tanh",
                     .tie_word_embeddings = 1};
    lp_err err;
    assert_int_equal(gpt2_config_write(&c, cfg_path, &err), 0);
    gpt2_config back;
    assert_int_equal(gpt2_config_read(&back, cfg_path, &err), 0);
    assert_memory_equal(&back, &c, sizeof c);
}

/* The fields transformers needs to build GPT2LMHeadModel with the same shapes. */
static void test_written_json_is_hf_shaped(void **state) {
    (void)state;
    gpt2_config c = {.n_embd = 64,
                     .n_layer = 2,
                     .n_head = 4,
                     .n_positions = 128,
                     .vocab_size = 300,
                     .layer_norm_epsilon = 1e-5f};
    lp_err err;
    assert_int_equal(gpt2_config_write(&c, cfg_path, &err), 0);
    char *text;
    size_t len;
    assert_int_equal(fs_read_all(cfg_path, &text, &len, &err), 0);
    int ends_in_newline = text[len - 1] == '\n';
    int short_epsilon = strstr(text, "\"layer_norm_epsilon\": 1e-5,") != NULL;
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    assert_true(ends_in_newline);
    assert_true(short_epsilon); /* not 9.99999974737875e-06 */
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "model_type")), "gpt2");
    json_t *arch = json_object_get(root, "architectures");
    assert_string_equal(json_string_value(json_array_get(arch, 0)), "GPT2LMHeadModel");
    assert_string_equal(json_string_value(json_object_get(root, "activation_function")),
                        "gelu_new");
    assert_true(json_is_null(json_object_get(root, "n_inner")));
    assert_int_equal(json_integer_value(json_object_get(root, "n_ctx")), 128);
    assert_int_equal(json_integer_value(json_object_get(root, "n_positions")), 128);
    assert_int_equal(json_integer_value(json_object_get(root, "bos_token_id")), 299);
    assert_int_equal(json_integer_value(json_object_get(root, "eos_token_id")), 299);
    assert_true(json_real_value(json_object_get(root, "resid_pdrop")) == 0.0);
    assert_true(json_is_real(json_object_get(root, "attn_pdrop")));
    assert_true(json_real_value(json_object_get(root, "initializer_range")) == 0.02);
    assert_true(json_is_false(json_object_get(root, "tie_word_embeddings")));
    json_decref(root);

    gpt2_config bad = c;
    bad.n_head = 5;
    assert_int_equal(gpt2_config_write(&bad, cfg_path, &err), -1);
    assert_non_null(strstr(err.msg, "invalid"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_gpt2_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_and_fallbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_integer_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_other_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_then_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_json_is_hf_shaped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
