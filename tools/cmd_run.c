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
        "summarises the run; `tensorboard --logdir OUT/runs` shows its curves.\n\n"
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

static proc g_procs[MAX_PROCS];
static int g_n_procs;

/* Starts argv with stderr to the log file and stdout there too, or to stdout_fd (-1: inherit). */
static int spawn(const char *name, char *const argv[], const char *log_path, int stdout_to_log,
                 int stdout_fd) {
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
        execv(argv[0], argv);
        fprintf(stderr, "loraps run: error: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(log);
    proc *p = &g_procs[g_n_procs++];
    p->pid = pid;
    p->status = -1;
    snprintf(p->name, sizeof p->name, "%s", name);
    return 0;
}

static int reap(void) {
    int changed = 0;
    for (int i = 0; i < g_n_procs; i++) {
        if (g_procs[i].status != -1) continue;
        int st;
        pid_t r = waitpid(g_procs[i].pid, &st, WNOHANG);
        if (r == g_procs[i].pid) {
            g_procs[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            changed = 1;
        }
    }
    return changed;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* SIGTERM to every process still running (by pid), then SIGKILL after the grace period. */
static void stop_all(int grace_ms) {
    for (int i = 0; i < g_n_procs; i++)
        if (g_procs[i].status == -1) kill(g_procs[i].pid, SIGTERM);
    for (int t = 0; t < grace_ms; t += 50) {
        reap();
        int running = 0;
        for (int i = 0; i < g_n_procs; i++) running += g_procs[i].status == -1;
        if (!running) return;
        sleep_ms(50);
    }
    for (int i = 0; i < g_n_procs; i++)
        if (g_procs[i].status == -1) {
            fprintf(stderr, "loraps run: %s did not stop; killing it\n", g_procs[i].name);
            kill(g_procs[i].pid, SIGKILL);
            waitpid(g_procs[i].pid, NULL, 0);
            g_procs[i].status = 137;
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

int cmd_run(int argc, char **argv) {
    const char *model_dir = NULL, *out = "loraps-out", *preset = "small", *job_file = NULL;
    const char *resume = NULL, *data = NULL, *val_file = NULL, *tok_path = NULL, *task = NULL;
    int n_workers = 2, n_servers = 1, threads_given = 0, metrics_port = -1;
    job j;
    job_defaults(&j);
    lp_err err;
    /* Job flags are checked here so a typo fails before anything starts; they are then passed
     * on to the servers, which own the job. */
    char **pass = calloc((size_t)argc + 1, sizeof *pass);
    int n_pass = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--job") && i + 1 < argc) job_file = argv[i + 1];
    if (job_file && job_load_file(&j, job_file, &err) < 0)
        return free(pass), fail("--job", err.msg);
    for (int i = 1; i < argc;) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(pass);
            return 0;
        }
        if (!strcmp(a, "--servers") || !strcmp(a, "--model") || !strcmp(a, "--out") ||
            !strcmp(a, "--preset") || !strcmp(a, "--job") || !strcmp(a, "--metrics-port") ||
            !strcmp(a, "--resume") || !strcmp(a, "--data") || !strcmp(a, "--val-file") ||
            !strcmp(a, "--tokenizer") || !strcmp(a, "--task")) {
            if (!v) return free(pass), fail(a, "needs a value");
            if (!strcmp(a, "--servers") && parse_count(v, 1, 64, &n_servers) < 0)
                return free(pass), fail(a, "expected 1..64");
            if (!strcmp(a, "--model")) model_dir = v;
            if (!strcmp(a, "--out")) out = v;
            if (!strcmp(a, "--preset")) preset = v;
            if (!strcmp(a, "--resume")) resume = v;
            if (!strcmp(a, "--data")) data = v;
            if (!strcmp(a, "--val-file")) val_file = v;
            if (!strcmp(a, "--tokenizer")) tok_path = v;
            if (!strcmp(a, "--task")) {
                if (strcmp(v, "text") && strcmp(v, "tokens"))
                    return free(pass), fail(a, "expected text or tokens");
                task = v;
            }
            if (!strcmp(a, "--metrics-port") && parse_count(v, 1, 65000, &metrics_port) < 0)
                return free(pass), fail(a, "expected a port in 1..65000");
            i += 2;
            continue;
        }
        int start = i;
        int r = job_parse_flag(&j, argc, argv, &i, &err);
        if (r < 0) return free(pass), fail(a, err.msg);
        if (r == 0) return free(pass), fail(a, "unknown option (see loraps run --help)");
        if (!strncmp(a, "--threads", 9)) threads_given = 1;
        for (int k = start; k < i; k++) pass[n_pass++] = argv[k];
    }
    if (job_apply_env(&j, &err) < 0 || job_validate(&j, &err) < 0)
        return free(pass), fail("job", err.msg);
    if (val_file && !data) return free(pass), fail("--val-file", "needs --data");
    if (data && task) return free(pass), fail("--task", "is for runs without --data");
    if (data && j.eval_every > 0 && !val_file && j.val_fraction <= 0)
        return free(pass),
               fail("eval_every", "needs validation data: set val_fraction or --val-file");
    /* The text task needs a real tokenizer: not the test models of --model, nor tiny's. */
    int text_task = !data && (task ? !strcmp(task, "text") : !model_dir && strcmp(preset, "tiny"));
    n_workers = j.workers;
    /* --workers is both ours and the job's; the default here is 2, not the job's 1. */
    int workers_given = 0;
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--workers", 9)) workers_given = 1;
    if (!workers_given && !getenv("LORAPS_WORKERS")) n_workers = 2;
    if (n_workers + n_servers > MAX_PROCS) return free(pass), fail("--workers", "too many");

    char self[PATH_MAX], bin[PATH_MAX], ps_bin[PATH_MAX + 16], worker_bin[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) return free(pass), fail("/proc/self/exe", strerror(errno));
    self[n] = 0;
    snprintf(bin, sizeof bin, "%s", self);
    char *slash = strrchr(bin, '/');
    if (slash) *slash = 0;
    snprintf(ps_bin, sizeof ps_bin, "%s/loraps-ps", bin);
    snprintf(worker_bin, sizeof worker_bin, "%s/loraps-worker", bin);
    if (access(ps_bin, X_OK) || access(worker_bin, X_OK))
        return free(pass), fail(bin, "loraps-ps and loraps-worker are not next to loraps");

    char logs[PATH_MAX + 8], demo[PATH_MAX + 64], path[PATH_MAX + 160];
    snprintf(logs, sizeof logs, "%s/logs", out);
    if (fs_mkdirs(logs, &err) < 0) return free(pass), fail("--out", err.msg);
    if (!model_dir) {
        /* The same cached demo model as loraps train uses, made once. */
        if (demo_model_ensure(preset, demo, sizeof demo, &err) < 0)
            return free(pass), fail("demo model", err.msg);
        model_dir = demo;
    }
    char data_buf[PATH_MAX + 32], job_buf[PATH_MAX + 32];
    if (text_task) {
        snprintf(data_buf, sizeof data_buf, "%s/demo-text.txt", out);
        snprintf(job_buf, sizeof job_buf, "%s/demo-job.json", out);
        if (demo_text_write(data_buf, 4000, j.seed, &err) < 0 ||
            write_demo_job(job_file, job_buf, &err) < 0)
            return free(pass), fail("the text task", err.msg);
        data = data_buf;
        job_file = job_buf;
        /* the effective job again: the task's settings, then the user's flags and variables */
        job_defaults(&j);
        if (job_load_file(&j, job_file, &err) < 0) return free(pass), fail(job_file, err.msg);
        for (int i = 0; i < n_pass;) {
            int r = job_parse_flag(&j, n_pass, pass, &i, &err);
            if (r <= 0) return free(pass), fail("job", r < 0 ? err.msg : "bad flag");
        }
        if (job_apply_env(&j, &err) < 0 || job_validate(&j, &err) < 0)
            return free(pass), fail("job", err.msg);
        printf("loraps run: the text task: lines that walk a cycle of words (days, months, "
               "numbers, colours),\n  written to %s; a validation pass every %d steps\n",
               data, j.eval_every);
        if (run_report(model_dir, tok_path ? tok_path : model_dir, NULL, data, NULL, &j, 1, &err) <
            0)
            return free(pass), fail("the text task", err.msg);
    }

    char peers[64 * 32] = "";
    for (int k = 0; k < n_servers; k++) {
        int port = free_port();
        if (port < 0) return free(pass), fail("ports", "no free port on 127.0.0.1");
        size_t used = strlen(peers);
        snprintf(peers + used, sizeof peers - used, "%stcp://127.0.0.1:%d", k ? "," : "", port);
    }
    char workers_s[16], threads_s[16];
    snprintf(workers_s, sizeof workers_s, "%d", n_workers);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = (int)(cores / n_workers) > 0 ? (int)(cores / n_workers) : 1;
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    /* Servers and workers share these cores: OpenMP threads that busy-wait between parallel
     * regions would steal them from each other (measured: steps 1.8x slower). The children
     * read this at start-up; a user's own setting wins. */
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    printf("loraps run: %d server shard(s) at %s, %d worker(s), model %s\n", n_servers, peers,
           n_workers, model_dir);
    printf("loraps run: adapter and statistics in %s, logs in %s\n", out, logs);
    if (metrics_port > 0)
        printf("loraps run: metrics on http://127.0.0.1:%d-%d/metrics\n", metrics_port,
               metrics_port + n_servers + n_workers - 1);
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char metrics[PATH_MAX + 32];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    unlink(metrics);
    int rc = 0;
    /* on a terminal, shard 0's step lines become one updating bar (progress_bar.c) */
    progress_view *bar = progress_view_start();
    for (int k = 0; k < n_servers && rc == 0; k++) {
        char shard_s[16], name[32];
        snprintf(shard_s, sizeof shard_s, "%d", k);
        char *av[64 + 2 * argc];
        int c = 0;
        av[c++] = ps_bin;
        av[c++] = "--model";
        av[c++] = (char *)model_dir;
        av[c++] = "--shard";
        av[c++] = shard_s;
        av[c++] = "--peers";
        av[c++] = peers;
        av[c++] = "--out";
        av[c++] = (char *)out;
        av[c++] = "--workers";
        av[c++] = workers_s;
        av[c++] = "--metrics";
        av[c++] = metrics;
        if (!threads_given) av[c++] = "--threads", av[c++] = threads_s;
        char mport_s[16];
        snprintf(mport_s, sizeof mport_s, "%d", metrics_port + k);
        if (metrics_port > 0) av[c++] = "--metrics-port", av[c++] = mport_s;
        if (resume) av[c++] = "--resume", av[c++] = (char *)resume;
        if (job_file) av[c++] = "--job", av[c++] = (char *)job_file;
        for (int i = 0; i < n_pass; i++) av[c++] = pass[i];
        av[c] = NULL;
        snprintf(name, sizeof name, "ps-%d", k);
        snprintf(path, sizeof path, "%s/%s.log", logs, name);
        rc = spawn(name, av, path, k != 0, k == 0 && bar ? progress_view_fd(bar) : -1);
        if (k == 0) progress_view_started(bar);
    }
    for (int k = 0; k < n_workers && rc == 0; k++) {
        char rank_s[16], stats[PATH_MAX + 32], name[32];
        snprintf(rank_s, sizeof rank_s, "%d", k);
        snprintf(stats, sizeof stats, "%s/worker_stats_%d.json", out, k);
        char mport_s[16];
        snprintf(mport_s, sizeof mport_s, "%d", metrics_port + n_servers + k);
        char *av[24];
        int c = 0;
        av[c++] = worker_bin;
        av[c++] = "--servers", av[c++] = peers;
        av[c++] = "--model", av[c++] = (char *)model_dir;
        av[c++] = "--rank", av[c++] = rank_s;
        av[c++] = "--stats", av[c++] = stats;
        if (metrics_port > 0) av[c++] = "--metrics-port", av[c++] = mport_s;
        if (data) av[c++] = "--data", av[c++] = (char *)data;
        if (val_file) av[c++] = "--val-file", av[c++] = (char *)val_file;
        if (tok_path) av[c++] = "--tokenizer", av[c++] = (char *)tok_path;
        av[c] = NULL;
        snprintf(name, sizeof name, "worker-%d", k);
        snprintf(path, sizeof path, "%s/%s.log", logs, name);
        rc = spawn(name, av, path, 1, -1);
    }
    free(pass);
    if (rc) {
        stop_all(3000);
        progress_view_stop(bar);
        return 1;
    }

    /* Shard 0 ends the job; a server that fails ends it too. If every worker has gone, the
     * servers would wait for members forever: stop them. */
    int64_t workers_gone_at = 0;
    int exit_code = 0;
    while (!g_stop) {
        sleep_ms(50);
        if (reap()) {
            for (int i = 0; i < g_n_procs; i++)
                if (g_procs[i].status > 0 && g_procs[i].status != 255) {
                    report_exit(&g_procs[i], logs);
                    g_procs[i].status = 255; /* reported */
                    if (i < n_servers) exit_code = 1;
                }
        }
        if (exit_code) break;
        int servers_running = 0, workers_running = 0;
        for (int i = 0; i < g_n_procs; i++) {
            if (g_procs[i].status != -1) continue;
            if (i < n_servers)
                servers_running++;
            else
                workers_running++;
        }
        if (!servers_running) break;
        if (!workers_running) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
            if (!workers_gone_at) workers_gone_at = now;
            if (now - workers_gone_at > 5000) {
                fprintf(stderr, "loraps run: every worker has exited; stopping the servers\n");
                exit_code = 1;
                break;
            }
        }
    }
    if (g_stop) fprintf(stderr, "\nloraps run: stopping (signal %d)\n", (int)g_stop);
    /* Workers finish by themselves once the servers say "done"; give them a moment. */
    for (int t = 0; t < 5000 && !g_stop; t += 50) {
        reap();
        int running = 0;
        for (int i = 0; i < g_n_procs; i++) running += g_procs[i].status == -1;
        if (!running) break;
        sleep_ms(50);
    }
    stop_all(5000);
    progress_view_stop(bar);
    for (int i = 0; i < g_n_procs; i++)
        if (g_procs[i].status > 0 && g_procs[i].status != 255 && !g_stop) {
            report_exit(&g_procs[i], logs);
            exit_code = 1;
        }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", out);
    if (!exit_code && fs_exists(path)) {
        printf("loraps run: adapter written to %s\n", path);
        /* the validation loss of the final adapter (and the text task's samples) */
        size_t dn = data ? strlen(data) : 0;
        int is_bin = dn >= 4 && !strcmp(data + dn - 4, ".bin");
        const char *tp = tok_path ? tok_path : is_bin ? NULL : model_dir;
        if (data && (text_task || j.eval_every > 0) && !g_stop &&
            run_report(model_dir, tp, out, data, val_file, &j, text_task, &err) < 0)
            fprintf(stderr, "loraps run: the after-training report: %s\n", err.msg);
    }
    return g_stop ? 0 : exit_code;
}
