/* The messages a server takes: each is checked, then changes the modules it concerns. */
#include "ps.h"

#include "jobspec.h"
#include "ps_log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void send_ack(ps *s, const wire_msg *m, const ps_adapter *a, uint64_t step,
                     Loraps__AckStatus status) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Ack ack = LORAPS__ACK__INIT;
    hdr.body_case = LORAPS__HEADER__BODY_ACK;
    hdr.ack = &ack;
    ack.step = step;
    ack.status = status;
    ack.version = a->version;
    ps_net_reply(&s->net, m, &hdr);
}

/* ---- Hello ---------------------------------------------------------------------------------- */

/* The job takes this worker: it is running, the base model is the job's, the rank is in range
 * and there is room. */
static int hello_admissible(ps *s, const wire_msg *m) {
    const Loraps__Hello *h = m->hdr->hello;
    ps_validate *v = &s->checks;
    uint64_t fingerprint = s->adapters.model.fingerprint;
    if (s->phase >= PS_FINISHING)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN, "the job has finished");
    if (h->fingerprint != fingerprint)
        return ps_reject(
            v, m, LORAPS__ERROR_CODE__ERR_FINGERPRINT,
            "base model fingerprint %016llx is not the job's %016llx: load the job's model",
            (unsigned long long)h->fingerprint, (unsigned long long)fingerprint);
    if (h->rank >= (uint32_t)s->cfg.job.workers)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_BAD_RANK, "rank %u outside [0, %d)", h->rank,
                         s->cfg.job.workers);
    int live = ps_members_alive(&s->members);
    if (!ps_security_admit(&s->security, live, ps_members_rank_live(&s->members, (int)h->rank)))
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE,
                         "server full: %d live workers (--max-workers)", live);
    return 1;
}

/* The Welcome: the member's id, the adapter spec and its placement, the job, and where the
 * worker starts. -1: out of memory. */
static int send_welcome(ps *s, const wire_msg *m, const ps_member *mem, uint64_t start) {
    const ps_adapter *a = ps_adapters_default(&s->adapters);
    const ps_spec *sp = &a->spec;
    int n = sp->n;
    Loraps__TensorSpec *specs = calloc((size_t)n, sizeof *specs);
    Loraps__TensorSpec **ptrs = calloc((size_t)n, sizeof *ptrs);
    int rc = specs && ptrs ? 0 : -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        loraps__tensor_spec__init(&specs[i]);
        specs[i].name = sp->names[i];
        specs[i].rows = sp->rows[i];
        specs[i].cols = sp->cols[i];
        ptrs[i] = &specs[i];
    }
    if (rc == 0) {
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Welcome w = LORAPS__WELCOME__INIT;
        Loraps__JobSpec js;
        jobspec_from_job(&s->cfg.job, &js);
        hdr.body_case = LORAPS__HEADER__BODY_WELCOME;
        hdr.welcome = &w;
        w.worker_id = mem->id;
        w.instance = s->net.instance;
        w.fingerprint = s->adapters.model.fingerprint;
        w.shard = (uint32_t)s->cfg.shard;
        w.n_shards = (uint32_t)s->cfg.n_shards;
        w.n_spec = (size_t)n;
        w.spec = ptrs;
        w.n_placement = (size_t)n;
        w.placement = a->map.shard_of;
        w.job = &js;
        w.version = a->version;
        w.start_step = start;
        w.data_position = ps_data_position(&s->step, mem->rank, start);
        ps_net_reply(&s->net, m, &hdr);
    }
    free(specs);
    free(ptrs);
    return rc;
}

static void handle_hello(ps *s, wire_msg *m) {
    const Loraps__Hello *h = m->hdr->hello;
    if (!hello_admissible(s, m)) return;
    ps_member *mem = ps_member_join(&s->members, (int)h->rank, h->host, h->pid);
    if (!mem) {
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "out of memory for members");
        return;
    }
    /* a restarted worker sends its push again, whole or in pieces */
    ps_adapter_discard_push(ps_adapters_default(&s->adapters), mem->rank);
    uint64_t V = ps_adapters_default(&s->adapters)->version;
    ps_step_member_joined(&s->step, mem, V);
    uint64_t start = ps_step_first_step(&s->step, mem->rank, V);
    if (send_welcome(s, m, mem, start) < 0) {
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "out of memory for Welcome");
        return;
    }
    ps_log(s->cfg.shard,
           "worker %llu joined (rank %u, %s pid %u) at version %llu, first step %llu; %d alive",
           (unsigned long long)mem->id, h->rank, h->host, h->pid, (unsigned long long)V,
           (unsigned long long)start, ps_members_alive(&s->members));
}

/* ---- Pull ----------------------------------------------------------------------------------- */

static ps_pull pull_of(const wire_msg *m, uint64_t worker_id) {
    const Loraps__Pull *p = m->hdr->pull;
    ps_pull pl = {.routing_len = m->routing_len,
                  .worker_id = worker_id,
                  .adapter_id = p->adapter_id,
                  .version = p->version,
                  .step = p->step};
    memcpy(pl.routing, m->routing, m->routing_len);
    return pl;
}

static void handle_pull(ps *s, wire_msg *m, ps_member *mem) {
    const Loraps__Pull *p = m->hdr->pull;
    ps_adapter *a = ps_adapters_find(&s->adapters, p->adapter_id);
    if (!a) {
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED,
                  "adapter %u is not in this job", p->adapter_id);
        return;
    }
    if (s->cfg.sync && p->version > a->version + 1) {
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_STEP,
                  "version %llu asked; the current is %llu", (unsigned long long)p->version,
                  (unsigned long long)a->version);
        return;
    }
    ps_step_member_pulled(&s->step, mem, p->version, a->version);
    ps_pull pl = pull_of(m, mem->id);
    if (ps_pull_ready(s, &pl)) {
        ps_answer_pull(s, &pl);
        return;
    }
    if (s->phase == PS_RUNNING && !s->cfg.sync) s->step.pulls_held_staleness++;
    ps_members_hold_pull(&s->members, &pl); /* a member's: always held */
}

/* ---- Push ----------------------------------------------------------------------------------- */

/* What checking a push found: a whole push is its own last piece. */
typedef struct push_piece {
    int rank;
    int last;
    int *frame_pos; /* each frame's tensor position on this shard */
    int n_tensors;
} push_piece;

/* A gradient for an adapter of this job, in a job that has started. */
static int push_for_job(ps *s, const wire_msg *m, const ps_adapter *a) {
    const Loraps__Push *p = m->hdr->push;
    ps_validate *v = &s->checks;
    if (!a)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "adapter %u is not in this job",
                         p->adapter_id);
    if (p->kind != LORAPS__UPDATE_KIND__UPDATE_GRADIENT)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED,
                         "update kind %d: this server applies gradients only", p->kind);
    if (p->more_pieces && !s->cfg.sync)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED,
                         "a push in pieces: async mode takes whole pushes");
    if (s->phase == PS_WAITING)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_STEP,
                         "the job has not started: %d of %d workers joined",
                         s->members.ranks_joined, s->cfg.job.workers);
    return 1;
}

/* The push's step, where the consistency mode puts it: a duplicate or a stale push is
 * acknowledged as such (at its last piece), one out of order is refused. */
static int push_in_order(ps *s, const wire_msg *m, const ps_adapter *a, const push_piece *pc) {
    const Loraps__Push *p = m->hdr->push;
    lp_err why;
    ps_push_verdict v = ps_step_judge_push(&s->step, s->phase >= PS_FINISHING, a->version, pc->rank,
                                           p->step, p->base_version, &why);
    if (v == PS_PUSH_REFUSE)
        return ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_STEP, "%s", why.msg);
    if (v == PS_PUSH_DUPLICATE && pc->last)
        send_ack(s, m, a, p->step, LORAPS__ACK_STATUS__ACK_DUPLICATE);
    if (v == PS_PUSH_STALE && pc->last) send_ack(s, m, a, p->step, LORAPS__ACK_STATUS__ACK_STALE);
    return v == PS_PUSH_ACCEPT;
}

/* Its numbers, its data, its validation result and its tensors. */
static int push_content_valid(ps *s, const wire_msg *m, const ps_adapter *a, push_piece *pc) {
    const Loraps__Push *p = m->hdr->push;
    const job *j = &s->cfg.job;
    Loraps__ErrorCode code;
    lp_err why;
    if (ps_check_push_numbers(j, p, &code, &why) < 0 ||
        ps_step_check_data(&s->step, pc->rank, p->data_id, &code, &why) < 0 ||
        ps_check_push_eval(j, p, &code, &why) < 0)
        return ps_reject(&s->checks, m, code, "%s", why.msg);
    double t0 = wire_cpu_s();
    /* sync: any tensors (piece_fits checks a last piece completes the push); async: all */
    int rc = ps_check_tensors(a, m, s->cfg.wire_dtype, s->cfg.sync, pc->frame_pos, &pc->n_tensors,
                              &code, &why);
    s->costs.check_s += wire_cpu_s() - t0;
    return rc < 0 ? ps_reject(&s->checks, m, code, "%s", why.msg) : 1;
}

/* sync: the piece continues its rank's push: the same token count, tensors not in yet, and a
 * last piece that completes it (else the push is dropped). A piece repeating tensors already in
 * is a duplicate. */
static int piece_fits(ps *s, const wire_msg *m, ps_adapter *a, const push_piece *pc) {
    const Loraps__Push *p = m->hdr->push;
    ps_validate *v = &s->checks;
    const ps_agg *g = &a->agg;
    int have = ps_agg_rank_tensors(g, pc->rank);
    if (have && ps_agg_rank_tokens(g, pc->rank) != p->n_tokens)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_MALFORMED,
                         "a piece of %llu tokens; the push's earlier pieces had %llu",
                         (unsigned long long)p->n_tokens,
                         (unsigned long long)ps_agg_rank_tokens(g, pc->rank));
    if (!pc->last && (p->eval || pc->n_tensors == 0))
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_MALFORMED,
                         "a piece that is not the last carries tensors and no validation result");
    int in = 0;
    for (int i = 0; i < m->n_frames; i++)
        if (i == 0 || pc->frame_pos[i] != pc->frame_pos[i - 1])
            in += ps_agg_has(g, pc->rank, pc->frame_pos[i]);
    if (in && in == pc->n_tensors) {
        s->step.pushes_duplicate++;
        if (pc->last) send_ack(s, m, a, p->step, LORAPS__ACK_STATUS__ACK_DUPLICATE);
        return 0;
    }
    if (in)
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_SHAPE,
                         "%d of the piece's %d tensors are in already", in, pc->n_tensors);
    if (pc->last && have + pc->n_tensors != a->n) {
        ps_adapter_discard_push(a, pc->rank);
        s->step.pushes_incomplete++;
        return ps_reject(v, m, LORAPS__ERROR_CODE__ERR_SHAPE,
                         "the push's last piece leaves %d of this shard's %d tensors missing: the "
                         "push is dropped",
                         a->n - have - pc->n_tensors, a->n);
    }
    return 1;
}

/* sync: the piece joins the open step's sum; with the last, the push counts. */
static void add_to_step(ps *s, wire_msg *m, ps_adapter *a, const push_piece *pc) {
    const Loraps__Push *p = m->hdr->push;
    lp_err err;
    if (ps_adapter_add_piece(a, pc->rank, p->n_tokens, m, pc->frame_pos, pc->last, &err) < 0) {
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "%s", err.msg);
        return;
    }
    if (!pc->last) {
        s->step.pieces++;
        return;
    }
    send_ack(s, m, a, p->step, LORAPS__ACK_STATUS__ACK_ACCEPTED);
    /* last: the step's overhead is measured from here */
    ps_step_add_sync(&s->step, &s->members, pc->rank, a->version, p->n_tokens, p->loss_sum,
                     p->compute_seconds);
}

/* async: the push is one update and one new version; a progress line every `workers`. */
static void apply_now(ps *s, const wire_msg *m, ps_adapter *a, int rank) {
    const Loraps__Push *p = m->hdr->push;
    ps_step *st = &s->step;
    ps_adapter_set_grad(a, m);
    double ss = s->cfg.n_shards == 1 ? ps_adapter_grad_sum_sq(a) : p->grad_sum_sq;
    ps_publish_update(s, a, ss);
    ps_step_add_async(st, &s->members, rank, p->step, p->n_tokens, p->loss_sum, p->compute_seconds);
    ps_checkpoint_after_update(&s->ckpt);
    send_ack(s, m, a, p->step, LORAPS__ACK_STATUS__ACK_ACCEPTED);
    if (a->version % (uint64_t)s->cfg.job.workers && a->version < s->cfg.total_updates) return;
    uint64_t step = a->version - 1;
    ps_progress_step(&s->progress, &s->members, step, a->version, lr_at(&a->sched, (int)step),
                     st->tokens, st->loss / (double)st->tokens, st->compute_s / st->n_contrib,
                     sqrt(ss));
    ps_step_window_reset(st);
}

static void accept_push(ps *s, wire_msg *m, ps_adapter *a, ps_member *mem, const push_piece *pc) {
    const Loraps__Push *p = m->hdr->push;
    if (pc->last) {
        mem->bytes_sent = p->bytes_sent;
        mem->bytes_received = p->bytes_received;
        mem->compute_seconds += p->compute_seconds;
        ps_step_accepted(&s->step, mem->rank, p->data_id);
        if (p->eval) ps_progress_eval_add(&s->progress, p->step, p->eval);
    }
    if (s->cfg.sync)
        add_to_step(s, m, a, pc);
    else
        apply_now(s, m, a, mem->rank);
}

static void handle_push(ps *s, wire_msg *m, ps_member *mem) {
    ps_adapter *a = ps_adapters_find(&s->adapters, m->hdr->push->adapter_id);
    push_piece pc = {.rank = mem->rank, .last = !m->hdr->push->more_pieces};
    if (!push_for_job(s, m, a) || !push_in_order(s, m, a, &pc)) return;
    pc.frame_pos = malloc((size_t)(m->n_frames ? m->n_frames : 1) * sizeof *pc.frame_pos);
    if (!pc.frame_pos)
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_TOO_LARGE, "out of memory for a push");
    else if (push_content_valid(s, m, a, &pc) && (!s->cfg.sync || piece_fits(s, m, a, &pc)))
        accept_push(s, m, a, mem, &pc);
    free(pc.frame_pos);
}

/* ---- other shards --------------------------------------------------------------------------- */

static void handle_norm_share(ps *s, wire_msg *m) {
    Loraps__ErrorCode code;
    lp_err why;
    if (ps_step_on_norm_share(&s->step, m->hdr->norm_share,
                              ps_adapters_default(&s->adapters)->version, &code, &why) < 0)
        ps_reject(&s->checks, m, code, "%s", why.msg);
}

/* ---- heartbeats ----------------------------------------------------------------------------- */

static void handle_heartbeat(ps *s, wire_msg *m, const ps_member *mem) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
    hdr.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
    hdr.heartbeat = &hb;
    hb.worker_id = mem->id;
    hb.step = ps_adapters_default(&s->adapters)->version;
    ps_net_reply(&s->net, m, &hdr);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

/* The worker a member's message names; 0 for the messages that name none. */
static uint64_t worker_of(const Loraps__Header *h) {
    switch (h->body_case) {
    case LORAPS__HEADER__BODY_PULL:
        return h->pull->worker_id;
    case LORAPS__HEADER__BODY_PUSH:
        return h->push->worker_id;
    case LORAPS__HEADER__BODY_HEARTBEAT:
        return h->heartbeat->worker_id;
    case LORAPS__HEADER__BODY_BYE:
        return h->bye->worker_id;
    default:
        return 0;
    }
}

/* A message from a worker that is not a member: a late Bye is dropped, a Pull after the job's
 * end is told it is done, anything else must say Hello first. */
static void from_stranger(ps *s, wire_msg *m, uint64_t worker_id) {
    Loraps__Header *h = m->hdr;
    if (h->body_case == LORAPS__HEADER__BODY_BYE) return;
    if (s->phase >= PS_FINISHING && h->body_case == LORAPS__HEADER__BODY_PULL) {
        ps_pull pl = {.routing_len = m->routing_len,
                      .worker_id = worker_id,
                      .adapter_id = h->pull->adapter_id};
        memcpy(pl.routing, m->routing, m->routing_len);
        ps_answer_pull(s, &pl);
        return;
    }
    ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER,
              "worker %llu is not a member (never joined, or dropped): send Hello",
              (unsigned long long)worker_id);
}

static void from_member(ps *s, wire_msg *m) {
    Loraps__Header *h = m->hdr;
    uint64_t worker_id = worker_of(h);
    ps_member *mem = ps_member_find(&s->members, worker_id);
    if (!mem) {
        from_stranger(s, m, worker_id);
        return;
    }
    mem->last_seen_ms = wire_now_ms();
    if (h->body_case == LORAPS__HEADER__BODY_PULL) handle_pull(s, m, mem);
    if (h->body_case == LORAPS__HEADER__BODY_PUSH) handle_push(s, m, mem);
    if (h->body_case == LORAPS__HEADER__BODY_HEARTBEAT) handle_heartbeat(s, m, mem);
    if (h->body_case == LORAPS__HEADER__BODY_BYE) ps_member_bye(&s->members, mem);
}

void ps_handle(ps *s, wire_msg *m) {
    if (ps_check_header(&s->checks, m) < 0) return;
    Loraps__Header *h = m->hdr;
    if (m->n_frames && h->body_case != LORAPS__HEADER__BODY_PUSH &&
        h->body_case != LORAPS__HEADER__BODY_SHARD_STATE) {
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_MALFORMED, "%s carries no tensors",
                  ps_body_name(h));
        return;
    }
    switch (h->body_case) {
    case LORAPS__HEADER__BODY_HELLO:
        handle_hello(s, m);
        return;
    case LORAPS__HEADER__BODY_NORM_SHARE:
        handle_norm_share(s, m);
        return;
    case LORAPS__HEADER__BODY_SHARD_STATE:
        ps_checkpoint_on_peer(&s->ckpt, m);
        return;
    case LORAPS__HEADER__BODY_PULL:
    case LORAPS__HEADER__BODY_PUSH:
    case LORAPS__HEADER__BODY_HEARTBEAT:
    case LORAPS__HEADER__BODY_BYE:
        from_member(s, m);
        return;
    default:
        ps_reject(&s->checks, m, LORAPS__ERROR_CODE__ERR_UNSUPPORTED, "a server does not take %s",
                  ps_body_name(h));
        return;
    }
}
