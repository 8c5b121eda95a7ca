/* Errors: library code returns a status and fills in an lp_err; only a main() prints and exits. */
#ifndef LORAPS_ERROR_H
#define LORAPS_ERROR_H

typedef struct lp_err {
    char msg[1024];
} lp_err;

/* Formats a message into err (which may be NULL) and returns -1, so callers can write
 * `return lp_fail(err, "...", ...);`. */
int lp_fail(lp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends context to an existing message: "<context>: <old message>". Returns -1. */
int lp_wrap(lp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
