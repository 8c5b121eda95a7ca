/* Message checks. A bad message is answered with an Error, logged (rate-limited, so a flood of
 * garbage cannot flood the log) and counted; it never changes the server's state. */
#ifndef LORAPS_PS_VALIDATE_H
#define LORAPS_PS_VALIDATE_H

#include "job.h"
#include "ps_adapters.h"
#include "ps_net.h"
#include "ps_security.h"
#include "wire.h"

typedef struct ps_validate {
    int shard;
    ps_net *net;
    ps_security *security; /* --reject-limit counts every rejection */
    uint64_t rejected[32]; /* by error code */
    uint64_t rejected_total;
    uint64_t log_suppressed;
    int64_t log_window_ms;
    int log_in_window;
} ps_validate;

/* The log's rate window starts now. */
void ps_validate_init(ps_validate *v, int shard, ps_net *net, ps_security *security);
/* Rejects a message: Error reply, log line, counter. Returns 0 so handlers can return it. */
int ps_reject(ps_validate *v, const wire_msg *m, Loraps__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Protocol version and job id; Hello may carry job id 0. Returns 0 if fine, else rejected. */
int ps_check_header(ps_validate *v, const wire_msg *m);
const char *ps_body_name(const Loraps__Header *h);
/* The frames of a push against adapter a's tensors on this shard: each whole, in order, all of
 * them unless `piece`, finite. frame_pos ([n_frames]) gets each frame's tensor position on the
 * shard, n_tensors how many tensors came. */
int ps_check_tensors(const ps_adapter *a, const wire_msg *m, Loraps__WireDtype dtype, int piece,
                     int *frame_pos, int *n_tensors, Loraps__ErrorCode *code, lp_err *err);
/* A push's token count and its loss and norm (finite, in range). */
int ps_check_push_numbers(const job *j, const Loraps__Push *p, Loraps__ErrorCode *code,
                          lp_err *err);
/* A push's validation result, if it carries one. */
int ps_check_push_eval(const job *j, const Loraps__Push *p, Loraps__ErrorCode *code, lp_err *err);

#endif
