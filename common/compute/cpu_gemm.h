/* The precision of the CPU's frozen-weight GEMMs (the linear layers and the head), chosen by
 * LORAPS_CPU_GEMM:
 *   f32   (the default) cblas_sgemm; matrices kept in bf16 are widened to f32 per use
 *   bf16  bf16 x bf16 products accumulated in f32, through oneDNN: the matrices are held in bf16
 *         (stored so, or rounded at load), the activations rounded to bf16 per GEMM. On CPUs with
 *         AMX (Sapphire Rapids and later Xeons) oneDNN runs them on the tile units.
 * bf16 needs a CPU with AVX512-BF16 (Cooper Lake and later Xeons, Zen 4) and a build with oneDNN
 * (libdnnl-dev): Debian 12's OpenBLAS 0.3.21 is built without cblas_sbgemm. Everything else
 * (LoRA factors, attention, norms, gradients) stays f32. */
#ifndef LORAPS_CPU_GEMM_H
#define LORAPS_CPU_GEMM_H

#include "error.h"

#include <stddef.h>

typedef enum cpu_gemm_mode { CPU_GEMM_F32, CPU_GEMM_BF16 } cpu_gemm_mode;

/* LORAPS_CPU_GEMM's mode; a value that is neither f32 nor bf16, or bf16 where it cannot run, is
 * an error that says why. */
int cpu_gemm_mode_from_env(cpu_gemm_mode *mode, lp_err *err);
/* 0 where bf16 GEMMs can run; else -1 and the reason. */
int cpu_gemm_bf16_available(lp_err *why);
/* One line for start-up and benchmarks: "f32 (OpenBLAS SkylakeX)",
 * "bf16 (oneDNN 2.6.3, avx512_core_amx)". */
void cpu_gemm_describe(cpu_gemm_mode mode, char *buf, size_t size);

#endif
