/* This shard on the wire: the ROUTER the workers (and the other shards) talk to, a DEALER to
 * each other shard, the server's identity in every header, and the bytes it moved. */
#ifndef LORAPS_PS_NET_H
#define LORAPS_PS_NET_H

#include "ps_config.h"
#include "ps_security.h"
#include "wire.h"

typedef struct ps_net {
    void *ctx, *router;
    void **peer; /* [n_shards]: DEALER to each other shard (NULL for self) */
    int shard, n_shards;
    uint64_t job_id;   /* in every header */
    uint64_t instance; /* this process (a restarted shard has another) */
    wire_counters bytes;
} ps_net;

/* Binds the ROUTER and connects to the other shards, with the security module's options. */
int ps_net_open(ps_net *n, const ps_config *c, ps_security *sec, lp_err *err);
void ps_net_close(ps_net *n);
/* Waits up to timeout_ms for a message on any socket (zmq_poll's result). */
int ps_net_wait(ps_net *n, int timeout_ms);
/* A header-only reply to the sender of `to` (the header's job id is set here). */
void ps_net_reply(ps_net *n, const wire_msg *to, Loraps__Header *hdr);
/* A header-only message to every other shard. */
void ps_net_to_peers(ps_net *n, Loraps__Header *hdr);
/* Reads what the other shards sent on the DEALERs: only Errors, logged. */
void ps_net_drain_peers(ps_net *n);

#endif
