#include "progress_bar.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BAR_MIN 10
#define BAR_MAX 40

struct progress_view {
    int read_fd, write_fd;
    pthread_t thread;
    int utf8;
    int bar_shown; /* the cursor is on the bar's line */
    progress_step last;
    int have_last;
    double last_val;
};

/* ---- parsing and drawing -------------------------------------------------------------------- */

int progress_step_parse(const char *line, progress_step *s) {
    memset(s, 0, sizeof *s);
    int used = 0;
    if (sscanf(line, "step %ld/%ld  loss %lf  %lf tok/s%n", &s->step, &s->total, &s->loss,
               &s->tokens_per_s, &used) != 4 ||
        used == 0 || s->total <= 0)
        return -1;
    const char *v = strstr(line, "  val_loss ");
    s->has_val = v && sscanf(v, "  val_loss %lf", &s->val_loss) == 1;
    const char *e = strstr(line, "  eta ");
    if (e) sscanf(e, "  eta %31s", s->eta);
    return 0;
}

static int utf8_terminal(void) {
    const char *vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return strcasestr(v, "utf-8") || strcasestr(v, "utf8");
    }
    return 0;
}

/* width cells of bar, filled to fraction f: full blocks and one eighth-block, or '#' and '.' */
static size_t draw_bar(char *out, size_t n, double f, int width, int utf8) {
    static const char *eighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
    int cells8 = (int)(f * width * 8 + 0.5), full = cells8 / 8, part = cells8 % 8;
    size_t o = 0;
    for (int i = 0; i < width && o + 4 < n; i++) {
        const char *c = i < full                    ? (utf8 ? "█" : "#")
                        : i == full && part && utf8 ? eighths[part]
                        : utf8                      ? " "
                                                    : ".";
        size_t len = strlen(c);
        memcpy(out + o, c, len);
        o += len;
    }
    out[o] = 0;
    return o;
}

void progress_bar_render(char *out, size_t n, const progress_step *s, double last_val, int columns,
                         int utf8) {
    double f = (double)s->step / (double)s->total;
    if (f > 1) f = 1;
    char head[64], tail[160], val[48] = "";
    int digits = snprintf(NULL, 0, "%ld", s->total);
    snprintf(head, sizeof head, "step %*ld/%ld ", digits, s->step, s->total);
    if (!isnan(last_val)) snprintf(val, sizeof val, "  val %.4f", last_val);
    snprintf(tail, sizeof tail, " %3d%%  loss %.4f%s  %.0f tok/s%s%s", (int)(f * 100), s->loss, val,
             s->tokens_per_s, s->eta[0] ? "  eta " : "", s->eta);
    int room = columns - 1 - (int)strlen(head) - (int)strlen(tail) - 2;
    int width = room > BAR_MAX ? BAR_MAX : room;
    if (width < BAR_MIN) { /* too narrow for a bar: the figures alone, cut to fit */
        snprintf(out, n, "%s%s", head, tail + 1);
        if (columns > 1 && strlen(out) >= (size_t)columns) out[columns - 1] = 0;
        return;
    }
    char bar[BAR_MAX * 4 + 1];
    draw_bar(bar, sizeof bar, f, width, utf8);
    snprintf(out, n, "%s|%s|%s", head, bar, tail);
}

/* ---- the view ------------------------------------------------------------------------------- */

static int terminal_columns(void) {
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}

static void show_bar(progress_view *v) {
    char line[1024];
    progress_bar_render(line, sizeof line, &v->last, v->last_val, terminal_columns(), v->utf8);
    printf("\r%s\033[K", line);
    v->bar_shown = 1;
    fflush(stdout);
}

/* A line that stays: the bar's line is cleared for it and the bar drawn again below. */
static void show_line(progress_view *v, const char *line) {
    printf("%s%s\n", v->bar_shown ? "\r\033[K" : "", line);
    v->bar_shown = 0;
    if (v->have_last) show_bar(v);
    fflush(stdout);
}

static void on_line(progress_view *v, char *line) {
    line[strcspn(line, "\n")] = 0;
    progress_step s;
    if (progress_step_parse(line, &s) < 0) {
        show_line(v, line);
        return;
    }
    v->last = s;
    v->have_last = 1;
    if (s.has_val) { /* a validation pass: a line of its own stays above the bar */
        v->last_val = s.val_loss;
        const char *val = strstr(line, "val_loss "), *end = val ? strchr(val, ')') : NULL;
        char kept[512];
        snprintf(kept, sizeof kept, "step %ld/%ld  %.*s", s.step, s.total,
                 end ? (int)(end - val + 1) : 0, end ? val : "");
        show_line(v, kept);
    } else {
        show_bar(v);
    }
}

static void *view_main(void *arg) {
    progress_view *v = arg;
    FILE *in = fdopen(v->read_fd, "r");
    if (!in) return NULL;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) >= 0) on_line(v, line);
    free(line);
    fclose(in); /* closes read_fd */
    return NULL;
}

progress_view *progress_view_start(void) {
    if (!isatty(STDOUT_FILENO)) return NULL;
    progress_view *v = calloc(1, sizeof *v);
    int fds[2];
    if (!v || pipe2(fds, O_CLOEXEC) != 0) {
        free(v);
        return NULL;
    }
    v->read_fd = fds[0];
    v->write_fd = fds[1];
    v->utf8 = utf8_terminal();
    v->last_val = NAN; /* no validation pass yet */
    if (pthread_create(&v->thread, NULL, view_main, v) != 0) {
        close(fds[0]);
        close(fds[1]);
        free(v);
        return NULL;
    }
    return v;
}

int progress_view_fd(const progress_view *v) {
    return v->write_fd;
}

void progress_view_started(progress_view *v) {
    if (v && v->write_fd >= 0) close(v->write_fd);
    if (v) v->write_fd = -1;
}

void progress_view_stop(progress_view *v) {
    if (!v) return;
    progress_view_started(v); /* if the shard never started, the stream ends here */
    pthread_join(v->thread, NULL);
    if (v->bar_shown) printf("\n");
    fflush(stdout);
    free(v);
}
