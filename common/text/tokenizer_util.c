#include "tokenizer_util.h"

#include <stdlib.h>
#include <string.h>

size_t utf8_valid_prefix(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 2;
        else if (c == 0xE0)
            n = 3, lo = 0xA0;
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            n = 3;
        else if (c == 0xED)
            n = 3, hi = 0x9F;
        else if (c == 0xF0)
            n = 4, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            n = 4;
        else if (c == 0xF4)
            n = 4, hi = 0x8F;
        else
            return i;
        if (i + n > len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += n;
    }
    return len;
}

int utf8_decode(const unsigned char *s, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) return *cp = c, 1;
    if (c < 0xE0) return *cp = ((c & 0x1F) << 6) | (s[1] & 0x3F), 2;
    if (c < 0xF0) return *cp = ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F), 3;
    *cp = ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

int utf8_encode(uint32_t cp, char *o) {
    unsigned char *out = (unsigned char *)o;
    if (cp < 0x80) return out[0] = (unsigned char)cp, 1;
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int unicode_is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* GPT-2: printable Latin-1 bytes stand for themselves; the other 68 are shifted to 256+. */
static int byte_printable(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t byte_char(int b) {
    if (byte_printable(b)) return (uint32_t)b;
    int n = 0;
    for (int k = 0; k < b; k++)
        if (!byte_printable(k)) n++;
    return 256u + (uint32_t)n;
}

int byte_of_char(uint32_t cp) {
    if (cp < 256) return byte_printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    int n = (int)(cp - 256);
    for (int k = 0; k < 256; k++)
        if (!byte_printable(k) && n-- == 0) return k;
    return -1;
}

const unsigned char *byte_order(void) {
    static unsigned char order[256];
    static int done;
    if (!done) {
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (byte_printable(b)) order[n++] = (unsigned char)b;
        for (int b = 0; b < 256; b++)
            if (!byte_printable(b)) order[n++] = (unsigned char)b;
        done = 1;
    }
    return order;
}

int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p, b->cap = cap;
    return 0;
}

int sbuf_put(sbuf *b, const void *data, size_t len) {
    if (sbuf_reserve(b, len) < 0) return -1;
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = 0;
    return 0;
}

int sbuf_putc(sbuf *b, char c) {
    return sbuf_put(b, &c, 1);
}

void sbuf_free(sbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

int ivec_push(ivec *v, int x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int *p = realloc(v->p, cap * sizeof *p);
        if (!p) return -1;
        v->p = p, v->cap = cap;
    }
    v->p[v->n++] = x;
    return 0;
}

void ivec_free(ivec *v) {
    free(v->p);
    memset(v, 0, sizeof *v);
}

uint64_t str_hash(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int strmap_grow(strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    strmap n = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint32_t)),
                calloc(cap, sizeof(int)), cap, 0};
    if (!n.keys || !n.lens || !n.vals) {
        free(n.keys), free(n.lens), free(n.vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = str_hash(m->keys[i], m->lens[i]) & (cap - 1);
        while (n.keys[j]) j = (j + 1) & (cap - 1);
        n.keys[j] = m->keys[i], n.lens[j] = m->lens[i], n.vals[j] = m->vals[i];
    }
    n.n = m->n;
    free(m->keys), free(m->lens), free(m->vals);
    *m = n;
    return 0;
}

int strmap_put(strmap *m, const char *key, size_t len, int val) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) < 0) return -1;
    size_t j = str_hash(key, len) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->lens[j] == len && !memcmp(m->keys[j], key, len)) {
            m->vals[j] = val;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    char *k = malloc(len + 1);
    if (!k) return -1;
    memcpy(k, key, len);
    k[len] = 0;
    m->keys[j] = k, m->lens[j] = (uint32_t)len, m->vals[j] = val;
    m->n++;
    return 0;
}

int strmap_get(const strmap *m, const char *key, size_t len, int *val) {
    if (!m->cap) return 0;
    size_t j = str_hash(key, len) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->lens[j] == len && !memcmp(m->keys[j], key, len)) {
            *val = m->vals[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

void strmap_free(strmap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys), free(m->lens), free(m->vals);
    memset(m, 0, sizeof *m);
}
