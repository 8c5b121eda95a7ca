/* Embeddings: a row of the token table (plus GPT-2's position row). Frozen: no backward. */
#include "cpu.h"

#include <string.h>

/* Row `row` of an embedding table [rows, C], as f32 (tables may be stored in bf16). */
static void table_row(float *dst, const weight *w, size_t row, int C) {
    if (w->dtype == DT_F32) {
        memcpy(dst, (const float *)w->data + row * (size_t)C, (size_t)C * sizeof(float));
        return;
    }
    const uint16_t *src = (const uint16_t *)w->data + row * (size_t)C;
    for (int i = 0; i < C; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

void cpu_encoder_forward(ops_ctx *c, act *out, const int *tokens, const weight *wte,
                         const weight *wpe, int B, int T, int pos0, int C) {
    (void)c;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = F(out) + ((size_t)b * T + t) * C;
            float pe[C];
            table_row(o, wte, (size_t)tokens[b * T + t], C);
            table_row(pe, wpe, (size_t)(pos0 + t), C);
            for (int i = 0; i < C; i++) o[i] += pe[i];
        }
    }
}

void cpu_embedding_forward(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N,
                           int C) {
    (void)c;
#pragma omp parallel for
    for (int i = 0; i < N; i++) table_row(F(out) + (size_t)i * C, emb, (size_t)tokens[i], C);
}
