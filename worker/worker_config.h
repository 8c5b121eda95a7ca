/* The worker's options: flags, then LORAPS_* variables for every flag not given, and the rank
 * from Kubernetes' JOB_COMPLETION_INDEX (common/net_config.h). The job's settings are not here:
 * they come from the servers, in Welcome. */
#ifndef LORAPS_WORKER_CONFIG_H
#define LORAPS_WORKER_CONFIG_H

#include <limits.h>

typedef struct worker_config {
    char **servers;
    int n_servers;
    char model_dir[PATH_MAX];
    int rank;
    int quiet;
    char stats_path[PATH_MAX];
    int connect_timeout_ms;
    int threads;       /* -1: the job's */
    int step_delay_ms; /* a simulated straggler, for tests and benchmarks */
    /* data (--data; without it the demo task); the job says how to cut it into sequences */
    char data_path[PATH_MAX];
    char val_path[PATH_MAX];       /* --val-file */
    char tokenizer_path[PATH_MAX]; /* --tokenizer; default: the model folder's */
    /* orchestration */
    int metrics_port; /* -1: no HTTP endpoint */
    char metrics_bind[64];
    char curve_dir[PATH_MAX], curve_client[128];
    char env_notes[2048]; /* which options came from variables, for the start-up report */
} worker_config;

/* worker_config_load's results besides 0. */
enum { WORKER_CONFIG_HELP = 1, WORKER_CONFIG_BAD = 2 };

/* Reads the options. Returns 0, WORKER_CONFIG_HELP (--help was printed) or WORKER_CONFIG_BAD
 * (an error was printed; 2 is the exit status for it). */
int worker_config_load(worker_config *c, int argc, char **argv);
void worker_config_free(worker_config *c);

#endif
