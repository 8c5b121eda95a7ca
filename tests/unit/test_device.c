/* Picking a device: "cpu" always works; a GPU that is not there, a build without the CUDA
 * backend, and a malformed name each give an error that says which. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "device.h"

#include <stdlib.h>
#include <string.h>

static void cpu_is_always_there(void **state) {
    (void)state;
    device *d;
    lp_err err;
    assert_int_equal(device_open(&d, "cpu", &err), 0);
    assert_true(device_is_cpu(d));
    assert_ptr_equal(d, device_cpu());
    assert_int_equal(device_open(&d, NULL, &err), 0); /* no --device: the CPU */
    assert_true(device_is_cpu(d));
}

static void malformed_names_are_refused(void **state) {
    (void)state;
    device *d;
    lp_err err;
    assert_int_equal(device_open(&d, "tpu", &err), -1);
    assert_non_null(strstr(err.msg, "unknown device 'tpu'"));
    assert_non_null(strstr(err.msg, "cpu, cuda or cuda:N"));
    assert_int_equal(device_open(&d, "cuda:x", &err), -1);
    assert_non_null(strstr(err.msg, "GPU index"));
    setenv("LOCAL_RANK", "seven", 1);
    assert_int_equal(device_open(&d, "cuda", &err), -1);
    assert_non_null(strstr(err.msg, "LOCAL_RANK"));
    unsetenv("LOCAL_RANK");
}

/* Without a GPU (CI, the build machine) the error names why; with one (tests/gpu/run.sh sets
 * LORAPS_TEST_HAS_GPU) cuda:0 opens and a GPU that is not there is named. */
static void gpu_or_why_not(void **state) {
    (void)state;
    device *d;
    lp_err err;
    if (getenv("LORAPS_TEST_HAS_GPU")) {
        assert_int_equal(device_open(&d, "cuda:0", &err), 0);
        assert_false(device_is_cpu(d));
        assert_non_null(strstr(device_describe(d), "cuda:0"));
        device_close(d);
        assert_int_equal(device_open(&d, "cuda:99", &err), -1);
        assert_non_null(strstr(err.msg, "cuda:99 does not exist"));
        return;
    }
    assert_int_equal(device_open(&d, "cuda:0", &err), -1);
    if (device_cuda_built())
        assert_true(strstr(err.msg, "no usable GPU") || strstr(err.msg, "no GPU"));
    else
        assert_non_null(strstr(err.msg, "no CUDA backend"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_is_always_there),
        cmocka_unit_test(malformed_names_are_refused),
        cmocka_unit_test(gpu_or_why_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
