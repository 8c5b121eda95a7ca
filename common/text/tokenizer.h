/* Hugging Face tokenizer.json: byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM) and
 * SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral). Ids are exactly
 * what the `tokenizers` library produces for the same file. */
#ifndef LORAPS_TOKENIZER_H
#define LORAPS_TOKENIZER_H

#include "error.h"

#include <stddef.h>

typedef struct tokenizer tokenizer;

/* path: a tokenizer.json, or a model folder holding one. tokenizer_config.json beside it, if
 * present, names the bos and eos tokens. Encoding may be called from several threads. */
int tokenizer_load(tokenizer **out, const char *path, lp_err *err);
void tokenizer_free(tokenizer *t);

/* Encodes text (len bytes, not necessarily NUL-terminated, valid UTF-8: anything else is refused
 * with the byte offset) into a malloc'd array of ids. Special tokens in the text are recognised
 * only if allow_special (otherwise encoded as ordinary text, as `encode_special_tokens = True`
 * does in `tokenizers`); added tokens that are not special are always recognised, as there.
 * Post-processing (e.g. a BOS the tokenizer's template adds) is applied if add_special. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int allow_special,
                     int add_special, int **ids, size_t *n_ids, lp_err *err);
/* What the tokenizer's normalizer makes of text (valid UTF-8), as `tokenizers`'
 * normalizer.normalize_str gives it: a malloc'd NUL-terminated string, its length in *out_len. */
int tokenizer_normalize(const tokenizer *t, const char *text, size_t len, char **out,
                        size_t *out_len, lp_err *err);
/* Decodes ids into a malloc'd NUL-terminated string; skip_special drops special tokens. */
char *tokenizer_decode(const tokenizer *t, const int *ids, size_t n_ids, int skip_special);

int tokenizer_vocab_size(const tokenizer *t);                  /* including added tokens */
int tokenizer_token_id(const tokenizer *t, const char *token); /* -1 if absent */
int tokenizer_eos_id(const tokenizer *t);                      /* -1 if the tokenizer names none */
int tokenizer_bos_id(const tokenizer *t);                      /* -1 if none */
/* The token's string (the model's vocab entry or the added token's content); NULL if unused. */
const char *tokenizer_id_to_token(const tokenizer *t, int id);
int tokenizer_is_special(const tokenizer *t, int id);
/* How many pieces the pre-tokenizer alone makes of text (for benchmarks). */
int tokenizer_pretokenize_count(const tokenizer *t, const char *text, size_t len, size_t *n_pieces,
                                lp_err *err);

#endif
