/* quant.h - block formats bit-compatible with GGUF/ggml, and the scalar reference for each:
 * dequantize, quantize, and the dot product of a weight row with an activation row quantized
 * to the type's activation format (vec_dot_type). quant.c is the single source of truth that
 * every SIMD and device kernel is tested against. */
#ifndef PORTA_QUANT_H
#define PORTA_QUANT_H

#include "porta.h"

typedef uint16_t porta_f16;   /* IEEE binary16 bits */
typedef uint16_t porta_bf16;  /* bfloat16 bits */

#define PORTA_QK4_0 32
#define PORTA_QK4_1 32
#define PORTA_QK5_0 32
#define PORTA_QK5_1 32
#define PORTA_QK8_0 32
#define PORTA_QK8_1 32
#define PORTA_QK_K 256
#define PORTA_K_SCALE_SIZE 12

/* Element j of a 32-block: low nibble of qs[j] for j < 16, high nibble of qs[j-16] otherwise. */
struct porta_block_q4_0 { porta_f16 d; uint8_t qs[PORTA_QK4_0 / 2]; };                  /* 18 B */
struct porta_block_q4_1 { porta_f16 d, m; uint8_t qs[PORTA_QK4_1 / 2]; };               /* 20 B */
struct porta_block_q5_0 { porta_f16 d; uint8_t qh[4]; uint8_t qs[PORTA_QK5_0 / 2]; };   /* 22 B */
struct porta_block_q5_1 { porta_f16 d, m; uint8_t qh[4]; uint8_t qs[PORTA_QK5_1 / 2]; };/* 24 B */
struct porta_block_q8_0 { porta_f16 d; int8_t qs[PORTA_QK8_0]; };                       /* 34 B */
struct porta_block_q8_1 { porta_f16 d, s; int8_t qs[PORTA_QK8_1]; };  /* s = d * sum(qs), 36 B */

struct porta_block_q2_K {                                                               /* 84 B */
    uint8_t scales[PORTA_QK_K / 16];  /* low 4 bits scale, high 4 bits min */
    uint8_t qs[PORTA_QK_K / 4];
    porta_f16 d, dmin;
};
struct porta_block_q3_K {                                                              /* 110 B */
    uint8_t hmask[PORTA_QK_K / 8];
    uint8_t qs[PORTA_QK_K / 4];
    uint8_t scales[12];               /* 16 6-bit scales */
    porta_f16 d;
};
struct porta_block_q4_K {                                                              /* 144 B */
    porta_f16 d, dmin;
    uint8_t scales[PORTA_K_SCALE_SIZE]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[PORTA_QK_K / 2];
};
struct porta_block_q5_K {                                                              /* 176 B */
    porta_f16 d, dmin;
    uint8_t scales[PORTA_K_SCALE_SIZE];
    uint8_t qh[PORTA_QK_K / 8];
    uint8_t qs[PORTA_QK_K / 2];
};
struct porta_block_q6_K {                                                              /* 210 B */
    uint8_t ql[PORTA_QK_K / 2];
    uint8_t qh[PORTA_QK_K / 4];
    int8_t scales[PORTA_QK_K / 16];
    porta_f16 d;
};
struct porta_block_q8_K {                                                              /* 292 B */
    float d;
    int8_t qs[PORTA_QK_K];
    int16_t bsums[PORTA_QK_K / 16];   /* sum of each group of 16 qs */
};

/* dequantize n elements (n a multiple of the block size) */
typedef void (*porta_to_float_fn)(const void *src, float *dst, int64_t n);
/* quantize n elements (n a multiple of the block size) */
typedef void (*porta_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(w[0..n), a[0..n)); w in the weight type, a in the type's vec_dot_type */
typedef void (*porta_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);

struct porta_type_traits {
    const char *name;             /* "Q4_K", as GGUF tools print it */
    int64_t blck;                 /* elements per block (1 for F32/F16/BF16) */
    size_t type_size;             /* bytes per block */
    bool quantized;
    enum porta_dtype vec_dot_type; /* activation format for vec_dot */
    porta_to_float_fn to_float;
    porta_from_float_fn from_float;
    porta_vec_dot_fn vec_dot;     /* scalar reference */
};

/* Traits of a type, or NULL for ids porta does not support (never crashes on any int). */
const struct porta_type_traits *porta_type_traits(int type);
const char *porta_dtype_name(int type);  /* "?" for unknown */
/* Bytes of a row of n elements; 0 when n is not a multiple of the block size or overflows. */
size_t porta_row_size(enum porta_dtype type, int64_t n);

/* Half-precision conversions (round to nearest even, NaN/Inf preserved). */
float porta_f16_to_f32(porta_f16 h);
porta_f16 porta_f32_to_f16(float f);
float porta_bf16_to_f32(porta_bf16 h);
porta_bf16 porta_f32_to_bf16(float f);

/* Quantizes n floats into a row of type `type` (n a multiple of the block size).
 * Returns PORTA_E_UNSUPPORTED for types without a quantizer, PORTA_E_INVAL for a bad n. */
int porta_quantize_row(enum porta_dtype type, const float *src, void *dst, int64_t n);
/* Dequantizes one row; same errors. */
int porta_dequantize_row(enum porta_dtype type, const void *src, float *dst, int64_t n);

#endif /* PORTA_QUANT_H */
