/* File-system helpers that never leave a partial file behind. */
#ifndef LORAPS_FSUTIL_H
#define LORAPS_FSUTIL_H

#include "error.h"

#include <stddef.h>

/* Writes len bytes to path: a temporary file beside it, fsync, rename, fsync of the folder. */
int fs_write_atomic(const char *path, const void *data, size_t len, lp_err *err);
/* The same, for several buffers written one after another (header + data, without a copy). */
int fs_write_atomic_iov(const char *path, const void *const *bufs, const size_t *lens, int n,
                        lp_err *err);
int fs_fsync_dir(const char *dir, lp_err *err);
/* mkdir -p. */
int fs_mkdirs(const char *path, lp_err *err);
/* Reads a whole (small) file into a NUL-terminated malloc'd buffer. */
int fs_read_all(const char *path, char **out, size_t *len, lp_err *err);
int fs_exists(const char *path);

#endif
