/* Datasets: formats, packing and padding, prompt masking, shuffling, sharding over ranks, exact
 * resume, validation split, and bad data (clear file:line messages, skip vs fail). */
#include "dataset.h"
#include "tokenizer.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define DEMO_TOK LORAPS_TEST_DATA "/reference/golden/tokenizers/demo512"

static tokenizer *tok;
static char dir[256];

static const char *write_file(const char *name, const char *content, size_t len) {
    static char path[8][512];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    fclose(f);
    return p;
}

static const char *write_str(const char *name, const char *content) {
    return write_file(name, content, strlen(content));
}

static int setup(void **s) {
    (void)s;
    lp_err err;
    if (tokenizer_load(&tok, DEMO_TOK, &err) < 0) fail_msg("%s", err.msg);
    snprintf(dir, sizeof dir, "/tmp/loraps_test_dataset_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int teardown(void **s) {
    (void)s;
    tokenizer_free(tok);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int *enc(const char *text, size_t *n) {
    int *ids;
    lp_err err;
    if (tokenizer_encode(tok, text, strlen(text), 0, 1, &ids, n, &err) < 0) fail_msg("%s", err.msg);
    return ids;
}

static const char *DOCS = "The first document has two lines.\nThis is its second line.\n\n"
                          "Document two is short.\n\n\n  \nDocument three, after blank lines.\n"
                          "Four: it's the last one, with numbers 12345 and emoji \xf0\x9f\x98\x80.";

/* Every sequence of a packed .txt, taken in order of the stream, rebuilds doc + EOS + ... */
static void test_txt_packed_stream(void **s) {
    (void)s;
    const char *path = write_str("docs.txt", DOCS);
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 8;
    dataset *d;
    lp_err err;
    if (dataset_open(&d, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    const char *docs[] = {
        "The first document has two lines.\nThis is its second line.", "Document two is short.",
        "Document three, after blank lines.\n"
        "Four: it's the last one, with numbers 12345 and emoji \xf0\x9f\x98\x80."};
    int want[512], nw = 0, eos = tokenizer_eos_id(tok);
    for (int k = 0; k < 3; k++) {
        size_t n;
        int *ids = enc(docs[k], &n);
        for (size_t i = 0; i < n; i++) want[nw++] = ids[i];
        want[nw++] = eos;
        free(ids);
    }
    assert_int_equal(dataset_n_tokens(d, DS_TRAIN), nw);
    uint64_t n = dataset_n_sequences(d, DS_TRAIN);
    assert_int_equal(n, (uint64_t)(nw - 1 + 7) / 8);
    /* epoch 0 is a permutation of the windows: find each window's place in the stream */
    int seen[64] = {0}, in[8], tg[8];
    for (uint64_t i = 0; i < n; i++) {
        dataset_sequence(d, DS_TRAIN, i, in, tg);
        int found = -1;
        for (uint64_t w = 0; w < n && found < 0; w++) {
            int ok = 1;
            for (int t = 0; t < 8 && ok; t++) {
                int pos = (int)w * 8 + t;
                if (pos < nw)
                    ok = in[t] == want[pos] && tg[t] == (pos + 1 < nw ? want[pos + 1] : -1);
                else
                    ok = tg[t] == -1;
            }
            if (ok) found = (int)w;
        }
        assert_true(found >= 0);
        assert_int_equal(seen[found]++, 0);
    }
    assert_string_not_equal(dataset_summary(d), "");
    printf("%s\n", dataset_summary(d));
    dataset_free(d);
    /* one document per line */
    o.txt_by_line = 1;
    if (dataset_open(&d, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_non_null(strstr(dataset_summary(d), ": 5 documents"));
    dataset_free(d);
}

static void seqs(dataset *d, uint64_t first, int n, int *in, int *tg) {
    dataset_batch(d, DS_TRAIN, first, n, in, tg);
}

/* Rank k of N reads a disjoint shard; the union equals one rank's batch; epochs reshuffle. */
static void test_shards_and_epochs(void **s) {
    (void)s;
    char text[20000] = "";
    for (int i = 0; i < 200; i++) {
        char line[100];
        snprintf(line, sizeof line, "Line %d says something about item %d.\n", i, i * 7);
        strcat(text, line);
    }
    const char *path = write_str("lines.txt", text);
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 16, o.seed = 42, o.txt_by_line = 1;
    dataset *a, *b;
    lp_err err;
    if (dataset_open(&a, path, tok, &o, &err) < 0 || dataset_open(&b, path, tok, &o, &err) < 0)
        fail_msg("%s", err.msg);
    uint64_t n = dataset_n_sequences(a, DS_TRAIN);
    assert_true(n > 40);
    enum { B = 3, R = 4, T = 16 };
    int one[B * R * T], onet[B * R * T], part[B * T], partt[B * T];
    dataset_pos p1 = {0, 0};
    for (int step = 0; step < 3 * (int)n / (B * R); step++) { /* crosses epochs */
        dataset_pos before = p1;
        dataset_next_batch(a, &p1, 0, 1, B * R, one, onet);
        for (int r = 0; r < R; r++) {
            dataset_pos pr = before;
            dataset_next_batch(b, &pr, r, R, B, part, partt);
            assert_memory_equal(part, one + r * B * T, sizeof part);
            assert_memory_equal(partt, onet + r * B * T, sizeof partt);
            assert_true(pr.epoch == p1.epoch && pr.index == p1.index);
        }
    }
    assert_true(p1.epoch >= 2);
    /* epoch 0 and epoch 1 hold the same sequences in another order */
    int *e0 = malloc(n * T * sizeof(int)), *e1 = malloc(n * T * sizeof(int)),
        *tg = malloc(n * T * sizeof(int));
    seqs(a, 0, (int)n, e0, tg);
    seqs(a, n, (int)n, e1, tg);
    assert_memory_not_equal(e0, e1, n * T * sizeof(int));
    long sum0 = 0, sum1 = 0;
    for (uint64_t i = 0; i < n * T; i++) sum0 += e0[i], sum1 += e1[i];
    assert_int_equal(sum0, sum1);
    /* another seed, another order */
    dataset *c;
    o.seed = 43;
    if (dataset_open(&c, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    seqs(c, 0, (int)n, e1, tg);
    assert_memory_not_equal(e0, e1, n * T * sizeof(int));
    free(e0), free(e1), free(tg);
    dataset_free(a), dataset_free(b), dataset_free(c);
}

/* A saved position, restored in a new process (a new dataset), continues exactly. */
static void test_resume(void **s) {
    (void)s;
    const char *path = write_str("resume.txt", DOCS);
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 4, o.seed = 7;
    dataset *a, *b;
    lp_err err;
    if (dataset_open(&a, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    dataset_pos p = {0, 0};
    int in[2 * 4], tg[2 * 4], in2[2 * 4], tg2[2 * 4];
    for (int i = 0; i < 5; i++) dataset_next_batch(a, &p, 1, 2, 2, in, tg);
    json_t *j = dataset_pos_to_json(a, &p);
    char *saved = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    printf("saved position: %s\n", saved);
    if (dataset_open(&b, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    dataset_pos q;
    json_t *r = json_loads(saved, 0, NULL);
    if (dataset_pos_from_json(b, r, &q, &err) < 0) fail_msg("%s", err.msg);
    for (int i = 0; i < 7; i++) {
        dataset_next_batch(a, &p, 1, 2, 2, in, tg);
        dataset_next_batch(b, &q, 1, 2, 2, in2, tg2);
        assert_memory_equal(in, in2, sizeof in);
        assert_memory_equal(tg, tg2, sizeof tg);
    }
    dataset_free(b);
    /* other data or another seed is refused */
    o.seed = 8;
    if (dataset_open(&b, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_pos_from_json(b, r, &q, &err), -1);
    assert_non_null(strstr(err.msg, "seed"));
    dataset_free(b);
    o.seed = 7, o.seq_len = 5;
    if (dataset_open(&b, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_pos_from_json(b, r, &q, &err), -1);
    assert_non_null(strstr(err.msg, "sequences"));
    json_t *badj = json_pack("{s:i}", "epoch", -1);
    assert_int_equal(dataset_pos_from_json(NULL, badj, &q, &err), -1);
    json_decref(badj);
    json_decref(r);
    free(saved);
    dataset_free(a), dataset_free(b);
}

/* {"prompt","completion"}: no loss on the prompt; {"text"} as a whole; padded sequences. */
static void test_jsonl_prompt_masking(void **s) {
    (void)s;
    const char *path =
        write_str("pc.jsonl", "{\"prompt\": \"Translate: cheese\", \"completion\": \" fromage\"}\n"
                              "\n"
                              "{\"text\": \"Plain text line.\"}\n");
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 32, o.pack = 0;
    dataset *d;
    lp_err err;
    if (dataset_open(&d, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 2);
    size_t np, nc, nt;
    int *p = enc("Translate: cheese", &np), *c = enc(" fromage", &nc),
        *t = enc("Plain text line.", &nt);
    int eos = tokenizer_eos_id(tok), in[32], tg[32], found = 0;
    for (uint64_t i = 0; i < 2; i++) {
        dataset_sequence(d, DS_TRAIN, i, in, tg);
        if (in[0] == p[0]) { /* the prompt/completion one */
            found |= 1;
            size_t L = np + nc + 1;
            for (size_t k = 0; k < 32; k++) {
                int want_in = k < np ? p[k] : k < np + nc ? c[k - np] : eos;
                assert_int_equal(in[k], want_in); /* padding is EOS too */
                int want_tg = k + 1 < np        ? -1
                              : k + 1 < np + nc ? c[k + 1 - np]
                              : k + 1 == L - 1  ? eos
                                                : -1;
                assert_int_equal(tg[k], want_tg);
            }
        } else {
            found |= 2;
            for (size_t k = 0; k < nt; k++) assert_int_equal(in[k], t[k]);
            for (size_t k = 0; k + 1 < nt; k++) assert_int_equal(tg[k], t[k + 1]);
            assert_int_equal(tg[nt - 1], eos);
            for (size_t k = nt; k < 32; k++) assert_int_equal(tg[k], -1);
        }
    }
    assert_int_equal(found, 3);
    free(p), free(c), free(t);
    dataset_free(d);
}

static void expect_error(const char *path, const dataset_options *o, const char *want) {
    dataset *d;
    lp_err err = {{0}};
    int rc = dataset_open(&d, path, tok, o, &err);
    if (rc == 0) {
        dataset_free(d);
        fail_msg("%s: opened, expected an error with '%s'", path, want);
    }
    printf("  refused: %s\n", err.msg);
    if (!strstr(err.msg, want)) fail_msg("error '%s' lacks '%s'", err.msg, want);
}

static uint64_t expect_skips(const char *path, const dataset_options *o, uint64_t n_skipped) {
    dataset_options so = *o;
    so.skip_bad = 1;
    dataset *d;
    lp_err err;
    if (dataset_open(&d, path, tok, &so, &err) < 0) fail_msg("%s", err.msg);
    printf("  skipped: %s\n", dataset_summary(d));
    assert_int_equal(dataset_n_skipped(d), n_skipped);
    uint64_t n = dataset_n_sequences(d, DS_TRAIN);
    dataset_free(d);
    return n;
}

static void test_bad_data(void **s) {
    (void)s;
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 8;
    char name[64];
    const char *p = write_str("bad.jsonl", "{\"text\": \"ok one\"}\n{\"text\": \"ok two\"}\n"
                                           "{\"text\": \"broken\n{\"prompt\": \"p\"}\n"
                                           "{\"text\": 5}\n[1, 2]\n{\"text\": \"ok three\"}\n");
    snprintf(name, sizeof name, "bad.jsonl:3: malformed JSON");
    expect_error(p, &o, name);
    expect_skips(p, &o, 4);
    p = write_str("missing.jsonl", "{\"text\": \"fine\"}\n{\"prompt\": \"p\"}\n");
    expect_error(p, &o, "missing.jsonl:2: \"prompt\" and \"completion\" must both be strings");
    p = write_str("nokey.jsonl", "{\"body\": \"x\"}\n");
    expect_error(p, &o, "nokey.jsonl:1: no \"text\"");
    p = write_str("utf8.txt", "fine\n\nalso fine\nbut this \xff is not\n\nlast");
    expect_error(p, &o, "utf8.txt:4: invalid UTF-8 (byte 0xff)");
    assert_true(expect_skips(p, &o, 1) > 0);
    p = write_str("utf8.jsonl", "{\"text\": \"bad \xc3\x28\"}\n{\"text\": \"good\"}\n");
    expect_error(p, &o, "utf8.jsonl:1: malformed JSON");
    p = write_str("empty.txt", "");
    expect_error(p, &o, "empty file");
    p = write_str("blank.txt", "\n\n   \n");
    expect_error(p, &o, "no usable documents");
    p = write_str("allbad.jsonl", "nope\n");
    dataset_options so = o;
    so.skip_bad = 1;
    expect_error(p, &so, "every record was bad");
    expect_error("/nonexistent/data.txt", &o, "/nonexistent/data.txt");
    /* longer than the context, in padded mode, when asked to reject */
    dataset_options po = o;
    po.pack = 0, po.on_long = DS_LONG_REJECT;
    p = write_str("long.txt", "short\n\nthis document is much longer than eight tokens of context, "
                              "surely\n\nshort again");
    expect_error(p, &po, "long.txt:3: document of");
    assert_int_equal(expect_skips(p, &po, 1), 2);
    po.on_long = DS_LONG_TRUNCATE;
    dataset *d;
    lp_err err;
    if (dataset_open(&d, p, tok, &po, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 3);
    dataset_free(d);
    po.on_long = DS_LONG_SPLIT;
    if (dataset_open(&d, p, tok, &po, &err) < 0) fail_msg("%s", err.msg);
    assert_true(dataset_n_sequences(d, DS_TRAIN) > 3);
    dataset_free(d);
    /* bad options */
    o.seq_len = 0;
    expect_error(p, &o, "seq_len");
    o.seq_len = 8, o.val_fraction = 1.5;
    expect_error(p, &o, "fraction");
}

static void test_bin(void **s) {
    (void)s;
    int ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (i * 37) % 500;
    ids[19] = 511, ids[39] = 511; /* two documents ending in EOS */
    char path[512];
    lp_err err;
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 8;
    for (int bpt = 2; bpt <= 4; bpt += 2) {
        snprintf(path, sizeof path, "%s/tok%d.bin", dir, bpt);
        if (dataset_write_bin(path, ids, 40, bpt, 511, &err) < 0) fail_msg("%s", err.msg);
        dataset *d;
        if (dataset_open(&d, path, NULL,
                         &(dataset_options){.seq_len = 8, .pack = 1, .vocab_size = 512}, &err) < 0)
            fail_msg("%s", err.msg);
        assert_int_equal(dataset_n_tokens(d, DS_TRAIN), 40);
        assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 5);
        assert_non_null(strstr(dataset_summary(d), "read in place")); /* mmap'd, not copied */
        /* epoch 0 is a permutation of the 5 windows of the file's tokens */
        int seen[5] = {0}, in[8], tg[8];
        for (int i = 0; i < 5; i++) {
            dataset_sequence(d, DS_TRAIN, (uint64_t)i, in, tg);
            int w = -1;
            for (int c = 0; c < 5 && w < 0; c++)
                if (in[0] == ids[c * 8]) w = c;
            assert_true(w >= 0);
            seen[w]++;
            for (int t = 0; t < 8; t++) {
                assert_int_equal(in[t], ids[w * 8 + t]);
                assert_int_equal(tg[t], w * 8 + t + 1 < 40 ? ids[w * 8 + t + 1] : -1);
            }
        }
        for (int c = 0; c < 5; c++) assert_int_equal(seen[c], 1);
        dataset_free(d);
        /* with a validation fraction the documents are split, so the tokens are copied */
        if (dataset_open(
                &d, path, NULL,
                &(dataset_options){.seq_len = 8, .pack = 1, .vocab_size = 512, .val_fraction = 0.5},
                &err) < 0)
            fail_msg("%s", err.msg);
        assert_null(strstr(dataset_summary(d), "read in place"));
        assert_int_equal(dataset_n_tokens(d, DS_TRAIN) + dataset_n_tokens(d, DS_VAL), 40);
        assert_int_equal(dataset_n_tokens(d, DS_VAL), 20);
        dataset_free(d);
        /* pad mode: the EOS in the file separates documents */
        if (dataset_open(&d, path, tok, &(dataset_options){.seq_len = 32, .pack = 0}, &err) < 0)
            fail_msg("%s", err.msg);
        assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 2);
        dataset_free(d);
    }
    /* ids past the vocabulary */
    ids[5] = 600;
    snprintf(path, sizeof path, "%s/badid.bin", dir);
    if (dataset_write_bin(path, ids, 40, 2, 511, &err) < 0) fail_msg("%s", err.msg);
    expect_error(path, &o, "badid.bin: token 5: id 600 >= vocab size 512");
    expect_skips(path, &o, 1);
    /* truncated file, wrong magic */
    FILE *f = fopen(path, "r+b");
    assert_int_equal(ftruncate(fileno(f), 24 + 30), 0);
    fclose(f);
    expect_error(path, &o, "the header says 40 tokens");
    const char *p = write_str("junk.bin", "this is not a token file at all....");
    expect_error(p, &o, "no LPTK header");
    assert_int_equal(dataset_write_bin(path, ids, 40, 3, -1, &err), -1);
    ids[0] = 70000;
    assert_int_equal(dataset_write_bin(path, ids, 40, 2, -1, &err), -1);
}

/* Tokenize once to a .bin, train from it: the same sequences as from the text. */
/* Data shorter than one packed sequence (T + 1 tokens) is refused at open, with the sizes, rather
 * than giving an epoch of no sequence (found by tests/fuzz: the division by zero it caused). */
static void test_shorter_than_one_sequence(void **s) {
    (void)s;
    char path[512];
    lp_err err;
    int ids[8] = {5, 6, 7, 8, 9, 10, 11, 12};
    for (int n = 1; n <= 9; n += 8) {
        snprintf(path, sizeof path, "%s/short%d.bin", dir, n);
        assert_int_equal(dataset_write_bin(path, ids, n < 8 ? (size_t)n : 8, 2, 0, &err), 0);
        dataset *d = NULL;
        int rc = dataset_open(&d, path, NULL,
                              &(dataset_options){.seq_len = 8, .pack = 1, .vocab_size = 512}, &err);
        if (n == 1) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, "shorter than one sequence of 8"));
            assert_non_null(strstr(err.msg, path));
        } else {
            /* 8 tokens make one (shorter) window: accepted */
            if (rc < 0) fail_msg("%s", err.msg);
            assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 1);
            dataset_free(d);
        }
    }
}

static void test_export_bin(void **s) {
    (void)s;
    const char *path = write_str("export.txt", DOCS);
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 6, o.seed = 3;
    dataset *a, *b;
    lp_err err;
    if (dataset_open(&a, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    char bin[400];
    snprintf(bin, sizeof bin, "%s/export.bin", dir);
    if (dataset_export_bin(a, DS_TRAIN, bin, &err) < 0) fail_msg("%s", err.msg);
    if (dataset_open(&b, bin, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_n_sequences(a, DS_TRAIN), dataset_n_sequences(b, DS_TRAIN));
    int n = (int)dataset_n_sequences(a, DS_TRAIN) * 2;
    int *i1 = malloc((size_t)n * 6 * sizeof(int)), *t1 = malloc((size_t)n * 6 * sizeof(int));
    int *i2 = malloc((size_t)n * 6 * sizeof(int)), *t2 = malloc((size_t)n * 6 * sizeof(int));
    dataset_batch(a, DS_TRAIN, 0, n, i1, t1);
    dataset_batch(b, DS_TRAIN, 0, n, i2, t2);
    assert_memory_equal(i1, i2, (size_t)n * 6 * sizeof(int));
    assert_memory_equal(t1, t2, (size_t)n * 6 * sizeof(int));
    free(i1), free(t1), free(i2), free(t2);
    dataset_free(a), dataset_free(b);
    /* prompt masks cannot go into a .bin */
    path = write_str("export.jsonl", "{\"prompt\": \"q\", \"completion\": \" a\"}\n");
    if (dataset_open(&a, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_export_bin(a, DS_TRAIN, bin, &err), -1);
    assert_non_null(strstr(err.msg, "loss mask"));
    dataset_free(a);
}

static void test_validation_split(void **s) {
    (void)s;
    char text[4000] = "";
    for (int i = 0; i < 20; i++) {
        char line[100];
        snprintf(line, sizeof line, "Document number %d.\n\n", i);
        strcat(text, line);
    }
    const char *path = write_str("val.txt", text);
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 64, o.pack = 0, o.val_fraction = 0.25;
    dataset *d;
    lp_err err;
    if (dataset_open(&d, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 15);
    assert_int_equal(dataset_n_sequences(d, DS_VAL), 5);
    /* validation is in file order: documents 3, 7, 11, ... */
    int in[64], tg[64];
    dataset_sequence(d, DS_VAL, 0, in, tg);
    size_t n;
    int *ids = enc("Document number 3.", &n);
    assert_memory_equal(in, ids, n * sizeof(int));
    free(ids);
    dataset_free(d);
    /* a separate file */
    const char *vp =
        write_str("val2.jsonl", "{\"text\": \"held out\"}\n{\"text\": \"also held out\"}\n");
    o.val_fraction = 0, o.val_path = vp;
    if (dataset_open(&d, path, tok, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(dataset_n_sequences(d, DS_TRAIN), 20);
    assert_int_equal(dataset_n_sequences(d, DS_VAL), 2);
    dataset_free(d);
}

static void test_data_source(void **s) {
    (void)s;
    data_source a, b;
    lp_err err;
    data_source_open_demo(&a, 5, 512);
    int in[4 * 16], tg[4 * 16], in2[4 * 16], tg2[4 * 16];
    assert_int_equal(data_source_batch(&a, DS_TRAIN, 10, 4, 16, in, tg, &err), 0);
    demo_task dt;
    demo_task_init(&dt, 5, 512);
    demo_task_batch(&dt, 10, 4, 16, in2, tg2);
    assert_memory_equal(in, in2, sizeof in);
    data_source_close(&a);
    const char *path = write_str("src.txt", DOCS);
    dataset_options o;
    dataset_options_default(&o);
    o.seq_len = 16;
    if (data_source_open_file(&b, path, DEMO_TOK, &o, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(data_source_batch(&b, DS_TRAIN, 0, 4, 16, in, tg, &err), 0);
    assert_int_equal(data_source_batch(&b, DS_TRAIN, 0, 4, 8, in, tg, &err), -1);
    assert_int_equal(data_source_batch(&b, DS_VAL, 0, 4, 16, in, tg, &err), -1);
    data_source_close(&b);
    assert_int_equal(data_source_open_file(&b, path, "/nonexistent", &o, &err), -1);
}

static void test_options_from_text(void **s) {
    (void)s;
    dataset_options o;
    dataset_options_default(&o);
    lp_err err;
    const char *ok[][2] = {
        {"seq_len", "128"},      {"layout", "pad"},       {"txt_docs", "line"},
        {"bad_data", "skip"},    {"long_docs", "reject"}, {"special_tokens", "special"},
        {"val_fraction", "0.1"}, {"val_file", "v.jsonl"}, {"seed", "18446744073709551615"},
        {"vocab_size", "50257"}};
    for (size_t k = 0; k < sizeof ok / sizeof *ok; k++)
        if (dataset_options_set(&o, ok[k][0], ok[k][1], &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(o.seq_len, 128);
    assert_int_equal(o.pack, 0);
    assert_int_equal(o.txt_by_line, 1);
    assert_int_equal(o.skip_bad, 1);
    assert_int_equal(o.on_long, DS_LONG_REJECT);
    assert_int_equal(o.allow_special, 1);
    assert_true(o.val_fraction == 0.1);
    assert_string_equal(o.val_path, "v.jsonl");
    assert_true(o.seed == UINT64_MAX);
    assert_int_equal(o.vocab_size, 50257);
    const char *bad[][3] = {{"seq_len", "0", "seq_len"},
                            {"seq_len", "12x", "seq_len"},
                            {"layout", "packed", "one of pad, pack"},
                            {"val_fraction", "1", "[0, 1)"},
                            {"seed", "-1", "seed"},
                            {"colour", "red", "unknown data option 'colour'"}};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        assert_int_equal(dataset_options_set(&o, bad[k][0], bad[k][1], &err), -1);
        if (!strstr(err.msg, bad[k][2])) fail_msg("'%s' lacks '%s'", err.msg, bad[k][2]);
    }
}

/* Garbage never crashes: random bytes, and valid files cut at random points, in every format,
 * with skipping on and off: each open either fails with a message or gives a usable dataset. */
static void test_garbage(void **s) {
    (void)s;
    uint64_t x = 88172645463325252ull;
    const char *exts[] = {"txt", "jsonl", "bin"};
    char valid[3][400];
    snprintf(valid[0], 400, "%s", DOCS);
    snprintf(valid[1], 400,
             "{\"text\": \"a b c\"}\n{\"prompt\": \"p q\", \"completion\": \" r\"}\n"
             "{\"text\": \"\\u00e9\\ud83d\\ude00\"}\n");
    int ids[60];
    for (int i = 0; i < 60; i++) ids[i] = i * 7 % 512;
    char binpath[400];
    snprintf(binpath, sizeof binpath, "%s/valid.bin", dir);
    lp_err err;
    assert_int_equal(dataset_write_bin(binpath, ids, 60, 2, 511, &err), 0);
    FILE *f = fopen(binpath, "rb");
    size_t binlen = fread(valid[2], 1, sizeof valid[2], f);
    fclose(f);
    int opened = 0, refused = 0;
    for (int it = 0; it < 300; it++) {
        char buf[512], name[32];
        int e = it % 3;
        size_t len;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (it % 2) { /* random bytes, biased to the format's characters */
            len = x % 300;
            for (size_t i = 0; i < len; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                const char *alpha = "{}\":,[] \n\\abcLPTK\x01\x02\xff\xc3\xa9";
                buf[i] = (x >> 8) % 3 ? alpha[(x >> 16) % 22] : (char)(x >> 24);
            }
        } else { /* a valid file cut short, one byte flipped */
            size_t full = e == 2 ? binlen : strlen(valid[e]);
            len = x % (full + 1);
            memcpy(buf, valid[e], len);
            if (len) buf[(x >> 20) % len] ^= (char)(1 << ((x >> 40) % 8));
        }
        snprintf(name, sizeof name, "g%d.%s", it, exts[e]);
        const char *path = write_file(name, buf, len);
        dataset_options o;
        dataset_options_default(&o);
        o.seq_len = 1 + (int)(x % 9), o.skip_bad = (int)((x >> 9) & 1),
        o.pack = (int)((x >> 10) & 1);
        o.vocab_size = 512, o.val_fraction = (x >> 11) & 1 ? 0.3 : 0;
        dataset *d;
        if (dataset_open(&d, path, tok, &o, &err) < 0) {
            assert_true(strlen(err.msg) > 0);
            refused++;
            continue;
        }
        opened++;
        int in[9 * 3], tg[9 * 3];
        dataset_batch(d, DS_TRAIN, x % 1000, 3, in, tg);
        for (int i = 0; i < 3 * o.seq_len; i++)
            assert_true(in[i] >= 0 && in[i] < 512 && tg[i] < 512);
        if (dataset_n_sequences(d, DS_VAL)) dataset_batch(d, DS_VAL, 0, 3, in, tg);
        dataset_free(d);
    }
    printf("garbage: %d opened, %d refused with a message, no crash\n", opened, refused);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_packed_stream),
        cmocka_unit_test(test_shards_and_epochs),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_jsonl_prompt_masking),
        cmocka_unit_test(test_bad_data),
        cmocka_unit_test(test_bin),
        cmocka_unit_test(test_validation_split),
        cmocka_unit_test(test_data_source),
        cmocka_unit_test(test_options_from_text),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_export_bin),
        cmocka_unit_test(test_shorter_than_one_sequence),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
