/* A scratch folder for one test program: cmocka group setup makes /tmp/loraps_test_<NAME>_XXXXXX
 * in tmpdir, teardown removes it with everything in it. Define SCRATCH_NAME before including;
 * included by one test file each (its functions are static). */
#ifndef LORAPS_TEST_SCRATCH_DIR_H
#define LORAPS_TEST_SCRATCH_DIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char tmpdir[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/loraps_test_" SCRATCH_NAME "_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
