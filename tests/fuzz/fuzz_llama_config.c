/* llama_config_read on config.json written from the input, then the rotary frequencies of an
 * accepted config (the first thing the model does with it). */
#include "fuzz_util.h"
#include "hf_config.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[1024];
    if (!path[0]) fuzz_path(path, sizeof path, "", "config.json");
    fuzz_write(path, data, size);
    llama_config c;
    lp_err err;
    memset(&c, 0xa5, sizeof c);
    if (llama_config_read(&c, path, &err) == 0) {
        FUZZ_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
                       c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0 &&
                       c.vocab_size > 0,
                   "accepted a config with a non-positive size");
        FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
                   "accepted %d heads over %d key/value heads", c.num_attention_heads,
                   c.num_key_value_heads);
        FUZZ_CHECK(memchr(c.model_type, 0, sizeof c.model_type) != NULL,
                   "model_type not terminated");
        /* head_dim is the model's to bound; the harness only looks at a sane one. */
        if (c.head_dim <= 4096) {
            double inv[2048];
            llama_rope_inv_freq(&c, inv);
        }
    } else {
        FUZZ_CHECK(memchr(err.msg, 0, sizeof err.msg) && err.msg[0], "a failure without a message");
    }
    return 0;
}
