/* The embedded demo's model: created once per preset under the cache folder
 * ($LORAPS_CACHE, else $XDG_CACHE_HOME/loraps, else ~/.cache/loraps) and reused after. */
#ifndef LORAPS_DEMO_MODEL_H
#define LORAPS_DEMO_MODEL_H

#include "error.h"

#include <stddef.h>

/* Writes the folder's path into dir. */
int demo_model_ensure(const char *preset, char *dir, size_t size, lp_err *err);

#endif
