/* shard_state_spoof ENDPOINT: a client that is not a server shard sends shard 0 a ShardState
 * claiming to be shard 1 (a final state that would end up in the checkpoint). It learns the job
 * id from the Error its first (bad) message gets. Prints the server's answer; exits 0 if the
 * state was refused as coming from a connection that is not that shard. */
#include "wire.h"

#include <stdio.h>
#include <string.h>

static int recv_error(void *sock, Loraps__Header **out, wire_msg *m) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 5000) <= 0) return -1;
    Loraps__ErrorCode code;
    lp_err err;
    if (wire_recv(sock, 0, m, NULL, &code, &err) != WIRE_OK) return -1;
    if (m->hdr->body_case != LORAPS__HEADER__BODY_ERROR) return -1;
    *out = m->hdr;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: shard_state_spoof ENDPOINT\n");
        return 2;
    }
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, argv[1]) < 0) return 2;
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
    hdr.protocol = WIRE_PROTOCOL;
    hdr.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
    hdr.heartbeat = &hb;
    lp_err err;
    wire_msg m;
    Loraps__Header *e;
    int rc = 1;
    if (wire_send_header(sock, NULL, 0, &hdr, NULL, &err) < 0 || recv_error(sock, &e, &m) < 0) {
        fprintf(stderr, "shard_state_spoof: no answer to the probe\n");
        goto out;
    }
    uint64_t job_id = e->job_id;
    wire_msg_close(&m);
    Loraps__Header h2 = LORAPS__HEADER__INIT;
    Loraps__ShardState st = LORAPS__SHARD_STATE__INIT;
    h2.protocol = WIRE_PROTOCOL;
    h2.job_id = job_id;
    h2.body_case = LORAPS__HEADER__BODY_SHARD_STATE;
    h2.shard_state = &st;
    st.shard = 1;
    st.version = 1;
    st.final = 1;
    if (wire_send_header(sock, NULL, 0, &h2, NULL, &err) < 0 || recv_error(sock, &e, &m) < 0) {
        fprintf(stderr, "shard_state_spoof: the ShardState got no Error\n");
        goto out;
    }
    printf("%s: %s\n", wire_error_name(e->error->code), e->error->message);
    rc = strstr(e->error->message, "not that shard") ? 0 : 1;
    wire_msg_close(&m);
out:
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}
