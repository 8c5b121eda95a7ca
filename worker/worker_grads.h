/* The gradient buffer (adapter.grads) goes out zero-copy: libzmq reads a push's tensor frames
 * straight from it until its I/O thread is done with them, which may be a little after the Ack
 * (libzmq lets go of a frame lazily) or much later when a server stops reading. Each shard counts
 * the frames libzmq still holds for it, and the next step rewrites the buffer only once no shard
 * holds any: a buffer libzmq may still be sending is never zeroed, rewritten or freed. */
#ifndef LORAPS_WORKER_GRADS_H
#define LORAPS_WORKER_GRADS_H

#include "error.h"
#include "wire.h"

typedef struct worker worker;
typedef struct worker_shard worker_shard;

/* What wire_send needs to count shard s's frames while libzmq holds them. */
wire_owner worker_grads_owner(worker_shard *s);

/* Waits until libzmq holds no gradient frame, so the buffer may be rewritten. A shard whose
 * server has not answered (heartbeats included) within the job's heartbeat timeout gets its
 * socket closed: libzmq then drops the frames it had not sent, and the shard is marked to join
 * again. Returns WN_OK (the buffer is free), WN_REJOIN (free, and a socket was closed: join
 * again first), WN_STOP (a signal came), or WN_FATAL when a server still holds frames after
 * --connect-timeout; err then names it and how long we waited, and the buffer must not be
 * touched (closing the sockets and terminating the context releases it). */
int worker_grads_release(worker *w, lp_err *err);

#endif
