/* matmul: out = inp . W + bias through cuBLASLt on the tensor cores (bf16 in, f32 accumulation,
 * the bias added in the GEMM's epilogue), and the input gradient through the frozen W. */
#include "cuda.cuh"

#include <string.h>

/* The largest power of two (up to 256) that divides the address: cuBLASLt picks kernels for the
 * alignment it is told. */
static int alignment_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int align = 256;
    while (align > 1 && a % (uintptr_t)align) align /= 2;
    return align;
}

static gemm_choice *cached(cuda_ctx *x, const gemm_key *k) {
    unsigned h = 2166136261u;
    const unsigned char *p = (const unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 16777619u;
    for (int probe = 0; probe < GEMM_CACHE; probe++) {
        gemm_choice *e = &x->cache[(h + (unsigned)probe) % GEMM_CACHE];
        if (!e->found) return e;
        if (!memcmp(&e->key, k, sizeof *k)) return e;
    }
    return &x->cache[h % GEMM_CACHE]; /* full: overwrite */
}

/* Row-major C = op(A) . op(B) is column-major C^T = op(B)^T . op(A)^T: cuBLASLt (column-major)
 * multiplies B's memory by A's, m = N and n = M. */
void cuda_gemm(const ops_ctx *c, int M, int N, int K, const void *A, int lda, int ta, const void *B,
               int ldb, int tb, void *C, int ldc, cudaDataType_t ctype, float alpha, float beta,
               const void *bias) {
    cuda_ctx *x = cx(c);
    if (M <= 0 || N <= 0 || K <= 0) return;
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    if (s == CUBLAS_STATUS_SUCCESS && bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof bias);
    }
    /* the first operand is B's memory: [N,K] (or [K,N] transposed); the second A's */
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, tb ? K : N, tb ? N : K, ldb);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, ta ? M : K, ta ? K : M, lda);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&lc, ctype, N, M, ldc);
    gemm_key key;
    memset(&key, 0, sizeof key);
    key = (gemm_key){N,
                     M,
                     K,
                     ldb,
                     lda,
                     ldc,
                     tb,
                     ta,
                     (int)ctype,
                     bias != NULL,
                     alignment_of(B),
                     alignment_of(A),
                     alignment_of(C)};
    gemm_choice *choice = cached(x, &key);
    if (s == CUBLAS_STATUS_SUCCESS && !(choice->found && !memcmp(&choice->key, &key, sizeof key))) {
        s = cublasLtMatmulPreferenceCreate(&pref);
        uint64_t ws = x->lt_workspace_bytes;
        uint32_t al_a = (uint32_t)key.align_a, al_b = (uint32_t)key.align_b,
                 al_c = (uint32_t)key.align_c;
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &ws, sizeof ws);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
        cublasLtMatmulHeuristicResult_t heur;
        int found = 0;
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulAlgoGetHeuristic(x->lt, op, la, lb, lc, lc, pref, 1, &heur, &found);
        if (s == CUBLAS_STATUS_SUCCESS && found == 0) s = CUBLAS_STATUS_NOT_SUPPORTED;
        if (s == CUBLAS_STATUS_SUCCESS) {
            choice->key = key;
            choice->algo = heur.algo;
            choice->found = 1;
        }
    }
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmul(x->lt, op, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &choice->algo,
                           x->lt_workspace, x->lt_workspace_bytes, x->stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        char what[160];
        snprintf(what, sizeof what, "a GEMM %dx%dx%d (lda %d ldb %d ldc %d, %s%s)", M, N, K, lda,
                 ldb, ldc, ta ? "A^T " : "", tb ? "B^T" : "");
        cuda_note_blas(c, s, what);
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
}

void cuda_matmul_forward(ops_ctx *c, act *out, const act *inp, const weight *w,
                         weight_layout layout, const weight *bias, int N, int IC, int OC) {
    int in_out = layout == W_IN_OUT; /* W [IC,OC]; else [OC,IC] and used transposed */
    cuda_gemm(c, N, OC, IC, inp, IC, 0, w->data, in_out ? OC : IC, !in_out, out, OC, CUDA_R_16BF,
              1.0f, 0.0f, bias ? bias->data : NULL);
}

void cuda_matmul_backward(ops_ctx *c, act *dinp, const act *dout, const weight *w,
                          weight_layout layout, int N, int IC, int OC, int accumulate) {
    int in_out = layout == W_IN_OUT; /* dinp = dout . W^T: W [IC,OC] transposed, [OC,IC] as is */
    cuda_gemm(c, N, IC, OC, dout, OC, 0, w->data, in_out ? OC : IC, in_out, dinp, IC, CUDA_R_16BF,
              1.0f, accumulate ? 1.0f : 0.0f, NULL);
}

void cuda_matmul_backward_weight(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                                 const act *dout, weight_layout layout, int N, int IC, int OC) {
    (void)dweight, (void)dbias, (void)inp, (void)dout, (void)layout, (void)N, (void)IC, (void)OC;
    cuda_note(c, cudaErrorNotSupported, "the full fine-tuning baseline (CPU only)");
}
