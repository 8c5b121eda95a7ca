/* The worker's side of the protocol: joining, and the parallel pull and push exchanges with every
 * shard. (Heartbeats: worker_heartbeat.c; the gradient frames in flight: worker_grads.c.) */
#include "worker_net.h"
#include "worker.h"
#include "worker_grads.h"
#include "worker_log.h"
#include "worker_setup.h"
#include "worker_signal.h"

#include "curve_auth.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { NO_ANSWER = -2 }; /* a reply that settles nothing: keep waiting */

/* A new socket for shard s. Closing the old one (linger 0) drops anything it still queues: a
 * stale request must not reach a new server, and the gradient frames it held are let go. */
static int open_socket(worker *w, worker_shard *s, lp_err *err) {
    if (s->sock) zmq_close(s->sock);
    s->sock = zmq_socket(w->ctx, ZMQ_DEALER);
    if (!s->sock) return lp_fail(err, "socket: %s", zmq_strerror(zmq_errno()));
    if (wire_socket_setup(s->sock, 0, err) < 0) return -1;
    if (curve_client_setup(s->sock, err) < 0) return -1;
    if (zmq_connect(s->sock, s->endpoint) < 0)
        return lp_fail(err, "connect %s: %s", s->endpoint, zmq_strerror(zmq_errno()));
    return 0;
}

static int is_fatal_code(Loraps__ErrorCode c) {
    return c == LORAPS__ERROR_CODE__ERR_FINGERPRINT || c == LORAPS__ERROR_CODE__ERR_PROTOCOL ||
           c == LORAPS__ERROR_CODE__ERR_BAD_RANK || c == LORAPS__ERROR_CODE__ERR_JOB ||
           c == LORAPS__ERROR_CODE__ERR_MALFORMED || c == LORAPS__ERROR_CODE__ERR_SHAPE ||
           c == LORAPS__ERROR_CODE__ERR_DTYPE || c == LORAPS__ERROR_CODE__ERR_NONFINITE ||
           c == LORAPS__ERROR_CODE__ERR_UNSUPPORTED || c == LORAPS__ERROR_CODE__ERR_TOO_LARGE;
}

/* ---- joining -------------------------------------------------------------------------------- */

static int same_spec(const worker *w, const Loraps__Welcome *wel) {
    if ((int)wel->n_spec != w->n_spec || wel->n_placement != wel->n_spec) return 0;
    for (int i = 0; i < w->n_spec; i++)
        if (strcmp(wel->spec[i]->name, w->spec_names[i]) || wel->spec[i]->rows != w->spec_rows[i] ||
            wel->spec[i]->cols != w->spec_cols[i] || wel->placement[i] != w->placement[i])
            return 0;
    return 1;
}

/* This shard's tensors, pointing into the adapter's params and grads. */
static int bind_tensors(worker *w, worker_shard *s, lp_err *err) {
    free(s->index);
    free(s->numel);
    free(s->param_ptr);
    free(s->grad_ptr);
    size_t n = (size_t)w->n_spec;
    s->index = calloc(n, sizeof *s->index);
    s->numel = calloc(n, sizeof *s->numel);
    s->param_ptr = calloc(n, sizeof *s->param_ptr);
    s->grad_ptr = calloc(n, sizeof *s->grad_ptr);
    if (!s->index || !s->numel || !s->param_ptr || !s->grad_ptr)
        return lp_fail(err, "out of memory");
    s->n = 0;
    for (int i = 0; i < w->n_spec; i++) {
        if (w->placement[i] != (uint32_t)s->shard) continue;
        const lora_tensor *t = &w->adapter.tensors[i];
        s->index[s->n] = (uint32_t)i;
        s->numel[s->n] = t->numel;
        s->param_ptr[s->n] = w->adapter.params + t->offset;
        s->grad_ptr[s->n] = w->adapter.grads + t->offset;
        s->n++;
    }
    return 0;
}

/* The shard map of a Welcome agrees with --servers and with the other shards. */
static int check_shard_map(const worker *w, int k, const Loraps__Welcome *wel, lp_err *err) {
    const worker_shard *s = &w->shards[k];
    if (!wel->job) return lp_fail(err, "%s: Welcome without the job", s->endpoint);
    if (wel->n_shards != (uint32_t)w->cfg.n_servers)
        return lp_fail(err, "%s: the job has %u server shards, --servers lists %d", s->endpoint,
                       wel->n_shards, w->cfg.n_servers);
    if (wel->shard >= wel->n_shards)
        return lp_fail(err, "%s: shard %u of %u", s->endpoint, wel->shard, wel->n_shards);
    for (int j = 0; j < w->cfg.n_servers; j++)
        if (j != k && w->shards[j].shard == (int)wel->shard)
            return lp_fail(err, "%s and %s both are shard %u", s->endpoint, w->shards[j].endpoint,
                           wel->shard);
    return 0;
}

/* The first Welcome sets the job up; every later one must be the same job. */
static int take_job(worker *w, const worker_shard *s, const Loraps__Header *h, lp_err *err) {
    const Loraps__Welcome *wel = h->welcome;
    if (!w->joined) {
        if (worker_setup_from_welcome(w, wel, h->job_id, err) < 0) return -1;
        w->joined = 1;
        return 0;
    }
    if (h->job_id != atomic_load(&w->job_id) || !same_spec(w, wel))
        return lp_fail(err, "%s serves a different job (job id %016llx, ours %016llx)", s->endpoint,
                       (unsigned long long)h->job_id, (unsigned long long)atomic_load(&w->job_id));
    return 0;
}

/* Continue the data where the servers' trainer state says this rank is. */
static void take_data_position(worker *w, int k, const Loraps__Welcome *wel) {
    uint64_t per_rank = (uint64_t)w->job.micro_batch * (uint64_t)w->job.grad_accum;
    uint64_t natural =
        wel->start_step * per_rank * (uint64_t)w->job.workers + (uint64_t)w->cfg.rank * per_rank;
    int64_t offset = (int64_t)(wel->data_position - natural);
    if (offset != w->data_offset || (k == 0 && wel->start_step > 0))
        worker_log(w, "data continues at sequence %llu (step %llu)",
                   (unsigned long long)wel->data_position, (unsigned long long)wel->start_step);
    w->data_offset = offset;
}

static int take_welcome(worker *w, int k, const Loraps__Header *h, uint64_t *start, lp_err *err) {
    const Loraps__Welcome *wel = h->welcome;
    worker_shard *s = &w->shards[k];
    if (check_shard_map(w, k, wel, err) < 0 || take_job(w, s, h, err) < 0) return -1;
    if (s->instance && s->instance != wel->instance)
        worker_log(w, "%s restarted (now at version %llu); joining it again", s->endpoint,
                   (unsigned long long)wel->version);
    s->instance = wel->instance;
    s->shard = (int)wel->shard;
    atomic_store(&s->worker_id, wel->worker_id);
    atomic_store(&s->last_ok_ms, wire_now_ms());
    atomic_store(&s->rejoin, 0);
    *start = wel->start_step;
    take_data_position(w, k, wel);
    return bind_tensors(w, s, err);
}

static int send_hello(worker *w, worker_shard *s, lp_err *err) {
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    Loraps__Hello hello = LORAPS__HELLO__INIT;
    hdr.body_case = LORAPS__HEADER__BODY_HELLO;
    hdr.hello = &hello;
    hello.fingerprint = w->fingerprint;
    hello.rank = (uint32_t)w->cfg.rank;
    hello.host = host;
    hello.pid = (uint32_t)getpid();
    return wire_send_header(s->sock, NULL, 0, &hdr, &w->net, err);
}

/* What one reply to a Hello settles: WN_OK (joined), WN_DONE, WN_FATAL, or NO_ANSWER. */
static int take_hello_reply(worker *w, int k, const wire_msg *m, uint64_t *start, lp_err *err) {
    if (m->hdr->body_case == LORAPS__HEADER__BODY_WELCOME)
        return take_welcome(w, k, m->hdr, start, err) < 0 ? WN_FATAL : WN_OK;
    if (m->hdr->body_case != LORAPS__HEADER__BODY_ERROR) return NO_ANSWER;
    const Loraps__Error *e = m->hdr->error;
    if (e->code == LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN) return WN_DONE;
    if (!is_fatal_code(e->code)) return NO_ANSWER;
    lp_fail(err, "%s refused us: %s", w->shards[k].endpoint, e->message);
    return WN_FATAL;
}

/* One Hello, and up to a second for its answer. */
static int hello_round(worker *w, int k, uint64_t *start, lp_err *err) {
    worker_shard *s = &w->shards[k];
    if (open_socket(w, s, err) < 0 || send_hello(w, s, err) < 0) return WN_FATAL;
    zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
    int64_t until = wire_now_ms() + 1000;
    while (!worker_stop_signal() && wire_now_ms() < until) {
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        wire_msg m;
        Loraps__ErrorCode code;
        int r = wire_recv(s->sock, 0, &m, &w->net, &code, err), rc = NO_ANSWER;
        if (r == WIRE_FATAL || r == WIRE_BAD)
            rc = WN_FATAL;
        else if (r == WIRE_OK)
            rc = take_hello_reply(w, k, &m, start, err);
        wire_msg_close(&m);
        if (rc != NO_ANSWER) return rc;
    }
    return NO_ANSWER;
}

/* Gave up: a server never reached, or one that was there and stopped answering. */
static int unreachable(const worker *w, const worker_shard *s, int64_t now, lp_err *err) {
    int timeout_s = w->cfg.connect_timeout_ms / 1000;
    int64_t last = atomic_load(&s->last_ok_ms);
    if (!last) return lp_fail(err, "%s: no Welcome in %d s", s->endpoint, timeout_s);
    return lp_fail(err,
                   "%s: server unreachable: no answer for %.0f s, and no Welcome in %d s of "
                   "joining again (--connect-timeout)",
                   s->endpoint, (double)(now - last) / 1000.0, timeout_s);
}

int worker_join(worker *w, int k, uint64_t *start_step, lp_err *err) {
    worker_shard *s = &w->shards[k];
    int64_t begin = wire_now_ms(), last_note = begin;
    atomic_store(&s->worker_id, 0);
    while (!worker_stop_signal()) {
        int rc = hello_round(w, k, start_step, err);
        if (rc != NO_ANSWER) return rc;
        int64_t now = wire_now_ms();
        if (now - begin > w->cfg.connect_timeout_ms) return unreachable(w, s, now, err), WN_FATAL;
        if (now - last_note > 5000) {
            worker_log(w, "still waiting for %s", s->endpoint);
            last_note = now;
        }
    }
    return WN_STOP;
}

static const char *rejoin_reason(const worker_shard *s, int lost) {
    switch (atomic_load(&s->rejoin)) {
    case WORKER_REJOIN_DISCONNECTED:
        return "the connection dropped (the server restarted or went away)";
    case WORKER_REJOIN_SOCKET_CLOSED:
        return "its socket was closed";
    case WORKER_REJOIN_NOT_MEMBER:
        return "not a member any more";
    }
    return lost ? "no answer within the heartbeat timeout" : "not a member any more";
}

int worker_rejoin_lost(worker *w, uint64_t *start_step, lp_err *err) {
    int64_t now = wire_now_ms();
    uint64_t start = 0;
    int any = 0;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        int lost = now - atomic_load(&s->last_ok_ms) > w->job.heartbeat_timeout_ms;
        if (!atomic_load(&s->rejoin) && !lost && atomic_load(&s->worker_id) && s->sock) continue;
        worker_log(w, "%s: %s; joining again", s->endpoint, rejoin_reason(s, lost));
        uint64_t st;
        int rc = worker_join(w, k, &st, err);
        if (rc != WN_OK) return rc;
        if (!any || st > start) start = st;
        any = 1;
    }
    if (any) *start_step = start;
    return WN_OK;
}

/* ---- exchanges ------------------------------------------------------------------------------ */

static int take_error(worker *w, worker_shard *s, const Loraps__Error *e, lp_err *err) {
    if (e->code == LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN) return WN_DONE;
    if (e->code == LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER ||
        e->code == LORAPS__ERROR_CODE__ERR_STEP) {
        worker_log(w, "%s: %s: %s", s->endpoint, wire_error_name(e->code), e->message);
        atomic_store(&s->rejoin, WORKER_REJOIN_NOT_MEMBER);
        return WN_REJOIN;
    }
    lp_fail(err, "%s: %s: %s", s->endpoint, wire_error_name(e->code), e->message);
    return WN_FATAL;
}

static int take_params(worker *w, worker_shard *s, wire_msg *m, lp_err *err) {
    s->version = m->hdr->params->version;
    s->done = m->hdr->params->done;
    if (!s->done) {
        wire_expect e = {s->n, s->index, s->numel, w->wire_dtype};
        Loraps__ErrorCode code;
        if (wire_check_frames(m, &e, &code, err) < 0)
            return lp_wrap(err, "%s: Params", s->endpoint), WN_FATAL;
        if (!wire_frames_finite(m))
            return lp_fail(err, "%s: Params with NaN or Inf", s->endpoint), WN_FATAL;
        wire_frames_apply(m, &e, s->param_ptr, 1.0f, 0);
    }
    s->replied = 1;
    return WN_OK;
}

static int handle_reply(worker *w, int k, wire_msg *m, int want, lp_err *err) {
    worker_shard *s = &w->shards[k];
    Loraps__Header *h = m->hdr;
    atomic_store(&s->last_ok_ms, wire_now_ms());
    if (h->body_case == LORAPS__HEADER__BODY_ERROR) return take_error(w, s, h->error, err);
    if ((int)h->body_case != want || s->replied) return WN_OK; /* a late or repeated reply */
    if (want == LORAPS__HEADER__BODY_PARAMS) return take_params(w, s, m, err);
    s->ack_status = h->ack->status;
    s->version = h->ack->version;
    s->replied = 1;
    return WN_OK;
}

/* Every reply waiting on shard k's socket; the first result other than WN_OK. */
static int drain_replies(worker *w, int k, int want, lp_err *err) {
    int result = WN_OK;
    for (;;) {
        wire_msg m;
        Loraps__ErrorCode code;
        int r = wire_recv(w->shards[k].sock, 0, &m, &w->net, &code, err), rc = WN_OK;
        if (r == WIRE_NONE || r == WIRE_FATAL) {
            wire_msg_close(&m);
            return r == WIRE_FATAL ? WN_FATAL : result;
        }
        if (r == WIRE_OK)
            rc = handle_reply(w, k, &m, want, err);
        else
            worker_log(w, "%s: unreadable reply: %s", w->shards[k].endpoint, err->msg);
        wire_msg_close(&m);
        if (rc == WN_FATAL) return rc;
        if (rc != WN_OK && result == WN_OK) result = rc;
    }
}

/* A shard told us to join again, or has not answered within the heartbeat timeout. */
static int any_shard_lost(worker *w) {
    int64_t now = wire_now_ms();
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        if (atomic_load(&s->rejoin)) return 1;
        if (now - atomic_load(&s->last_ok_ms) > w->job.heartbeat_timeout_ms) return 1;
    }
    return 0;
}

/* Waits for one reply of kind `want` from every shard. */
static int wait_all(worker *w, int want, lp_err *err) {
    int n = w->cfg.n_servers;
    zmq_pollitem_t items[n];
    for (;;) {
        int pending = 0;
        for (int k = 0; k < n; k++) {
            items[k] = (zmq_pollitem_t){w->shards[k].sock, 0, ZMQ_POLLIN, 0};
            pending += !w->shards[k].replied;
        }
        if (!pending) return WN_OK;
        if (worker_stop_signal()) return WN_STOP;
        zmq_poll(items, n, 100);
        int result = WN_OK;
        for (int k = 0; k < n && result != WN_FATAL; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            int rc = drain_replies(w, k, want, err);
            if (rc == WN_FATAL || result == WN_OK) result = rc;
        }
        if (result != WN_OK) return result;
        if (any_shard_lost(w)) return WN_REJOIN;
    }
}

/* An exchange starts only when every shard's membership is good: none flagged for joining again
 * (a request carrying an old instance's worker id could pass for another rank's), and every
 * socket open (worker_grads.c may have closed one). */
static int ready_for_exchange(const worker *w) {
    for (int k = 0; k < w->cfg.n_servers; k++)
        if (!w->shards[k].sock || atomic_load(&w->shards[k].rejoin)) return 0;
    return 1;
}

int worker_pull_all(worker *w, uint64_t version, uint64_t step, lp_err *err) {
    if (!ready_for_exchange(w)) return WN_REJOIN;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Pull p = LORAPS__PULL__INIT;
        hdr.job_id = atomic_load(&w->job_id);
        hdr.body_case = LORAPS__HEADER__BODY_PULL;
        hdr.pull = &p;
        p.worker_id = atomic_load(&s->worker_id);
        p.version = version;
        p.step = step;
        s->replied = 0;
        s->done = 0;
        if (wire_send_header(s->sock, NULL, 0, &hdr, &w->net, err) < 0) return WN_REJOIN;
    }
    return wait_all(w, LORAPS__HEADER__BODY_PARAMS, err);
}

/* Shard s's push; its gradient frames go out zero-copy, counted while libzmq holds them. */
static int send_push(worker *w, worker_shard *s, Loraps__Push *p, lp_err *err) {
    Loraps__Header hdr = LORAPS__HEADER__INIT;
    hdr.job_id = atomic_load(&w->job_id);
    hdr.body_case = LORAPS__HEADER__BODY_PUSH;
    hdr.push = p;
    p->worker_id = atomic_load(&s->worker_id);
    wire_src src[s->n ? s->n : 1];
    for (int t = 0; t < s->n; t++) src[t] = (wire_src){s->index[t], s->numel[t], s->grad_ptr[t]};
    wire_owner owner = worker_grads_owner(s);
    wire_send_opts o = {
        .src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32, .wire_dtype = w->wire_dtype, .owner = &owner};
    s->replied = 0;
    return wire_send(s->sock, &hdr, src, s->n, &o, &w->net, err);
}

int worker_push_all(worker *w, const worker_push *push, lp_err *err) {
    if (!ready_for_exchange(w)) return WN_REJOIN;
    Loraps__EvalResult ev = LORAPS__EVAL_RESULT__INIT;
    Loraps__Push p = LORAPS__PUSH__INIT;
    p.step = push->step;
    p.base_version = push->base_version;
    p.n_tokens = push->n_tokens;
    p.loss_sum = push->loss_sum;
    p.kind = LORAPS__UPDATE_KIND__UPDATE_GRADIENT;
    p.grad_sum_sq = push->grad_sum_sq;
    p.bytes_sent = w->net.bytes_sent + atomic_load(&w->hb.bytes);
    p.bytes_received = w->net.bytes_received;
    p.compute_seconds = push->compute_seconds;
    p.data_id = worker_data_id(w->data);
    if (push->eval) {
        ev.n_tokens = push->eval->n_tokens;
        ev.loss_sum = push->eval->loss_sum;
        ev.n_sequences = push->eval->n_sequences;
        p.eval = &ev;
    }
    for (int k = 0; k < w->cfg.n_servers; k++)
        if (send_push(w, &w->shards[k], &p, err) < 0) return WN_REJOIN;
    return wait_all(w, LORAPS__HEADER__BODY_ACK, err);
}

void worker_bye_all(worker *w) {
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        if (!s->sock || !atomic_load(&s->worker_id)) continue;
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Bye b = LORAPS__BYE__INIT;
        hdr.job_id = atomic_load(&w->job_id);
        hdr.body_case = LORAPS__HEADER__BODY_BYE;
        hdr.bye = &b;
        b.worker_id = atomic_load(&s->worker_id);
        int linger = 500;
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
        wire_send_header(s->sock, NULL, 0, &hdr, &w->net, NULL);
    }
}
