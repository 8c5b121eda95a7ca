#include "metrics_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

typedef struct metric {
    char name[96];
    char help[160];
    metrics_kind kind;
    double value;
} metric;

struct metrics {
    pthread_mutex_t lock;
    struct MHD_Daemon *daemon;
    int port;
    char labels[256];
    metric table[METRICS_MAX];
    int n;
    int ready;
    double stall_s;
    double last_touch; /* monotonic seconds */
    double checkpoint_time;
    int has_checkpoint;
    double start_time; /* Unix seconds */
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- rendering ------------------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = 2 * b->cap + (size_t)n + 64;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* Prometheus wants integers without an exponent where it can, and NaN/+Inf spelled its way. */
static void put_value(buf *b, double v) {
    if (v != v)
        put(b, "NaN\n");
    else if (v > 1.7e308)
        put(b, "+Inf\n");
    else if (v < -1.7e308)
        put(b, "-Inf\n");
    else if (v == (double)(long long)v && v < 9e15 && v > -9e15)
        put(b, "%lld\n", (long long)v);
    else
        put(b, "%.9g\n", v);
}

static void put_sample(buf *b, const metrics *m, const char *name, const char *help,
                       const char *type, double v) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s", name, help, name, type, name);
    if (m->labels[0]) put(b, "{%s}", m->labels);
    put(b, " ");
    put_value(b, v);
}

char *metrics_render(metrics *m) {
    buf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    b.p[0] = 0;
    if (!m) return b.p;
    pthread_mutex_lock(&m->lock);
    put_sample(&b, m, "loraps_up", "1 while the process runs", "gauge", 1);
    put_sample(&b, m, "loraps_ready", "1 while /readyz answers 200", "gauge", m->ready);
    put_sample(&b, m, "loraps_start_time_seconds", "when the process started (Unix seconds)",
               "gauge", m->start_time);
    for (int i = 0; i < m->n; i++)
        put_sample(&b, m, m->table[i].name, m->table[i].help,
                   m->table[i].kind == METRICS_COUNTER ? "counter" : "gauge", m->table[i].value);
    if (m->has_checkpoint) {
        put_sample(&b, m, "loraps_checkpoint_timestamp_seconds",
                   "when the latest checkpoint was written (Unix seconds)", "gauge",
                   m->checkpoint_time);
        put_sample(&b, m, "loraps_checkpoint_age_seconds", "seconds since the latest checkpoint",
                   "gauge", wall_now() - m->checkpoint_time);
    }
    pthread_mutex_unlock(&m->lock);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, int take) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), body, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (take) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state) {
    (void)version;
    (void)upload;
    metrics *m = cls;
    static int first_call;
    if (!*state) { /* the headers: answer on the next call, once any body is read */
        *state = &first_call;
        return MHD_YES;
    }
    if (*upload_size) { /* no endpoint takes a body: discard it */
        *upload_size = 0;
        return MHD_YES;
    }
    static const char text[] = "text/plain; charset=utf-8";
    int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    if (!get) return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, "only GET and HEAD\n", 0);
    if (!strcmp(url, "/healthz")) {
        pthread_mutex_lock(&m->lock);
        double idle = mono_now() - m->last_touch;
        int stalled = m->stall_s > 0 && idle > m->stall_s;
        pthread_mutex_unlock(&m->lock);
        if (!stalled) return reply(c, MHD_HTTP_OK, text, "ok\n", 0);
        char *msg = malloc(128);
        if (!msg) return MHD_NO;
        snprintf(msg, 128, "stalled: the main loop has not run for %.0f s\n", idle);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, text, msg, 1);
    }
    if (!strcmp(url, "/readyz")) {
        pthread_mutex_lock(&m->lock);
        int ready = m->ready;
        pthread_mutex_unlock(&m->lock);
        return ready ? reply(c, MHD_HTTP_OK, text, "ready\n", 0)
                     : reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, text, "not ready\n", 0);
    }
    if (!strcmp(url, "/metrics")) {
        char *body = metrics_render(m);
        if (!body) return MHD_NO;
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, 1);
    }
    return reply(c, MHD_HTTP_NOT_FOUND, text, "not found: try /healthz, /readyz or /metrics\n", 0);
}

int metrics_start(metrics **out, const char *bind_addr, int port, const char *labels, lp_err *err) {
    *out = NULL;
    if (port < 0 || port > 65535) return lp_fail(err, "metrics port %d: expected 0..65535", port);
    if (!bind_addr || !*bind_addr) bind_addr = "0.0.0.0";
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    const char *addr = bind_addr;
    char v6[64];
    size_t alen = strlen(bind_addr);
    if (bind_addr[0] == '[' && alen > 2 && alen - 2 < sizeof v6 && bind_addr[alen - 1] == ']') {
        memcpy(v6, bind_addr + 1, alen - 2); /* "[::]" as in URLs */
        v6[alen - 2] = 0;
        addr = v6;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        /* "::" takes IPv4 too, as Kubernetes' probes may come over either. */
        flags |= IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    } else {
        return lp_fail(err, "metrics bind address '%s': expected an IPv4 or IPv6 address",
                       bind_addr);
    }
    metrics *m = calloc(1, sizeof *m);
    if (!m) return lp_fail(err, "out of memory");
    pthread_mutex_init(&m->lock, NULL);
    if (labels) snprintf(m->labels, sizeof m->labels, "%s", labels);
    m->last_touch = mono_now();
    m->start_time = wall_now();
    m->daemon =
        MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!m->daemon) {
        pthread_mutex_destroy(&m->lock);
        free(m);
        return lp_fail(err, "cannot serve metrics on %s port %d (in use, or not an address here)",
                       bind_addr, port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info && info->port ? info->port : port;
    *out = m;
    return 0;
}

void metrics_stop(metrics *m) {
    if (!m) return;
    if (m->daemon) MHD_stop_daemon(m->daemon);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int metrics_port(const metrics *m) {
    return m ? m->port : -1;
}

static int valid_name(const char *s) {
    if (!*s || strlen(s) >= sizeof(((metric *)0)->name)) return 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':')) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == ':')) return 0;
    return 1;
}

int metrics_define(metrics *m, const char *name, metrics_kind kind, const char *help) {
    if (!m || !valid_name(name)) return -1;
    pthread_mutex_lock(&m->lock);
    int id = -1;
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->table[i].name, name)) id = i;
    if (id < 0 && m->n < METRICS_MAX) {
        id = m->n++;
        metric *t = &m->table[id];
        snprintf(t->name, sizeof t->name, "%s", name);
        /* HELP text is one line; backslashes and newlines would need escaping */
        size_t k = 0;
        for (const char *h = help ? help : ""; *h && k + 1 < sizeof t->help; h++)
            t->help[k++] = (*h == '\n' || *h == '\\') ? ' ' : *h;
        t->help[k] = 0;
        t->kind = kind;
        t->value = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return id;
}

void metrics_set(metrics *m, int id, double value) {
    if (!m || id < 0) return;
    pthread_mutex_lock(&m->lock);
    if (id < m->n) m->table[id].value = value;
    pthread_mutex_unlock(&m->lock);
}

void metrics_add(metrics *m, int id, double delta) {
    if (!m || id < 0) return;
    pthread_mutex_lock(&m->lock);
    if (id < m->n) m->table[id].value += delta;
    pthread_mutex_unlock(&m->lock);
}

double metrics_get(metrics *m, int id) {
    if (!m || id < 0) return 0;
    pthread_mutex_lock(&m->lock);
    double v = id < m->n ? m->table[id].value : 0;
    pthread_mutex_unlock(&m->lock);
    return v;
}

void metrics_set_ready(metrics *m, int ready) {
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->ready = ready;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set_stall_limit(metrics *m, double stall_s) {
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->stall_s = stall_s;
    m->last_touch = mono_now();
    pthread_mutex_unlock(&m->lock);
}

void metrics_touch(metrics *m) {
    if (!m) return;
    double now = mono_now();
    pthread_mutex_lock(&m->lock);
    m->last_touch = now;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set_checkpoint_time(metrics *m, double unix_seconds) {
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->checkpoint_time = unix_seconds;
    m->has_checkpoint = 1;
    pthread_mutex_unlock(&m->lock);
}
