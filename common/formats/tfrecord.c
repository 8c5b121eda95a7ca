#include "tfrecord.h"

#include <errno.h>
#include <isa-l/crc.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint32_t tfrecord_crc32c(const void *data, size_t len) {
    /* ISA-L's iSCSI CRC neither inverts its input nor its output: the standard CRC32C is the
     * inverted CRC from an all-ones start. It takes an int length, hence the chunks. */
    const unsigned char *p = data;
    uint32_t crc = 0xffffffffu;
    while (len > 0) {
        size_t n = len > (size_t)INT_MAX ? (size_t)INT_MAX : len;
        crc = crc32_iscsi((unsigned char *)p, (int)n, crc);
        p += n;
        len -= n;
    }
    return ~crc;
}

uint32_t tfrecord_mask_crc(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

void tfrecord_frame(const void *data, size_t len, unsigned char *out) {
    uint64_t n = len;
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(n >> (8 * i));
    put_le32(out + 8, tfrecord_mask_crc(tfrecord_crc32c(out, 8)));
    if (len) memcpy(out + 12, data, len);
    put_le32(out + 12 + len, tfrecord_mask_crc(tfrecord_crc32c(data, len)));
}

int tfrecord_write(int fd, const void *data, size_t len, lp_err *err) {
    if (len > TFRECORD_MAX_DATA) return lp_fail(err, "a record of %zu bytes is too long", len);
    unsigned char *rec = malloc(len + TFRECORD_OVERHEAD);
    if (!rec) return lp_fail(err, "out of memory");
    tfrecord_frame(data, len, rec);
    size_t left = len + TFRECORD_OVERHEAD;
    const unsigned char *p = rec;
    int rc = 0;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = lp_fail(err, "write failed: %s", strerror(errno));
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    free(rec);
    return rc;
}

int tfrecord_reader_open(tfrecord_reader *r, const char *path, lp_err *err) {
    memset(r, 0, sizeof *r);
    r->f = fopen(path, "rb");
    if (!r->f) return lp_fail(err, "%s: %s", path, strerror(errno));
    r->path = strdup(path);
    if (!r->path) {
        fclose(r->f);
        r->f = NULL;
        return lp_fail(err, "out of memory");
    }
    return 0;
}

static int damaged(tfrecord_reader *r, lp_err *err, const char *what) {
    return lp_fail(err, "%s: the record at byte %llu %s", r->path, (unsigned long long)r->offset,
                   what);
}

int tfrecord_next(tfrecord_reader *r, const void **data, size_t *len, lp_err *err) {
    unsigned char head[12], tail[4];
    size_t got = fread(head, 1, sizeof head, r->f);
    if (got == 0 && feof(r->f)) return 0;
    if (got < sizeof head) return damaged(r, err, "is cut short in its length");
    if (get_le32(head + 8) != tfrecord_mask_crc(tfrecord_crc32c(head, 8)))
        return damaged(r, err, "has a length that fails its CRC");
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)head[i] << (8 * i);
    if (n > TFRECORD_MAX_DATA) return damaged(r, err, "is longer than a record may be");
    if (n + 1 > r->cap) {
        unsigned char *nb = realloc(r->buf, (size_t)n + 1);
        if (!nb) return lp_fail(err, "out of memory");
        r->buf = nb;
        r->cap = (size_t)n + 1;
    }
    if (fread(r->buf, 1, (size_t)n, r->f) != (size_t)n || fread(tail, 1, 4, r->f) != 4)
        return damaged(r, err, "is cut short in its data");
    if (get_le32(tail) != tfrecord_mask_crc(tfrecord_crc32c(r->buf, (size_t)n)))
        return damaged(r, err, "has data that fails its CRC");
    r->offset += n + TFRECORD_OVERHEAD;
    *data = r->buf;
    *len = (size_t)n;
    return 1;
}

void tfrecord_reader_close(tfrecord_reader *r) {
    if (r->f) fclose(r->f);
    free(r->path);
    free(r->buf);
    memset(r, 0, sizeof *r);
}
