/* Every op of compute/ops.h on the CUDA backend against the CPU backend (the f32 reference,
 * itself checked by finite differences and against PyTorch in tests/unit), on random inputs that
 * both see exactly (bf16-representable). Tolerances are relative L2 errors: bf16 activations carry
 * 8 bits of mantissa, so a GEMM's output rounding alone is ~2e-3; ops that round intermediates to
 * bf16 (attention's probabilities, the head's dlogits) are allowed 1e-2. Dropout masks must agree
 * exactly. Needs a GPU (ctest label gpu; tests/gpu/run.sh). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gpu_compare.h"

#define TOL_GEMM 6e-3
#define TOL_ELEM 6e-3
#define TOL_SOFT 1.2e-2

#define CA(b) ((const act *)(b).cpu)
#define GA(b) ((const act *)(b).gpu)
#define MC(b) ((act *)(b).cpu)
#define MG(b) ((act *)(b).gpu)

/* ---- matmul --------------------------------------------------------------------------------- */

static void run_matmul(int N, int IC, int OC, weight_layout layout, int bias) {
    char what[96];
    both x = act_buf((size_t)N * IC, 1), out = act_buf((size_t)N * OC, 0);
    wboth W = make_weight((size_t)IC * OC, 0.05f, 0), b = make_weight(OC, 0.5f, 0);
    matmul_forward(P.cpu, MC(out), CA(x), &W.cpu, layout, bias ? &b.cpu : NULL, N, IC, OC);
    poison(&out);
    matmul_forward(P.gpu, MG(out), GA(x), &W.gpu, layout, bias ? &b.gpu : NULL, N, IC, OC);
    snprintf(what, sizeof what, "matmul fwd %dx%dx%d %s%s", N, IC, OC,
             layout == W_IN_OUT ? "[in,out]" : "[out,in]", bias ? " +bias" : "");
    compare(what, &out, TOL_GEMM);
    /* backward, overwriting and accumulating */
    both dout = act_buf((size_t)N * OC, 1), dinp = act_buf((size_t)N * IC, 1);
    matmul_backward(P.cpu, MC(dinp), CA(dout), &W.cpu, layout, N, IC, OC, 1);
    matmul_backward(P.gpu, MG(dinp), GA(dout), &W.gpu, layout, N, IC, OC, 1);
    snprintf(what, sizeof what, "matmul bwd += %dx%dx%d %s", N, IC, OC,
             layout == W_IN_OUT ? "[in,out]" : "[out,in]");
    compare(what, &dinp, TOL_GEMM);
    matmul_backward(P.cpu, MC(dinp), CA(dout), &W.cpu, layout, N, IC, OC, 0);
    poison(&dinp);
    matmul_backward(P.gpu, MG(dinp), GA(dout), &W.gpu, layout, N, IC, OC, 0);
    snprintf(what, sizeof what, "matmul bwd = %dx%dx%d", N, IC, OC);
    compare(what, &dinp, TOL_GEMM);
    drop(&x), drop(&out), drop(&W.data), drop(&b.data), drop(&dout), drop(&dinp);
}

static void test_matmul(void **state) {
    (void)state;
    run_matmul(256, 768, 2304, W_IN_OUT, 1);
    run_matmul(256, 768, 768, W_OUT_IN, 0);
    run_matmul(100, 64, 192, W_IN_OUT, 1); /* rows not a multiple of anything */
    run_matmul(77, 576, 1536, W_OUT_IN, 1);
}

/* ---- norms ---------------------------------------------------------------------------------- */

static void run_layernorm(int C) {
    const int N = 300;
    both x = act_buf((size_t)N * C, 2), out = act_buf((size_t)N * C, 0);
    both mean = f32_buf(N, 0), rstd = f32_buf(N, 0);
    wboth w = make_weight(C, 1, 1), b = make_weight(C, 1, 1);
    for (int i = 0; i < C; i++) w.data.cpu[i] += 1.0f;
    ops_upload(P.gpu, w.data.gpu, w.data.cpu, C * 4);
    layernorm_forward(P.cpu, MC(out), mean.cpu, rstd.cpu, CA(x), &w.cpu, &b.cpu, N, C, 1e-5f);
    poison(&out);
    layernorm_forward(P.gpu, MG(out), mean.gpu, rstd.gpu, GA(x), &w.gpu, &b.gpu, N, C, 1e-5f);
    compare("layernorm fwd out", &out, TOL_ELEM);
    compare("layernorm fwd mean", &mean, 1e-5);
    compare("layernorm fwd rstd", &rstd, 1e-5);
    both dout = act_buf((size_t)N * C, 1), dinp = act_buf((size_t)N * C, 1);
    layernorm_backward(P.cpu, MC(dinp), CA(dout), CA(x), &w.cpu, mean.cpu, rstd.cpu, N, C);
    layernorm_backward(P.gpu, MG(dinp), GA(dout), GA(x), &w.gpu, mean.gpu, rstd.gpu, N, C);
    compare("layernorm bwd (adds)", &dinp, TOL_ELEM);
    drop(&x), drop(&out), drop(&mean), drop(&rstd), drop(&w.data), drop(&b.data), drop(&dout),
        drop(&dinp);
}

static void test_layernorm(void **state) {
    (void)state;
    run_layernorm(768); /* 8 values at a time */
    run_layernorm(100); /* one at a time */
}

static void run_rmsnorm(int C) {
    const int N = 300;
    both x = act_buf((size_t)N * C, 2), out = act_buf((size_t)N * C, 0),
         re = act_buf((size_t)N * C, 0);
    both rstd = f32_buf(N, 0);
    wboth w = make_weight(C, 1, 1);
    rmsnorm_forward(P.cpu, MC(out), rstd.cpu, CA(x), &w.cpu, N, C, 1e-5f);
    poison(&out);
    rmsnorm_forward(P.gpu, MG(out), rstd.gpu, GA(x), &w.gpu, N, C, 1e-5f);
    compare("rmsnorm fwd out", &out, TOL_ELEM);
    compare("rmsnorm fwd rstd", &rstd, 1e-5);
    rmsnorm_recompute(P.cpu, MC(re), CA(x), &w.cpu, rstd.cpu, N, C);
    poison(&re);
    rmsnorm_recompute(P.gpu, MG(re), GA(x), &w.gpu, rstd.gpu, N, C);
    compare("rmsnorm recompute", &re, TOL_ELEM);
    both dout = act_buf((size_t)N * C, 1), dinp = act_buf((size_t)N * C, 1);
    rmsnorm_backward(P.cpu, MC(dinp), CA(dout), CA(x), &w.cpu, rstd.cpu, N, C);
    rmsnorm_backward(P.gpu, MG(dinp), GA(dout), GA(x), &w.gpu, rstd.gpu, N, C);
    compare("rmsnorm bwd (adds)", &dinp, TOL_ELEM);
    drop(&x), drop(&out), drop(&re), drop(&rstd), drop(&w.data), drop(&dout), drop(&dinp);
}

static void test_rmsnorm(void **state) {
    (void)state;
    run_rmsnorm(576);
    run_rmsnorm(100);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* fused: GPT-2's layout, q/k/v views of one [rows, 3C] buffer */
static void run_attention(int B, int T, int NH, int NKV, int hd, int fused) {
    char what[128];
    size_t rows = (size_t)B * T, QD = (size_t)NH * hd, KVD = (size_t)NKV * hd;
    int ldq = fused ? (int)(3 * QD) : (int)QD, ldk = fused ? (int)(3 * QD) : (int)KVD;
    both qkv = act_buf(rows * (fused ? 3 * QD : QD + 2 * KVD), 1);
    size_t koff = fused ? QD : rows * QD, voff = fused ? 2 * QD : rows * QD + rows * KVD;
    both out = act_buf(rows * QD, 0);
    float *state_cpu = calloc(attention_state_floats(P.cpu, B, T, NH), sizeof(float));
    both state = f32_buf(attention_state_floats(P.gpu, B, T, NH), 0);
    const act *qc = CA(qkv), *kc = (const act *)(qkv.cpu + koff),
              *vc = (const act *)(qkv.cpu + voff);
    const act *qg = GA(qkv), *kg = (const act *)((const uint16_t *)qkv.gpu + koff);
    const act *vg = (const act *)((const uint16_t *)qkv.gpu + voff);
    attention_forward(P.cpu, MC(out), state_cpu, qc, kc, vc, ldq, ldk, B, T, NH, NKV, hd);
    poison(&out);
    attention_forward(P.gpu, MG(out), state.gpu, qg, kg, vg, ldq, ldk, B, T, NH, NKV, hd);
    snprintf(what, sizeof what, "attention fwd B%d T%d NH%d NKV%d hd%d%s", B, T, NH, NKV, hd,
             fused ? " fused" : "");
    compare(what, &out, TOL_SOFT);
    /* backward */
    both dout = act_buf(rows * QD, 1), dqkv = act_buf(qkv.n, 0);
    act *dqc = MC(dqkv), *dkc = (act *)(dqkv.cpu + koff), *dvc = (act *)(dqkv.cpu + voff);
    act *dqg = MG(dqkv), *dkg = (act *)((uint16_t *)dqkv.gpu + koff);
    act *dvg = (act *)((uint16_t *)dqkv.gpu + voff);
    attention_backward(P.cpu, dqc, dkc, dvc, CA(dout), CA(out), qc, kc, vc, state_cpu, ldq, ldk, B,
                       T, NH, NKV, hd);
    poison(&dqkv);
    /* the GPU's own forward output: backward reads it (rowsum(dout * out)) */
    attention_backward(P.gpu, dqg, dkg, dvg, GA(dout), GA(out), qg, kg, vg, state.gpu, ldq, ldk, B,
                       T, NH, NKV, hd);
    snprintf(what, sizeof what, "attention bwd dq,dk,dv B%d T%d NH%d NKV%d hd%d%s", B, T, NH, NKV,
             hd, fused ? " fused" : "");
    compare(what, &dqkv, TOL_SOFT);
    free(state_cpu);
    drop(&qkv), drop(&out), drop(&state), drop(&dout), drop(&dqkv);
}

static void test_attention_flash(void **state) {
    (void)state;
    run_attention(2, 256, 12, 12, 64, 1); /* GPT-2's shape, fused qkv */
    run_attention(2, 100, 12, 12, 64, 1); /* T not a multiple of the tile */
    run_attention(1, 200, 8, 2, 64, 0);   /* grouped-query, Llama-1B's head size */
    run_attention(1, 130, 8, 2, 128, 0);  /* Llama-8B's head size */
    run_attention(3, 64, 4, 4, 128, 0);
}

static void test_attention_plain(void **state) {
    (void)state;
    run_attention(2, 50, 4, 4, 16, 1); /* the tiny models' shapes */
    run_attention(2, 33, 4, 2, 16, 0);
    run_attention(1, 40, 6, 2, 32, 0);
    setenv("LORAPS_CUDA_ATTENTION", "plain", 1); /* the plain kernels at the flash shapes too */
    run_attention(1, 100, 4, 2, 64, 0);
    run_attention(1, 70, 2, 1, 128, 0);
    unsetenv("LORAPS_CUDA_ATTENTION");
}

static void test_attention_cached(void **state) {
    (void)state;
    const int NH = 8, NKV = 2, hd = 64, past = 37, n = 5, len = past + n;
    size_t QD = (size_t)NH * hd, KVD = (size_t)NKV * hd;
    both q = act_buf((size_t)n * QD, 1), k = act_buf((size_t)len * KVD, 1);
    both v = act_buf((size_t)len * KVD, 1), out = act_buf((size_t)n * QD, 0);
    ops_ctx *cpu;
    ops_limits lim = {
        .max_rows = 64, .max_T = 64, .max_heads = NH, .head_dim = hd, .max_kv = 256, .vocab = 16};
    lp_err err;
    if (ops_ctx_new(&cpu, device_cpu(), &lim, &err) < 0) fail_msg("%s", err.msg);
    attention_cached(cpu, MC(out), CA(q), (int)QD, CA(k), CA(v), (int)KVD, n, past, NH, NKV, hd);
    poison(&out);
    attention_cached(P.gpu, MG(out), GA(q), (int)QD, GA(k), GA(v), (int)KVD, n, past, NH, NKV, hd);
    compare("attention with a KV cache (5 after 37)", &out, TOL_SOFT);
    ops_ctx_free(cpu);
    drop(&q), drop(&k), drop(&v), drop(&out);
}

/* ---- elementwise ---------------------------------------------------------------------------- */

static void test_elementwise(void **state) {
    (void)state;
    const int n = 100003; /* odd: the unpacked kernels */
    for (int packed = 0; packed < 2; packed++) {
        int m = packed ? 98304 : n;
        both x = act_buf(m, 2), y = act_buf(m, 1), out = act_buf(m, 0), out2 = act_buf(m, 0);
        gelu_forward(P.cpu, MC(out), CA(x), m);
        poison(&out);
        gelu_forward(P.gpu, MG(out), GA(x), m);
        compare(packed ? "gelu fwd (packed)" : "gelu fwd", &out, TOL_ELEM);
        gelu_backward(P.cpu, MC(out), CA(x), CA(y), m);
        poison(&out);
        gelu_backward(P.gpu, MG(out), GA(x), GA(y), m);
        compare(packed ? "gelu bwd (packed)" : "gelu bwd", &out, TOL_ELEM);
        swiglu_forward(P.cpu, MC(out), CA(x), CA(y), m);
        poison(&out);
        swiglu_forward(P.gpu, MG(out), GA(x), GA(y), m);
        compare(packed ? "swiglu fwd (packed)" : "swiglu fwd", &out, TOL_ELEM);
        both d = act_buf(m, 1);
        swiglu_backward(P.cpu, MC(out), MC(out2), CA(x), CA(y), CA(d), m);
        poison(&out), poison(&out2);
        swiglu_backward(P.gpu, MG(out), MG(out2), GA(x), GA(y), GA(d), m);
        compare("swiglu bwd dgate", &out, TOL_ELEM);
        compare("swiglu bwd dup", &out2, TOL_ELEM);
        residual_forward(P.cpu, MC(out), CA(x), CA(y), m);
        poison(&out);
        residual_forward(P.gpu, MG(out), GA(x), GA(y), m);
        compare("residual fwd", &out, TOL_ELEM);
        residual_backward(P.cpu, MC(x), CA(y), m);
        residual_backward(P.gpu, MG(x), GA(y), m);
        compare("residual bwd (adds)", &x, TOL_ELEM);
        drop(&x), drop(&y), drop(&out), drop(&out2), drop(&d);
    }
}

static void test_rope(void **state) {
    (void)state;
    const int B = 2, T = 70, NH = 6, hd = 64, P0 = 0;
    size_t n = (size_t)B * T * NH * hd;
    double inv[32];
    for (int j = 0; j < hd / 2; j++) inv[j] = 1.0 / pow(10000.0, 2.0 * j / hd);
    both cs = f32_buf((size_t)T * hd, 0);
    rope_table(cs.cpu, inv, T, hd);
    ops_upload(P.gpu, cs.gpu, cs.cpu, cs.n * 4);
    both x = act_buf(n, 1), dx = act_buf(n, 0);
    rope_forward(P.cpu, MC(x), cs.cpu, B * T, T, P0, NH, hd);
    rope_forward(P.gpu, MG(x), cs.gpu, B * T, T, P0, NH, hd);
    compare("rope fwd (in place)", &x, TOL_ELEM);
    rope_backward(P.cpu, MC(dx), CA(x), cs.cpu, B * T, T, P0, NH, hd);
    poison(&dx);
    rope_backward(P.gpu, MG(dx), GA(x), cs.gpu, B * T, T, P0, NH, hd);
    compare("rope bwd", &dx, TOL_ELEM);
    drop(&cs), drop(&x), drop(&dx);
}

static void test_embeddings(void **state) {
    (void)state;
    const int B = 3, T = 20, C = 64, V = 300;
    int tokens[60];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 37) % V;
    lp_err err;
    int *tok_gpu = device_alloc(P.dev, sizeof tokens, &err);
    ops_upload(P.gpu, tok_gpu, tokens, sizeof tokens);
    wboth wte = make_weight((size_t)V * C, 1, 0), wpe = make_weight((size_t)T * C, 1, 0);
    both out = act_buf((size_t)B * T * C, 0);
    encoder_forward(P.cpu, MC(out), tokens, &wte.cpu, &wpe.cpu, B, T, 0, C);
    poison(&out);
    encoder_forward(P.gpu, MG(out), tok_gpu, &wte.gpu, &wpe.gpu, B, T, 0, C);
    compare("encoder (token + position)", &out, TOL_ELEM);
    embedding_forward(P.cpu, MC(out), tokens, &wte.cpu, B * T, C);
    poison(&out);
    embedding_forward(P.gpu, MG(out), tok_gpu, &wte.gpu, B * T, C);
    compare("embedding", &out, 0); /* a copy: exact */
    device_free(P.dev, tok_gpu);
    drop(&wte.data), drop(&wpe.data), drop(&out);
}

/* ---- the head and its loss --------------------------------------------------------------------
 */

/* pad: zero rows after the head's V (a GPU's embedding tables have rows a multiple of 64) */
static void run_head_loss(int pad) {
    const int rows = 700, C = 128, V = 4001; /* an odd vocabulary: padded rows of logits */
    int *targets = malloc(rows * sizeof(int));
    for (int i = 0; i < rows; i++) targets[i] = i % 7 == 3 ? -1 : (i * 131) % V;
    lp_err err;
    int *tg = device_alloc(P.dev, rows * sizeof(int), &err);
    ops_upload(P.gpu, tg, targets, rows * sizeof(int));
    both x = act_buf((size_t)rows * C, 1), dx = act_buf((size_t)rows * C, 0);
    both losses = f32_buf(rows, 0);
    wboth head = make_weight((size_t)V * C, 0.2f, 0);
    if (pad) { /* the same head with zero rows after it, as model_place lays out a table */
        void *padded = device_alloc(P.dev, (size_t)(V + pad) * C * 2, &err);
        float *zeros = calloc((size_t)pad * C, sizeof(float));
        ops_copy_act(P.gpu, (act *)padded, GA(head.data), (size_t)V * C);
        ops_act_from_f32(P.gpu, (act *)((uint16_t *)padded + (size_t)V * C), zeros,
                         (size_t)pad * C);
        free(zeros);
        device_free(P.dev, head.data.gpu);
        head.data.gpu = padded;
        head.gpu.data = padded;
        head.gpu.pad_rows = pad;
    }
    float scale = 1.0f / rows;
    head_loss(P.cpu, CA(x), &head.cpu, targets, rows, C, V, scale, MC(dx), NULL, losses.cpu);
    poison(&dx), poison(&losses);
    head_loss(P.gpu, GA(x), &head.gpu, tg, rows, C, V, scale, MG(dx), NULL, losses.gpu);
    compare(pad ? "head (padded rows): per-token losses" : "head: per-token losses", &losses, 2e-3);
    compare(pad ? "head (padded rows): dx" : "head: dx", &dx, TOL_SOFT);
    double sum_cpu = 0;
    for (int i = 0; i < rows; i++) sum_cpu += losses.cpu[i];
    double sum_gpu = ops_sum_f32(P.gpu, losses.gpu, rows);
    printf("  head: summed loss gpu %.6f cpu %.6f\n", sum_gpu, sum_cpu);
    assert_true(fabs(sum_gpu - sum_cpu) <= 2e-3 * sum_cpu);
    device_free(P.dev, tg);
    free(targets);
    drop(&x), drop(&dx), drop(&losses), drop(&head.data);
}

static void test_head_loss(void **state) {
    (void)state;
    run_head_loss(0);
    run_head_loss((64 - 4001 % 64) % 64);
}

/* ---- LoRA ------------------------------------------------------------------------------------ */

static void test_lora(void **state) {
    (void)state;
    const int N = 512, IC = 768, OC = 2304, h_ld = 16;
    const int row0[2] = {0, 192}, nrows[2] = {192, 320}, rank[2] = {8, 16};
    const float scale[2] = {2.0f, 0.5f};
    both x = act_buf((size_t)N * IC, 1), out = act_buf((size_t)N * OC, 1);
    both h = act_buf((size_t)N * h_ld, 0), dh = act_buf((size_t)N * h_ld, 0);
    both dout = act_buf((size_t)N * OC, 1), dx = act_buf((size_t)N * IC, 1);
    both A[2], Bm[2], dA[2], dB[2], Aa[2], Ba[2];
    lora_segment sc[2], sg[2];
    for (int s = 0; s < 2; s++) {
        A[s] = f32_buf((size_t)rank[s] * IC, 0.05f);
        Bm[s] = f32_buf((size_t)OC * rank[s], 0.05f);
        dA[s] = f32_buf((size_t)rank[s] * IC, 0.1f);
        dB[s] = f32_buf((size_t)OC * rank[s], 0.1f);
        Aa[s] = act_buf(A[s].n, 0);
        Ba[s] = act_buf(Bm[s].n, 0);
        ops_act_from_device_f32(P.gpu, MG(Aa[s]), A[s].gpu, A[s].n);
        ops_act_from_device_f32(P.gpu, MG(Ba[s]), Bm[s].gpu, Bm[s].n);
        sc[s] = (lora_segment){row0[s],
                               nrows[s],
                               rank[s],
                               scale[s],
                               A[s].cpu,
                               Bm[s].cpu,
                               (const act *)A[s].cpu,
                               (const act *)Bm[s].cpu,
                               dA[s].cpu,
                               dB[s].cpu};
        sg[s] = (lora_segment){row0[s],   nrows[s],  rank[s],   scale[s],  A[s].gpu,
                               Bm[s].gpu, GA(Aa[s]), GA(Ba[s]), dA[s].gpu, dB[s].gpu};
    }
    lora_forward(P.cpu, MC(out), MC(h), CA(x), sc, 2, IC, OC, h_ld);
    lora_forward(P.gpu, MG(out), MG(h), GA(x), sg, 2, IC, OC, h_ld);
    compare("lora fwd out (adds)", &out, TOL_GEMM);
    lora_backward(P.cpu, MC(dx), MC(dh), CA(dout), CA(x), CA(h), sc, 2, IC, OC, h_ld);
    lora_backward(P.gpu, MG(dx), MG(dh), GA(dout), GA(x), GA(h), sg, 2, IC, OC, h_ld);
    compare("lora bwd dx (adds)", &dx, TOL_GEMM);
    for (int s = 0; s < 2; s++) {
        char what[64];
        snprintf(what, sizeof what, "lora bwd dA seg %d (r=%d, f32, adds)", s, rank[s]);
        compare(what, &dA[s], TOL_GEMM);
        snprintf(what, sizeof what, "lora bwd dB seg %d (r=%d, f32, adds)", s, rank[s]);
        compare(what, &dB[s], TOL_GEMM);
    }
    for (int s = 0; s < 2; s++)
        drop(&A[s]), drop(&Bm[s]), drop(&dA[s]), drop(&dB[s]), drop(&Aa[s]), drop(&Ba[s]);
    drop(&x), drop(&out), drop(&h), drop(&dh), drop(&dout), drop(&dx);
}

/* ---- dropout: the same masks as the CPU, exactly -----------------------------------------------
 */

static void test_dropout(void **state) {
    (void)state;
    const int rows = 96, cols = 200, seq_rows = 32; /* three sequences */
    uint64_t ids[3] = {5, 1000003, 42};
    lp_err err;
    uint64_t *ids_gpu = device_alloc(P.dev, sizeof ids, &err);
    ops_upload(P.gpu, ids_gpu, ids, sizeof ids);
    size_t n = (size_t)rows * cols;
    both x = act_buf(n, 1), out = act_buf(n, 0), d = act_buf(n, 1), acc = act_buf(n, 1);
    dropout_forward(P.cpu, MC(out), CA(x), rows, cols, seq_rows, ids, 0.3f, 77);
    poison(&out);
    dropout_forward(P.gpu, MG(out), GA(x), rows, cols, seq_rows, ids_gpu, 0.3f, 77);
    float *g = fetch(&out);
    size_t differ = 0, dropped = 0;
    for (size_t i = 0; i < n; i++) {
        differ += (g[i] == 0) != (out.cpu[i] == 0);
        dropped += out.cpu[i] == 0;
    }
    printf("  dropout p=0.3: %zu of %zu dropped on the CPU; masks differ on %zu\n", dropped, n,
           differ);
    assert_int_equal(differ, 0);
    compare("dropout fwd values", &out, TOL_ELEM);
    dropout_backward(P.cpu, MC(acc), CA(d), rows, cols, seq_rows, ids, 0.3f, 77);
    dropout_backward(P.gpu, MG(acc), GA(d), rows, cols, seq_rows, ids_gpu, 0.3f, 77);
    compare("dropout bwd (adds)", &acc, TOL_ELEM);
    free(g);
    device_free(P.dev, ids_gpu);
    drop(&x), drop(&out), drop(&d), drop(&acc);
}

static void test_sums(void **state) {
    (void)state;
    both v = f32_buf(1000001, 1);
    double s = 0, ss = 0;
    for (size_t i = 0; i < v.n; i++) s += v.cpu[i], ss += (double)v.cpu[i] * v.cpu[i];
    double gs = ops_sum_f32(P.gpu, v.gpu, v.n), gss = ops_sum_squares_f32(P.gpu, v.gpu, v.n);
    printf("  sums: %.9g vs %.9g, squares %.9g vs %.9g\n", gs, s, gss, ss);
    assert_true(fabs(gs - s) <= 1e-9 * ss);
    assert_true(fabs(gss - ss) <= 1e-12 * ss);
    drop(&v);
}

int main(void) {
    pair_open();
    printf("%s\n", device_describe(P.dev));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_attention_flash),
        cmocka_unit_test(test_attention_plain),
        cmocka_unit_test(test_attention_cached),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_head_loss),
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
