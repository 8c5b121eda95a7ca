/* loraps: the user's tool. Each subcommand lives in its own cmd_*.c file. */
#include "blas_core.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command COMMANDS[] = {
    {"run", cmd_run, "start a local job: S parameter servers and N workers"},
    {"train", cmd_train, "train a LoRA adapter in this one process (no servers)"},
    {"report", cmd_report, "a run's summary: report.md and the loss and tokens/s curves"},
    {"init-model", cmd_init_model, "write an HF GPT-2 or Llama folder with random weights"},
    {"merge", cmd_merge, "fold a LoRA adapter into its base model (a plain HF folder)"},
    {"inspect", cmd_inspect, "show what a model, adapter, checkpoint or .safetensors holds"},
    {"generate", cmd_generate, "continue a prompt with a model and an optional adapter"},
    {"eval", cmd_eval, "loss and perplexity of a model (+ adapter) on a data file"},
    {"tokenize", cmd_tokenize, "text to token ids and back with a model's tokenizer.json"},
    {"keygen", cmd_keygen, "CURVE keys: a server pair, client pairs, the authorized list"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: loraps <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(out, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    fprintf(out, "\n'loraps <command> --help' describes each command.\n");
}

int main(int argc, char **argv) {
    /* OpenBLAS picks slow kernels on CPUs it does not know: restart on the right ones */
    if (blas_core_setup("loraps", argv) < 0) return 2;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "loraps: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
