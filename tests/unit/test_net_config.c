/* net_config (options from LORAPS_* variables, the rank from JOB_COMPLETION_INDEX, where a
 * server binds) and the metrics registry's Prometheus text. The HTTP side is tested with real
 * requests in tests/integration/test_metrics_http.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "metrics_http.h"
#include "net_config.h"

#include <stdlib.h>
#include <string.h>

static const netcfg_flag FLAGS[] = {
    {"rank", 1}, {"shard", 1}, {"metrics-port", 1}, {"quiet", 0}, {"model", 1}};
#define N_FLAGS (int)(sizeof FLAGS / sizeof FLAGS[0])

static void clear_env(void) {
    unsetenv("LORAPS_RANK");
    unsetenv("LORAPS_SHARD");
    unsetenv("LORAPS_METRICS_PORT");
    unsetenv("LORAPS_QUIET");
    unsetenv("LORAPS_MODEL");
    unsetenv("JOB_COMPLETION_INDEX");
}

/* The value following flag in argv, or NULL; "" for a bare switch. */
static const char *value_of(int argc, char **argv, const char *flag) {
    const char *v = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], flag))
            v = i + 1 < argc && strncmp(argv[i + 1], "--", 2) ? argv[i + 1] : "";
    return v;
}

static void test_env_becomes_flags(void **state) {
    (void)state;
    clear_env();
    setenv("LORAPS_METRICS_PORT", "9100", 1);
    setenv("LORAPS_MODEL", "/models/gpt2", 1);
    setenv("LORAPS_QUIET", "true", 1);
    char *argv[] = {"prog", "--model", "/cli/model", NULL};
    int n;
    char **av;
    char notes[512];
    lp_err err;
    assert_int_equal(netcfg_env_args(FLAGS, N_FLAGS, 3, argv, &n, &av, notes, sizeof notes, &err),
                     0);
    assert_string_equal(av[0], "prog");
    assert_string_equal(value_of(n, av, "--metrics-port"), "9100");
    assert_string_equal(value_of(n, av, "--quiet"), "");
    /* A flag on the command line wins over its variable: only the command line's --model. */
    assert_string_equal(value_of(n, av, "--model"), "/cli/model");
    int models = 0;
    for (int i = 0; i < n; i++) models += !strcmp(av[i], "--model");
    assert_int_equal(models, 1);
    assert_non_null(strstr(notes, "LORAPS_METRICS_PORT"));
    assert_null(strstr(notes, "LORAPS_MODEL"));
    assert_null(av[n]);
    netcfg_args_free(n, av, 3);
    clear_env();
}

static void test_rank_and_shard_from_job_completion_index(void **state) {
    (void)state;
    clear_env();
    setenv("JOB_COMPLETION_INDEX", "2", 1);
    char *argv[] = {"prog", NULL};
    int n;
    char **av;
    lp_err err;
    assert_int_equal(netcfg_env_args(FLAGS, N_FLAGS, 1, argv, &n, &av, NULL, 0, &err), 0);
    assert_string_equal(value_of(n, av, "--rank"), "2");
    assert_string_equal(value_of(n, av, "--shard"), "2");
    netcfg_args_free(n, av, 1);
    /* LORAPS_RANK wins over the index, --rank over both. */
    setenv("LORAPS_RANK", "5", 1);
    assert_int_equal(netcfg_env_args(FLAGS, N_FLAGS, 1, argv, &n, &av, NULL, 0, &err), 0);
    assert_string_equal(value_of(n, av, "--rank"), "5");
    netcfg_args_free(n, av, 1);
    char *argv2[] = {"prog", "--rank=7", NULL};
    assert_int_equal(netcfg_env_args(FLAGS, N_FLAGS, 2, argv2, &n, &av, NULL, 0, &err), 0);
    assert_null(value_of(n, av, "--rank"));
    assert_string_equal(av[n - 1], "--rank=7");
    netcfg_args_free(n, av, 2);
    clear_env();
}

static void test_bad_switch_value_refused(void **state) {
    (void)state;
    clear_env();
    setenv("LORAPS_QUIET", "maybe", 1);
    char *argv[] = {"prog", NULL};
    int n;
    char **av;
    lp_err err;
    assert_int_equal(netcfg_env_args(FLAGS, N_FLAGS, 1, argv, &n, &av, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "LORAPS_QUIET=maybe"));
    setenv("LORAPS_QUIET", "0", 1);
    assert_int_equal(netcfg_env_args(FLAGS, N_FLAGS, 1, argv, &n, &av, NULL, 0, &err), 0);
    assert_null(value_of(n, av, "--quiet"));
    netcfg_args_free(n, av, 1);
    clear_env();
}

static void test_env_name(void **state) {
    (void)state;
    char v[64];
    netcfg_env_name("metrics-port", v, sizeof v);
    assert_string_equal(v, "LORAPS_METRICS_PORT");
    netcfg_env_name("connect-timeout", v, sizeof v);
    assert_string_equal(v, "LORAPS_CONNECT_TIMEOUT");
}

static void test_bind_for(void **state) {
    (void)state;
    char b[256];
    lp_err err;
    assert_int_equal(netcfg_bind_for("tcp://127.0.0.1:5555", b, sizeof b, &err), 0);
    assert_string_equal(b, "tcp://127.0.0.1:5555");
    assert_int_equal(netcfg_bind_for("tcp://198.18.0.1:7000", b, sizeof b, &err), 0);
    assert_string_equal(b, "tcp://198.18.0.1:7000");
    assert_int_equal(netcfg_bind_for("tcp://[::1]:5555", b, sizeof b, &err), 0);
    assert_string_equal(b, "tcp://[::1]:5555");
    /* A name cannot be bound (a Kubernetes Service, a host name): every interface instead. */
    assert_int_equal(netcfg_bind_for("tcp://loraps-ps-0.loraps-ps:5555", b, sizeof b, &err), 0);
    assert_string_equal(b, "tcp://0.0.0.0:5555");
    assert_int_equal(netcfg_bind_for("127.0.0.1:5555", b, sizeof b, &err), -1);
    assert_int_equal(netcfg_bind_for("tcp://host:0", b, sizeof b, &err), -1);
    assert_int_equal(netcfg_bind_for("tcp://host:99999", b, sizeof b, &err), -1);
    assert_int_equal(netcfg_bind_for("tcp://host", b, sizeof b, &err), -1);
}

static void test_check_endpoint(void **state) {
    (void)state;
    lp_err err;
    assert_int_equal(netcfg_check_endpoint("tcp://loraps-ps-1.loraps-ps.default.svc:5555", &err),
                     0);
    assert_int_equal(netcfg_check_endpoint("tcp://[fe80::1]:5555", &err), 0);
    assert_int_equal(netcfg_check_endpoint("tcp://a b:5555", &err), -1);
    assert_non_null(strstr(err.msg, "cannot be in a host name"));
    assert_int_equal(netcfg_check_endpoint("udp://host:5555", &err), -1);
    assert_int_equal(netcfg_check_endpoint("tcp://:5555", &err), -1);
}

static void test_metrics_text(void **state) {
    (void)state;
    metrics *m;
    lp_err err;
    assert_int_equal(metrics_start(&m, "127.0.0.1", 0, "role=\"ps\",shard=\"0\"", &err), 0);
    assert_true(metrics_port(m) > 0);
    int step = metrics_define(m, "loraps_step", METRICS_GAUGE, "completed steps");
    int bytes = metrics_define(m, "loraps_bytes_sent_total", METRICS_COUNTER, "bytes\nsent");
    assert_true(step >= 0 && bytes >= 0);
    assert_int_equal(metrics_define(m, "loraps_step", METRICS_GAUGE, "again"), step);
    assert_int_equal(metrics_define(m, "9bad", METRICS_GAUGE, ""), -1);
    assert_int_equal(metrics_define(m, "bad-name", METRICS_GAUGE, ""), -1);
    metrics_set(m, step, 42);
    metrics_add(m, bytes, 1e12);
    metrics_add(m, bytes, 5);
    char *t = metrics_render(m);
    assert_non_null(strstr(t, "# HELP loraps_step completed steps\n# TYPE loraps_step gauge\n"
                              "loraps_step{role=\"ps\",shard=\"0\"} 42\n"));
    assert_non_null(strstr(t, "# HELP loraps_bytes_sent_total bytes sent\n"));
    assert_non_null(strstr(t, "# TYPE loraps_bytes_sent_total counter\n"
                              "loraps_bytes_sent_total{role=\"ps\",shard=\"0\"} 1000000000005\n"));
    assert_null(strstr(t, "checkpoint_age")); /* none written yet */
    free(t);
    metrics_set(m, step, 0.25);
    metrics_set_checkpoint_time(m, 1.0);
    t = metrics_render(m);
    assert_non_null(strstr(t, "loraps_step{role=\"ps\",shard=\"0\"} 0.25\n"));
    assert_non_null(strstr(t, "loraps_checkpoint_age_seconds{"));
    free(t);
    metrics_stop(m);
    /* Every call takes NULL (metrics off). */
    metrics_set(NULL, 0, 1);
    metrics_set_ready(NULL, 1);
    assert_int_equal(metrics_define(NULL, "x", METRICS_GAUGE, ""), -1);
    metrics_stop(NULL);
    assert_int_equal(metrics_start(&m, "not-an-address", 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not-an-address"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_becomes_flags),
        cmocka_unit_test(test_rank_and_shard_from_job_completion_index),
        cmocka_unit_test(test_bad_switch_value_refused),
        cmocka_unit_test(test_env_name),
        cmocka_unit_test(test_bind_for),
        cmocka_unit_test(test_check_endpoint),
        cmocka_unit_test(test_metrics_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
