/* The output head and its loss: logits = x . head^T, softmax cross-entropy with an ignore index,
 * chunk by chunk so the [rows, V] logits never exist whole. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* In place over N rows of V: logits become probabilities; losses[i] = -log p[target] (0 for an
 * ignored row). */
static void crossentropy_forward(float *logits_to_probs, float *losses, const int *targets, int N,
                                 int V) {
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float *row = logits_to_probs + (size_t)i * V;
        float max = row[0];
        for (int v = 1; v < V; v++) max = row[v] > max ? row[v] : max;
        float target_logit = targets[i] >= 0 ? row[targets[i]] : 0.0f;
        /* float lanes in a vectorised reduction: each lane sums V/width terms, all positive */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int v = 0; v < V; v++) {
            row[v] = expf(row[v] - max);
            sum += row[v];
        }
        float inv = (float)(1.0 / sum);
        for (int v = 0; v < V; v++) row[v] *= inv;
        /* -log softmax = log(sum exp(l - max)) - (l_target - max), in double */
        double loss = targets[i] >= 0 ? log((double)sum) - (double)(target_logit - max) : 0.0;
        losses[i] = (float)loss;
    }
}

/* In place: probabilities become dlogits = dloss * (p - onehot); ignored rows become 0. */
static void crossentropy_backward(float *probs_to_dlogits, const int *targets, float dloss, int N,
                                  int V) {
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float *row = probs_to_dlogits + (size_t)i * V;
        if (targets[i] < 0) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int v = 0; v < V; v++) row[v] *= dloss;
        row[targets[i]] -= dloss;
    }
}

void cpu_head_loss(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows,
                   int C, int V, float grad_scale, act *dx, float *dhead, float *losses) {
    /* the head is kept in f32 on the CPU, or in bf16 with bf16 GEMMs */
    const float *H = head->data;
    int bf16 = cpu_uses_bf16(c, head);
    float *logits = cpu_ws(c)->logits;
    for (int start = 0; start < rows; start += CPU_HEAD_CHUNK) {
        int n = rows - start < CPU_HEAD_CHUNK ? rows - start : CPU_HEAD_CHUNK;
        const float *xs = CF(x) + (size_t)start * C;
        if (bf16)
            cpu_gemm_bf16(c, n, V, C, xs, C, head->data, 1, C, logits, V, 0);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, xs, C, H, C, 0.0f,
                        logits, V);
        crossentropy_forward(logits, losses + start, targets + start, n, V);
        if (grad_scale == 0) continue;
        crossentropy_backward(logits, targets + start, grad_scale, n, V);
        /* dx = dlogits . head */
        if (bf16)
            cpu_gemm_bf16(c, n, C, V, logits, V, head->data, 0, C, F(dx) + (size_t)start * C, C, 0);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, V, 1.0f, logits, V, H, C,
                        0.0f, F(dx) + (size_t)start * C, C);
        /* dhead += dlogits^T . x */
        if (dhead)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, n, 1.0f, logits, V, xs, C,
                        1.0f, dhead, C);
    }
}

void cpu_head_logits(ops_ctx *c, float *logits, const act *x, const weight *head, int rows, int C,
                     int V) {
    if (cpu_uses_bf16(c, head)) {
        cpu_gemm_bf16(c, rows, V, C, CF(x), C, head->data, 1, C, logits, V, 0);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, C, 1.0f, CF(x), C, head->data, C,
                0.0f, logits, V);
}
