/* Byte-level BPE training (GPT-2 style) and the demo tokenizer that `loraps init-model` writes
 * beside a model, so the demo has real text in and out without any download. */
#ifndef LORAPS_BPE_TRAIN_H
#define LORAPS_BPE_TRAIN_H

#include "error.h"

#include <stddef.h>

/* Writes dir/tokenizer.json (and dir/tokenizer_config.json naming bos/eos): a byte-level BPE
 * with exactly vocab_size ids: the 256 byte tokens (GPT-2's order), vocab_size - 257 merges and
 * <|endoftext|> (special) as the last id. The merges are learned on the embedded corpus; past
 * what the corpus offers (4,234 merges from its 21 KB), the rest join two learned word pieces into
 * a longer one (valid BPE merges, applied after every learned one). Deterministic; vocab_size >=
 * 257. The `tokenizers` library loads the file and encodes exactly as tokenizer.c does. */
int bpe_write_demo_tokenizer(const char *dir, int vocab_size, lp_err *err);

/* The same from any UTF-8 text: writes a tokenizer.json at path. */
int bpe_write_tokenizer_json(const char *path, const char *text, size_t len, int vocab_size,
                             lp_err *err);

/* The embedded training text. */
const char *bpe_demo_corpus(size_t *len);

#endif
