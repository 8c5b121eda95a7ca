/* fsutil: atomic writes that never leave a partial or temporary file, mkdir -p, read_all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsutil.h"

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SCRATCH_NAME "fs"
#include "scratch_dir.h"

static const char *tmp_path(const char *name) {
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", tmpdir, name);
    return p;
}

/* How many names in dir contain ".tmp." (leftover temporary files). */
static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void assert_file_is(const char *path, const char *content) {
    char *text;
    size_t len;
    lp_err err;
    assert_int_equal(fs_read_all(path, &text, &len, &err), 0);
    assert_int_equal(len, strlen(content));
    assert_string_equal(text, content);
    free(text);
}

static void assert_error_has(const lp_err *err, const char *a, const char *b) {
    if (!strstr(err->msg, a) || !strstr(err->msg, b)) {
        fail_msg("error '%s' lacks '%s' or '%s'", err->msg, a, b);
    }
}

static void test_write_and_replace(void **state) {
    (void)state;
    const char *path = tmp_path("file.txt");
    lp_err err;
    mode_t old_umask = umask(022);
    assert_int_equal(fs_write_atomic(path, "first", 5, &err), 0);
    umask(old_umask);
    assert_file_is(path, "first");
    assert_int_equal(fs_write_atomic(path, "second!", 7, &err), 0);
    assert_file_is(path, "second!");
    assert_int_equal(fs_write_atomic(path, "", 0, &err), 0);
    assert_file_is(path, "");
    assert_int_equal(count_temp_files(tmpdir), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
}

static void test_write_iov_concatenates(void **state) {
    (void)state;
    const char *path = tmp_path("iov.bin");
    const void *bufs[4] = {"head", "", NULL, "-tail"};
    size_t lens[4] = {4, 0, 0, 5};
    lp_err err;
    assert_int_equal(fs_write_atomic_iov(path, bufs, lens, 4, &err), 0);
    assert_file_is(path, "head-tail");
    assert_int_equal(fs_write_atomic_iov(path, bufs, lens, 0, &err), 0);
    assert_file_is(path, "");
    assert_int_equal(count_temp_files(tmpdir), 0);
}

static void test_write_relative_path(void **state) {
    (void)state;
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(tmpdir), 0);
    lp_err err;
    int rc = fs_write_atomic("plain.txt", "x", 1, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_file_is(tmp_path("plain.txt"), "x");
}

static void test_write_into_directory_fails(void **state) {
    (void)state;
    const char *dir = tmp_path("a_folder");
    lp_err err;
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(fs_write_atomic(dir, "x", 1, &err), -1);
    assert_error_has(&err, dir, "Is a directory");
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(count_temp_files(tmpdir), 0);
}

static void test_write_missing_parent_fails(void **state) {
    (void)state;
    const char *path = tmp_path("no/such/folder/file.txt");
    lp_err err;
    assert_int_equal(fs_write_atomic(path, "x", 1, &err), -1);
    assert_error_has(&err, path, "No such file or directory");
    assert_false(fs_exists(path));
}

/* A write that fails half way (file size limit, like a full disk) keeps the old file whole
 * and removes the temporary file. Run in a child so the limit does not leak. */
static void test_failed_write_keeps_old_file(void **state) {
    (void)state;
    const char *path = tmp_path("precious.txt");
    lp_err err;
    assert_int_equal(fs_write_atomic(path, "old content", 11, &err), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit limit = {.rlim_cur = 100, .rlim_max = RLIM_INFINITY};
        setrlimit(RLIMIT_FSIZE, &limit);
        static char big[4096];
        memset(big, 'x', sizeof big);
        int rc = fs_write_atomic(path, big, sizeof big, &err);
        int ok = rc == -1 && strstr(err.msg, path) && strstr(err.msg, "File too large");
        if (!ok) fprintf(stderr, "child: rc %d, error '%s'\n", rc, err.msg);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_file_is(path, "old content");
    assert_int_equal(count_temp_files(tmpdir), 0);
}

static void test_mkdirs(void **state) {
    (void)state;
    lp_err err;
    const char *deep = tmp_path("a/b/c");
    assert_int_equal(fs_mkdirs(deep, &err), 0);
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(fs_mkdirs(deep, &err), 0); /* existing: fine */
    assert_int_equal(fs_mkdirs(tmp_path("x//y/"), &err), 0);
    assert_true(fs_exists(tmp_path("x/y")));

    const char *file = tmp_path("a/file");
    assert_int_equal(fs_write_atomic(file, "f", 1, &err), 0);
    assert_int_equal(fs_mkdirs(tmp_path("a/file/sub"), &err), -1);
    assert_error_has(&err, file, "not a folder");
    assert_int_equal(fs_mkdirs(file, &err), -1);
    assert_int_equal(fs_mkdirs("", &err), -1);
    assert_error_has(&err, "empty", "name");
}

static void test_read_all(void **state) {
    (void)state;
    const char *path = tmp_path("data.bin");
    lp_err err;
    assert_int_equal(fs_write_atomic(path, "ab\0cd", 5, &err), 0);
    char *text;
    size_t len;
    assert_int_equal(fs_read_all(path, &text, &len, &err), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(text, "ab\0cd", 6); /* NUL-terminated past the end too */
    free(text);

    const char *empty = tmp_path("empty");
    assert_int_equal(fs_write_atomic(empty, "", 0, &err), 0);
    assert_int_equal(fs_read_all(empty, &text, NULL, &err), 0);
    assert_string_equal(text, "");
    free(text);

    /* A file whose size stat does not know: read until EOF. */
    assert_int_equal(fs_read_all("/proc/self/status", &text, &len, &err), 0);
    assert_non_null(strstr(text, "Pid:"));
    assert_int_equal(strlen(text), len);
    free(text);

    const char *missing = tmp_path("missing");
    assert_int_equal(fs_read_all(missing, &text, &len, &err), -1);
    assert_error_has(&err, missing, "No such file or directory");
    assert_null(text);
    assert_int_equal(fs_read_all(tmpdir, &text, &len, &err), -1);
    assert_error_has(&err, tmpdir, "not a readable file");
}

static void test_exists_and_fsync_dir(void **state) {
    (void)state;
    lp_err err;
    assert_true(fs_exists(tmpdir));
    assert_false(fs_exists(tmp_path("nothing")));
    assert_int_equal(fs_fsync_dir(tmpdir, &err), 0);
    const char *missing = tmp_path("nothing");
    assert_int_equal(fs_fsync_dir(missing, &err), -1);
    assert_error_has(&err, missing, "No such file");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_iov_concatenates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_relative_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_into_directory_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_missing_parent_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_keeps_old_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdirs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exists_and_fsync_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
