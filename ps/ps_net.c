/* This shard's sockets. */
#include "ps_net.h"

#include "ps_log.h"

#include <stdlib.h>
#include <string.h>

static int open_router(ps_net *n, const ps_config *c, ps_security *sec, lp_err *err) {
    n->router = zmq_socket(n->ctx, ZMQ_ROUTER);
    if (!n->router || wire_socket_setup(n->router, 0, err) < 0) return -1;
    if (ps_security_router(sec, n->ctx, n->router, err) < 0) return -1;
    /* No ROUTER_MANDATORY: a reply to a peer that went away, or that stopped reading (its
     * queue at the high-water mark), is dropped instead of blocking the server. */
    if (strchr(c->bind, '[')) { /* tcp://[::]:P: IPv6 (and IPv4 too, for [::]) */
        int on = 1;
        zmq_setsockopt(n->router, ZMQ_IPV6, &on, sizeof on);
    }
    if (zmq_bind(n->router, c->bind) < 0)
        return lp_fail(err, "bind %s: %s", c->bind, zmq_strerror(zmq_errno()));
    return 0;
}

static int connect_peer(ps_net *n, const ps_config *c, int k, lp_err *err) {
    n->peer[k] = zmq_socket(n->ctx, ZMQ_DEALER);
    char id[32];
    snprintf(id, sizeof id, "shard-%d", c->shard);
    zmq_setsockopt(n->peer[k], ZMQ_ROUTING_ID, id, strlen(id));
    /* The final tensors must reach shard 0 even as this shard exits. */
    if (wire_socket_setup(n->peer[k], 30000, err) < 0) return -1;
    if (ps_security_peer(n->peer[k], err) < 0) return -1;
    if (zmq_connect(n->peer[k], c->peers[k]) < 0)
        return lp_fail(err, "connect %s: %s", c->peers[k], zmq_strerror(zmq_errno()));
    return 0;
}

int ps_net_open(ps_net *n, const ps_config *c, ps_security *sec, lp_err *err) {
    n->shard = c->shard;
    n->n_shards = c->n_shards;
    n->peer = calloc((size_t)c->n_shards, sizeof *n->peer);
    if (!n->peer) return lp_fail(err, "out of memory");
    n->ctx = zmq_ctx_new();
    if (open_router(n, c, sec, err) < 0) return -1;
    for (int k = 0; k < c->n_shards && c->n_shards > 1; k++)
        if (k != c->shard && connect_peer(n, c, k, err) < 0) return -1;
    return 0;
}

void ps_net_close(ps_net *n) {
    for (int k = 0; n->peer && k < n->n_shards; k++)
        if (n->peer[k]) zmq_close(n->peer[k]);
    if (n->router) zmq_close(n->router);
    if (n->ctx) zmq_ctx_term(n->ctx);
    free(n->peer);
    n->peer = NULL;
    n->router = n->ctx = NULL;
}

int ps_net_wait(ps_net *n, int timeout_ms) {
    zmq_pollitem_t items[1 + n->n_shards];
    int n_items = 0;
    items[n_items++] = (zmq_pollitem_t){n->router, 0, ZMQ_POLLIN, 0};
    for (int k = 0; k < n->n_shards; k++)
        if (n->peer[k]) items[n_items++] = (zmq_pollitem_t){n->peer[k], 0, ZMQ_POLLIN, 0};
    return zmq_poll(items, n_items, timeout_ms);
}

void ps_net_reply(ps_net *n, const wire_msg *to, Loraps__Header *hdr) {
    hdr->job_id = n->job_id;
    wire_send_header(n->router, to->routing, to->routing_len, hdr, &n->bytes, NULL);
}

void ps_net_to_peers(ps_net *n, Loraps__Header *hdr) {
    hdr->job_id = n->job_id;
    for (int k = 0; k < n->n_shards; k++)
        if (n->peer[k]) wire_send_header(n->peer[k], NULL, 0, hdr, &n->bytes, NULL);
}

void ps_net_drain_peers(ps_net *n) {
    for (int k = 0; k < n->n_shards; k++) {
        if (!n->peer[k]) continue;
        wire_msg m;
        Loraps__ErrorCode code;
        lp_err err;
        while (wire_recv(n->peer[k], 0, &m, &n->bytes, &code, &err) != WIRE_NONE) {
            if (m.hdr && m.hdr->body_case == LORAPS__HEADER__BODY_ERROR)
                ps_log(n->shard, "another shard refused our message: %s: %s",
                       wire_error_name(m.hdr->error->code), m.hdr->error->message);
            wire_msg_close(&m);
        }
        wire_msg_close(&m);
    }
}
