/* TensorBoard event files: TFRecord records (tfrecord.h), each an Event protobuf
 * (proto/tensorboard.proto, upstream's field numbers). A file starts with the file version
 * ("brain.Event:2"); a run resumed at step s then says SessionLog START at s, so TensorBoard
 * drops what the run's earlier files hold for steps >= s; every later record is one step's
 * scalars (Summary values with simple_value), the first value of each tag in a file carrying the
 * tag's description. Files are named as TensorFlow's writers name them,
 * events.out.tfevents.<seconds>.<host>.<pid>.<n>, and TensorBoard reads the files of one
 * folder in name order as one run. */
#ifndef LORAPS_TB_EVENTS_H
#define LORAPS_TB_EVENTS_H

#include "error.h"

#include <stdint.h>
#include <stdio.h>

#define TB_FILE_VERSION "brain.Event:2"
#define TB_WRITER_NAME  "loraps"

typedef struct tb_scalar {
    const char *tag;
    double value;            /* stored as a float, as TensorBoard's scalars are */
    const char *description; /* the tag's description; NULL: none (when read: none written) */
} tb_scalar;

typedef struct tb_writer tb_writer;

/* A new event file in dir (created if needed), never an existing one, stamped with the time now.
 * start_step >= 0: a SessionLog START at that step follows the file version (a resumed run); -1:
 * none. */
int tb_writer_open(tb_writer **w, const char *dir, int64_t start_step, lp_err *err);
/* The same at an exact path (which must not exist), with the file version's wall time given:
 * reproducible files for tests. */
int tb_writer_open_file(tb_writer **w, const char *path, double wall_time, int64_t start_step,
                        lp_err *err);
/* One step's scalars as one record, written through to the file (a reader following the file
 * sees the step at once; the file is not held open between records). wall_time: seconds since
 * the epoch. */
int tb_writer_scalars(tb_writer *w, int64_t step, double wall_time, const tb_scalar *s, int n,
                      lp_err *err);
const char *tb_writer_path(const tb_writer *w);
void tb_writer_close(tb_writer *w);

/* ---- reading ------------------------------------------------------------------------------- */

typedef enum tb_event_kind {
    TB_EVENT_FILE_VERSION,
    TB_EVENT_SESSION_START,
    TB_EVENT_SCALARS,
    TB_EVENT_OTHER, /* anything else TensorBoard may hold (images, graphs, ...): skipped */
} tb_event_kind;

typedef struct tb_event {
    tb_event_kind kind;
    double wall_time;
    int64_t step;
    const char *file_version; /* FILE_VERSION */
    const char *writer;       /* FILE_VERSION: source_metadata.writer, "" when absent */
    int n_scalars;            /* SCALARS: the values that are scalars (simple_value) */
    const tb_scalar *scalars;
} tb_event;

/* Called for each event in file order; a non-zero return stops the reading and is returned. */
typedef int (*tb_event_fn)(const tb_event *e, void *ctx);

/* Reads every event of a file. -1 with err naming the file and record on a damaged record
 * (framing, CRCs) or one that is not an Event. */
int tb_read_file(const char *path, tb_event_fn fn, void *ctx, lp_err *err);

/* A run folder as TensorBoard shows it: its event files (names containing "tfevents") in name
 * order, each SessionLog START at step s dropping what came before for steps >= s. */
typedef struct tb_point {
    char *tag;
    int64_t step;
    double wall_time;
    float value;
    int64_t order; /* read order: points of one tag and step stay in it */
} tb_point;

typedef struct tb_run {
    tb_point *points; /* sorted by tag, then step, then read order */
    int n_points;
    tb_scalar *described; /* the first description of each tag, sorted by tag (owned) */
    int n_described;
    int n_files;
} tb_run;

int tb_read_run(const char *dir, tb_run *run, lp_err *err);
/* "scalar TAG STEP VALUE" per point (VALUE %.9g of the float), then "description TAG: TEXT":
 * the listing tests/reference/tensorboard_check.py prints from the tensorboard package. */
void tb_run_print(const tb_run *run, FILE *out);
void tb_run_free(tb_run *run);

#endif
