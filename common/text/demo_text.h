/* The main demo's task, as text: lines that walk a cycle of words (the days of the week, the
 * months, the numbers one to ten, or the colours of the rainbow) from a random start. A random
 * base model continues "thursday friday" with noise; an adapter that learned the task continues
 * "saturday sunday monday". The text goes through the model's own tokenizer like any data. */
#ifndef LORAPS_DEMO_TEXT_H
#define LORAPS_DEMO_TEXT_H

#include "error.h"

#include <stdint.h>

/* Writes n_lines lines (one document each) to path, atomically; the same seed, the same file. */
int demo_text_write(const char *path, int n_lines, uint64_t seed, lp_err *err);

/* Prompts for before/after generations: n of them (at most 8). */
int demo_text_prompts(const char *const **prompts);

#endif
