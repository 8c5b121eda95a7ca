/* Small helpers shared by the tokenizer, its trainer and the datasets: UTF-8 checks, GPT-2's
 * byte-level alphabet, growable buffers, and a string -> int hash map. */
#ifndef LORAPS_TOKENIZER_UTIL_H
#define LORAPS_TOKENIZER_UTIL_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

/* Returns the byte offset of the first invalid UTF-8 sequence, or len if the text is valid
 * (overlong forms, surrogates and code points past U+10FFFF are invalid, as in Rust's str). */
size_t utf8_valid_prefix(const char *s, size_t len);
/* Decodes one code point of valid UTF-8 at s (returns its length in bytes). */
int utf8_decode(const unsigned char *s, uint32_t *cp);
int utf8_encode(uint32_t cp, char *out); /* 1..4 bytes */
/* Unicode White_Space (what Rust's char::is_whitespace means). */
int unicode_is_ws(uint32_t cp);

/* GPT-2's bytes_to_unicode: byte b is written as the code point byte_char(b) (UTF-8, 1-2
 * bytes); byte_of_char(cp) is the inverse (-1 when cp is not one of the 256). */
uint32_t byte_char(int b);
int byte_of_char(uint32_t cp);
/* The order GPT-2 gives the 256 byte tokens ids 0..255 ("!" first): byte_order()[id] = byte. */
const unsigned char *byte_order(void);

/* A growable byte buffer. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;
int sbuf_reserve(sbuf *b, size_t extra);
int sbuf_put(sbuf *b, const void *data, size_t len);
int sbuf_putc(sbuf *b, char c);
void sbuf_free(sbuf *b);

/* A growable int array. */
typedef struct ivec {
    int *p;
    size_t n, cap;
} ivec;
int ivec_push(ivec *v, int x);
void ivec_free(ivec *v);

/* string -> int map (open addressing, FNV-1a); keys are copied. */
typedef struct strmap {
    char **keys;
    uint32_t *lens;
    int *vals;
    size_t cap, n;
} strmap;
int strmap_put(strmap *m, const char *key, size_t len, int val);        /* overwrites */
int strmap_get(const strmap *m, const char *key, size_t len, int *val); /* 1 if found */
void strmap_free(strmap *m);
uint64_t str_hash(const char *s, size_t len);

#endif
