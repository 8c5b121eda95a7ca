#include "numfmt.h"

#include <stdio.h>

const char *fmt_thousands(char *buf, size_t n, uint64_t v) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    if (n) buf[o < n ? o : n - 1] = 0;
    return buf;
}
