/* tokenizer_load on a tokenizer.json written from the input (and, after a NUL byte, a
 * tokenizer_config.json beside it), then what training and generation do with a tokenizer:
 * encode fixed texts in every mode, decode the ids (and ids it never made), look tokens up. */
#include "fuzz_util.h"
#include "tokenizer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *const texts[] = {
    "Hello world",
    "  two  spaces, a\ttab and a\r\nnewline\n\n",
    "<|endoftext|>special <s> </s> <|im_start|>user\n<|user|> [UNK]",
    "don't I'LL we've 12345 3.14159 \xd9\xa3\xd9\xa4", /* Arabic-Indic digits */
    "caf\xc3\xa9 cafe\xcc\x81 \xe4\xb8\xad\xe6\x96\x87 "
    "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", /* é, e+◌́, CJK, Korean */
    "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9 "
    "\xe2\x80\x83", /* emoji, ZWJ, em space */
    "int main(void) { return x->y[0] >= 1 ? 0 : -1; } // ...!!!???",
    "",
    "\xff\xfe invalid UTF-8 \xc3",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char dir[1024], json_path[1024], cfg_path[1024];
    if (!dir[0]) {
        fuzz_mkdir("tok");
        fuzz_path(dir, sizeof dir, "", "tok");
        fuzz_path(json_path, sizeof json_path, "tok", "tokenizer.json");
        fuzz_path(cfg_path, sizeof cfg_path, "tok", "tokenizer_config.json");
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    fuzz_write(json_path, data, json_len);
    if (nul)
        fuzz_write(cfg_path, nul + 1, size - json_len - 1);
    else
        unlink(cfg_path);

    tokenizer *t;
    lp_err err;
    if (tokenizer_load(&t, dir, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "a failure without a message");
        return 0;
    }
    int vocab = tokenizer_vocab_size(t);
    FUZZ_CHECK(vocab >= 0, "vocab size %d", vocab);
    int bos = tokenizer_bos_id(t), eos = tokenizer_eos_id(t);
    FUZZ_CHECK(bos >= -1 && bos < vocab && eos >= -1 && eos < vocab, "bos %d, eos %d of %d", bos,
               eos, vocab);
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        for (int mode = 0; mode < 4; mode++) {
            int *ids = NULL;
            size_t n = 0;
            if (tokenizer_encode(t, texts[k], strlen(texts[k]), mode & 1, mode >> 1, &ids, &n,
                                 &err) < 0) {
                FUZZ_CHECK(err.msg[0], "an encode failure without a message");
                free(ids);
                continue;
            }
            for (size_t i = 0; i < n; i++)
                FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "text %zu: id %d of %d", k, ids[i],
                           vocab);
            for (int skip = 0; skip < 2; skip++) free(tokenizer_decode(t, ids, n, skip));
            free(ids);
        }
        size_t pieces;
        tokenizer_pretokenize_count(t, texts[k], strlen(texts[k]), &pieces, &err);
    }
    /* Ids a model may produce that the tokenizer never made. */
    int odd[] = {-1, 0, 1, vocab - 1, vocab, vocab + 1, INT_MAX, INT_MIN, bos, eos};
    for (int skip = 0; skip < 2; skip++)
        free(tokenizer_decode(t, odd, sizeof odd / sizeof *odd, skip));
    for (int id = 0; id < vocab && id < 512; id++) {
        const char *s = tokenizer_id_to_token(t, id);
        tokenizer_is_special(t, id);
        if (s) {
            int back = tokenizer_token_id(t, s);
            FUZZ_CHECK(back >= -1 && back < vocab, "token %d looks up as %d", id, back);
        }
    }
    tokenizer_free(t);
    return 0;
}
