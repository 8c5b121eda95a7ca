/* For the tests that damage files on purpose: flips the bits of mask in the byte at offset at. */
#ifndef LORAPS_TEST_FILE_DAMAGE_H
#define LORAPS_TEST_FILE_DAMAGE_H

#include <stdio.h>

static inline void damage_byte(const char *path, long at, int mask) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    int ch = fgetc(f);
    assert_int_not_equal(ch, EOF);
    assert_int_equal(fseek(f, at, SEEK_SET), 0);
    fputc(ch ^ mask, f);
    fclose(f);
}

#endif
