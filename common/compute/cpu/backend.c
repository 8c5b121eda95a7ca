/* The CPU backend's table, its memory (host memory) and its contexts' workspace. */
#include "cpu.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void ops_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

static void *cpu_alloc(device *d, size_t bytes, lp_err *err) {
    void *p = NULL;
    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) {
        lp_fail(err, "out of memory: %.1f MiB", (double)bytes / (1 << 20));
        return NULL;
    }
    (void)d;
    return p;
}

static void cpu_free(device *d, void *p) {
    (void)d;
    free(p);
}

static int cpu_upload(device *d, void *dst, const void *host, size_t bytes, lp_err *err) {
    (void)d, (void)err;
    if (bytes) memmove(dst, host, bytes);
    return 0;
}

/* ---- contexts: the workspace -------------------------------------------------------------- */

/* The offset of the next `floats` floats in a workspace being laid out. */
static size_t carve(size_t *used, size_t floats) {
    size_t at = *used;
    *used += (floats * sizeof(float) + 255) & ~(size_t)255;
    return at;
}

static int cpu_ctx_init(ops_ctx *c, const ops_limits *lim, lp_err *err) {
    cpu_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return lp_fail(err, "out of memory");
    ws->slots = omp_get_max_threads();
    if (lim->bf16_gemm && cpu_bf16_new(&ws->bf16, err) < 0) {
        free(ws);
        return -1;
    }
    size_t T = (size_t)lim->max_T, rows = (size_t)lim->max_rows, kv = (size_t)lim->max_kv;
    size_t used = 0;
    size_t at_att = carve(&used, (size_t)ws->slots * T * T);
    size_t at_kv = carve(&used, (size_t)ws->slots * rows * kv);
    size_t at_widen = carve(&used, lim->max_matrix);
    size_t at_logits = carve(&used, (size_t)CPU_HEAD_CHUNK * (size_t)lim->vocab);
    char *base = cpu_alloc(c->dev, used, err);
    if (!base) {
        cpu_bf16_free(ws->bf16);
        free(ws);
        return -1;
    }
    ws->att_scratch = (float *)(base + at_att);
    ws->kv_scratch = (float *)(base + at_kv);
    ws->widen = (float *)(base + at_widen);
    ws->logits = (float *)(base + at_logits);
    c->workspace = base;
    c->workspace_bytes = used;
    c->impl = ws;
    return 0;
}

static void cpu_ctx_free(ops_ctx *c) {
    cpu_bf16_free(cpu_ws(c)->bf16);
    cpu_free(c->dev, c->workspace);
    free(c->impl);
}

static int cpu_sync(ops_ctx *c, lp_err *err) {
    (void)c, (void)err;
    return 0;
}

/* ---- moving data: activations are f32, so these are copies ------------------------------- */

static void cpu_copy_f32(ops_ctx *c, act *dst, const float *src, size_t n) {
    (void)c;
    if (n && (const void *)dst != (const void *)src) memmove(dst, src, n * sizeof(float));
}

static void cpu_act_to_f32(ops_ctx *c, float *host, const act *src, size_t n) {
    (void)c;
    if (n && (const void *)host != (const void *)src) memmove(host, src, n * sizeof(float));
}

static void cpu_copy_act(ops_ctx *c, act *dst, const act *src, size_t n) {
    cpu_copy_f32(c, dst, CF(src), n);
}

static void cpu_upload_async(ops_ctx *c, void *dst, const void *host, size_t bytes) {
    (void)c;
    if (bytes && dst != host) memmove(dst, host, bytes);
}

static void cpu_zero(ops_ctx *c, void *p, size_t bytes) {
    (void)c;
    if (bytes) memset(p, 0, bytes);
}

static double cpu_sum_f32(ops_ctx *c, const float *x, size_t n) {
    (void)c;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

static double cpu_sum_squares_f32(ops_ctx *c, const float *x, size_t n) {
    (void)c;
    double s = 0;
#pragma omp parallel for reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* ---- weights ------------------------------------------------------------------------------- */

const float *cpu_weight_f32(ops_ctx *c, const weight *w) {
    if (w->dtype == DT_F32) return w->data;
    /* bf16 is the top half of an f32 */
    const uint16_t *src = w->data;
    float *dst = cpu_ws(c)->widen;
#pragma omp parallel for simd
    for (size_t i = 0; i < w->numel; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
    return dst;
}

const backend CPU_BACKEND = {
    .name = "cpu",
    .act_size = sizeof(float),
    .close = NULL,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_upload,
    .ctx_init = cpu_ctx_init,
    .ctx_free = cpu_ctx_free,
    .sync = cpu_sync,
    .act_from_f32 = cpu_copy_f32,
    .act_to_f32 = cpu_act_to_f32,
    .act_from_device_f32 = cpu_copy_f32,
    .copy_act = cpu_copy_act,
    .upload_async = cpu_upload_async,
    .download_async = cpu_upload_async,
    .zero = cpu_zero,
    .sum_f32 = cpu_sum_f32,
    .sum_squares_f32 = cpu_sum_squares_f32,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .matmul_backward_weight = cpu_matmul_backward_weight,
    .encoder_forward = cpu_encoder_forward,
    .embedding_forward = cpu_embedding_forward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_recompute = cpu_rmsnorm_recompute,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .attention_state_floats = cpu_attention_state_floats,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_cached = cpu_attention_cached,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .residual_forward = cpu_residual_forward,
    .residual_backward = cpu_residual_backward,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .head_loss = cpu_head_loss,
    .head_logits = cpu_head_logits,
    .lora_forward = cpu_lora_forward,
    .lora_backward = cpu_lora_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
};
