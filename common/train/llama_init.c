#include "llama_init.h"

#include "hf_config.h"

#include "fsutil.h"
#include "rng.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int llama_preset(const char *name, llama_config *c, lp_err *err) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->rms_norm_eps = 1e-5f;
    c->rope_theta = 10000.0;
    c->rope_type = LLAMA_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->tie_word_embeddings = 1;
    if (!strcmp(name, "tiny")) {
        c->num_hidden_layers = 2, c->hidden_size = 64, c->num_attention_heads = 4;
        c->num_key_value_heads = 2, c->intermediate_size = 128, c->vocab_size = 512;
        c->max_position_embeddings = 128;
    } else if (!strcmp(name, "small")) {
        c->num_hidden_layers = 4, c->hidden_size = 256, c->num_attention_heads = 8;
        c->num_key_value_heads = 4, c->intermediate_size = 688, c->vocab_size = 4096;
        c->max_position_embeddings = 512;
    } else if (!strcmp(name, "smollm-135m-shape")) {
        c->num_hidden_layers = 30, c->hidden_size = 576, c->num_attention_heads = 9;
        c->num_key_value_heads = 3, c->intermediate_size = 1536, c->vocab_size = 49152;
        c->max_position_embeddings = 8192;
        c->rope_theta = 100000.0;
    } else {
        return lp_fail(err, "unknown Llama preset '%s' (tiny, small or smollm-135m-shape)", name);
    }
    c->head_dim = c->hidden_size / c->num_attention_heads;
    return 0;
}

typedef struct init_list {
    int n, cap;
    char (*names)[96];
    int *ndim;
    int64_t (*shape)[2];
    float **data;
} init_list;

/* Appends a tensor filled with mean + stddev * N(0,1). */
static int add(init_list *l, rng *r, const char *name, int64_t rows, int64_t cols, float mean,
               float stddev) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        void *a = realloc(l->names, (size_t)cap * sizeof *l->names);
        if (a) l->names = a;
        void *b = realloc(l->ndim, (size_t)cap * sizeof *l->ndim);
        if (b) l->ndim = b;
        void *c = realloc(l->shape, (size_t)cap * sizeof *l->shape);
        if (c) l->shape = c;
        void *d = realloc(l->data, (size_t)cap * sizeof *l->data);
        if (d) l->data = d;
        if (!a || !b || !c || !d) return -1;
        l->cap = cap;
    }
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    float *p = malloc(n * sizeof *p);
    if (!p) return -1;
    for (size_t i = 0; i < n; i++) p[i] = mean + (stddev ? stddev * rng_normal(r) : 0);
    snprintf(l->names[l->n], sizeof l->names[l->n], "%s", name);
    l->ndim[l->n] = cols ? 2 : 1;
    l->shape[l->n][0] = rows;
    l->shape[l->n][1] = cols;
    l->data[l->n++] = p;
    return 0;
}

static int add_all(init_list *list, const llama_config *c, uint64_t seed, float std) {
    rng r;
    rng_seed(&r, seed);
    int64_t C = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int64_t QD = c->num_attention_heads * hd, KVD = c->num_key_value_heads * hd;
    float proj_std = std / sqrtf(2.0f * c->num_hidden_layers);
    if (add(list, &r, "model.embed_tokens.weight", c->vocab_size, C, 0, 1.0f / sqrtf((float)C)))
        return -1;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct {
            const char *suffix;
            int64_t rows, cols;
            float mean, std;
            int present;
        } t[] = {
            {"input_layernorm.weight", C, 0, 1, 0, 1},
            {"self_attn.q_proj.weight", QD, C, 0, std, 1},
            {"self_attn.q_proj.bias", QD, 0, 0, std, c->qkv_bias},
            {"self_attn.k_proj.weight", KVD, C, 0, std, 1},
            {"self_attn.k_proj.bias", KVD, 0, 0, std, c->qkv_bias},
            {"self_attn.v_proj.weight", KVD, C, 0, std, 1},
            {"self_attn.v_proj.bias", KVD, 0, 0, std, c->qkv_bias},
            {"self_attn.o_proj.weight", C, QD, 0, proj_std, 1},
            {"self_attn.o_proj.bias", C, 0, 0, std, c->o_bias},
            {"post_attention_layernorm.weight", C, 0, 1, 0, 1},
            {"mlp.gate_proj.weight", I, C, 0, std, 1},
            {"mlp.gate_proj.bias", I, 0, 0, std, c->mlp_bias},
            {"mlp.up_proj.weight", I, C, 0, std, 1},
            {"mlp.up_proj.bias", I, 0, 0, std, c->mlp_bias},
            {"mlp.down_proj.weight", C, I, 0, proj_std, 1},
            {"mlp.down_proj.bias", C, 0, 0, std, c->mlp_bias},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            if (!t[i].present) continue;
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, t[i].suffix);
            if (add(list, &r, name, t[i].rows, t[i].cols, t[i].mean, t[i].std)) return -1;
        }
    }
    if (add(list, &r, "model.norm.weight", C, 0, 1, 0)) return -1;
    if (!c->tie_word_embeddings &&
        add(list, &r, "lm_head.weight", c->vocab_size, C, 0, 1.0f / sqrtf((float)C)))
        return -1;
    return 0;
}

int llama_init_write_as(const char *dir, const llama_config *c, uint64_t seed, dtype stored,
                        float std, lp_err *err) {
    if (c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 ||
        c->num_key_value_heads <= 0 || c->head_dim <= 0 || c->intermediate_size <= 0 ||
        c->vocab_size <= 0)
        return lp_fail(err, "llama_init_write: invalid config");
    if (fs_mkdirs(dir, err) < 0) return -1;
    init_list list = {0};
    int rc = add_all(&list, c, seed, std > 0 ? std : 0.02f) < 0
                 ? lp_fail(err, "llama_init_write: out of memory")
                 : 0;
    st_writer *w = st_writer_new();
    if (rc == 0) rc = st_writer_set_metadata(w, "format", "pt", err);
    for (int i = 0; i < list.n && rc == 0; i++)
        rc = st_writer_add_f32(w, list.names[i], stored, list.ndim[i], list.shape[i], list.data[i],
                               err);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc == 0) rc = st_writer_write(w, path, err);
    /* config.json last: its presence means the folder is whole */
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rc == 0) rc = llama_config_write(c, path, err);
    st_writer_free(w);
    for (int i = 0; i < list.n; i++) free(list.data[i]);
    free(list.names);
    free(list.ndim);
    free(list.shape);
    free(list.data);
    return rc;
}

int llama_init_write(const char *dir, const llama_config *c, uint64_t seed, lp_err *err) {
    return llama_init_write_as(dir, c, seed, DT_F32, 0, err);
}
