/* loraps tokenize: text on stdin -> a JSON array of token ids, and back with --decode; the same
 * ids and text as the `tokenizers` library gives for the same tokenizer.json. */
#include "commands.h"
#include "dataset.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps tokenize (--model DIR | --tokenizer FILE) [--decode] [--special]\n"
            "                       [--add-special] [--skip-special]\n"
            "       loraps tokenize (--model DIR | --tokenizer FILE) --data FILE --out FILE.bin\n"
            "                       [--txt-docs blank|line] [--bad-data fail|skip] [--special]\n\n"
            "Encodes all of stdin (every byte, a final newline too) to a JSON array of ids on\n"
            "stdout; with --decode, reads a JSON array of ids and writes the text.\n"
            "  --special       recognise special tokens written in the text (default: they are\n"
            "                  encoded as plain text)\n"
            "  --add-special   apply the tokenizer's post-processor (e.g. a BOS token)\n"
            "  --skip-special  when decoding, leave special tokens out\n"
            "  --data, --out   pre-tokenize a .txt or .jsonl {\"text\"} dataset into a .bin (each\n"
            "                  document followed by EOS), for training without re-tokenizing\n");
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (n < cap) break;
        char *p = realloc(buf, cap *= 2);
        if (!p) free(buf);
        buf = p;
    }
    *len = n;
    return buf;
}

/* A step's result: GO_ON, or the exit status the command ends with. */
enum { GO_ON = -1 };

typedef struct tokenize_opts {
    const char *path, *data, *out;
    dataset_options dopt;
    int decode, special, add_special, skip_special;
} tokenize_opts;

static int *switch_of(tokenize_opts *o, const char *a) {
    if (!strcmp(a, "--decode")) return &o->decode;
    if (!strcmp(a, "--special")) return &o->special;
    if (!strcmp(a, "--add-special")) return &o->add_special;
    if (!strcmp(a, "--skip-special")) return &o->skip_special;
    return NULL;
}

/* An option that takes a value (a known one), with its value v. */
static int take_value(tokenize_opts *o, const char *a, const char *v) {
    lp_err e;
    if (!strcmp(a, "--data"))
        o->data = v;
    else if (!strcmp(a, "--out"))
        o->out = v;
    else if (!strcmp(a, "--txt-docs") || !strcmp(a, "--bad-data")) {
        if (dataset_options_set(&o->dopt, a[2] == 't' ? "txt_docs" : "bad_data", v, &e) < 0) {
            fprintf(stderr, "loraps tokenize: error: %s: %s\n", a, e.msg);
            return 2;
        }
    } else
        o->path = v;
    return GO_ON;
}

static int parse_options(tokenize_opts *o, int argc, char **argv) {
    static const char *const VALUED[] = {"--model", "--tokenizer", "--data",
                                         "--out",   "--txt-docs",  "--bad-data"};
    *o = (tokenize_opts){0};
    dataset_options_default(&o->dopt);
    o->dopt.seq_len = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int *sw = switch_of(o, a), valued = 0;
        for (size_t k = 0; k < sizeof VALUED / sizeof VALUED[0]; k++)
            valued |= !strcmp(a, VALUED[k]);
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (sw) {
            *sw = 1;
        } else if (valued) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loraps tokenize: error: %s needs a value\n", a);
                return 2;
            }
            int rc = take_value(o, a, argv[++i]);
            if (rc != GO_ON) return rc;
        } else {
            fprintf(stderr, "loraps tokenize: error: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o->path) {
        fprintf(stderr, "loraps tokenize: error: --model or --tokenizer is required\n");
        usage(stderr);
        return 2;
    }
    return GO_ON;
}

/* --data FILE --out FILE.bin: the whole dataset pre-tokenized. */
static int export_bin(tokenizer *t, tokenize_opts *o) {
    lp_err err;
    dataset *d = NULL;
    int rc = 0;
    o->dopt.allow_special = o->special;
    if (dataset_open(&d, o->data, t, &o->dopt, &err) < 0 ||
        dataset_export_bin(d, DS_TRAIN, o->out, &err) < 0) {
        fprintf(stderr, "loraps tokenize: error: %s\n", err.msg);
        rc = 1;
    } else {
        fprintf(stderr, "loraps tokenize: %s -> %s\n", dataset_summary(d), o->out);
    }
    dataset_free(d);
    return rc;
}

/* The ids of a JSON array, each checked against the vocabulary; NULL after an error. */
static int *read_ids(const tokenizer *t, const char *in, size_t len, size_t *n) {
    json_error_t je;
    json_t *arr = json_loadb(in, len, 0, &je);
    if (!json_is_array(arr)) {
        fprintf(stderr, "loraps tokenize: error: stdin: expected a JSON array of ids (%s)\n",
                arr ? "not an array" : je.text);
        json_decref(arr);
        return NULL;
    }
    *n = json_array_size(arr);
    int *ids = malloc((*n ? *n : 1) * sizeof *ids);
    if (!ids) fprintf(stderr, "loraps tokenize: error: out of memory\n");
    for (size_t i = 0; ids && i < *n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= tokenizer_vocab_size(t)) {
            fprintf(stderr,
                    "loraps tokenize: error: stdin[%zu]: not a token id of this "
                    "tokenizer (0..%d)\n",
                    i, tokenizer_vocab_size(t) - 1);
            free(ids);
            ids = NULL;
        } else {
            ids[i] = (int)json_integer_value(v);
        }
    }
    json_decref(arr);
    return ids;
}

static int decode(const tokenizer *t, const tokenize_opts *o, const char *in, size_t len) {
    size_t n;
    int *ids = read_ids(t, in, len, &n);
    if (!ids) return 1;
    char *text = tokenizer_decode(t, ids, n, o->skip_special);
    free(ids);
    if (!text) {
        fprintf(stderr, "loraps tokenize: error: out of memory\n");
        return 1;
    }
    fwrite(text, 1, strlen(text), stdout);
    free(text);
    return 0;
}

static int encode(const tokenizer *t, const tokenize_opts *o, const char *in, size_t len) {
    int *ids;
    size_t n;
    lp_err err;
    if (tokenizer_encode(t, in, len, o->special, o->add_special, &ids, &n, &err) < 0) {
        fprintf(stderr, "loraps tokenize: error: stdin: %s\n", err.msg);
        return 1;
    }
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    printf("]\n");
    free(ids);
    return 0;
}

/* stdin to ids, or with --decode ids to text. */
static int translate_stdin(const tokenizer *t, const tokenize_opts *o) {
    size_t len;
    char *in = read_stdin(&len);
    if (!in) {
        fprintf(stderr, "loraps tokenize: error: out of memory reading stdin\n");
        return 1;
    }
    int rc = o->decode ? decode(t, o, in, len) : encode(t, o, in, len);
    free(in);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    tokenize_opts o;
    int rc = parse_options(&o, argc, argv);
    if (rc != GO_ON) return rc;
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, o.path, &err) < 0) {
        fprintf(stderr, "loraps tokenize: error: %s\n", err.msg);
        return 1;
    }
    if ((o.data || o.out) && !(o.data && o.out)) {
        fprintf(stderr, "loraps tokenize: error: --data and --out go together\n");
        rc = 2;
    } else {
        rc = o.data ? export_bin(t, &o) : translate_stdin(t, &o);
    }
    tokenizer_free(t);
    return rc;
}
