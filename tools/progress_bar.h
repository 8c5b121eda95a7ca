/* loraps run's progress on a terminal: one line that updates in place, with a bar, as users of
 * tqdm-style tools expect. The first server shard prints a line per step (what logs, CI and
 * Kubernetes keep); on a terminal its stdout goes through a pipe to a thread here, which turns
 * each step line into the bar, prints validation passes as lines of their own above it, and
 * passes anything else through. Off a terminal nothing changes. */
#ifndef LORAPS_PROGRESS_BAR_H
#define LORAPS_PROGRESS_BAR_H

#include <stddef.h>

typedef struct progress_view progress_view;

/* NULL when stdout is not a terminal (or the pipe or thread cannot be made): then the shard's
 * lines go to stdout unchanged. */
progress_view *progress_view_start(void);
/* The write end for the shard's stdout (close-on-exec; a child's dup2 onto 1 keeps it). */
int progress_view_fd(const progress_view *v);
/* After the shard is started: the parent's copy of the write end is closed, so the view sees
 * the end of the stream when the shard exits. */
void progress_view_started(progress_view *v);
/* Waits for the stream's end (the shard has exited), ends the bar's line and frees the view. */
void progress_view_stop(progress_view *v);

/* ---- the parts, for the view and its test ---------------------------------------------------- */

typedef struct progress_step {
    long step, total;
    double loss, tokens_per_s;
    int has_val;
    double val_loss;
    char eta[32];
} progress_step;

/* Parses a shard's step line ("step 9/12  loss 6.6456  20360 tok/s ... eta 0m03s"); -1 if the
 * line is not one. */
int progress_step_parse(const char *line, progress_step *s);
/* The bar line for a terminal `columns` wide (no newline), in Unicode blocks or ASCII. */
void progress_bar_render(char *out, size_t n, const progress_step *s, double last_val, int columns,
                         int utf8);

#endif
