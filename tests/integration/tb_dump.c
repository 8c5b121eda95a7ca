/* tb_dump RUN_DIR: the scalars of a TensorBoard run folder as TensorBoard shows them (files in
 * name order, SessionLog START dropping repeated steps), one "scalar TAG STEP VALUE" line each,
 * then the tags' descriptions (tb_run_print). Exit 1 on a damaged file. */
#include "tb_events.h"

#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tb_dump RUN_DIR\n");
        return 2;
    }
    tb_run run;
    lp_err err;
    if (tb_read_run(argv[1], &run, &err) < 0) {
        fprintf(stderr, "tb_dump: error: %s\n", err.msg);
        return 1;
    }
    tb_run_print(&run, stdout);
    tb_run_free(&run);
    return 0;
}
