/* gpt2_config_read on config.json written from the input. A config it accepts must be one the
 * model code can trust: positive sizes, n_embd divisible by n_head, a known activation. */
#include "fuzz_util.h"
#include "hf_config.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[1024];
    if (!path[0]) fuzz_path(path, sizeof path, "", "config.json");
    fuzz_write(path, data, size);
    gpt2_config c;
    lp_err err;
    memset(&c, 0xa5, sizeof c);
    if (gpt2_config_read(&c, path, &err) == 0) {
        FUZZ_CHECK(c.n_embd > 0 && c.n_layer > 0 && c.n_head > 0 && c.n_positions > 0 &&
                       c.vocab_size > 0,
                   "accepted a config with a non-positive size");
        FUZZ_CHECK(c.n_embd % c.n_head == 0, "accepted n_embd %d, n_head %d", c.n_embd, c.n_head);
        FUZZ_CHECK(memchr(c.activation_function, 0, sizeof c.activation_function) != NULL,
                   "activation_function not terminated");
    } else {
        FUZZ_CHECK(memchr(err.msg, 0, sizeof err.msg) && err.msg[0], "a failure without a message");
    }
    return 0;
}
