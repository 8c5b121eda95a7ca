/* tb_read_file (common/formats/tb_events.c) on an event file from the input: TFRecord framing
 * with both CRCs, then each record as an Event. A damaged file is an error with a message; an
 * accepted one hands over events whose scalars have tags. The same file is then read as a run
 * folder (tb_read_run), whose points must be sorted by tag and step. */
#include "fuzz_util.h"
#include "tb_events.h"
#include "tfrecord.h"

#include <string.h>

static int visit(const tb_event *e, void *ctx) {
    int *n = ctx;
    (*n)++;
    FUZZ_CHECK(e->kind >= TB_EVENT_FILE_VERSION && e->kind <= TB_EVENT_OTHER, "kind %d", e->kind);
    if (e->kind == TB_EVENT_FILE_VERSION) FUZZ_CHECK(e->file_version && e->writer, "no version");
    for (int i = 0; e->kind == TB_EVENT_SCALARS && i < e->n_scalars; i++)
        FUZZ_CHECK(e->scalars[i].tag != NULL, "scalar %d without a tag", i);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char dir[1024], path[1024];
    if (!dir[0]) {
        fuzz_mkdir("run");
        fuzz_path(dir, sizeof dir, "", "run");
        fuzz_path(path, sizeof path, "run", "events.out.tfevents.1.fuzz.1.0");
    }
    fuzz_write(path, data, size);
    int n = 0;
    lp_err err;
    err.msg[0] = 0;
    int rc = tb_read_file(path, visit, &n, &err);
    FUZZ_CHECK(rc == 0 || (rc == -1 && err.msg[0]), "rc %d, message \"%s\"", rc, err.msg);
    FUZZ_CHECK(size >= (size_t)n * TFRECORD_OVERHEAD, "%d records in %zu bytes", n, size);
    tb_run run;
    if (tb_read_run(dir, &run, &err) == 0) {
        FUZZ_CHECK(rc == 0, "the folder read where the file failed");
        for (int i = 1; i < run.n_points; i++) {
            int c = strcmp(run.points[i - 1].tag, run.points[i].tag);
            FUZZ_CHECK(c < 0 || (c == 0 && run.points[i - 1].step <= run.points[i].step),
                       "points %d and %d out of order", i - 1, i);
        }
        tb_run_free(&run);
    } else {
        FUZZ_CHECK(rc == -1, "the file read where the folder failed: %s", err.msg);
    }
    return 0;
}
