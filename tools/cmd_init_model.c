/* loraps init-model: an HF GPT-2 folder with deterministic random weights. */
#include "bpe_train.h"
#include "commands.h"
#include "llama_init.h"
#include "model_init.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loraps init-model [--arch gpt2|llama] --preset NAME [--seed N] [--dtype D]\n"
            "                         --out DIR\n\n"
            "An HF model folder with deterministic random weights and a byte-level BPE\n"
            "tokenizer.json of the model's vocabulary, so nothing needs a download.\n"
            "  gpt2 presets:  tiny, small, 124m (GPT-2 small's shapes)\n"
            "  llama presets: tiny, small, smollm-135m-shape (SmolLM2-135M's shapes)\n"
            "  --dtype f32|bf16|f16 (llama only; default f32)\n");
}

static int init_llama(const char *preset, const char *out, unsigned long long seed,
                      const char *dtype_name) {
    llama_config c;
    lp_err err;
    dtype stored = DT_F32;
    if (!strcmp(dtype_name, "bf16"))
        stored = DT_BF16;
    else if (!strcmp(dtype_name, "f16"))
        stored = DT_F16;
    else if (strcmp(dtype_name, "f32")) {
        fprintf(stderr, "loraps init-model: error: --dtype: f32, bf16 or f16, got '%s'\n",
                dtype_name);
        return 2;
    }
    if (llama_preset(preset, &c, &err) < 0 ||
        llama_init_write_as(out, &c, seed, stored, 0, &err) < 0 ||
        bpe_write_demo_tokenizer(out, c.vocab_size, &err) < 0) {
        fprintf(stderr, "loraps init-model: error: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s: llama %s (%d layers, hidden %d, %d heads, %d KV heads, vocab %d, %s), "
           "seed %llu\n",
           out, preset, c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
           c.num_key_value_heads, c.vocab_size, dtype_name, seed);
    return 0;
}

int cmd_init_model(int argc, char **argv) {
    const char *arch = "gpt2", *preset = NULL, *out = NULL, *dtype_name = "f32";
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
        else if (!strcmp(a, "--dtype"))
            dtype_name = argv[++i];
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
    if (!strcmp(arch, "llama")) return init_llama(preset, out, seed, dtype_name);
    if (strcmp(arch, "gpt2")) {
        fprintf(stderr, "loraps init-model: error: --arch: gpt2 or llama, got '%s'\n", arch);
        return 2;
    }
    if (strcmp(dtype_name, "f32")) {
        fprintf(stderr, "loraps init-model: error: --dtype: gpt2 folders are f32\n");
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
