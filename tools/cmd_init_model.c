/* loraps init-model: an HF GPT-2 folder with deterministic random weights. */
#include "commands.h"
#include "model_init.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: loraps init-model [--arch gpt2] --preset tiny|small|124m [--seed N] "
                 "--out DIR\n");
}

int cmd_init_model(int argc, char **argv) {
    const char *arch = "gpt2", *preset = NULL, *out = NULL;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loraps init-model: error: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--arch"))
            arch = argv[++i];
        else if (!strcmp(a, "--preset"))
            preset = argv[++i];
        else if (!strcmp(a, "--out"))
            out = argv[++i];
        else if (!strcmp(a, "--seed")) {
            char *end;
            seed = strtoull(argv[++i], &end, 10);
            if (*end || argv[i][0] == '-' || !argv[i][0]) {
                fprintf(stderr, "loraps init-model: error: --seed: not a number: '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "loraps init-model: error: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!preset || !out) {
        fprintf(stderr, "loraps init-model: error: --preset and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (strcmp(arch, "gpt2")) {
        fprintf(stderr, "loraps init-model: error: --arch: only gpt2 is supported, got '%s'\n",
                arch);
        return 2;
    }
    gpt2_config c;
    lp_err err;
    if (model_preset(preset, &c, &err) < 0 || model_init_write(out, &c, seed, &err) < 0) {
        fprintf(stderr, "loraps init-model: error: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s: gpt2 %s (%d layers, %d wide, %d heads, vocab %d), seed %llu\n", out, preset,
           c.n_layer, c.n_embd, c.n_head, c.vocab_size, seed);
    return 0;
}
