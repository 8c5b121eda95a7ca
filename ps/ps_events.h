/* Shard 0's TensorBoard event file in OUT/runs (common/formats/tb_events.h), owned here: opened
 * when training starts, one record per step and per validation pass. */
#ifndef LORAPS_PS_EVENTS_H
#define LORAPS_PS_EVENTS_H

#include "ps_config.h"
#include "ps_members.h"

#include <stdint.h>

/* One step's figures, as the metrics file and the event file record them. */
typedef struct ps_step_figures {
    uint64_t step; /* 1-based: the version the step made */
    uint64_t tokens;
    double loss, lr, step_ms;
    double grad_norm, compute_s; /* < 0: unknown */
    int has_val;                 /* a validation pass completed: its loss, after val_step steps */
    double val_loss;
    uint64_t val_step;
} ps_step_figures;

typedef struct ps_events {
    const ps_config *cfg;
    struct tb_writer *writer; /* NULL: none (not shard 0, no --out, or given up on) */
    uint64_t resumed_version;
} ps_events;

/* Training starts from resumed_version (0: a fresh job; else a new file whose steps start at
 * resumed_version + 1). A failure is logged and training goes on without events. */
void ps_events_open(ps_events *ev, const ps_config *c, uint64_t resumed_version);
void ps_events_step(ps_events *ev, const ps_members *mb, const ps_step_figures *f);
void ps_events_close(ps_events *ev);

#endif
