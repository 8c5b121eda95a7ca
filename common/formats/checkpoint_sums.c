/* File hashes for checkpoints: SHA-256 through libsodium, SHA256SUMS files, and the legacy
 * hash64_fnv of format_version 1. */
#include "checkpoint_sums.h"

#include "fsutil.h"
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1 << 20) /* a multiple of 8: hash64_fnv of the chunks is that of the whole */

/* Reads path in full chunks (only the last may be short) into each(ctx, chunk, n). */
static int each_chunk(const char *path, void (*each)(void *ctx, const unsigned char *p, size_t n),
                      void *ctx, uint64_t *size, lp_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lp_fail(err, "%s: %s", path, strerror(errno));
    unsigned char *buf = malloc(CHUNK);
    uint64_t total = 0;
    int rc = buf ? 0 : lp_fail(err, "out of memory");
    for (size_t got = CHUNK; rc == 0 && got == CHUNK;) {
        got = 0;
        while (got < CHUNK) {
            ssize_t r = read(fd, buf + got, CHUNK - got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) rc = lp_fail(err, "%s: %s", path, strerror(errno));
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (rc == 0 && got) each(ctx, buf, got);
        total += got;
    }
    free(buf);
    close(fd);
    if (rc == 0) *size = total;
    return rc;
}

static void sha256_update(void *ctx, const unsigned char *p, size_t n) {
    crypto_hash_sha256_update(ctx, p, n);
}

static void fnv_update(void *ctx, const unsigned char *p, size_t n) {
    uint64_t *h = ctx;
    *h = hash64_fnv(*h, p, n);
}

int ckpt_sha256_file(const char *path, unsigned char digest[CKPT_SHA256_BYTES], uint64_t *size,
                     lp_err *err) {
    if (sodium_init() < 0) return lp_fail(err, "libsodium could not be initialised");
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    if (each_chunk(path, sha256_update, &st, size, err) < 0) return -1;
    crypto_hash_sha256_final(&st, digest);
    return 0;
}

void ckpt_sha256(const void *data, size_t len, unsigned char digest[CKPT_SHA256_BYTES]) {
    crypto_hash_sha256(digest, data, len);
}

int ckpt_fnv_file(const char *path, uint64_t *hash, uint64_t *size, lp_err *err) {
    uint64_t h = HASH64_FNV_INIT;
    if (each_chunk(path, fnv_update, &h, size, err) < 0) return -1;
    *hash = h;
    return 0;
}

void ckpt_sha256_hex(const unsigned char digest[CKPT_SHA256_BYTES], char hex[65]) {
    sodium_bin2hex(hex, 65, digest, CKPT_SHA256_BYTES);
}

int ckpt_sha256_parse(const char *hex, unsigned char digest[CKPT_SHA256_BYTES]) {
    size_t n = 0;
    const char *end;
    if (strlen(hex) != 2 * CKPT_SHA256_BYTES ||
        sodium_hex2bin(digest, CKPT_SHA256_BYTES, hex, strlen(hex), NULL, &n, &end) != 0 ||
        n != CKPT_SHA256_BYTES || *end)
        return -1;
    return 0;
}

int ckpt_sums_add(ckpt_sums *s, const char *name, const unsigned char digest[CKPT_SHA256_BYTES],
                  lp_err *err) {
    if (strlen(name) >= CKPT_NAME_MAX || !name[0] || strchr(name, '/') || strchr(name, '\n'))
        return lp_fail(err, "'%s' is not a plain file name", name);
    char(*names)[CKPT_NAME_MAX] = realloc(s->names, (size_t)(s->n + 1) * sizeof *names);
    if (names) s->names = names;
    unsigned char(*digests)[CKPT_SHA256_BYTES] =
        realloc(s->digests, (size_t)(s->n + 1) * sizeof *digests);
    if (digests) s->digests = digests;
    if (!names || !digests) return lp_fail(err, "out of memory");
    snprintf(s->names[s->n], CKPT_NAME_MAX, "%s", name);
    memcpy(s->digests[s->n], digest, CKPT_SHA256_BYTES);
    s->n++;
    return 0;
}

const unsigned char *ckpt_sums_find(const ckpt_sums *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return s->digests[i];
    return NULL;
}

int ckpt_sums_write(const char *dir, const ckpt_sums *s, lp_err *err) {
    char path[PATH_MAX], hex[65];
    if (snprintf(path, sizeof path, "%s/%s", dir, CKPT_SUMS_FILE) >= (int)sizeof path)
        return lp_fail(err, "%s: path too long", dir);
    size_t line = 2 * CKPT_SHA256_BYTES + 3 + CKPT_NAME_MAX;
    char *text = malloc((size_t)s->n * line + 1);
    if (!text) return lp_fail(err, "out of memory");
    size_t len = 0;
    for (int i = 0; i < s->n; i++) {
        ckpt_sha256_hex(s->digests[i], hex);
        len += (size_t)snprintf(text + len, line + 1, "%s  %s\n", hex, s->names[i]);
    }
    int rc = fs_write_atomic(path, text, len, err);
    free(text);
    return rc;
}

/* One line of the file: "<64 hex> <space or *><name>". */
static int parse_line(char *line, ckpt_sums *s, const char *path, int lineno, lp_err *err) {
    unsigned char digest[CKPT_SHA256_BYTES];
    size_t hex_len = 2 * CKPT_SHA256_BYTES;
    if (strlen(line) < hex_len + 3 || line[hex_len] != ' ' ||
        (line[hex_len + 1] != ' ' && line[hex_len + 1] != '*'))
        return lp_fail(err, "%s:%d: not a sha256sum line (<64 hex digits>  <file name>)", path,
                       lineno);
    line[hex_len] = 0;
    if (ckpt_sha256_parse(line, digest) < 0)
        return lp_fail(err, "%s:%d: '%s' is not a SHA-256 in hex", path, lineno, line);
    if (ckpt_sums_add(s, line + hex_len + 2, digest, err) < 0)
        return lp_wrap(err, "%s:%d", path, lineno);
    return 0;
}

int ckpt_sums_read(const char *dir, ckpt_sums *s, lp_err *err) {
    memset(s, 0, sizeof *s);
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, CKPT_SUMS_FILE) >= (int)sizeof path)
        return lp_fail(err, "%s: path too long", dir);
    if (!fs_exists(path)) return 1;
    char *text;
    size_t len;
    if (fs_read_all(path, &text, &len, err) < 0) return -1;
    int rc = 0, lineno = 0;
    char *save = NULL;
    if (strlen(text) != len) rc = lp_fail(err, "%s: holds a NUL byte", path);
    for (char *line = rc ? NULL : strtok_r(text, "\n", &save); line && rc == 0;
         line = strtok_r(NULL, "\n", &save))
        rc = parse_line(line, s, path, ++lineno, err);
    free(text);
    if (rc) ckpt_sums_free(s);
    return rc;
}

void ckpt_sums_free(ckpt_sums *s) {
    free(s->names);
    free(s->digests);
    memset(s, 0, sizeof *s);
}
