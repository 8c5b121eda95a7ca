/* The worker's log lines: "loraps-worker[RANK]: ..." on stderr. */
#ifndef LORAPS_WORKER_LOG_H
#define LORAPS_WORKER_LOG_H

typedef struct worker worker;

void worker_log(const worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
