#include "demo_model.h"

#include "bpe_train.h"
#include "fsutil.h"
#include "model_init.h"

#include <stdio.h>
#include <stdlib.h>

#define DEMO_SEED 1

int demo_model_ensure(const char *preset, char *dir, size_t size, lp_err *err) {
    const char *cache = getenv("LORAPS_CACHE"), *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (cache && *cache)
        snprintf(dir, size, "%s/demo-gpt2-%s", cache, preset);
    else if (xdg && *xdg)
        snprintf(dir, size, "%s/loraps/demo-gpt2-%s", xdg, preset);
    else
        snprintf(dir, size, "%s/.cache/loraps/demo-gpt2-%s", home ? home : "/tmp", preset);
    char config[4096];
    snprintf(config, sizeof config, "%s/config.json", dir);
    gpt2_config c;
    if (model_preset(preset, &c, err) < 0) return -1;
    /* model_init_write writes config.json last, so its presence means the folder is whole.
     * Folders cached before models came with a tokenizer get theirs now. */
    if (fs_exists(config)) {
        char tok[4200];
        snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
        return fs_exists(tok) ? 0 : bpe_write_demo_tokenizer(dir, c.vocab_size, err);
    }
    fprintf(stderr, "creating the demo model %s (gpt2 %s, seed %d)\n", dir, preset, DEMO_SEED);
    return model_init_write(dir, &c, DEMO_SEED, err);
}
