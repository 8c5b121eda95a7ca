/* worker_grads: the worker never rewrites its gradient buffer while libzmq may still send from
 * it. Over real TCP sockets: frames a server took are let go and the buffer is free; frames
 * queued for a lost server are dropped by closing its socket (and it is marked to join again);
 * frames a live server does not take keep the buffer held, and the worker gives up with an error
 * naming the server and the time waited instead of overwriting them. The modules are compiled in
 * here directly (the worker is an executable, not a library). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../worker/worker_grads.c"
#include "../../worker/worker_log.c"
#include "../../worker/worker_signal.c"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N_GRADS 4096

typedef struct fixture {
    worker w;
    worker_shard shard;
    float grads[N_GRADS];
    void *router_ctx, *router; /* the test's server, when it has one (its own context, so the
                                * worker's can end first) */
} fixture;

/* A loopback port nobody listens on. */
static int closed_port(void) {
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static fixture *make(const char *endpoint, int connect_timeout_ms) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->w.cfg.n_servers = 1;
    f->w.cfg.connect_timeout_ms = connect_timeout_ms;
    f->w.job.heartbeat_timeout_ms = 1000;
    f->w.ctx = zmq_ctx_new();
    f->w.shards = &f->shard;
    snprintf(f->shard.endpoint, sizeof f->shard.endpoint, "%s", endpoint);
    f->shard.sock = zmq_socket(f->w.ctx, ZMQ_DEALER);
    assert_int_equal(wire_socket_setup(f->shard.sock, 0, NULL), 0);
    assert_int_equal(zmq_connect(f->shard.sock, endpoint), 0);
    atomic_store(&f->shard.last_ok_ms, wire_now_ms());
    for (int i = 0; i < N_GRADS; i++) f->grads[i] = (float)i;
    return f;
}

/* A server for the fixture: a ROUTER on a kernel-chosen loopback port. */
static fixture *make_with_server(int connect_timeout_ms) {
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    assert_int_equal(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
    char ep[256];
    size_t n = sizeof ep;
    assert_int_equal(zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &n), 0);
    fixture *f = make(ep, connect_timeout_ms);
    f->router_ctx = ctx;
    f->router = router;
    return f;
}

/* A server that never takes anything: a port nobody listens on (libzmq queues our frames). */
static fixture *make_unreachable(int connect_timeout_ms) {
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", closed_port());
    return make(ep, connect_timeout_ms);
}

/* A push of the whole buffer, zero-copy, counted by the shard as worker_net.c sends it. */
static void push(fixture *f) {
    Loraps__Push p = LORAPS__PUSH__INIT;
    Loraps__Header h = LORAPS__HEADER__INIT;
    h.body_case = LORAPS__HEADER__BODY_PUSH;
    h.push = &p;
    wire_src src = {0, N_GRADS, f->grads};
    wire_owner owner = worker_grads_owner(&f->shard);
    wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .wire_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                        .owner = &owner};
    lp_err err;
    assert_int_equal(wire_send(f->shard.sock, &h, &src, 1, &o, NULL, &err), 0);
}

/* A push to nobody: libzmq holds its zero-copy frame until the socket lets it go. */
static void push_held(fixture *f) {
    push(f);
    assert_true(atomic_load(&f->shard.frames_held) > 0);
}

/* Ends the worker's context: every frame is let go by then, whatever the sockets held. */
static void destroy(fixture *f) {
    if (f->shard.sock) zmq_close(f->shard.sock);
    zmq_ctx_term(f->w.ctx);
    assert_int_equal(atomic_load(&f->shard.frames_held), 0);
    if (f->router) {
        zmq_close(f->router);
        zmq_ctx_term(f->router_ctx);
    }
    free(f);
}

static void test_nothing_held(void **state) {
    (void)state;
    fixture *f = make_unreachable(1000);
    lp_err err;
    assert_int_equal(worker_grads_release(&f->w, &err), WN_OK);
    assert_non_null(f->shard.sock);
    destroy(f);
}

static void test_taken_by_server(void **state) {
    (void)state;
    fixture *f = make_with_server(20000);
    push(f);
    /* the server reads the whole message */
    zmq_pollitem_t it = {f->router, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 10000), 1);
    int parts = 0, more = 1;
    size_t bytes = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, f->router, 0) >= 0);
        bytes += zmq_msg_size(&m);
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        parts++;
    }
    assert_int_equal(parts, 3); /* routing id, header, one tensor frame */
    assert_true(bytes > N_GRADS * sizeof(float));
    lp_err err;
    assert_int_equal(worker_grads_release(&f->w, &err), WN_OK);
    assert_int_equal(atomic_load(&f->shard.frames_held), 0);
    assert_non_null(f->shard.sock); /* a live server keeps its socket */
    assert_int_equal(atomic_load(&f->shard.rejoin), 0);
    destroy(f);
}

static void test_lost_server_frames_dropped(void **state) {
    (void)state;
    fixture *f = make_unreachable(20000);
    push_held(f);
    /* no answer, heartbeats included, for longer than the heartbeat timeout */
    atomic_store(&f->shard.last_ok_ms, wire_now_ms() - 5000);
    lp_err err;
    assert_int_equal(worker_grads_release(&f->w, &err), WN_REJOIN);
    assert_int_equal(atomic_load(&f->shard.frames_held), 0);
    assert_null(f->shard.sock);
    assert_int_equal(atomic_load(&f->shard.rejoin), WORKER_REJOIN_SOCKET_CLOSED);
    destroy(f);
}

static void test_live_server_not_taking_frames(void **state) {
    (void)state;
    fixture *f = make_unreachable(1000);
    f->w.job.heartbeat_timeout_ms = 60000; /* its heartbeat answers keep it alive */
    push_held(f);
    /* the server answers (heartbeats), but our push never leaves: the buffer stays held */
    lp_err err;
    assert_int_equal(worker_grads_release(&f->w, &err), WN_FATAL);
    assert_true(atomic_load(&f->shard.frames_held) > 0);
    assert_non_null(f->shard.sock);
    assert_non_null(strstr(err.msg, f->shard.endpoint));
    assert_non_null(strstr(err.msg, "gradient frames"));
    assert_non_null(strstr(err.msg, "--connect-timeout 1 s"));
    float v;
    assert_int_equal(sscanf(strstr(err.msg, "after ") + 6, "%f s", &v), 1);
    assert_true(v >= 1.0f);
    /* the buffer is as it was sent */
    for (int i = 0; i < N_GRADS; i++) assert_true(f->grads[i] == (float)i);
    destroy(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_held),
        cmocka_unit_test(test_taken_by_server),
        cmocka_unit_test(test_lost_server_frames_dropped),
        cmocka_unit_test(test_live_server_not_taking_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
