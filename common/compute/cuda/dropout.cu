/* Dropout on the LoRA input with the CPU's masks exactly: the keep decision of each element is
 * ops.h's dropout_keeps(seed, its sequence's global id, its index in the sequence). */
#include "elementwise.cuh"

/* BACKWARD: dinp += dout * mask / (1 - p); else out = inp * mask / (1 - p). */
template <int BACKWARD>
__global__ void dropout_kernel(bf16 *out, const bf16 *inp, size_t rows, int cols, int seq_rows,
                               const uint64_t *seq_ids, uint32_t threshold, float keep_scale,
                               uint64_t seed) {
    size_t n = rows * (size_t)cols;
    GRID_STRIDE(i, n) {
        size_t r = i / (size_t)cols;
        uint64_t index = (uint64_t)(r % (size_t)seq_rows) * (uint64_t)cols + i % (size_t)cols;
        int keep = dropout_keeps(seed, seq_ids[r / (size_t)seq_rows], index, threshold);
        float x = __bfloat162float(inp[i]);
        if (BACKWARD) {
            if (keep) out[i] = __float2bfloat16_rn(__bfloat162float(out[i]) + x * keep_scale);
        } else {
            out[i] = __float2bfloat16_rn(keep ? x * keep_scale : 0.0f);
        }
    }
}

void cuda_dropout_forward(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                          const uint64_t *seq_ids, float p, uint64_t seed) {
    size_t n = (size_t)rows * cols;
    dropout_kernel<0><<<blocks_for(n, 256), 256, 0, stream_of(c)>>>(
        AS(out), CAS(inp), (size_t)rows, cols, seq_rows, seq_ids, dropout_threshold(p),
        1.0f / (1.0f - p), seed);
    cuda_check_launch(c, "dropout_forward");
}

void cuda_dropout_backward(ops_ctx *c, act *dinp, const act *dout, int rows, int cols, int seq_rows,
                           const uint64_t *seq_ids, float p, uint64_t seed) {
    size_t n = (size_t)rows * cols;
    dropout_kernel<1><<<blocks_for(n, 256), 256, 0, stream_of(c)>>>(
        AS(dinp), CAS(dout), (size_t)rows, cols, seq_rows, seq_ids, dropout_threshold(p),
        1.0f / (1.0f - p), seed);
    cuda_check_launch(c, "dropout_backward");
}
