/* loraps-ps: diagnostic lines on stderr. */
#include "ps_log.h"

#include <stdarg.h>
#include <stdio.h>

void ps_log(int shard, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loraps-ps[%d]: %s\n", shard, msg);
    fflush(stderr);
}
