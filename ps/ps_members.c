/* Membership: who is training, by heartbeat. A worker joins with Hello (a restarted worker with
 * the same rank replaces its old membership), stays alive by any message, and is dropped when
 * silent past the timeout, so no sync barrier waits on it. */
#include "ps.h"

#include <stdlib.h>
#include <string.h>

ps_member *ps_member_find(ps *s, uint64_t id) {
    for (int i = 0; i < s->n_members; i++)
        if (s->members[i].id == id) return s->members[i].alive ? &s->members[i] : NULL;
    return NULL;
}

int ps_members_alive(const ps *s) {
    int n = 0;
    for (int i = 0; i < s->n_members; i++) n += s->members[i].alive;
    return n;
}

ps_member *ps_member_join(ps *s, int rank, const char *host, uint32_t pid) {
    int old = s->rank_member[rank];
    if (old >= 0 && s->members[old].alive)
        ps_member_leave(s, &s->members[old], "replaced by a new join of its rank");
    /* Reuse a dead slot, else grow. */
    int slot = -1;
    for (int i = 0; i < s->n_members; i++)
        if (!s->members[i].alive) {
            slot = i;
            break;
        }
    if (slot < 0) {
        if (s->n_members == s->cap_members) {
            int cap = s->cap_members ? 2 * s->cap_members : 16;
            ps_member *m = realloc(s->members, (size_t)cap * sizeof *m);
            if (!m) return NULL;
            s->members = m;
            s->cap_members = cap;
        }
        slot = s->n_members++;
    }
    ps_member *m = &s->members[slot];
    memset(m, 0, sizeof *m);
    m->alive = 1;
    m->id = ++s->next_worker_id;
    m->rank = rank;
    m->pid = pid;
    snprintf(m->host, sizeof m->host, "%s", host ? host : "");
    m->last_seen_ms = wire_now_ms();
    s->rank_member[rank] = slot;
    if (!s->rank_seen[rank]) {
        s->rank_seen[rank] = 1;
        s->ranks_joined++;
    }
    s->count.joins++;
    return m;
}

void ps_member_leave(ps *s, ps_member *m, const char *why) {
    if (!m->alive) return;
    m->alive = 0;
    int slot = (int)(m - s->members);
    if (s->rank_member[m->rank] == slot) s->rank_member[m->rank] = -1;
    /* Pending pulls of a member that left are never answered. */
    int k = 0;
    for (int i = 0; i < s->n_pulls; i++)
        if (s->pulls[i].worker_id != m->id) s->pulls[k++] = s->pulls[i];
    s->n_pulls = k;
    ps_log(s, "worker %llu (rank %d, %s pid %u) left: %s; %d alive", (unsigned long long)m->id,
           m->rank, m->host, m->pid, why, ps_members_alive(s));
}

int ps_members_expire(ps *s, int64_t now_ms) {
    int n = 0;
    for (int i = 0; i < s->n_members; i++) {
        ps_member *m = &s->members[i];
        if (m->alive && now_ms - m->last_seen_ms > s->cfg.job.heartbeat_timeout_ms) {
            char why[96];
            snprintf(why, sizeof why, "silent for %lld ms", (long long)(now_ms - m->last_seen_ms));
            ps_member_leave(s, m, why);
            s->count.drops++;
            n++;
        }
    }
    return n;
}
