#include "safetensors.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define METADATA_KEY "__metadata__"

/* ---------------------------------------------------------------------------------------- */
/* Reader                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* A tensor while parsing: its byte range is needed to sort and check the layout. */
typedef struct parsed_tensor {
    st_tensor t;
    uint64_t begin, end;
} parsed_tensor;

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int map_file(st_file *f, const char *path, lp_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lp_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return lp_fail(err, "%s: file is %lld bytes, shorter than the 8-byte header length", path,
                       (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return lp_fail(err, "%s: mmap failed: %s", path, strerror(e));
    f->map = map;
    f->map_size = (size_t)st.st_size;
    return 0;
}

/* A JSON value that is a non-negative integer, into *out. */
static int json_to_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_shape(const char *path, const char *name, const json_t *shape, st_tensor *t,
                       lp_err *err) {
    if (!json_is_array(shape)) {
        return lp_fail(err, "%s: tensor '%s': 'shape' must be an array", path, name);
    }
    size_t ndim = json_array_size(shape);
    if (ndim > ST_MAX_DIMS) {
        return lp_fail(err, "%s: tensor '%s': %zu dims, more than the %d supported", path, name,
                       ndim, ST_MAX_DIMS);
    }
    t->ndim = (int)ndim;
    int64_t numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t dim;
        if (json_to_u64(json_array_get(shape, i), &dim) != 0 || dim > INT64_MAX) {
            return lp_fail(err, "%s: tensor '%s': dim %zu of 'shape' is not a non-negative integer",
                           path, name, i);
        }
        t->shape[i] = (int64_t)dim;
        if (__builtin_mul_overflow(numel, (int64_t)dim, &numel)) {
            return lp_fail(err, "%s: tensor '%s': shape overflows the element count", path, name);
        }
    }
    t->numel = numel;
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)dtype_size(t->dtype), &t->nbytes)) {
        return lp_fail(err, "%s: tensor '%s': shape overflows the byte count", path, name);
    }
    return 0;
}

static int parse_offsets(const char *path, const char *name, const json_t *offsets,
                         parsed_tensor *p, size_t data_size, lp_err *err) {
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        json_to_u64(json_array_get(offsets, 0), &p->begin) != 0 ||
        json_to_u64(json_array_get(offsets, 1), &p->end) != 0) {
        return lp_fail(err,
                       "%s: tensor '%s': 'data_offsets' must be [begin, end] of non-negative "
                       "integers",
                       path, name);
    }
    if (p->begin > p->end) {
        return lp_fail(err, "%s: tensor '%s': data_offsets begin %llu > end %llu", path, name,
                       (unsigned long long)p->begin, (unsigned long long)p->end);
    }
    if (p->end - p->begin != p->t.nbytes) {
        return lp_fail(err,
                       "%s: tensor '%s': data_offsets span %llu bytes but the shape and dtype "
                       "need %zu",
                       path, name, (unsigned long long)(p->end - p->begin), p->t.nbytes);
    }
    if (p->end > data_size) {
        return lp_fail(err,
                       "%s: tensor '%s': data_offsets [%llu, %llu] out of bounds of the %zu-byte "
                       "data area",
                       path, name, (unsigned long long)p->begin, (unsigned long long)p->end,
                       data_size);
    }
    return 0;
}

static int parse_tensor(const char *path, const char *name, const json_t *entry, parsed_tensor *p,
                        size_t data_size, lp_err *err) {
    if (!json_is_object(entry)) {
        return lp_fail(err, "%s: tensor '%s': entry must be an object", path, name);
    }
    const json_t *dt = json_object_get(entry, "dtype");
    const json_t *shape = json_object_get(entry, "shape");
    const json_t *offsets = json_object_get(entry, "data_offsets");
    if (!dt || !shape || !offsets) {
        return lp_fail(err, "%s: tensor '%s': missing '%s'", path, name,
                       !dt      ? "dtype"
                       : !shape ? "shape"
                                : "data_offsets");
    }
    if (!json_is_string(dt)) {
        return lp_fail(err, "%s: tensor '%s': 'dtype' must be a string", path, name);
    }
    if (dtype_from_name(json_string_value(dt), &p->t.dtype) != 0) {
        return lp_fail(err, "%s: tensor '%s': unknown dtype '%s'", path, name,
                       json_string_value(dt));
    }
    if (parse_shape(path, name, shape, &p->t, err) != 0) return -1;
    return parse_offsets(path, name, offsets, p, data_size, err);
}

static int parse_metadata(st_file *f, const json_t *meta, lp_err *err) {
    if (!json_is_object(meta)) {
        return lp_fail(err, "%s: '%s' must be an object of strings", f->path, METADATA_KEY);
    }
    size_t n = json_object_size(meta);
    f->metadata_keys = calloc(n + 1, sizeof(char *));
    f->metadata_values = calloc(n + 1, sizeof(char *));
    if (!f->metadata_keys || !f->metadata_values) return lp_fail(err, "out of memory");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value)) {
            return lp_fail(err, "%s: '%s' value of '%s' must be a string", f->path, METADATA_KEY,
                           key);
        }
        f->metadata_keys[f->n_metadata] = strdup(key);
        f->metadata_values[f->n_metadata] = strdup(json_string_value(value));
        f->n_metadata++;
        if (!f->metadata_keys[f->n_metadata - 1] || !f->metadata_values[f->n_metadata - 1]) {
            return lp_fail(err, "out of memory");
        }
    }
    return 0;
}

static int by_range(const void *a, const void *b) {
    const parsed_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

/* The spec asks for ranges that tile the data area exactly: no overlaps, no holes. */
static int check_layout(const char *path, const parsed_tensor *p, int n, size_t data_size,
                        lp_err *err) {
    uint64_t expected = 0;
    for (int i = 0; i < n; i++) {
        if (p[i].begin < expected) {
            return lp_fail(err, "%s: tensor '%s' overlaps tensor '%s' (bytes %llu..%llu)", path,
                           p[i].t.name, p[i - 1].t.name, (unsigned long long)p[i].begin,
                           (unsigned long long)expected);
        }
        if (p[i].begin > expected) {
            return lp_fail(err,
                           "%s: hole in the data area: bytes %llu..%llu belong to no tensor "
                           "(before '%s')",
                           path, (unsigned long long)expected, (unsigned long long)p[i].begin,
                           p[i].t.name);
        }
        expected = p[i].end;
    }
    if (expected != data_size) {
        return lp_fail(err, "%s: hole in the data area: bytes %llu..%zu belong to no tensor", path,
                       (unsigned long long)expected, data_size);
    }
    return 0;
}

static int parse_tensors(st_file *f, const json_t *root, size_t data_size,
                         const unsigned char *data, lp_err *err) {
    size_t n = json_object_size(root) - (json_object_get(root, METADATA_KEY) ? 1 : 0);
    parsed_tensor *p = calloc(n + 1, sizeof *p);
    if (!p) return lp_fail(err, "out of memory");
    int count = 0, rc = 0;
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)root, key, value) {
        if (strcmp(key, METADATA_KEY) == 0) continue;
        parsed_tensor *t = &p[count++];
        t->t.name = strdup(key);
        if (!t->t.name) {
            rc = lp_fail(err, "out of memory");
            break;
        }
        if (parse_tensor(f->path, key, value, t, data_size, err) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0) {
        qsort(p, (size_t)count, sizeof *p, by_range);
        rc = check_layout(f->path, p, count, data_size, err);
    }
    f->tensors = calloc((size_t)count + 1, sizeof *f->tensors);
    if (!f->tensors && rc == 0) rc = lp_fail(err, "out of memory");
    for (int i = 0; i < count; i++) {
        if (!f->tensors) {
            free(p[i].t.name);
            continue;
        }
        /* Hand every name to f so st_close frees them, whether or not parsing succeeded. */
        f->tensors[i] = p[i].t;
        f->tensors[i].data = data + p[i].begin;
    }
    f->n_tensors = f->tensors ? count : 0;
    free(p);
    return rc;
}

static int parse_header(st_file *f, const unsigned char *header, size_t header_len,
                        size_t data_size, lp_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb((const char *)header, header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        return lp_fail(err, "%s: malformed JSON header: %s (line %d, column %d)", f->path,
                       jerr.text, jerr.line, jerr.column);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = lp_fail(err, "%s: JSON header is not an object", f->path);
    } else if (json_object_get(root, METADATA_KEY) &&
               parse_metadata(f, json_object_get(root, METADATA_KEY), err) != 0) {
        rc = -1;
    } else {
        rc = parse_tensors(f, root, data_size, header + header_len, err);
    }
    json_decref(root);
    return rc;
}

int st_open(st_file *f, const char *path, lp_err *err) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return lp_fail(err, "out of memory");
    if (map_file(f, path, err) != 0) goto fail;
    const unsigned char *bytes = f->map;
    uint64_t header_len = read_le64(bytes);
    if (header_len > ST_MAX_HEADER) {
        lp_fail(err, "%s: header length %llu exceeds the limit of %u bytes", path,
                (unsigned long long)header_len, ST_MAX_HEADER);
        goto fail;
    }
    if (header_len > f->map_size - 8) {
        lp_fail(err, "%s: header length %llu points past the end of the %zu-byte file", path,
                (unsigned long long)header_len, f->map_size);
        goto fail;
    }
    size_t data_size = f->map_size - 8 - (size_t)header_len;
    if (parse_header(f, bytes + 8, (size_t)header_len, data_size, err) != 0) goto fail;
    return 0;
fail:
    st_close(f);
    return -1;
}

void st_close(st_file *f) {
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_metadata; i++) {
        free(f->metadata_keys[i]);
        free(f->metadata_values[i]);
    }
    free(f->metadata_keys);
    free(f->metadata_values);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++) {
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_metadata; i++) {
        if (strcmp(f->metadata_keys[i], key) == 0) return f->metadata_values[i];
    }
    return NULL;
}

const float *st_f32_view(const st_tensor *t) {
    if (t->dtype != DT_F32 || (uintptr_t)t->data % sizeof(float) != 0) return NULL;
    return t->data;
}

int st_read_f32(const st_tensor *t, float *dst, size_t n, lp_err *err) {
    if (n != (size_t)t->numel) {
        return lp_fail(err, "tensor '%s': has %lld elements, caller expects %zu", t->name,
                       (long long)t->numel, n);
    }
    if (n == 0) return 0;
    if (dtype_to_f32(t->data, t->dtype, dst, n) != 0) {
        return lp_fail(err, "tensor '%s': dtype %s is not a float type", t->name,
                       dtype_name(t->dtype));
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Writer                                                                                   */
/* ---------------------------------------------------------------------------------------- */

typedef struct st_entry {
    char *name;
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data;     /* borrowed, stored as is */
    const float *f32_src; /* borrowed, converted to dtype when written */
} st_entry;

struct st_writer {
    st_entry *entries;
    int n_entries, cap_entries;
    char **meta_keys, **meta_values;
    int n_meta, cap_meta;
};

st_writer *st_writer_new(void) {
    return calloc(1, sizeof(st_writer));
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_entries; i++) free(w->entries[i].name);
    free(w->entries);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

static int grow(void **items, int *cap, int need, size_t item_size) {
    if (need <= *cap) return 0;
    int new_cap = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, (size_t)new_cap * item_size);
    if (!p) return -1;
    *items = p;
    *cap = new_cap;
    return 0;
}

static int check_new_entry(const st_writer *w, const char *name, dtype dt, int ndim,
                           const int64_t *shape, size_t *nbytes, lp_err *err) {
    if (!name || strcmp(name, METADATA_KEY) == 0) {
        return lp_fail(err, "safetensors writer: invalid tensor name '%s'", name ? name : "");
    }
    for (int i = 0; i < w->n_entries; i++) {
        if (strcmp(w->entries[i].name, name) == 0) {
            return lp_fail(err, "safetensors writer: duplicate tensor '%s'", name);
        }
    }
    if ((unsigned)dt >= DT_COUNT) {
        return lp_fail(err, "safetensors writer: tensor '%s': invalid dtype", name);
    }
    if (ndim < 0 || ndim > ST_MAX_DIMS) {
        return lp_fail(err, "safetensors writer: tensor '%s': %d dims", name, ndim);
    }
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel)) {
            return lp_fail(err, "safetensors writer: tensor '%s': bad shape", name);
        }
    }
    if (numel > INT64_MAX || __builtin_mul_overflow(numel, dtype_size(dt), nbytes)) {
        return lp_fail(err, "safetensors writer: tensor '%s': shape too large", name);
    }
    return 0;
}

static int add_entry(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                     const void *data, const float *f32_src, lp_err *err) {
    size_t nbytes = 0;
    if (check_new_entry(w, name, dt, ndim, shape, &nbytes, err) != 0) return -1;
    if (nbytes > 0 && !data && !f32_src) {
        return lp_fail(err, "safetensors writer: tensor '%s': no data", name);
    }
    if (grow((void **)&w->entries, &w->cap_entries, w->n_entries + 1, sizeof(st_entry)) != 0) {
        return lp_fail(err, "out of memory");
    }
    st_entry *e = &w->entries[w->n_entries];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return lp_fail(err, "out of memory");
    e->dtype = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = nbytes;
    e->data = data;
    e->f32_src = f32_src;
    w->n_entries++;
    return 0;
}

int st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                  const void *data, lp_err *err) {
    return add_entry(w, name, dt, ndim, shape, data, NULL, err);
}

int st_writer_add_f32(st_writer *w, const char *name, dtype stored_as, int ndim,
                      const int64_t *shape, const float *data, lp_err *err) {
    if (stored_as == DT_F32) return add_entry(w, name, DT_F32, ndim, shape, data, NULL, err);
    if (stored_as != DT_F16 && stored_as != DT_BF16) {
        return lp_fail(err, "safetensors writer: tensor '%s': f32 data cannot be stored as %s",
                       name ? name : "", dtype_name(stored_as));
    }
    return add_entry(w, name, stored_as, ndim, shape, NULL, data, err);
}

int st_writer_set_metadata(st_writer *w, const char *key, const char *value, lp_err *err) {
    if (!key || !value) return lp_fail(err, "safetensors writer: metadata needs key and value");
    char *v = strdup(value);
    if (!v) return lp_fail(err, "out of memory");
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return 0;
        }
    }
    char *k = strdup(key);
    if (!k || grow((void **)&w->meta_keys, &w->cap_meta, w->n_meta + 1, sizeof(char *)) != 0) {
        free(k);
        free(v);
        return lp_fail(err, "out of memory");
    }
    /* meta_values grows in step with meta_keys: same capacity. */
    char **values = realloc(w->meta_values, (size_t)w->cap_meta * sizeof(char *));
    if (!values) {
        free(k);
        free(v);
        return lp_fail(err, "out of memory");
    }
    w->meta_values = values;
    w->meta_keys[w->n_meta] = k;
    w->meta_values[w->n_meta] = v;
    w->n_meta++;
    return 0;
}

static json_t *entry_json(const st_entry *e, size_t begin) {
    json_t *shape = json_array();
    for (int i = 0; i < e->ndim; i++) json_array_append_new(shape, json_integer(e->shape[i]));
    json_t *offsets = json_array();
    json_array_append_new(offsets, json_integer((json_int_t)begin));
    json_array_append_new(offsets, json_integer((json_int_t)(begin + e->nbytes)));
    json_t *obj = json_object();
    json_object_set_new(obj, "dtype", json_string(dtype_name(e->dtype)));
    json_object_set_new(obj, "shape", shape);
    json_object_set_new(obj, "data_offsets", offsets);
    return obj;
}

/* The JSON header, padded with spaces to a multiple of 8 so the data starts 8-byte aligned.
 * NULL if a name is not valid UTF-8 (jansson refuses it) or memory runs out. */
static char *header_json(const st_writer *w, size_t *len) {
    json_t *root = json_object();
    int failed = !root;
    if (!failed && w->n_meta > 0) {
        json_t *meta = json_object();
        for (int i = 0; i < w->n_meta; i++) {
            failed |= json_object_set_new(meta, w->meta_keys[i], json_string(w->meta_values[i]));
        }
        failed |= json_object_set_new(root, METADATA_KEY, meta);
    }
    size_t offset = 0;
    for (int i = 0; !failed && i < w->n_entries; i++) {
        failed |= json_object_set_new(root, w->entries[i].name, entry_json(&w->entries[i], offset));
        offset += w->entries[i].nbytes;
    }
    char *text = failed ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) return NULL;
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    *len = padded;
    return out;
}

/* Converted copies of the entries stored from f32; NULL where an entry is written as is. */
static int convert_f32_entries(const st_writer *w, void **converted, lp_err *err) {
    for (int i = 0; i < w->n_entries; i++) {
        const st_entry *e = &w->entries[i];
        if (!e->f32_src || e->nbytes == 0) continue;
        converted[i] = malloc(e->nbytes);
        if (!converted[i]) return lp_fail(err, "out of memory converting tensor '%s'", e->name);
        dtype_from_f32(e->f32_src, e->dtype, converted[i], e->nbytes / dtype_size(e->dtype));
    }
    return 0;
}

int st_writer_write(st_writer *w, const char *path, lp_err *err) {
    int n_bufs = w->n_entries + 2, rc = -1;
    const void **bufs = calloc((size_t)n_bufs, sizeof *bufs);
    size_t *lens = calloc((size_t)n_bufs, sizeof *lens);
    void **converted = calloc((size_t)w->n_entries + 1, sizeof *converted);
    size_t header_len = 0;
    char *header = header_json(w, &header_len);
    unsigned char len_bytes[8];
    if (!bufs || !lens || !converted || !header) {
        lp_fail(err,
                "%s: cannot build the safetensors header (out of memory, or a name or "
                "metadata string that is not valid UTF-8)",
                path);
        goto done;
    }
    if (convert_f32_entries(w, converted, err) != 0) goto done;
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    bufs[0] = len_bytes;
    lens[0] = 8;
    bufs[1] = header;
    lens[1] = header_len;
    for (int i = 0; i < w->n_entries; i++) {
        bufs[i + 2] = converted[i] ? converted[i] : w->entries[i].data;
        lens[i + 2] = w->entries[i].nbytes;
    }
    rc = fs_write_atomic_iov(path, bufs, lens, n_bufs, err);
done:
    for (int i = 0; converted && i < w->n_entries; i++) free(converted[i]);
    free(converted);
    free(header);
    free(bufs);
    free(lens);
    return rc;
}
