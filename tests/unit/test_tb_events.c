/* TensorBoard event files: CRC32C against RFC 3720's vectors, TFRecord framing against bytes
 * from an independent (bitwise) CRC32C, events written and read back, damaged files refused by
 * name and offset, and the committed golden run (tests/reference/golden/tensorboard/, which
 * tests/reference/tensorboard_check.py reads with the real tensorboard package) written
 * byte for byte by today's writer, with the scalars TensorBoard must show.
 *
 * LORAPS_WRITE_GOLDEN=1 writes the golden files instead of comparing them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsutil.h"
#include "tb_events.h"
#include "tfrecord.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GOLDEN_DIR LORAPS_TEST_DATA "/reference/golden/tensorboard"

#define SCRATCH_NAME "tb"
#include "scratch_dir.h"

static void check_ok(int rc, const lp_err *err, const char *what) {
    if (rc != 0) fail_msg("%s: %s", what, err->msg);
}

/* ---- CRC32C and framing --------------------------------------------------------------------- */

static void test_crc32c_vectors(void **state) {
    (void)state;
    unsigned char zeros[32] = {0}, ones[32], up[32];
    memset(ones, 0xff, sizeof ones);
    for (int i = 0; i < 32; i++) up[i] = (unsigned char)i;
    /* RFC 3720, B.4, and the usual check value */
    assert_int_equal(tfrecord_crc32c(zeros, 32), 0x8a9136aa);
    assert_int_equal(tfrecord_crc32c(ones, 32), 0x62a8ab43);
    assert_int_equal(tfrecord_crc32c(up, 32), 0x46dd794e);
    assert_int_equal(tfrecord_crc32c("123456789", 9), 0xe3069283);
    assert_int_equal(tfrecord_crc32c("", 0), 0);
}

static void test_framing_bytes(void **state) {
    (void)state;
    /* made by a bitwise CRC32C (polynomial 0x82f63b78) and TFRecord's mask in Python */
    static const unsigned char empty[] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                          0x29, 0x03, 0x98, 0x07, 0xd8, 0xea, 0x82, 0xa2};
    static const unsigned char hello[] = {0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                          0x00, 0xea, 0xb2, 0x04, 0x3e, 0x68, 0x65,
                                          0x6c, 0x6c, 0x6f, 0xbb, 0x1f, 0x1c, 0x19};
    unsigned char out[64];
    tfrecord_frame("", 0, out);
    assert_memory_equal(out, empty, sizeof empty);
    tfrecord_frame("hello", 5, out);
    assert_memory_equal(out, hello, sizeof hello);
}

/* ---- writing and reading back --------------------------------------------------------------- */

typedef struct seen {
    int n_events, versions, starts, scalar_events;
    int64_t start_step;
    char writer[32];
    int64_t steps[16];
    double loss[16], lr[16];
    int described_loss, described_lr;
} seen;

static int collect(const tb_event *e, void *ctx) {
    seen *s = ctx;
    s->n_events++;
    if (e->kind == TB_EVENT_FILE_VERSION) {
        s->versions++;
        assert_string_equal(e->file_version, TB_FILE_VERSION);
        snprintf(s->writer, sizeof s->writer, "%s", e->writer);
    } else if (e->kind == TB_EVENT_SESSION_START) {
        s->starts++;
        s->start_step = e->step;
    } else if (e->kind == TB_EVENT_SCALARS) {
        int k = s->scalar_events++;
        s->steps[k] = e->step;
        for (int i = 0; i < e->n_scalars; i++) {
            const tb_scalar *x = &e->scalars[i];
            if (!strcmp(x->tag, "train/loss")) {
                s->loss[k] = x->value;
                s->described_loss += x->description != NULL;
            } else if (!strcmp(x->tag, "train/learning_rate")) {
                s->lr[k] = x->value;
                s->described_lr += x->description != NULL;
            }
        }
    }
    return 0;
}

static void write_three_steps(tb_writer *w) {
    lp_err err;
    for (int k = 0; k < 3; k++) {
        tb_scalar s[2] = {{"train/loss", 2.5 - 0.5 * k, "the loss"},
                          {"train/learning_rate", 1e-3 * (k + 1), "the lr"}};
        check_ok(tb_writer_scalars(w, 10 + k, 1e9 + k, s, 2, &err), &err, "scalars");
    }
}

static void test_round_trip(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/runs", tmpdir);
    tb_writer *w;
    lp_err err;
    check_ok(tb_writer_open(&w, dir, 10, &err), &err, "open");
    assert_non_null(strstr(tb_writer_path(w), "/runs/events.out.tfevents."));
    write_three_steps(w);
    /* written through: readable before the writer is closed */
    seen s = {0};
    check_ok(tb_read_file(tb_writer_path(w), collect, &s, &err), &err, "read");
    tb_writer_close(w);
    assert_int_equal(s.versions, 1);
    assert_string_equal(s.writer, TB_WRITER_NAME);
    assert_int_equal(s.starts, 1);
    assert_int_equal(s.start_step, 10);
    assert_int_equal(s.scalar_events, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(s.steps[k], 10 + k);
        assert_true(s.loss[k] == (float)(2.5 - 0.5 * k));
        assert_true(s.lr[k] == (float)(1e-3 * (k + 1)));
    }
    /* the description rides on the first value of each tag only */
    assert_int_equal(s.described_loss, 1);
    assert_int_equal(s.described_lr, 1);
}

static int count_event_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, "tfevents") != NULL;
    closedir(d);
    return n;
}

/* A fresh run has no SessionLog; a second writer in the same folder (a resumed run) opens its
 * own file and never touches the first; an existing path is refused. */
static void test_new_file_per_writer(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/resume", tmpdir);
    tb_writer *a, *b;
    lp_err err;
    check_ok(tb_writer_open(&a, dir, -1, &err), &err, "open a");
    write_three_steps(a);
    check_ok(tb_writer_open(&b, dir, 11, &err), &err, "open b");
    assert_string_not_equal(tb_writer_path(a), tb_writer_path(b));
    /* the resumed file sorts after the first, even within the same second */
    assert_true(strcmp(tb_writer_path(a), tb_writer_path(b)) < 0);
    /* and after a file from a clock ahead of ours */
    char ahead[600];
    snprintf(ahead, sizeof ahead, "%s/events.out.tfevents.9999999990.other.1.0", dir);
    FILE *f = fopen(ahead, "w");
    assert_non_null(f);
    fclose(f);
    tb_writer *c2;
    check_ok(tb_writer_open(&c2, dir, 12, &err), &err, "open c");
    assert_non_null(strstr(tb_writer_path(c2), "/events.out.tfevents.9999999991."));
    unlink(tb_writer_path(c2));
    tb_writer_close(c2);
    unlink(ahead);
    assert_int_equal(count_event_files(dir), 2);
    seen sa = {0}, sb = {0};
    check_ok(tb_read_file(tb_writer_path(a), collect, &sa, &err), &err, "read a");
    check_ok(tb_read_file(tb_writer_path(b), collect, &sb, &err), &err, "read b");
    assert_int_equal(sa.starts, 0);
    assert_int_equal(sa.scalar_events, 3);
    assert_int_equal(sb.starts, 1);
    assert_int_equal(sb.start_step, 11);
    assert_int_equal(sb.scalar_events, 0);
    tb_writer *c;
    assert_int_equal(tb_writer_open_file(&c, tb_writer_path(a), 0, -1, &err), -1);
    assert_non_null(strstr(err.msg, "File exists"));
    tb_writer_close(a);
    tb_writer_close(b);
}

/* ---- damaged files -------------------------------------------------------------------------- */

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *len) {
    char *data;
    lp_err err;
    check_ok(fs_read_all(path, &data, len, &err), &err, path);
    return (unsigned char *)data;
}

static int ignore(const tb_event *e, void *ctx) {
    (void)e;
    (*(int *)ctx)++;
    return 0;
}

/* Reads path expecting an error containing want; returns the events seen before it. */
static int expect_damage(const char *path, const char *want) {
    int n = 0;
    lp_err err = {0};
    assert_int_equal(tb_read_file(path, ignore, &n, &err), -1);
    if (!strstr(err.msg, want) || !strstr(err.msg, path))
        fail_msg("expected \"%s\" naming %s, got \"%s\"", want, path, err.msg);
    return n;
}

static void test_damaged_files(void **state) {
    (void)state;
    char good[512], bad[512];
    snprintf(good, sizeof good, "%s/good.tfevents", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.tfevents", tmpdir);
    tb_writer *w;
    lp_err err;
    check_ok(tb_writer_open_file(&w, good, 1e9, -1, &err), &err, "open");
    write_three_steps(w);
    tb_writer_close(w);
    size_t len;
    unsigned char *b = read_bytes(good, &len);
    /* the records: the file version, then three steps; find where the second step starts */
    tfrecord_reader r;
    check_ok(tfrecord_reader_open(&r, good, &err), &err, "reader");
    const void *data;
    size_t n;
    for (int i = 0; i < 2; i++) assert_int_equal(tfrecord_next(&r, &data, &n, &err), 1);
    uint64_t second = r.offset;
    tfrecord_reader_close(&r);
    char at[64];
    snprintf(at, sizeof at, "record at byte %llu", (unsigned long long)second);

    b[second + 14] ^= 0x01; /* a bit of the step's data */
    write_bytes(bad, b, len);
    assert_int_equal(expect_damage(bad, "data that fails its CRC"), 2);
    expect_damage(bad, at);
    b[second + 14] ^= 0x01;

    b[second + 1] ^= 0x40; /* its length */
    write_bytes(bad, b, len);
    assert_int_equal(expect_damage(bad, "length that fails its CRC"), 2);
    b[second + 1] ^= 0x40;

    write_bytes(bad, b, len - 3); /* the last record cut short */
    assert_int_equal(expect_damage(bad, "cut short in its data"), 3);
    write_bytes(bad, b, second + 5);
    assert_int_equal(expect_damage(bad, "cut short in its length"), 2);

    /* a well-framed record that is not an Event */
    unsigned char junk[] = {0xff, 0xff, 0xff, 0xff}, rec[sizeof junk + TFRECORD_OVERHEAD];
    tfrecord_frame(junk, sizeof junk, rec);
    write_bytes(bad, rec, sizeof rec);
    expect_damage(bad, "is not an Event");

    write_bytes(bad, "", 0); /* empty: no events, no error */
    int events = 0;
    check_ok(tb_read_file(bad, ignore, &events, &err), &err, "empty");
    assert_int_equal(events, 0);
    free(b);
}

/* A full disk mid-record (a file-size limit here): the write fails with the reason, the partial
 * record is cut off, and the file reads cleanly up to the last whole step. In a child, so the
 * limit ends with it. */
static void test_full_disk_keeps_file_readable(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/full.tfevents", tmpdir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tb_writer *w;
        lp_err err;
        if (tb_writer_open_file(&w, path, 1e9, -1, &err) < 0) _exit(2);
        write_three_steps(w);
        struct stat st;
        stat(path, &st);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit limit = {.rlim_cur = (rlim_t)st.st_size + 20, .rlim_max = RLIM_INFINITY};
        setrlimit(RLIMIT_FSIZE, &limit);
        tb_scalar s = {"train/loss", 1.0, "a description long enough to need more than 20 bytes"};
        int rc = tb_writer_scalars(w, 99, 1e9, &s, 1, &err);
        int ok = rc == -1 && strstr(err.msg, path) && strstr(err.msg, "File too large") &&
                 !strstr(err.msg, "partial record is left");
        if (!ok) fprintf(stderr, "child: rc %d, error '%s'\n", rc, err.msg);
        tb_writer_close(w);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    seen s = {0};
    lp_err err;
    check_ok(tb_read_file(path, collect, &s, &err), &err, "the file after the failed write");
    assert_int_equal(s.scalar_events, 3);
    assert_int_equal(s.steps[2], 12);
}

/* ---- the golden run -------------------------------------------------------------------------- */

/* A run's folder as TensorBoard shows it (tb_read_run), as tb_run_print lists it. */
static char *view_run(const char *dir) {
    tb_run run;
    lp_err err;
    check_ok(tb_read_run(dir, &run, &err), &err, dir);
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    assert_non_null(o);
    tb_run_print(&run, o);
    fclose(o);
    tb_run_free(&run);
    return text;
}

static const char *const golden_names[] = {"events.out.tfevents.1700000000.golden.101.0",
                                           "events.out.tfevents.1700000100.golden.202.0"};

/* Two files of one run: the first written to step 6 (checkpoints at 4), the second resumed from
 * the checkpoint at step 4, so from step 5 on, with other values. Validation at steps 3 and 6. */
static void write_golden_run(const char *dir) {
    lp_err err;
    check_ok(fs_mkdirs(dir, &err), &err, dir);
    static const struct {
        double t0;
        int64_t start, first, last;
        double loss0;
    } files[] = {
        {1700000000.0, -1, 1, 6, 3.0},
        {1700000100.0, 5, 5, 8, 2.0},
    };
    for (int f = 0; f < 2; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, golden_names[f]);
        tb_writer *w;
        check_ok(tb_writer_open_file(&w, path, files[f].t0, files[f].start, &err), &err, path);
        for (int64_t step = files[f].first; step <= files[f].last; step++) {
            tb_scalar s[5] = {
                {"train/loss", files[f].loss0 - 0.125 * (double)step, "training loss"},
                {"train/learning_rate", 0.001 * (double)step, "learning rate"},
                {"net/worker_0/bytes_sent", 1000.0 * (double)step, "bytes sent by worker 0"},
            };
            int n = 3;
            if (step % 3 == 0) {
                s[n++] = (tb_scalar){"eval/loss", files[f].loss0 - 0.1 * (double)step,
                                     "validation loss"};
                s[n++] =
                    (tb_scalar){"eval/perplexity", exp(files[f].loss0 - 0.1 * (double)step), NULL};
            }
            check_ok(tb_writer_scalars(w, step, files[f].t0 + (double)step, s, n, &err), &err,
                     "scalars");
        }
        tb_writer_close(w);
    }
}

static void test_golden_run(void **state) {
    (void)state;
    const char *regen = getenv("LORAPS_WRITE_GOLDEN");
    char dir[512], expected[600], path[1024];
    snprintf(dir, sizeof dir, "%s/golden", tmpdir);
    snprintf(expected, sizeof expected, "%s/expected_scalars.txt", GOLDEN_DIR);
    lp_err err;
    if (regen && !strcmp(regen, "1")) {
        char run[600];
        snprintf(run, sizeof run, "%s/run", GOLDEN_DIR);
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "%s/%s", run, golden_names[i]);
            unlink(path); /* the writer never overwrites a file */
        }
        write_golden_run(run);
        char *text = view_run(run);
        check_ok(fs_write_atomic(expected, text, strlen(text), &err), &err, expected);
        free(text);
        return;
    }
    write_golden_run(dir);
    /* byte for byte what is committed, so the tensorboard check reads today's writer's output */
    for (int i = 0; i < 2; i++) {
        char ours[1024], theirs[1024];
        snprintf(ours, sizeof ours, "%s/%s", dir, golden_names[i]);
        snprintf(theirs, sizeof theirs, "%s/run/%s", GOLDEN_DIR, golden_names[i]);
        size_t n1, n2;
        unsigned char *a = read_bytes(ours, &n1), *b = read_bytes(theirs, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(a, b, n1);
        free(a);
        free(b);
    }
    char *view = view_run(dir), *want;
    size_t n;
    check_ok(fs_read_all(expected, &want, &n, &err), &err, expected);
    assert_string_equal(view, want);
    /* the resume as TensorBoard shows it: steps 1-4 from the first file, 5-8 from the second */
    assert_non_null(strstr(view, "scalar train/loss 4 2.5\n"));
    assert_non_null(strstr(view, "scalar train/loss 5 1.375\n"));
    assert_null(strstr(view, "scalar train/loss 5 2.375\n"));
    assert_non_null(strstr(view, "scalar eval/loss 6 1.39999998\n"));
    free(view);
    free(want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors), cmocka_unit_test(test_framing_bytes),
        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_new_file_per_writer),
        cmocka_unit_test(test_damaged_files),  cmocka_unit_test(test_full_disk_keeps_file_readable),
        cmocka_unit_test(test_golden_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
