/* loraps merge: folds a PEFT LoRA adapter into its base model (a plain HF model folder). */
#include "checkpoint.h"
#include "commands.h"
#include "peft.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps merge --model DIR --adapter DIR --out DIR\n\n"
            "Writes a plain Hugging Face model folder to --out: the base model with the adapter\n"
            "folded into its weights, W + s*(B*A) (W += s*A^T*B^T for GPT-2's Conv1D, stored\n"
            "[in, out]), every tensor in its original dtype, and config.json and the tokenizer\n"
            "files copied. It loads as a normal model, without PEFT.\n\n"
            "  --model DIR     the base model (HF folder)\n"
            "  --adapter DIR   a PEFT LoRA folder: one written by loraps (--out, a checkpoint,\n"
            "                  `latest`) or by PEFT's save_pretrained\n"
            "  --out DIR       where to write the merged model (not the base model's folder)\n");
}

int cmd_merge(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc ||
            (strcmp(a, "--model") && strcmp(a, "--adapter") && strcmp(a, "--out"))) {
            fprintf(stderr, "loraps merge: error: %s: %s\n", a,
                    i + 1 >= argc ? "needs a value" : "unknown option (see --help)");
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        if (!strcmp(a, "--adapter")) adapter = v;
        if (!strcmp(a, "--out")) out = v;
    }
    if (!model || !adapter || !out) {
        fprintf(stderr, "loraps merge: error: --model, --adapter and --out are required\n");
        usage(stderr);
        return 2;
    }
    lp_err err;
    char dir[PATH_MAX];
    ckpt_verified how;
    if (ckpt_resolve(adapter, NULL, dir, sizeof dir, &err) < 0 ||
        ckpt_verify(dir, &how, &err) < 0 || peft_merge(model, dir, out, &err) < 0) {
        fprintf(stderr, "loraps merge: error: %s\n", err.msg);
        return 1;
    }
    if (how == CKPT_LEGACY_VERIFIED)
        fprintf(stderr, "loraps merge: note: %s was %s\n", dir, CKPT_LEGACY_NOTE);
    printf("loraps merge: %s + %s -> %s\n", model, dir, out);
    return 0;
}
