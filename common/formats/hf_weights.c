#include "hf_weights.h"
#include "fsutil.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SINGLE_FILE "model.safetensors"
#define INDEX_FILE  "model.safetensors.index.json"

static int join_path(char *out, size_t size, const char *dir, const char *name, lp_err *err) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) return lp_fail(err, "%s/%s: path too long", dir, name);
    return 0;
}

static int open_single(hf_weights *w, const char *path, lp_err *err) {
    w->files = calloc(1, sizeof *w->files);
    if (!w->files) return lp_fail(err, "out of memory");
    if (st_open(&w->files[0], path, err) != 0) return -1;
    w->n_files = 1;
    return 0;
}

/* A shard is named by a bare file name inside the model folder, never a path out of it. */
static int check_shard_name(const char *index_path, const char *name, lp_err *err) {
    if (name[0] == '\0' || strchr(name, '/') || strstr(name, "..")) {
        return lp_fail(err, "%s: shard file name '%s' must be a plain file name", index_path, name);
    }
    return 0;
}

static int shard_index(const char **names, int n, const char *name) {
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0) return i;
    }
    return -1;
}

/* Each distinct shard file, in order of first mention; the strings belong to weight_map. */
static int collect_shards(const json_t *weight_map, const char *index_path, const char ***out,
                          int *n_out, lp_err *err) {
    const char **names = calloc(json_object_size(weight_map) + 1, sizeof *names);
    if (!names) return lp_fail(err, "out of memory");
    int n = 0;
    const char *tensor;
    const json_t *file;
    json_object_foreach((json_t *)weight_map, tensor, file) {
        if (!json_is_string(file)) {
            free(names);
            return lp_fail(err, "%s: weight_map entry '%s' must be a file name string", index_path,
                           tensor);
        }
        const char *name = json_string_value(file);
        if (check_shard_name(index_path, name, err) != 0) {
            free(names);
            return -1;
        }
        if (shard_index(names, n, name) < 0) names[n++] = name;
    }
    *out = names;
    *n_out = n;
    return 0;
}

static int open_shards(hf_weights *w, const char *dir, const char *index_path, const char **names,
                       int n, lp_err *err) {
    w->files = calloc((size_t)n + 1, sizeof *w->files);
    if (!w->files) return lp_fail(err, "out of memory");
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        if (join_path(path, sizeof path, dir, names[i], err) != 0) return -1;
        if (st_open(&w->files[i], path, err) != 0) {
            return lp_wrap(err, "%s: shard '%s'", index_path, names[i]);
        }
        w->n_files = i + 1;
    }
    return 0;
}

/* Every tensor the index names must be in the shard it names. */
static int check_weight_map(const hf_weights *w, const json_t *weight_map, const char **names,
                            const char *index_path, lp_err *err) {
    const char *tensor;
    const json_t *file;
    json_object_foreach((json_t *)weight_map, tensor, file) {
        int i = shard_index(names, w->n_files, json_string_value(file));
        if (!st_find(&w->files[i], tensor)) {
            return lp_fail(err, "%s: tensor '%s' is listed in shard '%s' but not found there",
                           index_path, tensor, names[i]);
        }
    }
    return 0;
}

static int open_index(hf_weights *w, const char *dir, const char *index_path, lp_err *err) {
    char *text;
    size_t len;
    if (fs_read_all(index_path, &text, &len, err) != 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) {
        return lp_fail(err, "%s: malformed JSON: %s (line %d, column %d)", index_path, jerr.text,
                       jerr.line, jerr.column);
    }
    const json_t *weight_map = json_object_get(root, "weight_map");
    const char **names = NULL;
    int n = 0, rc = -1;
    if (!json_is_object(weight_map) || json_object_size(weight_map) == 0) {
        lp_fail(err, "%s: 'weight_map' must be a non-empty object of tensor name -> file",
                index_path);
    } else if (collect_shards(weight_map, index_path, &names, &n, err) == 0 &&
               open_shards(w, dir, index_path, names, n, err) == 0) {
        rc = check_weight_map(w, weight_map, names, index_path, err);
    }
    free(names);
    json_decref(root);
    return rc;
}

int hf_weights_open(hf_weights *w, const char *dir, lp_err *err) {
    memset(w, 0, sizeof *w);
    char single[PATH_MAX], index[PATH_MAX];
    if (join_path(single, sizeof single, dir, SINGLE_FILE, err) != 0 ||
        join_path(index, sizeof index, dir, INDEX_FILE, err) != 0) {
        return -1;
    }
    int rc;
    if (fs_exists(single)) {
        rc = open_single(w, single, err);
    } else if (fs_exists(index)) {
        rc = open_index(w, dir, index, err);
    } else {
        return lp_fail(err, "%s: no weights: neither %s nor %s exists", dir, SINGLE_FILE,
                       INDEX_FILE);
    }
    if (rc != 0) hf_weights_close(w);
    return rc;
}

void hf_weights_close(hf_weights *w) {
    for (int i = 0; i < w->n_files; i++) st_close(&w->files[i]);
    free(w->files);
    memset(w, 0, sizeof *w);
}

static const st_tensor *find_in_files(const hf_weights *w, const char *name) {
    for (int i = 0; i < w->n_files; i++) {
        const st_tensor *t = st_find(&w->files[i], name);
        if (t) return t;
    }
    return NULL;
}

const st_tensor *hf_weights_find(const hf_weights *w, const char *prefix, const char *name) {
    const st_tensor *t = find_in_files(w, name);
    if (t || !prefix || !prefix[0]) return t;
    char full[1024];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    if (n < 0 || (size_t)n >= sizeof full) return NULL;
    return find_in_files(w, full);
}

size_t hf_weights_total_bytes(const hf_weights *w) {
    size_t total = 0;
    for (int i = 0; i < w->n_files; i++) {
        for (int j = 0; j < w->files[i].n_tensors; j++) total += w->files[i].tensors[j].nbytes;
    }
    return total;
}
