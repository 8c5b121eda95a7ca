/* Normalization forms, lowercasing and mark stripping with utf8proc. ASCII needs none of it: an
 * ASCII character is in every normalization form, never composes with the character before it,
 * and lowercases to ASCII, so ASCII runs are copied and only the stretches holding other
 * characters go through utf8proc (with the ASCII character before them, which a following mark
 * may compose with). */
#include "tokenizer_unicode.h"

#include <stdint.h>
#include <stdlib.h>
#include <utf8proc.h>

typedef struct cpbuf {
    utf8proc_int32_t *p;
    size_t cap;
} cpbuf;

static utf8proc_option_t form_options(unicode_form form) {
    switch (form) {
    case UNICODE_NFC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case UNICODE_NFD:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case UNICODE_NFKC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    default:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
}

static int put_codepoints(const utf8proc_int32_t *cp, size_t n, sbuf *out) {
    if (sbuf_reserve(out, 4 * n) < 0) return -1;
    for (size_t i = 0; i < n; i++) out->n += (size_t)utf8_encode((uint32_t)cp[i], out->p + out->n);
    out->p[out->n] = 0;
    return 0;
}

/* One stretch: decomposed (and canonically ordered) into b, composed in place if asked. */
static int normalize_span(const char *s, size_t len, utf8proc_option_t opts, cpbuf *b, sbuf *out) {
    utf8proc_ssize_t n;
    for (;;) {
        n = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, b->p,
                               (utf8proc_ssize_t)b->cap, opts);
        if (n < 0) return -1; /* invalid UTF-8: callers pass valid text */
        if ((size_t)n <= b->cap) break;
        utf8proc_int32_t *grown = realloc(b->p, (size_t)n * sizeof *grown);
        if (!grown) return -1;
        b->p = grown, b->cap = (size_t)n;
    }
    if (opts & UTF8PROC_COMPOSE) n = utf8proc_normalize_utf32(b->p, n, opts);
    return n < 0 ? -1 : put_codepoints(b->p, (size_t)n, out);
}

int unicode_normalize(const char *s, size_t len, unicode_form form, sbuf *out) {
    utf8proc_option_t opts = form_options(form);
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
        /* up to the next ASCII character not followed by a non-ASCII one: no composition or
         * reordering reaches across it */
        size_t k = j;
        while (k < len &&
               !((unsigned char)s[k] < 0x80 && (k + 1 >= len || (unsigned char)s[k + 1] < 0x80)))
            k++;
        rc = normalize_span(s + copy_end, k - copy_end, opts, &b, out);
        i = k;
    }
    free(b.p);
    return rc;
}

/* Rust's char::to_lowercase: the simple mapping, except for the one unconditional multi-character
 * lowercase mapping of SpecialCasing.txt, U+0130 -> U+0069 U+0307. */
int unicode_lowercase(const char *s, size_t len, sbuf *out) {
    if (sbuf_reserve(out, len + 1) < 0) return -1;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            if (sbuf_putc(out, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c)) < 0) return -1;
            i++;
            continue;
        }
        uint32_t cp;
        i += (size_t)utf8_decode((const unsigned char *)s + i, &cp);
        utf8proc_int32_t lower[2] = {utf8proc_tolower((utf8proc_int32_t)cp), 0};
        size_t n = 1;
        if (cp == 0x130) lower[0] = 0x69, lower[1] = 0x307, n = 2;
        if (put_codepoints(lower, n, out) < 0) return -1;
    }
    return sbuf_put(out, "", 0);
}

static int is_mark(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

/* s without the non-ASCII characters drop() names. */
static int drop_chars(const char *s, size_t len, int (*drop)(uint32_t cp), sbuf *out) {
    if (sbuf_reserve(out, len + 1) < 0) return -1;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = (unsigned char)s[i] < 0x80 ? 1 : utf8_decode((const unsigned char *)s + i, &cp);
        if ((l == 1 || !drop(cp)) && sbuf_put(out, s + i, (size_t)l) < 0) return -1;
        i += (size_t)l;
    }
    return sbuf_put(out, "", 0);
}

int unicode_strip_accents(const char *s, size_t len, sbuf *out) {
    return drop_chars(s, len, is_mark, out);
}

const char *unicode_version(void) {
    return utf8proc_unicode_version();
}

int unicode9_has(uint32_t cp) {
    size_t lo = 0, hi = unicode9_n_ranges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (unicode9_ranges[mid][1] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < unicode9_n_ranges && unicode9_ranges[lo][0] <= cp;
}

/* The length of the character at s, and whether Unicode 9.0 had it. */
static size_t char_len(const char *s, int *in_9) {
    *in_9 = 1;
    if ((unsigned char)s[0] < 0x80) return 1;
    uint32_t cp;
    size_t l = (size_t)utf8_decode((const unsigned char *)s, &cp);
    *in_9 = unicode9_has(cp);
    return l;
}

/* A later code point is a starter that composes with nothing and has no decomposition, so
 * nothing reorders or composes across it: the text between such code points is normalized
 * apart, and they are copied. */
int unicode_normalize_as_tokenizers(const char *s, size_t len, unicode_form form, sbuf *out) {
    int rc = sbuf_put(out, "", 0);
    for (size_t i = 0; i < len && !rc;) {
        size_t j = i, l = 0;
        int in_9 = 1;
        for (;;) {
            while (j < len && (unsigned char)s[j] < 0x80) j++; /* ASCII: Unicode 1.1 */
            if (j >= len || (l = char_len(s + j, &in_9), !in_9)) break;
            j += l;
        }
        if (j > i) rc = unicode_normalize(s + i, j - i, form, out);
        if (!rc && j < len) rc = sbuf_put(out, s + j, l);
        i = j < len ? j + l : j;
    }
    return rc;
}

/* General_Category changes since Unicode 9.0 that touch the marks: U+111C9 SHARADA SANDHI MARK
 * became one (Po to Mn), U+1CF2 and U+1CF3 VEDIC SIGN (ROTATED) ARDHAVISARGA stopped being
 * ones (Mc to Lo). Found by comparing every code point with tokenizers (normalizers.json). */
static int was_mark_in_9(uint32_t cp) {
    if (cp == 0x1CF2 || cp == 0x1CF3) return 1;
    return is_mark(cp) && cp != 0x111C9 && unicode9_has(cp);
}

int unicode_strip_accents_as_tokenizers(const char *s, size_t len, sbuf *out) {
    return drop_chars(s, len, was_mark_in_9, out);
}
