#include "model_load.h"

#include "hf_config.h"
#include "hf_weights.h"
#include "weights_fingerprint.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int find_in_files(void *ctx, const char *prefix, const char *name, int64_t rows,
                         int64_t cols, weight_view *out) {
    (void)rows, (void)cols;
    const st_tensor *t = hf_weights_find(ctx, prefix, name);
    if (!t || t->ndim > 2) return 1;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    out->shape[0] = t->ndim > 0 ? t->shape[0] : 1;
    out->shape[1] = t->ndim > 1 ? t->shape[1] : 0;
    out->data = t->data;
    out->nbytes = t->nbytes;
    return 0;
}

static void close_files(void *ctx) {
    hf_weights_close(ctx);
    free(ctx);
}

static int read_model_type(const char *dir, char *out, size_t size, lp_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return lp_fail(err, "%s: %s", path, jerr.text);
    json_t *type = json_object_get(root, "model_type");
    /* HF GPT-2 configs always carry model_type; a bare one is taken as GPT-2 too. */
    snprintf(out, size, "%s", json_is_string(type) ? json_string_value(type) : "gpt2");
    json_decref(root);
    return 0;
}

static int open_weights(weight_source *src, const char *dir, lp_err *err) {
    hf_weights *w = calloc(1, sizeof *w);
    if (!w) return lp_fail(err, "out of memory");
    uint64_t fp;
    if (hf_weights_open(w, dir, err) < 0) {
        free(w);
        return -1;
    }
    if (weights_fingerprint(w, dir, 1, &fp, NULL, err) < 0) {
        close_files(w);
        return -1;
    }
    *src =
        (weight_source){.ctx = w, .find = find_in_files, .release = close_files, .fingerprint = fp};
    return 0;
}

/* ---- shapes only ---------------------------------------------------------------------------- */

/* One reserved, never written mapping that every weight views (its pages cost nothing untouched).
 */
typedef struct shape_source {
    void *zeros;
    size_t bytes;
} shape_source;

#define SHAPES_MAX_BYTES ((size_t)8 << 30) /* the largest weight: a 1M x 2048 f32 embedding */

static int find_shape(void *ctx, const char *prefix, const char *name, int64_t rows, int64_t cols,
                      weight_view *out) {
    (void)prefix, (void)name;
    shape_source *s = ctx;
    size_t numel = (size_t)rows * (size_t)(cols ? cols : 1);
    if (numel * 4 > s->bytes) return 1;
    /* f32: used in place, never converted or copied */
    *out = (weight_view){DT_F32, cols ? 2 : 1, {rows, cols}, s->zeros, numel * 4};
    return 0;
}

static void close_shapes(void *ctx) {
    shape_source *s = ctx;
    munmap(s->zeros, s->bytes);
    free(s);
}

static int open_shapes(weight_source *src, lp_err *err) {
    shape_source *s = calloc(1, sizeof *s);
    if (!s) return lp_fail(err, "out of memory");
    s->bytes = SHAPES_MAX_BYTES;
    s->zeros = mmap(NULL, s->bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->zeros == MAP_FAILED) {
        free(s);
        return lp_fail(err, "reserving address space for the shapes: %s", strerror(errno));
    }
    *src = (weight_source){.ctx = s, .find = find_shape, .release = close_shapes, .unhashed = 1};
    return 0;
}

/* ---- families ------------------------------------------------------------------------------- */

static int open_source(weight_source *src, const char *dir, int shapes_only, lp_err *err) {
    return shapes_only ? open_shapes(src, err) : open_weights(src, dir, err);
}

/* Errors from the config and the weights name the folder; an unknown model_type names its file. */
static int load_family(model **out, const char *dir, const char *type, int shapes_only,
                       lp_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    weight_source src;
    int rc;
    if (!strcmp(type, "gpt2")) {
        gpt2_config c;
        rc = gpt2_config_read(&c, path, err) < 0 || open_source(&src, dir, shapes_only, err) < 0
                 ? -1
                 : model_build_gpt2(out, &c, src, err);
    } else if (!strcmp(type, "llama") || !strcmp(type, "qwen2") || !strcmp(type, "mistral")) {
        llama_config c;
        rc = llama_config_read(&c, path, err) < 0 || open_source(&src, dir, shapes_only, err) < 0
                 ? -1
                 : model_build_llama(out, &c, src, err);
    } else {
        return lp_fail(err, "%s: model_type '%s' is not supported (gpt2, llama, qwen2, mistral)",
                       path, type);
    }
    return rc < 0 ? lp_wrap(err, "%s", dir) : 0;
}

int model_load(model **out, const char *dir, lp_err *err) {
    char type[64];
    if (read_model_type(dir, type, sizeof type, err) < 0) return -1;
    return load_family(out, dir, type, 0, err);
}

int model_load_shapes(model **out, const char *dir, lp_err *err) {
    char type[64];
    if (read_model_type(dir, type, sizeof type, err) < 0) return -1;
    return load_family(out, dir, type, 1, err);
}
