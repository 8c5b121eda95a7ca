#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lp_fail(lp_err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int lp_wrap(lp_err *err, const char *fmt, ...) {
    if (!err) return -1;
    char context[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", context, old);
    return -1;
}
