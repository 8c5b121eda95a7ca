#include "worker_signal.h"

#include <signal.h>
#include <string.h>

/* A signal handler can reach nothing but file-scope state: the one such variable of the worker. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

void worker_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int worker_stop_signal(void) {
    return (int)stop_signal;
}
