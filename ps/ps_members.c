/* Membership: joins, heartbeats, expiry, and the members' waiting pulls. */
#include "ps_members.h"

#include "ps_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ps_members_init(ps_members *m, int workers, int64_t timeout_ms, int shard, lp_err *err) {
    memset(m, 0, sizeof *m);
    m->shard = shard;
    m->workers = workers;
    m->timeout_ms = timeout_ms;
    m->rank_member = malloc((size_t)workers * sizeof *m->rank_member);
    m->rank_seen = calloc((size_t)workers, 1);
    if (!m->rank_member || !m->rank_seen) return lp_fail(err, "out of memory");
    for (int r = 0; r < workers; r++) m->rank_member[r] = -1;
    m->pull_head = m->pull_tail = -1;
    return 0;
}

void ps_members_free(ps_members *m) {
    free(m->list);
    free(m->pulls);
    free(m->free_slots);
    free(m->slot_of_id);
    free(m->rank_member);
    free(m->rank_seen);
    memset(m, 0, sizeof *m);
}

ps_member *ps_member_find(ps_members *m, uint64_t id) {
    if (id == 0 || id > m->next_id) return NULL;
    ps_member *mem = &m->list[m->slot_of_id[id - 1]];
    return mem->id == id && mem->alive ? mem : NULL;
}

int ps_members_alive(const ps_members *m) {
    return m->alive;
}

int ps_members_rank_live(const ps_members *m, int rank) {
    int slot = m->rank_member[rank];
    return slot >= 0 && m->list[slot].alive;
}

/* A dead slot to reuse, else a new one: its index, or -1 (out of memory). */
static int free_slot(ps_members *m) {
    if (m->n_free) return m->free_slots[--m->n_free];
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        ps_member *grown = realloc(m->list, (size_t)cap * sizeof *grown);
        if (grown) m->list = grown;
        ps_pull *pulls = grown ? realloc(m->pulls, (size_t)cap * sizeof *pulls) : NULL;
        if (pulls) m->pulls = pulls;
        int *fs = pulls ? realloc(m->free_slots, (size_t)cap * sizeof *fs) : NULL;
        if (!fs) return -1;
        m->free_slots = fs;
        m->cap = cap;
    }
    return m->n++;
}

ps_member *ps_member_join(ps_members *m, int rank, const char *host, uint32_t pid) {
    if (ps_members_rank_live(m, rank))
        ps_member_leave(m, &m->list[m->rank_member[rank]], "replaced by a new join of its rank");
    int slot = free_slot(m);
    if (slot < 0) return NULL;
    if (m->next_id == (uint64_t)m->cap_ids) { /* ids are serial: an array finds them */
        size_t cap = m->cap_ids ? 2 * (size_t)m->cap_ids : 64;
        int *grown = realloc(m->slot_of_id, cap * sizeof *grown);
        if (!grown) {
            m->free_slots[m->n_free++] = slot;
            return NULL;
        }
        m->slot_of_id = grown;
        m->cap_ids = cap;
    }
    ps_member *mem = &m->list[slot];
    memset(mem, 0, sizeof *mem);
    mem->alive = 1;
    mem->id = ++m->next_id;
    m->slot_of_id[mem->id - 1] = slot;
    mem->rank = rank;
    mem->pid = pid;
    snprintf(mem->host, sizeof mem->host, "%s", host ? host : "");
    mem->last_seen_ms = wire_now_ms();
    m->rank_member[rank] = slot;
    m->alive++;
    if (!m->rank_seen[rank]) {
        m->rank_seen[rank] = 1;
        m->ranks_joined++;
    }
    m->joins++;
    return mem;
}

/* The member's waiting Pull leaves the list. */
static void unlink_pull(ps_members *m, int slot) {
    ps_member *mem = &m->list[slot];
    if (!mem->has_pull) return;
    if (mem->pull_prev >= 0)
        m->list[mem->pull_prev].pull_next = mem->pull_next;
    else
        m->pull_head = mem->pull_next;
    if (mem->pull_next >= 0)
        m->list[mem->pull_next].pull_prev = mem->pull_prev;
    else
        m->pull_tail = mem->pull_prev;
    mem->has_pull = 0;
    m->n_pulls--;
}

void ps_member_leave(ps_members *m, ps_member *mem, const char *why) {
    if (!mem->alive) return;
    if (m->on_leave) m->on_leave(m->on_leave_ctx, mem);
    mem->alive = 0;
    m->alive--;
    int slot = (int)(mem - m->list);
    if (m->rank_member[mem->rank] == slot) m->rank_member[mem->rank] = -1;
    /* Pending pulls of a member that left are never answered. */
    unlink_pull(m, slot);
    m->free_slots[m->n_free++] = slot;
    ps_log(m->shard, "worker %llu (rank %d, %s pid %u) left: %s; %d alive",
           (unsigned long long)mem->id, mem->rank, mem->host, mem->pid, why, m->alive);
}

void ps_member_bye(ps_members *m, ps_member *mem) {
    m->byes++;
    ps_member_leave(m, mem, "said Bye");
}

int ps_members_expire(ps_members *m, int64_t now_ms) {
    /* a look at every member a few times per timeout, not on every message */
    int64_t every = m->timeout_ms / 8 < 100 ? m->timeout_ms / 8 : 100;
    if (now_ms < m->expire_check_ms) return 0;
    m->expire_check_ms = now_ms + every;
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        ps_member *mem = &m->list[i];
        if (mem->alive && now_ms - mem->last_seen_ms > m->timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "silent for %lld ms",
                     (long long)(now_ms - mem->last_seen_ms));
            ps_member_leave(m, mem, why);
            m->drops++;
            n++;
        }
    }
    return n;
}

void ps_members_log_missing(ps_members *m, int64_t now_ms, const char *bind) {
    if (!m->waiting_logged_ms) m->waiting_logged_ms = now_ms;
    if (now_ms - m->waiting_logged_ms < 10000) return;
    m->waiting_logged_ms = now_ms;
    char missing[512] = "";
    size_t n = 0;
    int count = 0;
    for (int r = 0; r < m->workers; r++) {
        if (m->rank_seen[r]) continue;
        if (count++ < 32 && n < sizeof missing - 16)
            n += (size_t)snprintf(missing + n, sizeof missing - n, "%s%d", n ? "," : "", r);
    }
    ps_log(m->shard, "still waiting for %d of %d workers (ranks %s%s) on %s", count, m->workers,
           missing, count > 32 ? ",..." : "", bind);
}

int ps_members_hold_pull(ps_members *m, const ps_pull *p) {
    ps_member *mem = ps_member_find(m, p->worker_id);
    if (!mem) return -1;
    int slot = (int)(mem - m->list);
    m->pulls[slot] = *p;
    if (mem->has_pull) return 0; /* replaced in place: it keeps its turn */
    mem->has_pull = 1;
    mem->pull_next = -1;
    mem->pull_prev = m->pull_tail;
    if (m->pull_tail >= 0)
        m->list[m->pull_tail].pull_next = slot;
    else
        m->pull_head = slot;
    m->pull_tail = slot;
    m->n_pulls++;
    return 0;
}

const ps_pull *ps_members_first_pull(const ps_members *m) {
    return m->pull_head >= 0 ? &m->pulls[m->pull_head] : NULL;
}

void ps_members_answer_pulls(ps_members *m, int (*ready)(void *ctx, const ps_pull *p),
                             void (*answer)(void *ctx, const ps_pull *p), void *ctx) {
    for (int slot = m->pull_head; slot >= 0;) {
        int next = m->list[slot].pull_next;
        if (ready(ctx, &m->pulls[slot])) {
            ps_pull p = m->pulls[slot];
            unlink_pull(m, slot);
            answer(ctx, &p);
        }
        slot = next;
    }
}
