/* What a backend implements: one entry per op of ops.h and per memory function of device.h.
 * ops.c and device.c dispatch through it; compute/cpu/backend.c and compute/cuda/backend.cu each
 * fill one. Private to compute. */
#ifndef LORAPS_BACKEND_H
#define LORAPS_BACKEND_H

#include "device.h"
#include "ops.h"

typedef struct backend {
    const char *name;
    size_t act_size;

    /* the device */
    void (*close)(device *d);
    void *(*alloc)(device *d, size_t bytes, lp_err *err);
    void (*free)(device *d, void *p);
    int (*upload)(device *d, void *dst, const void *host, size_t bytes, lp_err *err);
    int (*download)(device *d, void *host, const void *src, size_t bytes, lp_err *err);
    /* host memory the device copies from and to often (the adapters' arrays): page-locked while
     * registered, so copies run at full speed (optional) */
    void (*host_register)(device *d, void *host, size_t bytes);
    void (*host_unregister)(device *d, void *host);

    /* a context: its workspace and stream */
    int (*ctx_init)(ops_ctx *c, const ops_limits *lim, lp_err *err);
    void (*ctx_free)(ops_ctx *c);
    int (*sync)(ops_ctx *c, lp_err *err);
    /* markers in the context's queue: record one, wait until the work before it is done
     * (slots 0 .. lim.max_events - 1; nothing to do on the CPU, where ops finish as they return) */
    void (*record_event)(ops_ctx *c, int slot);
    int (*wait_event)(ops_ctx *c, int slot, lp_err *err);

    /* moving data */
    void (*act_from_f32)(ops_ctx *c, act *dst, const float *host, size_t n);
    void (*act_to_f32)(ops_ctx *c, float *host, const act *src, size_t n);
    void (*act_from_device_f32)(ops_ctx *c, act *dst, const float *src, size_t n);
    void (*copy_act)(ops_ctx *c, act *dst, const act *src, size_t n);
    void (*upload_async)(ops_ctx *c, void *dst, const void *host, size_t bytes);
    void (*download_async)(ops_ctx *c, void *host, const void *src, size_t bytes);
    void (*zero)(ops_ctx *c, void *p, size_t bytes);
    double (*sum_f32)(ops_ctx *c, const float *x, size_t n);
    double (*sum_squares_f32)(ops_ctx *c, const float *x, size_t n);

    /* the ops */
    void (*matmul_forward)(ops_ctx *c, act *out, const act *inp, const weight *w,
                           weight_layout layout, const weight *bias, int N, int IC, int OC);
    void (*matmul_backward)(ops_ctx *c, act *dinp, const act *dout, const weight *w,
                            weight_layout layout, int N, int IC, int OC, int accumulate);
    void (*matmul_backward_weight)(ops_ctx *c, float *dweight, float *dbias, const act *inp,
                                   const act *dout, weight_layout layout, int N, int IC, int OC);
    void (*encoder_forward)(ops_ctx *c, act *out, const int *tokens, const weight *wte,
                            const weight *wpe, int B, int T, int pos0, int C);
    void (*embedding_forward)(ops_ctx *c, act *out, const int *tokens, const weight *emb, int N,
                              int C);
    void (*layernorm_forward)(ops_ctx *c, act *out, float *mean, float *rstd, const act *inp,
                              const weight *w, const weight *b, int N, int C, float eps);
    void (*layernorm_backward)(ops_ctx *c, act *dinp, const act *dout, const act *inp,
                               const weight *w, const float *mean, const float *rstd, int N, int C);
    void (*rmsnorm_forward)(ops_ctx *c, act *out, float *rstd, const act *inp, const weight *w,
                            int N, int C, float eps);
    void (*rmsnorm_recompute)(ops_ctx *c, act *out, const act *inp, const weight *w,
                              const float *rstd, int N, int C);
    void (*rmsnorm_backward)(ops_ctx *c, act *dinp, const act *dout, const act *inp,
                             const weight *w, const float *rstd, int N, int C);
    size_t (*attention_state_floats)(int B, int T, int NH);
    void (*attention_forward)(ops_ctx *c, act *out, float *state, const act *q, const act *k,
                              const act *v, int ldq, int ldk, int B, int T, int NH, int NKV,
                              int hd);
    void (*attention_backward)(ops_ctx *c, act *dq, act *dk, act *dv, const act *dout,
                               const act *out, const act *q, const act *k, const act *v,
                               const float *state, int ldq, int ldk, int B, int T, int NH, int NKV,
                               int hd);
    void (*attention_cached)(ops_ctx *c, act *out, const act *q, int ldq, const act *k,
                             const act *v, int ldk, int n, int past, int NH, int NKV, int hd);
    void (*gelu_forward)(ops_ctx *c, act *out, const act *inp, int n);
    void (*gelu_backward)(ops_ctx *c, act *dinp, const act *inp, const act *dout, int n);
    void (*swiglu_forward)(ops_ctx *c, act *out, const act *gate, const act *up, int n);
    void (*swiglu_backward)(ops_ctx *c, act *dgate, act *dup, const act *gate, const act *up,
                            const act *dout, int n);
    void (*residual_forward)(ops_ctx *c, act *out, const act *a, const act *b, int n);
    void (*residual_backward)(ops_ctx *c, act *dinp, const act *dout, int n);
    void (*rope_forward)(ops_ctx *c, act *x, const float *cos_sin, int N, int T, int pos0, int NH,
                         int hd);
    void (*rope_backward)(ops_ctx *c, act *dx, const act *dout, const float *cos_sin, int N, int T,
                          int pos0, int NH, int hd);
    void (*head_loss)(ops_ctx *c, const act *x, const weight *head, const int *targets, int rows,
                      int C, int V, float grad_scale, act *dx, float *dhead, float *losses);
    void (*head_logits)(ops_ctx *c, float *logits, const act *x, const weight *head, int rows,
                        int C, int V);
    void (*lora_forward)(ops_ctx *c, act *out, act *h, const act *x, const lora_segment *segs,
                         int n_segs, int IC, int OC, int h_ld);
    void (*lora_backward)(ops_ctx *c, act *dx, act *dh, const act *dout, const act *x, const act *h,
                          const lora_segment *segs, int n_segs, int IC, int OC, int h_ld);
    void (*dropout_forward)(ops_ctx *c, act *out, const act *inp, int rows, int cols, int seq_rows,
                            const uint64_t *seq_ids, float p, uint64_t seed);
    void (*dropout_backward)(ops_ctx *c, act *dinp, const act *dout, int rows, int cols,
                             int seq_rows, const uint64_t *seq_ids, float p, uint64_t seed);
} backend;

struct device {
    const backend *be;
    void *impl; /* the backend's own state for this device */
    char description[192];
    int counted; /* allocations are counted (every device but the shared, unchanging CPU one) */
    size_t in_use, peak;
};

struct ops_ctx {
    device *dev;
    const backend *be;
    ops_limits lim;
    void *workspace; /* device memory the ops share (sized by ctx_init) */
    size_t workspace_bytes;
    void *impl; /* the backend's own state for this context (a stream, a BLAS handle) */
};

/* The CPU backend (compute/cpu/backend.c). */
extern const backend CPU_BACKEND;
/* Opens GPU `index`: loads the CUDA backend module (device.c), whose loraps_cuda_device_open
 * (compute/cuda/backend.cu) does the rest. */
int cuda_device_open(device **out, int index, lp_err *err);

/* For backends: count an allocation of `bytes` (or a release, negative) into in_use and peak.
 * The CPU device counts nothing (it is shared and never changes; see device.c). */
static inline void device_account(device *d, long long bytes) {
    if (!d->counted) return;
    d->in_use = (size_t)((long long)d->in_use + bytes);
    if (d->in_use > d->peak) d->peak = d->in_use;
}

#endif
