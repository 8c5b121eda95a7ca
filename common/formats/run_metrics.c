#include "run_metrics.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double number_or_nan(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static int get_u64(json_t *o, const char *key, uint64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* The line's per-worker bytes into the step's sums and, as the newest, into m->final_bytes. */
static void read_bytes(json_t *bytes, run_step *st, run_metrics *m) {
    const char *rank;
    json_t *b;
    m->n_final_bytes = 0;
    json_object_foreach(bytes, rank, b) {
        uint64_t sent = 0, received = 0;
        get_u64(b, "sent", &sent);
        get_u64(b, "received", &received);
        st->bytes_sent += sent;
        st->bytes_received += received;
        if (m->n_final_bytes < RUN_METRICS_MAX_WORKER_BYTES)
            m->final_bytes[m->n_final_bytes++] = (run_worker_bytes){atoi(rank), sent, received};
    }
}

/* One line's object into st; -1 with why when a field every line has is missing. */
static int parse_step(json_t *o, run_step *st, run_metrics *m, char *why, size_t n) {
    memset(st, 0, sizeof *st);
    if (!json_is_object(o)) return snprintf(why, n, "not a JSON object"), -1;
    if (get_u64(o, "step", &st->step) < 0 || st->step == 0)
        return snprintf(why, n, "no \"step\" (a positive integer)"), -1;
    st->loss = number_or_nan(o, "loss");
    if (!isfinite(st->loss)) return snprintf(why, n, "no \"loss\" (a number)"), -1;
    if (get_u64(o, "tokens", &st->tokens) < 0)
        return snprintf(why, n, "no \"tokens\" (an integer)"), -1;
    st->step_ms = number_or_nan(o, "step_ms");
    st->lr = number_or_nan(o, "lr");
    st->compute_s = number_or_nan(o, "compute_s");
    st->grad_norm = number_or_nan(o, "grad_norm");
    st->time = number_or_nan(o, "time");
    json_t *w = json_object_get(o, "workers");
    st->workers = json_is_integer(w) ? (int)json_integer_value(w) : -1;
    st->val_loss = number_or_nan(o, "val_loss");
    st->has_val = isfinite(st->val_loss);
    if (st->has_val) {
        get_u64(o, "val_step", &st->val_step);
        get_u64(o, "val_tokens", &st->val_tokens);
    }
    json_t *bytes = json_object_get(o, "bytes");
    if (json_is_object(bytes)) read_bytes(bytes, st, m);
    return 0;
}

static int add_bad(run_metrics *m, int line, const char *why) {
    run_bad_line *nb = realloc(m->bad, (size_t)(m->n_bad + 1) * sizeof *nb);
    if (!nb) return -1;
    m->bad = nb;
    nb[m->n_bad].line = line;
    snprintf(nb[m->n_bad].why, sizeof nb[m->n_bad].why, "%s", why);
    m->n_bad++;
    return 0;
}

/* Appends a step; a step at or before the last one starts a resumed run's lines, which replace
 * the earlier lines from that step on. */
static int add_step(run_metrics *m, const run_step *st, int *cap) {
    while (m->n_steps > 0 && m->steps[m->n_steps - 1].step >= st->step) m->n_steps--;
    if (m->n_steps == *cap) {
        int nc = *cap ? 2 * *cap : 256;
        run_step *ns = realloc(m->steps, (size_t)nc * sizeof *ns);
        if (!ns) return -1;
        m->steps = ns;
        *cap = nc;
    }
    m->steps[m->n_steps++] = *st;
    return 0;
}

/* Reads one line: -1 out of memory, else 0 (kept, or listed as bad). */
static int read_line(run_metrics *m, char *text, ssize_t len, int line_no, int *cap) {
    int ended = len > 0 && text[len - 1] == '\n';
    if (ended) text[--len] = 0;
    if (len > 0 && text[len - 1] == '\r') text[--len] = 0;
    if (len == 0) return 0;
    m->n_lines++;
    json_error_t je;
    json_t *o = json_loadb(text, (size_t)len, JSON_REJECT_DUPLICATES, &je);
    char why[sizeof m->bad[0].why];
    if (!o) {
        if (!ended)
            snprintf(why, sizeof why, "cut short: the last line has no end (%.100s)", je.text);
        else
            snprintf(why, sizeof why, "malformed JSON at column %d: %.100s", je.column, je.text);
        return add_bad(m, line_no, why);
    }
    run_step st;
    int rc = parse_step(o, &st, m, why, sizeof why);
    json_decref(o);
    if (rc < 0) return add_bad(m, line_no, why);
    st.line = line_no;
    return add_step(m, &st, cap);
}

int run_metrics_read(const char *path, run_metrics *m, lp_err *err) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) return lp_fail(err, "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t size = 0;
    int cap = 0, line_no = 0, rc = 0;
    ssize_t len;
    while (rc == 0 && (len = getline(&text, &size, f)) >= 0)
        rc = read_line(m, text, len, ++line_no, &cap);
    if (rc == 0 && ferror(f))
        rc = lp_fail(err, "%s: read failed", path);
    else if (rc < 0)
        lp_fail(err, "out of memory");
    free(text);
    fclose(f);
    if (rc < 0) run_metrics_free(m);
    return rc;
}

void run_metrics_free(run_metrics *m) {
    free(m->steps);
    free(m->bad);
    memset(m, 0, sizeof *m);
}
