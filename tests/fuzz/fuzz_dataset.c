/* dataset_open on a data file written from the input, with the demo512 tokenizer (or none, for
 * .bin). The first two bytes pick the format and the options; the rest is the file. Every
 * sequence an accepted dataset serves must hold ids the model can embed and targets that are
 * ids or -1.
 *   byte 0: bits 0-1 format (.txt, .jsonl, .bin, .bin without a tokenizer), bit 2 pad (not
 *           pack), bit 3 one document per line, bit 4 skip bad records, bits 5-6 long
 *           documents (split, truncate, reject), bit 7 special tokens recognised
 *   byte 1: bits 0-4 seq_len - 1, bits 5-6 validation fraction (0, 0.1, 0.5, 0.9), bit 7 seed */
#include "dataset.h"
#include "fuzz_util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define BIN_VOCAB 600

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tokenizer *tok;
    static char paths[3][1024];
    static const char *const ext[3] = {"data.txt", "data.jsonl", "data.bin"};
    if (!tok) {
        char path[1024];
        lp_err err;
        fuzz_source_path(path, sizeof path, "tests/reference/golden/tokenizers/demo512");
        if (tokenizer_load(&tok, path, &err) < 0) {
            fprintf(stderr, "fuzz: %s\n", err.msg);
            abort();
        }
        for (int i = 0; i < 3; i++) fuzz_path(paths[i], sizeof paths[i], "", ext[i]);
    }
    if (size < 2) return 0;
    int fmt = data[0] & 3;
    const char *path = paths[fmt < 2 ? fmt : 2];
    const tokenizer *t = fmt == 3 ? NULL : tok;
    dataset_options o;
    dataset_options_default(&o);
    o.pack = !(data[0] & 4);
    o.txt_by_line = !!(data[0] & 8);
    o.skip_bad = !!(data[0] & 16);
    o.on_long = ((data[0] >> 5) & 3) % 3;
    o.allow_special = !!(data[0] & 128);
    o.seq_len = 1 + (data[1] & 31);
    static const double val[4] = {0, 0.1, 0.5, 0.9};
    o.val_fraction = val[(data[1] >> 5) & 3];
    o.seed = data[1] >> 7;
    o.vocab_size = t ? 0 : BIN_VOCAB;
    fuzz_write(path, data + 2, size - 2);

    dataset *d;
    lp_err err = {{0}};
    if (dataset_open(&d, path, t, &o, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "a failure without a message");
        return 0;
    }
    int vocab = t ? tokenizer_vocab_size(t) : BIN_VOCAB;
    int T = dataset_seq_len(d);
    FUZZ_CHECK(T == o.seq_len, "seq_len %d, asked for %d", T, o.seq_len);
    (void)dataset_summary(d);
    int inputs[32 * 4], targets[32 * 4];
    for (int split = 0; split < 2; split++) {
        uint64_t n = dataset_n_sequences(d, split);
        /* dataset_open refuses data shorter than one training sequence (it was a division by
         * zero later: crashes-found/fuzz_dataset/one-token-bin-no-sequences) */
        FUZZ_CHECK(split != DS_TRAIN || n > 0, "an open dataset without training sequences");
        if (!n) continue;
        /* Two epochs' worth at most, a few sequences each way. */
        uint64_t ask[] = {0, 1, n - 1, n, n + 1, 2 * n - 1};
        for (size_t k = 0; k < sizeof ask / sizeof *ask; k++) {
            dataset_sequence(d, split, ask[k], inputs, targets);
            for (int i = 0; i < T; i++) {
                FUZZ_CHECK(inputs[i] >= 0 && inputs[i] < vocab, "input %d of %d", inputs[i], vocab);
                FUZZ_CHECK(targets[i] >= -1 && targets[i] < vocab, "target %d of %d", targets[i],
                           vocab);
            }
        }
        dataset_batch(d, split, n / 2, 4, inputs, targets);
        for (int i = 0; i < 4 * T; i++)
            FUZZ_CHECK(inputs[i] >= 0 && inputs[i] < vocab && targets[i] >= -1 &&
                           targets[i] < vocab,
                       "batch: input %d, target %d of %d", inputs[i], targets[i], vocab);
    }
    dataset_pos p = {0, 0};
    dataset_next_batch(d, &p, 1, 2, 2, inputs, targets);
    json_t *j = dataset_pos_to_json(d, &p);
    if (j) {
        dataset_pos q;
        FUZZ_CHECK(dataset_pos_from_json(d, j, &q, &err) == 0 && q.epoch == p.epoch &&
                       q.index == p.index,
                   "position does not round-trip: %s", err.msg);
        json_decref(j);
    }
    dataset_free(d);
    return 0;
}
