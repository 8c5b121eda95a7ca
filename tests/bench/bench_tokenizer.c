/* Tokenizer speed: MB/s of encoding an 8 MB generated text (prose-like words from the demo
 * corpus, made-up words, numbers, code-ish punctuation) in paragraph-sized documents, as the
 * datasets do, next to a plain byte copy and to the PCRE2 pre-split alone.
 *
 *   bench_tokenizer [MB] [golden dir] [only NAME]
 *
 * Tokenizers: the demo byte-level BPE at GPT-2's size (50257), and the golden Llama 3-style
 * (Split regex) and Llama 2-style (no pre-tokenizer: every document is one BPE word) files; and
 * behind a normalizer, on the same text and on a multilingual one (a third of its words
 * accented (precomposed or decomposed), Greek, Cyrillic, CJK, Hangul, Arabic, Devanagari or
 * emoji): Qwen2-style (NFC) and the nfkc and accents (NFKD + StripAccents + Lowercase) files.
 * `only NAME` runs one of them (tests/bench/bench_tokenizer_vs.sh times two builds with it). */
#include "bpe_train.h"
#include "rng.h"
#include "tokenizer.h"
#include "tokenizer_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time, not wall time: encoding is single-threaded, and on a shared machine wall time
 * measures the neighbours too. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Words of the demo corpus drawn with a skewed distribution, plus new words and numbers. */
static char *make_text(size_t want, size_t *len) {
    size_t clen;
    const char *corpus = bpe_demo_corpus(&clen);
    const char **words = malloc(clen * sizeof *words);
    int *wlen = malloc(clen * sizeof *wlen), nw = 0;
    for (size_t i = 0; i < clen;) {
        while (i < clen && (corpus[i] == ' ' || corpus[i] == '\n')) i++;
        size_t j = i;
        while (j < clen && corpus[j] != ' ' && corpus[j] != '\n') j++;
        if (j > i) words[nw] = corpus + i, wlen[nw++] = (int)(j - i);
        i = j;
    }
    sbuf b = {0};
    rng r;
    rng_seed(&r, 12345);
    static const char *syl[] = {"ka", "lo", "mi",  "ne",   "ru", "sta", "tor", "vel",
                                "qu", "ex", "ing", "tion", "ar", "on",  "is",  "ed"};
    int col = 0, lines = 0;
    while (b.n < want) {
        uint32_t u = rng_below(&r, 100);
        if (u < 80) { /* a corpus word, skewed to the first ones */
            uint32_t k = rng_below(&r, (uint32_t)nw);
            k = rng_below(&r, k + 1);
            sbuf_put(&b, words[k], (size_t)wlen[k]);
        } else if (u < 92) { /* a made-up word */
            int n = 2 + (int)rng_below(&r, 3);
            for (int s = 0; s < n; s++) {
                const char *y = syl[rng_below(&r, 16)];
                sbuf_put(&b, y, strlen(y));
            }
        } else {
            char num[32];
            snprintf(num, sizeof num, "%u", rng_below(&r, 1000000));
            sbuf_put(&b, num, strlen(num));
        }
        col += 8;
        if (col > 90) {
            sbuf_putc(&b, '\n');
            col = 0;
            if (++lines % 6 == 0) sbuf_putc(&b, '\n');
        } else {
            sbuf_putc(&b, ' ');
        }
    }
    free(words), free(wlen);
    *len = b.n;
    return b.p;
}

/* The text above with about a third of its words replaced by non-ASCII ones. */
static char *make_multilingual(const char *ascii, size_t alen, size_t *len) {
    static const char *words[] = {
        "caf\xc3\xa9",
        "cafe\xcc\x81",
        "na\xc3\xafve",
        "nai\xcc\x88ve",
        "\xc3\xa9t\xc3\xa9",
        "Z\xc3\xbcrich",
        "\xe1\xba\xa1\xcc\x8a",
        "\xce\xb1\xce\xb2\xce\xb3",
        "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
        "\xe4\xb8\xad\xe6\x96\x87",
        "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
        "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab",
        "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9",
        "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80",
        "\xf0\x9f\x98\x80",
        "\xef\xac\x81le",
        "x\xc2\xb2"};
    sbuf b = {0};
    rng r;
    rng_seed(&r, 777);
    for (size_t i = 0; i < alen;) {
        size_t j = i;
        while (j < alen && ascii[j] != ' ' && ascii[j] != '\n') j++;
        if (j > i && rng_below(&r, 3) == 0) {
            const char *w = words[rng_below(&r, sizeof words / sizeof words[0])];
            sbuf_put(&b, w, strlen(w));
        } else {
            sbuf_put(&b, ascii + i, j - i);
        }
        if (j < alen) sbuf_putc(&b, ascii[j]);
        i = j + 1;
    }
    *len = b.n;
    return b.p;
}

/* Encodes paragraph by paragraph; returns the tokens made. */
static size_t encode_all(const tokenizer *t, const char *text, size_t len, double *secs) {
    double t0 = now();
    size_t total = 0;
    lp_err err;
    for (size_t i = 0; i < len;) {
        const char *end = strstr(text + i, "\n\n");
        size_t j = end ? (size_t)(end - text) + 2 : len;
        int *ids;
        size_t n;
        if (tokenizer_encode(t, text + i, j - i, 0, 0, &ids, &n, &err) < 0) {
            fprintf(stderr, "bench_tokenizer: error: %s\n", err.msg);
            exit(1);
        }
        total += n;
        free(ids);
        i = j;
    }
    *secs = now() - t0;
    return total;
}

static void bench(const char *name, const char *path, const char *text, size_t len,
                  double copy_mbs) {
    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, path, &err) < 0) {
        fprintf(stderr, "bench_tokenizer: %s: %s\n", name, err.msg);
        return;
    }
    double mb = (double)len / 1e6, split_s = 0, cold_s, warm_s;
    size_t pieces = 0;
    {
        double t0 = now();
        for (size_t i = 0; i < len;) {
            const char *end = strstr(text + i, "\n\n");
            size_t j = end ? (size_t)(end - text) + 2 : len, n;
            if (tokenizer_pretokenize_count(t, text + i, j - i, &n, &err) < 0) exit(1);
            pieces += n;
            i = j;
        }
        split_s = now() - t0;
    }
    size_t n = encode_all(t, text, len, &cold_s);
    encode_all(t, text, len, &warm_s);
    printf("%-16s %6.1f MB/s encode (%5.1f first pass) | pre-split alone %6.1f MB/s -> encode "
           "takes %.2fx the pre-split | byte copy %.0fx faster | %.2f bytes/token, %zu pieces\n",
           name, mb / warm_s, mb / cold_s, mb / split_s, warm_s / split_s, copy_mbs / (mb / warm_s),
           (double)len / (double)n, pieces);
    tokenizer_free(t);
}

int main(int argc, char **argv) {
    size_t want = (size_t)((argc > 1 ? atof(argv[1]) : 8.0) * 1e6);
    const char *only = argc > 4 && !strcmp(argv[3], "only") ? argv[4] : NULL;
    char gold[1024];
    if (argc > 2) {
        snprintf(gold, sizeof gold, "%s", argv[2]);
    } else { /* beside this source file */
        snprintf(gold, sizeof gold, "%s", __FILE__);
        char *slash = strrchr(gold, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(gold, sizeof gold, ".");
        strncat(gold, "/../reference/golden/tokenizers", sizeof gold - strlen(gold) - 1);
    }
    size_t len;
    char *text = make_text(want, &len);
    char *copy = malloc(len);
    double t0 = now();
    int reps = 20;
    for (int r = 0; r < reps; r++) {
        memcpy(copy, text, len);
        __asm__ volatile("" : : "r"(copy) : "memory");
    }
    double copy_mbs = (double)len * reps / 1e6 / (now() - t0);
    size_t mlen;
    char *multi = make_multilingual(text, len, &mlen);
    printf("text: %.1f MB generated (multilingual: %.1f MB); byte copy %.0f MB/s\n",
           (double)len / 1e6, (double)mlen / 1e6, copy_mbs);
    lp_err err;
    if (!only) {
        const char *demo = "/tmp/loraps_bench_tokenizer_demo";
        t0 = now();
        if (bpe_write_demo_tokenizer(demo, 50257, &err) < 0) {
            fprintf(stderr, "bench_tokenizer: error: %s\n", err.msg);
            return 1;
        }
        printf("demo tokenizer, vocab 50257: trained and written in %.2f s\n", now() - t0);
        bench("demo50257", demo, text, len, copy_mbs);
    }
    static const struct {
        const char *name, *file;
        int multilingual;
    } runs[] = {{"llama3", "llama3", 0},   {"llama2", "llama2", 0},
                {"qwen2", "qwen2", 0},     {"qwen2-multi", "qwen2", 1},
                {"nfkc-multi", "nfkc", 1}, {"accents-multi", "accents", 1}};
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        if (only && strcmp(only, runs[k].name)) continue;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s/tokenizer.json", gold, runs[k].file);
        if (runs[k].multilingual)
            bench(runs[k].name, p, multi, mlen, copy_mbs);
        else
            bench(runs[k].name, p, text, len, copy_mbs);
    }
    free(text), free(copy), free(multi);
    return 0;
}
