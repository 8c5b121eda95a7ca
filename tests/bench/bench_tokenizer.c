/* Tokenizer speed: MB/s of encoding an 8 MB generated text (prose-like words from the demo
 * corpus, made-up words, numbers, code-ish punctuation) in paragraph-sized documents, as the
 * datasets do, next to a plain byte copy and to the PCRE2 pre-split alone.
 *
 *   bench_tokenizer [MB] [golden dir]
 *
 * Tokenizers: the demo byte-level BPE at GPT-2's size (50257), and the golden Llama 3-style
 * (Split regex) and Llama 2-style (no pre-tokenizer: every document is one BPE word) files. */
#include "bpe_train.h"
#include "rng.h"
#include "tokenizer.h"
#include "tokenizer_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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
    printf("%-10s %6.1f MB/s encode (%5.1f first pass) | pre-split alone %6.1f MB/s -> encode "
           "takes %.2fx the pre-split | byte copy %.0fx faster | %.2f bytes/token, %zu pieces\n",
           name, mb / warm_s, mb / cold_s, mb / split_s, warm_s / split_s, copy_mbs / (mb / warm_s),
           (double)len / (double)n, pieces);
    tokenizer_free(t);
}

int main(int argc, char **argv) {
    size_t want = (size_t)((argc > 1 ? atof(argv[1]) : 8.0) * 1e6);
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
    printf("text: %.1f MB generated; byte copy %.0f MB/s\n", (double)len / 1e6, copy_mbs);
    lp_err err;
    const char *demo = "/tmp/loraps_bench_tokenizer_demo";
    t0 = now();
    if (bpe_write_demo_tokenizer(demo, 50257, &err) < 0) {
        fprintf(stderr, "bench_tokenizer: error: %s\n", err.msg);
        return 1;
    }
    printf("demo tokenizer, vocab 50257: trained and written in %.2f s\n", now() - t0);
    bench("demo50257", demo, text, len, copy_mbs);
    char p[1200];
    snprintf(p, sizeof p, "%s/llama3/tokenizer.json", gold);
    bench("llama3", p, text, len, copy_mbs);
    snprintf(p, sizeof p, "%s/llama2/tokenizer.json", gold);
    bench("llama2", p, text, len, copy_mbs);
    free(text), free(copy);
    return 0;
}
