/* tokenizer.json (Hugging Face `tokenizers`) for BPE models: the pipeline is the library's,
 * step for step, so the ids are the same:
 *   added tokens split off -> normalizer -> pre-tokenizer -> BPE model -> post-processor,
 * and for decoding: ids -> token strings -> decoder chain.
 * Text is UTF-8 (the library takes a Python str); invalid UTF-8 is refused with its offset. */
#include "tokenizer.h"

#include "fsutil.h"
#include "tokenizer_unicode.h"
#include "tokenizer_util.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GPT2_PATTERN                                                                               \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
enum { PT_BYTELEVEL, PT_SPLIT, PT_METASPACE, PT_DIGITS };
enum { NM_PREPEND, NM_REPLACE, NM_STRIP, NM_FORM, NM_LOWERCASE, NM_STRIP_ACCENTS };
enum { DEC_BYTELEVEL, DEC_METASPACE, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP };

typedef struct pretok {
    int type;
    int add_prefix_space; /* ByteLevel */
    pcre2_code *re;       /* ByteLevel (use_regex), Split, Digits */
    int behavior, invert; /* Split, Metaspace (split on the replacement), Digits */
    char repl[8];         /* Metaspace */
    size_t repl_len;
    int prepend_scheme, split;
} pretok;

typedef struct normstep {
    int type;
    char *a, *b; /* Prepend: a; Replace: pattern a (or re) -> b */
    size_t alen, blen;
    pcre2_code *re;
    int left, right;   /* Strip */
    unicode_form form; /* NFC, NFD, NFKC, NFKD */
} normstep;

typedef struct decstep {
    int type;
    char *a, *b; /* Replace a -> b; Strip: a = content */
    size_t alen, blen;
    int start, stop;    /* Strip */
    int prepend_scheme; /* Metaspace */
    char repl[8];
    size_t repl_len;
} decstep;

typedef struct added_tok {
    int id;
    char *s;
    size_t len;
    int special, lstrip, rstrip, single_word, normalized;
} added_tok;

typedef struct merge_slot {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int rank, id;
} merge_slot;

typedef struct cache_entry {
    char *key;
    uint32_t klen, n;
    int *ids;
} cache_entry;

struct tokenizer {
    int n_used; /* max id + 1 */
    int n_ids;  /* allocated ids */
    char **tok; /* by id: the model's or the added token's string (NULL: unused id) */
    uint32_t *tok_len;
    unsigned char *special; /* by id */
    strmap vocab;           /* the model's vocabulary */
    merge_slot *merges;
    size_t merge_cap;
    int byte_fallback, fuse_unk, ignore_merges, unk_id;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix ("" = none) */
    int byte_fb[256];      /* id of "<0xNN>" or -1 */
    added_tok *added;
    int n_added;
    int *by_first;        /* added token indices grouped by first byte ... */
    int first_start[257]; /* ... byte b's group is by_first[first_start[b] .. first_start[b+1]) */
    normstep *norm;
    int n_norm;
    pretok *pre;
    int n_pre;
    decstep *dec;
    int n_dec;
    int *post_before, *post_after;
    int n_post_before, n_post_after;
    int bos_id, eos_id;
    char bchar[256][3]; /* byte -> its byte-level character (UTF-8) */
    unsigned char bchar_len[256];
    pthread_mutex_t cache_lock;
    cache_entry *cache;
    size_t cache_cap, cache_n;
};

/* ---------- JSON helpers ---------- */

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jbool(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n), p[n] = 0;
    return p;
}

static pcre2_code *compile_re(const char *pattern, size_t len, lp_err *err) {
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        lp_fail(err, "regex '%.*s': %s at offset %zu", (int)(len > 200 ? 200 : len), pattern,
                (const char *)msg, (size_t)off);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT fails */
    return re;
}

/* A pattern given as {"String": s} (literal) or {"Regex": r}. */
static pcre2_code *pattern_re(json_t *pat, const char *what, lp_err *err) {
    const char *s = jstr(pat, "String"), *r = jstr(pat, "Regex");
    if (r) return compile_re(r, strlen(r), err);
    if (!s) {
        lp_fail(err, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", what);
        return NULL;
    }
    sbuf b = {0};
    sbuf_put(&b, "\\Q", 2);
    for (const char *p = s; *p; p++) { /* \Q...\E, with any \E in the literal broken up */
        if (p[0] == '\\' && p[1] == 'E')
            sbuf_put(&b, "\\E\\\\E\\Q", 7), p++;
        else
            sbuf_putc(&b, *p);
    }
    sbuf_put(&b, "\\E", 2);
    pcre2_code *re = b.p ? compile_re(b.p, b.n, err) : NULL;
    sbuf_free(&b);
    return re;
}

static int prepend_scheme(json_t *o) {
    const char *s = jstr(o, "prepend_scheme");
    if (s)
        return !strcmp(s, "first")   ? PREPEND_FIRST
               : !strcmp(s, "never") ? PREPEND_NEVER
                                     : PREPEND_ALWAYS;
    return jbool(o, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
}

static int set_repl(json_t *o, char *repl, size_t *len, lp_err *err) {
    const char *r = jstr(o, "replacement");
    if (!r) r = "\xe2\x96\x81";
    if (strlen(r) >= 8 || utf8_valid_prefix(r, strlen(r)) != strlen(r))
        return lp_fail(err, "Metaspace: replacement must be one character");
    strcpy(repl, r);
    *len = strlen(r);
    return 0;
}

/* ---------- parsing tokenizer.json ---------- */

static int add_norm(tokenizer *t, json_t *n, lp_err *err) {
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return lp_fail(err, "normalizer: no type");
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers"), *v;
        size_t i;
        json_array_foreach(list, i, v) if (add_norm(t, v, err) < 0) return -1;
        return 0;
    }
    normstep s = {0};
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p) return lp_fail(err, "normalizer Prepend: no 'prepend'");
        s.type = NM_PREPEND, s.a = strdup(p), s.alen = strlen(p);
    } else if (!strcmp(type, "Replace")) {
        const char *c = jstr(n, "content");
        if (!c) return lp_fail(err, "normalizer Replace: no 'content'");
        if (!(s.re = pattern_re(json_object_get(n, "pattern"), "normalizer Replace", err)))
            return -1;
        s.type = NM_REPLACE, s.b = strdup(c), s.blen = strlen(c);
    } else if (!strcmp(type, "Strip")) {
        s.type = NM_STRIP, s.left = jbool(n, "strip_left", 1), s.right = jbool(n, "strip_right", 1);
    } else if (!strcmp(type, "NFC") || !strcmp(type, "NFD") || !strcmp(type, "NFKC") ||
               !strcmp(type, "NFKD")) {
        s.type = NM_FORM;
        s.form = !strcmp(type, "NFC")    ? UNICODE_NFC
                 : !strcmp(type, "NFD")  ? UNICODE_NFD
                 : !strcmp(type, "NFKC") ? UNICODE_NFKC
                                         : UNICODE_NFKD;
    } else if (!strcmp(type, "Lowercase")) {
        s.type = NM_LOWERCASE;
    } else if (!strcmp(type, "StripAccents")) {
        s.type = NM_STRIP_ACCENTS;
    } else {
        return lp_fail(err,
                       "normalizer '%s' is not supported (supported: Sequence, Prepend, "
                       "Replace, Strip, StripAccents, Lowercase, NFC, NFD, NFKC, NFKD)",
                       type);
    }
    normstep *p = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *p);
    if (!p) return lp_fail(err, "out of memory");
    t->norm = p;
    t->norm[t->n_norm++] = s;
    return 0;
}

static int split_behavior(const char *s) {
    if (!s) return SPLIT_ISOLATED;
    if (!strcasecmp(s, "Removed")) return SPLIT_REMOVED;
    if (!strcasecmp(s, "Isolated")) return SPLIT_ISOLATED;
    if (!strcasecmp(s, "MergedWithPrevious")) return SPLIT_PREV;
    if (!strcasecmp(s, "MergedWithNext")) return SPLIT_NEXT;
    if (!strcasecmp(s, "Contiguous")) return SPLIT_CONTIGUOUS;
    return -1;
}

static int add_pre(tokenizer *t, json_t *n, lp_err *err) {
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return lp_fail(err, "pre_tokenizer: no type");
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "pretokenizers"), *v;
        size_t i;
        json_array_foreach(list, i, v) if (add_pre(t, v, err) < 0) return -1;
        return 0;
    }
    pretok s = {0};
    if (!strcmp(type, "ByteLevel")) {
        s.type = PT_BYTELEVEL, s.add_prefix_space = jbool(n, "add_prefix_space", 1);
        if (jbool(n, "use_regex", 1) &&
            !(s.re = compile_re(GPT2_PATTERN, PCRE2_ZERO_TERMINATED, err)))
            return -1;
    } else if (!strcmp(type, "Split")) {
        s.type = PT_SPLIT, s.invert = jbool(n, "invert", 0);
        s.behavior = split_behavior(jstr(n, "behavior"));
        if (s.behavior < 0)
            return lp_fail(err, "Split: unknown behavior '%s'", jstr(n, "behavior"));
        if (!(s.re = pattern_re(json_object_get(n, "pattern"), "pre_tokenizer Split", err)))
            return -1;
    } else if (!strcmp(type, "Metaspace")) {
        s.type = PT_METASPACE, s.prepend_scheme = prepend_scheme(n), s.split = jbool(n, "split", 1);
        if (set_repl(n, s.repl, &s.repl_len, err) < 0) return -1;
        s.behavior = SPLIT_NEXT;
        char pat[24];
        snprintf(pat, sizeof pat, "\\Q%s\\E", s.repl);
        if (!(s.re = compile_re(pat, PCRE2_ZERO_TERMINATED, err))) return -1;
    } else if (!strcmp(type, "Digits")) {
        s.type = PT_DIGITS;
        s.behavior = jbool(n, "individual_digits", 0) ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
        /* the library splits on char::is_numeric: every Unicode number, one character each */
        if (!(s.re = compile_re("\\p{N}", PCRE2_ZERO_TERMINATED, err))) return -1;
    } else {
        return lp_fail(err,
                       "pre_tokenizer '%s' is not supported (supported: Sequence, ByteLevel, "
                       "Split, Metaspace, Digits)",
                       type);
    }
    pretok *p = realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *p);
    if (!p) {
        pcre2_code_free(s.re);
        return lp_fail(err, "out of memory");
    }
    t->pre = p;
    t->pre[t->n_pre++] = s;
    return 0;
}

static int add_dec(tokenizer *t, json_t *n, lp_err *err) {
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return lp_fail(err, "decoder: no type");
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "decoders"), *v;
        size_t i;
        json_array_foreach(list, i, v) if (add_dec(t, v, err) < 0) return -1;
        return 0;
    }
    decstep s = {0};
    if (!strcmp(type, "ByteLevel")) {
        s.type = DEC_BYTELEVEL;
    } else if (!strcmp(type, "Metaspace")) {
        s.type = DEC_METASPACE, s.prepend_scheme = prepend_scheme(n);
        if (set_repl(n, s.repl, &s.repl_len, err) < 0) return -1;
    } else if (!strcmp(type, "Replace")) {
        json_t *pat = json_object_get(n, "pattern");
        const char *a = jstr(pat, "String"), *c = jstr(n, "content");
        if (!a || !c) return lp_fail(err, "decoder Replace: only a String pattern is supported");
        s.type = DEC_REPLACE, s.a = strdup(a), s.alen = strlen(a), s.b = strdup(c);
        s.blen = strlen(c);
    } else if (!strcmp(type, "ByteFallback")) {
        s.type = DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        s.type = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        const char *c = jstr(n, "content");
        if (!c || utf8_valid_prefix(c, strlen(c)) != strlen(c))
            return lp_fail(err, "decoder Strip: no 'content'");
        s.type = DEC_STRIP, s.a = strdup(c), s.alen = strlen(c);
        s.start = (int)json_integer_value(json_object_get(n, "start"));
        s.stop = (int)json_integer_value(json_object_get(n, "stop"));
    } else {
        return lp_fail(err,
                       "decoder '%s' is not supported (supported: Sequence, ByteLevel, "
                       "Metaspace, Replace, ByteFallback, Fuse, Strip)",
                       type);
    }
    decstep *p = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *p);
    if (!p) return lp_fail(err, "out of memory");
    t->dec = p;
    t->dec[t->n_dec++] = s;
    return 0;
}

static int push_ids(int **arr, int *n, int id) {
    int *p = realloc(*arr, (size_t)(*n + 1) * sizeof *p);
    if (!p) return -1;
    *arr = p;
    p[(*n)++] = id;
    return 0;
}

/* The ids a template's special token stands for. */
static int template_special(tokenizer *t, json_t *specials, const char *name, int **arr, int *n,
                            lp_err *err) {
    json_t *ids = json_object_get(json_object_get(specials, name), "ids"), *v;
    if (!json_is_array(ids))
        return lp_fail(err, "post_processor: special token '%s' has no ids", name);
    size_t i;
    json_array_foreach(ids, i, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= t->n_ids)
            return lp_fail(err, "post_processor: bad id for '%s'", name);
        if (push_ids(arr, n, (int)id) < 0) return lp_fail(err, "out of memory");
    }
    return 0;
}

static int add_post(tokenizer *t, json_t *n, lp_err *err) {
    if (!n || json_is_null(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return lp_fail(err, "post_processor: no type");
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "processors"), *v;
        size_t i;
        json_array_foreach(list, i, v) if (add_post(t, v, err) < 0) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(n, "single"),
               *specials = json_object_get(n, "special_tokens"), *v;
        if (t->n_post_before || t->n_post_after)
            return lp_fail(err, "post_processor: two templates");
        size_t i;
        int seen_a = 0;
        json_array_foreach(single, i, v) {
            json_t *sp = json_object_get(v, "SpecialToken");
            if (json_object_get(v, "Sequence")) {
                const char *id = jstr(json_object_get(v, "Sequence"), "id");
                if (id && strcmp(id, "A"))
                    return lp_fail(err, "post_processor: the single template uses $%s", id);
                seen_a = 1;
            } else if (sp) {
                const char *id = jstr(sp, "id");
                if (!id) return lp_fail(err, "post_processor: SpecialToken without id");
                if (template_special(t, specials, id, seen_a ? &t->post_after : &t->post_before,
                                     seen_a ? &t->n_post_after : &t->n_post_before, err) < 0)
                    return -1;
            } else {
                return lp_fail(err, "post_processor: unknown template piece");
            }
        }
        return 0;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        json_t *cls = json_object_get(n, "cls"), *sep = json_object_get(n, "sep");
        if (json_array_size(cls) != 2 || json_array_size(sep) != 2)
            return lp_fail(err, "post_processor %s: bad cls/sep", type);
        if (push_ids(&t->post_before, &t->n_post_before,
                     (int)json_integer_value(json_array_get(cls, 1))) < 0 ||
            push_ids(&t->post_after, &t->n_post_after,
                     (int)json_integer_value(json_array_get(sep, 1))) < 0)
            return lp_fail(err, "out of memory");
        return 0;
    }
    return lp_fail(err,
                   "post_processor '%s' is not supported (supported: Sequence, ByteLevel, "
                   "TemplateProcessing, RobertaProcessing, BertProcessing)",
                   type);
}

static merge_slot *merge_find(const tokenizer *t, int a, int b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = t->merge_cap - 1, j = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (t->merges[j].key) {
        if (t->merges[j].key == key) return &t->merges[j];
        j = (j + 1) & mask;
    }
    return &t->merges[j];
}

static int set_token(tokenizer *t, int id, const char *s, size_t len) {
    if (id >= t->n_ids) {
        int n = id + 1;
        if (n < t->n_ids * 2) n = t->n_ids * 2; /* doubling; unused ids are NULL */
        char **tok = realloc(t->tok, (size_t)n * sizeof *tok);
        if (!tok) return -1;
        t->tok = tok;
        uint32_t *tl = realloc(t->tok_len, (size_t)n * sizeof *tl);
        if (!tl) return -1;
        t->tok_len = tl;
        unsigned char *sp = realloc(t->special, (size_t)n);
        if (!sp) return -1;
        t->special = sp;
        for (int i = t->n_ids; i < n; i++) t->tok[i] = NULL, t->tok_len[i] = 0, t->special[i] = 0;
        t->n_ids = n;
    }
    if (id >= t->n_used) t->n_used = id + 1;
    if (t->tok[id]) return 0; /* an added token with a model id keeps the model's string */
    if (!(t->tok[id] = dupn(s, len))) return -1;
    t->tok_len[id] = (uint32_t)len;
    return 0;
}

static int parse_model(tokenizer *t, json_t *m, lp_err *err) {
    const char *type = jstr(m, "type");
    if (!m || (type && strcmp(type, "BPE")))
        return lp_fail(err, "model type '%s' is not supported (only BPE)", type ? type : "?");
    json_t *vocab = json_object_get(m, "vocab"), *v;
    if (!json_is_object(vocab)) return lp_fail(err, "model: no vocab object");
    const char *key;
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > 10000000)
            return lp_fail(err, "vocab: bad id for '%s'", key);
        size_t len = strlen(key);
        if (strmap_put(&t->vocab, key, len, (int)id) < 0 || set_token(t, (int)id, key, len) < 0)
            return lp_fail(err, "out of memory");
    }
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    const char *unk = jstr(m, "unk_token"), *pre = jstr(m, "continuing_subword_prefix"),
               *suf = jstr(m, "end_of_word_suffix");
    t->unk_id = -1;
    if (unk && !strmap_get(&t->vocab, unk, strlen(unk), &t->unk_id))
        return lp_fail(err, "model: unk_token '%s' is not in the vocab", unk);
    t->prefix = strdup(pre ? pre : "");
    t->suffix = strdup(suf ? suf : "");
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        if (!strmap_get(&t->vocab, name, 6, &t->byte_fb[b])) t->byte_fb[b] = -1;
    }
    json_t *merges = json_object_get(m, "merges");
    size_t n = json_array_size(merges);
    t->merge_cap = 16;
    while (t->merge_cap < 2 * n + 16) t->merge_cap *= 2;
    if (!(t->merges = calloc(t->merge_cap, sizeof *t->merges)))
        return lp_fail(err, "out of memory");
    size_t i;
    sbuf cat = {0};
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        size_t alen, blen;
        char *sp = NULL;
        if (json_is_string(v)) { /* "a b" */
            a = json_string_value(v);
            sp = strchr(a, ' ');
            if (!sp) {
                sbuf_free(&cat);
                return lp_fail(err, "merges[%zu]: '%s' is not two tokens", i, a);
            }
            alen = (size_t)(sp - a), b = sp + 1, blen = strlen(b);
        } else if (json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                   json_is_string(json_array_get(v, 1))) {
            a = json_string_value(json_array_get(v, 0)), alen = strlen(a);
            b = json_string_value(json_array_get(v, 1)), blen = strlen(b);
        } else {
            sbuf_free(&cat);
            return lp_fail(err, "merges[%zu]: neither \"a b\" nor [\"a\", \"b\"]", i);
        }
        int ia, ib, ic;
        cat.n = 0;
        sbuf_put(&cat, a, alen), sbuf_put(&cat, b, blen);
        if (!strmap_get(&t->vocab, a, alen, &ia) || !strmap_get(&t->vocab, b, blen, &ib) ||
            !strmap_get(&t->vocab, cat.p, cat.n, &ic)) {
            lp_fail(err, "merges[%zu]: '%.*s' + '%.*s' uses or makes a token not in the vocab", i,
                    (int)alen, a, (int)blen, b);
            sbuf_free(&cat);
            return -1;
        }
        merge_slot *s = merge_find(t, ia, ib);
        if (!s->key) { /* the first rank of a repeated merge wins */
            s->key = (((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib) + 1;
            s->rank = (int)i, s->id = ic;
        }
    }
    sbuf_free(&cat);
    return 0;
}

static int parse_added(tokenizer *t, json_t *list, lp_err *err) {
    json_t *v;
    size_t i;
    t->added = calloc(json_array_size(list) + 1, sizeof *t->added);
    if (!t->added) return lp_fail(err, "out of memory");
    json_array_foreach(list, i, v) {
        const char *c = jstr(v, "content");
        json_t *jid = json_object_get(v, "id");
        if (!c || !*c || !json_is_integer(jid) || json_integer_value(jid) < 0 ||
            json_integer_value(jid) > 10000000)
            return lp_fail(err, "added_tokens[%zu]: needs content and id", i);
        added_tok *a = &t->added[t->n_added++];
        a->id = (int)json_integer_value(jid);
        a->s = strdup(c), a->len = strlen(c);
        a->special = jbool(v, "special", 0), a->lstrip = jbool(v, "lstrip", 0);
        a->rstrip = jbool(v, "rstrip", 0), a->single_word = jbool(v, "single_word", 0);
        a->normalized = jbool(v, "normalized", !a->special);
        if (!a->s || set_token(t, a->id, c, a->len) < 0) return lp_fail(err, "out of memory");
        /* the added token's own string is what decoding shows */
        if (strcmp(t->tok[a->id], c)) {
            free(t->tok[a->id]);
            t->tok[a->id] = strdup(c), t->tok_len[a->id] = (uint32_t)a->len;
        }
        t->special[a->id] = (unsigned char)a->special;
    }
    return 0;
}

/* Groups the added tokens by first byte (counting sort), so matching them costs a table look-up
 * per byte of text however many there are (Llama 3 has 256). */
static int index_added(tokenizer *t) {
    int count[257] = {0};
    for (int i = 0; i < t->n_added; i++) count[(unsigned char)t->added[i].s[0] + 1]++;
    for (int b = 0; b < 256; b++) count[b + 1] += count[b];
    memcpy(t->first_start, count, sizeof count);
    if (!(t->by_first = malloc((size_t)(t->n_added + 1) * sizeof(int)))) return -1;
    for (int i = 0; i < t->n_added; i++) t->by_first[count[(unsigned char)t->added[i].s[0]]++] = i;
    return 0;
}

static int lookup_any(const tokenizer *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].s, s)) return t->added[i].id;
    int id;
    return strmap_get(&t->vocab, s, strlen(s), &id) ? id : -1;
}

static int lookup_added(const tokenizer *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].s, s)) return t->added[i].id;
    return -1;
}

/* bos/eos: tokenizer_config.json beside the file says (a token, or null for none); without it,
 * the template's first token is the BOS, and otherwise the usual names among the added tokens
 * (not the model's vocab: Qwen's has a plain "<s>"). */
static void find_bos_eos(tokenizer *t, const char *path) {
    static const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>",
                                      "<|endoftext|>"};
    static const char *eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>",
                                      "<|im_end|>"};
    t->bos_id = t->n_post_before ? t->post_before[0] : -1;
    t->eos_id = -1;
    for (size_t i = 0; t->bos_id < 0 && i < sizeof bos_names / sizeof *bos_names; i++)
        t->bos_id = lookup_added(t, bos_names[i]);
    for (size_t i = 0; t->eos_id < 0 && i < sizeof eos_names / sizeof *eos_names; i++)
        t->eos_id = lookup_added(t, eos_names[i]);
    char cfg[4096];
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path) : 1;
    snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", dlen, slash ? path : ".");
    json_t *root = json_load_file(cfg, 0, NULL);
    if (!root) return;
    const char *keys[2] = {"bos_token", "eos_token"};
    int *dst[2] = {&t->bos_id, &t->eos_id};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, keys[k]);
        const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content");
        int id = s ? lookup_any(t, s) : -1;
        if (id >= 0)
            *dst[k] = id;
        else if (json_is_null(v) && !(k == 0 && t->n_post_before))
            *dst[k] = -1;
    }
    json_decref(root);
}

int tokenizer_load(tokenizer **out, const char *path, lp_err *err) {
    *out = NULL;
    char file[4096];
    struct stat st;
    if (!stat(path, &st) && S_ISDIR(st.st_mode))
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
    else
        snprintf(file, sizeof file, "%s", path);
    json_error_t je;
    json_t *root = json_load_file(file, 0, &je);
    if (!root && je.line < 1) return lp_fail(err, "%s", je.text);
    if (!root) return lp_fail(err, "%s: line %d: %s", file, je.line, je.text);
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        return lp_fail(err, "out of memory");
    }
    pthread_mutex_init(&t->cache_lock, NULL);
    for (int b = 0; b < 256; b++)
        t->bchar_len[b] = (unsigned char)utf8_encode(byte_char(b), t->bchar[b]);
    int rc = parse_model(t, json_object_get(root, "model"), err);
    if (!rc) rc = parse_added(t, json_object_get(root, "added_tokens"), err);
    if (!rc && index_added(t) < 0) rc = lp_fail(err, "out of memory");
    if (!rc) rc = add_norm(t, json_object_get(root, "normalizer"), err);
    if (!rc) rc = add_pre(t, json_object_get(root, "pre_tokenizer"), err);
    if (!rc) rc = add_dec(t, json_object_get(root, "decoder"), err);
    if (!rc) rc = add_post(t, json_object_get(root, "post_processor"), err);
    json_decref(root);
    if (rc < 0) {
        tokenizer_free(t);
        return lp_wrap(err, "%s", file);
    }
    find_bos_eos(t, file);
    t->cache_cap = 1 << 16;
    t->cache = calloc(t->cache_cap, sizeof *t->cache);
    *out = t;
    return 0;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_ids; i++) free(t->tok[i]);
    free(t->tok), free(t->tok_len), free(t->special);
    strmap_free(&t->vocab);
    free(t->merges), free(t->prefix), free(t->suffix);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].s);
    free(t->added), free(t->by_first);
    for (int i = 0; i < t->n_norm; i++)
        free(t->norm[i].a), free(t->norm[i].b), pcre2_code_free(t->norm[i].re);
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    free(t->pre);
    for (int i = 0; i < t->n_dec; i++) free(t->dec[i].a), free(t->dec[i].b);
    free(t->dec);
    free(t->post_before), free(t->post_after);
    if (t->cache)
        for (size_t i = 0; i < t->cache_cap; i++) free(t->cache[i].key), free(t->cache[i].ids);
    free(t->cache);
    pthread_mutex_destroy(&t->cache_lock);
    free(t);
}

/* ---------- splitting ---------- */

typedef struct span {
    size_t a, b;
    int is_match;
} span;

typedef struct spans {
    span *p;
    size_t n, cap;
} spans;

static int spans_push(spans *s, size_t a, size_t b, int m) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        span *p = realloc(s->p, cap * sizeof *p);
        if (!p) return -1;
        s->p = p, s->cap = cap;
    }
    s->p[s->n++] = (span){a, b, m};
    return 0;
}

/* The library's find_matches: the whole string as matches and the gaps between them. */
static int find_matches(const pcre2_code *re, const char *s, size_t len, pcre2_match_data *md,
                        spans *out) {
    out->n = 0;
    if (!len) return spans_push(out, 0, 0, 0);
    size_t prev = 0, pos = 0;
    while (pos <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* an empty match: nothing to split off; move one character on */
            if (a >= len) break;
            pos = a + 1;
            while (pos < len && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        if (prev != a && spans_push(out, prev, a, 0) < 0) return -1;
        if (spans_push(out, a, b, 1) < 0) return -1;
        prev = pos = b;
    }
    if (prev != len && spans_push(out, prev, len, 0) < 0) return -1;
    return 0;
}

/* NormalizedString::split: turns matches into pieces by behaviour; is_match = remove. */
static void apply_behavior(spans *m, int behavior, int invert) {
    if (invert)
        for (size_t i = 0; i < m->n; i++) m->p[i].is_match = !m->p[i].is_match;
    size_t n = 0;
    int prev = 0;
    switch (behavior) {
    case SPLIT_REMOVED:
        return;
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < m->n; i++) m->p[i].is_match = 0;
        return;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < m->n; i++) {
            int im = m->p[i].is_match;
            if (im == prev && n)
                m->p[n - 1].b = m->p[i].b;
            else
                m->p[n++] = (span){m->p[i].a, m->p[i].b, 0};
            prev = im;
        }
        break;
    case SPLIT_PREV:
        for (size_t i = 0; i < m->n; i++) {
            int im = m->p[i].is_match;
            if (im && !prev && n)
                m->p[n - 1].b = m->p[i].b;
            else
                m->p[n++] = (span){m->p[i].a, m->p[i].b, 0};
            prev = im;
        }
        break;
    case SPLIT_NEXT: /* the same from the right: a match joins the piece after it */
        for (size_t k = m->n; k-- > 0;) {
            int im = m->p[k].is_match;
            span cur = m->p[k];
            if (im && !prev && n)
                m->p[m->n - n].a = cur.a;
            else
                m->p[m->n - 1 - n++] = (span){cur.a, cur.b, 0};
            prev = im;
        }
        memmove(m->p, m->p + (m->n - n), n * sizeof *m->p);
        break;
    }
    m->n = n;
}

/* Pieces of text kept in one arena. */
typedef struct piece {
    size_t off, len;
    int at_start; /* begins at offset 0 of the original text (Metaspace's "first") */
} piece;

typedef struct plist {
    piece *p;
    size_t n, cap;
    sbuf buf;
} plist;

static int plist_add(plist *l, const char *s, size_t len, int at_start) {
    if (!len) return 0; /* the library drops empty pieces */
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        piece *p = realloc(l->p, cap * sizeof *p);
        if (!p) return -1;
        l->p = p, l->cap = cap;
    }
    l->p[l->n++] = (piece){l->buf.n, len, at_start};
    return sbuf_put(&l->buf, s, len);
}

static int split_piece(const char *s, size_t len, int at_start, const pcre2_code *re, int behavior,
                       int invert, pcre2_match_data *md, spans *sp, plist *out) {
    if (find_matches(re, s, len, md, sp) < 0) return -1;
    apply_behavior(sp, behavior, invert);
    for (size_t k = 0; k < sp->n; k++)
        if (!sp->p[k].is_match && plist_add(out, s + sp->p[k].a, sp->p[k].b - sp->p[k].a,
                                            at_start && sp->p[k].a == 0) < 0)
            return -1;
    return 0;
}

/* Replaces every occurrence of a (a literal) in s by b into out. */
static int replace_all(const char *s, size_t len, const char *a, size_t alen, const char *b,
                       size_t blen, sbuf *out) {
    size_t i = 0;
    while (i < len) {
        if (alen && i + alen <= len && !memcmp(s + i, a, alen)) {
            if (sbuf_put(out, b, blen) < 0) return -1;
            i += alen;
        } else {
            if (sbuf_putc(out, s[i]) < 0) return -1;
            i++;
        }
    }
    return sbuf_put(out, "", 0);
}

static int pretokenize(const tokenizer *t, const char *s, size_t len, int at_start,
                       pcre2_match_data *md, plist *cur, plist *next) {
    cur->n = 0, cur->buf.n = 0;
    if (plist_add(cur, s, len, at_start) < 0) return -1;
    spans sp = {0};
    sbuf tmp = {0};
    int rc = 0;
    for (int k = 0; k < t->n_pre && !rc; k++) {
        const pretok *pt = &t->pre[k];
        next->n = 0, next->buf.n = 0;
        for (size_t i = 0; i < cur->n && !rc; i++) {
            const char *ps = cur->buf.p + cur->p[i].off;
            size_t pl = cur->p[i].len;
            int st = cur->p[i].at_start;
            switch (pt->type) {
            case PT_BYTELEVEL: {
                tmp.n = 0;
                if (pt->add_prefix_space && ps[0] != ' ') rc |= sbuf_putc(&tmp, ' ');
                rc |= sbuf_put(&tmp, ps, pl);
                if (rc) break;
                size_t first = next->n;
                if (pt->re)
                    rc = split_piece(tmp.p, tmp.n, st, pt->re, SPLIT_ISOLATED, 0, md, &sp, next);
                else
                    rc = plist_add(next, tmp.p, tmp.n, st);
                /* map each new piece's bytes to the byte-level alphabet, in place at the end */
                for (size_t j = first; j < next->n && !rc; j++) {
                    size_t off = next->buf.n, o = next->p[j].off, n = next->p[j].len;
                    for (size_t q = 0; q < n && !rc; q++) {
                        unsigned char c = (unsigned char)next->buf.p[o + q];
                        rc = sbuf_put(&next->buf, t->bchar[c], t->bchar_len[c]);
                    }
                    next->p[j].off = off, next->p[j].len = next->buf.n - off;
                }
                break;
            }
            case PT_SPLIT:
            case PT_DIGITS:
                rc = split_piece(ps, pl, st, pt->re, pt->behavior, pt->invert, md, &sp, next);
                break;
            case PT_METASPACE: {
                tmp.n = 0;
                rc = replace_all(ps, pl, " ", 1, pt->repl, pt->repl_len, &tmp);
                if (rc) break;
                int starts = tmp.n >= pt->repl_len && !memcmp(tmp.p, pt->repl, pt->repl_len);
                int prepend = !starts && (pt->prepend_scheme == PREPEND_ALWAYS ||
                                          (pt->prepend_scheme == PREPEND_FIRST && st));
                sbuf t2 = {0};
                if (prepend) rc |= sbuf_put(&t2, pt->repl, pt->repl_len);
                rc |= sbuf_put(&t2, tmp.p, tmp.n);
                if (!rc) {
                    if (pt->split)
                        rc = split_piece(t2.p, t2.n, st, pt->re, SPLIT_NEXT, 0, md, &sp, next);
                    else
                        rc = plist_add(next, t2.p, t2.n, st);
                }
                sbuf_free(&t2);
                break;
            }
            }
        }
        plist swap = *cur;
        *cur = *next;
        *next = swap;
    }
    free(sp.p);
    sbuf_free(&tmp);
    return rc;
}

static int normalize(const tokenizer *t, const char *s, size_t len, pcre2_match_data *md,
                     sbuf *out) {
    out->n = 0;
    if (sbuf_put(out, s, len) < 0) return -1;
    if (!len) return 0; /* the normalizers leave an empty string empty */
    sbuf tmp = {0};
    spans sp = {0};
    int rc = 0;
    for (int k = 0; k < t->n_norm && !rc; k++) {
        const normstep *n = &t->norm[k];
        tmp.n = 0;
        if (n->type == NM_PREPEND) {
            if (!out->n) continue;
            rc = sbuf_put(&tmp, n->a, n->alen) | sbuf_put(&tmp, out->p, out->n);
        } else if (n->type == NM_REPLACE) {
            rc = find_matches(n->re, out->p, out->n, md, &sp);
            for (size_t i = 0; i < sp.n && !rc; i++)
                rc = sp.p[i].is_match ? sbuf_put(&tmp, n->b, n->blen)
                                      : sbuf_put(&tmp, out->p + sp.p[i].a, sp.p[i].b - sp.p[i].a);
            rc |= sbuf_put(&tmp, "", 0);
        } else if (n->type == NM_FORM) {
            rc = unicode_normalize_as_tokenizers(out->p, out->n, n->form, &tmp);
        } else if (n->type == NM_LOWERCASE) {
            rc = unicode_lowercase(out->p, out->n, &tmp);
        } else if (n->type == NM_STRIP_ACCENTS) {
            rc = unicode_strip_accents_as_tokenizers(out->p, out->n, &tmp);
        } else if (n->type == NM_STRIP) {
            size_t a = 0, b = out->n;
            uint32_t cp;
            while (n->left && a < b) {
                int l = utf8_decode((const unsigned char *)out->p + a, &cp);
                if (!unicode_is_ws(cp)) break;
                a += (size_t)l;
            }
            while (n->right && b > a) {
                size_t q = b - 1;
                while (q > a && ((unsigned char)out->p[q] & 0xC0) == 0x80) q--;
                utf8_decode((const unsigned char *)out->p + q, &cp);
                if (!unicode_is_ws(cp)) break;
                b = q;
            }
            rc = sbuf_put(&tmp, out->p + a, b - a);
        }
        sbuf swap = *out;
        *out = tmp;
        tmp = swap;
    }
    sbuf_free(&tmp);
    free(sp.p);
    return rc;
}

/* ---------- the BPE model ---------- */

typedef struct hnode {
    int rank, pos, id;
} hnode;

static int hless(hnode a, hnode b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void hpush(hnode *h, int *n, hnode x) {
    int i = (*n)++;
    while (i > 0 && hless(x, h[(i - 1) / 2])) h[i] = h[(i - 1) / 2], i = (i - 1) / 2;
    h[i] = x;
}

static hnode hpop(hnode *h, int *n) {
    hnode top = h[0], x = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(h[c + 1], h[c])) c++;
        if (!hless(h[c], x)) break;
        h[i] = h[c], i = c;
    }
    h[i] = x;
    return top;
}

static int cache_get(tokenizer *t, const char *s, size_t len, ivec *out, int *found) {
    *found = 0;
    if (!t->cache || len > 64) return 0;
    size_t mask = t->cache_cap - 1, j = str_hash(s, len) & mask;
    int rc = 0;
    pthread_mutex_lock(&t->cache_lock);
    while (t->cache[j].key) {
        cache_entry *e = &t->cache[j];
        if (e->klen == len && !memcmp(e->key, s, len)) {
            for (uint32_t k = 0; k < e->n && !rc; k++) rc = ivec_push(out, e->ids[k]);
            *found = 1;
            break;
        }
        j = (j + 1) & mask;
    }
    pthread_mutex_unlock(&t->cache_lock);
    return rc;
}

static void cache_put(tokenizer *t, const char *s, size_t len, const int *ids, size_t n) {
    if (!t->cache || len > 64) return;
    pthread_mutex_lock(&t->cache_lock);
    if (t->cache_n * 4 < t->cache_cap * 3) { /* a full cache simply stops growing */
        size_t mask = t->cache_cap - 1, j = str_hash(s, len) & mask;
        int dup = 0;
        while (t->cache[j].key) {
            if (t->cache[j].klen == len && !memcmp(t->cache[j].key, s, len)) {
                dup = 1;
                break;
            }
            j = (j + 1) & mask;
        }
        cache_entry e = {dupn(s, len), (uint32_t)len, (uint32_t)n,
                         malloc((n ? n : 1) * sizeof(int))};
        if (!dup && e.key && e.ids) {
            if (n) memcpy(e.ids, ids, n * sizeof(int));
            t->cache[j] = e;
            t->cache_n++;
        } else {
            free(e.key), free(e.ids);
        }
    }
    pthread_mutex_unlock(&t->cache_lock);
}

/* One pre-token through BPE (the library's merge_word + Word::merge_all). */
static int bpe_word(tokenizer *t, const char *s, size_t len, ivec *out) {
    int id;
    if (t->ignore_merges && strmap_get(&t->vocab, s, len, &id)) return ivec_push(out, id);
    int found;
    size_t start = out->n;
    if (cache_get(t, s, len, out, &found) < 0) return -1;
    if (found) return 0;
    int sym_stack[4 * 64], *sym = sym_stack;
    hnode heap_stack[64], *heap = heap_stack;
    size_t cap = len + 2;
    if (cap > 64) {
        sym = malloc(4 * cap * sizeof *sym);
        heap = malloc(cap * 2 * sizeof *heap);
        if (!sym || !heap) {
            free(sym), free(heap);
            return -1;
        }
    }
    int *sid = sym, *prev = sym + cap, *next = sym + 2 * cap, *alive = sym + 3 * cap;
    int n = 0, unk = -1, rc = 0;
    size_t plen = strlen(t->prefix), slen = strlen(t->suffix);
    sbuf tmp = {0};
#define ADD_SYM(x) (sid[n] = (x), alive[n] = 1, n++)
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t cl = (size_t)utf8_decode((const unsigned char *)s + i, &cp);
        const char *c = s + i;
        size_t clen = cl;
        if ((plen && i > 0) || (slen && i + cl == len)) {
            tmp.n = 0;
            if (plen && i > 0) sbuf_put(&tmp, t->prefix, plen);
            sbuf_put(&tmp, s + i, cl);
            if (slen && i + cl == len) sbuf_put(&tmp, t->suffix, slen);
            c = tmp.p, clen = tmp.n;
        }
        if (strmap_get(&t->vocab, c, clen, &id)) {
            if (unk >= 0) ADD_SYM(unk), unk = -1;
            ADD_SYM(id);
        } else {
            int ok = t->byte_fallback;
            for (size_t q = 0; ok && q < clen; q++) ok = t->byte_fb[(unsigned char)c[q]] >= 0;
            if (ok) {
                for (size_t q = 0; q < clen; q++) ADD_SYM(t->byte_fb[(unsigned char)c[q]]);
            } else if (t->unk_id >= 0) {
                if (unk >= 0 && !t->fuse_unk) ADD_SYM(unk);
                unk = t->unk_id;
            }
        }
        i += cl;
    }
    if (unk >= 0) ADD_SYM(unk);
#undef ADD_SYM
    sbuf_free(&tmp);
    for (int i = 0; i < n; i++) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
    int hn = 0;
    for (int i = 0; i + 1 < n; i++) {
        merge_slot *m = merge_find(t, sid[i], sid[i + 1]);
        if (m->key) hpush(heap, &hn, (hnode){m->rank, i, m->id});
    }
    while (hn) {
        hnode top = hpop(heap, &hn);
        int p = top.pos;
        if (!alive[p] || next[p] < 0) continue;
        int q = next[p];
        merge_slot *m = merge_find(t, sid[p], sid[q]);
        if (!m->key || m->id != top.id) continue; /* stale */
        sid[p] = top.id;
        alive[q] = 0;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0) {
            merge_slot *l = merge_find(t, sid[prev[p]], sid[p]);
            if (l->key) hpush(heap, &hn, (hnode){l->rank, prev[p], l->id});
        }
        if (next[p] >= 0) {
            merge_slot *r = merge_find(t, sid[p], sid[next[p]]);
            if (r->key) hpush(heap, &hn, (hnode){r->rank, p, r->id});
        }
    }
    for (int i = 0; i < n && !rc; i++)
        if (alive[i]) rc = ivec_push(out, sid[i]);
    if (sym != sym_stack) free(sym), free(heap);
    /* a word that gave no ids (a vocabulary without its bytes) is not cached: out->p may still
     * be NULL, and NULL + 0 is undefined */
    if (!rc && out->n > start) cache_put(t, s, len, out->p + start, out->n - start);
    return rc;
}

/* ---------- added tokens ---------- */

static int is_word_char(const char *s, size_t at, int before) {
    /* the character just before (or at) `at`; letters, digits and '_' make a word */
    if (before) {
        size_t q = at - 1;
        while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
        at = q;
    }
    uint32_t cp;
    utf8_decode((const unsigned char *)s + at, &cp);
    if (cp < 128)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    return !unicode_is_ws(cp);
}

/* Leftmost-longest matching of the added tokens whose `normalized` flag is `normalized`:
 * spans with is_match = the token's index + 1, gaps with 0. */
static int split_added(const tokenizer *t, const char *s, size_t len, int normalized,
                       int allow_special, spans *out) {
    out->n = 0;
    size_t start_off = 0, i = 0;
    while (i < len) {
        int best = -1;
        size_t blen = 0;
        unsigned char c = (unsigned char)s[i];
        for (int q = t->first_start[c]; q < t->first_start[c + 1]; q++) {
            const added_tok *a = &t->added[t->by_first[q]];
            if (a->normalized != normalized || a->len <= blen || a->len > len - i) continue;
            if (!memcmp(s + i, a->s, a->len)) best = t->by_first[q], blen = a->len;
        }
        if (best < 0) {
            i++;
            continue;
        }
        const added_tok *a = &t->added[best];
        size_t ms = i, me = i + blen;
        i = me; /* the match is consumed even when it is then not used */
        if (a->special && !allow_special) continue;
        if (a->single_word &&
            ((ms > 0 && is_word_char(s, ms, 1)) || (me < len && is_word_char(s, me, 0))))
            continue;
        if (a->lstrip) {
            while (ms > start_off) {
                size_t q = ms - 1;
                while (q > start_off && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                uint32_t cp;
                utf8_decode((const unsigned char *)s + q, &cp);
                if (!unicode_is_ws(cp)) break;
                ms = q;
            }
        }
        if (a->rstrip) {
            while (me < len) {
                uint32_t cp;
                int l = utf8_decode((const unsigned char *)s + me, &cp);
                if (!unicode_is_ws(cp)) break;
                me += (size_t)l;
            }
            i = me;
        }
        if (start_off < ms && spans_push(out, start_off, ms, 0) < 0) return -1;
        if (spans_push(out, ms, me, best + 1) < 0) return -1;
        start_off = me;
    }
    if (start_off < len && spans_push(out, start_off, len, 0) < 0) return -1;
    return 0;
}

int tokenizer_encode(const tokenizer *tc, const char *text, size_t len, int allow_special,
                     int add_special, int **ids, size_t *n_ids, lp_err *err) {
    tokenizer *t = (tokenizer *)tc; /* only the (locked) cache changes */
    *ids = NULL, *n_ids = 0;
    size_t bad = utf8_valid_prefix(text, len);
    if (bad != len)
        return lp_fail(err, "invalid UTF-8 at byte %zu (byte 0x%02x)", bad,
                       (unsigned char)text[bad]);
    ivec out = {0};
    spans outer = {0}, inner = {0};
    sbuf norm = {0};
    plist a = {0}, b = {0};
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    int rc = md ? 0 : -1;
    for (int k = 0; k < t->n_post_before && add_special && !rc; k++)
        rc = ivec_push(&out, t->post_before[k]);
    if (!rc) rc = split_added(t, text, len, 0, allow_special, &outer);
    for (size_t i = 0; i < outer.n && !rc; i++) {
        span o = outer.p[i];
        if (o.is_match) {
            rc = ivec_push(&out, t->added[o.is_match - 1].id);
            continue;
        }
        rc = normalize(t, text + o.a, o.b - o.a, md, &norm);
        if (!rc) rc = split_added(t, norm.p, norm.n, 1, allow_special, &inner);
        for (size_t j = 0; j < inner.n && !rc; j++) {
            span in = inner.p[j];
            if (in.is_match) {
                rc = ivec_push(&out, t->added[in.is_match - 1].id);
                continue;
            }
            rc = pretokenize(t, norm.p + in.a, in.b - in.a, o.a == 0 && in.a == 0, md, &a, &b);
            for (size_t q = 0; q < a.n && !rc; q++)
                rc = bpe_word(t, a.buf.p + a.p[q].off, a.p[q].len, &out);
        }
    }
    for (int k = 0; k < t->n_post_after && add_special && !rc; k++)
        rc = ivec_push(&out, t->post_after[k]);
    pcre2_match_data_free(md);
    free(outer.p), free(inner.p), sbuf_free(&norm);
    free(a.p), sbuf_free(&a.buf), free(b.p), sbuf_free(&b.buf);
    if (rc) {
        ivec_free(&out);
        return lp_fail(err, "tokenizer: out of memory or regex failure");
    }
    if (!out.p) out.p = malloc(sizeof(int));
    if (!out.p) return lp_fail(err, "out of memory");
    *ids = out.p, *n_ids = out.n;
    return 0;
}

int tokenizer_normalize(const tokenizer *t, const char *text, size_t len, char **out,
                        size_t *out_len, lp_err *err) {
    *out = NULL;
    size_t bad = utf8_valid_prefix(text, len);
    if (bad != len)
        return lp_fail(err, "invalid UTF-8 at byte %zu (byte 0x%02x)", bad,
                       (unsigned char)text[bad]);
    sbuf norm = {0};
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    int rc = md ? normalize(t, text, len, md, &norm) : -1;
    if (rc == 0) rc = sbuf_put(&norm, "", 0);
    pcre2_match_data_free(md);
    if (rc) {
        sbuf_free(&norm);
        return lp_fail(err, "tokenizer: out of memory or regex failure");
    }
    *out = norm.p;
    if (out_len) *out_len = norm.n;
    return 0;
}

/* ---------- decoding ---------- */

/* String::from_utf8_lossy: each maximal invalid subsequence becomes U+FFFD. */
static int lossy_utf8(const char *s, size_t len, sbuf *out) {
    size_t i = 0;
    while (i < len) {
        size_t ok = utf8_valid_prefix(s + i, len - i);
        if (sbuf_put(out, s + i, ok) < 0) return -1;
        i += ok;
        if (i >= len) break;
        /* the lead byte plus the continuation bytes that could still be valid */
        const unsigned char *u = (const unsigned char *)s + i;
        size_t n = 1, need = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (u[0] >= 0xC2 && u[0] <= 0xDF)
            need = 2;
        else if (u[0] == 0xE0)
            need = 3, lo = 0xA0;
        else if ((u[0] >= 0xE1 && u[0] <= 0xEC) || u[0] == 0xEE || u[0] == 0xEF)
            need = 3;
        else if (u[0] == 0xED)
            need = 3, hi = 0x9F;
        else if (u[0] == 0xF0)
            need = 4, lo = 0x90;
        else if (u[0] >= 0xF1 && u[0] <= 0xF3)
            need = 4;
        else if (u[0] == 0xF4)
            need = 4, hi = 0x8F;
        if (need && i + 1 < len && u[1] >= lo && u[1] <= hi) {
            n = 2;
            while (n < need && i + n < len && u[n] >= 0x80 && u[n] <= 0xBF) n++;
        }
        if (sbuf_put(out, "\xef\xbf\xbd", 3) < 0) return -1;
        i += n;
    }
    return sbuf_put(out, "", 0);
}

typedef struct slist {
    sbuf *s;
    size_t n;
} slist;

static void slist_free(slist *l) {
    for (size_t i = 0; i < l->n; i++) sbuf_free(&l->s[i]);
    free(l->s);
    l->s = NULL, l->n = 0;
}

static int dec_step(const decstep *d, slist *l) {
    int rc = 0;
    switch (d->type) {
    case DEC_BYTELEVEL:
    case DEC_FUSE: {
        sbuf all = {0}, res = {0};
        for (size_t i = 0; i < l->n && !rc; i++) rc = sbuf_put(&all, l->s[i].p, l->s[i].n);
        if (d->type == DEC_FUSE) {
            res = all;
            all = (sbuf){0};
        } else if (!rc) {
            sbuf bytes = {0};
            for (size_t i = 0; i < all.n && !rc;) {
                uint32_t cp;
                int cl = utf8_decode((const unsigned char *)all.p + i, &cp);
                int b = byte_of_char(cp);
                rc = b >= 0 ? sbuf_putc(&bytes, (char)b) : sbuf_put(&bytes, all.p + i, (size_t)cl);
                i += (size_t)cl;
            }
            if (!rc) rc = lossy_utf8(bytes.p ? bytes.p : "", bytes.n, &res);
            sbuf_free(&bytes);
        }
        sbuf_free(&all);
        slist_free(l);
        if (rc || !(l->s = calloc(1, sizeof *l->s))) {
            sbuf_free(&res);
            return -1;
        }
        if (!res.p) rc = sbuf_put(&res, "", 0);
        l->s[0] = res, l->n = 1;
        return rc;
    }
    case DEC_METASPACE:
        for (size_t i = 0; i < l->n && !rc; i++) {
            sbuf r = {0};
            rc = replace_all(l->s[i].p, l->s[i].n, d->repl, d->repl_len,
                             i == 0 && d->prepend_scheme != PREPEND_NEVER ? "" : " ",
                             i == 0 && d->prepend_scheme != PREPEND_NEVER ? 0 : 1, &r);
            sbuf_free(&l->s[i]);
            l->s[i] = r;
        }
        return rc;
    case DEC_REPLACE:
        for (size_t i = 0; i < l->n && !rc; i++) {
            sbuf r = {0};
            rc = replace_all(l->s[i].p, l->s[i].n, d->a, d->alen, d->b, d->blen, &r);
            sbuf_free(&l->s[i]);
            l->s[i] = r;
        }
        return rc;
    case DEC_STRIP:
        for (size_t i = 0; i < l->n; i++) {
            sbuf *s = &l->s[i];
            size_t a = 0, b = s->n;
            for (int k = 0; k < d->start && a + d->alen <= b && !memcmp(s->p + a, d->a, d->alen);
                 k++)
                a += d->alen;
            for (int k = 0;
                 k < d->stop && b >= a + d->alen && !memcmp(s->p + b - d->alen, d->a, d->alen); k++)
                b -= d->alen;
            memmove(s->p, s->p + a, b - a);
            s->n = b - a;
            s->p[s->n] = 0;
        }
        return 0;
    case DEC_BYTEFALLBACK: {
        slist r = {calloc(l->n + 1, sizeof(sbuf)), 0};
        if (!r.s) return -1;
        sbuf pending = {0};
        size_t n_pending = 0;
        for (size_t i = 0; i <= l->n && !rc; i++) {
            const sbuf *s = i < l->n ? &l->s[i] : NULL;
            unsigned v;
            char hex[3] = {0};
            int is_byte = s && s->n == 6 && !memcmp(s->p, "<0x", 3) && s->p[5] == '>';
            if (is_byte) {
                memcpy(hex, s->p + 3, 2);
                char *end;
                v = (unsigned)strtoul(hex, &end, 16);
                is_byte = *end == 0 && hex[0] != '+' && hex[0] != '-' && hex[0] != ' ';
                if (is_byte) {
                    rc = sbuf_putc(&pending, (char)v);
                    n_pending++;
                    continue;
                }
            }
            if (n_pending) {
                if (utf8_valid_prefix(pending.p, pending.n) == pending.n) {
                    /* the bytes become one token; the list can grow past l->n + 1 only here */
                    sbuf *p = realloc(r.s, (r.n + n_pending + l->n + 2) * sizeof *p);
                    if (!p)
                        rc = -1;
                    else
                        r.s = p, r.s[r.n++] = pending, pending = (sbuf){0};
                } else {
                    sbuf *p = realloc(r.s, (r.n + n_pending + l->n + 2) * sizeof *p);
                    if (!p)
                        rc = -1;
                    else
                        r.s = p;
                    for (size_t k = 0; k < n_pending && !rc; k++) {
                        r.s[r.n] = (sbuf){0};
                        rc = sbuf_put(&r.s[r.n++], "\xef\xbf\xbd", 3);
                    }
                    sbuf_free(&pending);
                }
                n_pending = 0;
            }
            if (s && !rc) {
                r.s[r.n] = (sbuf){0};
                rc = sbuf_put(&r.s[r.n++], s->p ? s->p : "", s->n);
            }
        }
        sbuf_free(&pending);
        slist_free(l);
        *l = r;
        return rc;
    }
    }
    return 0;
}

char *tokenizer_decode(const tokenizer *t, const int *ids, size_t n_ids, int skip_special) {
    slist l = {calloc(n_ids + 1, sizeof(sbuf)), 0};
    if (!l.s) return NULL;
    int rc = 0;
    for (size_t i = 0; i < n_ids && !rc; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->tok[id]) continue; /* unknown ids are dropped */
        if (skip_special && t->special[id]) continue;
        rc = sbuf_put(&l.s[l.n++], t->tok[id], t->tok_len[id]);
    }
    for (int k = 0; k < t->n_dec && !rc; k++) rc = dec_step(&t->dec[k], &l);
    sbuf res = {0};
    for (size_t i = 0; i < l.n && !rc; i++) {
        if (!t->n_dec && i) rc = sbuf_putc(&res, ' '); /* no decoder: the library joins with " " */
        if (!rc) rc = sbuf_put(&res, l.s[i].p ? l.s[i].p : "", l.s[i].n);
    }
    if (!rc && !res.p) rc = sbuf_put(&res, "", 0);
    slist_free(&l);
    if (rc) {
        sbuf_free(&res);
        return NULL;
    }
    return res.p;
}

int tokenizer_vocab_size(const tokenizer *t) {
    return t->n_used;
}

int tokenizer_token_id(const tokenizer *t, const char *token) {
    return lookup_any(t, token);
}

const char *tokenizer_id_to_token(const tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids ? t->tok[id] : NULL;
}

int tokenizer_is_special(const tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids && t->special[id];
}

int tokenizer_eos_id(const tokenizer *t) {
    return t->eos_id;
}

int tokenizer_bos_id(const tokenizer *t) {
    return t->bos_id;
}

int tokenizer_pretokenize_count(const tokenizer *tc, const char *text, size_t len, size_t *n_pieces,
                                lp_err *err) {
    tokenizer *t = (tokenizer *)tc;
    if (utf8_valid_prefix(text, len) != len) return lp_fail(err, "invalid UTF-8");
    plist a = {0}, b = {0};
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    int rc = md ? pretokenize(t, text, len, 1, md, &a, &b) : -1;
    *n_pieces = a.n;
    pcre2_match_data_free(md);
    free(a.p), sbuf_free(&a.buf), free(b.p), sbuf_free(&b.buf);
    return rc ? lp_fail(err, "pre-tokenizer failed") : 0;
}
