#include "model_init.h"
#include "hf_config.h"

#include "bpe_train.h"
#include "fsutil.h"
#include "rng.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int model_preset(const char *name, gpt2_config *c, lp_err *err) {
    memset(c, 0, sizeof *c);
    c->layer_norm_epsilon = 1e-5f;
    strcpy(c->activation_function, "gelu_new");
    c->tie_word_embeddings = 1;
    if (!strcmp(name, "tiny")) {
        c->n_layer = 2, c->n_embd = 64, c->n_head = 4, c->vocab_size = 512, c->n_positions = 128;
    } else if (!strcmp(name, "small")) {
        c->n_layer = 4, c->n_embd = 256, c->n_head = 4, c->vocab_size = 4096, c->n_positions = 256;
    } else if (!strcmp(name, "124m")) {
        c->n_layer = 12, c->n_embd = 768, c->n_head = 12, c->vocab_size = 50257,
        c->n_positions = 1024;
    } else {
        return lp_fail(err, "unknown preset '%s' (tiny, small or 124m)", name);
    }
    return 0;
}

typedef struct init_tensor {
    char name[96];
    int ndim;
    int64_t shape[2];
    float *data;
} init_tensor;

typedef struct init_list {
    init_tensor items[12 * 64 + 8];
    int n;
} init_list;

/* Appends a tensor filled with mean + stddev * N(0,1). */
static void add(init_list *list, rng *r, const char *name, int64_t rows, int64_t cols, float mean,
                float stddev) {
    init_tensor *t = &list->items[list->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    t->data = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) t->data[i] = mean + (stddev ? stddev * rng_normal(r) : 0);
}

int model_init_write(const char *dir, const gpt2_config *c, uint64_t seed, lp_err *err) {
    if (c->n_layer > 64) return lp_fail(err, "model_init_write: at most 64 layers");
    if (fs_mkdirs(dir, err) < 0) return -1;
    rng r;
    rng_seed(&r, seed);
    init_list *list = calloc(1, sizeof *list);
    int64_t C = c->n_embd;
    float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * c->n_layer);
    /* Token embeddings of std 1/sqrt(C), wider than GPT-2's 0.02: the tied head then starts
     * with logits of std ~1 (LayerNorm'd features have norm ~sqrt(C)) and can reach confident
     * predictions, which a random 0.02 head cannot. */
    add(list, &r, "transformer.wte.weight", c->vocab_size, C, 0, 1.0f / sqrtf((float)C));
    add(list, &r, "transformer.wpe.weight", c->n_positions, C, 0, 0.01f);
    for (int l = 0; l < c->n_layer; l++) {
        static const struct {
            const char *suffix;
            int rows_x, cols_x; /* multiples of C; cols 0 for vectors */
            float mean;
            int kind; /* 0: constant, 1: std, 2: residual projection std */
        } LAYER[12] = {
            {"ln_1.weight", 1, 0, 1, 0},        {"ln_1.bias", 1, 0, 0, 0},
            {"attn.c_attn.weight", 1, 3, 0, 1}, {"attn.c_attn.bias", 3, 0, 0, 0},
            {"attn.c_proj.weight", 1, 1, 0, 2}, {"attn.c_proj.bias", 1, 0, 0, 0},
            {"ln_2.weight", 1, 0, 1, 0},        {"ln_2.bias", 1, 0, 0, 0},
            {"mlp.c_fc.weight", 1, 4, 0, 1},    {"mlp.c_fc.bias", 4, 0, 0, 0},
            {"mlp.c_proj.weight", 4, 1, 0, 2},  {"mlp.c_proj.bias", 1, 0, 0, 0},
        };
        for (int i = 0; i < 12; i++) {
            char name[96];
            snprintf(name, sizeof name, "transformer.h.%d.%s", l, LAYER[i].suffix);
            float s = LAYER[i].kind == 1 ? std : LAYER[i].kind == 2 ? proj_std : 0;
            add(list, &r, name, LAYER[i].rows_x * C, LAYER[i].cols_x * C, LAYER[i].mean, s);
        }
    }
    add(list, &r, "transformer.ln_f.weight", C, 0, 1, 0);
    add(list, &r, "transformer.ln_f.bias", C, 0, 0, 0);

    int rc = 0;
    st_writer *w = st_writer_new();
    rc = st_writer_set_metadata(w, "format", "pt", err);
    for (int i = 0; i < list->n && rc == 0; i++)
        rc = st_writer_add(w, list->items[i].name, DT_F32, list->items[i].ndim,
                           list->items[i].shape, list->items[i].data, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc == 0) rc = st_writer_write(w, path, err);
    /* the tokenizer before config.json: config.json last marks the folder complete. A
     * byte-level BPE needs 256 byte tokens and an end-of-text: test models with smaller
     * vocabularies have no tokenizer. */
    if (rc == 0 && c->vocab_size >= 257) rc = bpe_write_demo_tokenizer(dir, c->vocab_size, err);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rc == 0) rc = gpt2_config_write(c, path, err);
    st_writer_free(w);
    for (int i = 0; i < list->n; i++) free(list->items[i].data);
    free(list);
    return rc;
}
