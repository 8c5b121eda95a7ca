#include "cpu_share.h"

#include "cpu_features.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int cpu_share_split(const int *core_cpus, int n_cores, int n_procs, int index, cpu_share *out,
                    lp_err *err) {
    if (n_cores < 1) return lp_fail(err, "no cores to share");
    if (n_procs < 1 || index < 0 || index >= n_procs)
        return lp_fail(err, "process %d of %d: not a valid share of the cores", index, n_procs);
    memset(out, 0, sizeof *out);
    CPU_ZERO(&out->cpus);
    int first, count;
    if (n_procs > n_cores) {
        first = index % n_cores, count = 1;
        out->shared = 1;
    } else {
        int base = n_cores / n_procs, extra = n_cores % n_procs;
        first = index * base + (index < extra ? index : extra);
        count = base + (index < extra);
    }
    for (int i = first; i < first + count; i++) CPU_SET(core_cpus[i], &out->cpus);
    out->threads = count;
    return 0;
}

int cpu_share_for(int n_procs, int index, cpu_share *out, lp_err *err) {
    int cpus[1024];
    int n = cpu_core_list(cpus, 1024);
    if (n < 1) return lp_fail(err, "could not read this process's CPUs: %s", strerror(errno));
    return cpu_share_split(cpus, n, n_procs, index, out, err);
}

int cpu_share_apply(const cpu_share *s, lp_err *err) {
    if (sched_setaffinity(0, sizeof s->cpus, &s->cpus) != 0)
        return lp_fail(err, "could not restrict the process to its cores: %s", strerror(errno));
    return 0;
}

void cpu_share_describe(const cpu_share *s, char *buf, int size) {
    int used = snprintf(buf, (size_t)size, "cpus ");
    const char *sep = "";
    for (int cpu = 0; cpu < CPU_SETSIZE && used < size; cpu++) {
        if (!CPU_ISSET(cpu, &s->cpus)) continue;
        int last = cpu;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &s->cpus)) last++;
        used += last > cpu ? snprintf(buf + used, (size_t)(size - used), "%s%d-%d", sep, cpu, last)
                           : snprintf(buf + used, (size_t)(size - used), "%s%d", sep, cpu);
        sep = ",";
        cpu = last;
    }
    if (used < size)
        snprintf(buf + used, (size_t)(size - used), " (%d thread%s%s)", s->threads,
                 s->threads == 1 ? "" : "s", s->shared ? ", cores shared" : "");
}
