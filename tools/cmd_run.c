/* loraps run: a whole job on this machine. Starts S parameter-server shards and N workers
 * (loraps-ps and loraps-worker, found next to this binary), streams shard 0's progress line per
 * step, and stops every process cleanly on Ctrl-C. Without --model it makes the demo model. */
#include "commands.h"
#include "lora_targets.h"
#include "model_load.h"

#include "fsutil.h"
#include "job.h"
#include "demo_model.h"
#include "demo_text.h"
#include "model.h"
#include "net_config.h"
#include "peft.h"
#include "progress_bar.h"
#include "cpu_share.h"
#include "text_continue.h"
#include "tokenizer.h"
#include "val_pass.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 512

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    g_stop = sig;
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: loraps run [--workers N] [--servers S] [--model DIR] [--data FILE] [--out DIR]\n"
        "                  [job settings]\n\n"
        "Runs a whole job on this machine: S parameter-server shards and N workers on\n"
        "loopback. One progress line per step (on a terminal, one line with a bar that\n"
        "updates in place); Ctrl-C stops every process cleanly. With no arguments it\n"
        "fine-tunes the small demo model on a text task it writes itself and shows the\n"
        "validation loss and greedy samples before and after. `loraps report OUT` then\n"
        "summarises the run; `tensorboard --logdir OUT/runs` shows its curves. Each worker\n"
        "runs on its own block of this machine's cores.\n\n"
        "  --workers N      workers (default 2)\n"
        "  --servers S      parameter-server shards (default 1)\n"
        "  --model DIR      the base model (HF folder); without it, the demo model of\n"
        "                   --preset is made in OUT/demo-model-PRESET\n"
        "  --preset NAME    tiny | small | 124m for the demo model (default small)\n"
        "  --out DIR        the adapter, statistics and logs go here (default loraps-out)\n"
        "  --job FILE       a JSON job file (flags and LORAPS_* variables override it)\n"
        "  --data FILE      training data for every worker: .txt, .jsonl ({\"text\"} or\n"
        "                   {\"prompt\", \"completion\"}: loss on the completion) or .bin;\n"
        "                   the job's seq_len, layout, val_fraction, ... say how it is cut\n"
        "  --val-file FILE  validation data (default: the job's val_fraction of --data)\n"
        "  --tokenizer P    tokenizer.json for text data (default: the model's)\n"
        "  --task T         without --data: text (default; a task written as text into\n"
        "                   OUT/demo-text.txt, learned through the model's tokenizer, with\n"
        "                   validation and generations before and after) or tokens (the\n"
        "                   token-level demo task; the default with --model or --preset tiny)\n"
        "  --resume DIR     continue from a checkpoint (OUT/checkpoint-<step>), `latest`\n"
        "                   (OUT/latest) or a PEFT adapter folder (fresh optimizer state)\n"
        "  --metrics-port P serve /healthz, /readyz and /metrics: shard k on P+k, worker i\n"
        "                   on P+S+i (S shards)\n"
        "  --help           this text\n\njob settings (passed to the servers):\n");
    job_print_help(out);
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps run: error: %s: %s\n", what, why);
    return 2;
}

static int free_port(void) {
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

typedef struct proc {
    pid_t pid;
    char name[32];
    int status; /* -1 while running */
} proc;

/* The processes a run started: servers first (shard k is procs[k]), then workers. */
typedef struct procs {
    proc p[MAX_PROCS];
    int n;
} procs;

/* Starts argv with stderr to the log file and stdout there too, or to stdout_fd (-1: inherit);
 * pinned to share's cores where share is given. */
static int spawn(procs *ps, const char *name, char *const argv[], const char *log_path,
                 int stdout_to_log, int stdout_fd, const cpu_share *share) {
    int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log < 0) {
        fail(log_path, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(log);
        fail("fork", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dup2(log, 2);
        if (stdout_to_log) dup2(log, 1);
        if (!stdout_to_log && stdout_fd >= 0) dup2(stdout_fd, 1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        /* Each child gets its rank, shard, bind and ports as flags; variables meant for one
         * process (LORAPS_RANK, LORAPS_METRICS_PORT, ...) must not reach them all. */
        netcfg_clear_process_env();
        lp_err e;
        if (share && cpu_share_apply(share, &e) < 0)
            fprintf(stderr, "loraps run: warning: %s\n", e.msg);
        execv(argv[0], argv);
        fprintf(stderr, "loraps run: error: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(log);
    proc *p = &ps->p[ps->n++];
    p->pid = pid;
    p->status = -1;
    snprintf(p->name, sizeof p->name, "%s", name);
    return 0;
}

static int reap(procs *ps) {
    int changed = 0;
    for (int i = 0; i < ps->n; i++) {
        if (ps->p[i].status != -1) continue;
        int st;
        pid_t r = waitpid(ps->p[i].pid, &st, WNOHANG);
        if (r == ps->p[i].pid) {
            ps->p[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            changed = 1;
        }
    }
    return changed;
}

static int n_running(const procs *ps) {
    int running = 0;
    for (int i = 0; i < ps->n; i++) running += ps->p[i].status == -1;
    return running;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* SIGTERM to every process still running (by pid), then SIGKILL after the grace period. */
static void stop_all(procs *ps, int grace_ms) {
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].status == -1) kill(ps->p[i].pid, SIGTERM);
    for (int t = 0; t < grace_ms; t += 50) {
        reap(ps);
        if (!n_running(ps)) return;
        sleep_ms(50);
    }
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].status == -1) {
            fprintf(stderr, "loraps run: %s did not stop; killing it\n", ps->p[i].name);
            kill(ps->p[i].pid, SIGKILL);
            waitpid(ps->p[i].pid, NULL, 0);
            ps->p[i].status = 137;
        }
}

/* A process that failed: its status and its log's last error line, so the cause (bad data, a
 * refused worker) is on the terminal, not only in the log. */
static void report_exit(const proc *p, const char *logs) {
    char path[PATH_MAX + 64], line[1024], last[1024] = "";
    snprintf(path, sizeof path, "%s/%s.log", logs, p->name);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "error:")) snprintf(last, sizeof last, "%s", line);
    if (f) fclose(f);
    last[strcspn(last, "\n")] = 0;
    fprintf(stderr, "loraps run: %s exited with status %d (see %s)%s%s\n", p->name, p->status, path,
            last[0] ? ": " : "", last);
}

static int parse_count(const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

/* The text task's settings, where the user's job file does not set them: what it needs to
 * learn the task in a minute or two on two cores. Written with the user's file into one job
 * file, so flags and LORAPS_* variables still override both. */
static int write_demo_job(const char *user_file, const char *path, lp_err *err) {
    json_error_t je;
    json_t *o = user_file ? json_load_file(user_file, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (!o) return lp_fail(err, "%s:%d: %s", user_file, je.line, je.text);
    if (!json_is_object(o)) {
        json_decref(o);
        return lp_fail(err, "%s: a job file is a JSON object of settings", user_file);
    }
    struct {
        const char *key;
        json_t *value;
    } demo[] = {
        {"max_steps", json_integer(300)},   {"lr", json_real(1e-2)},
        {"warmup_steps", json_integer(10)}, {"seq_len", json_integer(64)},
        {"micro_batch", json_integer(4)},   {"eval_every", json_integer(30)},
        {"val_fraction", json_real(0.02)},  {"txt_docs", json_string("line")},
    };
    for (size_t i = 0; i < sizeof demo / sizeof demo[0]; i++) {
        char dashed[64];
        snprintf(dashed, sizeof dashed, "%s", demo[i].key);
        for (char *c = dashed; *c; c++)
            if (*c == '_') *c = '-';
        if (!json_object_get(o, demo[i].key) && !json_object_get(o, dashed))
            json_object_set(o, demo[i].key, demo[i].value);
        json_decref(demo[i].value);
    }
    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    return rc < 0 ? lp_fail(err, "cannot write %s", path) : 0;
}

/* Greedy continuations of the demo prompts, with the adapter (or without: a == NULL). */
static void print_samples(const char *title, const model *m, const lora_adapter *a,
                          const tokenizer *tok) {
    const char *const *prompts;
    int n = demo_text_prompts(&prompts);
    printf("loraps run: %s\n", title);
    for (int i = 0; i < n; i++) {
        char *text = NULL;
        lp_err err;
        if (text_continue(m, a, tok, prompts[i], 16, &text, &err) < 0) {
            printf("  %s -> (error: %s)\n", prompts[i], err.msg);
            continue;
        }
        for (char *c = text; *c; c++)
            if (*c == '\n') *c = ' ';
        printf("  %s |%s\n", prompts[i], text);
        free(text);
    }
    fflush(stdout);
}

/* Before training (adapter_dir NULL: the job's fresh adapter, a no-op, so the base model) and
 * after: the validation loss of the whole validation set (the servers' last pass was before
 * the last steps) and, for the text task, greedy samples (tok_path NULL: .bin data, none). */
static int run_report(const char *model_dir, const char *tok_path, const char *adapter_dir,
                      const char *data, const char *val_file, const job *j, int samples,
                      lp_err *err) {
    model *m = NULL;
    tokenizer *tok = NULL;
    lora_adapter a;
    int have_a = 0, have_src = 0, rc = -1;
    model_trainer *t = NULL;
    data_source src;
    const lora_module *mods;
    int *in = NULL, *tg = NULL;
    const char *when = adapter_dir ? "after" : "before";
    if (model_load(&m, model_dir, err) < 0 || (tok_path && tokenizer_load(&tok, tok_path, err) < 0))
        goto done;
    int n_mods = model_lora_modules(m, &mods);
    if (adapter_dir) {
        if (peft_load(adapter_dir, mods, n_mods, &a, err) < 0) goto done;
        have_a = 1;
    } else {
        lora_config lc;
        if (job_lora_config(j, &lc, err) < 0) goto done;
        int built = lora_adapter_build(&a, &lc, mods, n_mods, err);
        lora_config_free(&lc);
        if (built < 0) goto done;
        have_a = 1;
        lora_adapter_init(&a, j->seed);
    }
    dataset_options o;
    if (job_data_options(j, &o, err) < 0) goto done;
    o.vocab_size = model_vocab_size(m);
    o.val_path = val_file;
    if (data_source_open_file(&src, data, tok_path, &o, err) < 0) goto done;
    have_src = 1;
    size_t n = (size_t)j->micro_batch * (size_t)j->seq_len;
    in = malloc(n * sizeof(int)), tg = malloc(n * sizeof(int));
    val_result v;
    if (!in || !tg) {
        lp_fail(err, "out of memory");
        goto done;
    }
    if (model_trainer_new(&t, m, &a, j->micro_batch, j->seq_len, err) < 0 ||
        val_pass(t, &src, j->micro_batch, j->seq_len, 0, 1, in, tg, &v, err) < 0)
        goto done;
    if (v.n_tokens)
        printf("loraps run: %s: validation loss %.4f (perplexity %.2f) over %llu tokens\n", when,
               v.loss_sum / (double)v.n_tokens, exp(v.loss_sum / (double)v.n_tokens),
               (unsigned long long)v.n_tokens);
    if (samples && tok)
        print_samples(adapter_dir ? "after: the adapter continues the prompts (greedy)"
                                  : "before: the base model continues the prompts (greedy)",
                      m, adapter_dir ? &a : NULL, tok);
    rc = 0;
done:
    free(in);
    free(tg);
    model_trainer_free(t);
    if (have_src) data_source_close(&src);
    if (have_a) lora_adapter_free(&a);
    tokenizer_free(tok);
    model_free(m);
    return rc;
}

/* ---- the run: options, preparation, the processes ------------------------------------------ */

/* Everything one `loraps run` holds. */
typedef struct run {
    int argc;
    char **argv;
    /* options */
    const char *model_dir, *out, *preset, *job_file, *resume, *data, *val_file, *tok_path, *task;
    int n_workers, n_servers, threads_given, metrics_port, text_task;
    job j;
    char **pass; /* the job flags, checked here and passed on to the servers, which own the job */
    int n_pass;
    /* what the preparation made */
    char ps_bin[PATH_MAX + 16], worker_bin[PATH_MAX + 16];
    char logs[PATH_MAX + 8], demo[PATH_MAX + 64], data_buf[PATH_MAX + 32], job_buf[PATH_MAX + 32];
    char peers[64 * 32], workers_s[16], threads_s[16], metrics[PATH_MAX + 32];
    procs procs;
    progress_view *bar; /* on a terminal, shard 0's step lines as one updating bar */
} run;

/* A step's result: GO_ON, or the exit status the command ends with. */
enum { GO_ON = -1 };

static int is_flag(const char *a, const char *const *names) {
    for (; *names; names++)
        if (!strcmp(a, *names)) return 1;
    return 0;
}

/* One of run's own flags (not a job setting), with its value v. */
static int take_run_flag(run *r, const char *a, const char *v) {
    if (!v) return fail(a, "needs a value");
    if (!strcmp(a, "--servers") && parse_count(v, 1, 64, &r->n_servers) < 0)
        return fail(a, "expected 1..64");
    if (!strcmp(a, "--model")) r->model_dir = v;
    if (!strcmp(a, "--out")) r->out = v;
    if (!strcmp(a, "--preset")) r->preset = v;
    if (!strcmp(a, "--resume")) r->resume = v;
    if (!strcmp(a, "--data")) r->data = v;
    if (!strcmp(a, "--val-file")) r->val_file = v;
    if (!strcmp(a, "--tokenizer")) r->tok_path = v;
    if (!strcmp(a, "--task")) {
        if (strcmp(v, "text") && strcmp(v, "tokens")) return fail(a, "expected text or tokens");
        r->task = v;
    }
    if (!strcmp(a, "--metrics-port") && parse_count(v, 1, 65000, &r->metrics_port) < 0)
        return fail(a, "expected a port in 1..65000");
    return GO_ON;
}

static int parse_options(run *r) {
    static const char *const RUN_FLAGS[] = {"--servers",  "--model",        "--out",    "--preset",
                                            "--job",      "--metrics-port", "--resume", "--data",
                                            "--val-file", "--tokenizer",    "--task",   NULL};
    int argc = r->argc;
    char **argv = r->argv;
    lp_err err;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--job") && i + 1 < argc) r->job_file = argv[i + 1];
    if (r->job_file && job_load_file(&r->j, r->job_file, &err) < 0) return fail("--job", err.msg);
    for (int i = 1; i < argc;) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (is_flag(a, RUN_FLAGS)) {
            int status = take_run_flag(r, a, v);
            if (status != GO_ON) return status;
            i += 2;
            continue;
        }
        int start = i, rc = job_parse_flag(&r->j, argc, argv, &i, &err);
        if (rc < 0) return fail(a, err.msg);
        if (rc == 0) return fail(a, "unknown option (see loraps run --help)");
        if (!strncmp(a, "--threads", 9)) r->threads_given = 1;
        for (int k = start; k < i; k++) r->pass[r->n_pass++] = argv[k];
    }
    return GO_ON;
}

static int check_options(run *r) {
    lp_err err;
    if (job_apply_env(&r->j, &err) < 0 || job_validate(&r->j, &err) < 0)
        return fail("job", err.msg);
    if (r->val_file && !r->data) return fail("--val-file", "needs --data");
    if (r->data && r->task) return fail("--task", "is for runs without --data");
    if (r->data && r->j.eval_every > 0 && !r->val_file && r->j.val_fraction <= 0)
        return fail("eval_every", "needs validation data: set val_fraction or --val-file");
    /* The text task needs a real tokenizer: not the test models of --model, nor tiny's. */
    r->text_task = !r->data && (r->task ? !strcmp(r->task, "text")
                                        : !r->model_dir && strcmp(r->preset, "tiny"));
    r->n_workers = r->j.workers;
    /* --workers is both ours and the job's; the default here is 2, not the job's 1. */
    int workers_given = 0;
    for (int i = 1; i < r->argc; i++)
        if (!strncmp(r->argv[i], "--workers", 9)) workers_given = 1;
    if (!workers_given && !getenv("LORAPS_WORKERS")) r->n_workers = 2;
    if (r->n_workers + r->n_servers > MAX_PROCS) return fail("--workers", "too many");
    return GO_ON;
}

/* loraps-ps and loraps-worker, next to this binary. */
static int find_daemons(run *r) {
    char self[PATH_MAX], bin[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) return fail("/proc/self/exe", strerror(errno));
    self[n] = 0;
    snprintf(bin, sizeof bin, "%s", self);
    char *slash = strrchr(bin, '/');
    if (slash) *slash = 0;
    snprintf(r->ps_bin, sizeof r->ps_bin, "%s/loraps-ps", bin);
    snprintf(r->worker_bin, sizeof r->worker_bin, "%s/loraps-worker", bin);
    if (access(r->ps_bin, X_OK) || access(r->worker_bin, X_OK))
        return fail(bin, "loraps-ps and loraps-worker are not next to loraps");
    return GO_ON;
}

/* The output and log folders, and the demo model unless --model gives one. */
static int prepare_out(run *r) {
    lp_err err;
    snprintf(r->logs, sizeof r->logs, "%s/logs", r->out);
    if (fs_mkdirs(r->logs, &err) < 0) return fail("--out", err.msg);
    if (r->model_dir) return GO_ON;
    /* The same cached demo model as loraps train uses, made once. */
    if (demo_model_ensure(r->preset, r->demo, sizeof r->demo, &err) < 0)
        return fail("demo model", err.msg);
    r->model_dir = r->demo;
    return GO_ON;
}

/* The effective job again, from the text task's job file: then the user's flags and variables. */
static int reload_job(run *r) {
    lp_err err;
    job_defaults(&r->j);
    if (job_load_file(&r->j, r->job_file, &err) < 0) return fail(r->job_file, err.msg);
    for (int i = 0; i < r->n_pass;) {
        int rc = job_parse_flag(&r->j, r->n_pass, r->pass, &i, &err);
        if (rc <= 0) return fail("job", rc < 0 ? err.msg : "bad flag");
    }
    if (job_apply_env(&r->j, &err) < 0 || job_validate(&r->j, &err) < 0)
        return fail("job", err.msg);
    return GO_ON;
}

/* The text task: its data and job file in OUT, and the base model's report before training. */
static int prepare_text_task(run *r) {
    if (!r->text_task) return GO_ON;
    lp_err err;
    snprintf(r->data_buf, sizeof r->data_buf, "%s/demo-text.txt", r->out);
    snprintf(r->job_buf, sizeof r->job_buf, "%s/demo-job.json", r->out);
    if (demo_text_write(r->data_buf, 4000, r->j.seed, &err) < 0 ||
        write_demo_job(r->job_file, r->job_buf, &err) < 0)
        return fail("the text task", err.msg);
    r->data = r->data_buf;
    r->job_file = r->job_buf;
    int status = reload_job(r);
    if (status != GO_ON) return status;
    printf("loraps run: the text task: lines that walk a cycle of words (days, months, "
           "numbers, colours),\n  written to %s; a validation pass every %d steps\n",
           r->data, r->j.eval_every);
    const char *tok = r->tok_path ? r->tok_path : r->model_dir;
    if (run_report(r->model_dir, tok, NULL, r->data, NULL, &r->j, 1, &err) < 0)
        return fail("the text task", err.msg);
    return GO_ON;
}

/* The servers' ports, the threads per process, and what the run will be. */
static int plan_processes(run *r) {
    r->peers[0] = 0;
    for (int k = 0; k < r->n_servers; k++) {
        int port = free_port();
        if (port < 0) return fail("ports", "no free port on 127.0.0.1");
        size_t used = strlen(r->peers);
        snprintf(r->peers + used, sizeof r->peers - used, "%stcp://127.0.0.1:%d", k ? "," : "",
                 port);
    }
    snprintf(r->workers_s, sizeof r->workers_s, "%d", r->n_workers);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = (int)(cores / r->n_workers) > 0 ? (int)(cores / r->n_workers) : 1;
    snprintf(r->threads_s, sizeof r->threads_s, "%d", threads);
    /* Servers and workers share these cores: OpenMP threads that busy-wait between parallel
     * regions would steal them from each other (measured: steps 1.8x slower). The children
     * read this at start-up; a user's own setting wins. */
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    printf("loraps run: %d server shard(s) at %s, %d worker(s), model %s\n", r->n_servers, r->peers,
           r->n_workers, r->model_dir);
    printf("loraps run: adapter and statistics in %s, logs in %s\n", r->out, r->logs);
    if (r->metrics_port > 0)
        printf("loraps run: metrics on http://127.0.0.1:%d-%d/metrics\n", r->metrics_port,
               r->metrics_port + r->n_servers + r->n_workers - 1);
    fflush(stdout);
    return GO_ON;
}

static int start_server(run *r, int k) {
    char shard_s[16], name[32], mport_s[16], path[PATH_MAX + 160];
    snprintf(shard_s, sizeof shard_s, "%d", k);
    snprintf(mport_s, sizeof mport_s, "%d", r->metrics_port + k);
    char *av[32 + r->n_pass];
    int c = 0;
    av[c++] = r->ps_bin;
    av[c++] = "--model", av[c++] = (char *)r->model_dir;
    av[c++] = "--shard", av[c++] = shard_s;
    av[c++] = "--peers", av[c++] = r->peers;
    av[c++] = "--out", av[c++] = (char *)r->out;
    av[c++] = "--workers", av[c++] = r->workers_s;
    av[c++] = "--metrics", av[c++] = r->metrics;
    if (!r->threads_given) av[c++] = "--threads", av[c++] = r->threads_s;
    if (r->metrics_port > 0) av[c++] = "--metrics-port", av[c++] = mport_s;
    if (r->resume) av[c++] = "--resume", av[c++] = (char *)r->resume;
    if (r->job_file) av[c++] = "--job", av[c++] = (char *)r->job_file;
    for (int i = 0; i < r->n_pass; i++) av[c++] = r->pass[i];
    av[c] = NULL;
    snprintf(name, sizeof name, "ps-%d", k);
    snprintf(path, sizeof path, "%s/%s.log", r->logs, name);
    /* servers stay unpinned: they work between the workers' steps */
    int rc = spawn(&r->procs, name, av, path, k != 0,
                   k == 0 && r->bar ? progress_view_fd(r->bar) : -1, NULL);
    if (k == 0) progress_view_started(r->bar);
    return rc;
}

static int start_worker(run *r, int k) {
    char rank_s[16], stats[PATH_MAX + 32], name[32], mport_s[16], path[PATH_MAX + 160];
    snprintf(rank_s, sizeof rank_s, "%d", k);
    snprintf(stats, sizeof stats, "%s/worker_stats_%d.json", r->out, k);
    snprintf(mport_s, sizeof mport_s, "%d", r->metrics_port + r->n_servers + k);
    /* each worker on its own block of cores, as many threads as it has cores (unless --threads) */
    cpu_share share;
    lp_err serr;
    char wthreads_s[16];
    int pinned = cpu_share_for(r->n_workers, k, &share, &serr) == 0;
    snprintf(wthreads_s, sizeof wthreads_s, "%d", pinned ? share.threads : 1);
    char *av[28];
    int c = 0;
    av[c++] = r->worker_bin;
    if (pinned && !r->threads_given) av[c++] = "--threads", av[c++] = wthreads_s;
    av[c++] = "--servers", av[c++] = r->peers;
    av[c++] = "--model", av[c++] = (char *)r->model_dir;
    av[c++] = "--rank", av[c++] = rank_s;
    av[c++] = "--stats", av[c++] = stats;
    if (r->metrics_port > 0) av[c++] = "--metrics-port", av[c++] = mport_s;
    if (r->data) av[c++] = "--data", av[c++] = (char *)r->data;
    if (r->val_file) av[c++] = "--val-file", av[c++] = (char *)r->val_file;
    if (r->tok_path) av[c++] = "--tokenizer", av[c++] = (char *)r->tok_path;
    av[c] = NULL;
    snprintf(name, sizeof name, "worker-%d", k);
    snprintf(path, sizeof path, "%s/%s.log", r->logs, name);
    return spawn(&r->procs, name, av, path, 1, -1, pinned ? &share : NULL);
}

/* Ctrl-C and SIGTERM stop the run, then every process, cleanly. */
static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The servers, then the workers; if one cannot start, the others are stopped. */
static int start_processes(run *r) {
    install_signals();
    snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", r->out);
    unlink(r->metrics);
    int rc = 0;
    r->bar = progress_view_start();
    for (int k = 0; k < r->n_servers && rc == 0; k++) rc = start_server(r, k);
    for (int k = 0; k < r->n_workers && rc == 0; k++) rc = start_worker(r, k);
    if (rc == 0) return GO_ON;
    stop_all(&r->procs, 3000);
    progress_view_stop(r->bar);
    r->bar = NULL;
    return 1;
}

/* Reports each process that has failed since the last call; 1 if a server did. */
static int report_failures(run *r) {
    int server_failed = 0;
    for (int i = 0; i < r->procs.n; i++) {
        proc *p = &r->procs.p[i];
        if (p->status <= 0 || p->status == 255) continue;
        report_exit(p, r->logs);
        p->status = 255; /* reported */
        if (i < r->n_servers) server_failed = 1;
    }
    return server_failed;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Until the job ends: shard 0 ends it; a server that fails ends it too. If every worker has
 * gone, the servers would wait for members forever: stop them. The exit status so far. */
static int supervise(run *r) {
    int64_t workers_gone_at = 0;
    while (!g_stop) {
        sleep_ms(50);
        if (reap(&r->procs) && report_failures(r)) return 1;
        int servers_running = 0, workers_running = 0;
        for (int i = 0; i < r->procs.n; i++) {
            if (r->procs.p[i].status != -1) continue;
            if (i < r->n_servers)
                servers_running++;
            else
                workers_running++;
        }
        if (!servers_running) return 0;
        if (workers_running) continue;
        int64_t now = now_ms();
        if (!workers_gone_at) workers_gone_at = now;
        if (now - workers_gone_at > 5000) {
            fprintf(stderr, "loraps run: every worker has exited; stopping the servers\n");
            return 1;
        }
    }
    return 0;
}

/* Every process stopped; those that failed reported. The exit status. */
static int wind_down(run *r, int exit_code) {
    if (g_stop) fprintf(stderr, "\nloraps run: stopping (signal %d)\n", (int)g_stop);
    /* Workers finish by themselves once the servers say "done"; give them a moment. */
    for (int t = 0; t < 5000 && !g_stop; t += 50) {
        reap(&r->procs);
        if (!n_running(&r->procs)) break;
        sleep_ms(50);
    }
    stop_all(&r->procs, 5000);
    progress_view_stop(r->bar);
    r->bar = NULL;
    for (int i = 0; i < r->procs.n; i++)
        if (r->procs.p[i].status > 0 && r->procs.p[i].status != 255 && !g_stop) {
            report_exit(&r->procs.p[i], r->logs);
            exit_code = 1;
        }
    return exit_code;
}

/* The adapter, and the validation loss of the final adapter (and the text task's samples). */
static void report_after(const run *r) {
    char path[PATH_MAX + 160];
    lp_err err;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", r->out);
    if (!fs_exists(path)) return;
    printf("loraps run: adapter written to %s\n", path);
    size_t dn = r->data ? strlen(r->data) : 0;
    int is_bin = dn >= 4 && !strcmp(r->data + dn - 4, ".bin");
    const char *tp = r->tok_path ? r->tok_path : is_bin ? NULL : r->model_dir;
    if (r->data && (r->text_task || r->j.eval_every > 0) && !g_stop &&
        run_report(r->model_dir, tp, r->out, r->data, r->val_file, &r->j, r->text_task, &err) < 0)
        fprintf(stderr, "loraps run: the after-training report: %s\n", err.msg);
}

static int run_job(run *r) {
    int exit_code = wind_down(r, supervise(r));
    if (!exit_code) report_after(r);
    return g_stop ? 0 : exit_code;
}

int cmd_run(int argc, char **argv) {
    static int (*const STEPS[])(run *) = {
        parse_options,     check_options,  find_daemons,    prepare_out,
        prepare_text_task, plan_processes, start_processes, run_job};
    run *r = calloc(1, sizeof *r);
    char **pass = calloc((size_t)argc + 1, sizeof *pass);
    int status = r && pass ? GO_ON : fail("loraps run", "out of memory");
    if (r && pass) {
        r->argc = argc, r->argv = argv, r->pass = pass;
        r->out = "loraps-out", r->preset = "small";
        r->n_workers = 2, r->n_servers = 1, r->metrics_port = -1;
        job_defaults(&r->j);
    }
    for (size_t i = 0; status == GO_ON && i < sizeof STEPS / sizeof STEPS[0]; i++)
        status = STEPS[i](r);
    free(pass);
    free(r);
    return status;
}
