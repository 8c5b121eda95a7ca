/* Byte-level BPE training: words from GPT-2's pre-tokenizer regex, pair counts kept up to date
 * incrementally (each merge touches only the words that hold the pair), a max-heap with lazy
 * deletion picks the most frequent pair (ties: the smaller ids). */
#include "bpe_train.h"

#include "fsutil.h"
#include "tokenizer_util.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPT2_PATTERN                                                                               \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct word {
    int *sym;
    int n;
    long weight;
    int stamp;
} word;

typedef struct pair_info {
    uint64_t key; /* (a << 32 | b) + 1, 0 = empty */
    long count;
    ivec words;
} pair_info;

typedef struct trainer {
    word *words;
    int n_words;
    pair_info *pairs;
    size_t pcap, pn;
    struct hent {
        long count;
        int a, b;
    } * heap;
    size_t hn, hcap;
    sbuf *tok; /* raw bytes of each token */
    int n_tok;
    strmap tok_ids;
    int (*merges)[2];
    int n_merges;
} trainer;

static uint64_t pkey(int a, int b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static pair_info *pair_get(trainer *t, int a, int b, int create) {
    if (create && (t->pn + 1) * 2 > t->pcap) {
        size_t cap = t->pcap ? t->pcap * 2 : 4096;
        pair_info *p = calloc(cap, sizeof *p);
        if (!p) return NULL;
        for (size_t i = 0; i < t->pcap; i++) {
            if (!t->pairs[i].key) continue;
            size_t j = (size_t)((t->pairs[i].key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
            while (p[j].key) j = (j + 1) & (cap - 1);
            p[j] = t->pairs[i];
        }
        free(t->pairs);
        t->pairs = p, t->pcap = cap;
    }
    if (!t->pcap) return NULL;
    uint64_t key = pkey(a, b);
    size_t j = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (t->pcap - 1);
    while (t->pairs[j].key) {
        if (t->pairs[j].key == key) return &t->pairs[j];
        j = (j + 1) & (t->pcap - 1);
    }
    if (!create) return NULL;
    t->pairs[j].key = key;
    t->pn++;
    return &t->pairs[j];
}

static int hbetter(const struct hent *x, const struct hent *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(trainer *t, long count, int a, int b) {
    if (t->hn == t->hcap) {
        size_t cap = t->hcap ? t->hcap * 2 : 4096;
        struct hent *p = realloc(t->heap, cap * sizeof *p);
        if (!p) return -1;
        t->heap = p, t->hcap = cap;
    }
    struct hent x = {count, a, b};
    size_t i = t->hn++;
    while (i > 0 && hbetter(&x, &t->heap[(i - 1) / 2]))
        t->heap[i] = t->heap[(i - 1) / 2], i = (i - 1) / 2;
    t->heap[i] = x;
    return 0;
}

static struct hent heap_pop(trainer *t) {
    struct hent top = t->heap[0], x = t->heap[--t->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->hn) break;
        if (c + 1 < t->hn && hbetter(&t->heap[c + 1], &t->heap[c])) c++;
        if (!hbetter(&t->heap[c], &x)) break;
        t->heap[i] = t->heap[c], i = c;
    }
    t->heap[i] = x;
    return top;
}

/* capacity for n + 1 items, doubling */
static int grow(void **p, int n, size_t item) {
    if (n & (n - 1) || n < 0) return 0; /* grows at 0, 1, 2, 4, 8, ... */
    void *q = realloc(*p, (size_t)(n ? 2 * n : 1) * item);
    if (!q) return -1;
    *p = q;
    return 0;
}

static int add_token(trainer *t, const char *s, size_t len) {
    if (grow((void **)&t->tok, t->n_tok, sizeof *t->tok) < 0) return -1;
    t->tok[t->n_tok] = (sbuf){0};
    if (sbuf_put(&t->tok[t->n_tok], s, len) < 0 || strmap_put(&t->tok_ids, s, len, t->n_tok) < 0)
        return -1;
    return t->n_tok++;
}

static int add_merge(trainer *t, int a, int b) {
    if (grow((void **)&t->merges, t->n_merges, sizeof *t->merges) < 0) return -1;
    t->merges[t->n_merges][0] = a, t->merges[t->n_merges][1] = b;
    t->n_merges++;
    sbuf cat = {0};
    int rc = sbuf_put(&cat, t->tok[a].p, t->tok[a].n) | sbuf_put(&cat, t->tok[b].p, t->tok[b].n);
    int id = rc ? -1 : add_token(t, cat.p, cat.n);
    sbuf_free(&cat);
    return id;
}

static int count_pairs(trainer *t, int w, long sign, int only_with) {
    word *wd = &t->words[w];
    for (int i = 0; i + 1 < wd->n; i++) {
        int a = wd->sym[i], b = wd->sym[i + 1];
        if (only_with >= 0 && a != only_with && b != only_with) continue;
        pair_info *p = pair_get(t, a, b, 1);
        if (!p) return -1;
        p->count += sign * wd->weight;
        if (sign > 0) {
            if (ivec_push(&p->words, w) < 0 || heap_push(t, p->count, a, b) < 0) return -1;
        }
    }
    return 0;
}

/* Learns up to want merges; stops early when no pair is left. */
static int train(trainer *t, int want) {
    for (int w = 0; w < t->n_words; w++)
        if (count_pairs(t, w, 1, -1) < 0) return -1;
    while (t->n_merges < want && t->hn) {
        struct hent top = heap_pop(t);
        pair_info *p = pair_get(t, top.a, top.b, 0);
        if (!p || p->count <= 0) continue;
        if (p->count != top.count) {
            if (heap_push(t, p->count, top.a, top.b) < 0) return -1;
            continue;
        }
        int a = top.a, b = top.b;
        int id = add_merge(t, a, b);
        if (id < 0) return -1;
        int stamp = t->n_merges;
        ivec list = p->words; /* p may move when pairs are added */
        p->words = (ivec){0};
        for (size_t k = 0; k < list.n; k++) {
            int w = list.p[k];
            word *wd = &t->words[w];
            if (wd->stamp == stamp) continue;
            wd->stamp = stamp;
            int has = 0;
            for (int i = 0; i + 1 < wd->n && !has; i++)
                has = wd->sym[i] == a && wd->sym[i + 1] == b;
            if (!has) continue;
            if (count_pairs(t, w, -1, -1) < 0) {
                ivec_free(&list);
                return -1;
            }
            int n = 0;
            for (int i = 0; i < wd->n;) {
                if (i + 1 < wd->n && wd->sym[i] == a && wd->sym[i + 1] == b)
                    wd->sym[n++] = id, i += 2;
                else
                    wd->sym[n++] = wd->sym[i++];
            }
            wd->n = n;
            /* pairs without the new id only lost counts; the new ones are created and queued */
            for (int i = 0; i + 1 < wd->n; i++) {
                int x = wd->sym[i], y = wd->sym[i + 1];
                if (x == id || y == id) continue;
                pair_info *q = pair_get(t, x, y, 0);
                if (q) q->count += wd->weight;
            }
            if (count_pairs(t, w, 1, id) < 0) {
                ivec_free(&list);
                return -1;
            }
        }
        ivec_free(&list);
        p = pair_get(t, a, b, 0);
        if (p) p->count = 0;
    }
    return 0;
}

static int is_alpha_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Past what the corpus teaches: join learned pieces that could sit inside one word. */
static int fill(trainer *t, int want) {
    int first = 256, last = t->n_tok; /* learned tokens [first, last) */
    for (int pass = 0; pass < 2 && t->n_merges < want; pass++) {
        int n = last - first;
        for (long s = 0; s <= 2L * n && t->n_merges < want; s++) {
            for (long i = 0; i <= s && t->n_merges < want; i++) {
                long j = s - i;
                if (i >= n || j >= n) continue;
                int a = first + (int)i, b = first + (int)j;
                const sbuf *ta = &t->tok[a], *tb = &t->tok[b];
                if (pass == 0 && (!is_alpha_byte((unsigned char)ta->p[ta->n - 1]) ||
                                  !is_alpha_byte((unsigned char)tb->p[0])))
                    continue;
                if (ta->n + tb->n > 32) continue;
                char buf[64];
                memcpy(buf, ta->p, ta->n), memcpy(buf + ta->n, tb->p, tb->n);
                int dummy;
                if (strmap_get(&t->tok_ids, buf, ta->n + tb->n, &dummy)) continue;
                if (add_merge(t, a, b) < 0) return -1;
            }
        }
        first = 0; /* second pass: any two tokens */
    }
    return t->n_merges < want ? -1 : 0;
}

static void map_bytes(const sbuf *raw, sbuf *out) {
    out->n = 0;
    for (size_t i = 0; i < raw->n; i++) {
        char c[4];
        int n = utf8_encode(byte_char((unsigned char)raw->p[i]), c);
        sbuf_put(out, c, (size_t)n);
    }
    sbuf_put(out, "", 0);
}

static void trainer_free(trainer *t) {
    for (int w = 0; w < t->n_words; w++) free(t->words[w].sym);
    free(t->words);
    for (size_t i = 0; i < t->pcap; i++) ivec_free(&t->pairs[i].words);
    free(t->pairs), free(t->heap);
    for (int i = 0; i < t->n_tok; i++) sbuf_free(&t->tok[i]);
    free(t->tok), free(t->merges);
    strmap_free(&t->tok_ids);
}

static json_t *build_json(trainer *t, int vocab_size) {
    json_t *vocab = json_object(), *merges = json_array();
    sbuf m = {0}, m2 = {0}, line = {0};
    for (int i = 0; i < t->n_tok; i++) {
        map_bytes(&t->tok[i], &m);
        json_object_set_new(vocab, m.p, json_integer(i));
    }
    for (int k = 0; k < t->n_merges; k++) {
        map_bytes(&t->tok[t->merges[k][0]], &m);
        map_bytes(&t->tok[t->merges[k][1]], &m2);
        line.n = 0;
        sbuf_put(&line, m.p, m.n), sbuf_putc(&line, ' '), sbuf_put(&line, m2.p, m2.n);
        json_array_append_new(merges, json_string(line.p));
    }
    sbuf_free(&m), sbuf_free(&m2), sbuf_free(&line);
    json_object_set_new(vocab, "<|endoftext|>", json_integer(vocab_size - 1));
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 1);
    json_t *root = json_pack(
        "{s:s, s:n, s:n, s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:n, s:O, s:{s:s, s:b, s:b, "
        "s:b}, s:O, s:{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", "id", vocab_size - 1, "content",
        "<|endoftext|>", "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1,
        "normalizer", "pre_tokenizer", bl, "post_processor", "type", "ByteLevel",
        "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1, "decoder", bl, "model", "type",
        "BPE", "dropout", "unk_token", "continuing_subword_prefix", "", "end_of_word_suffix", "",
        "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
    json_decref(bl);
    return root;
}

int bpe_write_tokenizer_json(const char *path, const char *text, size_t len, int vocab_size,
                             lp_err *err) {
    if (vocab_size < 257 || vocab_size > 1000000)
        return lp_fail(err, "demo tokenizer: vocab size %d: must be 257..1000000", vocab_size);
    if (utf8_valid_prefix(text, len) != len) return lp_fail(err, "training text: invalid UTF-8");
    trainer t = {0};
    const unsigned char *order = byte_order();
    int rc = 0;
    for (int i = 0; i < 256 && !rc; i++) rc = add_token(&t, (const char *)&order[i], 1) < 0;
    int byte_id[256];
    for (int i = 0; i < 256; i++) byte_id[order[i]] = i;
    /* distinct words and their counts */
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)GPT2_PATTERN, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
    strmap seen = {0};
    if (!md) rc = -1;
    size_t pos = 0;
    while (!rc && pos < len) {
        int m = pcre2_match(re, (PCRE2_SPTR)text, len, pos, 0, md, NULL);
        if (m < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b <= a) break;
        pos = b;
        int w;
        if (strmap_get(&seen, text + a, b - a, &w)) {
            t.words[w].weight++;
            continue;
        }
        if (grow((void **)&t.words, t.n_words, sizeof *t.words) < 0) {
            rc = -1;
            break;
        }
        word *wd = &t.words[t.n_words];
        *wd = (word){malloc((b - a) * sizeof(int)), (int)(b - a), 1, 0};
        if (!wd->sym || strmap_put(&seen, text + a, b - a, t.n_words) < 0) {
            free(wd->sym);
            rc = -1;
            break;
        }
        for (size_t i = a; i < b; i++) wd->sym[i - a] = byte_id[(unsigned char)text[i]];
        t.n_words++;
    }
    strmap_free(&seen);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    int want = vocab_size - 257;
    if (!rc) rc = train(&t, want);
    if (!rc) rc = fill(&t, want);
    if (rc) {
        trainer_free(&t);
        return lp_fail(err, "demo tokenizer: training failed (out of memory?)");
    }
    json_t *root = build_json(&t, vocab_size);
    trainer_free(&t);
    char *s = root ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!s) return lp_fail(err, "demo tokenizer: building the JSON failed");
    rc = fs_write_atomic(path, s, strlen(s), err);
    free(s);
    return rc;
}

int bpe_write_demo_tokenizer(const char *dir, int vocab_size, lp_err *err) {
    char path[4096];
    if (fs_mkdirs(dir, err) < 0) return -1;
    size_t len;
    const char *text = bpe_demo_corpus(&len);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (bpe_write_tokenizer_json(path, text, len, vocab_size, err) < 0) return -1;
    static const char cfg[] =
        "{\n \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n \"bos_token\": "
        "\"<|endoftext|>\",\n"
        " \"eos_token\": \"<|endoftext|>\",\n \"unk_token\": \"<|endoftext|>\",\n"
        " \"add_prefix_space\": false\n}\n";
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    return fs_write_atomic(path, cfg, sizeof cfg - 1, err);
}
