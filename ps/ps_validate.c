/* Message checks. A bad message is answered with an Error, logged (rate-limited, so a flood of
 * garbage cannot flood the log) and counted; it never changes the server's state. */
#include "ps.h"

#include <stdarg.h>
#include <string.h>

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

int ps_reject(ps *s, const wire_msg *m, Loraps__ErrorCode code, const char *fmt, ...) {
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    s->count.rejected_total++;
    s->count.rejected[(unsigned)code < 32 ? code : 0]++;
    ps_security_on_reject(s, m); /* --reject-limit */
    if (m->routing_len)
        wire_send_error(s->router, m->routing, m->routing_len, s->job_id, code, why, &s->net);
    int64_t now = wire_now_ms();
    if (now - s->log_window_ms >= 1000) {
        if (s->count.log_suppressed)
            ps_log(s, "(%llu more rejections not logged)",
                   (unsigned long long)s->count.log_suppressed);
        s->count.log_suppressed = 0;
        s->log_window_ms = now;
        s->log_in_window = 0;
    }
    if (s->log_in_window++ < 20)
        ps_log(s, "rejected %s: %s: %s", ps_body_name(m->hdr), wire_error_name(code), why);
    else
        s->count.log_suppressed++;
    return 0;
}

int ps_check_header(ps *s, const wire_msg *m) {
    const Loraps__Header *h = m->hdr;
    if (h->protocol != WIRE_PROTOCOL) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_PROTOCOL, "protocol %u, this server speaks %u",
                  h->protocol, WIRE_PROTOCOL);
        return -1;
    }
    int hello = h->body_case == LORAPS__HEADER__BODY_HELLO;
    if (h->job_id != s->job_id && !(hello && h->job_id == 0)) {
        ps_reject(s, m, LORAPS__ERROR_CODE__ERR_JOB, "job %016llx, this server runs job %016llx",
                  (unsigned long long)h->job_id, (unsigned long long)s->job_id);
        return -1;
    }
    return 0;
}

int ps_check_tensors(ps *s, const wire_msg *m, int shard, Loraps__WireDtype dtype,
                     Loraps__ErrorCode *code, lp_err *err) {
    uint32_t idx[s->spec.n ? s->spec.n : 1];
    size_t numel[s->spec.n ? s->spec.n : 1];
    int n = shard_map_tensors(&s->map, shard, idx);
    for (int t = 0; t < n; t++) numel[t] = s->spec.numel[idx[t]];
    wire_expect e = {n, idx, numel, dtype};
    if (wire_check_frames(m, &e, code, err) < 0) return -1;
    if (!wire_frames_finite(m)) {
        *code = LORAPS__ERROR_CODE__ERR_NONFINITE;
        return lp_fail(err, "NaN or Inf in the tensors");
    }
    return 0;
}
