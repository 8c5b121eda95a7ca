/* wire: header + tensor frames over a real ZeroMQ pair (inproc), chunking, dtype conversion on
 * the wire, zero-copy ownership, and the checks on received frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dtype.h"
#include "wire.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void *ctx, *a, *b;

static int setup(void **state) {
    (void)state;
    ctx = zmq_ctx_new();
    a = zmq_socket(ctx, ZMQ_PAIR);
    b = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(a, "inproc://wire-test"), 0);
    assert_int_equal(zmq_connect(b, "inproc://wire-test"), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
    return 0;
}

static int recv_blocking(void *sock, wire_msg *m, Loraps__ErrorCode *code, lp_err *err) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    zmq_poll(&it, 1, 2000);
    return wire_recv(sock, 0, m, NULL, code, err);
}

static Loraps__Header push_header(void) {
    static Loraps__Push p;
    loraps__push__init(&p);
    p.step = 7;
    p.n_tokens = 42;
    Loraps__Header h = LORAPS__HEADER__INIT;
    h.job_id = 99;
    h.body_case = LORAPS__HEADER__BODY_PUSH;
    h.push = &p;
    return h;
}

static void test_roundtrip_chunked(void **state) {
    (void)state;
    float t0[10], t1[3];
    for (int i = 0; i < 10; i++) t0[i] = (float)i * 0.5f - 2;
    for (int i = 0; i < 3; i++) t1[i] = 100.0f + (float)i;
    wire_src src[2] = {{4, 10, t0}, {9, 3, t1}};
    wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .chunk_elems = 4};
    wire_counters c = {0};
    lp_err err;
    Loraps__Header h = push_header();
    assert_int_equal(wire_send(a, &h, src, 2, &o, &c, &err), 0);
    wire_msg m;
    Loraps__ErrorCode code;
    wire_counters rc = {0};
    zmq_pollitem_t it = {b, 0, ZMQ_POLLIN, 0};
    zmq_poll(&it, 1, 2000);
    assert_int_equal(wire_recv(b, 0, &m, &rc, &code, &err), WIRE_OK);
    /* copied (no owner), so joined: [t0 0..4) [t0 4..8) [t0 8..10) + t1 0..2) [t1 2..3) */
    assert_int_equal(m.n_frames, 5);
    assert_int_equal(m.n_parts, 4);
    assert_true(m.hdr->frames[3]->joined);
    assert_int_equal(m.hdr->frames[3]->numel, 2);
    assert_int_equal(m.hdr->push->step, 7);
    assert_int_equal(m.hdr->job_id, 99);
    assert_int_equal(m.hdr->protocol, WIRE_PROTOCOL);
    assert_int_equal(c.bytes_sent, rc.bytes_received);
    assert_int_equal(m.bytes, rc.bytes_received);

    uint32_t idx[2] = {4, 9};
    size_t numel[2] = {10, 3};
    wire_expect e = {2, idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
    assert_int_equal(wire_check_frames(&m, &e, &code, &err), 0);
    assert_true(wire_frames_finite(&m));
    float o0[10], o1[3];
    float *dst[2] = {o0, o1};
    wire_frames_apply(&m, &e, dst, 1.0f, 0);
    assert_memory_equal(o0, t0, sizeof t0);
    assert_memory_equal(o1, t1, sizeof t1);
    wire_frames_apply(&m, &e, dst, 2.0f, 1); /* accumulate: o += 2 t = 3 t */
    for (int i = 0; i < 10; i++) assert_float_equal(o0[i], 3 * t0[i], 1e-6);

    /* The same frames do not satisfy other expectations. */
    size_t wrong_numel[2] = {11, 3};
    wire_expect e2 = {2, idx, wrong_numel, LORAPS__WIRE_DTYPE__WIRE_F32};
    assert_int_equal(wire_check_frames(&m, &e2, &code, &err), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_SHAPE);
    uint32_t wrong_idx[2] = {4, 8};
    wire_expect e3 = {2, wrong_idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
    assert_int_equal(wire_check_frames(&m, &e3, &code, &err), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_SHAPE);
    wire_expect e4 = {1, idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
    assert_int_equal(wire_check_frames(&m, &e4, &code, &err), -1);
    wire_expect e5 = {2, idx, numel, LORAPS__WIRE_DTYPE__WIRE_BF16};
    assert_int_equal(wire_check_frames(&m, &e5, &code, &err), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_DTYPE);
    wire_msg_close(&m);
}

static void test_bf16_and_f16_on_the_wire(void **state) {
    (void)state;
    float t[5] = {1.0f, -2.5f, 3.14159f, 1e-3f, 65000.0f};
    for (int d = 1; d <= 2; d++) {
        Loraps__WireDtype dt = (Loraps__WireDtype)d;
        wire_src src = {0, 5, t};
        wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32, .wire_dtype = dt};
        lp_err err;
        Loraps__Header h = push_header();
        assert_int_equal(wire_send(a, &h, &src, 1, &o, NULL, &err), 0);
        wire_msg m;
        Loraps__ErrorCode code;
        assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
        assert_int_equal(m.size[0], 10);
        uint32_t idx = 0;
        size_t numel = 5;
        wire_expect e = {1, &idx, &numel, dt};
        assert_int_equal(wire_check_frames(&m, &e, &code, &err), 0);
        float out[5], *dst = out;
        wire_frames_apply(&m, &e, &dst, 1.0f, 0);
        for (int i = 0; i < 5; i++) {
            uint16_t h16 =
                dt == LORAPS__WIRE_DTYPE__WIRE_BF16 ? f32_to_bf16(t[i]) : f32_to_f16(t[i]);
            float want = dt == LORAPS__WIRE_DTYPE__WIRE_BF16 ? bf16_to_f32(h16) : f16_to_f32(h16);
            assert_float_equal(out[i], want, 0);
        }
        wire_msg_close(&m);
    }
}

static void test_nonfinite_detected_in_every_dtype(void **state) {
    (void)state;
    float vals[3] = {NAN, INFINITY, -INFINITY};
    for (int d = 0; d <= 2; d++)
        for (int k = 0; k < 3; k++) {
            float t[4] = {1, 2, 3, 4};
            t[2] = vals[k];
            wire_src src = {0, 4, t};
            wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                                .wire_dtype = (Loraps__WireDtype)d};
            lp_err err;
            Loraps__Header h = push_header();
            assert_int_equal(wire_send(a, &h, &src, 1, &o, NULL, &err), 0);
            wire_msg m;
            Loraps__ErrorCode code;
            assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
            assert_false(wire_frames_finite(&m));
            wire_msg_close(&m);
        }
}

static atomic_int refs;
static void ref(void *hint) {
    (void)hint;
    atomic_fetch_add(&refs, 1);
}
static void unref(void *data, void *hint) {
    (void)data;
    (void)hint;
    atomic_fetch_sub(&refs, 1);
}

static void test_zero_copy_owner_released(void **state) {
    (void)state;
    float *t = calloc(100, sizeof(float));
    wire_owner own = {ref, unref, NULL};
    wire_src src = {1, 100, t};
    wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .chunk_elems = 30,
                        .owner = &own};
    lp_err err;
    Loraps__Header h = push_header();
    assert_int_equal(wire_send(a, &h, &src, 1, &o, NULL, &err), 0);
    wire_msg m;
    Loraps__ErrorCode code;
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
    assert_int_equal(m.n_frames, 4);
    wire_msg_close(&m);
    /* inproc hands the same buffers over: all released once the receiver closed them */
    assert_int_equal(atomic_load(&refs), 0);
    free(t);
}

/* Zero-copy: tensors that follow each other in memory travel as one raw frame; a gap starts a
 * new one; the receiver sees each tensor frame's own data either way. */
static void test_joined_frames_zero_copy(void **state) {
    (void)state;
    float *buf = malloc(40 * sizeof(float));
    for (int i = 0; i < 40; i++) buf[i] = (float)i;
    /* tensors 0 and 1 adjacent, tensor 2 after a gap of 5 */
    wire_src src[3] = {{0, 10, buf}, {1, 15, buf + 10}, {2, 10, buf + 30}};
    wire_owner own = {ref, unref, NULL};
    wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .owner = &own};
    lp_err err;
    Loraps__Header h = push_header();
    assert_int_equal(wire_send(a, &h, src, 3, &o, NULL, &err), 0);
    wire_msg m;
    Loraps__ErrorCode code;
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
    assert_int_equal(m.n_frames, 3);
    assert_int_equal(m.n_parts, 2);
    assert_false(m.hdr->frames[0]->joined);
    assert_true(m.hdr->frames[1]->joined);
    assert_false(m.hdr->frames[2]->joined);
    assert_int_equal(m.size[1], 15 * 4);
    uint32_t idx[3] = {0, 1, 2};
    size_t numel[3] = {10, 15, 10};
    wire_expect e = {3, idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
    assert_int_equal(wire_check_frames(&m, &e, &code, &err), 0);
    float o0[10], o1[15], o2[10];
    float *dst[3] = {o0, o1, o2};
    wire_frames_apply(&m, &e, dst, 1.0f, 0);
    assert_memory_equal(o0, buf, sizeof o0);
    assert_memory_equal(o1, buf + 10, sizeof o1);
    assert_memory_equal(o2, buf + 30, sizeof o2);
    /* the parts can be taken away from the message and outlive it */
    int n_parts;
    zmq_msg_t *parts = wire_msg_take_parts(&m, &n_parts);
    assert_int_equal(n_parts, 2);
    const float *view = (const float *)(const void *)m.data[2];
    wire_msg_close(&m);
    assert_float_equal(view[3], 33.0f, 0);
    wire_parts_close(parts, n_parts);
    assert_int_equal(atomic_load(&refs), 0);
    free(buf);
}

/* Joined tensor frames whose sizes do not add up to their raw frame, or a first frame joined to
 * nothing, are malformed. */
/* Many tensors, some adjacent in memory and some not, larger and smaller than the chunk: every
 * one arrives whole and in place, whatever raw frames they were grouped into. */
static void test_joined_frames_many_tensors(void **state) {
    (void)state;
    enum { N = 40 };
    size_t numel[N], off[N], total = 0;
    uint32_t idx[N];
    wire_src src[N];
    for (int t = 0; t < N; t++) {
        numel[t] = 1 + (size_t)((t * 7919) % 37);
        off[t] = total;
        total += numel[t] + (t % 3 == 0 ? 5 : 0); /* every third followed by a gap */
        idx[t] = (uint32_t)(2 * t);
    }
    float *buf = malloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++) buf[i] = (float)i;
    for (int t = 0; t < N; t++) src[t] = (wire_src){idx[t], numel[t], buf + off[t]};
    for (int zc = 0; zc < 2; zc++) {
        wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                            .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                            .chunk_elems = 16,
                            .zero_copy_unowned = zc};
        lp_err err;
        Loraps__Header h = push_header();
        assert_int_equal(wire_send(a, &h, src, N, &o, NULL, &err), 0);
        wire_msg m;
        Loraps__ErrorCode code;
        assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
        wire_expect e = {N, idx, numel, LORAPS__WIRE_DTYPE__WIRE_F32};
        if (wire_check_frames(&m, &e, &code, &err) < 0) fail_msg("%s", err.msg);
        float *out[N];
        for (int t = 0; t < N; t++) out[t] = calloc(numel[t], sizeof(float));
        wire_frames_apply(&m, &e, out, 1.0f, 0);
        for (int t = 0; t < N; t++) {
            assert_memory_equal(out[t], buf + off[t], numel[t] * sizeof(float));
            free(out[t]);
        }
        wire_msg_close(&m);
    }
    free(buf);
}

static void test_joined_frames_malformed(void **state) {
    (void)state;
    lp_err err;
    wire_msg m;
    Loraps__ErrorCode code;
    Loraps__Header h = push_header();
    Loraps__TensorFrame f0 = LORAPS__TENSOR_FRAME__INIT, f1 = LORAPS__TENSOR_FRAME__INIT;
    Loraps__TensorFrame *fp[2] = {&f0, &f1};
    f0.numel = 2;
    f1.numel = 2;
    f1.joined = 1;
    h.n_frames = 2;
    h.frames = fp;
    h.protocol = WIRE_PROTOCOL;
    unsigned char hb[256];
    float data[5] = {1, 2, 3, 4, 5};
    for (int k = 0; k < 3; k++) {
        size_t bytes = k == 0 ? 12 : k == 1 ? 20 : 16; /* short, long, first joined */
        f0.joined = k == 2;
        size_t len = loraps__header__pack(&h, hb);
        zmq_send(a, hb, len, ZMQ_SNDMORE);
        zmq_send(a, data, bytes, 0);
        assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_BAD);
        assert_int_not_equal(code, LORAPS__ERROR_CODE__ERR_NONE);
        wire_msg_close(&m);
    }
    /* and exactly 16 bytes is two tensor frames of 2 */
    f0.joined = 0;
    size_t len = loraps__header__pack(&h, hb);
    zmq_send(a, hb, len, ZMQ_SNDMORE);
    zmq_send(a, data, 16, 0);
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
    assert_int_equal(m.n_frames, 2);
    assert_float_equal(((const float *)(const void *)m.data[1])[0], 3.0f, 0);
    wire_msg_close(&m);
}

static void test_malformed_messages(void **state) {
    (void)state;
    lp_err err;
    wire_msg m;
    Loraps__ErrorCode code;
    /* not a protobuf */
    zmq_send(a, "\xff\xff\xff\xff", 4, 0);
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_BAD);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_MALFORMED);
    wire_msg_close(&m);
    /* a header declaring 2 frames, with 1 */
    Loraps__Header h = push_header();
    Loraps__TensorFrame f = LORAPS__TENSOR_FRAME__INIT, *fp[2] = {&f, &f};
    h.n_frames = 2;
    h.frames = fp;
    h.protocol = WIRE_PROTOCOL;
    unsigned char buf[256];
    size_t len = loraps__header__pack(&h, buf);
    zmq_send(a, buf, len, ZMQ_SNDMORE);
    zmq_send(a, "abcd", 4, 0);
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_BAD);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_MALFORMED);
    wire_msg_close(&m);
    /* more frames than declared */
    h.n_frames = 0;
    len = loraps__header__pack(&h, buf);
    zmq_send(a, buf, len, ZMQ_SNDMORE);
    zmq_send(a, "abcd", 4, 0);
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_BAD);
    wire_msg_close(&m);
    /* the socket is still in step: a good message goes through */
    Loraps__Header g = push_header();
    assert_int_equal(wire_send_header(a, NULL, 0, &g, NULL, &err), 0);
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
    assert_int_equal(m.hdr->push->n_tokens, 42);
    wire_msg_close(&m);
    /* nothing waiting */
    assert_int_equal(wire_recv(b, 0, &m, NULL, &code, &err), WIRE_NONE);
    wire_msg_close(&m);
}

static void test_error_message(void **state) {
    (void)state;
    lp_err err;
    assert_int_equal(wire_send_error(a, NULL, 0, 5, LORAPS__ERROR_CODE__ERR_STEP, "too far", NULL),
                     0);
    wire_msg m;
    Loraps__ErrorCode code;
    assert_int_equal(recv_blocking(b, &m, &code, &err), WIRE_OK);
    assert_int_equal(m.hdr->body_case, LORAPS__HEADER__BODY_ERROR);
    assert_int_equal(m.hdr->error->code, LORAPS__ERROR_CODE__ERR_STEP);
    assert_string_equal(m.hdr->error->message, "too far");
    assert_string_equal(wire_error_name(LORAPS__ERROR_CODE__ERR_STEP), "ERR_STEP");
    wire_msg_close(&m);
    Loraps__WireDtype d;
    assert_int_equal(wire_dtype_parse("bf16", &d), 0);
    assert_int_equal(d, LORAPS__WIRE_DTYPE__WIRE_BF16);
    assert_int_equal(wire_dtype_parse("f8", &d), -1);
    assert_int_equal(wire_dtype_size(LORAPS__WIRE_DTYPE__WIRE_F16), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_chunked),
        cmocka_unit_test(test_bf16_and_f16_on_the_wire),
        cmocka_unit_test(test_nonfinite_detected_in_every_dtype),
        cmocka_unit_test(test_zero_copy_owner_released),
        cmocka_unit_test(test_joined_frames_zero_copy),
        cmocka_unit_test(test_joined_frames_many_tensors),
        cmocka_unit_test(test_joined_frames_malformed),
        cmocka_unit_test(test_malformed_messages),
        cmocka_unit_test(test_error_message),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
