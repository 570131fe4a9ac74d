/* quant.c - scalar reference for the GGUF/ggml block formats: half-precision conversions, and
 * per type the dequantizer (bit-exact with ggml's dequantize_row_*), a quantizer and the dot
 * product against the type's activation format. Slow and plain on purpose: every SIMD and
 * device kernel is tested against this file. Assumes a little-endian host, as GGUF does. */

/* Bit-exactness with ggml's to_float (and gguf-py's numpy) needs `a * b - c` rounded twice:
 * forbid the compiler from fusing it into an FMA on targets where it would (aarch64, -mfma). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* half precision                                                                             */
/* ------------------------------------------------------------------------------------------ */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* v >> s rounded to nearest, ties to even (0 < s < 32). */
static inline uint32_t shr_rne(uint32_t v, int s)
{
    uint32_t r = v >> s, rem = v & ((1u << s) - 1), half = 1u << (s - 1);
    return r + (rem > half || (rem == half && (r & 1)));
}

float porta_f16_to_f32(porta_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {                       /* zero or subnormal: mant * 2^-24, exact in float */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)                        /* inf / NaN, payload kept */
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

porta_f16 porta_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    int exp = (int)(ax >> 23);
    uint32_t mant = ax & 0x7fffff;

    if (exp == 255)                       /* NaN stays a (quiet) NaN, inf stays inf */
        return sign | (mant ? (uint16_t)(0x7e00 | (mant >> 13)) : 0x7c00);
    if (exp > 142)                        /* >= 2^16: beyond the largest half even after rounding */
        return sign | 0x7c00;
    if (exp >= 113) {                     /* normal half; a carry out of the mantissa bumps the
                                           * exponent, and out of 30 it lands exactly on inf */
        uint32_t h = ((uint32_t)(exp - 112) << 10) | (mant >> 13);
        uint32_t rem = mant & 0x1fff;
        h += rem > 0x1000 || (rem == 0x1000 && (h & 1));
        return sign | (uint16_t)h;
    }
    /* subnormal half (or zero): the value in units of 2^-24 is (mant | 2^23) * 2^(exp - 126 - 23 + 24) */
    if (exp < 102)                        /* below 2^-25: rounds to zero (2^-25 itself ties to 0) */
        return sign;
    return sign | (uint16_t)shr_rne(mant | 0x800000, 126 - exp);
}

float porta_bf16_to_f32(porta_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

porta_bf16 porta_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)  /* NaN: keep the top payload bits, force quiet */
        return (porta_bf16)((x >> 16) | 0x40);
    return (porta_bf16)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

#define F16(h) porta_f16_to_f32(h)

/* ------------------------------------------------------------------------------------------ */
/* rounding helpers (safe on any float: NaN and huge values never reach an int conversion)     */
/* ------------------------------------------------------------------------------------------ */

/* Round to nearest, ties to even, as ggml's nearest_int (the 1.5 * 2^23 trick). */
static int nearest_int(float f)
{
    if (!(fabsf(f) < 4194303.0f))
        return f != f ? 0 : f > 0 ? 4194303 : -4194303;
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* (int)v truncated toward zero, then clamped to [0, hi]: the classic formats' `(int8_t)(x + 8.5f)`. */
static int trunc_clamp(float v, int hi)
{
    if (!(v > 0))
        return 0;
    return v >= (float)hi ? hi : (int)v;
}

/* roundf(v) (half away from zero) clamped to [-127, 127]: the 8-bit activation formats. */
static int8_t round_i8(float v)
{
    if (v != v)
        return 0;
    float r = roundf(v);
    return (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
}

/* Largest |x[i]|, and the x[i] (with its sign) where it occurs first. */
static float absmax_signed(const float *x, int n, float *amax)
{
    float best = 0, val = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > best) {
            best = fabsf(x[i]);
            val = x[i];
        }
    }
    *amax = best;
    return val;
}

/* ------------------------------------------------------------------------------------------ */
/* float types: F32, F16, BF16 (activations are F32), and the integer types' to_float          */
/* ------------------------------------------------------------------------------------------ */

static void f32_to_float(const void *src, float *dst, int64_t n)
{
    memmove(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n)
{
    memmove(dst, src, (size_t)n * sizeof(float));
}

static void f32_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const float *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)x[i] * y[i];
    *s = (float)sum;
}

static void f16_to_float(const void *src, float *dst, int64_t n)
{
    const porta_f16 *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = porta_f16_to_f32(x[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n)
{
    porta_f16 *y = dst;
    for (int64_t i = 0; i < n; i++)
        y[i] = porta_f32_to_f16(src[i]);
}

static void f16_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const porta_f16 *x = w;
    const float *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)porta_f16_to_f32(x[i]) * y[i];
    *s = (float)sum;
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
    const porta_bf16 *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = porta_bf16_to_f32(x[i]);
}

static void bf16_from_float(const float *src, void *dst, int64_t n)
{
    porta_bf16 *y = dst;
    for (int64_t i = 0; i < n; i++)
        y[i] = porta_f32_to_bf16(src[i]);
}

static void bf16_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const porta_bf16 *x = w;
    const float *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)porta_bf16_to_f32(x[i]) * y[i];
    *s = (float)sum;
}

static void i8_to_float(const void *src, float *dst, int64_t n)
{
    const int8_t *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)x[i];
}

static void i16_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *x = src;   /* via bytes: a GGUF tensor need not be 2-byte aligned in memory */
    for (int64_t i = 0; i < n; i++) {
        int16_t v;
        memcpy(&v, x + 2 * i, sizeof v);
        dst[i] = (float)v;
    }
}

static void i32_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *x = src;
    for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, x + 4 * i, sizeof v);
        dst[i] = (float)v;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* classic 32-element blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the Q8_1 activations           */
/* Element j < 16 sits in the low nibble of qs[j], element j + 16 in its high nibble; for the    */
/* 5-bit types bit j of the little-endian 32-bit qh is element j's fifth bit.                   */
/* ------------------------------------------------------------------------------------------ */

static inline uint32_t load_qh(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static inline void store_qh(uint8_t qh[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        qh[i] = (uint8_t)(v >> (8 * i));
}

/* Unpacks a 4-bit block's nibbles to q[0..32). */
static inline void unpack_nibbles(const uint8_t qs[16], int q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}

/* Unpacks a 5-bit block to q[0..32) in [0, 31]. */
static inline void unpack_5bit(const uint8_t qs[16], const uint8_t qh4[4], int q[32])
{
    uint32_t qh = load_qh(qh4);
    unpack_nibbles(qs, q);
    for (int j = 0; j < 32; j++)
        q[j] |= (int)((qh >> j) & 1) << 4;
}

static inline void pack_5bit(const int q[32], uint8_t qs[16], uint8_t qh4[4])
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
    for (int j = 0; j < 32; j++)
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    store_qh(qh4, qh);
}

/* Scale of a symmetric block whose largest-magnitude value maps to -nmax (ggml's choice: the
 * dominant sign gets the extra level). */
static float sym_scale(const float *x, int nmax)
{
    float amax, max = absmax_signed(x, 32, &amax);
    return max / (float)-nmax;
}

static void q4_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK4_0; i++, dst += PORTA_QK4_0) {
        float d = F16(b[i].d);
        int q[32];
        unpack_nibbles(b[i].qs, q);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)(q[j] - 8) * d;
    }
}

static void q4_0_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK4_0; i++, src += PORTA_QK4_0) {
        float d = sym_scale(src, 8), id = d ? 1.0f / d : 0.0f;
        b[i].d = porta_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int lo = trunc_clamp(src[j] * id + 8.5f, 15);
            int hi = trunc_clamp(src[j + 16] * id + 8.5f, 15);
            b[i].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void q4_0_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_0 *x = w;
    const struct porta_block_q8_0 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK4_0; i++) {
        int q[32], isum = 0;
        unpack_nibbles(x[i].qs, q);
        for (int j = 0; j < 32; j++)
            isum += (q[j] - 8) * y[i].qs[j];
        sum += (float)isum * (F16(x[i].d) * F16(y[i].d));
    }
    *s = sum;
}

/* Min/max of a block, for the asymmetric formats (q = round((x - min) / d)). */
static void block_minmax(const float *x, int n, float *min, float *max)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo)
            lo = x[j];
        if (x[j] > hi)
            hi = x[j];
    }
    *min = lo;
    *max = hi;
}

static void q4_1_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK4_1; i++, dst += PORTA_QK4_1) {
        float d = F16(b[i].d), m = F16(b[i].m);
        int q[32];
        unpack_nibbles(b[i].qs, q);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)q[j] * d + m;
    }
}

static void q4_1_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK4_1; i++, src += PORTA_QK4_1) {
        float min, max;
        block_minmax(src, 32, &min, &max);
        float d = (max - min) / 15, id = d ? 1.0f / d : 0.0f;
        b[i].d = porta_f32_to_f16(d);
        b[i].m = porta_f32_to_f16(min);
        for (int j = 0; j < 16; j++) {
            int lo = trunc_clamp((src[j] - min) * id + 0.5f, 15);
            int hi = trunc_clamp((src[j + 16] - min) * id + 0.5f, 15);
            b[i].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

static void q4_1_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_1 *x = w;
    const struct porta_block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK4_1; i++) {
        int q[32], isum = 0;
        unpack_nibbles(x[i].qs, q);
        for (int j = 0; j < 32; j++)
            isum += q[j] * y[i].qs[j];
        /* sum((q*d + m) * a) = d*da*sum(q*qa) + m*(da*sum(qa)) = ... + m*s */
        sum += (F16(x[i].d) * F16(y[i].d)) * (float)isum + F16(x[i].m) * F16(y[i].s);
    }
    *s = sum;
}

static void q5_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK5_0; i++, dst += PORTA_QK5_0) {
        float d = F16(b[i].d);
        int q[32];
        unpack_5bit(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)(q[j] - 16) * d;
    }
}

static void q5_0_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK5_0; i++, src += PORTA_QK5_0) {
        float d = sym_scale(src, 16), id = d ? 1.0f / d : 0.0f;
        int q[32];
        b[i].d = porta_f32_to_f16(d);
        for (int j = 0; j < 32; j++)
            q[j] = trunc_clamp(src[j] * id + 16.5f, 31);
        pack_5bit(q, b[i].qs, b[i].qh);
    }
}

static void q5_0_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_0 *x = w;
    const struct porta_block_q8_0 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK5_0; i++) {
        int q[32], isum = 0;
        unpack_5bit(x[i].qs, x[i].qh, q);
        for (int j = 0; j < 32; j++)
            isum += (q[j] - 16) * y[i].qs[j];
        sum += (float)isum * (F16(x[i].d) * F16(y[i].d));
    }
    *s = sum;
}

static void q5_1_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK5_1; i++, dst += PORTA_QK5_1) {
        float d = F16(b[i].d), m = F16(b[i].m);
        int q[32];
        unpack_5bit(b[i].qs, b[i].qh, q);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)q[j] * d + m;
    }
}

static void q5_1_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK5_1; i++, src += PORTA_QK5_1) {
        float min, max;
        block_minmax(src, 32, &min, &max);
        float d = (max - min) / 31, id = d ? 1.0f / d : 0.0f;
        int q[32];
        b[i].d = porta_f32_to_f16(d);
        b[i].m = porta_f32_to_f16(min);
        for (int j = 0; j < 32; j++)
            q[j] = trunc_clamp((src[j] - min) * id + 0.5f, 31);
        pack_5bit(q, b[i].qs, b[i].qh);
    }
}

static void q5_1_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_1 *x = w;
    const struct porta_block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK5_1; i++) {
        int q[32], isum = 0;
        unpack_5bit(x[i].qs, x[i].qh, q);
        for (int j = 0; j < 32; j++)
            isum += q[j] * y[i].qs[j];
        sum += (F16(x[i].d) * F16(y[i].d)) * (float)isum + F16(x[i].m) * F16(y[i].s);
    }
    *s = sum;
}

static void q8_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++, dst += PORTA_QK8_0) {
        float d = F16(b[i].d);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

/* ggml's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d). Also the activation format
 * of Q4_0, Q5_0 and Q8_0 weights. */
static void q8_0_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++, src += PORTA_QK8_0) {
        float amax;
        absmax_signed(src, 32, &amax);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        b[i].d = porta_f32_to_f16(d);
        for (int j = 0; j < 32; j++)
            b[i].qs[j] = round_i8(src[j] * id);
    }
}

static void q8_0_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q8_0 *x = w, *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < 32; j++)
            isum += x[i].qs[j] * y[i].qs[j];
        sum += (float)isum * (F16(x[i].d) * F16(y[i].d));
    }
    *s = sum;
}

static void q8_1_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q8_1 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK8_1; i++, dst += PORTA_QK8_1) {
        float d = F16(b[i].d);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

/* As Q8_0, plus s = d * sum(q) (d before its rounding to half), which carries the min term of
 * the Q4_1 / Q5_1 dot products. */
static void q8_1_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK8_1; i++, src += PORTA_QK8_1) {
        float amax;
        absmax_signed(src, 32, &amax);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        b[i].d = porta_f32_to_f16(d);
        for (int j = 0; j < 32; j++) {
            b[i].qs[j] = round_i8(src[j] * id);
            sum += b[i].qs[j];
        }
        b[i].s = porta_f32_to_f16((float)sum * d);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* K-quants: 256-element super-blocks of 16 or 32-element sub-blocks, each sub-block with its   */
/* own integer scale (and min) that multiplies the super-block's half-precision d (and dmin).   */
/* Each type has one unpack function that turns a block into plain integers: q[256] and the     */
/* per-sub-block scales; to_float and vec_dot both go through it, so the layout lives once.     */
/* ------------------------------------------------------------------------------------------ */

/* Q4_K / Q5_K scale packing: 8 sub-blocks, a 6-bit scale and a 6-bit min each, in 12 bytes.
 * Sub-blocks 0-3: scale in the low 6 bits of bytes 0-3, min in the low 6 bits of bytes 4-7.
 * Sub-blocks 4-7: low 4 bits of scale / min in the low / high nibble of bytes 8-11, their top
 * 2 bits in the top 2 bits of bytes 0-3 (scale) and 4-7 (min). */
static void get_scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

static void set_scale_min_k4(int j, uint8_t *q, int sc, int m)
{
    if (j < 4) {
        q[j] = (uint8_t)((q[j] & 0xc0) | sc);
        q[j + 4] = (uint8_t)((q[j + 4] & 0xc0) | m);
    } else {
        q[j + 4] = (uint8_t)((sc & 0x0f) | (m & 0x0f) << 4);
        q[j - 4] = (uint8_t)((q[j - 4] & 0x3f) | (sc >> 4) << 6);
        q[j] = (uint8_t)((q[j] & 0x3f) | (m >> 4) << 6);
    }
}

/* Q3_K scale packing: 16 6-bit scales (stored +32) in 12 bytes. Low 4 bits of scale j: the low
 * nibble of byte j (j < 8) or the high nibble of byte j - 8; top 2 bits: bits 2*(j/4)..+1 of
 * byte 8 + j%4. */
static int q3_k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? s[j] & 0x0f : s[j - 8] >> 4;
    int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (lo | hi << 4) - 32;
}

static void q3_k_set_scale(uint8_t *s, int j, int v)  /* v in [-32, 31]; s zeroed beforehand */
{
    int l = v + 32;
    if (j < 8)
        s[j] |= (uint8_t)(l & 0x0f);
    else
        s[j - 8] |= (uint8_t)((l & 0x0f) << 4);
    s[8 + (j & 3)] |= (uint8_t)((l >> 4) << (2 * (j >> 2)));
}

/* The 2-bit planes of Q2_K / Q3_K: element e of a super-block is bits 2*((e%128)/32) of
 * qs[32*(e/128) + e%32]. */
static inline int crumb(const uint8_t *qs, int e)
{
    return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

static void set_crumbs(uint8_t *qs, const uint8_t *L)
{
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *p = L + 128 * h + l;
            qs[32 * h + l] = (uint8_t)(p[0] | p[32] << 2 | p[64] << 4 | p[96] << 6);
        }
}

/* 4-bit planes of Q4_K / Q5_K: element e is the low (e%64 < 32) or high nibble of
 * qs[32*(e/64) + e%32]. */
static inline int k_nibble(const uint8_t *qs, int e)
{
    uint8_t b = qs[32 * (e / 64) + e % 32];
    return (e % 64) < 32 ? b & 0x0f : b >> 4;
}

static void set_k_nibbles(uint8_t *qs, const uint8_t *L)
{
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)((L[64 * c + l] & 0x0f) | (L[64 * c + l + 32] & 0x0f) << 4);
}

/* --- unpackers --- */

/* Q2_K: q in [0, 3], 16 sub-blocks of 16: x = d*sc*q - dmin*m. */
static void q2_k_unpack(const struct porta_block_q2_K *b, int q[256], int sc[16], int m[16])
{
    for (int j = 0; j < 16; j++) {
        sc[j] = b->scales[j] & 0x0f;
        m[j] = b->scales[j] >> 4;
    }
    for (int e = 0; e < 256; e++)
        q[e] = crumb(b->qs, e);
}

/* Q3_K: q in [-4, 3] (2 low bits, minus 4 where the hmask bit is clear); element e's hmask bit
 * is bit e/32 of hmask[e%32]. 16 sub-blocks of 16 with signed scales: x = d*sc*q. */
static void q3_k_unpack(const struct porta_block_q3_K *b, int q[256], int sc[16])
{
    for (int j = 0; j < 16; j++)
        sc[j] = q3_k_scale(b->scales, j);
    for (int e = 0; e < 256; e++)
        q[e] = crumb(b->qs, e) - ((b->hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
}

/* Q4_K: q in [0, 15], 8 sub-blocks of 32: x = d*sc*q - dmin*m. */
static void q4_k_unpack(const struct porta_block_q4_K *b, int q[256], int sc[8], int m[8])
{
    for (int j = 0; j < 8; j++)
        get_scale_min_k4(j, b->scales, &sc[j], &m[j]);
    for (int e = 0; e < 256; e++)
        q[e] = k_nibble(b->qs, e);
}

/* Q5_K: as Q4_K plus a fifth bit: element e's is bit e/32 of qh[e%32]. q in [0, 31]. */
static void q5_k_unpack(const struct porta_block_q5_K *b, int q[256], int sc[8], int m[8])
{
    for (int j = 0; j < 8; j++)
        get_scale_min_k4(j, b->scales, &sc[j], &m[j]);
    for (int e = 0; e < 256; e++)
        q[e] = k_nibble(b->qs, e) | ((b->qh[e % 32] >> (e / 32)) & 1) << 4;
}

/* Q6_K: q in [-32, 31]; per 128-element half h, element e = 128h + 32c + l (c in 0..3) has
 * its low 4 bits in ql[64h + l + 32*(c&1)] (low nibble for c < 2, high for c >= 2) and its top
 * 2 bits at bits 2c of qh[32h + l]. 16 sub-blocks of 16 with int8 scales: x = d*sc*q. */
static void q6_k_unpack(const struct porta_block_q6_K *b, int q[256])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, c = (e % 128) / 32, l = e % 32;
        uint8_t lb = b->ql[64 * h + l + 32 * (c & 1)];
        int lo = c < 2 ? lb & 0x0f : lb >> 4;
        int hi = (b->qh[32 * h + l] >> (2 * c)) & 3;
        q[e] = (lo | hi << 4) - 32;
    }
}

/* --- dequantizers: the float operations in ggml's order, (d*sc)*q - (dmin*m) --- */

static void q2_k_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q2_K *b = src;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, dst += PORTA_QK_K) {
        int q[256], sc[16], m[16];
        float d = F16(b[i].d), dmin = F16(b[i].dmin);
        q2_k_unpack(&b[i], q, sc, m);
        for (int e = 0; e < 256; e++)
            dst[e] = (d * (float)sc[e / 16]) * (float)q[e] - dmin * (float)m[e / 16];
    }
}

static void q3_k_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q3_K *b = src;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, dst += PORTA_QK_K) {
        int q[256], sc[16];
        float d = F16(b[i].d);
        q3_k_unpack(&b[i], q, sc);
        for (int e = 0; e < 256; e++)
            dst[e] = (d * (float)sc[e / 16]) * (float)q[e];
    }
}

static void q4_k_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q4_K *b = src;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, dst += PORTA_QK_K) {
        int q[256], sc[8], m[8];
        float d = F16(b[i].d), dmin = F16(b[i].dmin);
        q4_k_unpack(&b[i], q, sc, m);
        for (int e = 0; e < 256; e++)
            dst[e] = (d * (float)sc[e / 32]) * (float)q[e] - dmin * (float)m[e / 32];
    }
}

static void q5_k_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q5_K *b = src;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, dst += PORTA_QK_K) {
        int q[256], sc[8], m[8];
        float d = F16(b[i].d), dmin = F16(b[i].dmin);
        q5_k_unpack(&b[i], q, sc, m);
        for (int e = 0; e < 256; e++)
            dst[e] = (d * (float)sc[e / 32]) * (float)q[e] - dmin * (float)m[e / 32];
    }
}

static void q6_k_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q6_K *b = src;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, dst += PORTA_QK_K) {
        int q[256];
        float d = F16(b[i].d);
        q6_k_unpack(&b[i], q);
        for (int e = 0; e < 256; e++)
            dst[e] = (d * (float)b[i].scales[e / 16]) * (float)q[e];
    }
}

static void q8_k_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q8_K *b = src;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, dst += PORTA_QK_K)
        for (int e = 0; e < 256; e++)
            dst[e] = b[i].d * (float)b[i].qs[e];
}

/* --- dot products with Q8_K activations: integer sums per sub-block, the min terms through
 * the activation's per-16 sums (bsums), one float multiply per super-block --- */

/* sum over sub-blocks of size sub of sc[j] * sum(q * a) */
static int k_scaled_isum(const int *q, const int8_t *a, const int *sc, int sub)
{
    int isum = 0;
    for (int j = 0; j < 256 / sub; j++) {
        int s = 0;
        for (int l = 0; l < sub; l++)
            s += q[sub * j + l] * a[sub * j + l];
        isum += sc[j] * s;
    }
    return isum;
}

/* sum over sub-blocks of size sub of m[j] * sum(a over the sub-block), from the bsums */
static int k_min_isum(const int16_t *bsums, const int *m, int sub)
{
    int isum = 0;
    for (int g = 0; g < 16; g++)
        isum += m[g / (sub / 16)] * bsums[g];
    return isum;
}

static void q2_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q2_K *x = w;
    const struct porta_block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        int q[256], sc[16], m[16];
        q2_k_unpack(&x[i], q, sc, m);
        int isum = k_scaled_isum(q, y[i].qs, sc, 16);
        int msum = k_min_isum(y[i].bsums, m, 16);
        sum += (y[i].d * F16(x[i].d)) * (float)isum - (y[i].d * F16(x[i].dmin)) * (float)msum;
    }
    *s = sum;
}

static void q3_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q3_K *x = w;
    const struct porta_block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        int q[256], sc[16];
        q3_k_unpack(&x[i], q, sc);
        sum += (F16(x[i].d) * y[i].d) * (float)k_scaled_isum(q, y[i].qs, sc, 16);
    }
    *s = sum;
}

static void q4_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_K *x = w;
    const struct porta_block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        int q[256], sc[8], m[8];
        q4_k_unpack(&x[i], q, sc, m);
        int isum = k_scaled_isum(q, y[i].qs, sc, 32);
        int msum = k_min_isum(y[i].bsums, m, 32);
        sum += (F16(x[i].d) * y[i].d) * (float)isum - (F16(x[i].dmin) * y[i].d) * (float)msum;
    }
    *s = sum;
}

static void q5_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_K *x = w;
    const struct porta_block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        int q[256], sc[8], m[8];
        q5_k_unpack(&x[i], q, sc, m);
        int isum = k_scaled_isum(q, y[i].qs, sc, 32);
        int msum = k_min_isum(y[i].bsums, m, 32);
        sum += (F16(x[i].d) * y[i].d) * (float)isum - (F16(x[i].dmin) * y[i].d) * (float)msum;
    }
    *s = sum;
}

static void q6_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q6_K *x = w;
    const struct porta_block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        int q[256], sc[16];
        q6_k_unpack(&x[i], q);
        for (int j = 0; j < 16; j++)
            sc[j] = x[i].scales[j];
        sum += (F16(x[i].d) * y[i].d) * (float)k_scaled_isum(q, y[i].qs, sc, 16);
    }
    *s = sum;
}

/* --- K quantizers --- */

#define GROUP_MAX_EPS 1e-15f

/* Symmetric fits of one sub-block: q in [-nmax, nmax-1], x ~ scale * q, the largest-magnitude
 * value on the -nmax side (scale then has the opposite sign). Both weigh element i by x[i]^2 and
 * judge an assignment by sumlx^2 / suml2 (the share of x that its least-squares scale explains).
 * They write L = q + nmax and return the scale; an all-zero x gives 0 and L = 0.
 * The float expressions keep ggml's operation order, so files quantized here match
 * llama-quantize's (the tests check this against real files). */

/* ggml's make_qx_quants (rmse_type 1): the grid iscale = -nmax/max first, then the 18 grids
 * -(nmax + 0.1*is)/max, is in -9..9; ties keep the earlier. */
static float fit_symmetric(int n, int nmax, const float *x, uint8_t *L)
{
    float amax, max = absmax_signed(x, n, &amax);
    float best = 0, scale = 0;
    memset(L, 0, (size_t)n);
    if (amax < GROUP_MAX_EPS)
        return 0;
    for (int k = 0; k < 19; k++) {
        int is = k == 0 ? 0 : k <= 9 ? k - 10 : k - 9;   /* 0, -9..-1, 1..9 */
        float iscale = -((float)nmax + 0.1f * (float)is) / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++) {
            float l = (float)clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && (k == 0 || sumlx * sumlx > best * suml2)) {
            scale = sumlx / suml2;
            best = scale * sumlx;
            for (int i = 0; i < n; i++)
                L[i] = (uint8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
        }
    }
    return scale;
}

/* ggml's make_q3_quants (do_rmse): the grid -nmax/max, then up to 5 sweeps of coordinate
 * descent, moving each q to its best value given the others while the fit improves. */
static float fit_symmetric_refine(int n, int nmax, const float *x, uint8_t *L)
{
    float amax, max = absmax_signed(x, n, &amax);
    int q[32];
    memset(L, 0, (size_t)n);
    if (amax < GROUP_MAX_EPS)
        return 0;
    float iscale = (float)-nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        q[i] = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)q[i];
        suml2 += w * (float)q[i] * (float)q[i];
    }
    for (int sweep = 0; sweep < 5; sweep++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)q[i];   /* the sums without element i */
            if (!(slx > 0))
                continue;
            float sl2 = suml2 - w * (float)q[i] * (float)q[i];
            int nq = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (nq == q[i])
                continue;
            slx += w * x[i] * (float)nq;
            sl2 += w * (float)nq * (float)nq;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                q[i] = nq;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (uint8_t)(q[i] + nmax);
    return suml2 > 0 ? sumlx / suml2 : 0;
}

/* Asymmetric fit of one sub-block (ggml's make_qkx2_quants): x ~ scale*q - min_out, q in
 * [0, nmax], min_out >= 0. Tries nstep+1 iscales around nmax/(max-min); for each assignment it
 * solves the weighted least squares for (scale, min) and keeps the lowest weighted error
 * (absolute error when use_mad). Writes L, returns scale and *min_out. */
static float fit_asymmetric(int n, int nmax, const float *x, const float *w, uint8_t *L,
                            float *min_out, float rmin, float rdelta, int nstep, bool use_mad)
{
    float min, max;
    block_minmax(x, n, &min, &max);
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *min_out = -min;
        return 0;
    }
    float iscale = (float)nmax / (max - min), scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        best_err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        uint8_t Laux[32];
        float sum_w = 0, sum_x = 0, sum_l = 0, sum_l2 = 0, sum_xl = 0;
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_w += w[i];
            sum_x += w[i] * x[i];
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0))
            continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * (float)Laux[i] + this_min - x[i];
            err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *min_out = -min;
    return scale;
}

/* Quantizes the sub-block values v[0..n) to integers in [0, qmax] on the grid max_v/qmax;
 * returns that grid step (0 if every v is <= 0). */
static float quantize_scales(const float *v, int n, int qmax, int *out)
{
    float max_v = 0;
    for (int j = 0; j < n; j++)
        if (v[j] > max_v)
            max_v = v[j];
    float inv = max_v > 0 ? (float)qmax / max_v : 0;
    for (int j = 0; j < n; j++)
        out[j] = clampi(nearest_int(inv * v[j]), 0, qmax);
    return max_v / (float)qmax;
}

static void q2_k_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q2_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        uint8_t L[256];
        float scales[16], mins[16], w[16];
        int ls[16], lm[16];
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++)
                w[l] = fabsf(src[16 * j + l]);
            scales[j] = fit_asymmetric(16, 3, src + 16 * j, w, L + 16 * j, &mins[j],
                                       -0.5f, 0.1f, 15, true);
        }
        b[i].d = porta_f32_to_f16(quantize_scales(scales, 16, 15, ls));
        b[i].dmin = porta_f32_to_f16(quantize_scales(mins, 16, 15, lm));
        for (int j = 0; j < 16; j++) {
            b[i].scales[j] = (uint8_t)(ls[j] | lm[j] << 4);
            /* requantize against the scale actually stored */
            float d = F16(b[i].d) * (float)ls[j], dm = F16(b[i].dmin) * (float)lm[j];
            if (!d)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)clampi(nearest_int((src[16 * j + l] + dm) / d), 0, 3);
        }
        set_crumbs(b[i].qs, L);
    }
}

static void q3_k_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q3_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        uint8_t L[256];
        float scales[16], amax;
        for (int j = 0; j < 16; j++)
            scales[j] = fit_symmetric_refine(16, 4, src + 16 * j, L + 16 * j);
        float max_scale = absmax_signed(scales, 16, &amax);
        memset(b[i].scales, 0, sizeof b[i].scales);
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        if (max_scale) {
            float iscale = -32.0f / max_scale;
            for (int j = 0; j < 16; j++)
                q3_k_set_scale(b[i].scales, j, clampi(nearest_int(iscale * scales[j]), -32, 31));
            b[i].d = porta_f32_to_f16(1 / iscale);
        } else {
            b[i].d = 0;
        }
        for (int j = 0; j < 16; j++) {
            float d = F16(b[i].d) * (float)q3_k_scale(b[i].scales, j);
            if (!d)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)(clampi(nearest_int(src[16 * j + l] / d), -4, 3) + 4);
        }
        /* bit 2 of each value goes to the hmask, the low 2 bits to the crumb planes */
        for (int e = 0; e < 256; e++) {
            if (L[e] > 3) {
                b[i].hmask[e % 32] |= (uint8_t)(1u << (e / 32));
                L[e] -= 4;
            }
        }
        set_crumbs(b[i].qs, L);
    }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per 32-element sub-block an asymmetric fit
 * weighted by rms + |x|, then scales and mins to 6 bits against the super-block's d / dmin,
 * then every value requantized against the stored scales. Writes L[256] in [0, nmax]. */
static void qk_fit_6bit(const float *x, int nmax, float rmin, int nstep, uint8_t *scales12,
                        porta_f16 *d_out, porta_f16 *dmin_out, uint8_t L[256])
{
    float scales[8], mins[8], w[32];
    int ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(xs[l]);
        scales[j] = fit_asymmetric(32, nmax, xs, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep,
                                   false);
    }
    *d_out = porta_f32_to_f16(quantize_scales(scales, 8, 63, ls));
    *dmin_out = porta_f32_to_f16(quantize_scales(mins, 8, 63, lm));
    memset(scales12, 0, PORTA_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++)
        set_scale_min_k4(j, scales12, ls[j], lm[j]);
    for (int j = 0; j < 8; j++) {
        float d = F16(*d_out) * (float)ls[j], dm = F16(*dmin_out) * (float)lm[j];
        if (!d)
            continue;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clampi(nearest_int((x[32 * j + l] + dm) / d), 0, nmax);
    }
}

static void q4_k_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q4_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        uint8_t L[256];
        qk_fit_6bit(src, 15, -1.0f, 20, b[i].scales, &b[i].d, &b[i].dmin, L);
        set_k_nibbles(b[i].qs, L);
    }
}

static void q5_k_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q5_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        uint8_t L[256];
        qk_fit_6bit(src, 31, -0.5f, 15, b[i].scales, &b[i].d, &b[i].dmin, L);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int e = 0; e < 256; e++)
            if (L[e] > 15)
                b[i].qh[e % 32] |= (uint8_t)(1u << (e / 32));
        set_k_nibbles(b[i].qs, L);   /* keeps the low 4 bits */
    }
}

static void q6_k_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q6_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        uint8_t L[256];
        float scales[16], amax;
        for (int j = 0; j < 16; j++)
            scales[j] = fit_symmetric(16, 32, src + 16 * j, L + 16 * j);
        float max_scale = absmax_signed(scales, 16, &amax);
        memset(&b[i], 0, sizeof b[i]);
        if (amax < GROUP_MAX_EPS)
            continue;
        float iscale = -128.0f / max_scale;
        b[i].d = porta_f32_to_f16(1 / iscale);
        for (int j = 0; j < 16; j++)
            b[i].scales[j] = (int8_t)clampi(nearest_int(iscale * scales[j]), -128, 127);
        for (int j = 0; j < 16; j++) {
            float d = F16(b[i].d) * (float)b[i].scales[j];
            if (!d)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)(clampi(nearest_int(src[16 * j + l] / d), -32, 31) + 32);
        }
        /* inverse of q6_k_unpack */
        for (int e = 0; e < 256; e++) {
            int h = e / 128, c = (e % 128) / 32, l = e % 32;
            uint8_t *lb = &b[i].ql[64 * h + l + 32 * (c & 1)];
            *lb |= (uint8_t)(c < 2 ? (L[e] & 0x0f) : (L[e] & 0x0f) << 4);
            b[i].qh[32 * h + l] |= (uint8_t)((L[e] >> 4) << (2 * c));
        }
    }
}

/* ggml's quantize_row_q8_K_ref: the largest-magnitude value maps to -127 (sign kept), d is the
 * float 1/iscale, bsums the sums of each 16 quants. */
static void q8_k_from_float(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        float amax, max = absmax_signed(src, 256, &amax);
        memset(&b[i], 0, sizeof b[i]);
        if (!amax)
            continue;
        float iscale = -127.0f / max;
        for (int e = 0; e < 256; e++)
            b[i].qs[e] = (int8_t)clampi(nearest_int(iscale * src[e]), -128, 127);
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += b[i].qs[16 * g + l];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1 / iscale;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the table                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define BLOCK(T, qk, blk, vdt, pfx) \
    { #T, qk, sizeof(struct porta_block_##blk), true, PORTA_##vdt, \
      pfx##_to_float, pfx##_from_float, pfx##_vec_dot }

static const struct porta_type_traits traits[PORTA_DTYPE_COUNT] = {
    [PORTA_F32]  = { "F32", 1, sizeof(float), false, PORTA_F32,
                     f32_to_float, f32_from_float, f32_vec_dot },
    [PORTA_F16]  = { "F16", 1, sizeof(porta_f16), false, PORTA_F32,
                     f16_to_float, f16_from_float, f16_vec_dot },
    [PORTA_BF16] = { "BF16", 1, sizeof(porta_bf16), false, PORTA_F32,
                     bf16_to_float, bf16_from_float, bf16_vec_dot },
    [PORTA_Q4_0] = BLOCK(Q4_0, PORTA_QK4_0, q4_0, Q8_0, q4_0),
    [PORTA_Q4_1] = BLOCK(Q4_1, PORTA_QK4_1, q4_1, Q8_1, q4_1),
    [PORTA_Q5_0] = BLOCK(Q5_0, PORTA_QK5_0, q5_0, Q8_0, q5_0),
    [PORTA_Q5_1] = BLOCK(Q5_1, PORTA_QK5_1, q5_1, Q8_1, q5_1),
    [PORTA_Q8_0] = BLOCK(Q8_0, PORTA_QK8_0, q8_0, Q8_0, q8_0),
    [PORTA_Q8_1] = { "Q8_1", PORTA_QK8_1, sizeof(struct porta_block_q8_1), true, PORTA_Q8_1,
                     q8_1_to_float, q8_1_from_float, NULL },
    [PORTA_Q2_K] = BLOCK(Q2_K, PORTA_QK_K, q2_K, Q8_K, q2_k),
    [PORTA_Q3_K] = BLOCK(Q3_K, PORTA_QK_K, q3_K, Q8_K, q3_k),
    [PORTA_Q4_K] = BLOCK(Q4_K, PORTA_QK_K, q4_K, Q8_K, q4_k),
    [PORTA_Q5_K] = BLOCK(Q5_K, PORTA_QK_K, q5_K, Q8_K, q5_k),
    [PORTA_Q6_K] = BLOCK(Q6_K, PORTA_QK_K, q6_K, Q8_K, q6_k),
    [PORTA_Q8_K] = { "Q8_K", PORTA_QK_K, sizeof(struct porta_block_q8_K), true, PORTA_Q8_K,
                     q8_k_to_float, q8_k_from_float, NULL },
    /* integer tensors (rare in model files): readable as floats, nothing more */
    [PORTA_I8]   = { "I8", 1, 1, false, PORTA_F32, i8_to_float, NULL, NULL },
    [PORTA_I16]  = { "I16", 1, 2, false, PORTA_F32, i16_to_float, NULL, NULL },
    [PORTA_I32]  = { "I32", 1, 4, false, PORTA_F32, i32_to_float, NULL, NULL },
};

/* The structs must match ggml's byte for byte. */
_Static_assert(sizeof(struct porta_block_q4_0) == 18, "block_q4_0 layout");
_Static_assert(sizeof(struct porta_block_q4_1) == 20, "block_q4_1 layout");
_Static_assert(sizeof(struct porta_block_q5_0) == 22, "block_q5_0 layout");
_Static_assert(sizeof(struct porta_block_q5_1) == 24, "block_q5_1 layout");
_Static_assert(sizeof(struct porta_block_q8_0) == 34, "block_q8_0 layout");
_Static_assert(sizeof(struct porta_block_q8_1) == 36, "block_q8_1 layout");
_Static_assert(sizeof(struct porta_block_q2_K) == 84, "block_q2_K layout");
_Static_assert(sizeof(struct porta_block_q3_K) == 110, "block_q3_K layout");
_Static_assert(sizeof(struct porta_block_q4_K) == 144, "block_q4_K layout");
_Static_assert(sizeof(struct porta_block_q5_K) == 176, "block_q5_K layout");
_Static_assert(sizeof(struct porta_block_q6_K) == 210, "block_q6_K layout");
_Static_assert(sizeof(struct porta_block_q8_K) == 292, "block_q8_K layout");

const struct porta_type_traits *porta_type_traits(int type)
{
    if (type < 0 || type >= PORTA_DTYPE_COUNT || !traits[type].name)
        return NULL;
    return &traits[type];
}

const char *porta_dtype_name(int type)
{
    const struct porta_type_traits *t = porta_type_traits(type);
    return t ? t->name : "?";
}

size_t porta_row_size(enum porta_dtype type, int64_t n)
{
    const struct porta_type_traits *t = porta_type_traits((int)type);
    size_t bytes;
    if (!t || n < 0 || n % t->blck)
        return 0;
    if (!porta_mul_ok((size_t)(n / t->blck), t->type_size, &bytes))
        return 0;
    return bytes;
}

/* Common argument checks of the row functions: the traits, or NULL with *status set. */
static const struct porta_type_traits *row_traits(enum porta_dtype type, const void *src,
                                                  const void *dst, int64_t n, bool quantize,
                                                  int *status)
{
    const struct porta_type_traits *t = porta_type_traits((int)type);
    if (!t || !(quantize ? t->from_float != NULL : t->to_float != NULL)) {
        porta_err("quant: no %s for type %s (%d)", quantize ? "quantizer" : "dequantizer",
                  porta_dtype_name((int)type), (int)type);
        *status = PORTA_E_UNSUPPORTED;
        return NULL;
    }
    if (n < 0 || n % t->blck || (n > 0 && (!src || !dst || !porta_row_size(type, n)))) {
        porta_err("quant: bad row of %lld elements for type %s (block %lld)", (long long)n,
                  t->name, (long long)t->blck);
        *status = PORTA_E_INVAL;
        return NULL;
    }
    *status = 0;
    return t;
}

int porta_quantize_row(enum porta_dtype type, const float *src, void *dst, int64_t n)
{
    int status;
    const struct porta_type_traits *t = row_traits(type, src, dst, n, true, &status);
    if (t && n > 0)
        t->from_float(src, dst, n);
    return status;
}

int porta_dequantize_row(enum porta_dtype type, const void *src, float *dst, int64_t n)
{
    int status;
    const struct porta_type_traits *t = row_traits(type, src, dst, n, false, &status);
    if (t && n > 0)
        t->to_float(src, dst, n);
    return status;
}
