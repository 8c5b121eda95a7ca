/* The tokenizer beyond the golden ids: the demo tokenizer (exact sizes, deterministic, the
 * committed golden copy still what the trainer writes), round trips, invalid UTF-8, clear load
 * errors, decoding details, encoding from several threads, and the Unicode normalizers: against
 * Python's unicodedata on 8,435 strings, and on examples from UAX #15, SpecialCasing and
 * `tokenizers`' own tests. */
#include "bpe_train.h"
#include "tokenizer.h"
#include "tokenizer_unicode.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define GOLD LORAPS_TEST_DATA "/reference/golden/tokenizers/"

static char dir[256];

static int setup(void **s) {
    (void)s;
    snprintf(dir, sizeof dir, "/tmp/loraps_test_tokenizer_%d", (int)getpid());
    return 0;
}

static int teardown(void **s) {
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = 0;
    fclose(f);
    return b;
}

static void roundtrip(const tokenizer *t, const char *text, size_t len) {
    int *ids;
    size_t n;
    lp_err err;
    if (tokenizer_encode(t, text, len, 1, 0, &ids, &n, &err) < 0) fail_msg("%s", err.msg);
    char *back = tokenizer_decode(t, ids, n, 0);
    assert_non_null(back);
    assert_int_equal(strlen(back), len);
    assert_memory_equal(back, text, len);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < tokenizer_vocab_size(t));
    free(back), free(ids);
}

/* Exactly vocab_size ids, <|endoftext|> last, every id a distinct token; the text round-trips. */
static void test_demo_sizes(void **s) {
    (void)s;
    int sizes[] = {257, 512, 4096, 50257};
    size_t clen;
    const char *corpus = bpe_demo_corpus(&clen);
    for (int k = 0; k < 4; k++) {
        char d[300];
        snprintf(d, sizeof d, "%s/demo%d", dir, sizes[k]);
        lp_err err;
        if (bpe_write_demo_tokenizer(d, sizes[k], &err) < 0) fail_msg("%s", err.msg);
        tokenizer *t;
        if (tokenizer_load(&t, d, &err) < 0) fail_msg("%s", err.msg);
        assert_int_equal(tokenizer_vocab_size(t), sizes[k]);
        assert_int_equal(tokenizer_eos_id(t), sizes[k] - 1);
        assert_int_equal(tokenizer_token_id(t, "<|endoftext|>"), sizes[k] - 1);
        assert_true(tokenizer_is_special(t, sizes[k] - 1));
        char path[400];
        snprintf(path, sizeof path, "%s/tokenizer.json", d);
        json_t *root = json_load_file(path, 0, NULL);
        assert_non_null(root);
        json_t *model = json_object_get(root, "model");
        assert_int_equal(json_object_size(json_object_get(model, "vocab")), sizes[k]);
        assert_int_equal(json_array_size(json_object_get(model, "merges")), sizes[k] - 257);
        json_decref(root);
        for (int id = 0; id < sizes[k]; id++) assert_non_null(tokenizer_id_to_token(t, id));
        roundtrip(t, corpus, clen);
        int *ids;
        size_t n;
        if (tokenizer_encode(t, corpus, clen, 0, 0, &ids, &n, &err) < 0) fail_msg("%s", err.msg);
        printf("demo vocab %5d: the %zu-byte corpus is %zu tokens (%.2f bytes/token)\n", sizes[k],
               clen, n, (double)clen / (double)n);
        free(ids);
        tokenizer_free(t);
    }
    lp_err err;
    assert_int_equal(bpe_write_demo_tokenizer(dir, 256, &err), -1);
    assert_non_null(strstr(err.msg, "257"));
}

/* The same bytes every time, and the committed golden copy (whose ids `tokenizers` made) is what
 * the trainer writes today: change the corpus or the trainer and this says to regenerate. */
static void test_demo_deterministic(void **s) {
    (void)s;
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/det_a", dir);
    snprintf(b, sizeof b, "%s/det_b", dir);
    lp_err err;
    assert_int_equal(bpe_write_demo_tokenizer(a, 512, &err), 0);
    assert_int_equal(bpe_write_demo_tokenizer(b, 512, &err), 0);
    char pa[400], pb[400];
    snprintf(pa, sizeof pa, "%s/tokenizer.json", a);
    snprintf(pb, sizeof pb, "%s/tokenizer.json", b);
    size_t la, lb, lg;
    char *x = slurp(pa, &la), *y = slurp(pb, &lb), *g = slurp(GOLD "demo512/tokenizer.json", &lg);
    assert_non_null(x), assert_non_null(y), assert_non_null(g);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, la);
    if (la != lg || memcmp(x, g, la))
        fail_msg("bpe_write_demo_tokenizer(512) no longer writes golden/tokenizers/demo512: rerun "
                 "tests/reference/tokenizer_reference.py (see its docstring)");
    free(x), free(y), free(g);
}

static void test_invalid_utf8(void **s) {
    (void)s;
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, GOLD "gpt2/tokenizer.json", &err) < 0) fail_msg("%s", err.msg);
    const char *bad[] = {"ok \xff",          "\xc3", "a\xe2\x82", "\xc0\xaf", "\xed\xa0\x80",
                         "\xf4\x90\x80\x80", "\x80"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int *ids = (int *)1;
        size_t n = 99;
        assert_int_equal(tokenizer_encode(t, bad[k], strlen(bad[k]), 0, 0, &ids, &n, &err), -1);
        assert_null(ids);
        assert_int_equal(n, 0);
        assert_non_null(strstr(err.msg, "invalid UTF-8 at byte"));
    }
    printf("%s\n", err.msg);
    /* embedded NUL is valid text */
    int *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(t, "a\0b", 3, 0, 0, &ids, &n, &err), 0);
    char *back = tokenizer_decode(t, ids, n, 0);
    assert_memory_equal(back, "a\0b", 3);
    free(back), free(ids);
    tokenizer_free(t);
}

static void test_decode_details(void **s) {
    (void)s;
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, GOLD "demo512", &err) < 0) fail_msg("%s", err.msg);
    int *ids;
    size_t n;
    const char *emoji = "\xf0\x9f\x98\x80";
    assert_int_equal(tokenizer_encode(t, emoji, 4, 0, 0, &ids, &n, &err), 0);
    assert_true(n >= 2);
    char *part = tokenizer_decode(t, ids, 1, 0); /* a lone lead byte: U+FFFD, as tokenizers */
    assert_string_equal(part, "\xef\xbf\xbd");
    free(part), free(ids);
    int odd[] = {-5, 39, 100000, 511, 39};
    char *d = tokenizer_decode(t, odd, 5, 0);
    assert_string_equal(d, "H<|endoftext|>H"); /* unknown ids are dropped */
    free(d);
    d = tokenizer_decode(t, odd, 5, 1);
    assert_string_equal(d, "HH");
    free(d);
    d = tokenizer_decode(t, NULL, 0, 0);
    assert_string_equal(d, "");
    free(d);
    assert_int_equal(tokenizer_encode(t, "", 0, 1, 1, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    free(ids);
    assert_null(tokenizer_id_to_token(t, 512));
    assert_int_equal(tokenizer_token_id(t, "no such token"), -1);
    tokenizer_free(t);
    /* bos/eos of the Llama-style files */
    if (tokenizer_load(&t, GOLD "llama2", &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(tokenizer_bos_id(t), 1);
    assert_int_equal(tokenizer_eos_id(t), 2);
    tokenizer_free(t);
    if (tokenizer_load(&t, GOLD "llama3", &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(tokenizer_bos_id(t), tokenizer_token_id(t, "<|begin_of_text|>"));
    assert_int_equal(tokenizer_eos_id(t), tokenizer_token_id(t, "<|end_of_text|>"));
    tokenizer_free(t);
}

static void expect_load_error(const char *json, const char *want) {
    char path[400];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    tokenizer *t = (tokenizer *)1;
    lp_err err = {{0}};
    assert_int_equal(tokenizer_load(&t, path, &err), -1);
    assert_null(t);
    printf("  refused: %s\n", err.msg);
    if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
}

#define MODEL(extra)                                                                               \
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}" extra "}"

static void test_load_errors(void **s) {
    (void)s;
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
                      "model type 'WordPiece' is not supported");
    expect_load_error("{\"model\": \n{\"type\": \"BPE\",, }}", "bad.json: line 2");
    expect_load_error(MODEL(", \"merges\": [\"a c\"]}"), "merges[0]: 'a' + 'c'");
    expect_load_error(MODEL(", \"merges\": [\"ab\"]}"), "merges[0]: 'ab' is not two tokens");
    expect_load_error(MODEL(", \"merges\": [[\"a\"]]}"), "merges[0]: neither");
    expect_load_error(MODEL(", \"merges\": [], \"unk_token\": \"<unk>\"}"), "unk_token '<unk>'");
    expect_load_error(
        MODEL(", \"merges\": []}, \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}"),
        "pre_tokenizer 'BertPreTokenizer' is not supported");
    expect_load_error(MODEL(", \"merges\": []}, \"normalizer\": {\"type\": \"Precompiled\"}"),
                      "normalizer 'Precompiled' is not supported");
    expect_load_error(MODEL(", \"merges\": []}, \"decoder\": {\"type\": \"WordPiece\"}"),
                      "decoder 'WordPiece' is not supported");
    expect_load_error(
        MODEL(", \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
              "{\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}"),
        "regex '('");
    expect_load_error(MODEL(", \"merges\": []}, \"added_tokens\": [{\"content\": \"x\"}]"),
                      "added_tokens[0]: needs content and id");
    tokenizer *t;
    lp_err err;
    assert_int_equal(tokenizer_load(&t, "/nonexistent/tokenizer.json", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/tokenizer.json"));
}

/* A tiny hand-made BPE: merge ranks decide, not the order pairs appear in the word. */
static void test_merge_ranks(void **s) {
    (void)s;
    char path[400], cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/ranks.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"bc\": 3, "
          "\"ab\": 4, \"abc\": 5, \"aa\": 6}, \"merges\": [\"b c\", [\"a\", \"b\"], \"a bc\", "
          "\"a a\"]}}",
          f);
    fclose(f);
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, path, &err) < 0) fail_msg("%s", err.msg);
    struct {
        const char *in;
        int want[8], n;
    } cases[] = {{"abc", {5}, 1},    {"ab", {4}, 1},     {"abab", {4, 4}, 2},
                 {"aaa", {6, 0}, 2}, {"cab", {2, 4}, 2}, {"x", {0}, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int *ids;
        size_t n;
        assert_int_equal(
            tokenizer_encode(t, cases[k].in, strlen(cases[k].in), 0, 0, &ids, &n, &err), 0);
        assert_int_equal(n, cases[k].n);
        for (int i = 0; i < cases[k].n; i++) assert_int_equal(ids[i], cases[k].want[i]);
        free(ids);
    }
    char *d = tokenizer_decode(t, (int[]){5, 6}, 2, 0); /* no decoder: joined with spaces */
    assert_string_equal(d, "abc aa");
    free(d);
    tokenizer_free(t);
}

typedef struct job_arg {
    const tokenizer *t;
    const char *text;
    size_t len;
    int *ids;
    size_t n;
} job_arg;

static void *encode_job(void *p) {
    job_arg *a = p;
    lp_err err;
    for (int r = 0; r < 3; r++) {
        free(a->ids);
        if (tokenizer_encode(a->t, a->text, a->len, 0, 0, &a->ids, &a->n, &err) < 0) a->ids = NULL;
    }
    return NULL;
}

static void test_threads(void **s) {
    (void)s;
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, GOLD "llama3", &err) < 0) fail_msg("%s", err.msg);
    size_t len;
    const char *text = bpe_demo_corpus(&len);
    job_arg a[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        a[k] = (job_arg){t, text, len, NULL, 0};
        assert_int_equal(pthread_create(&th[k], NULL, encode_job, &a[k]), 0);
    }
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 4; k++) {
        assert_non_null(a[k].ids);
        assert_int_equal(a[k].n, a[0].n);
        assert_memory_equal(a[k].ids, a[0].ids, a[0].n * sizeof(int));
    }
    for (int k = 0; k < 4; k++) free(a[k].ids);
    tokenizer_free(t);
}

typedef int (*unicode_fn)(const char *s, size_t len, sbuf *out);

static int nfc(const char *s, size_t len, sbuf *o) {
    return unicode_normalize(s, len, UNICODE_NFC, o);
}
static int nfd(const char *s, size_t len, sbuf *o) {
    return unicode_normalize(s, len, UNICODE_NFD, o);
}
static int nfkc(const char *s, size_t len, sbuf *o) {
    return unicode_normalize(s, len, UNICODE_NFKC, o);
}
static int nfkd(const char *s, size_t len, sbuf *o) {
    return unicode_normalize(s, len, UNICODE_NFKD, o);
}

/* Each function against its column of unicode_cases.json (Python's unicodedata): every code
 * point with a decomposition or a lowercase mapping alone, Hangul, random starters with marks in
 * random order, the edge cases. */
static void test_unicode_cases(void **s) {
    (void)s;
    json_t *root = json_load_file(GOLD "unicode_cases.json", 0, NULL);
    assert_non_null(root);
    static const unicode_fn fns[] = {
        nfc, nfd, nfkc, nfkd, unicode_lowercase, unicode_strip_accents};
    static const char *names[] = {"NFC", "NFD", "NFKC", "NFKD", "lowercase", "no marks"};
    json_t *cases = json_object_get(root, "cases"), *c;
    int bad_total = 0;
    for (int f = 0; f < 6; f++) {
        size_t k;
        int bad = 0;
        json_array_foreach(cases, k, c) {
            json_t *in = json_array_get(c, 0), *want = json_array_get(c, (size_t)f + 1);
            sbuf out = {0};
            assert_int_equal(fns[f](json_string_value(in), json_string_length(in), &out), 0);
            if (out.n != json_string_length(want) ||
                memcmp(out.p, json_string_value(want), out.n)) {
                if (bad++ < 5) fprintf(stderr, "  %s differs on case %zu\n", names[f], k);
            }
            sbuf_free(&out);
        }
        printf("%-9s %zu strings, %d differ from Python's unicodedata %s (utf8proc: Unicode %s)\n",
               names[f], json_array_size(cases), bad,
               json_string_value(json_object_get(root, "unicode")), unicode_version());
        bad_total += bad;
    }
    assert_int_equal(bad_total, 0);
    json_decref(root);
}

/* A tokenizer.json of the llama2 golden with its normalizer replaced by `normalizer` (JSON). */
static tokenizer *with_normalizer(const char *normalizer) {
    char path[400];
    json_t *root = json_load_file(GOLD "llama2/tokenizer.json", 0, NULL);
    assert_non_null(root);
    json_error_t je;
    json_t *n = json_loads(normalizer, 0, &je);
    if (!n) fail_msg("%s: %s", normalizer, je.text);
    json_object_set_new(root, "normalizer", n);
    snprintf(path, sizeof path, "%s/normalizer.json", dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, path, &err) < 0) fail_msg("%s", err.msg);
    return t;
}

static void expect_normalized(const char *normalizer, const char *in, const char *want) {
    tokenizer *t = with_normalizer(normalizer);
    char *out;
    size_t n;
    lp_err err;
    if (tokenizer_normalize(t, in, strlen(in), &out, &n, &err) < 0) fail_msg("%s", err.msg);
    if (strcmp(out, want))
        fail_msg("%s on \"%s\": got \"%s\", want \"%s\"", normalizer, in, out, want);
    assert_int_equal(n, strlen(want));
    free(out);
    tokenizer_free(t);
}

/* By hand: UAX #15's examples, SpecialCasing's unconditional mappings, and the cases of
 * `tokenizers`' own unit tests (normalizers/strip.rs, unicode.rs). */
static void test_normalizer_examples(void **s) {
    (void)s;
    const char *NFC = "{\"type\":\"NFC\"}", *NFD = "{\"type\":\"NFD\"}",
               *NFKC = "{\"type\":\"NFKC\"}", *NFKD = "{\"type\":\"NFKD\"}",
               *LOWER = "{\"type\":\"Lowercase\"}", *MARKS = "{\"type\":\"StripAccents\"}";
    /* UAX #15, figure 6 and table 5 */
    expect_normalized(NFD, "\xe1\xb8\x8b\xcc\xa3", "d\xcc\xa3\xcc\x87");        /* ḍ̇ */
    expect_normalized(NFC, "d\xcc\x87\xcc\xa3", "\xe1\xb8\x8d\xcc\x87");        /* ḍ̇ */
    expect_normalized(NFC, "\xe2\x84\xab", "\xc3\x85");                         /* Å sign */
    expect_normalized(NFKC, "\xef\xac\x81", "fi");                              /* ﬁ */
    expect_normalized(NFKD, "\xe1\xba\x9b\xcc\xa3", "s\xcc\xa3\xcc\x87");       /* ẛ̣ */
    expect_normalized(NFKC, "\xe1\xba\x9b\xcc\xa3", "\xe1\xb9\xa9");            /* ṩ */
    expect_normalized(NFKC, "x\xc2\xb2 \xe2\x91\xa0 \xe2\x85\xab", "x2 1 XII"); /* ² ① Ⅻ */
    expect_normalized(NFKC, "\xef\xbc\xa6\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c", "Full");
    expect_normalized(NFD, "\xed\x95\x9c", "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab"); /* 한 */
    expect_normalized(NFC, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", "\xed\x95\x9c");
    /* Lowercase: per character, full mappings, no final sigma */
    expect_normalized(LOWER, "\xc4\xb0stanbul", "i\xcc\x87stanbul");                  /* İ */
    expect_normalized(LOWER, "\xce\xa3\xce\x91\xce\xa3", "\xcf\x83\xce\xb1\xcf\x83"); /* ΣΑΣ */
    expect_normalized(LOWER, "\xe1\xba\x9e STRASSE", "\xc3\x9f strasse");             /* ẞ */
    expect_normalized(LOWER, "\xc7\x85 \xe2\x84\xaa", "\xc7\x86 k");  /* ǅ, K sign */
    expect_normalized(LOWER, "\xf0\x90\x90\x80", "\xf0\x90\x90\xa8"); /* 𐐀 */
    /* tokenizers' tests: StripAccents of NFKD text, and the Vietnamese and Thai bugs */
    expect_normalized(MARKS, "Me llamo\xcc\x81", "Me llamo");
    expect_normalized(MARKS, "e\xcc\x84\xcc\x84\xcc\x84o", "eo");
    const char *bert = "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKD\"},"
                       "{\"type\":\"StripAccents\"},{\"type\":\"Lowercase\"}]}";
    expect_normalized(bert, "\xe1\xba\xad\xe2\x80\xa6", "a..."); /* ậ… */
    expect_normalized(bert,
                      "C\xe1\xbb\xa5 th\xe1\xbb\x83, b\xe1\xba\xa1n s\xe1\xba\xbd tham gia "
                      "m\xe1\xbb\x99t nh\xc3\xb3m c\xc3\xa1"
                      "c gi\xc3\xa1m \xc4\x91\xe1\xbb\x91"
                      "c",
                      "cu the, ban se tham gia mot nhom cac giam \xc4\x91oc");
    expect_normalized(bert,
                      "\xe0\xb8\xb3\xe0\xb8\x99\xe0\xb9\x89\xe0\xb8\xb3"
                      "3\xe0\xb8\xa5\xe0\xb8\xb3",
                      "\xe0\xb8\xb2\xe0\xb8\x99\xe0\xb8\xb2"
                      "3\xe0\xb8\xa5\xe0\xb8\xb2");
    /* in a sequence with Strip, Replace and Prepend, SentencePiece-style */
    const char *sp = "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\","
                     "\"strip_left\":false,\"strip_right\":true},{\"type\":\"NFKC\"},"
                     "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" {2,}\"},\"content\":\" \"},"
                     "{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},{\"type\":\"Replace\","
                     "\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]}";
    expect_normalized(sp, " \xef\xac\x81ne   day\xe3\x80\x80 ",
                      "\xe2\x96\x81\xe2\x96\x81\x66ine\xe2\x96\x81\x64\x61y");
    /* tokenizers' tables are Unicode 9.0's: U+32FF SQUARE ERA NAME REIWA (12.1) stays itself
     * in a tokenizer, where utf8proc alone spells it out */
    expect_normalized(NFKC, "\xe3\x8b\xbf \xef\xac\x81", "\xe3\x8b\xbf fi");
    sbuf plain = {0};
    assert_int_equal(unicode_normalize("\xe3\x8b\xbf", 3, UNICODE_NFKC, &plain), 0);
    assert_string_equal(plain.p, "\xe4\xbb\xa4\xe5\x92\x8c"); /* 令和 */
    sbuf_free(&plain);
    assert_true(unicode9_has(0xE9) && unicode9_has(0x1F600) && !unicode9_has(0x32FF));
    /* U+1AC1 (a mark of Unicode 14) is not an accent to tokenizers, U+0301 is */
    expect_normalized(MARKS, "a\xe1\xab\x81\xcc\x81", "a\xe1\xab\x81");
    /* unsupported normalizers are named */
    json_t *root = json_load_file(GOLD "llama2/tokenizer.json", 0, NULL);
    json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "BertNormalizer"));
    char path[400];
    snprintf(path, sizeof path, "%s/bert.json", dir);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    tokenizer *t;
    lp_err err;
    assert_int_equal(tokenizer_load(&t, path, &err), -1);
    assert_non_null(strstr(err.msg, "'BertNormalizer' is not supported"));
}

/* A tokenizer.json with values of the wrong type or out of range anywhere in it is refused
 * with a message or still works, never crashes: 300 mutations of the qwen2 and llama2 files. */
static json_t *pick(json_t *root, uint64_t *x, json_t **parent, const char **key, size_t *idx) {
    json_t *cur = root;
    *parent = NULL;
    for (int depth = 0; depth < 6; depth++) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        size_t n = json_is_object(cur)  ? json_object_size(cur)
                   : json_is_array(cur) ? json_array_size(cur)
                                        : 0;
        if (!n || (depth > 1 && *x % 4 == 0)) break;
        size_t k = (*x >> 8) % (n < 8 ? n : 8);
        *parent = cur;
        if (json_is_object(cur)) {
            void *it = json_object_iter(cur);
            for (size_t q = 0; q < k; q++) it = json_object_iter_next(cur, it);
            *key = json_object_iter_key(it);
            cur = json_object_iter_value(it);
        } else {
            *key = NULL, *idx = k;
            cur = json_array_get(cur, k);
        }
    }
    return cur;
}

static void test_mutated_json(void **s) {
    (void)s;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char path[400], cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/mutated.json", dir);
    int loaded = 0, refused = 0;
    for (int it = 0; it < 300; it++) {
        json_t *root = json_load_file(
            it % 2 ? GOLD "qwen2/tokenizer.json" : GOLD "llama2/tokenizer.json", 0, NULL);
        assert_non_null(root);
        for (int m = 0; m < 3; m++) {
            json_t *parent;
            const char *key = NULL;
            size_t idx = 0;
            pick(root, &x, &parent, &key, &idx);
            if (!parent) continue;
            json_t *repl;
            switch ((x >> 30) % 6) {
            case 0:
                repl = json_null();
                break;
            case 1:
                repl = json_integer(-1);
                break;
            case 2:
                repl = json_integer(1 << 30);
                break;
            case 3:
                repl = json_string("");
                break;
            case 4:
                repl = json_array();
                break;
            default:
                repl = json_object();
                break;
            }
            if (json_is_object(parent))
                json_object_set_new(parent, key, repl);
            else
                json_array_set_new(parent, idx, repl);
        }
        json_dump_file(root, path, 0);
        json_decref(root);
        tokenizer *t;
        lp_err err;
        if (tokenizer_load(&t, path, &err) < 0) {
            assert_true(strlen(err.msg) > 0);
            refused++;
            continue;
        }
        loaded++;
        int *ids;
        size_t n;
        const char *text = "Hello <s> w\xc3\xb6rld 123 \xf0\x9f\x98\x80</s>";
        if (tokenizer_encode(t, text, strlen(text), 1, 1, &ids, &n, &err) == 0) {
            char *d = tokenizer_decode(t, ids, n, it % 2);
            free(d), free(ids);
        }
        tokenizer_free(t);
    }
    printf("mutated tokenizer.json: %d loaded, %d refused with a message, no crash\n", loaded,
           refused);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_sizes),
        cmocka_unit_test(test_demo_deterministic),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_decode_details),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_merge_ranks),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_unicode_cases),
        cmocka_unit_test(test_normalizer_examples),
        cmocka_unit_test(test_mutated_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
