/* Membership: who is training, by heartbeat, and what each member waits for. A worker joins
 * with Hello (a restarted worker with the same rank replaces its old membership), stays alive by
 * any message, and is dropped when silent past the timeout, so no sync barrier waits on it. A
 * member's Pull that cannot be answered yet waits here, and goes with the member. */
#ifndef LORAPS_PS_MEMBERS_H
#define LORAPS_PS_MEMBERS_H

#include "error.h"
#include "wire.h"

#include <stdint.h>

typedef struct ps_member {
    int alive;
    uint64_t id; /* serial: slot_of_id finds it in O(1) */
    int rank;
    int64_t last_seen_ms;
    char host[64];
    uint32_t pid;
    /* reported by the worker in its pushes */
    uint64_t bytes_sent, bytes_received;
    double compute_seconds;
    /* the version its latest Pull asked for: a member waiting for a later version than the
     * open step will not push for it, and the step does not wait for it */
    uint64_t pull_version;
    /* its waiting Pull, in the list of waiting pulls (slots, in arrival order) */
    int has_pull, pull_prev, pull_next;
} ps_member;

/* A Pull waiting for its version (or, with bounded staleness, for the slowest worker). */
typedef struct ps_pull {
    unsigned char routing[WIRE_MAX_ROUTING_BYTES];
    size_t routing_len;
    uint64_t worker_id;
    uint32_t adapter_id;
    uint64_t version, step;
} ps_pull;

/* Told as a member leaves (expired, replaced, said Bye), before it is gone. */
typedef void (*ps_member_left_fn)(void *ctx, const ps_member *mem);

typedef struct ps_members {
    int shard, workers;
    int64_t timeout_ms;
    ps_member *list;
    ps_pull *pulls; /* [cap]: the waiting Pull of the member in each slot */
    int n, cap;
    int *free_slots; /* dead slots, reused by joins */
    int n_free;
    int alive;
    uint64_t next_id;
    int *slot_of_id; /* [next_id]: the slot of member id i + 1 */
    size_t cap_ids;
    int *rank_member; /* [workers]: index into list of the rank's live member, or -1 */
    unsigned char *rank_seen;
    int ranks_joined;                  /* distinct ranks ever joined (the start barrier) */
    int pull_head, pull_tail, n_pulls; /* waiting pulls, by slot, oldest first */
    uint64_t joins, drops, byes;
    int64_t waiting_logged_ms, expire_check_ms;
    ps_member_left_fn on_leave;
    void *on_leave_ctx;
} ps_members;

int ps_members_init(ps_members *m, int workers, int64_t timeout_ms, int shard, lp_err *err);
void ps_members_free(ps_members *m);

/* The live member with this id, or NULL. */
ps_member *ps_member_find(ps_members *m, uint64_t id);
ps_member *ps_member_join(ps_members *m, int rank, const char *host, uint32_t pid);
void ps_member_leave(ps_members *m, ps_member *mem, const char *why);
/* The member said Bye. */
void ps_member_bye(ps_members *m, ps_member *mem);
int ps_members_alive(const ps_members *m);
/* 1 if the rank has a live member now. */
int ps_members_rank_live(const ps_members *m, int rank);
/* Drops members silent past the timeout; returns how many. */
int ps_members_expire(ps_members *m, int64_t now_ms);
/* Every 10 s before the job starts: names the ranks that have not joined. */
void ps_members_log_missing(ps_members *m, int64_t now_ms, const char *bind);

/* Keeps a Pull until it can be answered; a resent Pull replaces the member's waiting one (one
 * answer per worker). -1: the Pull's worker is not a member. */
int ps_members_hold_pull(ps_members *m, const ps_pull *p);
/* The oldest waiting Pull (NULL: none). */
const ps_pull *ps_members_first_pull(const ps_members *m);
/* Answers (and forgets) every waiting Pull that is ready, in arrival order. */
void ps_members_answer_pulls(ps_members *m, int (*ready)(void *ctx, const ps_pull *p),
                             void (*answer)(void *ctx, const ps_pull *p), void *ctx);

#endif
