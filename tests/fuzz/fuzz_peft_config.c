/* peft_load with adapter_config.json written from the input, beside a fixed valid
 * adapter_model.safetensors (the one PEFT 0.21 made for the golden gpt2_tiny model, over that
 * model's modules): the JSON -> lora_config path, then the adapter built from it and the
 * tensors checked against it. A loaded adapter must have tensors that fit its sites. */
#include "fuzz_util.h"
#include "lora_targets.h"
#include "peft.h"

#include <math.h>
#include <string.h>

/* gpt2_tiny: n_embd 64, 2 layers; Conv1D modules in the order the model lists them. */
static lora_module modules[8];
static int n_modules;

static void add_module(const char *name, int layer, int in, int out) {
    lora_module *m = &modules[n_modules++];
    snprintf(m->name, sizeof m->name, "%s", name);
    m->layer = layer;
    m->in = in;
    m->out = out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char dir[1024], cfg[1024];
    if (!dir[0]) {
        char st[1024];
        fuzz_mkdir("adapter");
        fuzz_path(dir, sizeof dir, "", "adapter");
        fuzz_path(cfg, sizeof cfg, "adapter", "adapter_config.json");
        fuzz_path(st, sizeof st, "adapter", "adapter_model.safetensors");
        fuzz_copy_source_file(
            "tests/reference/golden/peft_roundtrip/peft_made/adapter_model.safetensors", st);
        for (int l = 0; l < 2; l++) {
            char name[LORA_MAX_NAME];
            snprintf(name, sizeof name, "transformer.h.%d.attn.c_attn", l);
            add_module(name, l, 64, 192);
            snprintf(name, sizeof name, "transformer.h.%d.attn.c_proj", l);
            add_module(name, l, 64, 64);
            snprintf(name, sizeof name, "transformer.h.%d.mlp.c_fc", l);
            add_module(name, l, 64, 256);
            snprintf(name, sizeof name, "transformer.h.%d.mlp.c_proj", l);
            add_module(name, l, 256, 64);
        }
    }
    fuzz_write(cfg, data, size);
    lora_adapter a;
    lp_err err;
    if (peft_load(dir, modules, n_modules, &a, &err) < 0) {
        FUZZ_CHECK(err.msg[0], "a failure without a message");
        return 0;
    }
    FUZZ_CHECK(a.n_tensors == 2 * a.n_sites, "%d tensors for %d sites", a.n_tensors, a.n_sites);
    size_t total = 0;
    for (int i = 0; i < a.n_sites; i++) {
        const lora_site *s = &a.sites[i];
        FUZZ_CHECK(s->module >= 0 && s->module < n_modules, "site %d: module %d", i, s->module);
        FUZZ_CHECK(s->r >= 1 && s->r <= LORA_MAX_RANK, "site %d: rank %d", i, s->r);
        FUZZ_CHECK(s->a_offset + (size_t)s->r * s->in <= a.n_params &&
                       s->b_offset + (size_t)s->out * s->r <= a.n_params,
                   "site %d outside the %zu parameters", i, a.n_params);
        FUZZ_CHECK(lora_adapter_site_for(&a, s->module) == s, "site %d not found by module", i);
        FUZZ_CHECK(isfinite(s->scale), "site %d: scale %g", i, (double)s->scale);
        total += (size_t)s->r * (s->in + s->out);
    }
    FUZZ_CHECK(total == a.n_params, "%zu parameters for sites of %zu", a.n_params, total);
    lora_adapter_free(&a);
    return 0;
}
