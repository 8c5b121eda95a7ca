#include "worker_log.h"
#include "worker.h"

#include <stdarg.h>
#include <stdio.h>

void worker_log(const worker *w, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loraps-worker[%d]: %s\n", w->cfg.rank, msg);
    fflush(stderr);
}
