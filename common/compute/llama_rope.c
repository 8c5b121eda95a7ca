/* Rotary inverse frequencies of a Llama-family config, with its RoPE scaling (linear, llama3). */
#include "llama_config.h"

#include <math.h>

void llama_rope_inv_freq(const llama_config *c, double *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_type == LLAMA_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_type == LLAMA_ROPE_LLAMA3) {
            /* transformers' _compute_llama3_parameters */
            double old = c->rope_original_max_position_embeddings;
            double low_wavelen = old / c->rope_low_freq_factor;
            double high_wavelen = old / c->rope_high_freq_factor;
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f /= c->rope_factor;
            } else if (!(wavelen < high_wavelen)) {
                double smooth = (old / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}
