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

int cmd_eval(int argc, char **argv) {
    const char *model_dir = NULL, *adapter_dir = NULL, *data = NULL;
    int B = 4, threads = 0, seq_len = 0;
    dataset_options opts;
    dataset_options_default(&opts);
    lp_err err;
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
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--adapter"))
            adapter_dir = v;
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--batch") || !strcmp(a, "--threads") || !strcmp(a, "--seq-len")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < (a[2] == 't' ? 0 : 1) || n > 1 << 20) {
                fprintf(stderr, "loraps eval: error: %s: not a valid count: '%s'\n", a, v);
                return 2;
            }
            *(a[2] == 'b' ? &B : a[2] == 't' ? &threads : &seq_len) = (int)n;
        } else {
            /* the data options: --layout pad is dataset option layout=pad */
            char key[64];
            snprintf(key, sizeof key, "%s", a + 2);
            for (char *c = key; *c; c++)
                if (*c == '-') *c = '_';
            if (dataset_options_set(&opts, key, v, &err) < 0) {
                fprintf(stderr, "loraps eval: error: %s\n", err.msg);
                usage(stderr);
                return 2;
            }
        }
    }
    if (!model_dir || !data) {
        fprintf(stderr, "loraps eval: error: --model and --data are required\n");
        return 2;
    }
    ops_set_threads(threads);
    model *m;
    if (model_load(&m, model_dir, &err) < 0) return fail("model", err.msg);
    int T = seq_len ? seq_len : model_max_seq_len(m) < 256 ? model_max_seq_len(m) : 256;
    opts.seq_len = T;
    if (opts.val_fraction > 0 || opts.val_path) {
        model_free(m);
        fprintf(stderr, "loraps eval: error: a validation split makes no sense here: eval reads "
                        "the whole file\n");
        return 2;
    }
    opts.vocab_size = model_vocab_size(m);
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods), rc = 0;
    lora_adapter a;
    data_source src = {0};
    model_trainer *t = NULL;
    int *in = NULL, *tg = NULL;
    /* without an adapter: one that changes nothing, so the model is the base model exactly */
    ckpt_verified how = CKPT_NOTHING_RECORDED;
    int have_adapter = adapter_dir
                           ? ckpt_load_adapter(adapter_dir, mods, n_mods, &a, &how, &err) == 0
                           : lora_adapter_build_identity(&a, mods, n_mods, &err) == 0;
    if (!have_adapter) {
        rc = fail(adapter_dir ? "adapter" : "model", err.msg);
        goto done;
    }
    if (how == CKPT_LEGACY_VERIFIED)
        fprintf(stderr, "loraps eval: note: %s was %s\n", adapter_dir, CKPT_LEGACY_NOTE);
    /* pre-tokenized .bin data needs no tokenizer (the model folder may have none) */
    size_t dlen = strlen(data);
    const char *tok_from = dlen > 4 && !strcmp(data + dlen - 4, ".bin") ? NULL : model_dir;
    if (data_source_open_file(&src, data, tok_from, &opts, &err) < 0) {
        rc = fail("data", err.msg);
        goto done;
    }
    if (model_trainer_new(&t, m, &a, B, T, &err) < 0) {
        rc = fail("model", err.msg);
        goto done;
    }
    uint64_t n_seq = dataset_n_sequences(src.ds, DS_TRAIN);
    in = malloc(sizeof(int) * B * T);
    tg = malloc(sizeof(int) * B * T);
    double loss = 0;
    long tokens = 0;
    for (uint64_t first = 0; first < n_seq && rc == 0; first += (uint64_t)B) {
        int n = n_seq - first < (uint64_t)B ? (int)(n_seq - first) : B;
        /* epoch 0's order covers every sequence once; a short last batch is padded, uncounted */
        if (data_source_batch(&src, DS_TRAIN, first, n, T, in, tg, &err) < 0) {
            rc = fail("data", err.msg);
            break;
        }
        for (int i = n * T; i < B * T; i++) in[i] = 0, tg[i] = -1;
        model_step s;
        if (model_trainer_step(t, in, tg, 0.0f, 0, 0, &s, &err) < 0) {
            rc = fail("model", err.msg);
            break;
        }
        loss += s.loss_sum;
        tokens += s.n_tokens;
    }
    if (rc == 0) {
        if (tokens == 0) {
            rc = fail("data", "no token to evaluate (empty, or every target masked)");
        } else {
            printf("%s\n", dataset_summary(src.ds));
            printf("eval: %llu sequences of %d tokens, %ld counted tokens\n",
                   (unsigned long long)n_seq, T, tokens);
            printf("loss %.4f  perplexity %.3f\n", loss / tokens, exp(loss / tokens));
        }
    }
done:
    free(in);
    free(tg);
    model_trainer_free(t);
    if (src.ds || src.tok) data_source_close(&src);
    if (have_adapter) lora_adapter_free(&a);
    model_free(m);
    return rc;
}
