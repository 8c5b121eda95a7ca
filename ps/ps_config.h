/* loraps-ps: the configuration, from a job file, flags and LORAPS_* variables; read-only once
 * the server starts. */
#ifndef LORAPS_PS_CONFIG_H
#define LORAPS_PS_CONFIG_H

#include "job.h"
#include "ps_security.h"
#include "wire.h"

#include <limits.h>
#include <stdint.h>

typedef struct ps_config {
    job job;
    char model_dir[PATH_MAX];
    char out_dir[PATH_MAX];
    char bind[256];
    char metrics_path[PATH_MAX]; /* shard 0: one JSON line per step */
    int shard, n_shards;
    char **peers;    /* endpoints of all shards, in shard order (n_shards of them) */
    int quiet;       /* no progress lines */
    int shapes_only; /* the base model from config.json alone (model_load_shapes) */
    int threads;     /* for AdamW and the norm (OpenMP); the job's threads are the workers' */
    Loraps__WireDtype wire_dtype;
    int sync;               /* mode == sync */
    uint64_t total_updates; /* sync: max_steps; async: max_steps * workers */
    char resume[PATH_MAX];  /* --resume: a checkpoint or adapter folder, or "latest" */
    int durable_every;      /* --durable-every K (ps_checkpoint_durable.c); 0: off */
    ps_security_config security;
    /* orchestration */
    int metrics_port; /* -1: no HTTP endpoint */
    char metrics_bind[64];
    int idle_exit_s;      /* 0: wait for workers forever */
    char env_notes[2048]; /* the LORAPS_* variables that became flags, for the configuration */
} ps_config;

/* The command line and the environment: 0, or the exit status of a bad one (`--help` exits). */
int ps_config_load(ps_config *c, int argc, char **argv);
void ps_config_free(ps_config *c);

#endif
