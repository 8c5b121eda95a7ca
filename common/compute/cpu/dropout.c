/* Dropout on the LoRA input: the keep/drop decision of each element is a hash of (seed, its
 * sequence's global id, its index in the sequence) (ops.h's dropout_keeps), so forward and
 * backward agree without storing a mask, threads need no shared generator state, and a
 * sequence's masks do not depend on which batch, micro-batch or worker it lands in. */
#include "cpu.h"

void cpu_dropout_forward(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                         const uint64_t *seq_ids, float p, uint64_t seed) {
    (void)c;
    uint32_t threshold = dropout_threshold(p);
    float keep_scale = 1.0f / (1.0f - p);
    float *o = F(out);
    const float *x = CF(inp);
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        uint64_t seq = seq_ids[r / seq_rows], base = (uint64_t)(r % seq_rows) * cols;
        size_t at = (size_t)r * cols;
        for (int j = 0; j < cols; j++)
            o[at + j] = dropout_keeps(seed, seq, base + j, threshold) ? x[at + j] * keep_scale : 0;
    }
}

void cpu_dropout_backward(ops_ctx *c, act *dinp, const act *dout, int rows, int cols, int seq_rows,
                          const uint64_t *seq_ids, float p, uint64_t seed) {
    (void)c;
    uint32_t threshold = dropout_threshold(p);
    float keep_scale = 1.0f / (1.0f - p);
    float *d = F(dinp);
    const float *dy = CF(dout);
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        uint64_t seq = seq_ids[r / seq_rows], base = (uint64_t)(r % seq_rows) * cols;
        size_t at = (size_t)r * cols;
        for (int j = 0; j < cols; j++)
            if (dropout_keeps(seed, seq, base + j, threshold)) d[at + j] += dy[at + j] * keep_scale;
    }
}
