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
    return 0;
}

void ps_members_free(ps_members *m) {
    free(m->list);
    free(m->pulls);
    free(m->rank_member);
    free(m->rank_seen);
    memset(m, 0, sizeof *m);
}

ps_member *ps_member_find(ps_members *m, uint64_t id) {
    for (int i = 0; i < m->n; i++)
        if (m->list[i].id == id) return m->list[i].alive ? &m->list[i] : NULL;
    return NULL;
}

int ps_members_alive(const ps_members *m) {
    int n = 0;
    for (int i = 0; i < m->n; i++) n += m->list[i].alive;
    return n;
}

int ps_members_rank_live(const ps_members *m, int rank) {
    int slot = m->rank_member[rank];
    return slot >= 0 && m->list[slot].alive;
}

/* A dead slot to reuse, else a new one: its index, or -1 (out of memory). */
static int free_slot(ps_members *m) {
    for (int i = 0; i < m->n; i++)
        if (!m->list[i].alive) return i;
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        ps_member *grown = realloc(m->list, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        m->list = grown;
        m->cap = cap;
    }
    return m->n++;
}

ps_member *ps_member_join(ps_members *m, int rank, const char *host, uint32_t pid) {
    if (ps_members_rank_live(m, rank))
        ps_member_leave(m, &m->list[m->rank_member[rank]], "replaced by a new join of its rank");
    int slot = free_slot(m);
    if (slot < 0) return NULL;
    ps_member *mem = &m->list[slot];
    memset(mem, 0, sizeof *mem);
    mem->alive = 1;
    mem->id = ++m->next_id;
    mem->rank = rank;
    mem->pid = pid;
    snprintf(mem->host, sizeof mem->host, "%s", host ? host : "");
    mem->last_seen_ms = wire_now_ms();
    m->rank_member[rank] = slot;
    if (!m->rank_seen[rank]) {
        m->rank_seen[rank] = 1;
        m->ranks_joined++;
    }
    m->joins++;
    return mem;
}

static void drop_pulls_of(ps_members *m, uint64_t worker_id) {
    int k = 0;
    for (int i = 0; i < m->n_pulls; i++)
        if (m->pulls[i].worker_id != worker_id) m->pulls[k++] = m->pulls[i];
    m->n_pulls = k;
}

void ps_member_leave(ps_members *m, ps_member *mem, const char *why) {
    if (!mem->alive) return;
    mem->alive = 0;
    int slot = (int)(mem - m->list);
    if (m->rank_member[mem->rank] == slot) m->rank_member[mem->rank] = -1;
    /* Pending pulls of a member that left are never answered. */
    drop_pulls_of(m, mem->id);
    ps_log(m->shard, "worker %llu (rank %d, %s pid %u) left: %s; %d alive",
           (unsigned long long)mem->id, mem->rank, mem->host, mem->pid, why, ps_members_alive(m));
}

void ps_member_bye(ps_members *m, ps_member *mem) {
    m->byes++;
    ps_member_leave(m, mem, "said Bye");
}

int ps_members_expire(ps_members *m, int64_t now_ms) {
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
    for (int i = 0; i < m->n_pulls; i++)
        if (m->pulls[i].worker_id == p->worker_id) {
            m->pulls[i] = *p;
            return 0;
        }
    if (m->n_pulls == m->cap_pulls) {
        int cap = m->cap_pulls ? 2 * m->cap_pulls : 16;
        ps_pull *grown = realloc(m->pulls, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        m->pulls = grown;
        m->cap_pulls = cap;
    }
    m->pulls[m->n_pulls++] = *p;
    return 0;
}

void ps_members_answer_pulls(ps_members *m, int (*ready)(void *ctx, const ps_pull *p),
                             void (*answer)(void *ctx, const ps_pull *p), void *ctx) {
    int k = 0;
    for (int i = 0; i < m->n_pulls; i++) {
        if (ready(ctx, &m->pulls[i]))
            answer(ctx, &m->pulls[i]);
        else
            m->pulls[k++] = m->pulls[i];
    }
    m->n_pulls = k;
}
