/* SIGTERM and SIGINT ask the worker to stop: every wait polls worker_stop_signal() and ends. */
#ifndef LORAPS_WORKER_SIGNAL_H
#define LORAPS_WORKER_SIGNAL_H

/* Installs the handlers (SIGPIPE ignored). */
void worker_signals_install(void);
/* The signal that asked us to stop, or 0. */
int worker_stop_signal(void);

#endif
