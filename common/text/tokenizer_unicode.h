/* The Unicode work of tokenizer.json's normalizers, on valid UTF-8, through utf8proc (Unicode
 * 15): the four normalization forms of UAX #15 (NFC for Qwen2-style files, NFKC, NFD, NFKD),
 * Lowercase as `tokenizers` does it (Rust's char::to_lowercase on each character) and
 * StripAccents (every character of General_Category Mark removed). Each appends its result to
 * out and returns 0, or -1 when out of memory. */
#ifndef LORAPS_TOKENIZER_UNICODE_H
#define LORAPS_TOKENIZER_UNICODE_H

#include "tokenizer_util.h"

#include <stddef.h>
#include <stdint.h>

typedef enum unicode_form { UNICODE_NFC, UNICODE_NFD, UNICODE_NFKC, UNICODE_NFKD } unicode_form;

int unicode_normalize(const char *s, size_t len, unicode_form form, sbuf *out);
int unicode_lowercase(const char *s, size_t len, sbuf *out);
int unicode_strip_accents(const char *s, size_t len, sbuf *out);
/* The Unicode version of utf8proc's tables, e.g. "15.0.0". */
const char *unicode_version(void);

/* What `tokenizers` does: its normalizers (the unicode-normalization-alignments crate) have
 * Unicode 9.0's tables, so to them a later code point has no decomposition, combining class 0
 * and no mark category. These are the functions above on the code points Unicode 9.0 had, with
 * every later one left in place as such a character. (Lowercase is Rust's own, current.) */
int unicode_normalize_as_tokenizers(const char *s, size_t len, unicode_form form, sbuf *out);
int unicode_strip_accents_as_tokenizers(const char *s, size_t len, sbuf *out);
int unicode9_has(uint32_t cp);

/* tokenizer_unicode9.c: the code points Unicode 9.0 had, as sorted [first, last] ranges. */
extern const uint32_t unicode9_ranges[][2];
extern const size_t unicode9_n_ranges;

#endif
