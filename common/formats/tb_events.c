#include "tb_events.h"

#include "fsutil.h"
#include "tensorboard.pb-c.h"
#include "tfrecord.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define TB_MAX_FILES_PER_SECOND 1000

/* The file is opened for each record and closed again, not held: a server that holds no file
 * open for writing lets its disk be remounted read-only (or unmounted) under it, and a reader
 * sees each record as soon as it is written. One open and close per step costs microseconds. */
struct tb_writer {
    char *path;
    /* tags whose description this file already holds (TensorBoard keeps a tag's first) */
    char **described;
    int n_described, cap_described;
};

/* ---- writing -------------------------------------------------------------------------------- */

static int write_event(tb_writer *w, const Tensorboard__Event *ev, lp_err *err) {
    size_t n = tensorboard__event__get_packed_size(ev);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) return lp_fail(err, "out of memory");
    tensorboard__event__pack(ev, buf);
    int rc = -1, fd = open(w->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        lp_fail(err, "%s", strerror(errno));
    } else if ((rc = tfrecord_write(fd, buf, n, err)) < 0) {
        /* a full disk may have taken part of the record: cut it off, so the file stays
         * readable up to the last whole record */
        if (ftruncate(fd, st.st_size) != 0) lp_wrap(err, "a partial record is left at the end");
    } else if (close(fd) != 0) {
        fd = -1;
        rc = lp_fail(err, "close failed: %s", strerror(errno));
    } else {
        fd = -1;
    }
    if (fd >= 0) close(fd);
    free(buf);
    return rc < 0 ? lp_wrap(err, "%s", w->path) : 0;
}

static int write_header(tb_writer *w, double wall_time, int64_t start_step, lp_err *err) {
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    Tensorboard__SourceMetadata src = TENSORBOARD__SOURCE_METADATA__INIT;
    src.writer = TB_WRITER_NAME;
    ev.wall_time = wall_time;
    ev.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION;
    ev.file_version = TB_FILE_VERSION;
    ev.source_metadata = &src;
    if (write_event(w, &ev, err) < 0) return -1;
    if (start_step < 0) return 0;
    Tensorboard__Event start = TENSORBOARD__EVENT__INIT;
    Tensorboard__SessionLog log = TENSORBOARD__SESSION_LOG__INIT;
    log.status = TENSORBOARD__SESSION_LOG__SESSION_STATUS__START;
    start.wall_time = wall_time;
    start.step = start_step;
    start.what_case = TENSORBOARD__EVENT__WHAT_SESSION_LOG;
    start.session_log = &log;
    return write_event(w, &start, err);
}

void tb_writer_close(tb_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_described; i++) free(w->described[i]);
    free(w->described);
    free(w->path);
    free(w);
}

int tb_writer_open_file(tb_writer **out, const char *path, double wall_time, int64_t start_step,
                        lp_err *err) {
    *out = NULL;
    tb_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return lp_fail(err, "out of memory");
    }
    /* O_EXCL: a file another writer started (or an earlier run's) is never appended to. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0) {
        lp_fail(err, "%s: %s", path, strerror(errno));
        tb_writer_close(w);
        return -1;
    }
    if (write_header(w, wall_time, start_step, err) < 0) {
        tb_writer_close(w);
        return -1;
    }
    *out = w;
    return 0;
}

static double now_seconds(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* The largest <seconds> of the events.out.tfevents.<seconds>.* files in dir; -1 when none. */
static long long newest_file_seconds(const char *dir) {
    DIR *d = opendir(dir);
    long long newest = -1;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) {
        long long secs;
        if (sscanf(e->d_name, "events.out.tfevents.%lld.", &secs) == 1 && secs > newest)
            newest = secs;
    }
    closedir(d);
    return newest;
}

int tb_writer_open(tb_writer **out, const char *dir, int64_t start_step, lp_err *err) {
    *out = NULL;
    if (fs_mkdirs(dir, err) < 0) return -1;
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    double t = now_seconds();
    /* TensorBoard reads a run's files in name order: the new file's seconds must be past every
     * existing file's, or a run resumed within the same second (by a smaller pid) would be read
     * before the run it resumes. */
    long long secs = (long long)t, newest = newest_file_seconds(dir);
    if (newest >= secs) secs = newest + 1;
    char path[PATH_MAX];
    for (int n = 0; n < TB_MAX_FILES_PER_SECOND; n++) {
        snprintf(path, sizeof path, "%s/events.out.tfevents.%lld.%s.%ld.%d", dir, secs, host,
                 (long)getpid(), n);
        if (fs_exists(path)) continue;
        return tb_writer_open_file(out, path, t, start_step, err);
    }
    return lp_fail(err, "%s: no free name for an event file", dir);
}

const char *tb_writer_path(const tb_writer *w) {
    return w->path;
}

/* 1 the first time a tag is seen by this file (it then gets its description), else 0. */
static int first_sight(tb_writer *w, const char *tag, lp_err *err) {
    for (int i = 0; i < w->n_described; i++)
        if (!strcmp(w->described[i], tag)) return 0;
    if (w->n_described == w->cap_described) {
        int cap = w->cap_described ? 2 * w->cap_described : 16;
        char **nd = realloc(w->described, (size_t)cap * sizeof *nd);
        if (!nd) return lp_fail(err, "out of memory");
        w->described = nd;
        w->cap_described = cap;
    }
    if (!(w->described[w->n_described] = strdup(tag))) return lp_fail(err, "out of memory");
    w->n_described++;
    return 1;
}

int tb_writer_scalars(tb_writer *w, int64_t step, double wall_time, const tb_scalar *s, int n,
                      lp_err *err) {
    Tensorboard__Summary__Value *values = calloc((size_t)n + 1, sizeof *values);
    Tensorboard__Summary__Value **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    Tensorboard__SummaryMetadata *meta = calloc((size_t)n + 1, sizeof *meta);
    int rc = -1;
    if (!values || !ptrs || !meta) {
        lp_fail(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        Tensorboard__Summary__Value *v = &values[i];
        tensorboard__summary__value__init(v);
        v->tag = (char *)s[i].tag;
        v->value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        v->simple_value = (float)s[i].value;
        int first = first_sight(w, s[i].tag, err);
        if (first < 0) goto done;
        if (first && s[i].description) {
            tensorboard__summary_metadata__init(&meta[i]);
            meta[i].summary_description = (char *)s[i].description;
            v->metadata = &meta[i];
        }
        ptrs[i] = v;
    }
    Tensorboard__Summary summary = TENSORBOARD__SUMMARY__INIT;
    summary.n_value = (size_t)n;
    summary.value = ptrs;
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    ev.wall_time = wall_time;
    ev.step = step;
    ev.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY;
    ev.summary = &summary;
    rc = write_event(w, &ev, err);
done:
    free(values);
    free(ptrs);
    free(meta);
    return rc;
}

/* ---- reading -------------------------------------------------------------------------------- */

static const char *nonnull(const char *s) {
    return s ? s : "";
}

/* Hands one decoded Event to fn: its kind, and for a summary the values that are scalars. */
static int visit_event(const Tensorboard__Event *ev, tb_event_fn fn, void *ctx, lp_err *err) {
    tb_event e = {TB_EVENT_OTHER, ev->wall_time, ev->step, NULL, NULL, 0, NULL};
    tb_scalar *scalars = NULL;
    if (ev->what_case == TENSORBOARD__EVENT__WHAT_FILE_VERSION) {
        e.kind = TB_EVENT_FILE_VERSION;
        e.file_version = nonnull(ev->file_version);
        e.writer = ev->source_metadata ? nonnull(ev->source_metadata->writer) : "";
    } else if (ev->what_case == TENSORBOARD__EVENT__WHAT_SESSION_LOG && ev->session_log &&
               ev->session_log->status == TENSORBOARD__SESSION_LOG__SESSION_STATUS__START) {
        e.kind = TB_EVENT_SESSION_START;
    } else if (ev->what_case == TENSORBOARD__EVENT__WHAT_SUMMARY && ev->summary) {
        const Tensorboard__Summary *sm = ev->summary;
        e.kind = TB_EVENT_SCALARS;
        scalars = calloc(sm->n_value + 1, sizeof *scalars);
        if (!scalars) return lp_fail(err, "out of memory");
        for (size_t i = 0; i < sm->n_value; i++) {
            const Tensorboard__Summary__Value *v = sm->value[i];
            if (v->value_case != TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE) continue;
            const char *d = v->metadata ? v->metadata->summary_description : NULL;
            scalars[e.n_scalars].tag = nonnull(v->tag);
            scalars[e.n_scalars].value = v->simple_value;
            scalars[e.n_scalars].description = d && d[0] ? d : NULL;
            e.n_scalars++;
        }
        e.scalars = scalars;
    }
    int rc = fn(&e, ctx);
    free(scalars);
    return rc;
}

int tb_read_file(const char *path, tb_event_fn fn, void *ctx, lp_err *err) {
    tfrecord_reader r;
    if (tfrecord_reader_open(&r, path, err) < 0) return -1;
    int rc = 0;
    for (;;) {
        const void *data;
        size_t len;
        uint64_t at = r.offset;
        int got = tfrecord_next(&r, &data, &len, err);
        if (got <= 0) {
            rc = got;
            break;
        }
        Tensorboard__Event *ev = tensorboard__event__unpack(NULL, len, data);
        if (!ev) {
            rc = lp_fail(err, "%s: the record at byte %llu is not an Event", path,
                         (unsigned long long)at);
            break;
        }
        rc = visit_event(ev, fn, ctx, err);
        tensorboard__event__free_unpacked(ev, NULL);
        if (rc) break;
    }
    tfrecord_reader_close(&r);
    return rc;
}

/* ---- a run folder --------------------------------------------------------------------------- */

typedef struct run_reader {
    tb_run *run;
    int cap_points, cap_described;
    int oom;
    int64_t next_order;
} run_reader;

static void drop_from(tb_run *r, int64_t step) {
    int kept = 0;
    for (int i = 0; i < r->n_points; i++) {
        if (r->points[i].step < step)
            r->points[kept++] = r->points[i];
        else
            free(r->points[i].tag);
    }
    r->n_points = kept;
}

static int add_point(run_reader *rr, const tb_event *e, const tb_scalar *x) {
    tb_run *r = rr->run;
    if (r->n_points == rr->cap_points) {
        int cap = rr->cap_points ? 2 * rr->cap_points : 256;
        tb_point *np = realloc(r->points, (size_t)cap * sizeof *np);
        if (!np) return -1;
        r->points = np;
        rr->cap_points = cap;
    }
    tb_point *p = &r->points[r->n_points];
    if (!(p->tag = strdup(x->tag))) return -1;
    p->step = e->step;
    p->wall_time = e->wall_time;
    p->value = (float)x->value;
    p->order = rr->next_order++;
    r->n_points++;
    return 0;
}

static int add_description(run_reader *rr, const tb_scalar *x) {
    tb_run *r = rr->run;
    for (int i = 0; i < r->n_described; i++)
        if (!strcmp(r->described[i].tag, x->tag)) return 0;
    if (r->n_described == rr->cap_described) {
        int cap = rr->cap_described ? 2 * rr->cap_described : 16;
        tb_scalar *nd = realloc(r->described, (size_t)cap * sizeof *nd);
        if (!nd) return -1;
        r->described = nd;
        rr->cap_described = cap;
    }
    tb_scalar *d = &r->described[r->n_described];
    d->tag = strdup(x->tag);
    d->description = strdup(x->description);
    d->value = 0;
    r->n_described++;
    return d->tag && d->description ? 0 : -1;
}

static int on_run_event(const tb_event *e, void *ctx) {
    run_reader *rr = ctx;
    if (e->kind == TB_EVENT_SESSION_START) drop_from(rr->run, e->step);
    for (int i = 0; e->kind == TB_EVENT_SCALARS && i < e->n_scalars; i++) {
        const tb_scalar *x = &e->scalars[i];
        if (add_point(rr, e, x) < 0 || (x->description && add_description(rr, x) < 0))
            return rr->oom = 1;
    }
    return 0;
}

static int by_tag_then_step(const void *a, const void *b) {
    const tb_point *x = a, *y = b;
    int c = strcmp(x->tag, y->tag);
    if (c) return c;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

static int by_described_tag(const void *a, const void *b) {
    return strcmp(((const tb_scalar *)a)->tag, ((const tb_scalar *)b)->tag);
}

static int by_string(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The event files of dir, sorted by name (malloc'd names). */
static int list_event_files(const char *dir, char ***names, int *n, lp_err *err) {
    DIR *d = opendir(dir);
    if (!d) return lp_fail(err, "%s: %s", dir, strerror(errno));
    int cap = 0;
    *names = NULL;
    *n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strstr(e->d_name, "tfevents")) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            char **nn = realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn) break;
            *names = nn;
        }
        if (!((*names)[*n] = strdup(e->d_name))) break;
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*names, (size_t)*n, sizeof **names, by_string); /* never qsort(NULL, 0) */
    return 0;
}

int tb_read_run(const char *dir, tb_run *run, lp_err *err) {
    memset(run, 0, sizeof *run);
    char **names = NULL;
    int n = 0, rc = 0;
    if (list_event_files(dir, &names, &n, err) < 0) return -1;
    run_reader rr = {run, 0, 0, 0, 0};
    for (int i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = tb_read_file(path, on_run_event, &rr, err);
        if (rr.oom) rc = lp_fail(err, "out of memory");
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    run->n_files = n;
    if (rc) {
        tb_run_free(run);
        return -1;
    }
    if (run->n_points)
        qsort(run->points, (size_t)run->n_points, sizeof *run->points, by_tag_then_step);
    if (run->n_described)
        qsort(run->described, (size_t)run->n_described, sizeof *run->described, by_described_tag);
    return 0;
}

void tb_run_print(const tb_run *run, FILE *out) {
    for (int i = 0; i < run->n_points; i++)
        fprintf(out, "scalar %s %lld %.9g\n", run->points[i].tag, (long long)run->points[i].step,
                (double)run->points[i].value);
    for (int i = 0; i < run->n_described; i++)
        fprintf(out, "description %s: %s\n", run->described[i].tag, run->described[i].description);
}

void tb_run_free(tb_run *run) {
    for (int i = 0; i < run->n_points; i++) free(run->points[i].tag);
    for (int i = 0; i < run->n_described; i++) {
        free((char *)run->described[i].tag);
        free((char *)run->described[i].description);
    }
    free(run->points);
    free(run->described);
    memset(run, 0, sizeof *run);
}
