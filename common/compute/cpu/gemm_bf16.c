/* bf16 GEMMs through oneDNN's matmul: C[M,N] (+)= A[M,K] . B[K,N] with A f32 (rounded to bf16
 * here), B a bf16 weight read as stored (transposed by strides, never copied) and C f32. Each
 * context keeps the primitives of the shapes it has run. */
#include "cpu.h"

#include "blas_core.h"
#include "cpu_features.h"
#include "cpu_gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LORAPS_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

int cpu_gemm_mode_from_env(cpu_gemm_mode *mode, lp_err *err) {
    const char *v = getenv("LORAPS_CPU_GEMM");
    *mode = CPU_GEMM_F32;
    if (!v || !*v || !strcmp(v, "f32")) return 0;
    if (strcmp(v, "bf16")) return lp_fail(err, "LORAPS_CPU_GEMM=%s: expected f32 or bf16", v);
    lp_err why;
    if (cpu_gemm_bf16_available(&why) < 0) return lp_fail(err, "LORAPS_CPU_GEMM=bf16: %s", why.msg);
    *mode = CPU_GEMM_BF16;
    return 0;
}

#ifdef LORAPS_HAVE_DNNL

static int dnnl_has(dnnl_cpu_isa_t isa) {
    return (dnnl_get_effective_cpu_isa() & isa) == isa;
}

int cpu_gemm_bf16_available(lp_err *why) {
    cpu_features f;
    cpu_features_detect(&f);
    if (!f.avx512_bf16)
        return lp_fail(why,
                       "this CPU has no AVX512-BF16 (it has %s): bf16 GEMMs need a Cooper Lake or "
                       "later Xeon, or a Zen 4",
                       cpu_features_isa(&f));
    if (!dnnl_has(dnnl_cpu_isa_avx512_core_bf16))
        return lp_fail(why, "oneDNN %d.%d does not dispatch to AVX512-BF16 here",
                       dnnl_version()->major, dnnl_version()->minor);
    return 0;
}

void cpu_gemm_describe(cpu_gemm_mode mode, char *buf, size_t size) {
    if (mode == CPU_GEMM_F32) {
        snprintf(buf, size, "f32 (OpenBLAS %s)", blas_core_name());
        return;
    }
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, size, "bf16 (oneDNN %d.%d.%d, %s)", v->major, v->minor, v->patch,
             dnnl_has(dnnl_cpu_isa_avx512_core_amx) ? "AMX" : "AVX512-BF16");
}

/* ---- a context's primitives ------------------------------------------------------------------ */

enum { CACHED = 48 };

typedef struct gemm_key {
    int M, N, K, lda, ldb, ldc, b_trans, accumulate;
} gemm_key;

typedef struct gemm_entry {
    gemm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, c;
} gemm_entry;

struct cpu_bf16 {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    gemm_entry cache[CACHED];
    int n_cached, next_evicted;
    uint16_t *a16; /* the activations rounded to bf16 */
    size_t a16_cap;
};

static int check(dnnl_status_t s, const char *what, lp_err *err) {
    return s == dnnl_success ? 0 : lp_fail(err, "oneDNN: %s failed (status %d)", what, (int)s);
}

static int probe(cpu_bf16 *b, lp_err *err);

int cpu_bf16_new(cpu_bf16 **out, lp_err *err) {
    cpu_bf16 *b = calloc(1, sizeof *b);
    if (!b) return lp_fail(err, "out of memory");
    if (check(dnnl_engine_create(&b->engine, dnnl_cpu, 0), "creating the CPU engine", err) < 0 ||
        check(dnnl_stream_create(&b->stream, b->engine, dnnl_stream_default_flags),
              "creating a stream", err) < 0 ||
        probe(b, err) < 0) {
        cpu_bf16_free(b);
        return -1;
    }
    *out = b;
    return 0;
}

void cpu_bf16_free(cpu_bf16 *b) {
    if (!b) return;
    for (int i = 0; i < b->n_cached; i++) dnnl_primitive_destroy(b->cache[i].prim);
    if (b->stream) dnnl_stream_destroy(b->stream);
    if (b->engine) dnnl_engine_destroy(b->engine);
    free(b->a16);
    free(b);
}

/* The matmul primitive for key: A [M,K] bf16, B [K,N] bf16 (stored [N,K] when b_trans), C [M,N]
 * f32, C += with accumulate (a sum post-op). */
static int make_entry(cpu_bf16 *b, const gemm_key *k, gemm_entry *e, lp_err *err) {
    dnnl_dims_t a_dims = {k->M, k->K}, b_dims = {k->K, k->N}, c_dims = {k->M, k->N};
    dnnl_dims_t a_strides = {k->lda, 1}, c_strides = {k->ldc, 1};
    dnnl_dims_t b_strides = {k->ldb, 1};
    if (k->b_trans) b_strides[0] = 1, b_strides[1] = k->ldb;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int rc = check(dnnl_memory_desc_init_by_strides(&e->a, 2, a_dims, dnnl_bf16, a_strides),
                   "describing A", err);
    if (!rc)
        rc = check(dnnl_memory_desc_init_by_strides(&e->b, 2, b_dims, dnnl_bf16, b_strides),
                   "describing B", err);
    if (!rc)
        rc = check(dnnl_memory_desc_init_by_strides(&e->c, 2, c_dims, dnnl_f32, c_strides),
                   "describing C", err);
    if (!rc) rc = check(dnnl_matmul_desc_init(&desc, &e->a, &e->b, NULL, &e->c), "matmul", err);
    if (!rc) rc = check(dnnl_primitive_attr_create(&attr), "attributes", err);
    if (!rc && k->accumulate) {
        rc = check(dnnl_post_ops_create(&post), "post-ops", err);
        if (!rc) rc = check(dnnl_post_ops_append_sum(post, 1.0f), "the sum post-op", err);
        if (!rc) rc = check(dnnl_primitive_attr_set_post_ops(attr, post), "post-ops", err);
    }
    if (!rc)
        rc = check(dnnl_primitive_desc_create(&pd, &desc, attr, b->engine, NULL),
                   "choosing a bf16 matmul", err);
    if (!rc) rc = check(dnnl_primitive_create(&e->prim, pd), "creating the matmul", err);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    e->key = *k;
    return rc;
}

static gemm_entry *entry_for(cpu_bf16 *b, const gemm_key *k, lp_err *err) {
    for (int i = 0; i < b->n_cached; i++)
        if (!memcmp(&b->cache[i].key, k, sizeof *k)) return &b->cache[i];
    gemm_entry *e;
    if (b->n_cached < CACHED) {
        e = &b->cache[b->n_cached];
    } else { /* full: replace the oldest */
        e = &b->cache[b->next_evicted];
        b->next_evicted = (b->next_evicted + 1) % CACHED;
        dnnl_primitive_destroy(e->prim);
        b->n_cached--;
    }
    if (make_entry(b, k, e, err) < 0) return NULL;
    b->n_cached++;
    return e;
}

/* A [M,K] (leading dimension lda) rounded to nearest-even bf16, packed [M,K]. */
static const uint16_t *round_a(cpu_bf16 *b, const float *A, int M, int K, int lda) {
    size_t need = (size_t)M * K;
    if (need > b->a16_cap) {
        free(b->a16);
        b->a16 = NULL;
        b->a16_cap = 0;
        if (posix_memalign((void **)&b->a16, 64, need * sizeof *b->a16) != 0) return NULL;
        b->a16_cap = need;
    }
    uint16_t *dst = b->a16;
#pragma omp parallel for
    for (int i = 0; i < M; i++) {
        const uint32_t *row = (const uint32_t *)(A + (size_t)i * lda);
        uint16_t *out = dst + (size_t)i * K;
#pragma omp simd
        for (int j = 0; j < K; j++) {
            uint32_t u = row[j];
            uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
            out[j] =
                (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)rounded;
        }
    }
    return dst;
}

static int run_gemm(cpu_bf16 *b, int M, int N, int K, const float *A, int lda, const void *B,
                    int b_trans, int ldb, float *C, int ldc, int accumulate, lp_err *err) {
    gemm_key k = {M, N, K, K, ldb, ldc, b_trans, accumulate};
    const uint16_t *a16 = round_a(b, A, M, K, lda);
    if (!a16) return lp_fail(err, "out of memory rounding a GEMM's input to bf16");
    gemm_entry *e = entry_for(b, &k, err);
    if (!e) return -1;
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    int rc = check(dnnl_memory_create(&am, &e->a, b->engine, (void *)a16), "A", err);
    if (!rc) rc = check(dnnl_memory_create(&bm, &e->b, b->engine, (void *)B), "B", err);
    if (!rc) rc = check(dnnl_memory_create(&cm, &e->c, b->engine, C), "C", err);
    if (!rc) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
        rc = check(dnnl_primitive_execute(e->prim, b->stream, 3, args), "running a matmul", err);
        if (!rc) rc = check(dnnl_stream_wait(b->stream), "waiting for a matmul", err);
    }
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    return rc;
}

/* One small product, checked: a oneDNN that cannot run bf16 matmuls fails here, at start-up. */
static int probe(cpu_bf16 *b, lp_err *err) {
    enum { P = 32 };
    float a[P * P], c[P * P];
    uint16_t w[P * P];
    for (int i = 0; i < P * P; i++) a[i] = 1.0f, w[i] = 0x3f00; /* 0.5 in bf16 */
    if (run_gemm(b, P, P, P, a, P, w, 0, P, c, P, 0, err) < 0) return -1;
    for (int i = 0; i < P * P; i++)
        if (c[i] != 0.5f * P)
            return lp_fail(err, "oneDNN's bf16 matmul computed %g, not %g", c[i], 0.5 * P);
    return 0;
}

void cpu_gemm_bf16(ops_ctx *c, int M, int N, int K, const float *A, int lda, const void *B,
                   int b_trans, int ldb, float *C, int ldc, int accumulate) {
    lp_err err;
    if (run_gemm(cpu_ws(c)->bf16, M, N, K, A, lda, B, b_trans, ldb, C, ldc, accumulate, &err) < 0) {
        /* the context ran one at its start: a failure now is a bug, never a wrong result */
        fprintf(stderr, "loraps: bf16 GEMM [%d,%d,%d]: %s\n", M, N, K, err.msg);
        abort();
    }
}

#else /* built without oneDNN */

int cpu_gemm_bf16_available(lp_err *why) {
    return lp_fail(why, "this build has no oneDNN (libdnnl-dev), which runs the bf16 GEMMs: "
                        "Debian's OpenBLAS 0.3.21 has no cblas_sbgemm");
}

void cpu_gemm_describe(cpu_gemm_mode mode, char *buf, size_t size) {
    snprintf(buf, size, "%s (OpenBLAS %s)", mode == CPU_GEMM_F32 ? "f32" : "bf16",
             blas_core_name());
}

int cpu_bf16_new(cpu_bf16 **out, lp_err *err) {
    *out = NULL;
    lp_err why;
    cpu_gemm_bf16_available(&why);
    return lp_fail(err, "%s", why.msg);
}

void cpu_bf16_free(cpu_bf16 *b) {
    (void)b;
}

void cpu_gemm_bf16(ops_ctx *c, int M, int N, int K, const float *A, int lda, const void *B,
                   int b_trans, int ldb, float *C, int ldc, int accumulate) {
    (void)c, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)b_trans, (void)ldb;
    (void)C, (void)ldc, (void)accumulate;
    abort(); /* unreachable: no context gets bf16 GEMMs without oneDNN */
}

#endif
