/* ps_step: the consistency rules of the server on their own. Which pushes a sync or an async
 * step accepts, acknowledges as duplicate or stale, or refuses; when a sync step closes (every
 * live member in, or waiting for a later version; with several shards, once every shard's sum
 * of squares is in, added in shard order); bounded staleness; the ranks' first steps and data
 * positions. The module is compiled in here with ps_members.c; the adapter's and the sockets'
 * parts it calls are stand-ins that record what they were asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../ps/ps_members.c"
#include "../../ps/ps_step.c"

#include "rng.h"

void ps_log(int shard, const char *fmt, ...) {
    (void)shard;
    (void)fmt;
}

static uint64_t g_mean_tokens;  /* what ps_adapter_mean_grad was asked to divide by */
static double g_local_ss = 4.0; /* the sum of squares it returns */
static int g_norm_shares;       /* NormShares sent */
static double g_norm_share_ss;

double ps_adapter_mean_grad(ps_adapter *a, uint64_t tokens) {
    (void)a;
    g_mean_tokens = tokens;
    return g_local_ss;
}

int ps_adapter_discard_partial(ps_adapter *a) {
    (void)a;
    return 0;
}

void ps_net_to_peers(ps_net *n, Loraps__Header *hdr) {
    (void)n;
    g_norm_shares++;
    g_norm_share_ss = hdr->norm_share->sum_sq;
}

typedef struct fixture {
    ps_config cfg;
    ps_step st;
    ps_members mb;
    ps_adapter a;
    ps_net net;
} fixture;

static void member_left(void *ctx, const ps_member *mem) {
    fixture *f = ctx;
    ps_step_member_left(&f->st, mem, f->a.version);
}

static fixture *make(const char *mode, int workers, int shards, int shard) {
    fixture *f = calloc(1, sizeof *f);
    lp_err err;
    job_defaults(&f->cfg.job);
    snprintf(f->cfg.job.mode, sizeof f->cfg.job.mode, "%s", mode);
    f->cfg.sync = !strcmp(mode, "sync");
    f->cfg.job.workers = workers;
    f->cfg.job.max_steps = 10;
    f->cfg.job.micro_batch = 2;
    f->cfg.job.grad_accum = 3;
    f->cfg.job.max_grad_norm = 1.0f;
    f->cfg.n_shards = shards;
    f->cfg.shard = shard;
    assert_int_equal(ps_step_init(&f->st, &f->cfg, &err), 0);
    assert_int_equal(ps_members_init(&f->mb, workers, 1000, shard, &err), 0);
    f->mb.on_leave = member_left;
    f->mb.on_leave_ctx = f;
    g_mean_tokens = 0;
    g_norm_shares = 0;
    return f;
}

static void destroy(fixture *f) {
    ps_step_free(&f->st);
    ps_members_free(&f->mb);
    free(f);
}

static ps_push_verdict judge(fixture *f, uint64_t version, int rank, uint64_t step, uint64_t base) {
    lp_err why;
    return ps_step_judge_push(&f->st, 0, version, rank, step, base, &why);
}

static void test_sync_verdicts(void **state) {
    (void)state;
    fixture *f = make("sync", 2, 1, 0);
    assert_int_equal(judge(f, 3, 0, 3, 3), PS_PUSH_ACCEPT);
    assert_int_equal(judge(f, 3, 0, 4, 3), PS_PUSH_REFUSE); /* the future */
    ps_step_add_sync(&f->st, &f->mb, 0, 3, 10, 5.0, 0.1);
    assert_int_equal(f->st.rank_next[0], 4);
    /* the same push again: a duplicate; an older step of a rank that is ahead: a duplicate */
    assert_int_equal(judge(f, 3, 0, 3, 3), PS_PUSH_DUPLICATE);
    assert_int_equal(judge(f, 3, 0, 2, 2), PS_PUSH_DUPLICATE);
    /* rank 1 never pushed step 2: it is late, not repeating itself */
    assert_int_equal(judge(f, 3, 1, 2, 2), PS_PUSH_STALE);
    /* the job is over: everything is stale */
    lp_err why;
    assert_int_equal(ps_step_judge_push(&f->st, 1, 3, 1, 3, 3, &why), PS_PUSH_STALE);
    assert_int_equal(f->st.pushes_duplicate, 2);
    assert_int_equal(f->st.pushes_stale, 2);
    destroy(f);
}

static void test_async_verdicts(void **state) {
    (void)state;
    fixture *f = make("async", 2, 1, 0);
    assert_int_equal(judge(f, 0, 0, 0, 0), PS_PUSH_ACCEPT);
    assert_int_equal(judge(f, 0, 0, 1, 0), PS_PUSH_REFUSE);  /* skips its next step */
    assert_int_equal(judge(f, 0, 0, 0, 1), PS_PUSH_REFUSE);  /* from a version not yet out */
    assert_int_equal(judge(f, 0, 0, 10, 0), PS_PUSH_REFUSE); /* past max_steps */
    ps_step_add_async(&f->st, &f->mb, 0, 0, 10, 5.0, 0.1);
    assert_int_equal(f->st.rank_next[0], 1);
    assert_int_equal(judge(f, 1, 0, 0, 0), PS_PUSH_DUPLICATE);
    assert_int_equal(judge(f, 1, 0, 1, 1), PS_PUSH_ACCEPT);
    assert_int_equal(f->st.pushes_duplicate, 1);
    assert_int_equal(f->st.n_contrib, 1);
    assert_int_equal(f->st.tokens, 10);
    ps_step_window_reset(&f->st);
    assert_int_equal(f->st.n_contrib, 0);
    assert_int_equal(f->st.tokens, 0);
    destroy(f);
}

static void test_sync_close_one_shard(void **state) {
    (void)state;
    fixture *f = make("sync", 2, 1, 0);
    ps_member *a = ps_member_join(&f->mb, 0, "h", 1);
    ps_step_member_joined(&f->st, a, 0);
    ps_member *b = ps_member_join(&f->mb, 1, "h", 2);
    ps_step_member_joined(&f->st, b, 0);
    double ss = -1;
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 0); /* none in */
    ps_step_add_sync(&f->st, &f->mb, 0, 0, 10, 5.0, 0.1);
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 0); /* waits */
    /* a member already waiting for a later version will not push for this one */
    ps_step_member_pulled(&f->st, b, 1, 0);
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 1);
    assert_int_equal(g_mean_tokens, 10);
    assert_true(ss == g_local_ss);
    assert_int_equal(g_norm_shares, 0);
    /* the next step opens with nobody in, and both owe it a push */
    ps_step_next(&f->st, &f->mb, 1);
    assert_int_equal(f->st.owing, 2);
    assert_int_equal(f->st.n_contrib, 0);
    assert_int_equal(f->st.contributed[0], 0);
    assert_int_equal(f->st.overhead_pending, 1);
    ps_step_measure_overhead(&f->st);
    assert_int_equal(f->st.overhead_n, 1);
    assert_int_equal(f->st.overhead_pending, 0);
    (void)a;
    destroy(f);
}

static void test_sync_close_across_shards(void **state) {
    (void)state;
    fixture *f = make("sync", 1, 3, 1);
    ps_step_member_joined(&f->st, ps_member_join(&f->mb, 0, "h", 1), 5);
    f->a.version = 5;
    ps_step_add_sync(&f->st, &f->mb, 0, 5, 8, 2.0, 0.1);
    double ss = -1;
    /* in, but the global norm needs shards 0 and 2: this shard's share goes out once */
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 0);
    assert_int_equal(g_norm_shares, 1);
    assert_true(g_norm_share_ss == g_local_ss);
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 0);
    assert_int_equal(g_norm_shares, 1);
    /* a joining rank starts at the step after the closing one */
    assert_int_equal(ps_step_first_step(&f->st, 0, 5), 6);
    Loraps__ErrorCode code;
    lp_err why;
    Loraps__NormShare ns = LORAPS__NORM_SHARE__INIT;
    ns.shard = 1; /* itself */
    ns.step = 5;
    assert_int_equal(ps_step_on_norm_share(&f->st, &ns, 5, &code, &why), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_MALFORMED);
    ns.shard = 0;
    ns.sum_sq = -1;
    assert_int_equal(ps_step_on_norm_share(&f->st, &ns, 5, &code, &why), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_NONFINITE);
    ns.sum_sq = 1.0;
    ns.step = 6;
    assert_int_equal(ps_step_on_norm_share(&f->st, &ns, 5, &code, &why), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_STEP);
    ns.step = 5;
    assert_int_equal(ps_step_on_norm_share(&f->st, &ns, 5, &code, &why), 0);
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 0); /* shard 2 */
    ns.shard = 2;
    ns.sum_sq = 0.5;
    assert_int_equal(ps_step_on_norm_share(&f->st, &ns, 5, &code, &why), 0);
    assert_int_equal(ps_step_sync_close(&f->st, &f->a, &f->mb, &f->net, &ss), 1);
    assert_true(ss == 1.0 + g_local_ss + 0.5); /* shard order */
    destroy(f);
}

static void test_staleness_and_data(void **state) {
    (void)state;
    fixture *f = make("async", 2, 1, 0);
    f->st.staleness = 1;
    ps_step_member_joined(&f->st, ps_member_join(&f->mb, 0, "h", 1), 0);
    ps_step_member_joined(&f->st, ps_member_join(&f->mb, 1, "h", 2), 0);
    ps_step_restore_rank(&f->st, 0, 3, 0, 0);
    ps_step_restore_rank(&f->st, 1, 1, 0, f->st.per_rank);
    assert_int_equal(ps_step_min_clock(&f->st, &f->mb), 1);
    assert_true(ps_step_within_staleness(&f->st, &f->mb, 2));
    assert_false(ps_step_within_staleness(&f->st, &f->mb, 3));
    /* async: a rank's pushes run ahead of the slowest by this much at most (counted) */
    ps_step_add_async(&f->st, &f->mb, 0, 3, 1, 1.0, 0);
    assert_int_equal(f->st.max_spread, 2);
    /* data positions: rank r's part of step s; a resumed rank continues from its position */
    assert_int_equal(ps_data_position(&f->st, 1, 2), 2 * 12 + 6);
    ps_step_restore_rank(&f->st, 1, 7, 5, 1000);
    assert_int_equal(f->st.rank_next[1], 7);
    assert_int_equal(ps_data_position(&f->st, 1, 7), 1000 + 2 * 12);
    /* the data the job trains on: the first accepted push's, then every push must match it */
    Loraps__ErrorCode code;
    lp_err why;
    ps_step_accepted(&f->st, 1, 0xabc);
    assert_int_equal(ps_step_check_data(&f->st, 0, 0xabc, &code, &why), 0);
    assert_int_equal(ps_step_check_data(&f->st, 0, 0xdef, &code, &why), -1);
    assert_int_equal(code, LORAPS__ERROR_CODE__ERR_JOB);
    assert_non_null(strstr(why.msg, "rank 1's"));
    ps_step_restore_data(&f->st, 0x123);
    assert_int_equal(ps_step_check_data(&f->st, 0, 0xabc, &code, &why), -1);
    assert_non_null(strstr(why.msg, "the checkpoint's"));
    assert_int_equal(ps_step_all_ranks_done(&f->st), 0);
    f->st.rank_next[0] = f->st.rank_next[1] = 10;
    assert_int_equal(ps_step_all_ranks_done(&f->st), 1);
    destroy(f);
}

/* The step's counts of who owes a push and of the slowest rank, kept as members come, go and
 * pull, equal a scan over all members after every event. */
static void test_counts_equal_a_scan(void **state) {
    (void)state;
    fixture *f = make("sync", 9, 1, 0);
    rng r;
    rng_seed(&r, 17);
    uint64_t V = 0;
    for (int ev = 0; ev < 4000; ev++) {
        int rank = (int)rng_below(&r, 9), slot = f->mb.rank_member[rank];
        ps_member *mem = slot >= 0 ? &f->mb.list[slot] : NULL;
        switch (rng_below(&r, 6)) {
        case 0: /* a join (replacing a live member of the rank) */
            ps_step_member_joined(&f->st, ps_member_join(&f->mb, rank, "h", 1), V);
            break;
        case 1:
            if (mem) ps_member_leave(&f->mb, mem, "test");
            break;
        case 2:
            if (mem) ps_step_member_pulled(&f->st, mem, V + rng_below(&r, 2), V);
            break;
        case 3:
            if (mem && !f->st.contributed[rank])
                ps_step_add_sync(&f->st, &f->mb, rank, V, 1, 1.0, 0);
            break;
        case 4:
            if (rng_below(&r, 8) == 0) ps_step_next(&f->st, &f->mb, f->a.version = ++V);
            break;
        default: /* async-style clocks */
            ps_step_restore_rank(&f->st, rank, rng_below(&r, 50), 0, 0);
        }
        int owing = 0;
        uint64_t min = UINT64_MAX;
        for (int i = 0; i < f->mb.n; i++) {
            const ps_member *m = &f->mb.list[i];
            if (!m->alive) continue;
            owing += !f->st.contributed[m->rank] && m->pull_version <= V;
            if (f->st.rank_next[m->rank] < min) min = f->st.rank_next[m->rank];
        }
        assert_int_equal(f->st.owing, owing);
        assert_int_equal(ps_step_min_clock(&f->st, &f->mb), min);
    }
    destroy(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_verdicts),
        cmocka_unit_test(test_async_verdicts),
        cmocka_unit_test(test_sync_close_one_shard),
        cmocka_unit_test(test_sync_close_across_shards),
        cmocka_unit_test(test_staleness_and_data),
        cmocka_unit_test(test_counts_equal_a_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
