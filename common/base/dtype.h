/* Element types as safetensors names them, and conversions between the float formats. */
#ifndef LORAPS_DTYPE_H
#define LORAPS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum dtype {
    DT_F32,
    DT_F16,
    DT_BF16,
    DT_F64,
    DT_I64,
    DT_I32,
    DT_I16,
    DT_I8,
    DT_U64,
    DT_U32,
    DT_U16,
    DT_U8,
    DT_BOOL,
    DT_COUNT
} dtype;

const char *dtype_name(dtype t);                   /* "F32", "BF16", ... */
int dtype_from_name(const char *name, dtype *out); /* 0, or -1 for an unknown name */
size_t dtype_size(dtype t);

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f); /* round to nearest even; overflow to inf */

/* Converts n elements of a float dtype (F32, F16, BF16, F64) to f32. Returns -1 for other dtypes.
 */
int dtype_to_f32(const void *src, dtype t, float *dst, size_t n);
/* Converts n f32 values to F32, F16 or BF16. Returns -1 for other dtypes. */
int dtype_from_f32(const float *src, dtype t, void *dst, size_t n);

#endif
