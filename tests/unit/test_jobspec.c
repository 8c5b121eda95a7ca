/* The job on the wire (net/jobspec.c): every JobSpec field is carried by a job key, and every key
 * but the server's own travels through a packed Welcome unchanged. */
#include "jobspec.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Settings the server keeps to itself: where and how often it checkpoints. */
static int server_only(const char *name) {
    return !strcmp(name, "save_every") || !strcmp(name, "keep_checkpoints");
}

static void every_field_has_a_key(void **state) {
    (void)state;
    const char *first = NULL;
    int n = jobspec_unmapped_fields(&first);
    if (n) fail_msg("%d JobSpec field(s) no job key carries, first: %s", n, first);
}

/* A value for every key that differs from its default and passes job_validate. */
static void unusual_job(job *j) {
    job_defaults(j);
    lp_err err;
    static const char *const set[][2] = {
        {"r", "5"},
        {"lora_alpha", "7.5"},
        {"lora_dropout", "0.25"},
        {"use_rslora", "true"},
        {"target_modules", "q_proj,v_proj"},
        {"rank_pattern", "q_proj=3"},
        {"alpha_pattern", "v_proj=2.5"},
        {"lr", "0.0125"},
        {"adam_beta1", "0.85"},
        {"adam_beta2", "0.95"},
        {"adam_epsilon", "1e-6"},
        {"weight_decay", "0.01"},
        {"lr_scheduler", "linear"},
        {"warmup_steps", "3"},
        {"max_grad_norm", "0.5"},
        {"micro_batch", "3"},
        {"seq_len", "48"},
        {"grad_accum", "2"},
        {"max_steps", "77"},
        {"eval_every", "11"},
        {"save_every", "13"},
        {"keep_checkpoints", "5"},
        {"seed", "987654321987"},
        {"threads", "3"},
        {"mode", "async"},
        {"staleness", "2"},
        {"workers", "4"},
        {"wire_dtype", "bf16"},
        {"heartbeat_ms", "250"},
        {"heartbeat_timeout_ms", "4000"},
        {"layout", "pad"},
        {"txt_docs", "line"},
        {"bad_data", "skip"},
        {"long_docs", "truncate"},
        {"special_tokens", "special"},
        {"val_fraction", "0.125"},
    };
    size_t n_set = sizeof set / sizeof set[0], n;
    job_keys(&n);
    assert_int_equal(n_set, n); /* a new key needs a row here too */
    for (size_t i = 0; i < n_set; i++)
        if (job_set(j, set[i][0], set[i][1], &err) < 0) fail_msg("%s", err.msg);
    if (job_validate(j, &err) < 0) fail_msg("%s", err.msg);
}

static void round_trip_through_a_packed_message(void **state) {
    (void)state;
    job sent, got, defaults;
    unusual_job(&sent);
    job_defaults(&defaults);
    Loraps__JobSpec js;
    jobspec_from_job(&sent, &js);
    size_t len = loraps__job_spec__get_packed_size(&js);
    uint8_t *buf = malloc(len);
    loraps__job_spec__pack(&js, buf);
    Loraps__JobSpec *back = loraps__job_spec__unpack(NULL, len, buf);
    assert_non_null(back);
    lp_err err;
    if (jobspec_to_job(back, &got, &err) < 0) fail_msg("%s", err.msg);
    size_t n;
    const job_key *keys = job_keys(&n);
    for (size_t i = 0; i < n; i++) {
        const job *want = server_only(keys[i].name) ? &defaults : &sent;
        size_t size = keys[i].type == K_STRING  ? keys[i].size
                      : keys[i].type == K_U64   ? sizeof(unsigned long long)
                      : keys[i].type == K_FLOAT ? sizeof(float)
                                                : sizeof(int);
        if (memcmp((const char *)want + keys[i].offset, (const char *)&got + keys[i].offset,
                   size) != 0)
            fail_msg("%s did not come through the wire as %s", keys[i].name,
                     server_only(keys[i].name) ? "its default" : "sent");
    }
    loraps__job_spec__free_unpacked(back, NULL);
    free(buf);
}

static void an_overlong_string_is_refused(void **state) {
    (void)state;
    job j;
    job_defaults(&j);
    Loraps__JobSpec js;
    jobspec_from_job(&j, &js);
    char longer[2048];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    js.target_modules = longer;
    lp_err err;
    assert_int_equal(jobspec_to_job(&js, &j, &err), -1);
    assert_non_null(strstr(err.msg, "target_modules"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_field_has_a_key),
        cmocka_unit_test(round_trip_through_a_packed_message),
        cmocka_unit_test(an_overlong_string_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
