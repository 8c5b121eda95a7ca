/* NFC as UAX #15 defines it: full canonical decomposition (Hangul by arithmetic), canonical
 * ordering of combining marks, then canonical composition, using tables generated from
 * Python's unicodedata. ASCII runs are copied as they are (they are always NFC and never
 * combine with what follows... except that a following mark could compose with the last
 * ASCII letter, so the last ASCII character before non-ASCII text goes through the algorithm). */
#include "tokenizer_nfc.h"

#include <stdlib.h>
#include <string.h>

enum {
    S_BASE = 0xAC00,
    L_BASE = 0x1100,
    V_BASE = 0x1161,
    T_BASE = 0x11A7,
    L_COUNT = 19,
    V_COUNT = 21,
    T_COUNT = 28,
    N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

static unsigned ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = nfc_n_classes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (nfc_classes[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nfc_n_classes && nfc_classes[lo].cp == cp ? nfc_classes[lo].ccc : 0;
}

static const nfc_decomp *decomp(uint32_t cp) {
    size_t lo = 0, hi = nfc_n_decomps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (nfc_decomps[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nfc_n_decomps && nfc_decomps[lo].cp == cp ? &nfc_decomps[lo] : NULL;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = nfc_n_pairs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const nfc_pair *p = &nfc_pairs[mid];
        if (p->first < a || (p->first == a && p->second < b))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < nfc_n_pairs && nfc_pairs[lo].first == a && nfc_pairs[lo].second == b)
        return nfc_pairs[lo].composite;
    return 0;
}

typedef struct cpbuf {
    uint32_t *p;
    size_t n, cap;
} cpbuf;

static int cp_push(cpbuf *b, uint32_t cp) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        uint32_t *p = realloc(b->p, cap * sizeof *p);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    b->p[b->n++] = cp;
    return 0;
}

static int decompose(uint32_t cp, cpbuf *b) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE, t = s % T_COUNT;
        if (cp_push(b, L_BASE + s / N_COUNT) < 0 ||
            cp_push(b, V_BASE + (s % N_COUNT) / T_COUNT) < 0)
            return -1;
        return t ? cp_push(b, T_BASE + t) : 0;
    }
    const nfc_decomp *d = cp < 0xC0 ? NULL : decomp(cp);
    if (!d) return cp_push(b, cp);
    for (uint32_t i = 0; i < d->len; i++)
        if (cp_push(b, nfc_decomp_cps[d->start + i]) < 0) return -1;
    return 0;
}

/* Normalizes one stretch of valid UTF-8 that is not pure ASCII. */
static int nfc_span(const char *s, size_t len, cpbuf *b, sbuf *out) {
    b->n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)utf8_decode((const unsigned char *)s + i, &cp);
        if (decompose(cp, b) < 0) return -1;
    }
    uint32_t *c = b->p;
    size_t n = b->n;
    for (size_t i = 1; i < n; i++) { /* canonical ordering: a stable sort of each run of marks */
        unsigned k = ccc(c[i]);
        if (!k) continue;
        for (size_t j = i; j > 0 && ccc(c[j - 1]) > k; j--) {
            uint32_t t = c[j - 1];
            c[j - 1] = c[j], c[j] = t;
        }
    }
    if (n) { /* canonical composition (UAX #15's reference algorithm) */
        size_t starter = 0, k = 1;
        unsigned last = ccc(c[0]) ? 256 : 0;
        for (size_t i = 1; i < n; i++) {
            unsigned cl = ccc(c[i]);
            uint32_t comp = compose(c[starter], c[i]);
            if (comp && (last < cl || last == 0)) {
                c[starter] = comp;
                continue;
            }
            if (!cl) starter = k;
            last = cl;
            c[k++] = c[i];
        }
        n = k;
    }
    for (size_t i = 0; i < n; i++) {
        char u[4];
        if (sbuf_put(out, u, (size_t)utf8_encode(c[i], u)) < 0) return -1;
    }
    return 0;
}

int nfc_normalize(const char *s, size_t len, sbuf *out) {
    cpbuf b = {0};
    int rc = sbuf_put(out, "", 0);
    size_t i = 0;
    while (i < len && !rc) {
        /* an ASCII run, less its last character when non-ASCII text follows */
        size_t j = i;
        while (j < len && (unsigned char)s[j] < 0x80) j++;
        size_t copy_end = j < len && j > i ? j - 1 : j;
        rc = sbuf_put(out, s + i, copy_end - i);
        if (rc || j >= len) break;
        /* the non-ASCII stretch, up to the next ASCII character that is not followed by a mark:
         * compositions never reach across a starter that has no mark after it */
        size_t k = j;
        while (k < len) {
            if ((unsigned char)s[k] < 0x80 && (k + 1 >= len || (unsigned char)s[k + 1] < 0x80))
                break;
            k++;
        }
        rc = nfc_span(s + copy_end, k - copy_end, &b, out);
        i = k;
    }
    free(b.p);
    return rc;
}
