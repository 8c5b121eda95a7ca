/* Datasets: files -> documents -> token ids -> sequences; see dataset.h. */
#include "dataset.h"

#include "fsutil.h"
#include "hash.h"
#include "rng.h"
#include "tokenizer_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct part {
    ivec tok;
    /* or, for a packed .bin, the file's tokens read in place (mmap'd: shared by every worker
     * process on a host through the page cache, nothing copied) */
    const unsigned char *view;
    uint64_t view_n;
    int view_bpt;
    void *map;
    size_t map_len;
    unsigned char *mask; /* 1 = the token is a target; NULL: all are */
    size_t mask_cap;
    uint64_t *off; /* pad mode: sequence k is tok[off[k], off[k] + len[k]) */
    uint32_t *len;
    size_t n_seq, seq_cap;
    uint64_t n_docs;
} part;

struct dataset {
    dataset_options o;
    char path[1024];
    const tokenizer *tok;
    part p[2];
    int eos, pad, vocab;
    const char *where; /* ":" + line for text, ": token " + index for .bin */
    int force_split;   /* -1: by val_fraction; else every document goes there (a val file) */
    uint64_t n_docs_seen, n_skipped;
    char first_skip[1600];
    char summary[4096];
    uint64_t id;
    uint32_t *perm[2];
    uint64_t perm_epoch[2];
    int perm_ok[2], perm_next;
};

void dataset_options_default(dataset_options *o) {
    memset(o, 0, sizeof *o);
    o->pack = 1;
    o->on_long = DS_LONG_SPLIT;
}

static int parse_u64(const char *v, uint64_t *out) {
    char *end;
    if (!*v || *v == '-' || *v == ' ') return -1;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end) return -1;
    *out = x;
    return 0;
}

static int choose(const char *key, const char *v, const char *a, const char *b, const char *c,
                  int *out, lp_err *err) {
    if (!strcmp(v, a)) return *out = 0, 0;
    if (!strcmp(v, b)) return *out = 1, 0;
    if (c && !strcmp(v, c)) return *out = 2, 0;
    return lp_fail(err, "data option %s: '%s' is not one of %s, %s%s%s", key, v, a, b,
                   c ? ", " : "", c ? c : "");
}

int dataset_options_set(dataset_options *o, const char *key, const char *v, lp_err *err) {
    uint64_t x;
    if (!strcmp(key, "seq_len")) {
        if (parse_u64(v, &x) < 0 || x < 1 || x > 1u << 24)
            return lp_fail(err, "data option seq_len: '%s' is not a length (1..16777216)", v);
        o->seq_len = (int)x;
    } else if (!strcmp(key, "layout")) {
        if (choose(key, v, "pad", "pack", NULL, &o->pack, err) < 0) return -1;
    } else if (!strcmp(key, "txt_docs")) {
        if (choose(key, v, "blank", "line", NULL, &o->txt_by_line, err) < 0) return -1;
    } else if (!strcmp(key, "bad_data")) {
        if (choose(key, v, "fail", "skip", NULL, &o->skip_bad, err) < 0) return -1;
    } else if (!strcmp(key, "long_docs")) {
        if (choose(key, v, "split", "truncate", "reject", &o->on_long, err) < 0) return -1;
    } else if (!strcmp(key, "special_tokens")) {
        if (choose(key, v, "text", "special", NULL, &o->allow_special, err) < 0) return -1;
    } else if (!strcmp(key, "val_fraction")) {
        char *end;
        double f = strtod(v, &end);
        if (!*v || *end || !(f >= 0 && f < 1))
            return lp_fail(err, "data option val_fraction: '%s' is not a number in [0, 1)", v);
        o->val_fraction = f;
    } else if (!strcmp(key, "val_file")) {
        o->val_path = *v ? v : NULL;
    } else if (!strcmp(key, "seed")) {
        if (parse_u64(v, &x) < 0) return lp_fail(err, "data option seed: '%s' is not a number", v);
        o->seed = x;
    } else if (!strcmp(key, "vocab_size")) {
        if (parse_u64(v, &x) < 0 || x > 1u << 30)
            return lp_fail(err, "data option vocab_size: '%s' is not a size", v);
        o->vocab_size = (int)x;
    } else {
        return lp_fail(err,
                       "unknown data option '%s' (seq_len, layout, txt_docs, bad_data, "
                       "long_docs, special_tokens, val_fraction, val_file, seed, vocab_size)",
                       key);
    }
    return 0;
}

/* A bad record: skipped (and counted) or fatal, by option. Returns 0 to go on, -1 to fail. */
static int bad(dataset *d, lp_err *err, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(dataset *d, lp_err *err, size_t line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!d->o.skip_bad)
        return lp_fail(err, "%s%s%zu: %s (--bad-data skip skips bad records)", d->path, d->where,
                       line, msg);
    if (!d->n_skipped++)
        snprintf(d->first_skip, sizeof d->first_skip, "%s%s%zu: %s", d->path, d->where, line, msg);
    return 0;
}

static uint64_t part_ntok(const part *p) {
    return p->view ? p->view_n : p->tok.n;
}

static int part_tok(const part *p, uint64_t i) {
    if (!p->view) return p->tok.p[i];
    const unsigned char *b = p->view + i * (uint64_t)p->view_bpt;
    if (p->view_bpt == 2) return b[0] | b[1] << 8;
    return (int)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24);
}

/* What the sequences are made of, whatever the file's form (.txt or the .bin made from it). */
static uint64_t part_hash(const part *p, uint64_t h) {
    uint32_t buf[4096];
    uint64_t n = part_ntok(p);
    h = hash_xxh3(h, &n, sizeof n);
    for (uint64_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < 4096 && i < n; k++, i++) buf[k] = (uint32_t)part_tok(p, i);
        h = hash_xxh3(h, buf, k * sizeof buf[0]);
    }
    if (p->mask) h = hash_xxh3(h, p->mask, (size_t)n);
    if (p->n_seq) {
        h = hash_xxh3(h, p->off, p->n_seq * sizeof *p->off);
        h = hash_xxh3(h, p->len, p->n_seq * sizeof *p->len);
    }
    return h;
}

static int part_push(part *p, int id, int target) {
    if (ivec_push(&p->tok, id) < 0) return -1;
    if (!target && !p->mask) { /* the first masked token: from now on keep a mask */
        p->mask_cap = p->tok.cap;
        if (!(p->mask = malloc(p->mask_cap))) return -1;
        memset(p->mask, 1, p->tok.n);
    }
    if (p->mask) {
        if (p->mask_cap < p->tok.cap) {
            unsigned char *m = realloc(p->mask, p->tok.cap);
            if (!m) return -1;
            p->mask = m, p->mask_cap = p->tok.cap;
        }
        p->mask[p->tok.n - 1] = (unsigned char)(target != 0);
    }
    return 0;
}

static int part_add_seq(part *p, uint64_t off, uint32_t len) {
    if (p->n_seq == p->seq_cap) {
        size_t cap = p->seq_cap ? p->seq_cap * 2 : 256;
        uint64_t *o = realloc(p->off, cap * sizeof *o);
        if (!o) return -1;
        p->off = o;
        uint32_t *l = realloc(p->len, cap * sizeof *l);
        if (!l) return -1;
        p->len = l, p->seq_cap = cap;
    }
    p->off[p->n_seq] = off, p->len[p->n_seq] = len;
    p->n_seq++;
    return 0;
}

/* The j-th document (in file order) goes to validation when floor((j+1)f) > floor(jf): exactly
 * round-down(n f) documents, evenly spread, the same on every machine. */
static int doc_is_val(const dataset *d, uint64_t j) {
    double f = d->o.val_fraction;
    if (f <= 0 || d->o.val_path) return 0;
    return (uint64_t)((double)(j + 1) * f) > (uint64_t)((double)j * f);
}

/* One document's ids (mask: NULL = all targets) into its split; add_eos appends the EOS. */
static int add_doc(dataset *d, int split, const int *ids, size_t n, const unsigned char *mask,
                   int add_eos, size_t line, lp_err *err) {
    if (split < 0) split = d->force_split;
    if (split < 0) split = doc_is_val(d, d->n_docs_seen) ? DS_VAL : DS_TRAIN;
    d->n_docs_seen++;
    if (add_eos && d->eos >= 0 && n && ids[n - 1] == d->eos) add_eos = 0;
    size_t total = n + (add_eos && d->eos >= 0);
    if (!total) return 0;
    int T = d->o.seq_len;
    if (!d->o.pack && total > (size_t)T + 1 && d->o.on_long == DS_LONG_REJECT)
        return bad(d, err, line, "document of %zu tokens is longer than the context (%d + 1)",
                   total, T);
    part *p = &d->p[split];
    uint64_t start = p->tok.n;
    for (size_t i = 0; i < n; i++)
        if (part_push(p, ids[i], mask ? mask[i] : 1) < 0) return lp_fail(err, "out of memory");
    if (total > n && part_push(p, d->eos, 1) < 0) return lp_fail(err, "out of memory");
    p->n_docs++;
    if (d->o.pack) return 0;
    uint64_t len = total;
    if (len <= (uint64_t)T + 1 || d->o.on_long == DS_LONG_TRUNCATE)
        return part_add_seq(p, start, (uint32_t)(len < (uint64_t)T + 1 ? len : (uint64_t)T + 1)) < 0
                   ? lp_fail(err, "out of memory")
                   : 0;
    for (uint64_t o = 0; o + 1 < len; o += (uint64_t)T) { /* windows of T+1, stride T */
        uint64_t l = len - o < (uint64_t)T + 1 ? len - o : (uint64_t)T + 1;
        if (part_add_seq(p, start + o, (uint32_t)l) < 0) return lp_fail(err, "out of memory");
    }
    return 0;
}

static int encode(dataset *d, const char *text, size_t len, int first, ivec *out, size_t line,
                  int *skipped, lp_err *err) {
    int *ids;
    size_t n;
    lp_err e;
    *skipped = 0;
    if (tokenizer_encode(d->tok, text, len, d->o.allow_special, first, &ids, &n, &e) < 0) {
        *skipped = 1;
        return bad(d, err, line, "%s", e.msg);
    }
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = ivec_push(out, ids[i]);
    free(ids);
    return rc ? lp_fail(err, "out of memory") : 0;
}

static size_t line_of(const char *s, size_t off) {
    size_t line = 1;
    for (size_t i = 0; i < off; i++) line += s[i] == '\n';
    return line;
}

static int text_doc(dataset *d, const char *buf, size_t a, size_t b, size_t line, lp_err *err) {
    size_t ok = utf8_valid_prefix(buf + a, b - a);
    if (ok != b - a)
        return bad(d, err, line + line_of(buf + a, ok) - 1, "invalid UTF-8 (byte 0x%02x)",
                   (unsigned char)buf[a + ok]);
    ivec ids = {0};
    int skipped;
    int rc = encode(d, buf + a, b - a, 1, &ids, line, &skipped, err);
    if (!rc && !skipped) rc = add_doc(d, -1, ids.p, ids.n, NULL, 1, line, err);
    ivec_free(&ids);
    return rc;
}

static int is_blank(const char *s, size_t a, size_t b) {
    for (size_t i = a; i < b; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

static int load_txt(dataset *d, const char *buf, size_t len, lp_err *err) {
    size_t line = 1, doc_start = 0, doc_end = 0, doc_line = 0;
    int in_doc = 0;
    for (size_t i = 0; i <= len;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        int blank = is_blank(buf, i, e);
        if (d->o.txt_by_line) {
            if (!blank && text_doc(d, buf, i, e, line, err) < 0) return -1;
        } else if (blank) {
            if (in_doc && text_doc(d, buf, doc_start, doc_end, doc_line, err) < 0) return -1;
            in_doc = 0;
        } else {
            if (!in_doc) doc_start = i, doc_line = line, in_doc = 1;
            doc_end = e;
        }
        if (e >= len) break;
        i = e + 1, line++;
    }
    if (in_doc && text_doc(d, buf, doc_start, doc_end, doc_line, err) < 0) return -1;
    return 0;
}

static int load_jsonl(dataset *d, const char *buf, size_t len, lp_err *err) {
    size_t line = 0;
    ivec ids = {0};
    sbuf mask = {0};
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        line++;
        size_t a = i;
        i = e + 1;
        if (is_blank(buf, a, e)) continue;
        json_error_t je;
        json_t *o = json_loadb(buf + a, e - a, JSON_REJECT_DUPLICATES, &je);
        if (!o) {
            rc = bad(d, err, line, "malformed JSON: %s", je.text);
            continue;
        }
        json_t *text = json_object_get(o, "text"), *prompt = json_object_get(o, "prompt"),
               *completion = json_object_get(o, "completion");
        ids.n = 0, mask.n = 0;
        int skipped = 0;
        if (!json_is_object(o)) {
            rc = bad(d, err, line, "not a JSON object");
        } else if (text) {
            if (!json_is_string(text))
                rc = bad(d, err, line, "\"text\" is not a string");
            else {
                rc = encode(d, json_string_value(text), json_string_length(text), 1, &ids, line,
                            &skipped, err);
                if (!rc && !skipped) rc = add_doc(d, -1, ids.p, ids.n, NULL, 1, line, err);
            }
        } else if (prompt || completion) {
            if (!json_is_string(prompt) || !json_is_string(completion)) {
                rc = bad(d, err, line, "\"prompt\" and \"completion\" must both be strings");
            } else {
                rc = encode(d, json_string_value(prompt), json_string_length(prompt), 1, &ids, line,
                            &skipped, err);
                size_t np = ids.n;
                if (!rc && !skipped)
                    rc = encode(d, json_string_value(completion), json_string_length(completion), 0,
                                &ids, line, &skipped, err);
                if (!rc && !skipped) {
                    for (size_t k = 0; k < ids.n && !rc; k++) rc = sbuf_putc(&mask, k >= np);
                    if (rc)
                        rc = lp_fail(err, "out of memory");
                    else
                        rc = add_doc(d, -1, ids.p, ids.n, (const unsigned char *)mask.p, 1, line,
                                     err);
                }
            }
        } else {
            rc = bad(d, err, line, "no \"text\" nor \"prompt\"/\"completion\" key");
        }
        json_decref(o);
    }
    ivec_free(&ids);
    sbuf_free(&mask);
    return rc;
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int load_bin(dataset *d, const char *buf, size_t len, int split, lp_err *err) {
    const unsigned char *u = (const unsigned char *)buf;
    if (len < 24 || memcmp(buf, "LPTK", 4))
        return lp_fail(err, "%s: not a loraps token file (no LPTK header)", d->path);
    uint32_t version = rd32(u + 4), bpt = rd32(u + 8), eos = rd32(u + 12);
    uint64_t count = rd32(u + 16) | (uint64_t)rd32(u + 20) << 32;
    if (version != 1)
        return lp_fail(err, "%s: token file version %u (this reads 1)", d->path, version);
    if (bpt != 2 && bpt != 4)
        return lp_fail(err, "%s: %u bytes per token (must be 2 or 4)", d->path, bpt);
    if (count > (len - 24) / bpt || (len - 24) != count * bpt)
        return lp_fail(err, "%s: the header says %llu tokens but the file holds %zu bytes of them",
                       d->path, (unsigned long long)count, len - 24);
    if (!count) return lp_fail(err, "%s: no tokens", d->path);
    int eos_id = eos == 0xFFFFFFFFu ? -1 : (int)eos;
    int target = split >= 0 ? split : d->force_split;
    if (d->o.pack && (target >= 0 || d->o.val_fraction <= 0)) {
        /* read in place if every id is good: the ids are checked once, here */
        uint64_t n_bad = 0, docs = 0;
        for (uint64_t i = 0; i < count; i++) {
            const unsigned char *p = u + 24 + i * bpt;
            uint32_t id = bpt == 2 ? (uint32_t)(p[0] | p[1] << 8) : rd32(p);
            n_bad += id >= (uint32_t)d->vocab;
            docs += (int)id == eos_id || i + 1 == count;
        }
        part *pt = &d->p[target < 0 ? DS_TRAIN : target];
        if (!n_bad && !pt->tok.n && !pt->view) {
            pt->view = u + 24, pt->view_n = count, pt->view_bpt = (int)bpt;
            pt->n_docs = docs;
            d->n_docs_seen += docs;
            return 1; /* the caller keeps the mapping */
        }
    }
    ivec doc = {0};
    int rc = 0;
    for (uint64_t i = 0; i < count && !rc; i++) {
        const unsigned char *p = u + 24 + i * bpt;
        uint32_t id = bpt == 2 ? (uint32_t)(p[0] | p[1] << 8) : rd32(p);
        if (id >= (uint32_t)d->vocab) {
            rc = bad(d, err, (size_t)i, "id %u >= vocab size %d", id, d->vocab);
            continue;
        }
        if (ivec_push(&doc, (int)id) < 0) rc = lp_fail(err, "out of memory");
        if (!rc && ((int)id == eos_id || i + 1 == count)) {
            rc = add_doc(d, split, doc.p, doc.n, NULL, 0, (size_t)i, err);
            doc.n = 0;
        }
    }
    ivec_free(&doc);
    return rc;
}

static int load_file(dataset *d, const char *path, int split, lp_err *err) {
    snprintf(d->path, sizeof d->path, "%s", path);
    const char *ext = strrchr(path, '.');
    int rc;
    d->force_split = split;
    d->where = ext && !strcmp(ext, ".bin") ? ": token " : ":";
    if (ext && !strcmp(ext, ".bin")) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            if (fd >= 0) close(fd);
            return lp_fail(err, "%s: cannot open: %s", path, strerror(errno));
        }
        size_t len = (size_t)st.st_size;
        void *map = len ? mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) : NULL;
        close(fd);
        if (!len) return lp_fail(err, "%s: empty file", path);
        if (map == MAP_FAILED) return lp_fail(err, "%s: mmap: %s", path, strerror(errno));
        rc = load_bin(d, map, len, split, err);
        if (rc == 1) { /* read in place: the part owns the mapping now */
            part *pt = d->p[DS_VAL].view == (const unsigned char *)map + 24 ? &d->p[DS_VAL]
                                                                            : &d->p[DS_TRAIN];
            pt->map = map, pt->map_len = len;
            return 0;
        }
        munmap(map, len);
        return rc;
    }
    char *buf;
    size_t len;
    if (fs_read_all(path, &buf, &len, err) < 0) return -1;
    if (!len)
        rc = lp_fail(err, "%s: empty file", path);
    else if (!d->tok)
        rc = lp_fail(err, "%s: text data needs a tokenizer", path);
    else if (ext && !strcmp(ext, ".jsonl"))
        rc = load_jsonl(d, buf, len, err);
    else
        rc = load_txt(d, buf, len, err);
    free(buf);
    return rc;
}

int dataset_open(dataset **out, const char *path, const tokenizer *tok, const dataset_options *o,
                 lp_err *err) {
    *out = NULL;
    if (o->seq_len < 1) return lp_fail(err, "dataset: seq_len must be at least 1");
    if (o->val_fraction < 0 || o->val_fraction >= 1)
        return lp_fail(err, "dataset: validation fraction %g must be in [0, 1)", o->val_fraction);
    dataset *d = calloc(1, sizeof *d);
    if (!d) return lp_fail(err, "out of memory");
    d->o = *o;
    d->tok = tok;
    d->eos = tok ? tokenizer_eos_id(tok) : -1;
    d->vocab = o->vocab_size > 0 ? o->vocab_size : tok ? tokenizer_vocab_size(tok) : 0;
    if (d->vocab <= 0) {
        free(d);
        return lp_fail(err, "dataset: no tokenizer and no vocab size");
    }
    int rc = load_file(d, path, -1, err);
    if (!rc && o->val_path) rc = load_file(d, o->val_path, DS_VAL, err);
    snprintf(d->path, sizeof d->path, "%s", path);
    /* a .bin file's own eos pads when the tokenizer names none */
    d->pad = d->eos >= 0 ? d->eos : 0;
    if (!rc && !part_ntok(&d->p[DS_TRAIN]))
        rc = lp_fail(err, "%s: no usable documents (%s)", path,
                     d->n_skipped ? "every record was bad" : "only blank lines");
    /* packing needs T + 1 tokens for one window: fewer would make an epoch of no sequence */
    if (!rc && !dataset_n_sequences(d, DS_TRAIN))
        rc = lp_fail(err, "%s: %llu tokens of usable data, shorter than one sequence of %d", path,
                     (unsigned long long)part_ntok(&d->p[DS_TRAIN]), o->seq_len);
    if (rc) {
        dataset_free(d);
        return -1;
    }
    uint64_t h = hash_xxh3(0, &o->seq_len, sizeof o->seq_len);
    h = hash_xxh3(h, &o->pack, sizeof o->pack);
    d->id = part_hash(&d->p[DS_VAL], part_hash(&d->p[DS_TRAIN], h));
    if (!d->id) d->id = 1;
    snprintf(d->summary, sizeof d->summary,
             "%s: %llu documents, %llu train sequences (%llu tokens), %llu validation sequences "
             "(%llu tokens) of %d tokens, %s; %llu bad records skipped%s%s",
             path, (unsigned long long)(d->p[0].n_docs + d->p[1].n_docs),
             (unsigned long long)dataset_n_sequences(d, DS_TRAIN),
             (unsigned long long)part_ntok(&d->p[0]),
             (unsigned long long)dataset_n_sequences(d, DS_VAL),
             (unsigned long long)part_ntok(&d->p[1]), o->seq_len,
             o->pack ? (d->p[0].view ? "packed, read in place" : "packed") : "padded",
             (unsigned long long)d->n_skipped, d->n_skipped ? ", the first: " : "", d->first_skip);
    *out = d;
    return 0;
}

void dataset_free(dataset *d) {
    if (!d) return;
    for (int s = 0; s < 2; s++) {
        ivec_free(&d->p[s].tok);
        free(d->p[s].mask), free(d->p[s].off), free(d->p[s].len);
        if (d->p[s].map) munmap(d->p[s].map, d->p[s].map_len);
        free(d->perm[s]);
    }
    free(d);
}

uint64_t dataset_n_sequences(const dataset *d, int split) {
    const part *p = &d->p[split];
    if (!d->o.pack) return p->n_seq;
    uint64_t n = part_ntok(p);
    if (n < 2) return 0;
    return (n - 1 + (uint64_t)d->o.seq_len - 1) / (uint64_t)d->o.seq_len;
}

uint64_t dataset_n_tokens(const dataset *d, int split) {
    return part_ntok(&d->p[split]);
}

int dataset_seq_len(const dataset *d) {
    return d->o.seq_len;
}

const char *dataset_summary(const dataset *d) {
    return d->summary;
}

uint64_t dataset_id(const dataset *d) {
    return d->id;
}

uint64_t dataset_n_skipped(const dataset *d) {
    return d->n_skipped;
}

static const uint32_t *perm_for(dataset *d, uint64_t epoch, uint64_t n) {
    for (int k = 0; k < 2; k++)
        if (d->perm_ok[k] && d->perm_epoch[k] == epoch) return d->perm[k];
    int k = d->perm_next;
    d->perm_next ^= 1;
    if (!d->perm[k] && !(d->perm[k] = malloc(n * sizeof(uint32_t)))) return NULL;
    uint32_t *p = d->perm[k];
    for (uint64_t i = 0; i < n; i++) p[i] = (uint32_t)i;
    rng r;
    rng_seed(&r, rng_mix(d->o.seed ^ 0x64617461ull, epoch));
    for (uint64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        uint64_t j = rng_next(&r) % (i + 1);
        uint32_t t = p[i];
        p[i] = p[j], p[j] = t;
    }
    d->perm_ok[k] = 1, d->perm_epoch[k] = epoch;
    return p;
}

void dataset_sequence(dataset *d, int split, uint64_t index, int *inputs, int *targets) {
    int T = d->o.seq_len;
    uint64_t n = dataset_n_sequences(d, split);
    for (int t = 0; t < T; t++) inputs[t] = d->pad, targets[t] = -1;
    if (!n) return;
    uint64_t s = index % n;
    if (split == DS_TRAIN) {
        const uint32_t *p = perm_for(d, index / n, n);
        if (p) s = p[s]; /* out of memory: the unshuffled order, still deterministic */
    }
    const part *pt = &d->p[split];
    uint64_t off, len;
    if (d->o.pack) {
        off = s * (uint64_t)T;
        uint64_t total = part_ntok(pt);
        len = total - off < (uint64_t)T + 1 ? total - off : (uint64_t)T + 1;
    } else {
        off = pt->off[s], len = pt->len[s];
    }
    for (uint64_t t = 0; t < len && t < (uint64_t)T; t++) {
        inputs[t] = part_tok(pt, off + t);
        if (t + 1 < len && (!pt->mask || pt->mask[off + t + 1]))
            targets[t] = part_tok(pt, off + t + 1);
    }
}

void dataset_batch(dataset *d, int split, uint64_t first, int n, int *inputs, int *targets) {
    int T = d->o.seq_len;
    for (int i = 0; i < n; i++)
        dataset_sequence(d, split, first + (uint64_t)i, inputs + (size_t)i * T,
                         targets + (size_t)i * T);
}

uint64_t dataset_pos_global(const dataset *d, const dataset_pos *p) {
    return p->epoch * dataset_n_sequences(d, DS_TRAIN) + p->index;
}

void dataset_next_batch(dataset *d, dataset_pos *p, int rank, int n_ranks, int B, int *inputs,
                        int *targets) {
    uint64_t g = dataset_pos_global(d, p), n = dataset_n_sequences(d, DS_TRAIN);
    dataset_batch(d, DS_TRAIN, g + (uint64_t)rank * (uint64_t)B, B, inputs, targets);
    g += (uint64_t)n_ranks * (uint64_t)B;
    p->epoch = g / n, p->index = g % n;
}

json_t *dataset_pos_to_json(const dataset *d, const dataset_pos *p) {
    json_t *j =
        json_pack("{s:I, s:I}", "epoch", (json_int_t)p->epoch, "index", (json_int_t)p->index);
    if (j && d) {
        json_object_set_new(j, "n_sequences",
                            json_integer((json_int_t)dataset_n_sequences(d, DS_TRAIN)));
        /* the seed as a string: JSON integers are signed 64-bit */
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)d->o.seed);
        json_object_set_new(j, "seed", json_string(s));
    }
    return j;
}

int dataset_pos_from_json(const dataset *d, json_t *j, dataset_pos *p, lp_err *err) {
    json_t *e = json_object_get(j, "epoch"), *i = json_object_get(j, "index");
    if (!json_is_integer(e) || !json_is_integer(i) || json_integer_value(e) < 0 ||
        json_integer_value(i) < 0)
        return lp_fail(err, "data position: needs non-negative integers \"epoch\" and \"index\"");
    dataset_pos r = {(uint64_t)json_integer_value(e), (uint64_t)json_integer_value(i)};
    if (d) {
        json_t *n = json_object_get(j, "n_sequences");
        const char *seed = json_string_value(json_object_get(j, "seed"));
        uint64_t have = dataset_n_sequences(d, DS_TRAIN);
        if (json_is_integer(n) && (uint64_t)json_integer_value(n) != have)
            return lp_fail(err,
                           "data position: saved for %lld sequences per epoch, this dataset "
                           "has %llu (other data or options?)",
                           (long long)json_integer_value(n), (unsigned long long)have);
        if (seed && strtoull(seed, NULL, 10) != d->o.seed)
            return lp_fail(err, "data position: saved with seed %s, this dataset uses %llu", seed,
                           (unsigned long long)d->o.seed);
        if (r.index >= have)
            return lp_fail(err, "data position: index %llu past the epoch's %llu sequences",
                           (unsigned long long)r.index, (unsigned long long)have);
    }
    *p = r;
    return 0;
}

int dataset_write_bin(const char *path, const int *ids, size_t n, int bytes_per_token, int eos_id,
                      lp_err *err) {
    if (bytes_per_token != 2 && bytes_per_token != 4)
        return lp_fail(err, "token file: bytes per token must be 2 or 4");
    size_t size = 24 + n * (size_t)bytes_per_token;
    unsigned char *b = malloc(size);
    if (!b) return lp_fail(err, "out of memory");
    uint32_t h[4] = {1, (uint32_t)bytes_per_token, eos_id < 0 ? 0xFFFFFFFFu : (uint32_t)eos_id,
                     (uint32_t)n};
    memcpy(b, "LPTK", 4);
    for (int k = 0; k < 4; k++)
        for (int q = 0; q < 4; q++) b[4 + 4 * k + q] = (unsigned char)(h[k] >> (8 * q));
    for (int q = 0; q < 4; q++) b[20 + q] = (unsigned char)((uint64_t)n >> (32 + 8 * q));
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (bytes_per_token == 2 && ids[i] > 65535)) {
            free(b);
            return lp_fail(err, "token file: id %d does not fit %d bytes", ids[i], bytes_per_token);
        }
        for (int q = 0; q < bytes_per_token; q++)
            b[24 + i * (size_t)bytes_per_token + (size_t)q] =
                (unsigned char)((uint32_t)ids[i] >> (8 * q));
    }
    int rc = fs_write_atomic(path, b, size, err);
    free(b);
    return rc;
}

int dataset_export_bin(const dataset *d, int split, const char *path, lp_err *err) {
    const part *p = &d->p[split];
    if (p->mask)
        return lp_fail(err, "%s: prompt/completion data has a loss mask, which a .bin cannot hold",
                       d->path);
    uint64_t n = part_ntok(p);
    if (!n) return lp_fail(err, "%s: no tokens to write", d->path);
    int *ids = malloc(n * sizeof *ids);
    if (!ids) return lp_fail(err, "out of memory");
    for (uint64_t i = 0; i < n; i++) ids[i] = part_tok(p, i);
    int rc = dataset_write_bin(path, ids, n, d->vocab <= 65536 ? 2 : 4, d->eos, err);
    free(ids);
    return rc;
}
