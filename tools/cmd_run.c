/* loraps run: placeholder until the parameter-server work lands (issue 3). */
#include "commands.h"

#include <stdio.h>

int cmd_run(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "loraps run: error: not built yet\n");
    return 2;
}
