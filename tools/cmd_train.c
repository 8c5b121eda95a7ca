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

int cmd_train(int argc, char **argv) {
    const char *model_dir = NULL, *preset = "small", *out = NULL, *job_file = NULL;
    const char *data = NULL, *val_file = NULL, *tok_path = NULL;
    job j;
    job_defaults(&j);
    lp_err err;
    /* The job file comes first, whatever its place on the command line; flags override it. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--job")) job_file = argv[i + 1];
    if (job_file && job_load_file(&j, job_file, &err) < 0) return fail("--job", &err);
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        int rc = job_parse_flag(&j, argc, argv, &i, &err);
        if (rc < 0) return fail("bad option", &err);
        if (rc > 0) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "loraps train: error: unknown option '%s'\n", a);
            return 2;
        }
        if (!strcmp(a, "--model"))
            model_dir = argv[i + 1];
        else if (!strcmp(a, "--preset"))
            preset = argv[i + 1];
        else if (!strcmp(a, "--out"))
            out = argv[i + 1];
        else if (!strcmp(a, "--data"))
            data = argv[i + 1];
        else if (!strcmp(a, "--val-file"))
            val_file = argv[i + 1];
        else if (!strcmp(a, "--tokenizer"))
            tok_path = argv[i + 1];
        else if (strcmp(a, "--job")) {
            fprintf(stderr, "loraps train: error: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i += 2;
    }
    if (job_apply_env(&j, &err) < 0) return fail("environment", &err);
    if (job_validate(&j, &err) < 0) return fail("job", &err);

    char demo_dir[4096];
    if (!model_dir) {
        if (demo_model_ensure(preset, demo_dir, sizeof demo_dir, &err) < 0)
            return fail("demo model", &err);
        model_dir = demo_dir;
    }
    model *m;
    if (model_load(&m, model_dir, &err) < 0) return fail("model", &err);
    lora_config lc;
    lora_adapter a;
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods);
    if (job_lora_config(&j, &lc, &err) < 0) {
        model_free(m);
        return fail("adapter", &err);
    }
    int built = lora_adapter_build(&a, &lc, mods, n_mods, &err);
    lora_config_free(&lc);
    if (built < 0) {
        model_free(m);
        return fail("adapter", &err);
    }
    lora_adapter_init(&a, j.seed); /* as the parameter server does */
    int rc = 0;

    printf("loraps train: model %s (%s, %.1f MB of frozen weights, fingerprint %016llx)\n",
           model_dir, model_arch(m), model_weight_bytes(m) / 1e6,
           (unsigned long long)model_fingerprint(m));
    printf("loraps train: adapter %d modules, %zu parameters (%.3f%% of the model)\n", a.n_sites,
           a.n_params, 100.0 * a.n_params * sizeof(float) / model_weight_bytes(m));
    printf("loraps train: effective configuration\n");
    job_print(&j, stdout, "  ");
    fflush(stdout);

    data_source src;
    dataset_options o;
    int is_bin = data && strlen(data) >= 4 && !strcmp(data + strlen(data) - 4, ".bin");
    if (!data && val_file) {
        snprintf(err.msg, sizeof err.msg, "needs --data");
        rc = -1;
    } else if (!data) {
        data_source_open_demo(&src, j.seed, model_vocab_size(m));
    } else if (job_data_options(&j, &o, &err) < 0) {
        rc = -1;
    } else {
        o.val_path = val_file;
        o.vocab_size = model_vocab_size(m); /* ids must fit the model */
        /* text takes the model's tokenizer unless told otherwise; a .bin needs none */
        const char *tp = tok_path ? tok_path : is_bin ? NULL : model_dir;
        rc = data_source_open_file(&src, data, tp, &o, &err);
    }
    if (rc < 0) {
        lora_adapter_free(&a);
        model_free(m);
        return fail(val_file && !data ? "--val-file" : "--data", &err);
    }
    printf("loraps train: data %s\n", data_source_name(&src));
    fflush(stdout);
    train_record rec = {0, 0, NAN, NAN, 0};
    rc = local_train_source(&j, m, &a, &src, print_step, &rec, &err);
    data_source_close(&src);
    if (rc < 0) fail("training", &err);
    if (rc == 0 && out) {
        model_card card = model_card_unknown();
        char *settings = job_print_text(&j);
        card.data = data ? data : "the embedded token-level demo task";
        card.step = (uint64_t)rec.steps;
        card.max_steps = (uint64_t)j.max_steps;
        card.tokens = rec.tokens;
        card.train_loss = rec.loss;
        card.val_loss = rec.val_loss;
        card.val_step = (uint64_t)rec.val_step;
        card.job_settings = settings;
        if (peft_save_card(out, &a, model_dir, model_fan_in_fan_out(m), &card, &err) < 0)
            rc = fail("--out", &err);
        else
            printf("loraps train: adapter written to %s (PEFT format, with a model card)\n", out);
        free(settings);
    }
    lora_adapter_free(&a);
    model_free(m);
    return rc ? 1 : 0;
}
