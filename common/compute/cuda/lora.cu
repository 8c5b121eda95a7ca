/* LoRA: two skinny GEMMs per segment through cuBLASLt; B.A is never formed. The GEMMs read the
 * factors as bf16 activations (A_act, B_act) and add their f32 gradients (dA, dB) in f32. */
#include "cuda.cuh"

void cuda_lora_forward(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs,
                       int n_segs, int IC, int OC, int h_ld) {
    for (int s = 0; s < n_segs; s++) {
        const lora_segment *g = &segs[s];
        const bf16 *xs = CAS(x) + (size_t)g->row0 * IC;
        bf16 *hs = AS(h) + (size_t)g->row0 * h_ld, *os = AS(out) + (size_t)g->row0 * OC;
        /* h = x . A^T  [rows,r] */
        cuda_gemm(c, g->rows, g->r, IC, xs, IC, 0, g->A_act, IC, 1, hs, h_ld, CUDA_R_16BF, 1.0f,
                  0.0f, NULL);
        /* out += scale * h . B^T  [rows,OC] */
        cuda_gemm(c, g->rows, OC, g->r, hs, h_ld, 0, g->B_act, g->r, 1, os, OC, CUDA_R_16BF,
                  g->scale, 1.0f, NULL);
    }
}

void cuda_lora_backward(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                        const lora_segment *segs, int n_segs, int IC, int OC, int h_ld) {
    for (int s = 0; s < n_segs; s++) {
        const lora_segment *g = &segs[s];
        const bf16 *xs = CAS(x) + (size_t)g->row0 * IC, *hs = CAS(h) + (size_t)g->row0 * h_ld;
        const bf16 *dos = CAS(dout) + (size_t)g->row0 * OC;
        bf16 *dhs = AS(dh) + (size_t)g->row0 * h_ld;
        /* dh = scale * dout . B  [rows,r] */
        cuda_gemm(c, g->rows, g->r, OC, dos, OC, 0, g->B_act, g->r, 0, dhs, h_ld, CUDA_R_16BF,
                  g->scale, 0.0f, NULL);
        /* dB += scale * dout^T . h  [OC,r], in f32 */
        cuda_gemm(c, OC, g->r, g->rows, dos, OC, 1, hs, h_ld, 0, g->dB, g->r, CUDA_R_32F, g->scale,
                  1.0f, NULL);
        /* dA += dh^T . x  [r,IC], in f32 */
        cuda_gemm(c, g->r, IC, g->rows, dhs, h_ld, 1, xs, IC, 0, g->dA, IC, CUDA_R_32F, 1.0f, 1.0f,
                  NULL);
        /* dx += dh . A  [rows,IC] */
        if (dx)
            cuda_gemm(c, g->rows, IC, g->r, dhs, h_ld, 0, g->A_act, IC, 0,
                      AS(dx) + (size_t)g->row0 * IC, IC, CUDA_R_16BF, 1.0f, 1.0f, NULL);
    }
}
