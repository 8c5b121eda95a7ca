#include "worker_grads.h"
#include "worker.h"
#include "worker_log.h"
#include "worker_signal.h"

#include <time.h>

static void frame_taken(void *hint) {
    atomic_fetch_add((atomic_int *)hint, 1);
}

/* Called from libzmq's I/O thread once it is done with a frame. */
static void frame_let_go(void *data, void *hint) {
    (void)data;
    atomic_fetch_sub((atomic_int *)hint, 1);
}

wire_owner worker_grads_owner(worker_shard *s) {
    return (wire_owner){frame_taken, frame_let_go, &s->frames_held};
}

static void sleep_1ms(void) {
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
}

/* A lost server's frames: closing the socket with no linger drops what libzmq had not sent (the
 * push never arrived whole, so nothing is lost that the server counted). */
static void drop_unsent(worker *w, worker_shard *s) {
    int linger = 0;
    worker_log(w,
               "%s: no answer within the heartbeat timeout while libzmq still holds %d of our "
               "gradient frames for it; dropping them and joining again",
               s->endpoint, atomic_load(&s->frames_held));
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s->sock);
    s->sock = NULL;
    atomic_store(&s->rejoin, WORKER_REJOIN_SOCKET_CLOSED);
}

/* The first shard that still holds frames (closing the sockets of lost servers), or NULL. */
static worker_shard *holder(worker *w, int64_t now, int *closed) {
    worker_shard *first = NULL;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        if (atomic_load(&s->frames_held) <= 0) continue;
        if (s->sock && now - atomic_load(&s->last_ok_ms) > w->job.heartbeat_timeout_ms) {
            drop_unsent(w, s);
            *closed = 1;
        }
        if (!first) first = s;
    }
    return first;
}

int worker_grads_release(worker *w, lp_err *err) {
    int64_t begin = wire_now_ms();
    int closed = 0;
    for (;;) {
        int64_t now = wire_now_ms();
        worker_shard *s = holder(w, now, &closed);
        if (!s) return closed ? WN_REJOIN : WN_OK;
        if (worker_stop_signal()) return WN_STOP;
        if (now - begin > w->cfg.connect_timeout_ms) {
            lp_fail(err,
                    "%s: libzmq still holds %d of this worker's gradient frames for it after "
                    "%.1f s (--connect-timeout %d s): the server does not take our push, and the "
                    "gradient buffer cannot be reused while they are held",
                    s->endpoint, atomic_load(&s->frames_held), (double)(now - begin) / 1000.0,
                    w->cfg.connect_timeout_ms / 1000);
            return WN_FATAL;
        }
        sleep_1ms();
    }
}
