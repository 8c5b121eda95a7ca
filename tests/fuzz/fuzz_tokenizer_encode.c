/* Text through the fixed golden tokenizers (the data a worker reads is untrusted too): the first
 * byte picks the tokenizer and the mode, the rest is the text. For byte-level BPE without a
 * normalizer (gpt2), decode(encode(text)) must give the text back exactly. */
#include "fuzz_util.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"gpt2",  "llama3", "llama2", "metaspace",
                                    "qwen2", "digits", "demo512"};
#define N_TOK (int)(sizeof names / sizeof *names)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tokenizer *toks[N_TOK];
    if (!toks[0]) {
        for (int i = 0; i < N_TOK; i++) {
            char rel[256], path[1024];
            lp_err err;
            snprintf(rel, sizeof rel, "tests/reference/golden/tokenizers/%s", names[i]);
            fuzz_source_path(path, sizeof path, rel);
            if (tokenizer_load(&toks[i], path, &err) < 0) {
                fprintf(stderr, "fuzz: %s\n", err.msg);
                abort();
            }
        }
    }
    if (size < 1) return 0;
    int which = data[0] % N_TOK, allow_special = (data[0] >> 4) & 1, add_special = data[0] >> 5 & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const tokenizer *t = toks[which];
    int vocab = tokenizer_vocab_size(t);
    int *ids = NULL;
    size_t n = 0;
    lp_err err;
    if (tokenizer_encode(t, text, len, allow_special, add_special, &ids, &n, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "an encode failure without a message");
        free(ids);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "%s: id %d of %d", names[which], ids[i], vocab);
    char *back = tokenizer_decode(t, ids, n, 0);
    if (which == 0 && !allow_special && !add_special && !memchr(text, 0, len)) {
        FUZZ_CHECK(back && strlen(back) == len && !memcmp(back, text, len),
                   "gpt2: decode(encode(text)) is not the text (%zu bytes in, %zu out)", len,
                   back ? strlen(back) : 0);
    }
    free(back);
    free(tokenizer_decode(t, ids, n, 1));
    free(ids);
    return 0;
}
