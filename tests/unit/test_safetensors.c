/* safetensors: writer round trips, and a reader that rejects every kind of broken file with a
 * message that says what is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dtype.h"
#include "fsutil.h"
#include "safetensors.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCRATCH_NAME "st"
#include "scratch_dir.h"

static const char *tmp_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

/* Plain stdio (no fsync): the corruption tests write thousands of files. */
static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* A file with a hand-written header (padded to 8 bytes) followed by data_len bytes 0..n. */
static void write_raw(const char *path, const char *header, size_t data_len) {
    size_t hlen = strlen(header), padded = (hlen + 7) & ~(size_t)7;
    size_t total = 8 + padded + data_len;
    unsigned char *buf = malloc(total);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memset(buf + 8, ' ', padded);
    memcpy(buf + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++) buf[8 + padded + i] = (unsigned char)i;
    write_bytes(path, buf, total);
    free(buf);
}

/* Opening path must fail, and the message must name the file and contain phrase. */
static void expect_open_error(const char *path, const char *phrase) {
    st_file f;
    lp_err err = {{0}};
    int rc = st_open(&f, path, &err);
    if (rc == 0) st_close(&f);
    assert_int_equal(rc, -1);
    if (!strstr(err.msg, phrase) || !strstr(err.msg, path)) {
        fail_msg("error '%s' lacks '%s' or the path", err.msg, phrase);
    }
    /* A failed open leaves nothing to free. */
    assert_null(f.map);
    assert_null(f.tensors);
    assert_int_equal(f.n_tensors, 0);
}

static void expect_header_error(const char *header, size_t data_len, const char *phrase) {
    const char *path = tmp_path("bad.safetensors");
    write_raw(path, header, data_len);
    expect_open_error(path, phrase);
}

static const float A_DATA[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
static const float B_DATA[3] = {0.1f, -0.2f, 1000.5f};
static const float C_DATA[4] = {3.14159f, -1e20f, 1e-20f, 7.0f};

/* a: F32 [2,3], b: F16 [3], c: BF16 [2,2], metadata format=pt. */
static void write_sample(const char *path) {
    lp_err err;
    st_writer *w = st_writer_new();
    int64_t sa[2] = {2, 3}, sb[1] = {3}, sc[2] = {2, 2};
    assert_int_equal(st_writer_set_metadata(w, "format", "pt", &err), 0);
    assert_int_equal(st_writer_add_f32(w, "a", DT_F32, 2, sa, A_DATA, &err), 0);
    assert_int_equal(st_writer_add_f32(w, "b", DT_F16, 1, sb, B_DATA, &err), 0);
    assert_int_equal(st_writer_add_f32(w, "c", DT_BF16, 2, sc, C_DATA, &err), 0);
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_writer_free(w);
}

static void test_roundtrip_f32_f16_bf16(void **state) {
    (void)state;
    const char *path = tmp_path("rt.safetensors");
    write_sample(path);
    st_file f;
    lp_err err;
    assert_int_equal(st_open(&f, path, &err), 0);
    assert_int_equal(f.n_tensors, 3);
    assert_string_equal(st_metadata(&f, "format"), "pt");
    assert_null(st_metadata(&f, "missing"));

    const st_tensor *a = st_find(&f, "a");
    assert_non_null(a);
    assert_int_equal(a->dtype, DT_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->numel, 6);
    assert_int_equal(a->nbytes, 24);
    const float *view = st_f32_view(a);
    assert_non_null(view);
    assert_ptr_equal(view, a->data); /* zero copy */
    assert_memory_equal(view, A_DATA, sizeof A_DATA);

    float out[6];
    const st_tensor *b = st_find(&f, "b");
    assert_int_equal(b->dtype, DT_F16);
    assert_int_equal(b->nbytes, 6);
    assert_null(st_f32_view(b));
    assert_int_equal(st_read_f32(b, out, 3, &err), 0);
    for (int i = 0; i < 3; i++) assert_true(out[i] == f16_to_f32(f32_to_f16(B_DATA[i])));
    assert_true(fabsf(out[2] - 1000.5f) < 1e-6f); /* exactly representable in f16 */

    const st_tensor *c = st_find(&f, "c");
    assert_int_equal(c->dtype, DT_BF16);
    assert_int_equal(st_read_f32(c, out, 4, &err), 0);
    for (int i = 0; i < 4; i++) assert_true(out[i] == bf16_to_f32(f32_to_bf16(C_DATA[i])));
    assert_true(out[3] == 7.0f);

    assert_null(st_find(&f, "d"));
    st_close(&f);
    assert_null(f.map);
}

static void test_read_f32_errors_and_f64(void **state) {
    (void)state;
    const char *path = tmp_path("f64.safetensors");
    double d[3] = {1.5, -1e300, 0.333333333333};
    int32_t ints[2] = {7, -7};
    int64_t s3[1] = {3}, s2[1] = {2};
    lp_err err;
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "d", DT_F64, 1, s3, d, &err), 0);
    assert_int_equal(st_writer_add(w, "i", DT_I32, 1, s2, ints, &err), 0);
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_writer_free(w);

    st_file f;
    assert_int_equal(st_open(&f, path, &err), 0);
    float out[3];
    assert_int_equal(st_read_f32(st_find(&f, "d"), out, 3, &err), 0);
    assert_true(out[0] == 1.5f);
    assert_true(isinf(out[1]) && out[1] < 0);
    assert_true(out[2] == (float)0.333333333333);
    assert_int_equal(st_read_f32(st_find(&f, "d"), out, 2, &err), -1);
    assert_non_null(strstr(err.msg, "has 3 elements"));
    assert_int_equal(st_read_f32(st_find(&f, "i"), out, 2, &err), -1);
    assert_non_null(strstr(err.msg, "not a float type"));
    assert_memory_equal(st_find(&f, "i")->data, ints, sizeof ints);
    st_close(&f);
}

/* The data area starts 8-byte aligned, so an F32 tensor at an aligned offset has a view;
 * one after an odd-sized F16 tensor does not, but can still be read. */
static void test_alignment_of_f32_view(void **state) {
    (void)state;
    const char *path = tmp_path("align.safetensors");
    float first[2] = {1, 2}, half[3] = {1, 2, 3}, last[2] = {5, 6};
    int64_t s2[1] = {2}, s3[1] = {3};
    lp_err err;
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "first", DT_F32, 1, s2, first, &err), 0);
    assert_int_equal(st_writer_add_f32(w, "half", DT_F16, 1, s3, half, &err), 0);
    assert_int_equal(st_writer_add_f32(w, "last", DT_F32, 1, s2, last, &err), 0);
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_writer_free(w);

    st_file f;
    assert_int_equal(st_open(&f, path, &err), 0);
    const st_tensor *t0 = st_find(&f, "first"), *t2 = st_find(&f, "last");
    assert_int_equal((uintptr_t)t0->data % 8, 0);
    assert_non_null(st_f32_view(t0));
    assert_int_equal((uintptr_t)t2->data % 4, 2); /* 8 + 6 bytes in */
    assert_null(st_f32_view(t2));
    float out[2];
    assert_int_equal(st_read_f32(t2, out, 2, &err), 0);
    assert_true(out[0] == 5 && out[1] == 6);
    st_close(&f);
}

/* Header layout: length multiple of 8, space padding, metadata first, tensors in insertion
 * order with consecutive offsets. */
static void test_header_layout(void **state) {
    (void)state;
    const char *path = tmp_path("layout.safetensors");
    write_sample(path);
    char *text;
    size_t len;
    lp_err err;
    assert_int_equal(fs_read_all(path, &text, &len, &err), 0);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)text[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(len, 8 + hlen + 24 + 6 + 8);
    char *header = strndup(text + 8, hlen);
    assert_int_equal(strncmp(header, "{\"__metadata__\":{\"format\":\"pt\"}", 31), 0);
    const char *a =
        strstr(header, "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}");
    const char *b =
        strstr(header, "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[24,30]}");
    const char *c =
        strstr(header, "\"c\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[30,38]}");
    assert_true(a && b && c && a < b && b < c);
    char *end = strrchr(header, '}');
    for (char *p = end + 1; *p; p++) assert_int_equal(*p, ' ');
    free(header);
    free(text);
}

/* Tensors come back in the order of their byte ranges, not of the JSON keys. */
static void test_tensors_sorted_by_offset(void **state) {
    (void)state;
    const char *path = tmp_path("sorted.safetensors");
    write_raw(path,
              "{\"z\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
              "\"y\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]},"
              "\"x\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]}}",
              10);
    st_file f;
    lp_err err;
    assert_int_equal(st_open(&f, path, &err), 0);
    assert_int_equal(f.n_tensors, 3);
    assert_string_equal(f.tensors[0].name, "x");
    assert_string_equal(f.tensors[1].name, "z");
    assert_string_equal(f.tensors[2].name, "y");
    assert_int_equal(((const unsigned char *)f.tensors[1].data)[0], 4);
    assert_int_equal(f.n_metadata, 0);
    st_close(&f);
}

static void test_empty_and_zero_sized(void **state) {
    (void)state;
    const char *path = tmp_path("empty.safetensors");
    lp_err err;
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_file f;
    assert_int_equal(st_open(&f, path, &err), 0);
    assert_int_equal(f.n_tensors, 0);
    st_close(&f);

    int64_t zero[2] = {0, 5};
    float one = 1;
    assert_int_equal(st_writer_add_f32(w, "none", DT_BF16, 2, zero, NULL, &err), 0);
    assert_int_equal(st_writer_add_f32(w, "scalar", DT_F32, 0, NULL, &one, &err), 0);
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_writer_free(w);
    assert_int_equal(st_open(&f, path, &err), 0);
    assert_int_equal(st_find(&f, "none")->numel, 0);
    assert_int_equal(st_find(&f, "scalar")->ndim, 0);
    assert_int_equal(st_find(&f, "scalar")->numel, 1);
    assert_true(st_f32_view(st_find(&f, "scalar"))[0] == 1.0f);
    float out;
    assert_int_equal(st_read_f32(st_find(&f, "none"), &out, 0, &err), 0);
    st_close(&f);
}

static void test_writer_rejects_bad_input(void **state) {
    (void)state;
    lp_err err;
    float x[4] = {0};
    int64_t s1[1] = {4}, neg[1] = {-1}, big[2] = {INT64_MAX, 4};
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "x", DT_F32, 1, s1, x, &err), 0);
    assert_int_equal(st_writer_add_f32(w, "x", DT_F32, 1, s1, x, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate tensor 'x'"));
    assert_int_equal(st_writer_add_f32(w, "__metadata__", DT_F32, 1, s1, x, &err), -1);
    assert_non_null(strstr(err.msg, "invalid tensor name"));
    assert_int_equal(st_writer_add_f32(w, "n", DT_F32, 1, neg, x, &err), -1);
    assert_non_null(strstr(err.msg, "bad shape"));
    assert_int_equal(st_writer_add_f32(w, "n", DT_F32, 2, big, x, &err), -1);
    assert_int_equal(st_writer_add_f32(w, "n", DT_F32, 9, nine, x, &err), -1);
    assert_non_null(strstr(err.msg, "9 dims"));
    assert_int_equal(st_writer_add_f32(w, "n", DT_I32, 1, s1, x, &err), -1);
    assert_non_null(strstr(err.msg, "cannot be stored as I32"));
    assert_int_equal(st_writer_add(w, "n", DT_F32, 1, s1, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "no data"));
    /* Invalid UTF-8 cannot go into the JSON header: the write fails, no file appears. */
    assert_int_equal(st_writer_set_metadata(w, "k", "\xff\xfe", &err), 0);
    assert_int_equal(st_writer_write(w, tmp_path("never.safetensors"), &err), -1);
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_false(fs_exists(tmp_path("never.safetensors")));
    st_writer_free(w);
}

/* st_writer_add borrows the data: what is written is what the buffer holds at write time. */
static void test_writer_borrows_data(void **state) {
    (void)state;
    const char *path = tmp_path("borrow.safetensors");
    float x[2] = {1, 2};
    int64_t s[1] = {2};
    lp_err err;
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "x", DT_F32, 1, s, x, &err), 0);
    assert_int_equal(st_writer_set_metadata(w, "k", "old", &err), 0);
    assert_int_equal(st_writer_set_metadata(w, "k", "new", &err), 0);
    x[1] = 42;
    assert_int_equal(st_writer_write(w, path, &err), 0);
    st_writer_free(w);
    st_file f;
    assert_int_equal(st_open(&f, path, &err), 0);
    assert_true(st_f32_view(st_find(&f, "x"))[1] == 42);
    assert_int_equal(f.n_metadata, 1);
    assert_string_equal(st_metadata(&f, "k"), "new");
    st_close(&f);
}

static void test_short_and_missing_files(void **state) {
    (void)state;
    const char *path = tmp_path("short.safetensors");
    write_bytes(path, "", 0);
    expect_open_error(path, "shorter than the 8-byte header length");
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_open_error(path, "shorter than the 8-byte header length");
    expect_open_error(tmp_path("missing.safetensors"), "No such file");
    expect_open_error(tmpdir, "not a regular file");
}

static void test_header_length_checks(void **state) {
    (void)state;
    const char *path = tmp_path("hlen.safetensors");
    unsigned char buf[16] = {0};
    uint64_t too_big = (uint64_t)ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(too_big >> (8 * i));
    write_bytes(path, buf, sizeof buf);
    expect_open_error(path, "exceeds the limit");
    memset(buf, 0xff, 8); /* 2^64 - 1: must not wrap around */
    write_bytes(path, buf, sizeof buf);
    expect_open_error(path, "exceeds the limit");
    memset(buf, 0, 8);
    buf[0] = 9; /* 9 > 16 - 8 */
    memcpy(buf + 8, "{}      ", 8);
    write_bytes(path, buf, sizeof buf);
    expect_open_error(path, "points past the end");
    buf[0] = 8; /* exactly fits: a valid empty file */
    write_bytes(path, buf, sizeof buf);
    st_file f;
    lp_err err;
    assert_int_equal(st_open(&f, path, &err), 0);
    st_close(&f);
}

/* A valid file cut at any length is rejected, and never read past its end. */
static void test_truncated_at_every_length(void **state) {
    (void)state;
    const char *path = tmp_path("full.safetensors"), *cut = tmp_path("cut.safetensors");
    write_sample(path);
    char *text;
    size_t len;
    lp_err err;
    assert_int_equal(fs_read_all(path, &text, &len, &err), 0);
    for (size_t n = 0; n < len; n++) {
        write_bytes(cut, text, n);
        st_file f;
        int rc = st_open(&f, cut, &err);
        if (rc == 0) st_close(&f);
        if (rc != -1) fail_msg("file cut to %zu of %zu bytes was accepted", n, len);
    }
    /* Cut inside the data: the last tensor runs out of bounds. */
    write_bytes(cut, text, len - 1);
    expect_open_error(cut, "out of bounds");
    free(text);
}

/* Corrupting any single header byte must give a clean accept or reject, never a crash. */
static void test_corrupt_every_header_byte(void **state) {
    (void)state;
    const char *path = tmp_path("full.safetensors"), *bad = tmp_path("flip.safetensors");
    write_sample(path);
    char *text;
    size_t len;
    lp_err err;
    assert_int_equal(fs_read_all(path, &text, &len, &err), 0);
    size_t hlen = (unsigned char)text[0] | (size_t)(unsigned char)text[1] << 8;
    const unsigned char values[] = {0x00, 0xff, '"', '9', '-', '{', ']'};
    int rejected = 0;
    for (size_t i = 0; i < 8 + hlen; i++) {
        for (size_t v = 0; v < sizeof values; v++) {
            char saved = text[i];
            text[i] = (char)values[v];
            write_bytes(bad, text, len);
            text[i] = saved;
            st_file f;
            if (st_open(&f, bad, &err) != 0) {
                rejected++;
                continue;
            }
            /* Accepted: every tensor lies inside the mapping. */
            for (int t = 0; t < f.n_tensors; t++) {
                const char *p = f.tensors[t].data, *base = f.map;
                assert_true(p >= base && p + f.tensors[t].nbytes <= base + f.map_size);
            }
            st_close(&f);
        }
    }
    assert_true(rejected > 0);
    free(text);
}

#define T_F32_8 "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_bad_json(void **state) {
    (void)state;
    expect_header_error("{\"a\": ", 0, "malformed JSON header");
    expect_header_error("[1, 2]", 0, "JSON header is not an object");
    expect_header_error("\"str\"", 0, "malformed JSON header");
    expect_header_error("{\"a\":" T_F32_8 "} trailing", 8, "malformed JSON header");
    expect_header_error("{\"a\":" T_F32_8 ",\"a\":" T_F32_8 "}", 8, "duplicate");
    const char *path = tmp_path("nul.safetensors");
    const char with_nul[] = "\x08\0\0\0\0\0\0\0{\"a\"\0:1}";
    write_bytes(path, with_nul, sizeof with_nul - 1);
    expect_open_error(path, "malformed JSON header");
}

static void test_bad_entries(void **state) {
    (void)state;
    expect_header_error("{\"a\":5}", 0, "tensor 'a': entry must be an object");
    expect_header_error("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing 'dtype'");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing 'shape'");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "missing 'data_offsets'");
    expect_header_error("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "'dtype' must be a string");
    expect_header_error("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "unknown dtype 'F33'");
    expect_header_error("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "unknown dtype 'f32'");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
                        "'shape' must be an array");
}

static void test_bad_shapes(void **state) {
    (void)state;
    const char *not_int = "dim 0 of 'shape' is not a non-negative integer";
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                        not_int);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
                        not_int);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                        not_int);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,null],\"data_offsets\":[0,8]}}", 8,
                        "dim 1 of 'shape'");
    expect_header_error(
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
        "9 dims, more than the 8 supported");
    expect_header_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                        "\"data_offsets\":[0,1]}}",
                        1, "overflows the element count");
    expect_header_error("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                        "\"data_offsets\":[0,1]}}",
                        1, "overflows the byte count");
    expect_header_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],"
                        "\"data_offsets\":[0,1]}}",
                        1, "malformed JSON header"); /* beyond int64: jansson refuses it */
}

static void test_bad_offsets(void **state) {
    (void)state;
    const char *form = "'data_offsets' must be [begin, end]";
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, form);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
                        form);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}", 8, form);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
                        form);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", 8,
                        form);
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                        "begin 8 > end 0");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12,
                        "span 12 bytes but the shape and dtype need 8");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8,
                        "out of bounds");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                        "\"data_offsets\":[18446744073709551608,0]}}",
                        8, "malformed JSON header"); /* beyond int64 */
}

static void test_bad_layout(void **state) {
    (void)state;
    expect_header_error("{\"a\":" T_F32_8 ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
                        "\"data_offsets\":[4,12]}}",
                        12, "tensor 'b' overlaps tensor 'a'");
    expect_header_error("{\"a\":" T_F32_8 ",\"b\":" T_F32_8 "}", 8, "overlaps");
    expect_header_error("{\"a\":" T_F32_8 ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
                        "\"data_offsets\":[12,20]}}",
                        20, "hole in the data area: bytes 8..12");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                        "hole in the data area: bytes 0..4");
    expect_header_error("{\"a\":" T_F32_8 "}", 12, "hole in the data area: bytes 8..12");
    expect_header_error("{}", 1, "hole in the data area: bytes 0..1");
}

static void test_bad_metadata(void **state) {
    (void)state;
    expect_header_error("{\"__metadata__\":{\"k\":1}}", 0, "value of 'k' must be a string");
    expect_header_error("{\"__metadata__\":{\"k\":\"v\",\"n\":null}}", 0,
                        "value of 'n' must be a string");
    expect_header_error("{\"__metadata__\":[\"k\"]}", 0, "must be an object of strings");
    expect_header_error("{\"__metadata__\":\"k\"}", 0, "must be an object of strings");
    /* A valid map is read. */
    const char *path = tmp_path("meta.safetensors");
    write_raw(path, "{\"__metadata__\":{\"a\":\"1\",\"b\":\"\"},\"x\":" T_F32_8 "}", 8);
    st_file f;
    lp_err err;
    assert_int_equal(st_open(&f, path, &err), 0);
    assert_int_equal(f.n_metadata, 2);
    assert_string_equal(st_metadata(&f, "b"), "");
    assert_int_equal(f.n_tensors, 1);
    st_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_f32_f16_bf16, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_f32_errors_and_f64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alignment_of_f32_view, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tensors_sorted_by_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_and_zero_sized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_rejects_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_borrows_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_and_missing_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_length_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_at_every_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_every_header_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_metadata, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
