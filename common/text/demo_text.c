#include "demo_text.h"

#include "fsutil.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

static const char *const DAYS[] = {"monday", "tuesday",  "wednesday", "thursday",
                                   "friday", "saturday", "sunday"};
static const char *const MONTHS[] = {"january",   "february", "march",    "april",
                                     "may",       "june",     "july",     "august",
                                     "september", "october",  "november", "december"};
static const char *const NUMBERS[] = {"one", "two",   "three", "four", "five",
                                      "six", "seven", "eight", "nine", "ten"};
static const char *const COLOURS[] = {"red",  "orange", "yellow", "green",
                                      "blue", "indigo", "violet"};

typedef struct cycle {
    const char *const *words;
    int n;
} cycle;

static const cycle CYCLES[] = {
    {DAYS, 7},
    {MONTHS, 12},
    {NUMBERS, 10},
    {COLOURS, 7},
};
#define N_CYCLES ((int)(sizeof CYCLES / sizeof CYCLES[0]))

int demo_text_write(const char *path, int n_lines, uint64_t seed, lp_err *err) {
    size_t cap = (size_t)n_lines * 400 + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) return lp_fail(err, "out of memory");
    rng r;
    rng_seed(&r, rng_mix(seed, 0x74657874ull));
    for (int i = 0; i < n_lines; i++) {
        const cycle *c = &CYCLES[rng_next(&r) % N_CYCLES];
        int at = (int)(rng_next(&r) % (uint64_t)c->n);
        int words = 8 + (int)(rng_next(&r) % 13); /* 8..20 */
        for (int k = 0; k < words; k++) {
            const char *w = c->words[(at + k) % c->n];
            size_t n = strlen(w);
            if (k) buf[len++] = ' ';
            memcpy(buf + len, w, n);
            len += n;
        }
        buf[len++] = '\n';
    }
    int rc = fs_write_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

int demo_text_prompts(const char *const **prompts) {
    static const char *const P[] = {"thursday friday", "march april", "four five", "yellow green"};
    *prompts = P;
    return (int)(sizeof P / sizeof P[0]);
}
