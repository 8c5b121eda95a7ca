/* Checkpoint folders: writing them atomically, finding them, loading and checking them. */
#include "checkpoint.h"

#include "checkpoint_sums.h"
#include "fsutil.h"
#include "peft.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATHBUF 4352

static void test_sleep(void) {
    const char *v = getenv("LORAPS_TEST_CHECKPOINT_SLEEP_MS");
    if (!v || !*v) return;
    long ms = strtol(v, NULL, 10);
    if (ms <= 0) return;
    struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
}

/* Removes a folder holding plain files only (what a checkpoint folder holds). */
static int remove_flat_dir(const char *dir, lp_err *err) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : lp_fail(err, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[PATHBUF];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    if (rmdir(dir) < 0 && errno != ENOENT) return lp_fail(err, "%s: %s", dir, strerror(errno));
    return 0;
}

/* ---- writing -------------------------------------------------------------------------------- */

static int write_optimizer(const char *dir, const lora_adapter *a, const float *m, const float *v,
                           uint64_t updates, lp_err *err) {
    st_writer *w = st_writer_new();
    if (!w) return lp_fail(err, "out of memory");
    char name[LORA_MAX_NAME + 96], text[32];
    snprintf(text, sizeof text, "%" PRIu64, updates);
    int rc = st_writer_set_metadata(w, "format", "pt", err);
    if (rc == 0) rc = st_writer_set_metadata(w, "step", text, err);
    for (int i = 0; i < a->n_tensors && rc == 0; i++) {
        const lora_tensor *t = &a->tensors[i];
        int64_t shape[2] = {t->rows, t->cols};
        snprintf(name, sizeof name, "exp_avg.%s", t->name);
        rc = st_writer_add(w, name, DT_F32, 2, shape, m + t->offset, err);
        snprintf(name, sizeof name, "exp_avg_sq.%s", t->name);
        if (rc == 0) rc = st_writer_add(w, name, DT_F32, 2, shape, v + t->offset, err);
    }
    int64_t step = (int64_t)updates, one = 1;
    if (rc == 0) rc = st_writer_add(w, "step", DT_I64, 1, &one, &step, err);
    char path[PATHBUF + 64];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    if (rc == 0) rc = st_writer_write(w, path, err);
    st_writer_free(w);
    return rc;
}

static char *hex64(char *buf, uint64_t x) {
    snprintf(buf, 17, "%016" PRIx64, x);
    return buf;
}

/* "key value" lines into {"key": "value"}. */
static json_t *settings_json(const char *text) {
    json_t *o = json_object();
    if (!text) return o;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[1200];
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = 0;
            char *k = line;
            while (*k == ' ') k++;
            char *sp = strchr(k, ' ');
            if (sp) {
                *sp = 0;
                char *val = sp + 1;
                while (*val == ' ') val++;
                if (*k) json_object_set_new(o, k, json_string(val));
            }
        }
        p += len + (eol ? 1 : 0);
    }
    return o;
}

/* The size and SHA-256 of each file written so far, into files (for trainer_state.json) and sums
 * (for SHA256SUMS). */
static int record_files(const char *dir, int with_optimizer, json_t *files, ckpt_sums *sums,
                        lp_err *err) {
    static const char *names[] = {"adapter_config.json", "adapter_model.safetensors",
                                  CKPT_OPTIMIZER_FILE};
    char path[PATHBUF + 64], hex[65];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (i == 2 && !with_optimizer) continue;
        unsigned char digest[CKPT_SHA256_BYTES];
        uint64_t n;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (ckpt_sha256_file(path, digest, &n, err) < 0 ||
            ckpt_sums_add(sums, names[i], digest, err) < 0)
            return -1;
        ckpt_sha256_hex(digest, hex);
        json_t *x = json_object();
        json_object_set_new(x, "bytes", json_integer((json_int_t)n));
        json_object_set_new(x, "sha256", json_string(hex));
        json_object_set_new(files, names[i], x);
    }
    return 0;
}

/* trainer_state.json, then SHA256SUMS: the state file's own hash is known only once it is. */
static int write_state(const char *dir, const ckpt_info *in, int with_optimizer, lp_err *err) {
    char hx[17], path[PATHBUF + 64];
    json_t *o = json_object();
    json_object_set_new(o, "format", json_string(CKPT_FORMAT));
    json_object_set_new(o, "format_version", json_integer(CKPT_FORMAT_VERSION));
    json_object_set_new(o, "step", json_integer((json_int_t)in->step));
    json_object_set_new(o, "optimizer_updates", json_integer((json_int_t)in->updates));
    json_object_set_new(o, "total_updates", json_integer((json_int_t)in->total_updates));
    json_object_set_new(o, "mode", json_string(in->mode));
    json_object_set_new(o, "n_shards", json_integer(in->n_shards));
    json_object_set_new(o, "base_model", json_string(in->base_model));
    json_object_set_new(o, "base_model_fingerprint", json_string(hex64(hx, in->base_fingerprint)));
    json_object_set_new(o, "job_fingerprint", json_string(hex64(hx, in->job_id)));
    json_object_set_new(o, "sequences_per_step", json_integer((json_int_t)in->sequences_per_step));
    if (in->data_id) json_object_set_new(o, "data_id", json_string(hex64(hx, in->data_id)));
    json_t *ranks = json_array();
    for (int r = 0; r < in->n_ranks; r++) {
        json_t *x = json_object();
        json_object_set_new(x, "rank", json_integer(r));
        json_object_set_new(x, "next_step", json_integer((json_int_t)in->ranks[r].next_step));
        json_object_set_new(x, "next_sequence",
                            json_integer((json_int_t)in->ranks[r].next_sequence));
        json_array_append_new(ranks, x);
    }
    json_object_set_new(o, "data_position", ranks);
    /* Every random draw is a pure function of the seed and a position: the adapter init of the
     * seed, data sequence i of (seed, i), the LoRA dropout masks of a micro-batch of
     * (seed, its first sequence). The seed and the data positions are therefore the whole RNG
     * state. */
    json_t *rng = json_object();
    json_object_set_new(rng, "seed", json_string(hex64(hx, in->seed)));
    json_object_set_new(rng, "seed_decimal", json_integer((json_int_t)in->seed));
    json_object_set_new(rng, "adapter_init", json_string("xoshiro256** seeded by seed"));
    json_object_set_new(rng, "data", json_string("sequence i: rng_mix(seed, i)"));
    json_object_set_new(rng, "dropout",
                        json_string("micro-batch from sequence i: rng_mix(seed, i)"));
    json_object_set_new(o, "rng", rng);
    json_object_set_new(o, "job", settings_json(in->job_settings));
    json_t *fl = json_object();
    json_object_set_new(o, "files", fl);
    ckpt_sums sums = {0};
    char *text = NULL;
    int rc = record_files(dir, with_optimizer, fl, &sums, err);
    if (rc == 0 && !(text = json_dumps(o, JSON_INDENT(2)))) rc = lp_fail(err, "out of memory");
    json_decref(o);
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    if (rc == 0) rc = fs_write_atomic(path, text, strlen(text), err);
    if (rc == 0) {
        unsigned char digest[CKPT_SHA256_BYTES];
        ckpt_sha256(text, strlen(text), digest);
        rc = ckpt_sums_add(&sums, CKPT_STATE_FILE, digest, err);
    }
    if (rc == 0) rc = ckpt_sums_write(dir, &sums, err);
    free(text);
    ckpt_sums_free(&sums);
    return rc;
}

static int point_latest(const char *parent, const char *name, lp_err *err) {
    char tmp[PATHBUF], latest[PATHBUF];
    snprintf(tmp, sizeof tmp, "%s/.latest.tmp-%ld", parent, (long)getpid());
    snprintf(latest, sizeof latest, "%s/latest", parent);
    unlink(tmp);
    if (symlink(name, tmp) < 0) return lp_fail(err, "%s: %s", tmp, strerror(errno));
    if (rename(tmp, latest) < 0) {
        int e = errno;
        unlink(tmp);
        return lp_fail(err, "%s: %s", latest, strerror(e));
    }
    return fs_fsync_dir(parent, err);
}

/* A write that failed (a full or read-only disk) leaves no half folder taking up the space. */
static int partial_failed(const char *partial, const char *final, lp_err *err) {
    lp_wrap(err, "%s", final);
    lp_err ignored;
    remove_flat_dir(partial, &ignored);
    return -1;
}

int ckpt_write(const char *parent, const lora_adapter *a, const float *m, const float *v,
               const ckpt_info *info, const ckpt_write_opts *o, char *written, size_t written_size,
               lp_err *err) {
    if (fs_mkdirs(parent, err) < 0) return -1;
    char name[64], partial[PATHBUF], final[PATHBUF], old[PATHBUF];
    snprintf(name, sizeof name, "checkpoint-%" PRIu64, info->step);
    snprintf(partial, sizeof partial, "%s/.%s.partial", parent, name);
    snprintf(final, sizeof final, "%s/%s", parent, name);
    snprintf(old, sizeof old, "%s/.%s.old", parent, name);
    if (remove_flat_dir(partial, err) < 0) return -1; /* left by a killed writer */
    if (fs_mkdirs(partial, err) < 0) return -1;
    model_card card = o->card ? *o->card : model_card_unknown();
    if (!o->card) {
        card.step = info->step;
        card.mode = info->mode;
        card.workers = info->n_ranks;
        card.job_settings = info->job_settings;
    }
    card.folder = final; /* where it will be, not the partial folder written now */
    if (peft_save_card(partial, a, o->base_model, o->fan_in_fan_out, &card, err) < 0)
        return partial_failed(partial, final, err);
    test_sleep();
    if (m && v && write_optimizer(partial, a, m, v, info->updates, err) < 0)
        return partial_failed(partial, final, err);
    test_sleep();
    if (write_state(partial, info, m && v, err) < 0) return partial_failed(partial, final, err);
    if (fs_fsync_dir(partial, err) < 0) return partial_failed(partial, final, err);
    test_sleep();
    /* The folder appears under its name only now, complete. */
    struct stat st;
    int replacing = stat(final, &st) == 0;
    if (replacing) {
        if (remove_flat_dir(old, err) < 0) return -1;
        if (rename(final, old) < 0) return lp_fail(err, "%s: %s", final, strerror(errno));
    }
    if (rename(partial, final) < 0) return lp_fail(err, "%s: %s", final, strerror(errno));
    if (fs_fsync_dir(parent, err) < 0) return -1;
    if (replacing && remove_flat_dir(old, err) < 0) return -1;
    test_sleep();
    if (point_latest(parent, name, err) < 0) return -1;
    if (written) snprintf(written, written_size, "%s", final);
    return ckpt_prune(parent, o->keep, err);
}

/* ---- pruning -------------------------------------------------------------------------------- */

static int parse_step(const char *s, const char *prefix, const char *suffix, uint64_t *step) {
    size_t pl = strlen(prefix), sl = strlen(suffix), n = strlen(s);
    if (n <= pl + sl || strncmp(s, prefix, pl) || strcmp(s + n - sl, suffix)) return -1;
    uint64_t x = 0;
    for (size_t i = pl; i < n - sl; i++) {
        if (s[i] < '0' || s[i] > '9' || x > UINT64_MAX / 10 - 1) return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    *step = x;
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ckpt_prune(const char *parent, int keep, lp_err *err) {
    DIR *d = opendir(parent);
    if (!d) return lp_fail(err, "%s: %s", parent, strerror(errno));
    uint64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    char path[PATHBUF];
    while ((e = readdir(d))) {
        uint64_t s;
        /* leftovers of a writer killed mid-way (there is one writer per folder) */
        if (parse_step(e->d_name, ".checkpoint-", ".partial", &s) == 0 ||
            parse_step(e->d_name, ".checkpoint-", ".old", &s) == 0 ||
            parse_step(e->d_name, ".checkpoint-", ".deleting", &s) == 0) {
            snprintf(path, sizeof path, "%s/%s", parent, e->d_name);
            remove_flat_dir(path, NULL);
            continue;
        }
        if (parse_step(e->d_name, "checkpoint-", "", &s) == 0) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                uint64_t *p = realloc(steps, cap * sizeof *p);
                if (!p) break;
                steps = p;
            }
            steps[n++] = s;
        }
    }
    closedir(d);
    int rc = 0;
    if (keep > 0 && n > (size_t)keep) {
        qsort(steps, n, sizeof *steps, cmp_desc);
        for (size_t i = (size_t)keep; i < n && rc == 0; i++) {
            /* Renamed away first, so no half-deleted folder ever carries a checkpoint's name. */
            char gone[PATHBUF];
            snprintf(path, sizeof path, "%s/checkpoint-%" PRIu64, parent, steps[i]);
            snprintf(gone, sizeof gone, "%s/.checkpoint-%" PRIu64 ".deleting", parent, steps[i]);
            if (remove_flat_dir(gone, err) < 0 || rename(path, gone) < 0 ||
                remove_flat_dir(gone, err) < 0)
                rc = lp_fail(err, "removing %s failed", path);
        }
    }
    free(steps);
    return rc;
}

/* ---- finding -------------------------------------------------------------------------------- */

int ckpt_resolve(const char *path, const char *parent, char *out, size_t size, lp_err *err) {
    char cand[PATHBUF], probe[PATHBUF + 32];
    if (!strcmp(path, "latest")) {
        if (!parent || !parent[0])
            return lp_fail(err, "'latest' needs the folder the checkpoints are in (--out)");
        snprintf(cand, sizeof cand, "%s/latest", parent);
        struct stat st;
        if (lstat(cand, &st) < 0)
            return lp_fail(err, "%s: no checkpoint has been completed there", cand);
    } else {
        snprintf(cand, sizeof cand, "%s", path);
        snprintf(probe, sizeof probe, "%s/adapter_config.json", cand);
        char latest[PATHBUF + 16];
        snprintf(latest, sizeof latest, "%s/latest", cand);
        if (!fs_exists(probe) && fs_exists(latest)) {
            if (strlen(latest) >= sizeof cand) return lp_fail(err, "%s: path too long", latest);
            memcpy(cand, latest, strlen(latest) + 1);
        }
    }
    char real[PATH_MAX];
    if (!realpath(cand, real)) return lp_fail(err, "%s: %s", cand, strerror(errno));
    snprintf(probe, sizeof probe, "%s/adapter_config.json", real);
    if (!fs_exists(probe))
        return lp_fail(err, "%s: not a checkpoint or PEFT adapter folder (no adapter_config.json)",
                       real);
    if (strlen(real) >= size) return lp_fail(err, "%s: path too long", real);
    snprintf(out, size, "%s", real);
    return 0;
}

/* ---- loading -------------------------------------------------------------------------------- */

void ckpt_info_free(ckpt_info *info) {
    free(info->ranks);
    free(info->job_settings);
    memset(info, 0, sizeof *info);
}

static int get_u64(json_t *o, const char *key, uint64_t *out) {
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(json_string_value(v), &end, 16);
        if (!errno && *json_string_value(v) && !*end) {
            *out = x;
            return 0;
        }
    }
    return -1;
}

/* A file against the size and hash recorded for it by `by`: SHA-256 when want_sha is given,
 * else (format_version 1) hash64_fnv. */
static int check_file(const char *dir, const char *name, uint64_t want_n,
                      const unsigned char *want_sha, uint64_t want_fnv, const char *by,
                      lp_err *err) {
    char path[PATHBUF];
    unsigned char got_sha[CKPT_SHA256_BYTES];
    uint64_t n, got_fnv = 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = want_sha ? ckpt_sha256_file(path, got_sha, &n, err)
                      : ckpt_fnv_file(path, &got_fnv, &n, err);
    if (rc < 0) return lp_wrap(err, "the checkpoint is incomplete");
    if (want_n != UINT64_MAX && n != want_n)
        return lp_fail(err,
                       "%s: %" PRIu64 " bytes where %s records %" PRIu64
                       ": the checkpoint is truncated or corrupt",
                       path, n, by, want_n);
    if (want_sha ? memcmp(got_sha, want_sha, CKPT_SHA256_BYTES) != 0 : got_fnv != want_fnv)
        return lp_fail(err,
                       "%s: its content does not match the %s %s records: the checkpoint is "
                       "corrupt",
                       path, want_sha ? "SHA-256" : "hash64", by);
    return 0;
}

/* Every file trainer_state.json lists (and, from SHA256SUMS, any other), as they were written.
 * Where both record a file they must agree. */
static int check_files(const char *dir, const char *state_path, json_t *files,
                       const ckpt_sums *sums, int legacy, lp_err *err) {
    const char *fname;
    json_t *fv;
    json_object_foreach(files, fname, fv) {
        uint64_t want_n, want_fnv = 0;
        unsigned char want_sha[CKPT_SHA256_BYTES];
        json_t *sha = json_object_get(fv, "sha256");
        if (strchr(fname, '/') || get_u64(fv, "bytes", &want_n) < 0 ||
            (legacy
                 ? get_u64(fv, "hash64", &want_fnv) < 0
                 : !json_is_string(sha) || ckpt_sha256_parse(json_string_value(sha), want_sha) < 0))
            return lp_fail(err, "%s: files['%s'] is malformed", state_path, fname);
        const unsigned char *listed = ckpt_sums_find(sums, fname);
        if (!legacy && !listed)
            return lp_fail(err, "%s/%s: does not list %s: the checkpoint is corrupt", dir,
                           CKPT_SUMS_FILE, fname);
        if (!legacy && listed && memcmp(listed, want_sha, CKPT_SHA256_BYTES) != 0)
            return lp_fail(err,
                           "%s/%s: %s and %s record different SHA-256s for it: the checkpoint "
                           "is corrupt",
                           dir, fname, CKPT_SUMS_FILE, CKPT_STATE_FILE);
        if (check_file(dir, fname, want_n, legacy ? NULL : want_sha, want_fnv, CKPT_STATE_FILE,
                       err) < 0)
            return -1;
    }
    for (int i = 0; i < sums->n; i++) {
        if (!strcmp(sums->names[i], CKPT_STATE_FILE) || json_object_get(files, sums->names[i]))
            continue;
        if (check_file(dir, sums->names[i], UINT64_MAX, sums->digests[i], 0, CKPT_SUMS_FILE, err) <
            0)
            return -1;
    }
    if (!json_object_get(files, "adapter_model.safetensors"))
        return lp_fail(err, "%s: lists no adapter_model.safetensors", state_path);
    return 0;
}

/* trainer_state.json's fields into info (files aside). */
static int parse_state(json_t *o, const char *path, ckpt_info *info, lp_err *err) {
    json_t *ranks = json_object_get(o, "data_position");
    json_t *rng = json_object_get(o, "rng");
    json_t *mode = json_object_get(o, "mode");
    json_t *base = json_object_get(o, "base_model");
    json_t *n_shards = json_object_get(o, "n_shards");
    if (get_u64(o, "step", &info->step) < 0 ||
        get_u64(o, "optimizer_updates", &info->updates) < 0 ||
        get_u64(o, "total_updates", &info->total_updates) < 0 ||
        get_u64(o, "base_model_fingerprint", &info->base_fingerprint) < 0 ||
        get_u64(o, "job_fingerprint", &info->job_id) < 0 ||
        get_u64(o, "sequences_per_step", &info->sequences_per_step) < 0 || !json_is_object(rng) ||
        get_u64(rng, "seed", &info->seed) < 0 || !json_is_string(mode) || !json_is_array(ranks) ||
        !json_is_object(json_object_get(o, "files")) || !json_is_integer(n_shards))
        return lp_fail(err, "%s: a field is missing or has the wrong type", path);
    snprintf(info->mode, sizeof info->mode, "%s", json_string_value(mode));
    snprintf(info->base_model, sizeof info->base_model, "%s",
             json_is_string(base) ? json_string_value(base) : "");
    info->n_shards = (int)json_integer_value(n_shards);
    /* optional: older checkpoints and demo-task jobs have none; a legacy one's is of the old
     * kind and would refuse every worker */
    if (info->legacy ||
        (json_object_get(o, "data_id") && get_u64(o, "data_id", &info->data_id) < 0))
        info->data_id = 0;
    size_t n = json_array_size(ranks);
    info->n_ranks = (int)n;
    info->ranks = calloc(n ? n : 1, sizeof *info->ranks);
    if (!info->ranks) return lp_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(ranks, i);
        if (json_integer_value(json_object_get(x, "rank")) != (json_int_t)i ||
            get_u64(x, "next_step", &info->ranks[i].next_step) < 0 ||
            get_u64(x, "next_sequence", &info->ranks[i].next_sequence) < 0)
            return lp_fail(err, "%s: data_position[%zu] is malformed", path, i);
    }
    /* job settings back into "key value" lines */
    json_t *jobj = json_object_get(o, "job");
    if (json_is_object(jobj)) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        const char *k;
        json_t *v;
        json_object_foreach(jobj, k, v) {
            if (f && json_is_string(v)) fprintf(f, "%s %s\n", k, json_string_value(v));
        }
        if (f) fclose(f);
        info->job_settings = text;
    }
    return 0;
}

/* The state file against its own SHA-256 in SHA256SUMS, before anything in it is believed. */
static int check_state_file(const char *dir, const ckpt_sums *sums, lp_err *err) {
    const unsigned char *want = ckpt_sums_find(sums, CKPT_STATE_FILE);
    if (!want)
        return lp_fail(err, "%s/%s: does not list %s: the checkpoint is corrupt", dir,
                       CKPT_SUMS_FILE, CKPT_STATE_FILE);
    return check_file(dir, CKPT_STATE_FILE, UINT64_MAX, want, 0, CKPT_SUMS_FILE, err);
}

int ckpt_read_state(const char *dir, ckpt_info *info, lp_err *err) {
    memset(info, 0, sizeof *info);
    char path[PATHBUF];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    ckpt_sums sums;
    int no_sums = ckpt_sums_read(dir, &sums, err);
    if (no_sums < 0) return lp_wrap(err, "the checkpoint is corrupt");
    if (!no_sums && check_state_file(dir, &sums, err) < 0) {
        ckpt_sums_free(&sums);
        return -1;
    }
    json_error_t jerr;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        ckpt_sums_free(&sums);
        return lp_fail(err, "%s:%d: %s (the checkpoint's trainer state is corrupt)", path,
                       jerr.line, jerr.text);
    }
    int rc = -1;
    json_t *fmt = json_object_get(o, "format");
    json_int_t version = json_integer_value(json_object_get(o, "format_version"));
    if (!json_is_object(o) || !json_is_string(fmt) || strcmp(json_string_value(fmt), CKPT_FORMAT))
        lp_fail(err, "%s: not a loraps trainer state (format is not \"%s\")", path, CKPT_FORMAT);
    else if (version != 1 && version != CKPT_FORMAT_VERSION)
        lp_fail(err, "%s: format_version %lld is not one this loraps reads (1, %d)", path,
                (long long)version, CKPT_FORMAT_VERSION);
    else if (version != 1 && no_sums)
        lp_fail(err, "%s/%s is missing: the checkpoint is incomplete", dir, CKPT_SUMS_FILE);
    else if ((info->legacy = version == 1), parse_state(o, path, info, err) == 0)
        rc = check_files(dir, path, json_object_get(o, "files"), &sums, info->legacy, err);
    json_decref(o);
    ckpt_sums_free(&sums);
    if (rc) ckpt_info_free(info);
    return rc;
}

int ckpt_verify(const char *dir, ckpt_verified *how, lp_err *err) {
    char path[PATHBUF];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    *how = CKPT_NOTHING_RECORDED;
    if (fs_exists(path)) {
        ckpt_info info;
        if (ckpt_read_state(dir, &info, err) < 0) return -1;
        *how = info.legacy ? CKPT_LEGACY_VERIFIED : CKPT_SHA256_VERIFIED;
        ckpt_info_free(&info);
        return 0;
    }
    ckpt_sums sums;
    int none = ckpt_sums_read(dir, &sums, err);
    if (none) return none < 0 ? -1 : 0;
    int rc = 0;
    for (int i = 0; i < sums.n && rc == 0; i++)
        rc = check_file(dir, sums.names[i], UINT64_MAX, sums.digests[i], 0, CKPT_SUMS_FILE, err);
    ckpt_sums_free(&sums);
    if (rc == 0) *how = CKPT_SHA256_VERIFIED;
    return rc;
}

int ckpt_load_adapter(const char *dir, const lora_module *modules, int n_modules, lora_adapter *a,
                      ckpt_verified *how, lp_err *err) {
    if (ckpt_verify(dir, how, err) < 0) return -1;
    return peft_load(dir, modules, n_modules, a, err);
}

static int load_optimizer(const char *dir, ckpt_loaded *c, lp_err *err) {
    char path[PATHBUF], name[LORA_MAX_NAME + 96];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    st_file f;
    if (st_open(&f, path, err) < 0) return -1;
    lora_adapter *a = &c->adapter;
    size_t n = a->n_params ? a->n_params : 1;
    c->m = calloc(n, sizeof(float));
    c->v = calloc(n, sizeof(float));
    int rc = c->m && c->v ? 0 : lp_fail(err, "out of memory");
    int expected = 2 * a->n_tensors + 1;
    if (rc == 0 && f.n_tensors != expected)
        rc = lp_fail(err, "%s: %d tensors, the adapter implies %d", path, f.n_tensors, expected);
    for (int i = 0; i < a->n_tensors && rc == 0; i++) {
        const lora_tensor *lt = &a->tensors[i];
        for (int k = 0; k < 2 && rc == 0; k++) {
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", lt->name);
            const st_tensor *t = st_find(&f, name);
            if (!t)
                rc = lp_fail(err, "%s: tensor '%s' is missing", path, name);
            else if (t->dtype != DT_F32 || t->ndim != 2 || t->shape[0] != lt->rows ||
                     t->shape[1] != lt->cols)
                rc = lp_fail(err, "%s: tensor '%s' should be F32 [%lld,%lld]", path, name,
                             (long long)lt->rows, (long long)lt->cols);
            else
                rc = st_read_f32(t, (k ? c->v : c->m) + lt->offset, lt->numel, err);
        }
    }
    const st_tensor *st = rc == 0 ? st_find(&f, "step") : NULL;
    if (rc == 0) {
        int64_t step = -1;
        if (!st || st->dtype != DT_I64 || st->numel != 1)
            rc = lp_fail(err, "%s: tensor 'step' (I64 [1]) is missing", path);
        else if (memcpy(&step, st->data, sizeof step), (uint64_t)step != c->info.updates)
            rc = lp_fail(err, "%s: step %lld, but %s says %" PRIu64 " optimizer updates", path,
                         (long long)step, CKPT_STATE_FILE, c->info.updates);
    }
    st_close(&f);
    return rc;
}

int ckpt_load(const char *dir, const lora_module *modules, int n_modules, ckpt_loaded *out,
              lp_err *err) {
    memset(out, 0, sizeof *out);
    char path[PATHBUF];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    if (fs_exists(path)) {
        if (ckpt_read_state(dir, &out->info, err) < 0) return -1;
        out->has_state = 1;
    }
    if (peft_load(dir, modules, n_modules, &out->adapter, err) < 0) {
        ckpt_info_free(&out->info);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    if (out->has_state && fs_exists(path)) {
        if (load_optimizer(dir, out, err) < 0) {
            ckpt_loaded_free(out);
            return -1;
        }
        out->has_optimizer = 1;
    }
    return 0;
}

void ckpt_loaded_free(ckpt_loaded *c) {
    lora_adapter_free(&c->adapter);
    free(c->m);
    free(c->v);
    ckpt_info_free(&c->info);
    memset(c, 0, sizeof *c);
}
