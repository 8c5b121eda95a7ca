/* TFRecord framing, the container of TensorBoard's event files. Each record is
 *
 *   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes |
 *   length bytes of data          | uint32 masked CRC32C of the data
 *
 * CRC32C is the Castagnoli CRC (iSCSI's), computed by ISA-L; the mask, (crc >> 15 | crc << 17)
 * + 0xa282ead8, is TFRecord's, so a CRC of data that holds CRCs is not itself a CRC. */
#ifndef LORAPS_TFRECORD_H
#define LORAPS_TFRECORD_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TFRECORD_OVERHEAD 16                 /* bytes of framing around each record's data */
#define TFRECORD_MAX_DATA ((size_t)64 << 20) /* a longer record is refused, not allocated */

uint32_t tfrecord_crc32c(const void *data, size_t len);
uint32_t tfrecord_mask_crc(uint32_t crc);

/* Frames data into out (len + TFRECORD_OVERHEAD bytes). */
void tfrecord_frame(const void *data, size_t len, unsigned char *out);
/* Writes one framed record to fd in a single write, so a reader following the file never sees
 * a record split by our own buffering. */
int tfrecord_write(int fd, const void *data, size_t len, lp_err *err);

typedef struct tfrecord_reader {
    FILE *f;
    char *path;
    uint64_t offset; /* of the next record */
    unsigned char *buf;
    size_t cap;
} tfrecord_reader;

int tfrecord_reader_open(tfrecord_reader *r, const char *path, lp_err *err);
/* 1: the next record's data in *data, *len (valid until the next call); 0: the end of the file;
 * -1: a truncated or damaged record, with err naming the file, the record's offset and what is
 * wrong (its length's CRC, its data's CRC, or too few bytes). */
int tfrecord_next(tfrecord_reader *r, const void **data, size_t *len, lp_err *err);
void tfrecord_reader_close(tfrecord_reader *r);

#endif
