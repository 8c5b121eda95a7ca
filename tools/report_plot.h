/* The curves of `loraps report`: the training and validation loss and the tokens per second of
 * each step, drawn by gnuplot (pngcairo) into a PNG. */
#ifndef LORAPS_REPORT_PLOT_H
#define LORAPS_REPORT_PLOT_H

#include "error.h"
#include "run_metrics.h"

#define REPORT_PLOT_WIDTH  1200
#define REPORT_PLOT_HEIGHT 800

/* Writes the gnuplot script (its data inline, so it redraws the PNG alone: `gnuplot FILE`) to
 * script_path and runs gnuplot on it. An error names what failed: gnuplot missing, its exit
 * status, or no PNG. */
int report_plot(const run_metrics *m, const char *script_path, const char *png_path, lp_err *err);

#endif
