#include "worker_heartbeat.h"
#include "worker.h"

#include "curve_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The thread's sockets: created and closed by the thread itself (ZeroMQ sockets are not shared
 * between threads). */
static void open_beat_sockets(worker *w) {
    worker_heartbeat *hb = &w->hb;
    int n = w->cfg.n_servers;
    for (int k = 0; k < n; k++) {
        char monitor_ep[64];
        snprintf(monitor_ep, sizeof monitor_ep, "inproc://loraps-heartbeat-monitor-%d", k);
        hb->socks[k] = zmq_socket(w->ctx, ZMQ_DEALER);
        wire_socket_setup(hb->socks[k], 0, NULL);
        curve_client_setup(hb->socks[k], NULL);
        zmq_socket_monitor(hb->socks[k], monitor_ep, ZMQ_EVENT_DISCONNECTED);
        hb->monitors[k] = zmq_socket(w->ctx, ZMQ_PAIR);
        zmq_connect(hb->monitors[k], monitor_ep);
        zmq_connect(hb->socks[k], w->shards[k].endpoint);
        hb->sent_id[k] = 0;
        hb->items[k] = (zmq_pollitem_t){hb->socks[k], 0, ZMQ_POLLIN, 0};
        hb->items[n + k] = (zmq_pollitem_t){hb->monitors[k], 0, ZMQ_POLLIN, 0};
    }
}

static void close_beat_sockets(worker *w) {
    for (int k = 0; k < w->cfg.n_servers; k++) {
        if (w->hb.socks[k]) zmq_socket_monitor(w->hb.socks[k], NULL, 0);
        if (w->hb.monitors[k]) zmq_close(w->hb.monitors[k]);
        if (w->hb.socks[k]) zmq_close(w->hb.socks[k]);
    }
}

/* Shard k's connection events: one that dropped while we are joined means joining again. */
static void take_events(worker *w, int k) {
    worker_shard *s = &w->shards[k];
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    while (zmq_msg_recv(&frame, w->hb.monitors[k], ZMQ_DONTWAIT) >= 0) {
        /* an event is two frames: its id (16 bits) and value (32 bits), then the endpoint */
        if (!zmq_msg_more(&frame) || zmq_msg_size(&frame) < 6) continue;
        uint16_t event;
        memcpy(&event, zmq_msg_data(&frame), sizeof event);
        if (event == ZMQ_EVENT_DISCONNECTED && atomic_load(&s->worker_id))
            atomic_store(&s->rejoin, WORKER_REJOIN_DISCONNECTED);
    }
    zmq_msg_close(&frame);
}

static void send_beats(worker *w, wire_counters *c) {
    for (int k = 0; k < w->cfg.n_servers; k++) {
        uint64_t id = atomic_load(&w->shards[k].worker_id);
        if (!id) continue;
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
        hdr.job_id = atomic_load(&w->job_id);
        hdr.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
        hdr.heartbeat = &hb;
        hb.worker_id = id;
        hb.step = 0;
        wire_send_header(w->hb.socks[k], NULL, 0, &hdr, c, NULL);
        w->hb.sent_id[k] = id;
    }
}

static void take_answers(worker *w, int k, wire_counters *c) {
    worker_shard *s = &w->shards[k];
    wire_msg m;
    Loraps__ErrorCode code;
    int r;
    /* every waiting answer; WIRE_FATAL (an unusable socket) ends the round too */
    while ((r = wire_recv(w->hb.socks[k], 0, &m, c, &code, NULL)) == WIRE_OK || r == WIRE_BAD) {
        if (m.hdr && m.hdr->body_case == LORAPS__HEADER__BODY_HEARTBEAT)
            atomic_store(&s->last_ok_ms, wire_now_ms());
        else if (m.hdr && m.hdr->body_case == LORAPS__HEADER__BODY_ERROR &&
                 m.hdr->error->code == LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER &&
                 atomic_load(&s->worker_id) == w->hb.sent_id[k])
            atomic_store(&s->rejoin, WORKER_REJOIN_NOT_MEMBER);
        wire_msg_close(&m);
    }
    wire_msg_close(&m);
}

static void *heartbeat_main(void *arg) {
    worker *w = arg;
    wire_counters c = {0};
    int64_t next = 0;
    open_beat_sockets(w);
    while (!atomic_load(&w->hb.stop)) {
        int64_t now = wire_now_ms();
        if (now >= next) {
            send_beats(w, &c);
            next = now + w->job.heartbeat_ms;
        }
        int n = w->cfg.n_servers;
        if (zmq_poll(w->hb.items, 2 * n, 50) <= 0) continue;
        for (int k = 0; k < n; k++) {
            if (w->hb.items[k].revents & ZMQ_POLLIN) take_answers(w, k, &c);
            if (w->hb.items[n + k].revents & ZMQ_POLLIN) take_events(w, k);
        }
        atomic_store(&w->hb.bytes, c.bytes_sent + c.bytes_received);
    }
    close_beat_sockets(w);
    return NULL;
}

static void free_arrays(worker_heartbeat *hb) {
    free(hb->socks);
    free(hb->monitors);
    free(hb->sent_id);
    free(hb->items);
    hb->socks = hb->monitors = NULL;
    hb->sent_id = NULL;
    hb->items = NULL;
}

int worker_heartbeat_start(worker *w, lp_err *err) {
    worker_heartbeat *hb = &w->hb;
    size_t n = (size_t)w->cfg.n_servers;
    hb->socks = calloc(n, sizeof *hb->socks);
    hb->monitors = calloc(n, sizeof *hb->monitors);
    hb->sent_id = calloc(n, sizeof *hb->sent_id);
    hb->items = calloc(2 * n, sizeof *hb->items);
    atomic_store(&hb->stop, 0);
    if (!hb->socks || !hb->monitors || !hb->sent_id || !hb->items) {
        free_arrays(hb);
        return lp_fail(err, "out of memory");
    }
    if (pthread_create(&hb->thread, NULL, heartbeat_main, w) != 0) {
        free_arrays(hb);
        return lp_fail(err, "cannot start the heartbeat thread");
    }
    hb->started = 1;
    return 0;
}

void worker_heartbeat_stop(worker *w) {
    if (!w->hb.started) return;
    atomic_store(&w->hb.stop, 1);
    pthread_join(w->hb.thread, NULL);
    free_arrays(&w->hb);
    w->hb.started = 0;
}
