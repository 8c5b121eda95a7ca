/* loraps report OUT: a one-page summary of a run from what it left in OUT: report.md (the model,
 * the adapter's size, the steps, tokens and wall time, the final and best losses, the
 * validation passes, the bytes on the wire, the job's settings) and report.png (the loss,
 * validation-loss and tokens/s curves, drawn by gnuplot from metrics.jsonl; report.gp redraws
 * it). Lines of metrics.jsonl that cannot be read (a run killed mid-write) are named, and the
 * report is made from the others. */
#include "checkpoint.h"
#include "commands.h"
#include "fsutil.h"
#include "numfmt.h"
#include "report_plot.h"
#include "run_metrics.h"
#include "safetensors.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LAST_N 10 /* the final loss is also given as the mean of the last LAST_N steps */

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps report OUT [--to DIR]\n\n"
            "Summarises the run in OUT (the --out folder of loraps run) from its metrics.jsonl,\n"
            "its adapter and its newest checkpoint: writes report.md and report.png (training\n"
            "and validation loss, tokens/s per step; drawn by gnuplot, whose script report.gp\n"
            "is kept) into OUT, or into DIR with --to. Lines of metrics.jsonl that cannot be\n"
            "read are named and left out. Exit status 1 when no line can be read or the PNG\n"
            "cannot be drawn (report.md is still written).\n");
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps report: error: %s: %s\n", what, why);
    return 1;
}

typedef struct report {
    const char *run_dir, *to_dir;
    char metrics_path[PATH_MAX + 32];
    run_metrics m;
    json_t *adapter_cfg; /* the final adapter's (or the newest checkpoint's) config; NULL */
    char adapter_dir[PATH_MAX + 32];
    uint64_t adapter_params, adapter_file_bytes;
    ckpt_info state; /* the newest checkpoint's trainer state, when have_state */
    int have_state;
    char state_dir[PATH_MAX + 32], state_problem[1024];
    int plotted;
    char plot_problem[1024];
} report;

/* ---- gathering ------------------------------------------------------------------------------ */

/* The adapter of OUT itself, else of OUT/latest: its config and its size. */
static void read_adapter(report *r) {
    const char *dirs[2] = {r->run_dir, NULL};
    char latest[PATH_MAX + 32], path[PATH_MAX + 64];
    snprintf(latest, sizeof latest, "%s/latest", r->run_dir);
    dirs[1] = latest;
    for (int i = 0; i < 2 && !r->adapter_cfg; i++) {
        snprintf(path, sizeof path, "%s/adapter_config.json", dirs[i]);
        json_error_t je;
        if (!(r->adapter_cfg = json_load_file(path, 0, &je))) continue;
        snprintf(r->adapter_dir, sizeof r->adapter_dir, "%s", dirs[i]);
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dirs[i]);
        st_file f;
        lp_err err;
        struct stat st;
        if (stat(path, &st) == 0) r->adapter_file_bytes = (uint64_t)st.st_size;
        if (st_open(&f, path, &err) < 0) continue;
        for (int t = 0; t < f.n_tensors; t++) r->adapter_params += (uint64_t)f.tensors[t].numel;
        st_close(&f);
    }
}

static void read_state(report *r) {
    char latest[PATH_MAX + 32];
    snprintf(latest, sizeof latest, "%s/latest", r->run_dir);
    lp_err err;
    if (ckpt_resolve(latest, r->run_dir, r->state_dir, sizeof r->state_dir, &err) < 0) {
        snprintf(r->state_problem, sizeof r->state_problem, "no checkpoint in %s", r->run_dir);
        return;
    }
    if (ckpt_read_state(r->state_dir, &r->state, &err) < 0) {
        snprintf(r->state_problem, sizeof r->state_problem, "%s", err.msg);
        return;
    }
    r->have_state = 1;
}

/* ---- figures -------------------------------------------------------------------------------- */

static const char *human_bytes(char *buf, size_t n, double b) {
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) b /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
    return buf;
}

static const char *duration(char *buf, size_t n, double s) {
    int t = (int)lround(s);
    if (s < 60)
        snprintf(buf, n, "%.1f s", s);
    else if (t >= 3600)
        snprintf(buf, n, "%dh%02dm%02ds", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
    return buf;
}

/* Training time: from the lines' wall-clock times where they have them, else the steps'
 * durations summed. */
static double wall_seconds(const run_metrics *m, int *from_clock) {
    const run_step *a = &m->steps[0], *b = &m->steps[m->n_steps - 1];
    *from_clock = isfinite(a->time) && isfinite(b->time);
    if (*from_clock) return b->time - a->time + (isfinite(a->step_ms) ? a->step_ms / 1000.0 : 0);
    double s = 0;
    for (int i = 0; i < m->n_steps; i++)
        if (isfinite(m->steps[i].step_ms)) s += m->steps[i].step_ms / 1000.0;
    return s;
}

/* ---- the Markdown --------------------------------------------------------------------------- */

static void targets_text(FILE *o, json_t *t) {
    if (json_is_string(t)) {
        fprintf(o, "`%s` (regex)", json_string_value(t));
        return;
    }
    for (size_t i = 0; i < json_array_size(t); i++)
        fprintf(o, "%s`%s`", i ? ", " : "", json_string_value(json_array_get(t, i)));
}

static void summary(FILE *o, const report *r) {
    const run_metrics *m = &r->m;
    const run_step *last = &m->steps[m->n_steps - 1];
    char b1[64], b2[64];
    uint64_t tokens = 0;
    double ms = 0;
    for (int i = 0; i < m->n_steps; i++) {
        tokens += m->steps[i].tokens;
        if (isfinite(m->steps[i].step_ms)) ms += m->steps[i].step_ms;
    }
    fprintf(o, "## Summary\n\n| | |\n|---|---|\n");
    json_t *base = r->adapter_cfg ? json_object_get(r->adapter_cfg, "base_model_name_or_path") : 0;
    if (json_is_string(base))
        fprintf(o, "| model | `%s` |\n", json_string_value(base));
    else if (r->have_state)
        fprintf(o, "| model | `%s` |\n", r->state.base_model);
    if (r->adapter_cfg) {
        json_t *c = r->adapter_cfg;
        fprintf(o, "| adapter | LoRA r %lld, alpha %g, targets ",
                (long long)json_integer_value(json_object_get(c, "r")),
                json_number_value(json_object_get(c, "lora_alpha")));
        targets_text(o, json_object_get(c, "target_modules"));
        fprintf(o, "; %s parameters, %s (`%s`) |\n",
                fmt_thousands(b1, sizeof b1, r->adapter_params),
                human_bytes(b2, sizeof b2, (double)r->adapter_file_bytes), r->adapter_dir);
    }
    uint64_t planned = r->have_state && r->state.total_updates ? r->state.total_updates : 0;
    if (planned && r->have_state && strcmp(r->state.mode, "sync") != 0) planned = 0;
    fprintf(o, "| steps | %llu", (unsigned long long)last->step);
    if (planned) fprintf(o, " of %llu", (unsigned long long)planned);
    fprintf(o, " (%d in the metrics) |\n", m->n_steps);
    fprintf(o, "| tokens trained on | %s |\n", fmt_thousands(b1, sizeof b1, tokens));
    int clock;
    double wall = wall_seconds(m, &clock);
    fprintf(o, "| wall time | %s (%s) |\n", duration(b1, sizeof b1, wall),
            clock ? "first to last step" : "the steps' durations summed");
    if (ms > 0) {
        double last_rate = last->step_ms > 0 ? last->tokens / (last->step_ms / 1000.0) : 0;
        fprintf(o, "| throughput | %s tokens/s over the run",
                fmt_thousands(b1, sizeof b1, (uint64_t)(tokens / (ms / 1e3))));
        fprintf(o, "; %s at the last step |\n", fmt_thousands(b2, sizeof b2, (uint64_t)last_rate));
    }
    double tail = 0;
    int n_tail = m->n_steps < LAST_N ? m->n_steps : LAST_N;
    for (int i = m->n_steps - n_tail; i < m->n_steps; i++) tail += m->steps[i].loss;
    fprintf(o, "| final training loss | %.4f at step %llu; %.4f over the last %d steps |\n",
            last->loss, (unsigned long long)last->step, tail / n_tail, n_tail);
    const run_step *final_val = NULL, *best = NULL;
    for (int i = 0; i < m->n_steps; i++) {
        const run_step *s = &m->steps[i];
        if (!s->has_val) continue;
        final_val = s;
        if (!best || s->val_loss < best->val_loss) best = s;
    }
    if (final_val) {
        fprintf(o, "| final validation loss | %.4f (perplexity %.2f) after step %llu |\n",
                final_val->val_loss, exp(final_val->val_loss),
                (unsigned long long)final_val->val_step);
        fprintf(o, "| best validation loss | %.4f (perplexity %.2f) after step %llu |\n",
                best->val_loss, exp(best->val_loss), (unsigned long long)best->val_step);
    }
    if (last->workers >= 0) fprintf(o, "| live workers at the end | %d |\n", last->workers);
    char runs[PATH_MAX + 8];
    snprintf(runs, sizeof runs, "%s/runs", r->run_dir);
    if (fs_exists(runs))
        fprintf(o, "| TensorBoard | `tensorboard --logdir %s` (every step's scalars) |\n", runs);
    for (int i = 0; i < m->n_final_bytes; i++)
        fprintf(o, "| worker %d on the wire | %s sent, %s received |\n", m->final_bytes[i].rank,
                human_bytes(b1, sizeof b1, (double)m->final_bytes[i].sent),
                human_bytes(b2, sizeof b2, (double)m->final_bytes[i].received));
    fprintf(o, "\n");
}

static void validation(FILE *o, const run_metrics *m) {
    int any = 0;
    uint64_t last = UINT64_MAX;
    for (int i = 0; i < m->n_steps; i++) {
        const run_step *s = &m->steps[i];
        if (!s->has_val || s->val_step == last) continue;
        if (!any++)
            fprintf(o, "## Validation\n\n| after step | loss | perplexity | tokens |\n"
                       "|---:|---:|---:|---:|\n");
        fprintf(o, "| %llu | %.4f | %.2f | %llu |\n", (unsigned long long)s->val_step, s->val_loss,
                exp(s->val_loss), (unsigned long long)s->val_tokens);
        last = s->val_step;
    }
    if (any) fprintf(o, "\n");
}

static void settings(FILE *o, const report *r) {
    fprintf(o, "## Settings\n\n");
    if (!r->have_state) {
        fprintf(o, "Not known: %s.\n\n", r->state_problem);
        return;
    }
    fprintf(o,
            "The job as `%s/trainer_state.json` records it (%s mode, %d server shard(s), "
            "%d worker rank(s)):\n\n```\n%s```\n\n",
            r->state_dir, r->state.mode, r->state.n_shards, r->state.n_ranks,
            r->state.job_settings ? r->state.job_settings : "");
}

static void metrics_file(FILE *o, const report *r) {
    const run_metrics *m = &r->m;
    fprintf(o, "## Metrics file\n\n`%s`: %d lines read", r->metrics_path, m->n_lines - m->n_bad);
    if (m->n_bad) fprintf(o, ", %d could not be read and are left out:\n\n", m->n_bad);
    for (int i = 0; i < m->n_bad; i++) fprintf(o, "- line %d: %s\n", m->bad[i].line, m->bad[i].why);
    fprintf(o, "%s", m->n_bad ? "\n" : ", all of them.\n");
}

static char *markdown(const report *r, const char *png_name) {
    char *text = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&text, &len);
    if (!o) return NULL;
    fprintf(o, "# Run report: %s\n\n", r->run_dir);
    if (r->plotted)
        fprintf(o, "![training loss, validation loss and tokens/s per step](%s)\n\n", png_name);
    else
        fprintf(o, "(No curves: %s.)\n\n", r->plot_problem);
    summary(o, r);
    validation(o, &r->m);
    settings(o, r);
    metrics_file(o, r);
    if (fclose(o) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* ---- the command ---------------------------------------------------------------------------- */

static void report_free(report *r) {
    run_metrics_free(&r->m);
    json_decref(r->adapter_cfg);
    if (r->have_state) ckpt_info_free(&r->state);
}

static void warn_bad_lines(const report *r) {
    for (int i = 0; i < r->m.n_bad; i++)
        fprintf(stderr, "loraps report: warning: %s:%d: %s; left out\n", r->metrics_path,
                r->m.bad[i].line, r->m.bad[i].why);
}

int cmd_report(int argc, char **argv) {
    report r;
    memset(&r, 0, sizeof r);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        if (!strcmp(argv[i], "--to") && i + 1 < argc)
            r.to_dir = argv[++i];
        else if (argv[i][0] == '-' || r.run_dir)
            return usage(stderr), fail(argv[i], "unexpected argument");
        else
            r.run_dir = argv[i];
    }
    if (!r.run_dir) return usage(stderr), 2;
    const char *to = r.to_dir ? r.to_dir : r.run_dir;
    lp_err err;
    snprintf(r.metrics_path, sizeof r.metrics_path, "%s/metrics.jsonl", r.run_dir);
    if (run_metrics_read(r.metrics_path, &r.m, &err) < 0) return fail("metrics", err.msg);
    warn_bad_lines(&r);
    if (r.m.n_steps == 0) {
        report_free(&r);
        return fail(r.metrics_path, "no line of it can be read: nothing to report");
    }
    read_adapter(&r);
    read_state(&r);
    char md[PATH_MAX + 32], png[PATH_MAX + 32], gp[PATH_MAX + 32];
    snprintf(md, sizeof md, "%s/report.md", to);
    snprintf(png, sizeof png, "%s/report.png", to);
    snprintf(gp, sizeof gp, "%s/report.gp", to);
    if (fs_mkdirs(to, &err) < 0) {
        report_free(&r);
        return fail("--to", err.msg);
    }
    r.plotted = report_plot(&r.m, gp, png, &err) == 0;
    if (!r.plotted) snprintf(r.plot_problem, sizeof r.plot_problem, "%s", err.msg);
    char *text = markdown(&r, "report.png");
    int rc = text ? fs_write_atomic(md, text, strlen(text), &err) : lp_fail(&err, "out of memory");
    free(text);
    if (rc < 0) {
        report_free(&r);
        return fail(md, err.msg);
    }
    printf("loraps report: %d steps from %s (%d of %d lines read)\n", r.m.n_steps, r.metrics_path,
           r.m.n_lines - r.m.n_bad, r.m.n_lines);
    printf("loraps report: wrote %s%s%s\n", md, r.plotted ? " and " : "", r.plotted ? png : "");
    int ok = r.plotted;
    if (!ok) fail("report.png", r.plot_problem);
    report_free(&r);
    return ok ? 0 : 1;
}
