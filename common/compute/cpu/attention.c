/* Causal attention with grouped-query heads (multi-head attention is the case NKV = NH): every
 * (sequence, head) pair is two GEMMs on strided views of q, k and v, which are never copied out
 * or repeated per query head. The pairs run in parallel, one per thread; OpenBLAS' OpenMP build
 * runs a GEMM called inside a parallel region on that one thread. The state backward needs is
 * the softmax probabilities [B, NH, T, T]. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

size_t cpu_attention_state_floats(int B, int T, int NH) {
    return (size_t)B * NH * T * T;
}

/* Softmax of each row t of a [rows, cols] score block over its first t + shift + 1 columns (the
 * causal window); the rest become 0. */
static void causal_softmax(float *att, int rows, int cols, int shift) {
    for (int t = 0; t < rows; t++) {
        float *row = att + (size_t)t * cols;
        int n = t + shift + 1;
        float max = row[0];
        for (int u = 1; u < n; u++) max = row[u] > max ? row[u] : max;
        float sum = 0.0f;
        for (int u = 0; u < n; u++) {
            row[u] = expf(row[u] - max);
            sum += row[u];
        }
        float inv = 1.0f / sum;
        for (int u = 0; u < n; u++) row[u] *= inv;
        for (int u = n; u < cols; u++) row[u] = 0.0f;
    }
}

void cpu_attention_forward(ops_ctx *c, act *out, float *state, const act *q, const act *k,
                           const act *v, int ldq, int ldk, int B, int T, int NH, int NKV, int hd) {
    (void)c;
    int G = NH / NKV, ldo = NH * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *qh = CF(q) + (size_t)b * T * ldq + h * hd;
            const float *kh = CF(k) + (size_t)b * T * ldk + (h / G) * hd;
            const float *vh = CF(v) + (size_t)b * T * ldk + (h / G) * hd;
            float *a = state + ((size_t)b * NH + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, qh, ldq, kh, ldk,
                        0.0f, a, T);
            causal_softmax(a, T, T, 0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, vh, ldk,
                        0.0f, F(out) + (size_t)b * T * ldo + h * hd, ldo);
        }
    }
}

/* rows x hd of a strided view set to 0 */
static void zero_view(float *p, int rows, int ld, int hd) {
    for (int t = 0; t < rows; t++) memset(p + (size_t)t * ld, 0, (size_t)hd * sizeof(float));
}

void cpu_attention_backward(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout, const act *out,
                            const act *q, const act *k, const act *v, const float *state, int ldq,
                            int ldk, int B, int T, int NH, int NKV, int hd) {
    (void)out;
    int G = NH / NKV, ldo = NH * hd, slots = cpu_ws(c)->slots;
    float scale = 1.0f / sqrtf((float)hd);
    float *scratch = cpu_ws(c)->att_scratch;
    /* One task per (sequence, KV head): its G query heads add into the same dk, dv rows, so
     * they run one after another in that task and no two threads write the same gradient. */
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(slots)
    for (int b = 0; b < B; b++) {
        for (int kv = 0; kv < NKV; kv++) {
            float *datt = scratch + (size_t)omp_get_thread_num() * T * T;
            const float *kh = CF(k) + (size_t)b * T * ldk + kv * hd;
            const float *vh = CF(v) + (size_t)b * T * ldk + kv * hd;
            float *dkh = F(dk) + (size_t)b * T * ldk + kv * hd;
            float *dvh = F(dv) + (size_t)b * T * ldk + kv * hd;
            zero_view(dkh, T, ldk, hd);
            zero_view(dvh, T, ldk, hd);
            for (int h = kv * G; h < (kv + 1) * G; h++) {
                const float *qh = CF(q) + (size_t)b * T * ldq + h * hd;
                float *dqh = F(dq) + (size_t)b * T * ldq + h * hd;
                const float *dy = CF(dout) + (size_t)b * T * ldo + h * hd;
                const float *a = state + ((size_t)b * NH + h) * T * T;
                /* datt = dy . v^T; dv += att^T . dy */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dy, ldo, vh,
                            ldk, 0.0f, datt, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, dy, ldo,
                            1.0f, dvh, ldk);
                /* softmax backward: dscore = att * (datt - sum(att * datt)), masked entries 0 */
                for (int t = 0; t < T; t++) {
                    const float *arow = a + (size_t)t * T;
                    float *drow = datt + (size_t)t * T;
                    float dot = 0.0f;
                    for (int u = 0; u <= t; u++) dot += arow[u] * drow[u];
                    for (int u = 0; u <= t; u++) drow[u] = arow[u] * (drow[u] - dot);
                    for (int u = t + 1; u < T; u++) drow[u] = 0.0f;
                }
                /* dq = scale * dscore . k; dk += scale * dscore^T . q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, datt, T, kh,
                            ldk, 0.0f, dqh, ldq);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, datt, T, qh,
                            ldq, 1.0f, dkh, ldk);
            }
        }
    }
}

void cpu_attention_cached(ops_ctx *c, act *out, const act *q, int ldq, const act *k, const act *v,
                          int ldk, int n, int past, int NH, int NKV, int hd) {
    int G = NH / NKV, ldo = NH * hd, len = past + n, slots = cpu_ws(c)->slots;
    float scale = 1.0f / sqrtf((float)hd);
    float *scratch = cpu_ws(c)->kv_scratch;
#pragma omp parallel for schedule(dynamic) num_threads(slots)
    for (int h = 0; h < NH; h++) {
        float *a = scratch + (size_t)omp_get_thread_num() * n * len;
        const float *kh = CF(k) + (h / G) * hd, *vh = CF(v) + (h / G) * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, len, hd, scale, CF(q) + h * hd, ldq,
                    kh, ldk, 0.0f, a, len);
        causal_softmax(a, n, len, past);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, len, 1.0f, a, len, vh, ldk,
                    0.0f, F(out) + h * hd, ldo);
    }
}
