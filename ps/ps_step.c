/* The step: sync / async / bounded staleness, and each rank's place in the job. */
#include "ps_step.h"

#include "ps_log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ps_step_init(ps_step *st, const ps_config *c, lp_err *err) {
    const job *j = &c->job;
    memset(st, 0, sizeof *st);
    st->shard = c->shard;
    st->n_shards = c->n_shards;
    st->workers = j->workers;
    st->sync = c->sync;
    st->staleness = j->staleness;
    st->max_steps = j->max_steps;
    st->max_grad_norm = j->max_grad_norm;
    st->per_rank = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum;
    size_t W = (size_t)j->workers, S = (size_t)c->n_shards;
    st->rank_next = calloc(W, sizeof *st->rank_next);
    st->data_step = calloc(W, sizeof *st->data_step);
    st->data_seq = calloc(W, sizeof *st->data_seq);
    st->contributed = calloc(W, 1);
    st->peer_step = calloc(S, sizeof *st->peer_step);
    st->peer_ss = calloc(S, sizeof *st->peer_ss);
    st->heap = calloc(W, sizeof *st->heap);
    st->heap_pos = malloc(W * sizeof *st->heap_pos);
    if (!st->rank_next || !st->data_step || !st->data_seq || !st->contributed || !st->peer_step ||
        !st->peer_ss || !st->heap || !st->heap_pos)
        return lp_fail(err, "out of memory");
    for (int r = 0; r < j->workers; r++) st->heap_pos[r] = -1;
    for (int r = 0; r < j->workers; r++) st->data_seq[r] = (uint64_t)r * st->per_rank;
    return 0;
}

void ps_step_free(ps_step *st) {
    free(st->rank_next);
    free(st->data_step);
    free(st->data_seq);
    free(st->contributed);
    free(st->peer_step);
    free(st->peer_ss);
    free(st->heap);
    free(st->heap_pos);
    memset(st, 0, sizeof *st);
}

/* ---- ranks ---------------------------------------------------------------------------------- */

uint64_t ps_data_position(const ps_step *st, int rank, uint64_t step) {
    uint64_t global = st->per_rank * (uint64_t)st->workers;
    return st->data_seq[rank] + (step - st->data_step[rank]) * global;
}

/* ---- the live ranks' heap ------------------------------------------------------------------- */

static void heap_swap(ps_step *st, int i, int j) {
    int a = st->heap[i], b = st->heap[j];
    st->heap[i] = b;
    st->heap[j] = a;
    st->heap_pos[b] = i;
    st->heap_pos[a] = j;
}

static int heap_less(const ps_step *st, int i, int j) {
    return st->rank_next[st->heap[i]] < st->rank_next[st->heap[j]];
}

static void heap_up(ps_step *st, int i) {
    while (i > 0 && heap_less(st, i, (i - 1) / 2)) {
        heap_swap(st, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(ps_step *st, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < st->n_heap && heap_less(st, l, m)) m = l;
        if (r < st->n_heap && heap_less(st, r, m)) m = r;
        if (m == i) return;
        heap_swap(st, i, m);
        i = m;
    }
}

static void heap_add(ps_step *st, int rank) {
    if (st->heap_pos[rank] >= 0) return;
    st->heap[st->n_heap] = rank;
    st->heap_pos[rank] = st->n_heap++;
    heap_up(st, st->n_heap - 1);
}

static void heap_remove(ps_step *st, int rank) {
    int i = st->heap_pos[rank];
    if (i < 0) return;
    heap_swap(st, i, --st->n_heap);
    st->heap_pos[rank] = -1;
    if (i < st->n_heap) {
        heap_up(st, i);
        heap_down(st, i);
    }
}

/* Rank r's next step is now `next`. */
static void set_rank_next(ps_step *st, int rank, uint64_t next) {
    st->rank_next[rank] = next;
    int i = st->heap_pos[rank];
    if (i < 0) return;
    heap_up(st, i);
    heap_down(st, st->heap_pos[rank]);
}

/* ---- membership ----------------------------------------------------------------------------- */

/* The member owes the open sync step V a push. */
static int owes(const ps_step *st, const ps_member *m, uint64_t version) {
    return m->alive && !st->contributed[m->rank] && m->pull_version <= version;
}

void ps_step_member_joined(ps_step *st, const ps_member *mem, uint64_t version) {
    st->owing += owes(st, mem, version);
    heap_add(st, mem->rank);
}

void ps_step_member_left(ps_step *st, const ps_member *mem, uint64_t version) {
    st->owing -= owes(st, mem, version);
    heap_remove(st, mem->rank);
}

void ps_step_member_pulled(ps_step *st, ps_member *mem, uint64_t pull_version, uint64_t version) {
    st->owing -= owes(st, mem, version);
    mem->pull_version = pull_version;
    st->owing += owes(st, mem, version);
}

void ps_step_restore_rank(ps_step *st, int rank, uint64_t next_step, uint64_t data_step,
                          uint64_t seq) {
    set_rank_next(st, rank, next_step);
    st->data_step[rank] = data_step;
    st->data_seq[rank] = seq;
}

void ps_step_restore_data(ps_step *st, uint64_t data_id) {
    st->data_id = data_id;
    st->data_id_rank = -1;
}

uint64_t ps_step_first_step(const ps_step *st, int rank, uint64_t version) {
    uint64_t start = st->rank_next[rank];
    if (st->sync) {
        uint64_t open = version + (st->closing ? 1 : 0);
        if (start < open) start = open;
    }
    return start;
}

uint64_t ps_step_min_clock(const ps_step *st, const ps_members *mb) {
    (void)mb; /* the heap holds the live ranks */
    return st->n_heap ? st->rank_next[st->heap[0]] : UINT64_MAX;
}

int ps_step_within_staleness(const ps_step *st, const ps_members *mb, uint64_t step) {
    if (st->sync || st->staleness <= 0) return 1;
    uint64_t mc = ps_step_min_clock(st, mb);
    return mc == UINT64_MAX || step <= mc + (uint64_t)st->staleness;
}

int ps_step_all_ranks_done(const ps_step *st) {
    for (int r = 0; r < st->workers; r++)
        if (st->rank_next[r] < (uint64_t)st->max_steps) return 0;
    return 1;
}

/* ---- pushes --------------------------------------------------------------------------------- */

static ps_push_verdict counted(ps_step *st, ps_push_verdict v) {
    if (v == PS_PUSH_DUPLICATE) st->pushes_duplicate++;
    if (v == PS_PUSH_STALE) st->pushes_stale++;
    return v;
}

static ps_push_verdict judge_sync(ps_step *st, uint64_t V, int r, uint64_t step, lp_err *why) {
    if (step > V) {
        lp_fail(why, "step %llu is in the future; current %llu", (unsigned long long)step,
                (unsigned long long)V);
        return PS_PUSH_REFUSE;
    }
    if (step < V || st->closing || st->contributed[r]) {
        int dup = step < st->rank_next[r] || (step == V && st->contributed[r]);
        return counted(st, dup ? PS_PUSH_DUPLICATE : PS_PUSH_STALE);
    }
    return PS_PUSH_ACCEPT;
}

static ps_push_verdict judge_async(ps_step *st, uint64_t V, int r, uint64_t step,
                                   uint64_t base_version, lp_err *why) {
    if (step < st->rank_next[r]) return counted(st, PS_PUSH_DUPLICATE);
    if (step > st->rank_next[r] || step >= (uint64_t)st->max_steps) {
        lp_fail(why, "step %llu; rank %d's next step is %llu of %d", (unsigned long long)step, r,
                (unsigned long long)st->rank_next[r], st->max_steps);
        return PS_PUSH_REFUSE;
    }
    if (base_version > V) {
        lp_fail(why, "computed from version %llu; the current is %llu",
                (unsigned long long)base_version, (unsigned long long)V);
        return PS_PUSH_REFUSE;
    }
    return PS_PUSH_ACCEPT;
}

ps_push_verdict ps_step_judge_push(ps_step *st, int finishing, uint64_t version, int rank,
                                   uint64_t step, uint64_t base_version, lp_err *why) {
    if (finishing) return counted(st, PS_PUSH_STALE);
    return st->sync ? judge_sync(st, version, rank, step, why)
                    : judge_async(st, version, rank, step, base_version, why);
}

int ps_step_check_data(const ps_step *st, int rank, uint64_t data_id, Loraps__ErrorCode *code,
                       lp_err *why) {
    if (!st->data_id || data_id == st->data_id) return 0;
    *code = LORAPS__ERROR_CODE__ERR_JOB;
    char whose[32] = "the checkpoint's";
    if (st->data_id_rank >= 0) snprintf(whose, sizeof whose, "rank %d's", st->data_id_rank);
    return lp_fail(why,
                   "rank %d trains on other data than %s (data id %016llx, theirs %016llx): "
                   "every worker needs the same data file and options",
                   rank, whose, (unsigned long long)data_id, (unsigned long long)st->data_id);
}

void ps_step_accepted(ps_step *st, int rank, uint64_t data_id) {
    st->pushes_accepted++;
    if (st->data_id || !data_id) return;
    st->data_id = data_id;
    st->data_id_rank = rank;
    ps_log(st->shard, "the workers' data: id %016llx (from rank %d)", (unsigned long long)data_id,
           rank);
}

static void add_totals(ps_step *st, uint64_t tokens, double loss, double compute_s) {
    st->n_contrib++;
    st->tokens += tokens;
    st->loss += loss;
    st->compute_s += compute_s;
}

void ps_step_add_sync(ps_step *st, const ps_members *mb, int rank, uint64_t version,
                      uint64_t tokens, double loss, double compute_s) {
    int slot = mb->rank_member[rank];
    if (slot >= 0) st->owing -= owes(st, &mb->list[slot], version);
    st->contributed[rank] = 1;
    add_totals(st, tokens, loss, compute_s);
    set_rank_next(st, rank, version + 1);
    st->last_push_s = wire_now_s();
    st->last_push_cpu_s = wire_cpu_s();
}

void ps_step_add_async(ps_step *st, const ps_members *mb, int rank, uint64_t step, uint64_t tokens,
                       double loss, double compute_s) {
    uint64_t mc = ps_step_min_clock(st, mb);
    if (mc != UINT64_MAX && step > mc && step - mc > st->max_spread) st->max_spread = step - mc;
    set_rank_next(st, rank, step + 1);
    add_totals(st, tokens, loss, compute_s);
}

void ps_step_window_reset(ps_step *st) {
    st->tokens = 0;
    st->loss = 0;
    st->n_contrib = 0;
    st->compute_s = 0;
}

/* ---- closing a sync step -------------------------------------------------------------------- */

/* Every live member has pushed for the open step, or waits for a later version (and will not). */
static int all_in(const ps_step *st) {
    return st->owing == 0;
}

static void send_norm_share(ps_step *st, ps_net *net, uint64_t version) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__NormShare ns = LORAPS__NORM_SHARE__INIT;
    hdr.body_case = LORAPS__HEADER__BODY_NORM_SHARE;
    hdr.norm_share = &ns;
    ns.shard = (uint32_t)st->shard;
    ns.step = version;
    ns.sum_sq = st->local_ss;
    ns.instance = net->instance;
    ps_net_to_peers(net, &hdr);
}

/* The S parts added in shard order, once every other shard's share of this step is in. */
static int global_sum(const ps_step *st, uint64_t version, double *total) {
    double sum = 0;
    for (int k = 0; k < st->n_shards; k++) {
        if (k == st->shard) {
            sum += st->local_ss;
            continue;
        }
        if (st->peer_step[k] != version + 1) return 0;
        sum += st->peer_ss[k];
    }
    *total = sum;
    return 1;
}

int ps_step_sync_close(ps_step *st, ps_adapter *a, const ps_members *mb, ps_net *net,
                       double *global_ss) {
    (void)mb; /* who owes a push is counted as members change */
    if (!st->closing && st->n_contrib > 0) {
        if (!all_in(st)) return 0;
        /* a partial push left now is a worker's that left: the step closes without it */
        st->pushes_incomplete += (uint64_t)ps_adapter_discard_partial(a);
        st->local_ss = ps_adapter_mean_grad(a, st->tokens);
        if (st->n_shards == 1 || st->max_grad_norm <= 0) {
            *global_ss = st->local_ss;
            return 1;
        }
        st->closing = 1;
        send_norm_share(st, net, a->version);
    }
    return st->closing && global_sum(st, a->version, global_ss);
}

int ps_step_on_norm_share(ps_step *st, const Loraps__NormShare *ns, uint64_t version,
                          Loraps__ErrorCode *code, lp_err *why) {
    if (ns->shard >= (uint32_t)st->n_shards || ns->shard == (uint32_t)st->shard) {
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        return lp_fail(why, "NormShare from shard %u", ns->shard);
    }
    if (!isfinite(ns->sum_sq) || ns->sum_sq < 0) {
        *code = LORAPS__ERROR_CODE__ERR_NONFINITE;
        return lp_fail(why, "NormShare sum of squares %g", ns->sum_sq);
    }
    if (ns->step + 1 < version + 1 || ns->step > version) {
        *code = LORAPS__ERROR_CODE__ERR_STEP;
        return lp_fail(why, "NormShare for step %llu at version %llu", (unsigned long long)ns->step,
                       (unsigned long long)version);
    }
    st->peer_step[ns->shard] = ns->step + 1;
    st->peer_ss[ns->shard] = ns->sum_sq;
    return 0;
}

void ps_step_next(ps_step *st, const ps_members *mb, uint64_t version) {
    memset(st->contributed, 0, (size_t)st->workers);
    st->owing = 0; /* once a step: who owes the new one */
    for (int r = 0; r < st->workers; r++)
        if (mb->rank_member[r] >= 0) st->owing += owes(st, &mb->list[mb->rank_member[r]], version);
    ps_step_window_reset(st);
    st->closing = 0;
    st->local_ss = 0;
    st->overhead_pending = 1;
}

void ps_step_measure_overhead(ps_step *st) {
    if (!st->overhead_pending) return;
    double ms = (wire_now_s() - st->last_push_s) * 1e3;
    st->overhead_cpu_ms_sum += (wire_cpu_s() - st->last_push_cpu_s) * 1e3;
    st->overhead_ms_sum += ms;
    st->overhead_n++;
    if (ms > st->overhead_ms_max) st->overhead_ms_max = ms;
    st->overhead_pending = 0;
}
