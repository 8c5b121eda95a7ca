/* The CUDA backend's table, its devices (cudaMalloc'd memory, counted for the high-water mark)
 * and its contexts: a stream, a cuBLASLt handle and workspace, and the ops' scratch. */
#include "cuda.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------------------------- */

void cuda_note(const ops_ctx *c, cudaError_t e, const char *what) {
    cuda_ctx *x = cx(c);
    if (e == cudaSuccess || x->error[0]) return;
    snprintf(x->error, sizeof x->error, "%s: %s", what, cudaGetErrorString(e));
}

void cuda_note_blas(const ops_ctx *c, cublasStatus_t s, const char *what) {
    cuda_ctx *x = cx(c);
    if (s == CUBLAS_STATUS_SUCCESS || x->error[0]) return;
    snprintf(x->error, sizeof x->error, "%s: cuBLAS status %d", what, (int)s);
}

void cuda_check_launch(const ops_ctx *c, const char *what) {
    cuda_note(c, cudaGetLastError(), what);
}

static int fail_cuda(lp_err *err, cudaError_t e, const char *what) {
    return lp_fail(err, "%s: %s", what, cudaGetErrorString(e));
}

/* ---- the device ------------------------------------------------------------------------------ */

static cuda_device *dev_of(device *d) {
    return (cuda_device *)d->impl;
}

static void cuda_close(device *d) {
    free(dev_of(d)->allocs);
    free(d->impl);
    free(d);
}

/* Every live allocation's size, for the accounting when it is freed. */
static void remember(cuda_device *g, void *p, size_t bytes) {
    if (g->n_allocs == g->cap_allocs) {
        int cap = g->cap_allocs ? 2 * g->cap_allocs : 256;
        cuda_alloc_record *grown =
            (cuda_alloc_record *)realloc(g->allocs, (size_t)cap * sizeof *grown);
        if (!grown) return; /* the accounting is lost, not the memory */
        g->allocs = grown;
        g->cap_allocs = cap;
    }
    g->allocs[g->n_allocs++] = (cuda_alloc_record){p, bytes};
}

static size_t forget(cuda_device *g, void *p) {
    for (int i = g->n_allocs - 1; i >= 0; i--)
        if (g->allocs[i].p == p) {
            size_t bytes = g->allocs[i].bytes;
            g->allocs[i] = g->allocs[--g->n_allocs];
            return bytes;
        }
    return 0;
}

static void *cuda_alloc(device *d, size_t bytes, lp_err *err) {
    void *p = NULL;
    cudaSetDevice(dev_of(d)->index);
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        size_t free_b = 0, total = 0;
        cudaMemGetInfo(&free_b, &total);
        lp_fail(err, "%s: cannot allocate %.1f MiB (%.1f of %.1f GiB free): %s", d->description,
                (double)bytes / (1 << 20), (double)free_b / (1 << 30), (double)total / (1 << 30),
                cudaGetErrorString(e));
        return NULL;
    }
    remember(dev_of(d), p, bytes);
    device_account(d, (long long)bytes);
    return p;
}

static void cuda_free(device *d, void *p) {
    device_account(d, -(long long)forget(dev_of(d), p));
    cudaFree(p);
}

static int cuda_upload(device *d, void *dst, const void *host, size_t bytes, lp_err *err) {
    cudaSetDevice(dev_of(d)->index);
    cudaError_t e = cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice);
    return e == cudaSuccess ? 0 : fail_cuda(err, e, "copy to the GPU");
}

static int cuda_download(device *d, void *host, const void *src, size_t bytes, lp_err *err) {
    cudaSetDevice(dev_of(d)->index);
    cudaError_t e = cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost);
    return e == cudaSuccess ? 0 : fail_cuda(err, e, "copy from the GPU");
}

static void cuda_host_register(device *d, void *host, size_t bytes) {
    (void)d;
    /* best effort: unpinned memory still copies, only slower */
    if (cudaHostRegister(host, bytes, cudaHostRegisterDefault) != cudaSuccess) cudaGetLastError();
}

static void cuda_host_unregister(device *d, void *host) {
    (void)d;
    if (cudaHostUnregister(host) != cudaSuccess) cudaGetLastError();
}

/* ---- contexts -------------------------------------------------------------------------------- */

#define LT_WORKSPACE (32u << 20) /* cuBLASLt's workspace, as recommended for Hopper */
#define HEAD_CHUNK_BYTES                                                                           \
    (384u << 20) /* the head's logits (f32) and their gradient (bf16) are                          \
                     computed this much at a time */

static void *ctx_alloc(ops_ctx *c, size_t bytes, lp_err *err) {
    return bytes ? cuda_alloc(c->dev, bytes, err) : NULL;
}

/* Rows of logits per chunk: as many as fit the chunk budget, a multiple of 64, at least 64. */
static int head_rows_for(const ops_limits *lim, int head_ld) {
    size_t rows = HEAD_CHUNK_BYTES / ((size_t)head_ld * (sizeof(float) + sizeof(bf16)));
    rows = rows / 64 * 64;
    if (rows < 64) rows = 64;
    if (rows > (size_t)lim->max_rows) rows = (size_t)lim->max_rows;
    return (int)rows;
}

static int cuda_ctx_init(ops_ctx *c, const ops_limits *lim, lp_err *err) {
    cuda_ctx *x = (cuda_ctx *)calloc(1, sizeof *x);
    if (!x) return lp_fail(err, "out of memory");
    c->impl = x;
    cudaSetDevice(dev_of(c->dev)->index);
    cudaError_t e = cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) return fail_cuda(err, e, "a CUDA stream");
    if (cublasLtCreate(&x->lt) != CUBLAS_STATUS_SUCCESS)
        return lp_fail(err, "cuBLASLt could not start on %s", c->dev->description);
    x->lt_workspace_bytes = LT_WORKSPACE;
    x->head_ld = (lim->vocab + 63) / 64 * 64; /* aligned rows, room for the tables' pad rows */
    x->head_rows = head_rows_for(lim, x->head_ld);
    size_t heads = (size_t)lim->max_heads * lim->head_dim, rows = (size_t)lim->max_rows;
    int training = lim->max_T > 0 && lim->max_kv == 0;
    if (!(x->lt_workspace = ctx_alloc(c, x->lt_workspace_bytes, err)) ||
        !(x->logits =
              (float *)ctx_alloc(c, (size_t)x->head_rows * x->head_ld * sizeof(float), err)) ||
        !(x->dlogits =
              (bf16 *)ctx_alloc(c, (size_t)x->head_rows * x->head_ld * sizeof(bf16), err)) ||
        !(x->reduce = (double *)ctx_alloc(c, sizeof(double), err)))
        return -1;
    if (training &&
        (!(x->dq_accum = (float *)ctx_alloc(c, rows * heads * sizeof(float), err)) ||
         !(x->delta = (float *)ctx_alloc(c, rows * (size_t)lim->max_heads * sizeof(float), err))))
        return -1;
    if (lim->max_events > 0) {
        x->events = (cudaEvent_t *)calloc((size_t)lim->max_events, sizeof *x->events);
        if (!x->events) return lp_fail(err, "out of memory");
        for (int i = 0; i < lim->max_events; i++, x->n_events++)
            if ((e = cudaEventCreateWithFlags(&x->events[i], cudaEventDisableTiming)) !=
                cudaSuccess)
                return fail_cuda(err, e, "a CUDA event");
    }
    c->workspace_bytes = x->lt_workspace_bytes + (size_t)x->head_rows * x->head_ld * 6 +
                         (training ? rows * heads * 4 + rows * lim->max_heads * 4 : 0);
    return 0;
}

static void cuda_ctx_free(ops_ctx *c) {
    cuda_ctx *x = cx(c);
    if (!x) return;
    if (x->stream) cudaStreamSynchronize(x->stream);
    device *d = c->dev;
    if (x->lt_workspace) cuda_free(d, x->lt_workspace);
    if (x->logits) cuda_free(d, x->logits);
    if (x->dlogits) cuda_free(d, x->dlogits);
    if (x->reduce) cuda_free(d, x->reduce);
    if (x->dq_accum) cuda_free(d, x->dq_accum);
    if (x->delta) cuda_free(d, x->delta);
    for (int i = 0; i < x->n_events; i++) cudaEventDestroy(x->events[i]);
    free(x->events);
    if (x->lt) cublasLtDestroy(x->lt);
    if (x->stream) cudaStreamDestroy(x->stream);
    free(x);
    c->impl = NULL;
}

static int cuda_sync(ops_ctx *c, lp_err *err) {
    cuda_ctx *x = cx(c);
    cuda_note(c, cudaStreamSynchronize(x->stream), "waiting for the GPU");
    cuda_note(c, cudaGetLastError(), "the GPU");
    if (x->error[0]) return lp_fail(err, "%s: %s", c->dev->description, x->error);
    return 0;
}

static void cuda_record_event(ops_ctx *c, int slot) {
    cuda_ctx *x = cx(c);
    if (slot < 0 || slot >= x->n_events)
        return cuda_note(c, cudaErrorInvalidValue, "a marker past the context's max_events");
    cuda_note(c, cudaEventRecord(x->events[slot], x->stream), "recording a marker");
}

static int cuda_wait_event(ops_ctx *c, int slot, lp_err *err) {
    cuda_ctx *x = cx(c);
    if (slot >= 0 && slot < x->n_events)
        cuda_note(c, cudaEventSynchronize(x->events[slot]), "waiting for a marker");
    if (x->error[0]) return lp_fail(err, "%s: %s", c->dev->description, x->error);
    return 0;
}

/* ---- moving data ----------------------------------------------------------------------------- */

static void cuda_upload_async(ops_ctx *c, void *dst, const void *host, size_t bytes) {
    if (bytes)
        cuda_note(c, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_of(c)),
                  "copy to the GPU");
}

static void cuda_download_async(ops_ctx *c, void *host, const void *src, size_t bytes) {
    if (bytes)
        cuda_note(c, cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_of(c)),
                  "copy from the GPU");
}

static void cuda_zero(ops_ctx *c, void *p, size_t bytes) {
    if (bytes) cuda_note(c, cudaMemsetAsync(p, 0, bytes, stream_of(c)), "zeroing GPU memory");
}

/* ---- the table ------------------------------------------------------------------------------- */

static backend make_backend(void) {
    backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.act_size = sizeof(bf16);
    b.close = cuda_close;
    b.alloc = cuda_alloc;
    b.free = cuda_free;
    b.upload = cuda_upload;
    b.download = cuda_download;
    b.host_register = cuda_host_register;
    b.host_unregister = cuda_host_unregister;
    b.ctx_init = cuda_ctx_init;
    b.ctx_free = cuda_ctx_free;
    b.sync = cuda_sync;
    b.record_event = cuda_record_event;
    b.wait_event = cuda_wait_event;
    b.act_from_f32 = cuda_act_from_f32;
    b.act_to_f32 = cuda_act_to_f32;
    b.act_from_device_f32 = cuda_act_from_device_f32;
    b.copy_act = cuda_copy_act;
    b.upload_async = cuda_upload_async;
    b.download_async = cuda_download_async;
    b.zero = cuda_zero;
    b.sum_f32 = cuda_sum_f32;
    b.sum_squares_f32 = cuda_sum_squares_f32;
    b.matmul_forward = cuda_matmul_forward;
    b.matmul_backward = cuda_matmul_backward;
    b.matmul_backward_weight = cuda_matmul_backward_weight;
    b.encoder_forward = cuda_encoder_forward;
    b.embedding_forward = cuda_embedding_forward;
    b.layernorm_forward = cuda_layernorm_forward;
    b.layernorm_backward = cuda_layernorm_backward;
    b.rmsnorm_forward = cuda_rmsnorm_forward;
    b.rmsnorm_recompute = cuda_rmsnorm_recompute;
    b.rmsnorm_backward = cuda_rmsnorm_backward;
    b.attention_state_floats = cuda_attention_state_floats;
    b.attention_forward = cuda_attention_forward;
    b.attention_backward = cuda_attention_backward;
    b.attention_cached = cuda_attention_cached;
    b.gelu_forward = cuda_gelu_forward;
    b.gelu_backward = cuda_gelu_backward;
    b.swiglu_forward = cuda_swiglu_forward;
    b.swiglu_backward = cuda_swiglu_backward;
    b.residual_forward = cuda_residual_forward;
    b.residual_backward = cuda_residual_backward;
    b.rope_forward = cuda_rope_forward;
    b.rope_backward = cuda_rope_backward;
    b.head_loss = cuda_head_loss;
    b.head_logits = cuda_head_logits;
    b.lora_forward = cuda_lora_forward;
    b.lora_backward = cuda_lora_backward;
    b.dropout_forward = cuda_dropout_forward;
    b.dropout_backward = cuda_dropout_backward;
    return b;
}

static const backend CUDA_BACKEND = make_backend();

/* ---- opening a GPU --------------------------------------------------------------------------- */

/* What device.c looks up after loading this module. */
extern "C" __attribute__((visibility("default"))) int loraps_cuda_device_open(device **out,
                                                                              int index,
                                                                              lp_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return lp_fail(err, "no usable GPU on this machine (%s)", cudaGetErrorString(e));
    if (count == 0) return lp_fail(err, "no GPU on this machine (cudaGetDeviceCount found none)");
    if (index >= count)
        return lp_fail(err, "cuda:%d does not exist: this machine has %d GPU%s (cuda:0..%d)", index,
                       count, count == 1 ? "" : "s", count - 1);
    device *d = (device *)calloc(1, sizeof *d);
    cuda_device *g = (cuda_device *)calloc(1, sizeof *g);
    if (!d || !g) {
        free(d);
        free(g);
        return lp_fail(err, "out of memory");
    }
    g->index = index;
    if ((e = cudaSetDevice(index)) != cudaSuccess || (e = cudaFree(0)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&g->prop, index)) != cudaSuccess) {
        free(d);
        free(g);
        return lp_fail(err, "cuda:%d cannot be used: %s", index, cudaGetErrorString(e));
    }
    int driver = 0;
    cudaDriverGetVersion(&driver);
    d->be = &CUDA_BACKEND;
    d->impl = g;
    d->counted = 1;
    snprintf(d->description, sizeof d->description,
             "cuda:%d (%s, %.1f GiB, compute %d.%d, %d SMs, driver %d.%d)", index, g->prop.name,
             (double)g->prop.totalGlobalMem / (1 << 30), g->prop.major, g->prop.minor,
             g->prop.multiProcessorCount, driver / 1000, driver % 1000 / 10);
    *out = d;
    return 0;
}
