/* ps_members: joins, a rank re-joining replaces its old membership, silent members expire,
 * leaving drops the member's waiting pulls. The module is compiled in here directly (the server
 * is an executable, not a library). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../ps/ps_members.c"

void ps_log(int shard, const char *fmt, ...) {
    (void)shard;
    (void)fmt;
}

static ps_members *make(int workers) {
    ps_members *s = calloc(1, sizeof *s);
    lp_err err;
    assert_int_equal(ps_members_init(s, workers, 1000, 0, &err), 0);
    return s;
}

static void destroy(ps_members *s) {
    ps_members_free(s);
    free(s);
}

static ps_pull pull_of(uint64_t worker_id) {
    ps_pull p = {.worker_id = worker_id};
    return p;
}

static void test_join_find_replace(void **state) {
    (void)state;
    ps_members *s = make(3);
    ps_member *a = ps_member_join(s, 0, "h", 1);
    uint64_t ida = a->id;
    ps_member *b = ps_member_join(s, 1, "h", 2);
    uint64_t idb = b->id;
    assert_int_equal(ps_members_alive(s), 2);
    assert_int_equal(s->ranks_joined, 2);
    assert_non_null(ps_member_find(s, ida));
    assert_non_null(ps_member_find(s, idb));
    assert_null(ps_member_find(s, 12345));
    /* rank 0 restarts: the old membership is gone, the new one has a new id */
    ps_member *a2 = ps_member_join(s, 0, "h", 3);
    assert_int_not_equal(a2->id, ida);
    assert_null(ps_member_find(s, ida));
    assert_int_equal(ps_members_alive(s), 2);
    assert_int_equal(s->ranks_joined, 2); /* distinct ranks, for the start barrier */
    destroy(s);
}

static void test_expire_and_pulls(void **state) {
    (void)state;
    ps_members *s = make(2);
    ps_member *a = ps_member_join(s, 0, "h", 1);
    ps_member *b = ps_member_join(s, 1, "h", 2);
    uint64_t ida = a->id, idb = b->id;
    ps_pull pa = pull_of(ida), pb = pull_of(idb);
    assert_int_equal(ps_members_hold_pull(s, &pa), 0);
    assert_int_equal(ps_members_hold_pull(s, &pb), 0);
    assert_int_equal(s->n_pulls, 2);
    int64_t now = wire_now_ms();
    a->last_seen_ms = now - 5000;
    b->last_seen_ms = now - 10;
    assert_int_equal(ps_members_expire(s, now), 1);
    assert_null(ps_member_find(s, ida));
    assert_non_null(ps_member_find(s, idb));
    assert_int_equal(s->n_pulls, 1);
    assert_int_equal(ps_members_first_pull(s)->worker_id, idb);
    assert_int_equal(s->drops, 1);
    /* the dead slot is reused by the next join */
    ps_member *c = ps_member_join(s, 0, "h", 3);
    assert_int_equal(s->n, 2);
    assert_int_equal(ps_members_alive(s), 2);
    ps_member_leave(s, c, "test");
    assert_int_equal(ps_members_alive(s), 1);
    assert_int_equal(s->rank_member[0], -1);
    destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_find_replace),
        cmocka_unit_test(test_expire_and_pulls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
