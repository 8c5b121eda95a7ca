/* Message checks and rejections. */
#include "ps_validate.h"

#include "ps_log.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

void ps_validate_init(ps_validate *v, int shard, ps_net *net, ps_security *security) {
    memset(v, 0, sizeof *v);
    v->shard = shard;
    v->net = net;
    v->security = security;
    v->log_window_ms = wire_now_ms();
}

const char *ps_body_name(const Loraps__Header *h) {
    if (!h) return "unparsable message";
    switch (h->body_case) {
    case LORAPS__HEADER__BODY_HELLO:
        return "Hello";
    case LORAPS__HEADER__BODY_WELCOME:
        return "Welcome";
    case LORAPS__HEADER__BODY_PULL:
        return "Pull";
    case LORAPS__HEADER__BODY_PARAMS:
        return "Params";
    case LORAPS__HEADER__BODY_PUSH:
        return "Push";
    case LORAPS__HEADER__BODY_ACK:
        return "Ack";
    case LORAPS__HEADER__BODY_HEARTBEAT:
        return "Heartbeat";
    case LORAPS__HEADER__BODY_BYE:
        return "Bye";
    case LORAPS__HEADER__BODY_ERROR:
        return "Error";
    case LORAPS__HEADER__BODY_NORM_SHARE:
        return "NormShare";
    case LORAPS__HEADER__BODY_SHARD_STATE:
        return "ShardState";
    default:
        return "message without a body";
    }
}

/* At most 20 lines a second; the rest are counted and the count is logged. */
static void log_rejection(ps_validate *v, const wire_msg *m, Loraps__ErrorCode code,
                          const char *why) {
    int64_t now = wire_now_ms();
    if (now - v->log_window_ms >= 1000) {
        if (v->log_suppressed)
            ps_log(v->shard, "(%llu more rejections not logged)",
                   (unsigned long long)v->log_suppressed);
        v->log_suppressed = 0;
        v->log_window_ms = now;
        v->log_in_window = 0;
    }
    if (v->log_in_window++ < 20)
        ps_log(v->shard, "rejected %s: %s: %s", ps_body_name(m->hdr), wire_error_name(code), why);
    else
        v->log_suppressed++;
}

int ps_reject(ps_validate *v, const wire_msg *m, Loraps__ErrorCode code, const char *fmt, ...) {
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    v->rejected_total++;
    v->rejected[(unsigned)code < 32 ? code : 0]++;
    ps_security_on_reject(v->security, m); /* --reject-limit */
    if (m->routing_len)
        wire_send_error(v->net->router, m->routing, m->routing_len, v->net->job_id, code, why,
                        &v->net->bytes);
    log_rejection(v, m, code, why);
    return 0;
}

int ps_check_header(ps_validate *v, const wire_msg *m) {
    const Loraps__Header *h = m->hdr;
    if (h->protocol != WIRE_PROTOCOL) {
        ps_reject(v, m, LORAPS__ERROR_CODE__ERR_PROTOCOL, "protocol %u, this server speaks %u",
                  h->protocol, WIRE_PROTOCOL);
        return -1;
    }
    int hello = h->body_case == LORAPS__HEADER__BODY_HELLO;
    uint64_t job_id = v->net->job_id;
    if (h->job_id != job_id && !(hello && h->job_id == 0)) {
        ps_reject(v, m, LORAPS__ERROR_CODE__ERR_JOB, "job %016llx, this server runs job %016llx",
                  (unsigned long long)h->job_id, (unsigned long long)job_id);
        return -1;
    }
    return 0;
}

int ps_check_tensors(const ps_adapter *a, const wire_msg *m, Loraps__WireDtype dtype, int piece,
                     int *frame_pos, int *n_tensors, Loraps__ErrorCode *code, lp_err *err) {
    wire_expect e = {a->n, a->index, a->numel, dtype};
    if (wire_check_piece(m, &e, frame_pos, n_tensors, code, err) < 0) return -1;
    if (!piece && *n_tensors != a->n) {
        *code = LORAPS__ERROR_CODE__ERR_SHAPE;
        return lp_fail(err, "%d of this shard's %d tensors came", *n_tensors, a->n);
    }
    if (!wire_frames_finite(m)) {
        *code = LORAPS__ERROR_CODE__ERR_NONFINITE;
        return lp_fail(err, "NaN or Inf in the tensors");
    }
    return 0;
}

int ps_check_push_numbers(const job *j, const Loraps__Push *p, Loraps__ErrorCode *code,
                          lp_err *err) {
    uint64_t max_tokens = (uint64_t)j->micro_batch * (uint64_t)j->grad_accum * (uint64_t)j->seq_len;
    if (p->n_tokens == 0 || p->n_tokens > max_tokens) {
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        return lp_fail(err, "%llu tokens; a step has 1..%llu", (unsigned long long)p->n_tokens,
                       (unsigned long long)max_tokens);
    }
    if (!isfinite(p->loss_sum) || p->loss_sum < 0 || !isfinite(p->grad_sum_sq) ||
        p->grad_sum_sq < 0 || !isfinite(p->compute_seconds)) {
        *code = LORAPS__ERROR_CODE__ERR_NONFINITE;
        return lp_fail(err, "loss %g, gradient sum of squares %g", p->loss_sum, p->grad_sum_sq);
    }
    return 0;
}

int ps_check_push_eval(const job *j, const Loraps__Push *p, Loraps__ErrorCode *code, lp_err *err) {
    const Loraps__EvalResult *ev = p->eval;
    if (!ev) return 0;
    uint64_t max_seqs = 1ull << 32;
    if (j->eval_every <= 0 || p->step % (uint64_t)j->eval_every != 0) {
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        return lp_fail(err, "a validation result at step %llu; the job validates every %d steps",
                       (unsigned long long)p->step, j->eval_every);
    }
    if (!isfinite(ev->loss_sum) || ev->loss_sum < 0 || (ev->n_tokens == 0 && ev->loss_sum) ||
        ev->loss_sum > 1e4 * (double)ev->n_tokens) {
        *code = LORAPS__ERROR_CODE__ERR_NONFINITE;
        return lp_fail(err, "validation loss sum %g over %llu tokens", ev->loss_sum,
                       (unsigned long long)ev->n_tokens);
    }
    if (ev->n_sequences > max_seqs || ev->n_tokens > ev->n_sequences * (uint64_t)j->seq_len) {
        *code = LORAPS__ERROR_CODE__ERR_MALFORMED;
        return lp_fail(err, "validation: %llu tokens in %llu sequences of %d",
                       (unsigned long long)ev->n_tokens, (unsigned long long)ev->n_sequences,
                       j->seq_len);
    }
    return 0;
}
