/* loraps eval: the loss and perplexity of a model (with or without an adapter) on a data file. */
#include "checkpoint.h"
#include "commands.h"
#include "model_load.h"
#include "dataset.h"
#include "model.h"
#include "ops.h"
#include "peft.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: loraps eval --model DIR [--adapter DIR] --data FILE [--seq-len T] [--batch B]\n"
        "                   [--layout pack|pad] [--txt-docs blank|line] [--bad-data fail|skip]\n"
        "                   [--long-docs split|truncate|reject] [--threads N]\n\n"
        "Mean cross-entropy over every counted token of the file (.txt, .jsonl, .bin; prompt\n"
        "tokens of {\"prompt\",\"completion\"} lines are not counted) and its perplexity.\n"
        "Defaults: --seq-len min(256, the model's maximum), --batch 4.\n");
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps eval: error: %s: %s\n", what, why);
    return 1;
}

/* A step's result: GO_ON, or the exit status the command ends with. */
enum { GO_ON = -1 };

typedef struct eval_opts {
    const char *model_dir, *adapter_dir, *data;
    int B, threads, seq_len;
    dataset_options data_opts;
} eval_opts;

/* What an evaluation holds, freed in one place. */
typedef struct evaluation {
    model *m;
    lora_adapter a;
    int have_adapter;
    data_source src;
    model_trainer *t;
    int T, *in, *tg;
} evaluation;

/* --batch, --threads or --seq-len with its value. */
static int take_count(eval_opts *o, const char *a, const char *v) {
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < (a[2] == 't' ? 0 : 1) || n > 1 << 20) {
        fprintf(stderr, "loraps eval: error: %s: not a valid count: '%s'\n", a, v);
        return 2;
    }
    *(a[2] == 'b' ? &o->B : a[2] == 't' ? &o->threads : &o->seq_len) = (int)n;
    return GO_ON;
}

/* The data options: --layout pad is dataset option layout=pad. */
static int take_data_option(eval_opts *o, const char *a, const char *v) {
    char key[64];
    lp_err err;
    snprintf(key, sizeof key, "%s", a + 2);
    for (char *c = key; *c; c++)
        if (*c == '-') *c = '_';
    if (dataset_options_set(&o->data_opts, key, v, &err) < 0) {
        fprintf(stderr, "loraps eval: error: %s\n", err.msg);
        usage(stderr);
        return 2;
    }
    return GO_ON;
}

static int take_option(eval_opts *o, const char *a, const char *v) {
    if (!strcmp(a, "--model"))
        o->model_dir = v;
    else if (!strcmp(a, "--adapter"))
        o->adapter_dir = v;
    else if (!strcmp(a, "--data"))
        o->data = v;
    else if (!strcmp(a, "--batch") || !strcmp(a, "--threads") || !strcmp(a, "--seq-len"))
        return take_count(o, a, v);
    else
        return take_data_option(o, a, v);
    return GO_ON;
}

static int parse_options(eval_opts *o, int argc, char **argv) {
    *o = (eval_opts){.B = 4};
    dataset_options_default(&o->data_opts);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc || strncmp(a, "--", 2)) {
            fprintf(stderr, "loraps eval: error: %s: %s\n", a,
                    strncmp(a, "--", 2) ? "not an option" : "needs a value");
            return 2;
        }
        int rc = take_option(o, a, argv[++i]);
        if (rc != GO_ON) return rc;
    }
    if (!o->model_dir || !o->data) {
        fprintf(stderr, "loraps eval: error: --model and --data are required\n");
        return 2;
    }
    return GO_ON;
}

/* The model, and the sequence length: --seq-len, else min(256, the model's maximum). */
static int load_model(evaluation *e, eval_opts *o) {
    lp_err err;
    ops_set_threads(o->threads);
    if (model_load(&e->m, o->model_dir, &err) < 0) return fail("model", err.msg);
    int max = model_max_seq_len(e->m);
    e->T = o->seq_len ? o->seq_len : max < 256 ? max : 256;
    o->data_opts.seq_len = e->T;
    if (o->data_opts.val_fraction > 0 || o->data_opts.val_path) {
        fprintf(stderr, "loraps eval: error: a validation split makes no sense here: eval reads "
                        "the whole file\n");
        return 2;
    }
    o->data_opts.vocab_size = model_vocab_size(e->m);
    return GO_ON;
}

/* The adapter, the data and a trainer over them. */
static int open_inputs(evaluation *e, const eval_opts *o) {
    lp_err err;
    const lora_module *mods;
    int n_mods = model_lora_modules(e->m, &mods);
    /* without an adapter: one that changes nothing, so the model is the base model exactly */
    ckpt_verified how = CKPT_NOTHING_RECORDED;
    e->have_adapter = o->adapter_dir
                          ? ckpt_load_adapter(o->adapter_dir, mods, n_mods, &e->a, &how, &err) == 0
                          : lora_adapter_build_identity(&e->a, mods, n_mods, &err) == 0;
    if (!e->have_adapter) return fail(o->adapter_dir ? "adapter" : "model", err.msg);
    if (how == CKPT_LEGACY_VERIFIED)
        fprintf(stderr, "loraps eval: note: %s was %s\n", o->adapter_dir, CKPT_LEGACY_NOTE);
    /* pre-tokenized .bin data needs no tokenizer (the model folder may have none) */
    size_t dlen = strlen(o->data);
    const char *tok_from = dlen > 4 && !strcmp(o->data + dlen - 4, ".bin") ? NULL : o->model_dir;
    if (data_source_open_file(&e->src, o->data, tok_from, &o->data_opts, &err) < 0)
        return fail("data", err.msg);
    if (model_trainer_new(&e->t, e->m, &e->a, o->B, e->T, &err) < 0) return fail("model", err.msg);
    e->in = malloc(sizeof(int) * o->B * e->T);
    e->tg = malloc(sizeof(int) * o->B * e->T);
    if (!e->in || !e->tg) return fail("model", "out of memory");
    return GO_ON;
}

/* Every sequence of the file once (epoch 0's order), B at a time; the loss and perplexity. */
static int evaluate(evaluation *e, const eval_opts *o) {
    lp_err err;
    int B = o->B, T = e->T;
    uint64_t n_seq = dataset_n_sequences(e->src.ds, DS_TRAIN);
    double loss = 0;
    long tokens = 0;
    for (uint64_t first = 0; first < n_seq; first += (uint64_t)B) {
        int n = n_seq - first < (uint64_t)B ? (int)(n_seq - first) : B;
        if (data_source_batch(&e->src, DS_TRAIN, first, n, T, e->in, e->tg, &err) < 0)
            return fail("data", err.msg);
        /* a short last batch is padded, uncounted */
        for (int i = n * T; i < B * T; i++) e->in[i] = 0, e->tg[i] = -1;
        model_step s;
        if (model_trainer_step(e->t, e->in, e->tg, 0.0f, 0, 0, &s, &err) < 0)
            return fail("model", err.msg);
        loss += s.loss_sum;
        tokens += s.n_tokens;
    }
    if (tokens == 0) return fail("data", "no token to evaluate (empty, or every target masked)");
    printf("%s\n", dataset_summary(e->src.ds));
    printf("eval: %llu sequences of %d tokens, %ld counted tokens\n", (unsigned long long)n_seq, T,
           tokens);
    printf("loss %.4f  perplexity %.3f\n", loss / tokens, exp(loss / tokens));
    return 0;
}

static void evaluation_free(evaluation *e) {
    free(e->in);
    free(e->tg);
    model_trainer_free(e->t);
    if (e->src.ds || e->src.tok) data_source_close(&e->src);
    if (e->have_adapter) lora_adapter_free(&e->a);
    model_free(e->m);
}

int cmd_eval(int argc, char **argv) {
    eval_opts o;
    evaluation e = {0};
    int rc = parse_options(&o, argc, argv);
    if (rc == GO_ON) rc = load_model(&e, &o);
    if (rc == GO_ON) rc = open_inputs(&e, &o);
    if (rc == GO_ON) rc = evaluate(&e, &o);
    evaluation_free(&e);
    return rc;
}
