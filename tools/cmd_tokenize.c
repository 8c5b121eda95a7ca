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

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *data = NULL, *out = NULL;
    dataset_options dopt;
    dataset_options_default(&dopt);
    dopt.seq_len = 1;
    int decode = 0, special = 0, add_special = 0, skip_special = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--special")) {
            special = 1;
        } else if (!strcmp(a, "--add-special")) {
            add_special = 1;
        } else if (!strcmp(a, "--skip-special")) {
            skip_special = 1;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--tokenizer") || !strcmp(a, "--data") ||
                   !strcmp(a, "--out") || !strcmp(a, "--txt-docs") || !strcmp(a, "--bad-data")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loraps tokenize: error: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            lp_err e;
            if (!strcmp(a, "--data"))
                data = v;
            else if (!strcmp(a, "--out"))
                out = v;
            else if (!strcmp(a, "--txt-docs") || !strcmp(a, "--bad-data")) {
                if (dataset_options_set(&dopt, a[2] == 't' ? "txt_docs" : "bad_data", v, &e) < 0) {
                    fprintf(stderr, "loraps tokenize: error: %s: %s\n", a, e.msg);
                    return 2;
                }
            } else
                path = v;
        } else {
            fprintf(stderr, "loraps tokenize: error: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "loraps tokenize: error: --model or --tokenizer is required\n");
        usage(stderr);
        return 2;
    }
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, path, &err) < 0) {
        fprintf(stderr, "loraps tokenize: error: %s\n", err.msg);
        return 1;
    }
    if (data || out) {
        if (!data || !out) {
            tokenizer_free(t);
            fprintf(stderr, "loraps tokenize: error: --data and --out go together\n");
            return 2;
        }
        dopt.allow_special = special;
        dataset *d = NULL;
        int rc = 0;
        if (dataset_open(&d, data, t, &dopt, &err) < 0 ||
            dataset_export_bin(d, DS_TRAIN, out, &err) < 0) {
            fprintf(stderr, "loraps tokenize: error: %s\n", err.msg);
            rc = 1;
        } else {
            fprintf(stderr, "loraps tokenize: %s -> %s\n", dataset_summary(d), out);
        }
        dataset_free(d);
        tokenizer_free(t);
        return rc;
    }
    size_t len;
    char *in = read_stdin(&len);
    int rc = 0;
    if (!in) {
        fprintf(stderr, "loraps tokenize: error: out of memory reading stdin\n");
        rc = 1;
    } else if (decode) {
        json_error_t je;
        json_t *arr = json_loadb(in, len, 0, &je);
        size_t n = json_array_size(arr);
        int *ids = malloc((n ? n : 1) * sizeof *ids);
        for (size_t i = 0; ids && i < n && !rc; i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= tokenizer_vocab_size(t)) {
                fprintf(stderr,
                        "loraps tokenize: error: stdin[%zu]: not a token id of this "
                        "tokenizer (0..%d)\n",
                        i, tokenizer_vocab_size(t) - 1);
                rc = 1;
            } else {
                ids[i] = (int)json_integer_value(v);
            }
        }
        if (!json_is_array(arr)) {
            fprintf(stderr, "loraps tokenize: error: stdin: expected a JSON array of ids (%s)\n",
                    arr ? "not an array" : je.text);
            rc = 1;
        }
        char *text = rc || !ids ? NULL : tokenizer_decode(t, ids, n, skip_special);
        if (text)
            fwrite(text, 1, strlen(text), stdout);
        else if (!rc)
            rc = 1, fprintf(stderr, "loraps tokenize: error: out of memory\n");
        free(text), free(ids);
        json_decref(arr);
    } else {
        int *ids;
        size_t n;
        if (tokenizer_encode(t, in, len, special, add_special, &ids, &n, &err) < 0) {
            fprintf(stderr, "loraps tokenize: error: stdin: %s\n", err.msg);
            rc = 1;
        } else {
            putchar('[');
            for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
            printf("]\n");
            free(ids);
        }
    }
    free(in);
    tokenizer_free(t);
    return rc;
}
