/* flood_client --server EP --count N [--big BYTES] [--curve-dir DIR]: one connection that sends N
 * garbage messages as fast as it can, then waits 2 s, and prints how many Error replies came
 * back ("errors K"); --again-after MS then sends one more on the same connection after MS ms
 * and prints whether it was answered ("again answered"). With --big, it first sends one frame of
 * BYTES bytes (over the server's
 * --max-msg-bytes the server closes the connection) and reports whether anything came back. */
#include "curve_auth.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *ep = NULL, *curve = NULL;
    long count = 0, big = 0, again_ms = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--server")) ep = argv[i + 1];
        if (!strcmp(argv[i], "--count")) count = atol(argv[i + 1]);
        if (!strcmp(argv[i], "--big")) big = atol(argv[i + 1]);
        if (!strcmp(argv[i], "--curve-dir")) curve = argv[i + 1];
        if (!strcmp(argv[i], "--again-after")) again_ms = atol(argv[i + 1]);
    }
    if (!ep) {
        fprintf(stderr, "usage: flood_client --server EP --count N [--big BYTES]\n");
        return 2;
    }
    lp_err err;
    if (curve && curve_load_client(curve, NULL, 0, NULL, 0, &err) < 0) {
        fprintf(stderr, "flood_client: %s\n", err.msg);
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, hwm = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    curve_client_setup(s, NULL);
    zmq_connect(s, ep);
    if (big > 0) {
        char *buf = calloc(1, (size_t)big);
        zmq_send(s, buf, (size_t)big, 0);
        free(buf);
    }
    for (long i = 0; i < count; i++) {
        char junk[32];
        snprintf(junk, sizeof junk, "junk%ld", i);
        zmq_send(s, junk, strlen(junk), 0);
    }
    long errors = 0;
    int64_t end = wire_now_ms() + 2000;
    while (wire_now_ms() < end) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0)
            if (!zmq_msg_more(&m)) errors++;
        zmq_msg_close(&m);
    }
    printf("errors %ld\n", errors);
    if (again_ms >= 0) { /* the same connection, once more after a pause: answered again? */
        int64_t at = wire_now_ms() + again_ms;
        while (wire_now_ms() < at) {
            zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
            zmq_poll(&it, 1, 100);
        }
        zmq_send(s, "junk-again", 10, 0);
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        printf("again %s\n", zmq_poll(&it, 1, 2000) > 0 ? "answered" : "unanswered");
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}
