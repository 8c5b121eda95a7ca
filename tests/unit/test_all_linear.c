/* target_modules "all-linear", PEFT's shorthand: every linear layer of the blocks, for any
 * family; written out by peft_save as the adapted module names (as PEFT does after expanding
 * it), so PEFT and peft_load read back exactly the same adapter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsutil.h"
#include "lora_targets.h"
#include "model_load.h"
#include "llama_init.h"
#include "model.h"
#include "peft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_family(const char *dir, const char *expect_json) {
    lp_err err;
    model *m;
    if (model_load(&m, dir, &err) < 0) fail_msg("%s", err.msg);
    const lora_module *mods;
    int n = model_lora_modules(m, &mods);
    lora_config c;
    lora_config_defaults(&c);
    assert_int_equal(lora_config_set_targets(&c, "all-linear", &err), 0);
    lora_adapter a;
    assert_int_equal(lora_adapter_build(&a, &c, mods, n, &err), 0);
    assert_int_equal(a.n_sites, n); /* every module the model lists */
    for (size_t i = 0; i < a.n_params; i++) a.params[i] = (float)(i % 13) * 0.01f;

    char out[] = "/tmp/loraps-alllinear-XXXXXX";
    assert_non_null(mkdtemp(out));
    assert_int_equal(peft_save(out, &a, dir, model_fan_in_fan_out(m), &err), 0);
    char path[256], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/adapter_config.json", out);
    assert_int_equal(fs_read_all(path, &text, &len, &err), 0);
    printf("%s: %s\n", model_arch(m), strstr(text, "\"target_modules\""));
    assert_non_null(strstr(text, expect_json));
    assert_null(strstr(text, "all-linear"));
    free(text);

    lora_adapter back;
    if (peft_load(out, mods, n, &back, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(back.n_params, a.n_params);
    assert_memory_equal(back.params, a.params, a.n_params * sizeof(float));
    lora_adapter_free(&back);

    snprintf(path, sizeof path, "rm -rf %s", out);
    assert_int_equal(system(path), 0);
    lora_adapter_free(&a);
    lora_config_free(&c);
    model_free(m);
}

static void test_gpt2(void **state) {
    (void)state;
    check_family(LORAPS_TEST_DATA "/reference/golden/gpt2_tiny",
                 "\"target_modules\": [\n    \"c_attn\",\n    \"c_proj\",\n    \"c_fc\"\n  ]");
}

static void test_llama(void **state) {
    (void)state;
    char dir[] = "/tmp/loraps-alllinear-llama-XXXXXX";
    assert_non_null(mkdtemp(dir));
    llama_config c;
    lp_err err;
    assert_int_equal(llama_preset("tiny", &c, &err), 0);
    assert_int_equal(llama_init_write(dir, &c, 1, &err), 0);
    check_family(dir, "\"q_proj\",\n    \"k_proj\",\n    \"v_proj\",\n    \"o_proj\",\n    "
                      "\"gate_proj\",\n    \"up_proj\",\n    \"down_proj\"\n  ]");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2),
        cmocka_unit_test(test_llama),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
