/* Numbers for people: 1234567 as "1,234,567". */
#ifndef LORAPS_NUMFMT_H
#define LORAPS_NUMFMT_H

#include <stddef.h>
#include <stdint.h>

/* Writes v with a comma between groups of three digits into buf; returns buf. */
const char *fmt_thousands(char *buf, size_t n, uint64_t v);

#endif
