/* LoRA: two skinny GEMMs per segment; B.A is never formed. */
#include "cpu.h"

#include <cblas.h>

void cpu_lora_forward(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs,
                      int n_segs, int IC, int OC, int h_ld) {
    (void)c;
    for (int s = 0; s < n_segs; s++) {
        const lora_segment *g = &segs[s];
        const float *xs = CF(x) + (size_t)g->row0 * IC;
        float *hs = F(h) + (size_t)g->row0 * h_ld, *os = F(out) + (size_t)g->row0 * OC;
        /* h = x . A^T  [rows,r] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, g->r, IC, 1.0f, xs, IC, g->A,
                    IC, 0.0f, hs, h_ld);
        /* out += scale * h . B^T  [rows,OC] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, OC, g->r, g->scale, hs, h_ld,
                    g->B, g->r, 1.0f, os, OC);
    }
}

void cpu_lora_backward(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                       const lora_segment *segs, int n_segs, int IC, int OC, int h_ld) {
    (void)c;
    for (int s = 0; s < n_segs; s++) {
        const lora_segment *g = &segs[s];
        const float *xs = CF(x) + (size_t)g->row0 * IC, *hs = CF(h) + (size_t)g->row0 * h_ld;
        const float *dos = CF(dout) + (size_t)g->row0 * OC;
        float *dhs = F(dh) + (size_t)g->row0 * h_ld;
        /* dh = scale * dout . B  [rows,r] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->rows, g->r, OC, g->scale, dos, OC,
                    g->B, g->r, 0.0f, dhs, h_ld);
        /* dB += scale * dout^T . h  [OC,r] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, g->r, g->rows, g->scale, dos, OC,
                    hs, h_ld, 1.0f, g->dB, g->r);
        /* dA += dh^T . x  [r,IC] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->r, IC, g->rows, 1.0f, dhs, h_ld, xs,
                    IC, 1.0f, g->dA, IC);
        /* dx += dh . A  [rows,IC] */
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->rows, IC, g->r, 1.0f, dhs,
                        h_ld, g->A, IC, 1.0f, F(dx) + (size_t)g->row0 * IC, IC);
    }
}
