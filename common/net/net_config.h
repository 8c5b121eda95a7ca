/* What orchestrators need from every daemon (Kubernetes, ssh launchers, systemd): each option
 * also as a LORAPS_* variable, a worker's rank from Kubernetes' Indexed Job, and servers that
 * bind every interface while peers reach them by DNS name.
 *
 * Precedence for the daemons' own options (where to bind, the model folder, the rank, ports):
 * a command-line flag wins, else its variable: LORAPS_<FLAG> with '-' as '_', upper case
 * (--metrics-port is LORAPS_METRICS_PORT). Job settings keep the job table's order (job file <
 * flags < LORAPS_* variables, common/job.h), since the server owns those. */
#ifndef LORAPS_NET_CONFIG_H
#define LORAPS_NET_CONFIG_H

#include "error.h"

#include <stddef.h>

typedef struct netcfg_flag {
    const char *name; /* without the dashes: "metrics-port" */
    int has_value;    /* 0: a bare switch (--quiet), set by a variable of 1/true/yes */
} netcfg_flag;

/* Builds argv with a "--flag value" inserted after argv[0] for every flag of the table that the
 * command line lacks and whose LORAPS_* variable is set. The flags "rank" and "shard" also fall
 * back to JOB_COMPLETION_INDEX (Kubernetes' Indexed Job). *out_argv is malloc'd (the strings it
 * adds too); free it with netcfg_args_free. `notes` (may be NULL) receives a line naming each
 * variable used, for the effective-configuration print. */
int netcfg_env_args(const netcfg_flag *flags, int n_flags, int argc, char **argv, int *out_argc,
                    char ***out_argv, char *notes, size_t notes_len, lp_err *err);
void netcfg_args_free(int argc, char **argv, int orig_argc);

/* The variable name for a flag: "metrics-port" -> "LORAPS_METRICS_PORT". */
void netcfg_env_name(const char *flag, char *out, size_t n);

/* Where a server listens, given the endpoint others reach it at: a numeric host (127.0.0.1,
 * 198.18.0.1, [::1]) is bound as it is; a DNS name (loraps-ps-0.loraps-ps) cannot be bound, so
 * the server listens on every interface at that port (tcp://0.0.0.0:PORT). */
int netcfg_bind_for(const char *endpoint, char *out, size_t n, lp_err *err);

/* Is `s` a valid tcp://HOST:PORT endpoint? (Names are not resolved here: libzmq resolves them on
 * every connection attempt, so a server that is not up yet is retried.) */
int netcfg_check_endpoint(const char *s, lp_err *err);

/* Unsets the variables that configure one process only (rank, shard, bind, ports), so a local
 * launcher's children do not all inherit the same. */
void netcfg_clear_process_env(void);

#endif
