/* The heartbeat thread: every heartbeat_ms it tells each joined shard this worker is alive, on
 * sockets of its own (so a long compute or a long poll never delays it), and notes the time of
 * every answer in the shard's last_ok_ms. A shard is flagged for joining again when it answers
 * "unknown worker" to the id we are joined with, or when its connection drops: a restarted server
 * numbers its members afresh, so our old id may be another rank's now and its answers would
 * otherwise keep a worker waiting forever for the Ack of a push the old instance never took. */
#ifndef LORAPS_WORKER_HEARTBEAT_H
#define LORAPS_WORKER_HEARTBEAT_H

#include "error.h"

#include <zmq.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct worker worker;

typedef struct worker_heartbeat {
    pthread_t thread;
    int started;
    atomic_int stop;
    _Atomic uint64_t bytes; /* sent and received by the heartbeat sockets */
    /* the thread's own, one per shard */
    void **socks;
    void **monitors;       /* each socket's connection events (ZMQ_EVENT_DISCONNECTED) */
    uint64_t *sent_id;     /* the worker id each shard was last told about */
    zmq_pollitem_t *items; /* socks, then monitors */
} worker_heartbeat;

int worker_heartbeat_start(worker *w, lp_err *err);
void worker_heartbeat_stop(worker *w);

#endif
