/* ps_agg: the step's gradient sum as a fixed tree over the ranks. Whatever order whole pushes
 * arrive in, and however pushes are cut into pieces (tensors in any pieces, pieces in any order,
 * interleaved across ranks, tensors in several frames), the sum is bit for bit the tree's sum
 * computed here directly; with 1 or 2 ranks it is the sequential sum the server made before; a
 * partial push rolled back leaves exactly the sum without it, and the rank can push again; ranks
 * that never pushed are empty. The module is compiled in here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../ps/ps_agg.c"

#include "rng.h"

#define MAX_T 6
#define MAX_W 13

typedef struct fixture {
    int n, workers;
    dtype type;
    size_t numel[MAX_T];
    float *root[MAX_T];
    float *grad[MAX_W][MAX_T]; /* each rank's gradient, as the wire carries it (rounded) */
    uint64_t tokens[MAX_W];
    ps_agg g;
    rng r;
} fixture;

static float rounded(float x, dtype t) {
    if (t == DT_BF16) return bf16_to_f32(f32_to_bf16(x));
    if (t == DT_F16) return f16_to_f32(f32_to_f16(x));
    return x;
}

static void setup(fixture *f, int workers, dtype type, uint64_t seed) {
    memset(f, 0, sizeof *f);
    rng_seed(&f->r, seed);
    f->n = 2 + (int)(rng_next(&f->r) % (MAX_T - 1));
    f->workers = workers;
    f->type = type;
    for (int t = 0; t < f->n; t++) {
        f->numel[t] = 1 + rng_next(&f->r) % 3000;
        f->root[t] = calloc(f->numel[t], sizeof(float));
        for (int w = 0; w < workers; w++) {
            f->grad[w][t] = malloc(f->numel[t] * sizeof(float));
            for (size_t j = 0; j < f->numel[t]; j++)
                f->grad[w][t][j] = rounded(rng_uniform(&f->r) * 2 - 1 + 1e-3f, type);
        }
    }
    for (int w = 0; w < workers; w++) f->tokens[w] = 1 + rng_next(&f->r) % 500;
    lp_err err;
    assert_int_equal(ps_agg_init(&f->g, f->n, f->numel, f->root, workers, type, &err), 0);
}

static void teardown(fixture *f) {
    ps_agg_free(&f->g);
    for (int t = 0; t < f->n; t++) {
        free(f->root[t]);
        for (int w = 0; w < f->workers; w++) free(f->grad[w][t]);
    }
}

/* ---- messages ------------------------------------------------------------------------------- */

/* Rank w's tensors `ts` (increasing) as one message, each tensor cut into frames of at most
 * `cut` elements, each frame its own raw frame. */
static void send_piece(fixture *f, int w, const int *ts, int n_ts, size_t cut, int complete) {
    size_t esz = dtype_size(f->type);
    int n_frames = 0;
    for (int i = 0; i < n_ts; i++) n_frames += (int)((f->numel[ts[i]] + cut - 1) / cut);
    wire_msg m;
    memset(&m, 0, sizeof m);
    Loraps__TensorFrame *tf = calloc((size_t)n_frames, sizeof *tf);
    Loraps__TensorFrame **tfp = calloc((size_t)n_frames, sizeof *tfp);
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    hdr.n_frames = (size_t)n_frames;
    hdr.frames = tfp;
    m.hdr = &hdr;
    m.n_frames = m.n_parts = n_frames;
    m.parts = calloc((size_t)n_frames, sizeof *m.parts);
    m.data = malloc((size_t)n_frames * (sizeof *m.data + sizeof *m.size));
    m.size = (size_t *)(void *)(m.data + n_frames);
    int *pos = malloc((size_t)n_frames * sizeof *pos);
    int k = 0;
    for (int i = 0; i < n_ts; i++) {
        int t = ts[i];
        for (size_t off = 0; off < f->numel[t]; off += cut, k++) {
            size_t len = f->numel[t] - off < cut ? f->numel[t] - off : cut;
            loraps__tensor_frame__init(&tf[k]);
            tf[k].index = (uint32_t)t;
            tf[k].offset = off;
            tf[k].numel = len;
            tfp[k] = &tf[k];
            zmq_msg_init_size(&m.parts[k], len * esz);
            dtype_from_f32(f->grad[w][t] + off, f->type, zmq_msg_data(&m.parts[k]), len);
            m.data[k] = zmq_msg_data(&m.parts[k]);
            m.size[k] = len * esz;
            pos[k] = t;
        }
    }
    lp_err err;
    assert_int_equal(ps_agg_add(&f->g, w, f->tokens[w], &m, pos, complete, &err), 0);
    assert_null(m.parts); /* taken */
    m.hdr = NULL;
    wire_msg_close(&m);
    free(pos);
    free(tf);
    free(tfp);
}

static void send_whole(fixture *f, int w) {
    int ts[MAX_T];
    for (int t = 0; t < f->n; t++) ts[t] = t;
    send_piece(f, w, ts, f->n, 1u << 20, 1);
}

static void shuffle(rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next(r) % (uint64_t)(i + 1)), x = a[i];
        a[i] = a[j];
        a[j] = x;
    }
}

/* ---- the tree, directly --------------------------------------------------------------------- */

/* The sum of ranks [lo, hi) present in `in` for element j of tensor t; 0 if none (*any = 0). */
static float tree(const fixture *f, const int *in, int t, size_t j, int lo, int hi, int *any) {
    if (hi - lo == 1) {
        *any = lo < f->workers && in[lo];
        return *any ? (float)f->tokens[lo] * f->grad[lo][t][j] : 0;
    }
    int mid = (lo + hi) / 2, al, ar;
    float l = tree(f, in, t, j, lo, mid, &al), r = tree(f, in, t, j, mid, hi, &ar);
    *any = al || ar;
    return al && ar ? l + r : al ? l : r;
}

static void expect_tree(const fixture *f, const int *in) {
    int P = 2;
    while (P < f->workers) P *= 2;
    for (int t = 0; t < f->n; t++)
        for (size_t j = 0; j < f->numel[t]; j++) {
            int any;
            float want = tree(f, in, t, j, 0, P, &any);
            if (memcmp(&want, &f->root[t][j], 4))
                fail_msg("tensor %d element %zu: %.9g, the tree's sum is %.9g", t, j,
                         (double)f->root[t][j], (double)want);
        }
}

static const dtype TYPES[3] = {DT_F32, DT_BF16, DT_F16};

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_whole_pushes_any_order(void **state) {
    (void)state;
    static const int WS[] = {1, 2, 3, 5, 8, 13};
    for (int wi = 0; wi < 6; wi++)
        for (int d = 0; d < 3; d++) {
            fixture f;
            setup(&f, WS[wi], TYPES[d], 100 + (uint64_t)wi * 3 + (uint64_t)d);
            int all[MAX_W];
            for (int w = 0; w < f.workers; w++) all[w] = 1;
            for (int trial = 0; trial < 4; trial++) { /* four steps, four orders */
                int order[MAX_W];
                for (int w = 0; w < f.workers; w++) order[w] = w;
                shuffle(&f.r, order, f.workers);
                for (int i = 0; i < f.workers; i++) send_whole(&f, order[i]);
                ps_agg_close(&f.g);
                expect_tree(&f, all);
                ps_agg_reset(&f.g);
            }
            teardown(&f);
        }
}

/* A push in pieces: the tensors split into 1..n random pieces, sent in random order, cut into
 * frames of random size; all ranks' pieces interleaved at random. */
static void send_all_in_pieces(fixture *f, const int *ranks, int n_ranks) {
    int n_pieces[MAX_W], sent[MAX_W] = {0}, piece_of[MAX_W][MAX_T], order[MAX_W][MAX_T];
    for (int i = 0; i < n_ranks; i++) {
        n_pieces[i] = 1 + (int)(rng_next(&f->r) % (uint64_t)f->n);
        for (int t = 0; t < f->n; t++)
            piece_of[i][t] = (int)(rng_next(&f->r) % (uint64_t)n_pieces[i]);
        for (int p = 0; p < n_pieces[i]; p++) order[i][p] = p;
        shuffle(&f->r, order[i], n_pieces[i]);
    }
    for (int left = n_ranks; left > 0;) {
        int i = (int)(rng_next(&f->r) % (uint64_t)n_ranks);
        if (sent[i] == n_pieces[i]) continue;
        int p = order[i][sent[i]++], ts[MAX_T], n = 0;
        for (int t = 0; t < f->n; t++)
            if (piece_of[i][t] == p) ts[n++] = t;
        int last = sent[i] == n_pieces[i];
        if (n || last) send_piece(f, ranks[i], ts, n, 1 + rng_next(&f->r) % 1500, last);
        if (last) left--;
    }
}

static void test_pieces_any_cut_any_interleaving(void **state) {
    (void)state;
    static const int WS[] = {1, 2, 3, 4, 7, 9};
    for (int wi = 0; wi < 6; wi++)
        for (int d = 0; d < 3; d++) {
            fixture f;
            setup(&f, WS[wi], TYPES[d], 200 + (uint64_t)wi * 3 + (uint64_t)d);
            int all[MAX_W], ranks[MAX_W];
            for (int w = 0; w < f.workers; w++) all[w] = 1, ranks[w] = w;
            for (int trial = 0; trial < 4; trial++) {
                send_all_in_pieces(&f, ranks, f.workers);
                assert_int_equal(f.g.n_partial, 0);
                ps_agg_close(&f.g);
                expect_tree(&f, all);
                ps_agg_reset(&f.g);
            }
            teardown(&f);
        }
}

/* One or two ranks: the sum the server made before the tree, 0 + a, then + b, in either order. */
static void test_one_and_two_ranks_as_before(void **state) {
    (void)state;
    for (int w = 1; w <= 2; w++)
        for (int first = 0; first < w; first++) {
            fixture f;
            setup(&f, w, DT_F32, 300 + (uint64_t)(w * 2 + first));
            send_whole(&f, first);
            if (w == 2) send_whole(&f, 1 - first);
            ps_agg_close(&f.g);
            for (int t = 0; t < f.n; t++)
                for (size_t j = 0; j < f.numel[t]; j++) {
                    float s = 0;
                    for (int k = 0; k < w; k++) s += (float)f.tokens[k] * f.grad[k][t][j];
                    assert_memory_equal(&s, &f.root[t][j], 4);
                }
            teardown(&f);
        }
}

/* Rank `victim` sends part of its push among the others' pieces, then is rolled back: the sum is
 * the tree without it. Then it pushes again, whole: the sum with it. */
static void test_partial_push_rolled_back(void **state) {
    (void)state;
    for (int trial = 0; trial < 12; trial++) {
        fixture f;
        setup(&f, 2 + trial % 6, TYPES[trial % 3], 400 + (uint64_t)trial);
        int victim = (int)(rng_next(&f.r) % (uint64_t)f.workers);
        int others[MAX_W], n_others = 0, in[MAX_W];
        for (int w = 0; w < f.workers; w++) {
            in[w] = w != victim;
            if (w != victim) others[n_others++] = w;
        }
        /* half of the others before the victim's piece, half after */
        send_all_in_pieces(&f, others, n_others / 2);
        int first = 0;
        send_piece(&f, victim, &first, 1, 700, 0);
        assert_true(ps_agg_rank_partial(&f.g, victim));
        send_all_in_pieces(&f, others + n_others / 2, n_others - n_others / 2);
        ps_agg_discard(&f.g, victim);
        assert_false(ps_agg_rank_partial(&f.g, victim));
        assert_int_equal(ps_agg_rank_tensors(&f.g, victim), 0);
        if (trial % 2 == 0) {
            ps_agg_close(&f.g);
            expect_tree(&f, in);
        } else {
            send_whole(&f, victim);
            ps_agg_close(&f.g);
            in[victim] = 1;
            expect_tree(&f, in);
        }
        teardown(&f);
    }
}

/* Ranks that never push are empty; a step nobody pushed to sums to zeros. */
static void test_absent_ranks(void **state) {
    (void)state;
    fixture f;
    setup(&f, 9, DT_BF16, 500);
    int in[MAX_W] = {0};
    for (int step = 0; step < 3; step++) {
        for (int w = 0; w < f.workers; w++) in[w] = (w * 7 + step) % 3 == 0;
        for (int w = f.workers - 1; w >= 0; w--)
            if (in[w]) send_whole(&f, w);
        ps_agg_close(&f.g);
        expect_tree(&f, in);
        ps_agg_reset(&f.g);
    }
    for (int t = 0; t < f.n; t++) f.root[t][0] = 5;
    ps_agg_close(&f.g);
    for (int t = 0; t < f.n; t++)
        for (size_t j = 0; j < f.numel[t]; j++) assert_true(f.root[t][j] == 0);
    teardown(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_pushes_any_order),
        cmocka_unit_test(test_pieces_any_cut_any_interleaving),
        cmocka_unit_test(test_one_and_two_ranks_as_before),
        cmocka_unit_test(test_partial_push_rolled_back),
        cmocka_unit_test(test_absent_ranks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
