/* Splitting this host's cores between processes that run side by side (`loraps run --workers N`,
 * two benchmarks), so that their thread pools never oversubscribe the cores: each process gets a
 * contiguous block of physical cores, one CPU of each (hyperthread siblings stay idle: GEMMs
 * gain nothing from them), and as many compute threads as cores. */
#ifndef LORAPS_CPU_SHARE_H
#define LORAPS_CPU_SHARE_H

#include "error.h"

#include <sched.h>

typedef struct cpu_share {
    cpu_set_t cpus; /* where the process may run */
    int threads;    /* its compute threads: the cores it got */
    int shared;     /* 1 when there are more processes than cores, so cores are shared */
} cpu_share;

/* Process `index` of `n_procs` over the cores `core_cpus` (one CPU number per core, in order):
 * blocks of n_cores / n_procs cores, the first n_cores % n_procs processes one more; with more
 * processes than cores, process i gets core i mod n_cores alone, one thread. */
int cpu_share_split(const int *core_cpus, int n_cores, int n_procs, int index, cpu_share *out,
                    lp_err *err);
/* The same over the cores this process may run on now (cpu_core_list). */
int cpu_share_for(int n_procs, int index, cpu_share *out, lp_err *err);
/* Restricts the calling process (and what it starts or execs later) to the share's CPUs. Call it
 * before the first parallel region: OpenMP's threads take the mask they start with. */
int cpu_share_apply(const cpu_share *s, lp_err *err);
/* "cpus 0-3 (4 threads)": for start-up lines. */
void cpu_share_describe(const cpu_share *s, char *buf, int size);

#endif
