/* loraps-ps: one shard of the parameter server. One thread, one ROUTER socket, one event loop.
 * The server is made of modules that own their state, composed here:
 *
 *   ps_config      flags, variables and the job file (read-only once started)
 *   ps_net         the sockets, the server's identity on the wire, bytes moved
 *   ps_security    CURVE, the limits, cut-off peers
 *   ps_validate    message checks and rejections
 *   ps_members     members by heartbeat, ranks, their waiting pulls
 *   ps_adapters    the adapter table: params, AdamW moments, versions, snapshots
 *   ps_step        sync / async / bounded staleness: the open step, each rank's place
 *   ps_checkpoint  checkpoints, durability, resume
 *   ps_progress    progress lines, the metrics file, validation passes, /metrics
 *   ps_events      shard 0's TensorBoard event file (part of progress)
 *
 * ps_handle.c answers each message, ps_server.c drives the step's life across the modules
 * (tick, updates, the end), and ps_main.c starts it all and runs the loop. */
#ifndef LORAPS_PS_H
#define LORAPS_PS_H

#include "ps_adapters.h"
#include "ps_checkpoint.h"
#include "ps_config.h"
#include "ps_members.h"
#include "ps_net.h"
#include "ps_progress.h"
#include "ps_security.h"
#include "ps_step.h"
#include "ps_validate.h"

typedef enum ps_phase { PS_WAITING, PS_RUNNING, PS_FINISHING, PS_DONE } ps_phase;

/* What makes a waiting Pull ready: waiting pulls are looked at again only when it changed. */
typedef struct ps_pulls_key {
    uint64_t phase, durable_hold, min_clock, versions;
} ps_pulls_key;

/* Where the server's own time goes: CPU seconds of its thread, for the cost model of bench_ps. */
typedef struct ps_costs {
    double recv_s; /* taking messages off the socket */
    uint64_t recv_msgs;
    double push_s; /* handling pushes: checks, sums, bookkeeping */
    uint64_t pushes, push_bytes;
    double check_s; /* of push_s: the tensors' checks (shapes, finite) */
    double pull_s;  /* answering pulls: Params handed to libzmq */
    uint64_t pulls, pull_bytes;
    double other_s; /* every other message */
    uint64_t others;
} ps_costs;

typedef struct ps {
    ps_config cfg;
    ps_costs costs;
    ps_phase phase;
    ps_pulls_key pulls_key; /* as the waiting pulls were last looked at */
    ps_net net;
    ps_security security;
    ps_validate checks;
    ps_members members;
    ps_adapters adapters;
    ps_step step;
    ps_checkpoints ckpt;
    ps_progress progress;
} ps;

/* ps_handle.c: one message from the ROUTER. */
void ps_handle(ps *s, wire_msg *m);

/* ps_server.c */
/* ps_members' leave listener: the step stops waiting for the member. */
void ps_on_member_left(void *ctx, const ps_member *mem);
/* 1 if a Pull can be answered now. */
int ps_pull_ready(ps *s, const ps_pull *p);
void ps_answer_pull(ps *s, const ps_pull *p);
/* One update of adapter a from its gradient (clipped by the global sum of squares), published
 * as the next version. */
void ps_publish_update(ps *s, ps_adapter *a, double global_ss);
/* Progress the state machine: start, complete steps, answer pulls, finish. */
void ps_tick(ps *s);
/* The gauges of /metrics from every module. */
void ps_update_gauges(ps *s, int64_t now_ms);
/* <out>/ps_stats_<shard>.json: what the server did. */
int ps_write_stats(ps *s, lp_err *err);
void ps_exit_log(ps *s);

#endif
