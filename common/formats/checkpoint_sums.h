/* The hashes that protect a checkpoint's files: SHA-256 (libsodium), recorded in
 * trainer_state.json and in SHA256SUMS, the format `sha256sum -c SHA256SUMS` checks inside the
 * folder; and the older hash64_fnv of format_version 1 checkpoints, still verified on load. */
#ifndef LORAPS_CHECKPOINT_SUMS_H
#define LORAPS_CHECKPOINT_SUMS_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

#define CKPT_SUMS_FILE    "SHA256SUMS"
#define CKPT_SHA256_BYTES 32
#define CKPT_NAME_MAX     256

/* SHA-256 of a whole file, and its size. */
int ckpt_sha256_file(const char *path, unsigned char digest[CKPT_SHA256_BYTES], uint64_t *size,
                     lp_err *err);
/* SHA-256 of a buffer. */
void ckpt_sha256(const void *data, size_t len, unsigned char digest[CKPT_SHA256_BYTES]);
/* hash64_fnv of a whole file (format_version 1 checkpoints), and its size. */
int ckpt_fnv_file(const char *path, uint64_t *hash, uint64_t *size, lp_err *err);

/* 64 lowercase hex digits and back (0, or -1 if hex is not exactly that). */
void ckpt_sha256_hex(const unsigned char digest[CKPT_SHA256_BYTES], char hex[65]);
int ckpt_sha256_parse(const char *hex, unsigned char digest[CKPT_SHA256_BYTES]);

/* The lines of a SHA256SUMS file: "<hex>  <name>" (or "<hex> *<name>"), plain names only. */
typedef struct ckpt_sums {
    int n;
    char (*names)[CKPT_NAME_MAX];
    unsigned char (*digests)[CKPT_SHA256_BYTES];
} ckpt_sums;

int ckpt_sums_add(ckpt_sums *s, const char *name, const unsigned char digest[CKPT_SHA256_BYTES],
                  lp_err *err);
/* The entry for name, or NULL. */
const unsigned char *ckpt_sums_find(const ckpt_sums *s, const char *name);
/* Writes dir/SHA256SUMS atomically. */
int ckpt_sums_write(const char *dir, const ckpt_sums *s, lp_err *err);
/* Reads dir/SHA256SUMS; returns 1 (and an empty s) when there is none, -1 when it is malformed. */
int ckpt_sums_read(const char *dir, ckpt_sums *s, lp_err *err);
void ckpt_sums_free(ckpt_sums *s);

#endif
