#include "report_plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The series' colours: tests look for them in the PNG. */
#define COLOUR_TRAIN "#1f77b4"
#define COLOUR_VAL   "#d62728"
#define COLOUR_TPS   "#2ca02c"

/* A path as a gnuplot single-quoted string ('' is a quote inside one). */
static void quoted(FILE *o, const char *s) {
    fputc('\'', o);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', o);
        fputc(*s, o);
    }
    fputc('\'', o);
}

static int has_val(const run_metrics *m) {
    for (int i = 0; i < m->n_steps; i++)
        if (m->steps[i].has_val) return 1;
    return 0;
}

static int has_rate(const run_metrics *m) {
    for (int i = 0; i < m->n_steps; i++)
        if (m->steps[i].step_ms > 0) return 1;
    return 0;
}

/* Inline data blocks: $train (step loss), $val (step val_loss), $rate (step tokens/s). */
static void data_blocks(FILE *o, const run_metrics *m) {
    fprintf(o, "$train << EOD\n");
    for (int i = 0; i < m->n_steps; i++)
        fprintf(o, "%llu %.9g\n", (unsigned long long)m->steps[i].step, m->steps[i].loss);
    fprintf(o, "EOD\n$val << EOD\n");
    uint64_t last_val = UINT64_MAX;
    for (int i = 0; i < m->n_steps; i++) {
        const run_step *s = &m->steps[i];
        if (!s->has_val || s->val_step == last_val) continue;
        fprintf(o, "%llu %.9g\n", (unsigned long long)s->val_step, s->val_loss);
        last_val = s->val_step;
    }
    fprintf(o, "EOD\n$rate << EOD\n");
    for (int i = 0; i < m->n_steps; i++)
        if (m->steps[i].step_ms > 0)
            fprintf(o, "%llu %.9g\n", (unsigned long long)m->steps[i].step,
                    (double)m->steps[i].tokens / (m->steps[i].step_ms / 1000.0));
    fprintf(o, "EOD\n\n");
}

static void plots(FILE *o, const run_metrics *m, const char *png_path) {
    fprintf(o, "set terminal pngcairo size %d,%d font 'DejaVu Sans,11' noenhanced\n",
            REPORT_PLOT_WIDTH, REPORT_PLOT_HEIGHT);
    fprintf(o, "set output ");
    quoted(o, png_path);
    fprintf(o, "\nset multiplot layout %d,1\nset grid\nset key top right\nset xlabel 'step'\n",
            has_rate(m) ? 2 : 1);
    fprintf(o, "set title 'loss'\nset ylabel 'loss'\n");
    fprintf(o, "plot $train with lines lw 2 lc rgb '" COLOUR_TRAIN "' title 'training loss'");
    if (has_val(m))
        fprintf(o, ", \\\n     $val with linespoints lw 2 pt 7 ps 1.2 lc rgb '" COLOUR_VAL
                   "' title 'validation loss'");
    fprintf(o, "\n");
    if (has_rate(m))
        fprintf(o, "set title 'throughput'\nset ylabel 'tokens/s'\nset yrange [0:*]\n"
                   "plot $rate with lines lw 2 lc rgb '" COLOUR_TPS "' title 'tokens/s'\n");
    fprintf(o, "unset multiplot\nset output\n");
}

static int write_script(const run_metrics *m, const char *script_path, const char *png_path,
                        lp_err *err) {
    FILE *o = fopen(script_path, "w");
    if (!o) return lp_fail(err, "%s: %s", script_path, strerror(errno));
    fprintf(o, "# Drawn by loraps report from the run's metrics; `gnuplot %s` redraws it.\n",
            script_path);
    data_blocks(o, m);
    plots(o, m, png_path);
    if (ferror(o) | (fclose(o) != 0))
        return lp_fail(err, "%s: write failed: %s", script_path, strerror(errno));
    return 0;
}

/* Runs gnuplot on the script; gnuplot's own messages go to our stderr. */
static int run_gnuplot(const char *script_path, lp_err *err) {
    pid_t pid = fork();
    if (pid < 0) return lp_fail(err, "fork: %s", strerror(errno));
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script_path, (char *)NULL);
        _exit(errno == ENOENT ? 127 : 126);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return lp_fail(err, "waitpid: %s", strerror(errno));
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return lp_fail(err, "gnuplot is not installed (it draws the curves: apt-get install "
                            "gnuplot-nox, or deploy/install-deps.sh)");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return lp_fail(err, "gnuplot %s failed (status %d)", script_path,
                       WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 0;
}

int report_plot(const run_metrics *m, const char *script_path, const char *png_path, lp_err *err) {
    unlink(png_path); /* so a PNG found afterwards is this run's */
    if (write_script(m, script_path, png_path, err) < 0 || run_gnuplot(script_path, err) < 0)
        return -1;
    struct stat st;
    if (stat(png_path, &st) != 0 || st.st_size == 0)
        return lp_fail(err, "gnuplot wrote no %s", png_path);
    return 0;
}
