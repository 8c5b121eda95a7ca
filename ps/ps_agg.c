/* The step's gradient sum as a tree over the ranks (ps_agg.h). */
#include "ps_agg.h"

#include <stdlib.h>
#include <string.h>

enum { AGG_PENDING, AGG_EMPTY, AGG_VALUE, AGG_CONSUMED };
enum { LEAF_NONE = -1, LEAF_ALIAS = -2 };

/* Below this many elements a message is summed on one thread. */
#define PARALLEL_ELEMS ((size_t)1 << 17)

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int ps_agg_init(ps_agg *g, int n, const size_t *numel, float *const *root, int workers, dtype type,
                lp_err *err) {
    memset(g, 0, sizeof *g);
    g->n = n;
    g->workers = workers;
    g->type = type;
    g->gen = 1;
    g->P = 2; /* one rank still has a root above its leaf */
    while (g->P < workers) g->P *= 2;
    g->t = calloc((size_t)(n ? n : 1), sizeof *g->t);
    g->rank = calloc((size_t)workers, sizeof *g->rank);
    if (!g->t || !g->rank) return lp_fail(err, "out of memory");
    for (int i = 0; i < n; i++) {
        ps_agg_tensor *T = &g->t[i];
        T->numel = numel[i];
        T->root = root[i];
        T->node = calloc((size_t)(2 * g->P), sizeof *T->node);
        T->leaf = calloc((size_t)workers, sizeof *T->leaf);
        if (!T->node || !T->leaf) return lp_fail(err, "out of memory");
    }
    return 0;
}

void ps_agg_free(ps_agg *g) {
    ps_agg_reset(g);
    for (int i = 0; g->t && i < g->n; i++) {
        ps_agg_tensor *T = &g->t[i];
        for (int k = 0; k < T->n_pool; k++) free(T->pool[k]);
        free(T->pool);
        free(T->kept);
        free(T->node);
        free(T->leaf);
    }
    free(g->t);
    free(g->rank);
    free(g->seg);
    free(g->held);
    memset(g, 0, sizeof *g);
}

/* ---- nodes ---------------------------------------------------------------------------------- */

/* A node's subtree holds a rank < workers; otherwise it is empty from the start. */
static int subtree_live(const ps_agg *g, int k) {
    int lo = k;
    while (lo < g->P) lo <<= 1;
    return lo - g->P < g->workers;
}

static int kind(const ps_agg *g, const ps_agg_tensor *T, int k) {
    const ps_agg_node *nd = &T->node[k];
    if (nd->gen == g->gen) return nd->kind;
    return subtree_live(g, k) ? AGG_PENDING : AGG_EMPTY;
}

static void set_node(const ps_agg *g, ps_agg_tensor *T, int k, int kd, int leaf, float *own) {
    T->node[k] = (ps_agg_node){g->gen, (uint8_t)kd, leaf, 0, own};
}

/* The node whose fields hold k's value (through aliases). */
static int resolve(const ps_agg_tensor *T, int k) {
    while (T->node[k].leaf == LEAF_ALIAS) k = T->node[k].alias;
    return k;
}

static float *pool_get(ps_agg_tensor *T) {
    if (T->n_pool) return T->pool[--T->n_pool];
    return malloc((T->numel ? T->numel : 1) * sizeof(float));
}

static void pool_put(ps_agg_tensor *T, float *buf) {
    if (!buf || buf == T->root) return;
    if (grow((void **)&T->pool, &T->cap_pool, T->n_pool + 1, sizeof *T->pool) < 0) {
        free(buf);
        return;
    }
    T->pool[T->n_pool++] = buf;
}

static void held_unref(ps_agg *g, int h) {
    ps_agg_held *hm = &g->held[h];
    if (__atomic_sub_fetch(&hm->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        wire_parts_close(hm->parts, hm->n_parts);
        hm->parts = NULL;
        hm->n_parts = 0;
    }
}

/* Lets go of what node k's own fields hold (a buffer, or a leaf's frames); once only. */
static void release(ps_agg *g, ps_agg_tensor *T, int k) {
    ps_agg_node *nd = &T->node[k];
    if (nd->leaf >= 0) {
        held_unref(g, T->leaf[nd->leaf].held);
        nd->leaf = LEAF_NONE;
    } else if (nd->leaf == LEAF_NONE) {
        pool_put(T, nd->own);
    }
    nd->own = NULL;
}

/* A combine's input is used up: its resources go now, or, while a push is partial, when none is. */
static void consume(ps_agg *g, ps_agg_tensor *T, int k, int keep) {
    T->node[k].kind = AGG_CONSUMED;
    if (!keep) {
        release(g, T, resolve(T, k));
        return;
    }
    if (grow((void **)&T->kept, &T->cap_kept, T->n_kept + 1, sizeof *T->kept) == 0)
        T->kept[T->n_kept++] = k;
}

static acc_src value_of(const ps_agg *g, const ps_agg_tensor *T, int k, acc_seg *tmp) {
    const ps_agg_node *nd = &T->node[resolve(T, k)];
    if (nd->leaf >= 0) {
        const ps_agg_leaf *lf = &T->leaf[nd->leaf];
        return (acc_src){g->seg + lf->seg, lf->n_seg, g->type, (float)g->rank[nd->leaf].tokens};
    }
    return acc_f32(tmp, nd->own, T->numel);
}

/* ---- summing -------------------------------------------------------------------------------- */

/* Node p = its children a + b. Without partial pushes the sum goes in place into a child's own
 * buffer (the root's is the adapter's gradient sum). */
static void combine(ps_agg *g, ps_agg_tensor *T, int p, int a, int b, int keep) {
    acc_seg sa, sb;
    acc_src src[2] = {value_of(g, T, a, &sa), value_of(g, T, b, &sb)};
    int ra = resolve(T, a), rb = resolve(T, b);
    float *dst = NULL;
    if (p == 1)
        dst = T->root;
    else if (!keep && T->node[ra].leaf == LEAF_NONE && T->node[ra].own)
        dst = T->node[ra].own, T->node[ra].own = NULL;
    else if (!keep && T->node[rb].leaf == LEAF_NONE && T->node[rb].own)
        dst = T->node[rb].own, T->node[rb].own = NULL;
    else
        dst = pool_get(T);
    acc_sum(dst, src, 2, T->numel);
    consume(g, T, a, keep);
    consume(g, T, b, keep);
    set_node(g, T, p, AGG_VALUE, LEAF_NONE, dst);
}

/* The root with one child empty: its value copied (converted, weighted) into the sum. */
static void materialize_root(ps_agg *g, ps_agg_tensor *T, int c, int keep) {
    acc_seg s;
    acc_src src = value_of(g, T, c, &s);
    acc_sum(T->root, &src, 1, T->numel);
    consume(g, T, c, keep);
    set_node(g, T, 1, AGG_VALUE, LEAF_NONE, T->root);
}

/* Node k is known (a value or empty): every ancestor whose halves are both known now is too. */
static void propagate(ps_agg *g, ps_agg_tensor *T, int k, int keep) {
    for (int pos = k; pos > 1; pos >>= 1) {
        int sib = pos ^ 1, p = pos >> 1;
        int ks = kind(g, T, sib), kp = kind(g, T, pos);
        if (ks == AGG_PENDING) return;
        int left = pos < sib ? pos : sib, right = pos < sib ? sib : pos;
        if (ks == AGG_EMPTY && kp == AGG_EMPTY) {
            if (p == 1) memset(T->root, 0, T->numel * sizeof(float));
            set_node(g, T, p, p == 1 ? AGG_VALUE : AGG_EMPTY, LEAF_NONE, p == 1 ? T->root : NULL);
        } else if (ks == AGG_EMPTY || kp == AGG_EMPTY) {
            int c = ks == AGG_EMPTY ? pos : sib;
            if (p == 1) {
                materialize_root(g, T, c, keep);
            } else {
                T->node[c].kind = AGG_CONSUMED; /* its fields stay: p refers to them */
                set_node(g, T, p, AGG_VALUE, LEAF_ALIAS, NULL);
                T->node[p].alias = c;
            }
        } else {
            combine(g, T, p, left, right, keep);
        }
    }
}

/* ---- pieces --------------------------------------------------------------------------------- */

int ps_agg_has(const ps_agg *g, int rank, int t) {
    return g->t[t].leaf[rank].gen == g->gen;
}

static ps_agg_rank *rank_now(ps_agg *g, int r) {
    ps_agg_rank *rk = &g->rank[r];
    if (rk->gen != g->gen) *rk = (ps_agg_rank){.gen = g->gen};
    return rk;
}

int ps_agg_rank_tensors(const ps_agg *g, int rank) {
    return g->rank[rank].gen == g->gen ? g->rank[rank].n_tensors : 0;
}

int ps_agg_rank_partial(const ps_agg *g, int rank) {
    return g->rank[rank].gen == g->gen && g->rank[rank].partial;
}

uint64_t ps_agg_rank_tokens(const ps_agg *g, int rank) {
    return g->rank[rank].gen == g->gen ? g->rank[rank].tokens : 0;
}

/* The message's frames as segments of its tensors' leaves; the tensors in arrival order. */
static int record_leaves(ps_agg *g, int r, const wire_msg *m, const int *frame_pos, int h,
                         int *tensors, int *n_tensors) {
    if (grow((void **)&g->seg, &g->cap_seg, g->n_seg + m->n_frames, sizeof *g->seg) < 0) return -1;
    int n = 0;
    for (int i = 0; i < m->n_frames; i++) {
        int t = frame_pos[i];
        ps_agg_leaf *lf = &g->t[t].leaf[r];
        if (i == 0 || frame_pos[i - 1] != t) {
            *lf = (ps_agg_leaf){g->gen, g->n_seg, 0, h};
            tensors[n++] = t;
        }
        g->seg[g->n_seg++] =
            (acc_seg){m->data[i], m->hdr->frames[i]->offset, m->hdr->frames[i]->numel};
        lf->n_seg++;
    }
    *n_tensors = n;
    return 0;
}

/* Released what was kept for rollbacks: no push is partial any more. */
static void release_kept(ps_agg *g) {
    for (int i = 0; i < g->n; i++) {
        ps_agg_tensor *T = &g->t[i];
        for (int k = 0; k < T->n_kept; k++) {
            int nd = T->kept[k];
            if (kind(g, T, nd) == AGG_CONSUMED) release(g, T, resolve(T, nd));
        }
        T->n_kept = 0;
    }
}

int ps_agg_add(ps_agg *g, int rank, uint64_t tokens, wire_msg *m, const int *frame_pos,
               int complete, lp_err *err) {
    if (grow((void **)&g->held, &g->cap_held, g->n_held + 1, sizeof *g->held) < 0)
        return lp_fail(err, "out of memory for a push");
    int *tensors = malloc((size_t)(m->n_frames ? m->n_frames : 1) * sizeof *tensors), n_t = 0;
    if (!tensors || record_leaves(g, rank, m, frame_pos, g->n_held, tensors, &n_t) < 0) {
        free(tensors);
        return lp_fail(err, "out of memory for a push");
    }
    int h = g->n_held++;
    ps_agg_held *hm = &g->held[h];
    hm->parts = wire_msg_take_parts(m, &hm->n_parts);
    hm->refs = n_t + 1; /* + 1 until every leaf is placed */
    ps_agg_rank *rk = rank_now(g, rank);
    int was_partial = rk->partial;
    rk->tokens = tokens;
    rk->n_tensors += n_t;
    rk->partial = !complete;
    rk->complete = complete;
    g->n_partial += rk->partial - was_partial;
    /* a partial push (this one, or another's) keeps what it is summed with */
    int keep = g->n_partial > 0 || was_partial;
    size_t elems = 0;
    for (int i = 0; i < m->n_frames; i++) elems += m->hdr->frames[i]->numel;
    double t0 = wire_cpu_s();
#pragma omp parallel for schedule(dynamic, 1) if (elems >= PARALLEL_ELEMS && n_t > 1)
    for (int i = 0; i < n_t; i++) {
        ps_agg_tensor *T = &g->t[tensors[i]];
        int k = g->P + rank;
        set_node(g, T, k, AGG_VALUE, rank, NULL);
        propagate(g, T, k, keep);
    }
    g->seconds += wire_cpu_s() - t0;
    g->bytes += elems * dtype_size(g->type);
    g->messages++;
    held_unref(g, h);
    free(tensors);
    if (was_partial && complete && g->n_partial == 0) release_kept(g);
    return 0;
}

/* ---- rollback, close, reset ----------------------------------------------------------------- */

/* Rank r's leaf of tensor T goes, and every node it reached is pending again over the values it
 * had summed (kept, since r's push was partial when they were summed). */
static void rollback(ps_agg *g, ps_agg_tensor *T, int r) {
    int leaf = g->P + r;
    for (int pos = leaf; pos > 1; pos >>= 1) {
        int p = pos >> 1, sib = pos ^ 1;
        if (kind(g, T, p) == AGG_PENDING) break;
        if (kind(g, T, sib) == AGG_CONSUMED) T->node[sib].kind = AGG_VALUE;
        if (T->node[p].leaf == LEAF_NONE) pool_put(T, T->node[p].own);
        set_node(g, T, p, AGG_PENDING, LEAF_NONE, NULL);
    }
    release(g, T, leaf);
    set_node(g, T, leaf, AGG_PENDING, LEAF_NONE, NULL);
    T->leaf[r].gen = 0;
}

void ps_agg_discard(ps_agg *g, int rank) {
    if (!ps_agg_rank_partial(g, rank)) return;
    for (int i = 0; i < g->n; i++)
        if (ps_agg_has(g, rank, i)) rollback(g, &g->t[i], rank);
    g->rank[rank] = (ps_agg_rank){.gen = g->gen};
    g->n_partial--;
    g->rollbacks++;
    if (g->n_partial == 0) release_kept(g);
}

void ps_agg_close(ps_agg *g) {
    double t0 = wire_cpu_s();
    for (int i = 0; i < g->n; i++) {
        ps_agg_tensor *T = &g->t[i];
        for (int r = 0; r < g->workers && kind(g, T, 1) != AGG_VALUE; r++) {
            int k = g->P + r;
            if (kind(g, T, k) != AGG_PENDING) continue;
            set_node(g, T, k, AGG_EMPTY, LEAF_NONE, NULL);
            propagate(g, T, k, 0);
        }
    }
    g->seconds += wire_cpu_s() - t0;
}

void ps_agg_reset(ps_agg *g) {
    for (int i = 0; g->t && i < g->n; i++) {
        ps_agg_tensor *T = &g->t[i];
        for (int k = 1; k < 2 * g->P; k++)
            if (T->node[k].gen == g->gen) release(g, T, k);
        T->n_kept = 0;
    }
    for (int h = 0; h < g->n_held; h++)
        if (g->held[h].parts) wire_parts_close(g->held[h].parts, g->held[h].n_parts);
    g->n_held = 0;
    g->n_seg = 0;
    g->n_partial = 0;
    g->gen++;
}
