/* loraps generate: text from a model, with or without an adapter, through the KV cache. */
#include "checkpoint.h"
#include "commands.h"
#include "model_load.h"
#include "model.h"
#include "peft.h"
#include "sampler.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps generate --model DIR [--adapter DIR] --prompt TEXT [--max-new N]\n"
            "                       [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
            "                       [--tokenizer FILE]\n\n"
            "Continues the prompt with the model (and the PEFT adapter, unmerged), streaming the\n"
            "text as it comes. Temperature 0 is greedy. Stops at the end-of-text token or after\n"
            "--max-new tokens (default 64). Defaults: temperature 0.8, top-k 0 (off), top-p 1.\n");
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "loraps generate: error: %s: %s\n", what, why);
    return 1;
}

static int parse_number(const char *flag, const char *text, double lo, double hi, double *out) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= lo && v <= hi)) { /* NaN fails both comparisons */
        fprintf(stderr, "loraps generate: error: %s: expected a number in [%g, %g], got '%s'\n",
                flag, lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

/* How much of the decoded text can be printed for good: a token may end inside a character,
 * which the decoder shows as U+FFFD (EF BF BD) until the next token completes it, so a
 * trailing replacement character is held back, as HF's TextStreamer does. */
static size_t ready_to_print(const char *s, size_t len) {
    while (len >= 3 && !memcmp(s + len - 3, "\xEF\xBF\xBD", 3)) len -= 3;
    return len;
}

int cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL, *adapter_dir = NULL, *prompt = NULL, *tok_path = NULL;
    double max_new = 64, temperature = 0.8, top_k = 0, top_p = 1, seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loraps generate: error: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--model"))
            model_dir = v;
        else if (!strcmp(a, "--adapter"))
            adapter_dir = v;
        else if (!strcmp(a, "--prompt"))
            prompt = v;
        else if (!strcmp(a, "--tokenizer"))
            tok_path = v;
        else if (!strcmp(a, "--max-new"))
            rc = parse_number(a, v, 1, 1e6, &max_new);
        else if (!strcmp(a, "--temperature"))
            rc = parse_number(a, v, 0, 100, &temperature);
        else if (!strcmp(a, "--top-k"))
            rc = parse_number(a, v, 0, 1e9, &top_k);
        else if (!strcmp(a, "--top-p"))
            rc = parse_number(a, v, 1e-6, 1, &top_p);
        else if (!strcmp(a, "--seed"))
            rc = parse_number(a, v, 0, 1e18, &seed);
        else {
            fprintf(stderr, "loraps generate: error: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (rc) return 2;
    }
    if (!model_dir || !prompt) {
        fprintf(stderr, "loraps generate: error: --model and --prompt are required\n");
        return 2;
    }
    lp_err err;
    char path[4096];
    if (!tok_path) {
        snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
        tok_path = path;
    }
    tokenizer *tok;
    if (tokenizer_load(&tok, tok_path, &err) < 0) return fail("tokenizer", err.msg);
    model *m;
    if (model_load(&m, model_dir, &err) < 0) {
        tokenizer_free(tok);
        return fail("model", err.msg);
    }
    lora_adapter a, *adapter = NULL;
    const lora_module *mods;
    int n_mods = model_lora_modules(m, &mods), rc = 0;
    int *ids = NULL, *out_ids = NULL;
    size_t n_ids = 0;
    model_session *s = NULL;
    sampler smp = {0};
    if (adapter_dir) {
        ckpt_verified how;
        if (ckpt_load_adapter(adapter_dir, mods, n_mods, &a, &how, &err) < 0) {
            rc = fail("adapter", err.msg);
            goto done;
        }
        if (how == CKPT_LEGACY_VERIFIED)
            fprintf(stderr, "loraps generate: note: %s was %s\n", adapter_dir, CKPT_LEGACY_NOTE);
        adapter = &a;
    }
    if (tokenizer_encode(tok, prompt, strlen(prompt), 0, 1, &ids, &n_ids, &err) < 0) {
        rc = fail("prompt", err.msg);
        goto done;
    }
    if (n_ids == 0) {
        /* an empty prompt starts from the end-of-text token, as GPT-2 does */
        int eos = tokenizer_eos_id(tok);
        if (eos < 0) {
            rc = fail("prompt", "empty, and the tokenizer has no end-of-text token to start from");
            goto done;
        }
        ids = realloc(ids, sizeof(int));
        ids[0] = eos;
        n_ids = 1;
    }
    int max_len = model_max_seq_len(m);
    if ((int)n_ids >= max_len) {
        snprintf(path, sizeof path, "%zu tokens leave no room to generate: the model takes %d",
                 n_ids, max_len);
        rc = fail("prompt", path);
        goto done;
    }
    int budget = (int)n_ids + (int)max_new <= max_len ? (int)max_new : max_len - (int)n_ids;
    int V = model_vocab_size(m);
    float *logits = malloc(sizeof(float) * V);
    out_ids = malloc(sizeof(int) * (size_t)budget);
    if (model_session_new(&s, m, adapter, (int)n_ids + budget, &err) < 0 ||
        model_session_feed(s, ids, (int)n_ids, logits, &err) < 0) {
        free(logits);
        rc = fail("model", err.msg);
        goto done;
    }
    sampler_init(&smp, V, (float)temperature, (int)top_k, (float)top_p, (uint64_t)seed);
    fputs(prompt, stdout);
    size_t printed = 0;
    int eos = tokenizer_eos_id(tok), n_out = 0;
    for (int i = 0; i < budget; i++) {
        int next = sampler_next(&smp, logits);
        if (next == eos) break;
        out_ids[n_out++] = next;
        char *text = tokenizer_decode(tok, out_ids, (size_t)n_out, 1);
        size_t ready = ready_to_print(text, strlen(text));
        if (ready > printed) fwrite(text + printed, 1, ready - printed, stdout), printed = ready;
        fflush(stdout);
        free(text);
        if (i + 1 < budget && model_session_feed(s, &next, 1, logits, &err) < 0) {
            rc = fail("model", err.msg);
            break;
        }
    }
    /* whatever was held back, now that no token will complete it */
    char *text = tokenizer_decode(tok, out_ids, (size_t)n_out, 1);
    size_t len = strlen(text);
    if (len > printed) fwrite(text + printed, 1, len - printed, stdout);
    free(text);
    fputc('\n', stdout);
    free(logits);
done:
    sampler_free(&smp);
    model_session_free(s);
    free(ids);
    free(out_ids);
    if (adapter) lora_adapter_free(adapter);
    model_free(m);
    tokenizer_free(tok);
    return rc;
}
