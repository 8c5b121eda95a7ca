/* Unicode NFC (canonical decomposition, canonical ordering, canonical composition, UAX #15),
 * for tokenizer.json files with an NFC normalizer (Qwen2/3, GPT-NeoX, ...). The tables in
 * tokenizer_nfc_data.c are generated from Python's unicodedata by
 * tests/reference/tokenizer_reference.py --nfc-tables. */
#ifndef LORAPS_TOKENIZER_NFC_H
#define LORAPS_TOKENIZER_NFC_H

#include "tokenizer_util.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nfc_decomp {
    uint32_t cp, start, len;
} nfc_decomp;

typedef struct nfc_class {
    uint32_t cp, ccc;
} nfc_class;

typedef struct nfc_pair {
    uint32_t first, second, composite;
} nfc_pair;

extern const char nfc_unicode_version[];
extern const nfc_decomp nfc_decomps[];
extern const uint32_t nfc_decomp_cps[];
extern const nfc_class nfc_classes[];
extern const nfc_pair nfc_pairs[];
extern const size_t nfc_n_decomps, nfc_n_classes, nfc_n_pairs;

/* Appends the NFC form of valid UTF-8 s to out. Returns 0, or -1 when out of memory. */
int nfc_normalize(const char *s, size_t len, sbuf *out);

#endif
