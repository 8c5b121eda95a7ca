/* safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's
 * dtype, shape and [begin, end) byte range, then the data. The reader mmaps the file and
 * validates everything before trusting it; the writer writes atomically. */
#ifndef LORAPS_SAFETENSORS_H
#define LORAPS_SAFETENSORS_H

#include "dtype.h"
#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS   8
#define ST_MAX_HEADER (100u << 20) /* the format's own limit on the JSON header */

typedef struct st_tensor {
    char *name;
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data; /* points into the mapping */
} st_tensor;

typedef struct st_file {
    char *path;
    void *map;
    size_t map_size;
    int n_tensors;
    st_tensor *tensors; /* in the order of their byte ranges */
    int n_metadata;
    char **metadata_keys; /* the "__metadata__" string map */
    char **metadata_values;
} st_file;

int st_open(st_file *f, const char *path, lp_err *err);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_metadata(const st_file *f, const char *key);

/* The tensor's data as f32 without a copy: non-NULL only for F32 data that is 4-byte aligned. */
const float *st_f32_view(const st_tensor *t);
/* Copies (F32) or converts (F16, BF16, F64) the tensor into dst, which holds n floats;
 * fails if n != numel or the dtype is not a float type. */
int st_read_f32(const st_tensor *t, float *dst, size_t n, lp_err *err);

typedef struct st_writer st_writer;

st_writer *st_writer_new(void);
/* The data is borrowed until st_writer_write returns. */
int st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                  const void *data, lp_err *err);
/* f32 data stored as F32, F16 or BF16 (converted when written). */
int st_writer_add_f32(st_writer *w, const char *name, dtype stored_as, int ndim,
                      const int64_t *shape, const float *data, lp_err *err);
int st_writer_set_metadata(st_writer *w, const char *key, const char *value, lp_err *err);
/* Writes to path atomically: a temporary file in the same folder, fsync, rename, fsync of the
 * folder. The header is padded with spaces so the data starts 8-byte aligned. */
int st_writer_write(st_writer *w, const char *path, lp_err *err);
void st_writer_free(st_writer *w);

#endif
