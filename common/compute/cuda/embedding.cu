/* Embeddings (frozen: no backward): a row of the token table, plus GPT-2's position row. */
#include "cuda.cuh"

static __device__ __forceinline__ float table_at(const void *t, int dtype_bf16, size_t i) {
    return dtype_bf16 ? __bfloat162float(((const bf16 *)t)[i]) : ((const float *)t)[i];
}

/* one block per row; pe may be NULL (Llama) */
__global__ void embed_kernel(bf16 *out, const int *tokens, const void *te, int te_bf16,
                             const void *pe, int pe_bf16, int T, int pos0, int C) {
    int row = blockIdx.x;
    size_t tok = (size_t)tokens[row], pos = (size_t)(pos0 + row % T);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = table_at(te, te_bf16, tok * C + i);
        if (pe) v += table_at(pe, pe_bf16, pos * C + i);
        out[(size_t)row * C + i] = __float2bfloat16_rn(v);
    }
}

void cuda_encoder_forward(ops_ctx *c, act *out, const int *tokens, const weight *wte,
                          const weight *wpe, int B, int T, int pos0, int C) {
    embed_kernel<<<B * T, 256, 0, stream_of(c)>>>(AS(out), tokens, wte->data, wte->dtype == DT_BF16,
                                                  wpe->data, wpe->dtype == DT_BF16, T, pos0, C);
    cuda_check_launch(c, "encoder_forward");
}

void cuda_embedding_forward(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N,
                            int C) {
    embed_kernel<<<N, 256, 0, stream_of(c)>>>(AS(out), tokens, emb->data, emb->dtype == DT_BF16,
                                              NULL, 0, N, 0, C);
    cuda_check_launch(c, "embedding_forward");
}
