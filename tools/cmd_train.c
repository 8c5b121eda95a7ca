/* loraps train: LoRA fine-tuning in this one process, on a data file or the embedded demo task:
 * the reference the distributed job (loraps run) matches exactly. */
#include "commands.h"
#include "lora_targets.h"
#include "model_load.h"
#include "demo_model.h"
#include "job.h"
#include "local_train.h"
#include "model.h"
#include "peft.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: loraps train [--model DIR | --preset tiny|small|124m] [--job FILE] [--out DIR]\n"
        "                    [--data FILE [--val-file FILE] [--tokenizer PATH]] [job options]\n\n"
        "Trains a LoRA adapter in this process on --data (.txt, .jsonl, .bin; cut into\n"
        "sequences by the job's seq_len, layout, val_fraction, ...) or, without it, on the\n"
        "embedded token-level demo task: the same sequences, in the same order, as a\n"
        "distributed job (loraps run) on the same data. Without --model, a demo model of the\n"
        "preset (default small) is created once under the cache folder. --out DIR writes the\n"
        "adapter there in PEFT format.\n\njob options:\n");
    job_print_help(out);
}

/* The run's last figures, for the adapter's model card. */
typedef struct train_record {
    int steps;
    uint64_t tokens;
    double loss, val_loss;
    int val_step;
} train_record;

static void record(train_record *r, const train_progress *p) {
    if (p->val_step >= 0) {
        r->val_loss = p->val_loss;
        r->val_step = p->val_step;
    }
    if (p->step > p->total_steps) return;
    r->steps = p->step;
    r->tokens += (uint64_t)p->tokens;
    r->loss = p->loss;
}

static void print_step(const train_progress *p, void *ctx) {
    record(ctx, p);
    char val[96] = "";
    if (p->val_step >= 0)
        snprintf(val, sizeof val, " | val_loss %.4f ppl %.2f (at step %d)", p->val_loss,
                 exp(p->val_loss), p->val_step);
    if (p->step > p->total_steps) { /* the final validation pass */
        printf("final%s\n", val);
        fflush(stdout);
        return;
    }
    double eta = p->elapsed_seconds / p->step * (p->total_steps - p->step);
    printf("step %4d/%d | loss %.4f | lr %.2e | grad norm %.3f | %6.0f tok/s | ETA %.0fs%s\n",
           p->step, p->total_steps, p->loss, p->lr, p->grad_norm, p->tokens / p->step_seconds, eta,
           val);
    fflush(stdout);
}

static int fail(const char *what, const lp_err *err) {
    fprintf(stderr, "loraps train: error: %s: %s\n", what, err->msg);
    return 1;
}

/* A step's result: GO_ON, or the exit status the command ends with. */
enum { GO_ON = -1 };

/* What one `loraps train` holds, freed in one place. */
typedef struct train_run {
    const char *model_dir, *preset, *out, *job_file, *data, *val_file, *tok_path;
    job j;
    char demo_dir[4096];
    model *m;
    lora_adapter a;
    int have_adapter;
    data_source src;
    int have_src;
} train_run;

/* One of train's own options (not a job setting), with its value v. */
static int take_option(train_run *t, const char *a, const char *v) {
    if (!strcmp(a, "--model"))
        t->model_dir = v;
    else if (!strcmp(a, "--preset"))
        t->preset = v;
    else if (!strcmp(a, "--out"))
        t->out = v;
    else if (!strcmp(a, "--data"))
        t->data = v;
    else if (!strcmp(a, "--val-file"))
        t->val_file = v;
    else if (!strcmp(a, "--tokenizer"))
        t->tok_path = v;
    else if (strcmp(a, "--job")) {
        fprintf(stderr, "loraps train: error: unknown option '%s'\n", a);
        usage(stderr);
        return 2;
    }
    return GO_ON;
}

static int parse_options(train_run *t, int argc, char **argv) {
    lp_err err;
    /* The job file comes first, whatever its place on the command line; flags override it. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--job")) t->job_file = argv[i + 1];
    if (t->job_file && job_load_file(&t->j, t->job_file, &err) < 0) return fail("--job", &err);
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        int rc = job_parse_flag(&t->j, argc, argv, &i, &err);
        if (rc < 0) return fail("bad option", &err);
        if (rc > 0) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "loraps train: error: unknown option '%s'\n", a);
            return 2;
        }
        if ((rc = take_option(t, a, argv[i + 1])) != GO_ON) return rc;
        i += 2;
    }
    if (job_apply_env(&t->j, &err) < 0) return fail("environment", &err);
    if (job_validate(&t->j, &err) < 0) return fail("job", &err);
    return GO_ON;
}

/* The model (the demo model of --preset without --model) and the job's fresh adapter. */
static int load_model(train_run *t) {
    lp_err err;
    if (!t->model_dir) {
        if (demo_model_ensure(t->preset, t->demo_dir, sizeof t->demo_dir, &err) < 0)
            return fail("demo model", &err);
        t->model_dir = t->demo_dir;
    }
    if (model_load(&t->m, t->model_dir, &err) < 0) return fail("model", &err);
    lora_config lc;
    const lora_module *mods;
    int n_mods = model_lora_modules(t->m, &mods);
    if (job_lora_config(&t->j, &lc, &err) < 0) return fail("adapter", &err);
    int built = lora_adapter_build(&t->a, &lc, mods, n_mods, &err);
    lora_config_free(&lc);
    if (built < 0) return fail("adapter", &err);
    t->have_adapter = 1;
    lora_adapter_init(&t->a, t->j.seed); /* as the parameter server does */
    return GO_ON;
}

static void print_config(const train_run *t) {
    const model *m = t->m;
    printf("loraps train: model %s (%s, %.1f MB of frozen weights, fingerprint %016llx)\n",
           t->model_dir, model_arch(m), model_weight_bytes(m) / 1e6,
           (unsigned long long)model_fingerprint(m));
    printf("loraps train: adapter %d modules, %zu parameters (%.3f%% of the model)\n", t->a.n_sites,
           t->a.n_params, 100.0 * t->a.n_params * sizeof(float) / model_weight_bytes(m));
    printf("loraps train: effective configuration\n");
    job_print(&t->j, stdout, "  ");
    fflush(stdout);
}

/* --data (cut into sequences by the job), or the embedded demo task. */
static int open_data(train_run *t) {
    lp_err err;
    dataset_options o;
    const char *data = t->data;
    if (!data && t->val_file) {
        snprintf(err.msg, sizeof err.msg, "needs --data");
        return fail("--val-file", &err);
    }
    if (!data) {
        data_source_open_demo(&t->src, t->j.seed, model_vocab_size(t->m));
    } else {
        if (job_data_options(&t->j, &o, &err) < 0) return fail("--data", &err);
        o.val_path = t->val_file;
        o.vocab_size = model_vocab_size(t->m); /* ids must fit the model */
        /* text takes the model's tokenizer unless told otherwise; a .bin needs none */
        int is_bin = strlen(data) >= 4 && !strcmp(data + strlen(data) - 4, ".bin");
        const char *tp = t->tok_path ? t->tok_path : is_bin ? NULL : t->model_dir;
        if (data_source_open_file(&t->src, data, tp, &o, &err) < 0) return fail("--data", &err);
    }
    t->have_src = 1;
    printf("loraps train: data %s\n", data_source_name(&t->src));
    fflush(stdout);
    return GO_ON;
}

/* The training, then the adapter in PEFT format (--out). */
static int train_and_save(train_run *t) {
    lp_err err;
    train_record rec = {0, 0, NAN, NAN, 0};
    if (local_train_source(&t->j, t->m, &t->a, &t->src, print_step, &rec, &err) < 0)
        return fail("training", &err);
    if (!t->out) return 0;
    model_card card = model_card_unknown();
    char *settings = job_print_text(&t->j);
    card.data = t->data ? t->data : "the embedded token-level demo task";
    card.step = (uint64_t)rec.steps;
    card.max_steps = (uint64_t)t->j.max_steps;
    card.tokens = rec.tokens;
    card.train_loss = rec.loss;
    card.val_loss = rec.val_loss;
    card.val_step = (uint64_t)rec.val_step;
    card.job_settings = settings;
    int saved =
        peft_save_card(t->out, &t->a, t->model_dir, model_fan_in_fan_out(t->m), &card, &err);
    free(settings);
    if (saved < 0) return fail("--out", &err);
    printf("loraps train: adapter written to %s (PEFT format, with a model card)\n", t->out);
    return 0;
}

int cmd_train(int argc, char **argv) {
    train_run *t = calloc(1, sizeof *t);
    if (!t) return fprintf(stderr, "loraps train: error: out of memory\n"), 1;
    t->preset = "small";
    job_defaults(&t->j);
    int rc = parse_options(t, argc, argv);
    if (rc == GO_ON) rc = load_model(t);
    if (rc == GO_ON) {
        print_config(t);
        rc = open_data(t);
    }
    if (rc == GO_ON) rc = train_and_save(t);
    if (t->have_src) data_source_close(&t->src);
    if (t->have_adapter) lora_adapter_free(&t->a);
    model_free(t->m);
    free(t);
    return rc;
}
