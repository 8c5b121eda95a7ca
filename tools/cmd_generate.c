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

/* A step's result: GO_ON, or the exit status the command ends with. */
enum { GO_ON = -1 };

typedef struct generate_opts {
    const char *model_dir, *adapter_dir, *prompt, *tok_path;
    double max_new, temperature, top_k, top_p, seed;
    char tok_default[4096]; /* MODEL/tokenizer.json */
} generate_opts;

/* What a generation holds, freed in one place. */
typedef struct generation {
    tokenizer *tok;
    model *m;
    lora_adapter a, *adapter; /* adapter: &a when --adapter is given */
    int *ids, *out_ids;
    size_t n_ids;
    int budget, n_out;
    float *logits;
    model_session *s;
    sampler smp;
} generation;

/* One option with its value: GO_ON, or 2 after the error. */
static int take_option(generate_opts *o, const char *a, const char *v) {
    int rc = 0;
    if (!strcmp(a, "--model"))
        o->model_dir = v;
    else if (!strcmp(a, "--adapter"))
        o->adapter_dir = v;
    else if (!strcmp(a, "--prompt"))
        o->prompt = v;
    else if (!strcmp(a, "--tokenizer"))
        o->tok_path = v;
    else if (!strcmp(a, "--max-new"))
        rc = parse_number(a, v, 1, 1e6, &o->max_new);
    else if (!strcmp(a, "--temperature"))
        rc = parse_number(a, v, 0, 100, &o->temperature);
    else if (!strcmp(a, "--top-k"))
        rc = parse_number(a, v, 0, 1e9, &o->top_k);
    else if (!strcmp(a, "--top-p"))
        rc = parse_number(a, v, 1e-6, 1, &o->top_p);
    else if (!strcmp(a, "--seed"))
        rc = parse_number(a, v, 0, 1e18, &o->seed);
    else {
        fprintf(stderr, "loraps generate: error: unknown option '%s'\n", a);
        usage(stderr);
        return 2;
    }
    return rc ? 2 : GO_ON;
}

static int parse_options(generate_opts *o, int argc, char **argv) {
    *o = (generate_opts){.max_new = 64, .temperature = 0.8, .top_k = 0, .top_p = 1, .seed = 1};
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
        int rc = take_option(o, a, argv[++i]);
        if (rc != GO_ON) return rc;
    }
    if (!o->model_dir || !o->prompt) {
        fprintf(stderr, "loraps generate: error: --model and --prompt are required\n");
        return 2;
    }
    if (!o->tok_path) {
        snprintf(o->tok_default, sizeof o->tok_default, "%s/tokenizer.json", o->model_dir);
        o->tok_path = o->tok_default;
    }
    return GO_ON;
}

/* The tokenizer, the model and the adapter. */
static int load(generation *g, const generate_opts *o) {
    lp_err err;
    if (tokenizer_load(&g->tok, o->tok_path, &err) < 0) return fail("tokenizer", err.msg);
    if (model_load(&g->m, o->model_dir, &err) < 0) return fail("model", err.msg);
    if (!o->adapter_dir) return GO_ON;
    const lora_module *mods;
    int n_mods = model_lora_modules(g->m, &mods);
    ckpt_verified how;
    if (ckpt_load_adapter(o->adapter_dir, mods, n_mods, &g->a, &how, &err) < 0)
        return fail("adapter", err.msg);
    g->adapter = &g->a;
    if (how == CKPT_LEGACY_VERIFIED)
        fprintf(stderr, "loraps generate: note: %s was %s\n", o->adapter_dir, CKPT_LEGACY_NOTE);
    return GO_ON;
}

/* The prompt's ids, and how many tokens fit after them. */
static int encode_prompt(generation *g, const generate_opts *o) {
    lp_err err;
    if (tokenizer_encode(g->tok, o->prompt, strlen(o->prompt), 0, 1, &g->ids, &g->n_ids, &err) < 0)
        return fail("prompt", err.msg);
    if (g->n_ids == 0) {
        /* an empty prompt starts from the end-of-text token, as GPT-2 does */
        int eos = tokenizer_eos_id(g->tok);
        if (eos < 0)
            return fail("prompt",
                        "empty, and the tokenizer has no end-of-text token to start from");
        int *one = realloc(g->ids, sizeof(int));
        if (!one) return fail("prompt", "out of memory");
        g->ids = one;
        g->ids[0] = eos;
        g->n_ids = 1;
    }
    int max_len = model_max_seq_len(g->m), n = (int)g->n_ids;
    if (n >= max_len) {
        char why[128];
        snprintf(why, sizeof why, "%zu tokens leave no room to generate: the model takes %d",
                 g->n_ids, max_len);
        return fail("prompt", why);
    }
    g->budget = n + (int)o->max_new <= max_len ? (int)o->max_new : max_len - n;
    return GO_ON;
}

/* The KV cache, fed the prompt: logits for the first new token. */
static int start_session(generation *g, const generate_opts *o) {
    lp_err err;
    int V = model_vocab_size(g->m);
    g->logits = malloc(sizeof(float) * V);
    g->out_ids = malloc(sizeof(int) * (size_t)g->budget);
    if (!g->logits || !g->out_ids) return fail("model", "out of memory");
    if (model_session_new(&g->s, g->m, g->adapter, (int)g->n_ids + g->budget, &err) < 0 ||
        model_session_feed(g->s, g->ids, (int)g->n_ids, g->logits, &err) < 0)
        return fail("model", err.msg);
    sampler_init(&g->smp, V, (float)o->temperature, (int)o->top_k, (float)o->top_p,
                 (uint64_t)o->seed);
    return GO_ON;
}

/* Prints the text of the tokens so far beyond what *printed covers; all of it if final. */
static void print_new_text(const generation *g, size_t *printed, int final) {
    char *text = tokenizer_decode(g->tok, g->out_ids, (size_t)g->n_out, 1);
    size_t len = strlen(text);
    size_t ready = final ? len : ready_to_print(text, len);
    if (ready > *printed) fwrite(text + *printed, 1, ready - *printed, stdout), *printed = ready;
    fflush(stdout);
    free(text);
}

/* Samples token after token, streaming the text, until end-of-text or the budget. */
static int stream(generation *g, const generate_opts *o) {
    lp_err err;
    int rc = 0, eos = tokenizer_eos_id(g->tok);
    size_t printed = 0;
    fputs(o->prompt, stdout);
    for (int i = 0; i < g->budget; i++) {
        int next = sampler_next(&g->smp, g->logits);
        if (next == eos) break;
        g->out_ids[g->n_out++] = next;
        print_new_text(g, &printed, 0);
        if (i + 1 < g->budget && model_session_feed(g->s, &next, 1, g->logits, &err) < 0) {
            rc = fail("model", err.msg);
            break;
        }
    }
    /* whatever was held back, now that no token will complete it */
    print_new_text(g, &printed, 1);
    fputc('\n', stdout);
    return rc;
}

static void generation_free(generation *g) {
    sampler_free(&g->smp);
    model_session_free(g->s);
    free(g->logits);
    free(g->ids);
    free(g->out_ids);
    if (g->adapter) lora_adapter_free(g->adapter);
    model_free(g->m);
    tokenizer_free(g->tok);
}

int cmd_generate(int argc, char **argv) {
    generate_opts o;
    generation g = {0};
    int rc = parse_options(&o, argc, argv);
    if (rc == GO_ON) rc = load(&g, &o);
    if (rc == GO_ON) rc = encode_prompt(&g, &o);
    if (rc == GO_ON) rc = start_session(&g, &o);
    if (rc == GO_ON) rc = stream(&g, &o);
    generation_free(&g);
    return rc;
}
