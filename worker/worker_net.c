/* The worker's side of the protocol: joining, the parallel pull and push exchanges with every
 * shard, heartbeats, and noticing lost servers. */
#include "worker.h"

#include "curve_auth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int open_socket(worker *w, worker_shard *s, lp_err *err) {
    if (s->sock) zmq_close(s->sock); /* linger 0: a stale request must not reach a new server */
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

static int take_welcome(worker *w, int k, const Loraps__Header *h, uint64_t *start, lp_err *err) {
    const Loraps__Welcome *wel = h->welcome;
    worker_shard *s = &w->shards[k];
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
    if (!w->joined) {
        if (worker_setup_from_welcome(w, wel, h->job_id, err) < 0) return -1;
        w->joined = 1;
    } else if (h->job_id != atomic_load(&w->job_id) || !same_spec(w, wel)) {
        return lp_fail(err, "%s serves a different job (job id %016llx, ours %016llx)", s->endpoint,
                       (unsigned long long)h->job_id, (unsigned long long)atomic_load(&w->job_id));
    }
    if (s->instance && s->instance != wel->instance)
        worker_log(w, "%s restarted (now at version %llu); joining it again", s->endpoint,
                   (unsigned long long)wel->version);
    s->instance = wel->instance;
    s->shard = (int)wel->shard;
    atomic_store(&s->worker_id, wel->worker_id);
    atomic_store(&s->last_ok_ms, wire_now_ms());
    atomic_store(&s->rejoin, 0);
    *start = wel->start_step;
    /* Continue the data where the servers' trainer state says this rank is. */
    uint64_t per_rank = (uint64_t)w->job.micro_batch * (uint64_t)w->job.grad_accum;
    uint64_t natural =
        wel->start_step * per_rank * (uint64_t)w->job.workers + (uint64_t)w->cfg.rank * per_rank;
    int64_t offset = (int64_t)(wel->data_position - natural);
    if (offset != w->data_offset || (k == 0 && wel->start_step > 0))
        worker_log(w, "data continues at sequence %llu (step %llu)",
                   (unsigned long long)wel->data_position, (unsigned long long)wel->start_step);
    w->data_offset = offset;
    return bind_tensors(w, s, err);
}

int worker_join(worker *w, int k, uint64_t *start_step, lp_err *err) {
    worker_shard *s = &w->shards[k];
    int64_t begin = wire_now_ms(), last_note = begin;
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    atomic_store(&s->worker_id, 0);
    while (!worker_stop) {
        if (open_socket(w, s, err) < 0) return WN_FATAL;
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Hello hello = LORAPS__HELLO__INIT;
        hdr.body_case = LORAPS__HEADER__BODY_HELLO;
        hdr.hello = &hello;
        hello.fingerprint = w->fingerprint;
        hello.rank = (uint32_t)w->cfg.rank;
        hello.host = host;
        hello.pid = (uint32_t)getpid();
        if (wire_send_header(s->sock, NULL, 0, &hdr, &w->net, err) < 0) return WN_FATAL;
        zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
        int64_t until = wire_now_ms() + 1000;
        while (!worker_stop && wire_now_ms() < until) {
            if (zmq_poll(&it, 1, 100) <= 0) continue;
            wire_msg m;
            Loraps__ErrorCode code;
            int r = wire_recv(s->sock, 0, &m, &w->net, &code, err);
            if (r == WIRE_NONE) {
                wire_msg_close(&m);
                continue;
            }
            if (r != WIRE_OK) {
                wire_msg_close(&m);
                return WN_FATAL;
            }
            int rc = -2;
            if (m.hdr->body_case == LORAPS__HEADER__BODY_WELCOME) {
                rc = take_welcome(w, k, m.hdr, start_step, err) < 0 ? WN_FATAL : WN_OK;
            } else if (m.hdr->body_case == LORAPS__HEADER__BODY_ERROR) {
                const Loraps__Error *e = m.hdr->error;
                if (e->code == LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN)
                    rc = WN_DONE;
                else if (is_fatal_code(e->code)) {
                    lp_fail(err, "%s refused us: %s", s->endpoint, e->message);
                    rc = WN_FATAL;
                }
            }
            wire_msg_close(&m);
            if (rc != -2) return rc;
        }
        int64_t now = wire_now_ms();
        if (now - begin > w->cfg.connect_timeout_ms) {
            lp_fail(err, "%s: no Welcome in %d s", s->endpoint, w->cfg.connect_timeout_ms / 1000);
            return WN_FATAL;
        }
        if (now - last_note > 5000) {
            worker_log(w, "still waiting for %s", s->endpoint);
            last_note = now;
        }
    }
    return WN_STOP;
}

int worker_rejoin_lost(worker *w, uint64_t *start_step, lp_err *err) {
    int64_t now = wire_now_ms();
    uint64_t start = 0;
    int any = 0;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        int lost = now - atomic_load(&s->last_ok_ms) > w->job.heartbeat_timeout_ms;
        if (!atomic_load(&s->rejoin) && !lost && atomic_load(&s->worker_id)) continue;
        worker_log(w, "%s: %s; joining again", s->endpoint,
                   lost ? "no answer within the heartbeat timeout" : "not a member any more");
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

static int handle_reply(worker *w, int k, wire_msg *m, int want, lp_err *err) {
    worker_shard *s = &w->shards[k];
    Loraps__Header *h = m->hdr;
    atomic_store(&s->last_ok_ms, wire_now_ms());
    if (h->body_case == LORAPS__HEADER__BODY_ERROR) {
        Loraps__ErrorCode c = h->error->code;
        if (c == LORAPS__ERROR_CODE__ERR_SHUTTING_DOWN) return WN_DONE;
        if (c == LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER || c == LORAPS__ERROR_CODE__ERR_STEP) {
            worker_log(w, "%s: %s: %s", s->endpoint, wire_error_name(c), h->error->message);
            atomic_store(&s->rejoin, 1);
            return WN_REJOIN;
        }
        lp_fail(err, "%s: %s: %s", s->endpoint, wire_error_name(c), h->error->message);
        return WN_FATAL;
    }
    if ((int)h->body_case != want || s->replied) return WN_OK; /* a late or repeated reply */
    if (want == LORAPS__HEADER__BODY_ACK) {
        s->ack_status = h->ack->status;
        s->version = h->ack->version;
        s->replied = 1;
        return WN_OK;
    }
    s->version = h->params->version;
    s->done = h->params->done;
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
        if (worker_stop) return WN_STOP;
        zmq_poll(items, n, 100);
        int result = WN_OK;
        for (int k = 0; k < n; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            for (;;) {
                wire_msg m;
                Loraps__ErrorCode code;
                int r = wire_recv(w->shards[k].sock, 0, &m, &w->net, &code, err);
                if (r == WIRE_NONE) {
                    wire_msg_close(&m);
                    break;
                }
                if (r == WIRE_FATAL) {
                    wire_msg_close(&m);
                    return WN_FATAL;
                }
                if (r != WIRE_OK) {
                    worker_log(w, "%s: unreadable reply: %s", w->shards[k].endpoint, err->msg);
                    wire_msg_close(&m);
                    continue;
                }
                int rc = handle_reply(w, k, &m, want, err);
                wire_msg_close(&m);
                if (rc == WN_FATAL) return rc;
                if (rc != WN_OK && result == WN_OK) result = rc;
            }
        }
        if (result != WN_OK) return result;
        int64_t now = wire_now_ms();
        for (int k = 0; k < n; k++) {
            worker_shard *s = &w->shards[k];
            if (atomic_load(&s->rejoin)) return WN_REJOIN;
            if (now - atomic_load(&s->last_ok_ms) > w->job.heartbeat_timeout_ms) return WN_REJOIN;
        }
    }
}

int worker_pull_all(worker *w, uint64_t version, uint64_t step, lp_err *err) {
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

static void inflight_ref(void *hint) {
    atomic_fetch_add((atomic_int *)hint, 1);
}

static void inflight_unref(void *data, void *hint) {
    (void)data;
    atomic_fetch_sub((atomic_int *)hint, 1);
}

void worker_wait_inflight(worker *w) {
    for (int i = 0; i < 100000 && atomic_load(&w->inflight) > 0; i++) sleep_ms(0 + 1);
}

int worker_push_all(worker *w, uint64_t step, uint64_t base_version, uint64_t n_tokens,
                    double loss_sum, double grad_ss, double compute_s, const val_result *eval,
                    lp_err *err) {
    Loraps__EvalResult ev = LORAPS__EVAL_RESULT__INIT;
    if (eval) {
        ev.n_tokens = eval->n_tokens;
        ev.loss_sum = eval->loss_sum;
        ev.n_sequences = eval->n_sequences;
    }
    wire_owner owner = {inflight_ref, inflight_unref, &w->inflight};
    uint64_t sent = w->net.bytes_sent + atomic_load(&w->hb_bytes);
    uint64_t recv = w->net.bytes_received;
    for (int k = 0; k < w->cfg.n_servers; k++) {
        worker_shard *s = &w->shards[k];
        Loraps__Header hdr = LORAPS__HEADER__INIT;
        Loraps__Push p = LORAPS__PUSH__INIT;
        hdr.job_id = atomic_load(&w->job_id);
        hdr.body_case = LORAPS__HEADER__BODY_PUSH;
        hdr.push = &p;
        p.worker_id = atomic_load(&s->worker_id);
        p.step = step;
        p.base_version = base_version;
        p.n_tokens = n_tokens;
        p.loss_sum = loss_sum;
        p.kind = LORAPS__UPDATE_KIND__UPDATE_GRADIENT;
        p.grad_sum_sq = grad_ss;
        p.bytes_sent = sent;
        p.bytes_received = recv;
        p.compute_seconds = compute_s;
        if (eval) p.eval = &ev;
        p.data_id = worker_data_id(w->data);
        wire_src src[s->n ? s->n : 1];
        for (int t = 0; t < s->n; t++)
            src[t] = (wire_src){s->index[t], s->numel[t], s->grad_ptr[t]};
        wire_send_opts o = {.src_dtype = LORAPS__WIRE_DTYPE__WIRE_F32,
                            .wire_dtype = w->wire_dtype,
                            .owner = &owner};
        s->replied = 0;
        if (wire_send(s->sock, &hdr, src, s->n, &o, &w->net, err) < 0) return WN_REJOIN;
    }
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

/* ---- heartbeats ----------------------------------------------------------------------------- */

static void *heartbeat_main(void *arg) {
    worker *w = arg;
    int n = w->cfg.n_servers;
    void *socks[n];
    uint64_t sent_id[n];
    zmq_pollitem_t items[n];
    wire_counters c = {0};
    for (int k = 0; k < n; k++) {
        socks[k] = zmq_socket(w->ctx, ZMQ_DEALER);
        wire_socket_setup(socks[k], 0, NULL);
        curve_client_setup(socks[k], NULL);
        zmq_connect(socks[k], w->shards[k].endpoint);
        sent_id[k] = 0;
        items[k] = (zmq_pollitem_t){socks[k], 0, ZMQ_POLLIN, 0};
    }
    int64_t next = 0;
    while (!atomic_load(&w->hb_stop)) {
        int64_t now = wire_now_ms();
        if (now >= next) {
            for (int k = 0; k < n; k++) {
                uint64_t id = atomic_load(&w->shards[k].worker_id);
                if (!id) continue;
                Loraps__Header hdr = LORAPS__HEADER__INIT;
                Loraps__Heartbeat hb = LORAPS__HEARTBEAT__INIT;
                hdr.job_id = atomic_load(&w->job_id);
                hdr.body_case = LORAPS__HEADER__BODY_HEARTBEAT;
                hdr.heartbeat = &hb;
                hb.worker_id = id;
                hb.step = 0;
                wire_send_header(socks[k], NULL, 0, &hdr, &c, NULL);
                sent_id[k] = id;
            }
            next = now + w->job.heartbeat_ms;
        }
        if (zmq_poll(items, n, 50) <= 0) continue;
        for (int k = 0; k < n; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            wire_msg m;
            Loraps__ErrorCode code;
            while (wire_recv(socks[k], 0, &m, &c, &code, NULL) != WIRE_NONE) {
                if (m.hdr && m.hdr->body_case == LORAPS__HEADER__BODY_HEARTBEAT)
                    atomic_store(&w->shards[k].last_ok_ms, wire_now_ms());
                else if (m.hdr && m.hdr->body_case == LORAPS__HEADER__BODY_ERROR &&
                         m.hdr->error->code == LORAPS__ERROR_CODE__ERR_UNKNOWN_WORKER &&
                         atomic_load(&w->shards[k].worker_id) == sent_id[k])
                    atomic_store(&w->shards[k].rejoin, 1);
                wire_msg_close(&m);
            }
            wire_msg_close(&m);
        }
        atomic_store(&w->hb_bytes, c.bytes_sent + c.bytes_received);
    }
    for (int k = 0; k < n; k++) zmq_close(socks[k]);
    return NULL;
}

int worker_heartbeat_start(worker *w, lp_err *err) {
    atomic_store(&w->hb_stop, 0);
    if (pthread_create(&w->hb_thread, NULL, heartbeat_main, w) != 0)
        return lp_fail(err, "cannot start the heartbeat thread");
    w->hb_started = 1;
    return 0;
}

void worker_heartbeat_stop(worker *w) {
    if (!w->hb_started) return;
    atomic_store(&w->hb_stop, 1);
    pthread_join(w->hb_thread, NULL);
    w->hb_started = 0;
}
