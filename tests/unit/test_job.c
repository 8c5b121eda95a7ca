/* job: the settings table by name and flag spelling, job files (JSON), flags, LORAPS_*
 * environment variables, their precedence as `loraps train` and loraps-ps apply them (file, then
 * flags, then environment), validation of every range, and the derived LoRA/AdamW/schedule
 * views. Keys are tested by name: more rows may join the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsutil.h"
#include "job.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];
static char job_path[512];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loraps_test_job_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(job_path, sizeof job_path, "%s/job.json", tmpdir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_job(const char *json) {
    lp_err err;
    assert_int_equal(fs_write_atomic(job_path, json, strlen(json), &err), 0);
}

static void expect_error(int rc, const lp_err *err, const char *needle1, const char *needle2) {
    assert_int_equal(rc, -1);
    if ((needle1 && !strstr(err->msg, needle1)) || (needle2 && !strstr(err->msg, needle2))) {
        fprintf(stderr, "error '%s' lacks '%s' / '%s'\n", err->msg, needle1 ? needle1 : "",
                needle2 ? needle2 : "");
        fail();
    }
}

typedef enum kind { INT, FLOAT, BOOL, STR, U64 } kind;

/* Every key, a valid non-default value, and where it lands. */
typedef struct key_case {
    const char *key, *value;
    kind type;
    size_t offset;
    double want; /* numbers and bools */
} key_case;

#define K(f, v, t, w)                                                                              \
    { #f, v, t, offsetof(job, f), w }
static const key_case KEYS[] = {
    K(r, "16", INT, 16),
    K(lora_alpha, "24.5", FLOAT, 24.5),
    K(lora_dropout, "0.05", FLOAT, 0.05f),
    K(use_rslora, "true", BOOL, 1),
    K(target_modules, "c_attn,mlp.c_fc", STR, 0),
    K(rank_pattern, "c_attn=4", STR, 0),
    K(alpha_pattern, "h.1.mlp.c_fc=3", STR, 0),
    K(lr, "1e-3", FLOAT, 1e-3f),
    K(adam_beta1, "0.8", FLOAT, 0.8f),
    K(adam_beta2, "0.95", FLOAT, 0.95f),
    K(adam_epsilon, "1e-6", FLOAT, 1e-6f),
    K(weight_decay, "0.01", FLOAT, 0.01f),
    K(lr_scheduler, "linear", STR, 0),
    K(warmup_steps, "10", INT, 10),
    K(max_grad_norm, "0.5", FLOAT, 0.5),
    K(micro_batch, "2", INT, 2),
    K(seq_len, "128", INT, 128),
    K(grad_accum, "4", INT, 4),
    K(max_steps, "500", INT, 500),
    K(eval_every, "50", INT, 50),
    K(save_every, "100", INT, 100),
    K(seed, "18446744073709551615", U64, 0),
    K(threads, "3", INT, 3),
    K(mode, "async", STR, 0),
    K(staleness, "2", INT, 2),
    K(workers, "4", INT, 4),
    K(wire_dtype, "bf16", STR, 0),
    K(heartbeat_ms, "250", INT, 250),
    K(heartbeat_timeout_ms, "5000", INT, 5000),
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

static void check_key(const job *j, const key_case *k) {
    const char *field = (const char *)j + k->offset;
    switch (k->type) {
    case INT:
    case BOOL:
        assert_int_equal(*(const int *)field, (int)k->want);
        break;
    case FLOAT:
        assert_true(*(const float *)field == (float)k->want);
        break;
    case STR:
        assert_string_equal(field, k->value);
        break;
    case U64:
        assert_true(*(const unsigned long long *)field == strtoull(k->value, NULL, 10));
        break;
    }
}

static void flag_spelling(const char *key, char *out, size_t size) {
    snprintf(out, size, "%s", key);
    for (char *c = out; *c; c++)
        if (*c == '_') *c = '-';
}

static void test_defaults_validate(void **state) {
    (void)state;
    job j;
    lp_err err;
    job_defaults(&j);
    if (job_validate(&j, &err) < 0) fail_msg("defaults: %s", err.msg);
    assert_int_equal(j.r, 8);
    assert_true(j.lora_alpha == 16.0f);
    assert_string_equal(j.lr_scheduler, "cosine");
    assert_string_equal(j.mode, "sync");
    assert_string_equal(j.wire_dtype, "f32");
    assert_true(j.adam_beta1 == 0.9f && j.adam_beta2 == 0.999f && j.adam_epsilon == 1e-8f);
    /* every key is printed (the effective configuration at start-up) and has a help line */
    char *text = NULL, *help = NULL;
    size_t n = 0, nh = 0;
    FILE *f = open_memstream(&text, &n), *h = open_memstream(&help, &nh);
    job_print(&j, f, "  ");
    job_print_help(h);
    fclose(f);
    fclose(h);
    for (size_t i = 0; i < N_KEYS; i++) {
        char needle[80], flag[64];
        snprintf(needle, sizeof needle, "  %s ", KEYS[i].key);
        assert_non_null(strstr(text, needle));
        flag_spelling(KEYS[i].key, flag, sizeof flag);
        snprintf(needle, sizeof needle, "--%s ", flag);
        assert_non_null(strstr(help, needle));
    }
    free(text);
    free(help);
}

/* Each key by its table name, by its flag spelling, as a flag, from the environment and from a
 * job file. */
static void test_every_key_every_way(void **state) {
    (void)state;
    lp_err err;
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_case *k = &KEYS[i];
        char flag[64], arg[600], var[80], json[700];
        flag_spelling(k->key, flag, sizeof flag);
        job j;

        job_defaults(&j);
        assert_int_equal(job_set(&j, k->key, k->value, &err), 0);
        check_key(&j, k);

        job_defaults(&j);
        assert_int_equal(job_set(&j, flag, k->value, &err), 0);
        check_key(&j, k);

        job_defaults(&j);
        snprintf(arg, sizeof arg, "--%s=%s", flag, k->value);
        char *argv1[] = {"prog", arg};
        int idx = 1;
        assert_int_equal(job_parse_flag(&j, 2, argv1, &idx, &err), 1);
        assert_int_equal(idx, 2);
        check_key(&j, k);

        job_defaults(&j);
        snprintf(arg, sizeof arg, "--%s", flag);
        char *argv2[] = {"prog", arg, (char *)k->value, "--next"};
        idx = 1;
        assert_int_equal(job_parse_flag(&j, 4, argv2, &idx, &err), 1);
        assert_int_equal(idx, 3);
        check_key(&j, k);

        job_defaults(&j);
        snprintf(var, sizeof var, "LORAPS_%s", k->key);
        for (char *c = var; *c; c++) *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
        setenv(var, k->value, 1);
        int rc = job_apply_env(&j, &err);
        unsetenv(var);
        assert_int_equal(rc, 0);
        check_key(&j, k);

        job_defaults(&j);
        if (k->type == STR || k->type == U64)
            snprintf(json, sizeof json, "{\"%s\": \"%s\"}", k->key, k->value);
        else
            snprintf(json, sizeof json, "{\"%s\": %s}", k->key, k->value);
        write_job(json);
        if (job_load_file(&j, job_path, &err) < 0) fail_msg("%s: %s", json, err.msg);
        check_key(&j, k);
    }
    /* all of them at once still validate */
    job j;
    job_defaults(&j);
    for (size_t i = 0; i < N_KEYS; i++)
        assert_int_equal(job_set(&j, KEYS[i].key, KEYS[i].value, &err), 0);
    if (job_validate(&j, &err) < 0) fail_msg("%s", err.msg);
}

static void test_bool_spellings(void **state) {
    (void)state;
    const char *yes[] = {"1", "true", "yes"}, *no[] = {"0", "false", "no"};
    job j;
    lp_err err;
    job_defaults(&j);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(job_set(&j, "use-rslora", yes[i], &err), 0);
        assert_int_equal(j.use_rslora, 1);
        assert_int_equal(job_set(&j, "use_rslora", no[i], &err), 0);
        assert_int_equal(j.use_rslora, 0);
    }
}

/* A bad value names the key and the value, and changes nothing. */
static void test_bad_values(void **state) {
    (void)state;
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"r", "8.5"},
        {"r", ""},
        {"r", "eight"},
        {"r", "99999999999"},
        {"r", "8 "},
        {"warmup-steps", "0x10"},
        {"lr", "nan"},
        {"lr", "inf"},
        {"lr", "1e999"},
        {"lr", "1e-3x"},
        {"lora_alpha", ""},
        {"use_rslora", "maybe"},
        {"use_rslora", "TRUE"},
        {"use_rslora", ""},
        {"seed", "-1"},
        {"seed", "18446744073709551616"},
        {"seed", "1.5"},
        {"max_grad_norm", "-inf"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        job j, before;
        lp_err err;
        job_defaults(&j);
        before = j;
        char quoted[64], name[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i].value);
        snprintf(name, sizeof name, "%s", bad[i].key);
        for (char *c = name; *c; c++)
            if (*c == '-') *c = '_';
        expect_error(job_set(&j, bad[i].key, bad[i].value, &err), &err, name, quoted);
        assert_memory_equal(&j, &before, sizeof j);
    }
    job j;
    lp_err err;
    job_defaults(&j);
    expect_error(job_set(&j, "lora_alfa", "16", &err), &err, "unknown job setting", "'lora_alfa'");
    expect_error(job_set(&j, "", "16", &err), &err, "unknown job setting", NULL);
    char long_name[200];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    expect_error(job_set(&j, long_name, "1", &err), &err, "unknown job setting", NULL);
    /* a string longer than its field is refused, not cut */
    expect_error(job_set(&j, "mode", "asynchronous", &err), &err, "mode", "longer than");
    char big[700];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    expect_error(job_set(&j, "target_modules", big, &err), &err, "target_modules", "longer");
    assert_string_equal(j.mode, "sync");
    assert_string_equal(j.target_modules, "all-linear");
}

static void test_job_file(void **state) {
    (void)state;
    job j;
    lp_err err;
    job_defaults(&j);
    write_job("{\n"
              "  \"r\": 16, \"lora_alpha\": 32.5, \"use_rslora\": true, \"lora-dropout\": 0.1,\n"
              "  \"target_modules\": [\"c_attn\", \"mlp.c_fc\"],\n"
              "  \"rank_pattern\": \"c_attn=4\", \"lr\": 5e-4, \"lr_scheduler\": \"linear\",\n"
              "  \"seed\": 42, \"max_steps\": 20.0, \"weight_decay\": 0, \"warmup_steps\": \"3\"\n"
              "}\n");
    if (job_load_file(&j, job_path, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(j.r, 16);
    assert_true(j.lora_alpha == 32.5f);
    assert_int_equal(j.use_rslora, 1);
    assert_true(j.lora_dropout == 0.1f);
    assert_string_equal(j.target_modules, "c_attn,mlp.c_fc");
    assert_string_equal(j.rank_pattern, "c_attn=4");
    assert_true(j.lr == 5e-4f);
    assert_string_equal(j.lr_scheduler, "linear");
    assert_true(j.seed == 42);
    assert_int_equal(j.max_steps, 20);
    assert_true(j.weight_decay == 0.0f);
    assert_int_equal(j.warmup_steps, 3);
    assert_true(j.micro_batch == 4); /* untouched keys keep their values */
    if (job_validate(&j, &err) < 0) fail_msg("%s", err.msg);

    write_job("{\"target_modules\": \"re:.*\\\\.1\\\\.mlp\\\\.c_.*\"}");
    assert_int_equal(job_load_file(&j, job_path, &err), 0);
    assert_string_equal(j.target_modules, "re:.*\\.1\\.mlp\\.c_.*");
    write_job("{}");
    assert_int_equal(job_load_file(&j, job_path, &err), 0);
}

static void test_bad_job_files(void **state) {
    (void)state;
    static const struct {
        const char *json, *needle1, *needle2;
    } bad[] = {
        {"{\"r\": 8,}", NULL, NULL},                  /* malformed */
        {"{\"r\": 8", NULL, NULL},                    /* truncated */
        {"", NULL, NULL},                             /* empty file */
        {"{\"r\": 8, \"r\": 16}", "duplicate", NULL}, /* duplicate key */
        {"[1, 2]", "JSON object", NULL},              /* not an object */
        {"{\"lora_alfa\": 8}", "unknown job setting", "lora_alfa"},
        {"{\"r\": true}", "r", "'true'"},
        {"{\"r\": 8.5}", "r", "8.5"},
        {"{\"r\": 3000000000}", "r", "3000000000"},
        {"{\"r\": null}", "r", "unsupported"},
        {"{\"r\": {\"x\": 1}}", "r", "unsupported"},
        {"{\"target_modules\": [\"c_attn\", 3]}", "target_modules", "strings"},
        {"{\"lr\": \"fast\"}", "lr", "'fast'"},
        {"{\"use_rslora\": 1.5}", "use_rslora", "1.5"},
        {"{\"seed\": -3}", "seed", "'-3'"},
        /* PEFT's dict form of rank_pattern is not a job-file form: "name=r,name=r" is */
        {"{\"rank_pattern\": {\"c_attn\": 4}}", "rank_pattern", "unsupported"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        job j;
        lp_err err;
        job_defaults(&j);
        write_job(bad[i].json);
        int rc = job_load_file(&j, job_path, &err);
        if (rc != -1) fail_msg("accepted %s", bad[i].json);
        expect_error(rc, &err, job_path, bad[i].needle1);
        expect_error(rc, &err, job_path, bad[i].needle2);
    }
    job j;
    lp_err err;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.json", tmpdir);
    expect_error(job_load_file(&j, missing, &err), &err, missing, NULL);
}

/* Flags as the commands loop over them: job flags are consumed, others are left to the command,
 * "--key value" and "--key=value" both work, and a missing or bad value is an error. */
static void test_flags(void **state) {
    (void)state;
    job j;
    lp_err err;
    job_defaults(&j);
    char *argv[] = {"prog",
                    "--lr",
                    "1e-3",
                    "--lora-alpha=24",
                    "--model",
                    "dir",
                    "--r",
                    "4",
                    "--use_rslora=yes",
                    "--rank-pattern=c_attn=2",
                    "--lr-scheduler",
                    "linear",
                    "positional"};
    int argc = sizeof argv / sizeof argv[0], consumed = 0, others = 0;
    for (int i = 1; i < argc;) {
        int rc = job_parse_flag(&j, argc, argv, &i, &err);
        assert_true(rc >= 0);
        if (rc > 0) {
            consumed++;
            continue;
        }
        others++;
        i += strcmp(argv[i], "--model") ? 1 : 2;
    }
    assert_int_equal(consumed, 6);
    assert_int_equal(others, 2);
    assert_true(j.lr == 1e-3f);
    assert_true(j.lora_alpha == 24.0f);
    assert_int_equal(j.r, 4);
    assert_int_equal(j.use_rslora, 1);
    assert_string_equal(j.rank_pattern, "c_attn=2");
    assert_string_equal(j.lr_scheduler, "linear");

    int i = 1;
    char *missing[] = {"prog", "--lr"};
    expect_error(job_parse_flag(&j, 2, missing, &i, &err), &err, "--lr", "needs a value");
    i = 1;
    char *bad[] = {"prog", "--r=x"};
    expect_error(job_parse_flag(&j, 2, bad, &i, &err), &err, "--r", "'x'");
    i = 1;
    char *empty[] = {"prog", "--lr="};
    expect_error(job_parse_flag(&j, 2, empty, &i, &err), &err, "--lr", "''");
    i = 1;
    char *bad_sep[] = {"prog", "--seq-len", "long"};
    expect_error(job_parse_flag(&j, 3, bad_sep, &i, &err), &err, "seq_len", "'long'");
    /* not job flags: returned as 0, index untouched */
    char *not_ours[] = {"prog", "--model", "-r", "lr", "--", "--nope=1", "--lr_x"};
    for (i = 1; i < 7; i++) {
        int before = i;
        assert_int_equal(job_parse_flag(&j, 7, not_ours, &i, &err), 0);
        assert_int_equal(i, before);
    }
    assert_int_equal(j.r, 4);
}

static void test_env(void **state) {
    (void)state;
    job j;
    lp_err err;
    job_defaults(&j);
    setenv("LORAPS_LORA_ALPHA", "12", 1);
    setenv("LORAPS_USE_RSLORA", "1", 1);
    setenv("LORAPS_TARGET_MODULES", "re:.*c_fc", 1);
    setenv("LORAPS_ALPHA_PATTERN", "c_fc=6", 1);
    setenv("LORAPS_lr", "9", 1);        /* names are upper case: not a job variable */
    setenv("LORAPS_LR_TYPO", "9", 1);   /* not a key */
    setenv("LORAPS_MAX-STEPS", "9", 1); /* not a key */
    int rc = job_apply_env(&j, &err);
    unsetenv("LORAPS_LORA_ALPHA");
    unsetenv("LORAPS_USE_RSLORA");
    unsetenv("LORAPS_TARGET_MODULES");
    unsetenv("LORAPS_ALPHA_PATTERN");
    unsetenv("LORAPS_lr");
    unsetenv("LORAPS_LR_TYPO");
    unsetenv("LORAPS_MAX-STEPS");
    assert_int_equal(rc, 0);
    assert_true(j.lora_alpha == 12.0f);
    assert_int_equal(j.use_rslora, 1);
    assert_string_equal(j.target_modules, "re:.*c_fc");
    assert_string_equal(j.alpha_pattern, "c_fc=6");
    assert_true(j.lr == 2e-3f);
    assert_int_equal(j.max_steps, 100);

    setenv("LORAPS_R", "eight", 1);
    rc = job_apply_env(&j, &err);
    unsetenv("LORAPS_R");
    expect_error(rc, &err, "LORAPS_R", "'eight'");
    setenv("LORAPS_USE_RSLORA", "on", 1);
    rc = job_apply_env(&j, &err);
    unsetenv("LORAPS_USE_RSLORA");
    expect_error(rc, &err, "LORAPS_USE_RSLORA", "'on'");
}

/* file < flags < environment, applied as cmd_train and ps_main apply them. */
static void test_precedence(void **state) {
    (void)state;
    write_job("{\"r\": 16, \"lora_alpha\": 32, \"lr\": 0.001, \"seed\": 7, \"mode\": \"async\"}");
    char *argv[] = {"prog", "--job", job_path, "--lora-alpha", "24", "--lr=0.002"};
    int argc = 6;
    job j;
    lp_err err;
    job_defaults(&j);
    const char *file = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--job")) file = argv[i + 1];
    assert_non_null(file);
    assert_int_equal(job_load_file(&j, file, &err), 0);
    for (int i = 1; i < argc;) {
        int rc = job_parse_flag(&j, argc, argv, &i, &err);
        assert_true(rc >= 0);
        if (rc == 0) i += 2; /* --job FILE */
    }
    setenv("LORAPS_LR", "0.003", 1);
    setenv("LORAPS_MODE", "sync", 1);
    int rc = job_apply_env(&j, &err);
    unsetenv("LORAPS_LR");
    unsetenv("LORAPS_MODE");
    assert_int_equal(rc, 0);
    if (job_validate(&j, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(j.r, 16);           /* file */
    assert_true(j.lora_alpha == 24.0f);  /* flag over file */
    assert_true(j.lr == 0.003f);         /* environment over flag and file */
    assert_string_equal(j.mode, "sync"); /* environment over file */
    assert_true(j.seed == 7);            /* file */
    assert_int_equal(j.micro_batch, 4);  /* default */
}

/* Each range job_validate guards, from defaults, with one key made bad. The value parses: only
 * validation refuses it, with a message naming the key. */
static void test_validate_rejects(void **state) {
    (void)state;
    static const struct {
        const char *key, *value, *needle;
    } bad[] = {
        {"r", "0", "r must"},
        {"r", "-4", "r must"},
        {"r", "4097", "r must"},
        {"lora_alpha", "0", "lora_alpha"},
        {"lora_alpha", "-16", "lora_alpha"},
        {"lora_dropout", "1.0", "lora_dropout"},
        {"lora_dropout", "-0.1", "lora_dropout"},
        {"target_modules", "", "target_modules"},
        {"target_modules", "re:(c_attn", "(c_attn"},
        {"target_modules", " , ", "target_modules"},
        {"rank_pattern", "c_attn=0", "rank_pattern"},
        {"rank_pattern", "c_attn", "rank_pattern"},
        {"rank_pattern", "c_attn[=4", "c_attn["},
        {"alpha_pattern", "c_attn=-2", "alpha_pattern"},
        {"lr", "-1e-3", "lr"},
        {"adam_beta1", "1.0", "beta"},
        {"adam_beta1", "-0.1", "beta"},
        {"adam_beta2", "1", "beta"},
        {"adam_epsilon", "0", "adam_epsilon"},
        {"weight_decay", "-0.01", "weight_decay"},
        {"lr_scheduler", "step", "lr_scheduler"},
        {"lr_scheduler", "polynomial", "lr_scheduler"},
        {"warmup_steps", "-1", "warmup_steps"},
        {"micro_batch", "0", "micro_batch"},
        {"seq_len", "0", "seq_len"},
        {"grad_accum", "0", "grad_accum"},
        {"max_steps", "-1", "max_steps"},
        {"eval_every", "-1", "eval_every"},
        {"save_every", "-5", "save_every"},
        {"threads", "-1", "threads"},
        {"mode", "bsp", "mode"},
        {"staleness", "-1", "staleness"},
        {"workers", "0", "workers"},
        {"workers", "65537", "workers"},
        {"wire_dtype", "f64", "wire_dtype"},
        {"heartbeat_ms", "5", "heartbeat_ms"},
        {"heartbeat_timeout_ms", "999", "heartbeat_timeout_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        job j;
        lp_err err;
        job_defaults(&j);
        if (job_set(&j, bad[i].key, bad[i].value, &err) < 0)
            fail_msg("%s=%s did not parse: %s", bad[i].key, bad[i].value, err.msg);
        int rc = job_validate(&j, &err);
        if (rc != -1) fail_msg("job_validate accepted %s=%s", bad[i].key, bad[i].value);
        expect_error(rc, &err, bad[i].needle, NULL);
    }
    /* the length of training is max_steps; 0 is no training; threads are bounded */
    job j;
    lp_err err;
    job_defaults(&j);
    j.max_steps = 0;
    expect_error(job_validate(&j, &err), &err, "max_steps", NULL);
    j.max_steps = 2;
    assert_int_equal(job_validate(&j, &err), 0);
    j.threads = JOB_MAX_THREADS + 1;
    expect_error(job_validate(&j, &err), &err, "threads", NULL);
    j.threads = JOB_MAX_THREADS;
    assert_int_equal(job_validate(&j, &err), 0);
    /* edges that are fine */
    static const struct {
        const char *key, *value;
    } ok[] = {{"r", "4096"},
              {"r", "1"},
              {"lora_dropout", "0.999"},
              {"max_grad_norm", "0"},
              {"max_grad_norm", "-1"},
              {"lr", "0"},
              {"adam_beta1", "0"},
              {"lr_scheduler", "constant"},
              {"warmup_steps", "1000"},
              {"workers", "65536"},
              {"heartbeat_ms", "10"},
              {"wire_dtype", "f16"}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        job_defaults(&j);
        assert_int_equal(job_set(&j, ok[i].key, ok[i].value, &err), 0);
        if (job_validate(&j, &err) < 0) fail_msg("%s=%s: %s", ok[i].key, ok[i].value, err.msg);
    }
}

/* job_lora_config / job_adamw / job_schedule carry the settings through unchanged. */
static void test_derived_views(void **state) {
    (void)state;
    job j;
    lp_err err;
    lora_config c;
    job_defaults(&j);
    assert_int_equal(job_lora_config(&j, &c, &err), 0);
    assert_int_equal(c.n_targets, 1);
    assert_string_equal(c.targets[0], "all-linear");
    assert_int_equal(c.r, 8);
    lora_config_free(&c);

    assert_int_equal(job_set(&j, "r", "4", &err), 0);
    assert_int_equal(job_set(&j, "lora_alpha", "12", &err), 0);
    assert_int_equal(job_set(&j, "lora_dropout", "0.25", &err), 0);
    assert_int_equal(job_set(&j, "use_rslora", "true", &err), 0);
    assert_int_equal(job_set(&j, "target_modules", " c_attn , mlp.c_fc ", &err), 0);
    assert_int_equal(job_set(&j, "rank_pattern", "c_attn=2,h.1.mlp.c_fc=6", &err), 0);
    assert_int_equal(job_set(&j, "alpha_pattern", "^transformer.h.0.*=3.5", &err), 0);
    assert_int_equal(job_lora_config(&j, &c, &err), 0);
    assert_int_equal(c.r, 4);
    assert_true(c.alpha == 12.0f);
    assert_true(c.dropout == 0.25f);
    assert_int_equal(c.use_rslora, 1);
    assert_int_equal(c.n_targets, 2);
    assert_string_equal(c.targets[0], "c_attn");
    assert_string_equal(c.targets[1], "mlp.c_fc");
    assert_null(c.target_regex);
    assert_int_equal(c.n_rank_pattern, 2);
    assert_string_equal(c.rank_pattern[0].pattern, "c_attn");
    assert_true(c.rank_pattern[0].value == 2.0f);
    assert_string_equal(c.rank_pattern[1].pattern, "h.1.mlp.c_fc");
    assert_true(c.rank_pattern[1].value == 6.0f);
    assert_int_equal(c.n_alpha_pattern, 1);
    assert_string_equal(c.alpha_pattern[0].pattern, "^transformer.h.0.*");
    assert_true(c.alpha_pattern[0].value == 3.5f);
    lora_config_free(&c);

    assert_int_equal(job_set(&j, "target_modules", "re:.*\\.(c_attn|c_fc)", &err), 0);
    assert_int_equal(job_lora_config(&j, &c, &err), 0);
    assert_int_equal(c.n_targets, 0);
    assert_string_equal(c.target_regex, ".*\\.(c_attn|c_fc)");
    lora_config_free(&c);

    assert_int_equal(job_set(&j, "rank_pattern", "c_attn=x", &err), 0);
    expect_error(job_lora_config(&j, &c, &err), &err, "rank_pattern", "'x'");

    adamw_config a;
    assert_int_equal(job_set(&j, "adam_beta1", "0.85", &err), 0);
    assert_int_equal(job_set(&j, "adam_beta2", "0.98", &err), 0);
    assert_int_equal(job_set(&j, "adam_epsilon", "1e-7", &err), 0);
    assert_int_equal(job_set(&j, "weight_decay", "0.02", &err), 0);
    job_adamw(&j, &a);
    assert_true(a.beta1 == 0.85f && a.beta2 == 0.98f && a.eps == 1e-7f && a.weight_decay == 0.02f);

    static const struct {
        const char *name;
        lr_kind kind;
    } kinds[] = {{"constant", LR_CONSTANT}, {"linear", LR_LINEAR}, {"cosine", LR_COSINE}};
    for (int i = 0; i < 3; i++) {
        lr_schedule s;
        assert_int_equal(job_set(&j, "lr_scheduler", kinds[i].name, &err), 0);
        assert_int_equal(job_set(&j, "warmup_steps", "7", &err), 0);
        assert_int_equal(job_set(&j, "lr", "0.004", &err), 0);
        job_schedule(&j, 77, &s);
        assert_int_equal(s.kind, kinds[i].kind);
        assert_true(s.lr == 0.004f);
        assert_int_equal(s.warmup_steps, 7);
        assert_int_equal(s.total_steps, 77);
    }
}

/* The same setting spelled two ways in one job file ("lora_alpha" and "lora-alpha") is a
 * duplicate key as much as the same spelling twice, which is refused; here one value silently
 * wins. */
static void test_duplicate_key_in_two_spellings(void **state) {
    (void)state;
    job j;
    lp_err err;
    job_defaults(&j);
    write_job("{\"lora_alpha\": 8, \"lora-alpha\": 32}");
    int rc = job_load_file(&j, job_path, &err);
    if (rc == 0)
        fprintf(stderr, "job_load_file accepted lora_alpha twice (8, then 32): lora_alpha = %g\n",
                j.lora_alpha);
    expect_error(rc, &err, job_path, "lora");
}

/* A seed of " -1" (leading blank; strtoull skips it and negates) is taken as 2^64-1, although
 * "-1" is refused. */
static void test_negative_seed_with_blank(void **state) {
    (void)state;
    job j;
    lp_err err;
    job_defaults(&j);
    int rc = job_set(&j, "seed", " -1", &err);
    if (rc == 0) fprintf(stderr, "job_set(seed, \" -1\") accepted: seed = %llu\n", j.seed);
    expect_error(rc, &err, "seed", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_validate),
        cmocka_unit_test(test_every_key_every_way),
        cmocka_unit_test(test_bool_spellings),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_job_file),
        cmocka_unit_test(test_bad_job_files),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_validate_rejects),
        cmocka_unit_test(test_derived_views),
        cmocka_unit_test(test_duplicate_key_in_two_spellings),
        cmocka_unit_test(test_negative_seed_with_blank),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
