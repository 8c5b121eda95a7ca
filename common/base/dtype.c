#include "dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} DTYPES[DT_COUNT] = {
    [DT_F32] = {"F32", 4},   [DT_F16] = {"F16", 2}, [DT_BF16] = {"BF16", 2}, [DT_F64] = {"F64", 8},
    [DT_I64] = {"I64", 8},   [DT_I32] = {"I32", 4}, [DT_I16] = {"I16", 2},   [DT_I8] = {"I8", 1},
    [DT_U64] = {"U64", 8},   [DT_U32] = {"U32", 4}, [DT_U16] = {"U16", 2},   [DT_U8] = {"U8", 1},
    [DT_BOOL] = {"BOOL", 1},
};

const char *dtype_name(dtype t) {
    return (unsigned)t < DT_COUNT ? DTYPES[t].name : "?";
}

size_t dtype_size(dtype t) {
    return (unsigned)t < DT_COUNT ? DTYPES[t].size : 0;
}

int dtype_from_name(const char *name, dtype *out) {
    for (int i = 0; i < DT_COUNT; i++) {
        if (strcmp(name, DTYPES[i].name) == 0) {
            *out = (dtype)i;
            return 0;
        }
    }
    return -1;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to even */
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;  /* NaN */
    if (abs >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520: inf */
    if (abs < 0x38800000u) {
        /* subnormal or zero in f16: round abs / 2^-24 to the nearest even integer */
        float v = bits_f32(abs) * 16777216.0f;
        uint32_t q = (uint32_t)v;
        float rest = v - (float)q;
        if (rest > 0.5f || (rest == 0.5f && (q & 1u))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return sign | (uint16_t)(((rounded >> 13) - (112u << 10)) & 0x7fffu);
}

int dtype_to_f32(const void *src, dtype t, float *dst, size_t n) {
    switch (t) {
    case DT_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const char *)src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    case DT_F16:
    case DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, (const char *)src + 2 * i, 2);
            dst[i] = t == DT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        return 0;
    default:
        return -1;
    }
}

int dtype_from_f32(const float *src, dtype t, void *dst, size_t n) {
    switch (t) {
    case DT_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case DT_F16:
    case DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = t == DT_F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
            memcpy((char *)dst + 2 * i, &h, 2);
        }
        return 0;
    default:
        return -1;
    }
}
