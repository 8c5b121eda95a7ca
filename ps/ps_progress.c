/* Progress lines, the metrics file and the validation passes. */
#include "ps_progress.h"

#include "ps_log.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <time.h>

int ps_progress_init(ps_progress *pg, const ps_config *c, lp_err *err) {
    memset(pg, 0, sizeof *pg);
    pg->cfg = c;
    pg->port = c->metrics_port;
    if (c->metrics_path[0] && c->shard == 0 && !(pg->metrics = fopen(c->metrics_path, "a")))
        return lp_fail(err, "%s: %s", c->metrics_path, strerror(errno));
    return 0;
}

void ps_progress_free(ps_progress *pg) {
    if (pg->metrics) fclose(pg->metrics);
    pg->metrics = NULL;
    ps_events_close(&pg->events);
}

void ps_progress_begin(ps_progress *pg, uint64_t resumed_version) {
    pg->resumed_version = resumed_version;
    pg->start_ms = pg->last_step_ms = wire_now_ms();
    ps_events_open(&pg->events, pg->cfg, resumed_version);
}

static void human_bytes(char *buf, size_t n, uint64_t b) {
    if (b >= (1ull << 30))
        snprintf(buf, n, "%.2fG", b / 1073741824.0);
    else if (b >= (1ull << 20))
        snprintf(buf, n, "%.1fM", b / 1048576.0);
    else if (b >= 1024)
        snprintf(buf, n, "%.1fK", b / 1024.0);
    else
        snprintf(buf, n, "%lluB", (unsigned long long)b);
}

/* The bytes each live worker reported, by rank. */
static json_t *worker_bytes_json(const ps_members *mb) {
    json_t *w = json_object();
    for (int i = 0; i < mb->n; i++) {
        const ps_member *m = &mb->list[i];
        if (!m->alive) continue;
        char key[16];
        snprintf(key, sizeof key, "%d", m->rank);
        json_t *b = json_object();
        json_object_set_new(b, "sent", json_integer((json_int_t)m->bytes_sent));
        json_object_set_new(b, "received", json_integer((json_int_t)m->bytes_received));
        json_object_set_new(w, key, b);
    }
    return w;
}

static void write_json_line(ps_progress *pg, const ps_members *mb, uint64_t step, uint64_t version,
                            double lr, uint64_t tokens, double loss, double compute_s,
                            double grad_norm, double step_ms) {
    json_t *o = json_object();
    json_object_set_new(o, "step", json_integer((json_int_t)step + 1));
    json_object_set_new(o, "version", json_integer((json_int_t)version));
    json_object_set_new(o, "loss", json_real(loss));
    json_object_set_new(o, "tokens", json_integer((json_int_t)tokens));
    json_object_set_new(o, "step_ms", json_real(step_ms));
    json_object_set_new(o, "lr", json_real(lr));
    if (compute_s >= 0) json_object_set_new(o, "compute_s", json_real(compute_s));
    if (grad_norm >= 0) json_object_set_new(o, "grad_norm", json_real(grad_norm));
    struct timespec wall; /* when: the report's wall time */
    clock_gettime(CLOCK_REALTIME, &wall);
    json_object_set_new(o, "time", json_real((double)wall.tv_sec + wall.tv_nsec / 1e9));
    json_object_set_new(o, "workers", json_integer(ps_members_alive(mb)));
    json_object_set_new(o, "bytes", worker_bytes_json(mb));
    if (pg->val_pending) {
        json_object_set_new(o, "val_loss", json_real(pg->val_loss));
        json_object_set_new(o, "val_ppl", json_real(exp(pg->val_loss)));
        json_object_set_new(o, "val_tokens", json_integer((json_int_t)pg->val_tokens));
        json_object_set_new(o, "val_step", json_integer((json_int_t)pg->val_step));
    }
    json_dumpf(o, pg->metrics, JSON_COMPACT);
    fputc('\n', pg->metrics);
    fflush(pg->metrics);
    json_decref(o);
}

static void print_line(const ps_progress *pg, const ps_members *mb, uint64_t step, uint64_t version,
                       uint64_t tokens, double loss, double compute_s, double step_ms, int val,
                       int64_t now) {
    double elapsed = (now - pg->start_ms) / 1000.0;
    uint64_t total = pg->cfg->total_updates;
    uint64_t run = version > pg->resumed_version ? version - pg->resumed_version : 0;
    double eta = run ? elapsed / (double)run * (double)(total - version) : 0;
    char line[4096];
    int n = snprintf(line, sizeof line, "step %llu/%llu  loss %.4f  %.0f tok/s  %.0f ms",
                     (unsigned long long)(step + 1), (unsigned long long)total, loss,
                     step_ms > 0 ? tokens / (step_ms / 1000.0) : 0.0, step_ms);
    if (compute_s >= 0 && step_ms > 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " (compute %.0f%%)",
                      100.0 * compute_s / (step_ms / 1000.0));
    if (val)
        n += snprintf(line + n, sizeof line - (size_t)n, "  val_loss %.4f ppl %.2f (at step %llu)",
                      pg->val_loss, exp(pg->val_loss), (unsigned long long)pg->val_step);
    for (int i = 0; i < mb->n && n < (int)sizeof line - 64; i++) {
        const ps_member *m = &mb->list[i];
        if (!m->alive) continue;
        char a[32], b[32];
        human_bytes(a, sizeof a, m->bytes_sent);
        human_bytes(b, sizeof b, m->bytes_received);
        n += snprintf(line + n, sizeof line - (size_t)n, "  w%d %s/%s", m->rank, a, b);
    }
    snprintf(line + n, sizeof line - (size_t)n, "  eta %dm%02ds", (int)eta / 60, (int)eta % 60);
    printf("%s\n", line);
    fflush(stdout);
}

void ps_progress_step(ps_progress *pg, const ps_members *mb, uint64_t step, uint64_t version,
                      double lr, uint64_t tokens, double loss, double compute_s, double grad_norm) {
    int64_t now = wire_now_ms();
    double step_ms = (double)(now - pg->last_step_ms);
    pg->last_step_ms = now;
    pg->tokens_total += tokens;
    pg->last_loss = loss;
    const ps_config *c = pg->cfg;
    if (c->shard == 0 && pg->metrics)
        write_json_line(pg, mb, step, version, lr, tokens, loss, compute_s, grad_norm, step_ms);
    ps_step_figures fig = {step + 1,     tokens,      loss,      lr,
                           step_ms,      grad_norm,   compute_s, pg->val_pending,
                           pg->val_loss, pg->val_step};
    ps_events_step(&pg->events, mb, &fig);
    int val = pg->val_pending;
    pg->val_pending = 0;
    if (c->shard != 0 || c->quiet) return;
    print_line(pg, mb, step, version, tokens, loss, compute_s, step_ms, val, now);
}

void ps_progress_card(const ps_progress *pg, uint64_t step, model_card *card) {
    card->step = step;
    card->tokens = pg->resumed_version ? 0 : pg->tokens_total; /* only this run's otherwise */
    card->train_loss = step > pg->resumed_version ? pg->last_loss : NAN;
    if (pg->val_known) {
        card->val_loss = pg->val_loss;
        card->val_step = pg->val_step;
    }
}

/* ---- validation ----------------------------------------------------------------------------- */

void ps_progress_eval_close(ps_progress *pg) {
    if (!pg->eval_at) return;
    pg->val_step = pg->eval_at - 1;
    pg->val_tokens = pg->eval_tokens;
    pg->val_loss = pg->eval_tokens ? pg->eval_loss / (double)pg->eval_tokens : 0;
    pg->val_known = pg->val_pending = pg->eval_tokens > 0;
    if (!pg->eval_tokens)
        ps_log(pg->cfg->shard, "validation at step %llu counted no tokens (no validation data?)",
               (unsigned long long)pg->val_step);
    pg->eval_at = 0;
    pg->eval_tokens = pg->eval_seqs = 0;
    pg->eval_loss = 0;
    pg->eval_n = 0;
}

void ps_progress_eval_add(ps_progress *pg, uint64_t step, const Loraps__EvalResult *ev) {
    if (pg->eval_at && pg->eval_at != step + 1) ps_progress_eval_close(pg);
    pg->eval_at = step + 1;
    pg->eval_tokens += ev->n_tokens;
    pg->eval_seqs += ev->n_sequences;
    pg->eval_loss += ev->loss_sum;
    pg->eval_n++;
    if (!pg->cfg->sync && pg->eval_n >= pg->cfg->job.workers) ps_progress_eval_close(pg);
}
