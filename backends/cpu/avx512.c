/* avx512.c - the CPU kernel table for AVX-512 (F, BW, VL, DQ, VNNI, BF16): 512-bit K-quant and
 * float kernels, VNNI integer dot products, masked tails. Same results as core/quant.c (dot
 * products up to float rounding, quantizers bit for bit). Built with the AVX-512 flags; the
 * rest of porta reaches it only through the table. */
#include "kernels.h"
#include "amx.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__AVX512VNNI__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static inline float f16(porta_f16 h)
{
    return _cvtsh_ss(h);
}

/* Keeps gcc from fusing a multiply into a following add: the quantizers round the product
 * exactly as the scalar code does. */
static inline __m512 opaque(__m512 v)
{
    __asm__("" : "+v"(v));
    return v;
}

/* The same fence for a loaded weight vector: v = wload(p) is read once. Left free, gcc folds
 * the load into both nibble instructions (the and and the shift) and reads every line of the
 * weight stream twice, which costs decode its share of the memory bandwidth when both cores
 * stream (avx2.c's chain(), measured there: Q4_K gate/up 27.5 -> 31 GB/s). */
static inline __m512i wload(const void *p)
{
    __m512i v = _mm512_loadu_si512(p);
    __asm__("" : "+v"(v));
    return v;
}

/* Software prefetch of the weight stream (see avx2.c: the matvec reads weights once,
 * sequentially; this VM's hardware prefetcher alone left the kernels latency-bound). */
#define PREFETCH_DIST 2048
static inline void prefetch_ahead(const void *p, size_t n)
{
    const char *c = (const char *)p + PREFETCH_DIST;
    for (size_t off = 0; off < n; off += 64)
        _mm_prefetch(c + off, _MM_HINT_T0);
    _mm_prefetch(c + n - 1, _MM_HINT_T0);
}

static inline __m512i loadu(const void *p)
{
    return _mm512_loadu_si512(p);
}

static inline __m256i loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* the same 32 bytes in both 256-bit halves */
static inline __m512i load_twice(const void *p)
{
    return _mm512_broadcast_i64x4(loadu256(p));
}

/* 16-bit lane constants: lo in the low 256 bits, hi in the high 256 */
static inline __m512i halves_epi16(short lo, short hi)
{
    return _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi), 1);
}
static inline __m512i halves_epi8(char lo, char hi)
{
    return _mm512_inserti64x4(_mm512_set1_epi8(lo), _mm256_set1_epi8(hi), 1);
}

static inline float hsum128_ps(__m128 v)
{
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

/* vpermw indices that spread 16-bit scales over groups of elements after maddubs:
 * pair32[j]: scale 2j over the low 16 lanes (32 elements), 2j+1 over the high 16;
 * quad16[k]: scales 4k..4k+3 over 8 lanes (16 elements) each. */
#define R8(v) v, v, v, v, v, v, v, v
#define R16(v) R8(v), R8(v)
static const uint16_t pair32_idx[4][32] = {
    {R16(0), R16(1)}, {R16(2), R16(3)}, {R16(4), R16(5)}, {R16(6), R16(7)},
};
static const uint16_t quad16_idx[4][32] = {
    {R8(0), R8(1), R8(2), R8(3)}, {R8(4), R8(5), R8(6), R8(7)},
    {R8(8), R8(9), R8(10), R8(11)}, {R8(12), R8(13), R8(14), R8(15)},
};
#undef R8
#undef R16

/* ---- float weights against float activations: masked tail, no scalar loop ----------------- */

static inline __mmask16 tail_mask(int64_t left)
{
    return (__mmask16)((1u << left) - 1);
}

static void dot_f32(int64_t n, float *s, const void *w, const void *a)
{
    const float *x = w, *y = a;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(x + i, 64 * sizeof x[0]);
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), acc3);
    }
    for (; i + 16 <= n; i += 16)
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), acc0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 wx = _mm512_maskz_loadu_ps(m, x + i);
        acc1 = _mm512_fmadd_ps(wx, _mm512_maskz_loadu_ps(m, y + i), acc1);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

static inline __m512 load_f16(const porta_f16 *p)
{
    return _mm512_cvtph_ps(loadu256(p));
}

static void dot_f16(int64_t n, float *s, const void *w, const void *a)
{
    const porta_f16 *x = w;
    const float *y = a;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(x + i, 64 * sizeof x[0]);
        acc0 = _mm512_fmadd_ps(load_f16(x + i), _mm512_loadu_ps(y + i), acc0);
        acc1 = _mm512_fmadd_ps(load_f16(x + i + 16), _mm512_loadu_ps(y + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(load_f16(x + i + 32), _mm512_loadu_ps(y + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(load_f16(x + i + 48), _mm512_loadu_ps(y + i + 48), acc3);
    }
    for (; i + 16 <= n; i += 16)
        acc0 = _mm512_fmadd_ps(load_f16(x + i), _mm512_loadu_ps(y + i), acc0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 wx = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i));
        acc1 = _mm512_fmadd_ps(wx, _mm512_maskz_loadu_ps(m, y + i), acc1);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

/* bf16 -> f32 is exact: the bits shifted up by 16 (no dpbf16ps: that would round the
 * activations to bf16) */
static inline __m512 bf16_bits(__m256i v)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

static void dot_bf16(int64_t n, float *s, const void *w, const void *a)
{
    const porta_bf16 *x = w;
    const float *y = a;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(x + i, 64 * sizeof x[0]);
        acc0 = _mm512_fmadd_ps(bf16_bits(loadu256(x + i)), _mm512_loadu_ps(y + i), acc0);
        acc1 = _mm512_fmadd_ps(bf16_bits(loadu256(x + i + 16)), _mm512_loadu_ps(y + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(bf16_bits(loadu256(x + i + 32)), _mm512_loadu_ps(y + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(bf16_bits(loadu256(x + i + 48)), _mm512_loadu_ps(y + i + 48), acc3);
    }
    for (; i + 16 <= n; i += 16)
        acc0 = _mm512_fmadd_ps(bf16_bits(loadu256(x + i)), _mm512_loadu_ps(y + i), acc0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 wx = bf16_bits(_mm256_maskz_loadu_epi16(m, x + i));
        acc1 = _mm512_fmadd_ps(wx, _mm512_maskz_loadu_ps(m, y + i), acc1);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

/* ---- 32-blocks against Q8_0 / Q8_1: one block per 256-bit register -------------------------
 * (Two blocks per 512-bit register measured slower: the per-block float scale dominates these
 * formats, and 512-bit operations have fewer ports.) VNNI multiplies unsigned by signed bytes:
 * a Q4_0/Q5_0 weight u - c with unsigned u is dot(u, y) - dot(c, y); Q8_0 moves the weight's
 * sign onto the activation. */

static inline __m256i loadu_y(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* the 32 4-bit values: low nibbles (elements 0-15) in the low lane, high nibbles in the high */
static inline __m256i nibbles32(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

/* adds 16 to element j where bit j of the 32-bit little-endian qh is set */
static inline __m256i add_fifth_bit(__m256i q, const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    return _mm256_mask_add_epi8(q, _cvtu32_mask32(h), q, _mm256_set1_epi8(0x10));
}

static inline __m256i dot_u8(__m256i u, __m256i y)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y);
}

static inline __m256i dot_offset(__m256i u, __m256i y, char c)
{
    return _mm256_sub_epi32(dot_u8(u, y), dot_u8(_mm256_set1_epi8(c), y));
}

/* signed x signed: w's sign moved onto y. y is an activation, never -128 (the quantizers give
 * -127..127), so negating it cannot wrap. */
static inline __m256i dot_i8(__m256i w, __m256i y)
{
    return dot_u8(_mm256_abs_epi8(w), _mm256_sign_epi8(y, w));
}

/* The first 4 halves of a block as floats, in one vcvtph2ps from memory: lanes 0 and 1 are
 * (d, m) of a Q4_1/Q5_1 block or (d, s) of Q8_1. Reads 8 bytes: every block here starts with
 * its d and is longer than that. */
static inline __m128 head_f16(const void *blk)
{
    return _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk));
}

/* x.d * y.d in lane 0 (and x.m * y.s in lane 1), computed once per block */
static inline __m128 head_product(const void *xb, const void *yb)
{
    return _mm_mul_ps(head_f16(xb), head_f16(yb));
}

static inline __m256 fma_head(__m128 dd, __m256i p, __m256 acc)
{
    return _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(p), acc);
}

static inline float hsum256_ps(__m256 v)
{
    return hsum128_ps(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

static void dot_q4_0(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_0 *x = w;
    const struct porta_block_q8_0 *y = a;
    const int64_t nb = n / PORTA_QK4_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i p0 = dot_offset(nibbles32(x[i].qs), loadu_y(y[i].qs), 8);
        __m256i p1 = dot_offset(nibbles32(x[i + 1].qs), loadu_y(y[i + 1].qs), 8);
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
        acc1 = fma_head(head_product(&x[i + 1], &y[i + 1]), p1, acc1);
    }
    if (i < nb) {
        __m256i p0 = dot_offset(nibbles32(x[i].qs), loadu_y(y[i].qs), 8);
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
    }
    *s = hsum256_ps(_mm256_add_ps(acc0, acc1));
}

static void dot_q4_1(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_1 *x = w;
    const struct porta_block_q8_1 *y = a;
    const int64_t nb = n / PORTA_QK4_1;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    __m128 summ = _mm_setzero_ps();   /* lane 1: sum of m * s, the min times the activation sum */
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i p0 = dot_u8(nibbles32(x[i].qs), loadu_y(y[i].qs));
        __m256i p1 = dot_u8(nibbles32(x[i + 1].qs), loadu_y(y[i + 1].qs));
        __m128 h0 = head_product(&x[i], &y[i]), h1 = head_product(&x[i + 1], &y[i + 1]);
        acc0 = fma_head(h0, p0, acc0);
        acc1 = fma_head(h1, p1, acc1);
        summ = _mm_add_ps(summ, _mm_add_ps(h0, h1));
    }
    if (i < nb) {
        __m128 h0 = head_product(&x[i], &y[i]);
        acc0 = fma_head(h0, dot_u8(nibbles32(x[i].qs), loadu_y(y[i].qs)), acc0);
        summ = _mm_add_ps(summ, h0);
    }
    *s = hsum256_ps(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(summ));
}

static void dot_q5_0(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_0 *x = w;
    const struct porta_block_q8_0 *y = a;
    const int64_t nb = n / PORTA_QK5_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i q0 = add_fifth_bit(nibbles32(x[i].qs), x[i].qh);
        __m256i q1 = add_fifth_bit(nibbles32(x[i + 1].qs), x[i + 1].qh);
        __m256i p0 = dot_offset(q0, loadu_y(y[i].qs), 16);
        __m256i p1 = dot_offset(q1, loadu_y(y[i + 1].qs), 16);
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
        acc1 = fma_head(head_product(&x[i + 1], &y[i + 1]), p1, acc1);
    }
    if (i < nb) {
        __m256i q0 = add_fifth_bit(nibbles32(x[i].qs), x[i].qh);
        acc0 = fma_head(head_product(&x[i], &y[i]), dot_offset(q0, loadu_y(y[i].qs), 16), acc0);
    }
    *s = hsum256_ps(_mm256_add_ps(acc0, acc1));
}

static void dot_q5_1(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_1 *x = w;
    const struct porta_block_q8_1 *y = a;
    const int64_t nb = n / PORTA_QK5_1;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    __m128 summ = _mm_setzero_ps();   /* lane 1: sum of m * s */
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i q0 = add_fifth_bit(nibbles32(x[i].qs), x[i].qh);
        __m256i q1 = add_fifth_bit(nibbles32(x[i + 1].qs), x[i + 1].qh);
        __m128 h0 = head_product(&x[i], &y[i]), h1 = head_product(&x[i + 1], &y[i + 1]);
        acc0 = fma_head(h0, dot_u8(q0, loadu_y(y[i].qs)), acc0);
        acc1 = fma_head(h1, dot_u8(q1, loadu_y(y[i + 1].qs)), acc1);
        summ = _mm_add_ps(summ, _mm_add_ps(h0, h1));
    }
    if (i < nb) {
        __m256i q0 = add_fifth_bit(nibbles32(x[i].qs), x[i].qh);
        __m128 h0 = head_product(&x[i], &y[i]);
        acc0 = fma_head(h0, dot_u8(q0, loadu_y(y[i].qs)), acc0);
        summ = _mm_add_ps(summ, h0);
    }
    *s = hsum256_ps(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(summ));
}

static void dot_q8_0(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q8_0 *x = w;
    const struct porta_block_q8_0 *y = a;
    const int64_t nb = n / PORTA_QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i p0 = dot_i8(loadu_y(x[i].qs), loadu_y(y[i].qs));
        __m256i p1 = dot_i8(loadu_y(x[i + 1].qs), loadu_y(y[i + 1].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
        acc1 = fma_head(head_product(&x[i + 1], &y[i + 1]), p1, acc1);
    }
    if (i < nb) {
        __m256i p0 = dot_i8(loadu_y(x[i].qs), loadu_y(y[i].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
    }
    *s = hsum256_ps(_mm256_add_ps(acc0, acc1));
}

/* ---- K-quants against Q8_K ------------------------------------------------------------------
 * 64 weights per step as unsigned bytes; maddubs gives 16-bit pair sums, dpwssd multiplies them
 * by the group's 16-bit scale into int32 lanes. The block's integer sum meets the float scales
 * once; offsets and mins come from Q8_K's per-16 sums (bsums), which must be the sums of its
 * qs, as every porta quantizer writes them. */

/* Q4_K/Q5_K scales: bytes 0-7 the 8 scales, bytes 8-15 the 8 mins (see avx2.c) */
static inline __m128i k4_scales(const uint8_t *q)
{
    uint32_t u0, u1, u2;
    memcpy(&u0, q, 4);
    memcpy(&u1, q + 4, 4);
    memcpy(&u2, q + 8, 4);
    uint32_t sc_lo = u0 & 0x3f3f3f3f, mn_lo = u1 & 0x3f3f3f3f;
    uint32_t sc_hi = (u2 & 0x0f0f0f0f) | ((u0 >> 6) & 0x03030303) << 4;
    uint32_t mn_hi = ((u2 >> 4) & 0x0f0f0f0f) | ((u1 >> 6) & 0x03030303) << 4;
    return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi);
}

static inline __m128i k4_minsums(const int16_t *bsums, __m128i scmn)
{
    __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)bsums),
                                _mm_loadu_si128((const __m128i *)(bsums + 8)));
    return _mm_madd_epi16(bs, _mm_cvtepu8_epi16(_mm_srli_si128(scmn, 8)));
}

static void dot_q4_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const __m128i scmn = k4_scales(x[i].scales);
        const float d = f16(x[i].d) * y[i].d, dmin = f16(x[i].dmin) * y[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_minsums(y[i].bsums, scmn)), accm);
        const __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(scmn));
        __m512i sumi = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {      /* 64 elements: low nibbles, then high nibbles */
            __m512i v = load_twice(x[i].qs + 32 * j);
            v = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFFFF0000u, v, 4), m4);
            __m512i p = _mm512_maddubs_epi16(v, loadu(y[i].qs + 64 * j));
            __m512i sc = _mm512_permutexvar_epi16(loadu(pair32_idx[j]), sc16);
            sumi = _mm512_dpwssd_epi32(sumi, p, sc);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    *s = _mm512_reduce_add_ps(acc) - hsum128_ps(accm);
}

static void dot_q5_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m512i m4 = _mm512_set1_epi8(0x0F), b4 = _mm512_set1_epi8(0x10);
    const __m512i bit01 = halves_epi8(1, 2);
    __m512 acc = _mm512_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const __m128i scmn = k4_scales(x[i].scales);
        const float d = f16(x[i].d) * y[i].d, dmin = f16(x[i].dmin) * y[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_minsums(y[i].bsums, scmn)), accm);
        const __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(scmn));
        __m512i hb = load_twice(x[i].qh);   /* chunk j: bit 2j (low nibbles), 2j+1 (high) */
        __m512i sumi = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            __m512i v = load_twice(x[i].qs + 32 * j);
            v = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFFFF0000u, v, 4), m4);
            v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(hb, bit01), v, b4);
            hb = _mm512_srli_epi16(hb, 2);
            __m512i p = _mm512_maddubs_epi16(v, loadu(y[i].qs + 64 * j));
            __m512i sc = _mm512_permutexvar_epi16(loadu(pair32_idx[j]), sc16);
            sumi = _mm512_dpwssd_epi32(sumi, p, sc);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    *s = _mm512_reduce_add_ps(acc) - hsum128_ps(accm);
}

/* acc + the 64 unsigned weights u times the activations q8, each 16-group times its scale
 * (groups 4k..4k+3 of the block's 16 int16 scales in sc16) */
static inline __m512i dot_quad16(__m512i acc, __m512i u, const int8_t *q8, __m512i sc16, int k)
{
    __m512i p = _mm512_maddubs_epi16(u, loadu(q8));
    return _mm512_dpwssd_epi32(acc, p, _mm512_permutexvar_epi16(loadu(quad16_idx[k]), sc16));
}

/* Q6_K as u = q + 32 in [0, 63]; per half, ql's 64 bytes are elements 0-63 (low nibbles) and
 * 64-127 (high nibbles); qh's 32 bytes carry bits 0-1, 2-3, 4-5, 6-7 for the four 32-runs. */
static void dot_q6_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q6_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x30);
    const __m512i shl = halves_epi16(4, 2), shr = halves_epi16(0, 2);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const float d = f16(x[i].d) * y[i].d;
        const __m256i sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
        const __m512i sc16 = _mm512_castsi256_si512(sc_all);
        __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(loadu256(y[i].bsums), sc_all), 5);
        __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(off));
        for (int h = 0; h < 2; h++) {
            const __m512i l = loadu(x[i].ql + 64 * h), qh = load_twice(x[i].qh + 32 * h);
            const int8_t *q8 = y[i].qs + 128 * h;
            __m512i u0 = _mm512_or_si512(_mm512_and_si512(l, m4),
                                         _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m2));
            __m512i u1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                         _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m2));
            sumi = dot_quad16(sumi, u0, q8, sc16, 2 * h);
            sumi = dot_quad16(sumi, u1, q8 + 64, sc16, 2 * h + 1);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    *s = _mm512_reduce_add_ps(acc);
}

/* Q2_K: per half, byte l holds elements 128h + 32k + l at bits 2k; shifts (0|2) give elements
 * 0-63 of the half, (4|6) elements 64-127. */
static void dot_q2_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q2_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m512i m2 = _mm512_set1_epi8(3);
    const __m512i sh0 = halves_epi16(0, 2), sh1 = halves_epi16(4, 6);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const float d = y[i].d * f16(x[i].d), dmin = y[i].d * f16(x[i].dmin);
        const __m128i raw = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
        const __m256i msum = _mm256_madd_epi16(loadu256(y[i].bsums), mins);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(msum), accm);
        const __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
        __m512i sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            const __m512i q = load_twice(x[i].qs + 32 * h);
            const int8_t *q8 = y[i].qs + 128 * h;
            __m512i u0 = _mm512_and_si512(_mm512_srlv_epi16(q, sh0), m2);
            __m512i u1 = _mm512_and_si512(_mm512_srlv_epi16(q, sh1), m2);
            sumi = dot_quad16(sumi, u0, q8, sc16, 2 * h);
            sumi = dot_quad16(sumi, u1, q8 + 64, sc16, 2 * h + 1);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(accm), _mm256_extractf128_ps(accm, 1));
    *s = _mm512_reduce_add_ps(acc) - hsum128_ps(m);
}

/* Q3_K's 16 6-bit scales (stored + 32) -> 16 signed bytes (see avx2.c) */
static inline __m128i k3_scales(const uint8_t *s)
{
    uint32_t a0, a1, t;
    memcpy(&a0, s, 4);
    memcpy(&a1, s + 4, 4);
    memcpy(&t, s + 8, 4);
    const uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303;
    __m128i v = _mm_setr_epi32((int)((a0 & m4) | (t & m2) << 4),
                               (int)((a1 & m4) | ((t >> 2) & m2) << 4),
                               (int)(((a0 >> 4) & m4) | ((t >> 4) & m2) << 4),
                               (int)(((a1 >> 4) & m4) | ((t >> 6) & m2) << 4));
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}

/* Q3_K as u = q + 4 in [0, 7]: Q2_K's planes plus 4 where the hmask bit (bit e/32 of
 * hmask[e%32]) is set; the 4 comes back out through the bsums. */
static void dot_q3_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q3_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m512i m2 = _mm512_set1_epi8(3), b2 = _mm512_set1_epi8(4);
    const __m512i sh0 = halves_epi16(0, 2), sh1 = halves_epi16(4, 6);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const float d = f16(x[i].d) * y[i].d;
        const __m256i sc_all = _mm256_cvtepi8_epi16(k3_scales(x[i].scales));
        const __m512i sc16 = _mm512_castsi256_si512(sc_all);
        __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(loadu256(y[i].bsums), sc_all), 2);
        __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(off));
        const __m512i hm = load_twice(x[i].hmask);
        __m512i bit = halves_epi8(1, 2);       /* hmask bits of the next 64 elements */
        for (int h = 0; h < 2; h++) {
            const __m512i q = load_twice(x[i].qs + 32 * h);
            const int8_t *q8 = y[i].qs + 128 * h;
            __m512i u0 = _mm512_and_si512(_mm512_srlv_epi16(q, sh0), m2);
            u0 = _mm512_mask_add_epi8(u0, _mm512_test_epi8_mask(hm, bit), u0, b2);
            bit = _mm512_slli_epi16(bit, 2);
            __m512i u1 = _mm512_and_si512(_mm512_srlv_epi16(q, sh1), m2);
            u1 = _mm512_mask_add_epi8(u1, _mm512_test_epi8_mask(hm, bit), u1, b2);
            bit = _mm512_slli_epi16(bit, 2);
            sumi = dot_quad16(sumi, u0, q8, sc16, 2 * h);
            sumi = dot_quad16(sumi, u1, q8 + 64, sc16, 2 * h + 1);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    *s = _mm512_reduce_add_ps(acc);
}

/* ---- activation quantizers: bit-identical to core/quant.c ---------------------------------- */

/* max |x| of 16 floats folded into m, skipping NaN as the scalar code does (maxps returns its
 * second operand when either is NaN) */
static inline __m512 fold_amax(__m512 m, __m512 v)
{
    return _mm512_max_ps(_mm512_abs_ps(v), m);
}

/* roundf(): add the float just below 1/2 with x's sign, truncate (exact for every float) */
static inline __m512 round_away(__m512 x)
{
    __m512 h = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)),
        _mm512_castps_si512(_mm512_set1_ps(0.49999997f))));
    return _mm512_roundscale_ps(_mm512_add_ps(x, h), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
}

/* 16 products x * id as quant.c's round_i8: roundf, clamped to [-127, 127], NaN -> 0 */
static inline __m512i round_i8x16(const float *x, __m512 id)
{
    __m512 p = opaque(_mm512_mul_ps(_mm512_loadu_ps(x), id));
    p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, p, _CMP_ORD_Q), p);
    p = _mm512_min_ps(_mm512_max_ps(p, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_cvttps_epi32(round_away(p));
}

static void quantize_q8_0(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++, src += PORTA_QK8_0) {
        __m512 m = fold_amax(_mm512_setzero_ps(), _mm512_loadu_ps(src));
        m = fold_amax(m, _mm512_loadu_ps(src + 16));
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        b[i].d = porta_f32_to_f16(d);
        __m512i q0 = round_i8x16(src, vid), q1 = round_i8x16(src + 16, vid);
        _mm_storeu_si128((__m128i *)b[i].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(b[i].qs + 16), _mm512_cvtepi32_epi8(q1));
    }
}

static void quantize_q8_1(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK8_1; i++, src += PORTA_QK8_1) {
        __m512 m = fold_amax(_mm512_setzero_ps(), _mm512_loadu_ps(src));
        m = fold_amax(m, _mm512_loadu_ps(src + 16));
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = round_i8x16(src, vid), q1 = round_i8x16(src + 16, vid);
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        b[i].d = porta_f32_to_f16(d);
        _mm_storeu_si128((__m128i *)b[i].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(b[i].qs + 16), _mm512_cvtepi32_epi8(q1));
        b[i].s = porta_f32_to_f16((float)sum * d);
    }
}

/* Q8_K: the first element of largest magnitude maps to -127; q = nearest-even(iscale * x)
 * clamped to [-128, 127] (NaN -> 0); one register is one 16-group of the bsums. */
static void quantize_q8_K(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        __m512 m = _mm512_setzero_ps();
        for (int g = 0; g < 16; g++)
            m = fold_amax(m, _mm512_loadu_ps(src + 16 * g));
        const float amax = _mm512_reduce_max_ps(m);
        memset(&b[i], 0, sizeof b[i]);
        if (!amax)
            continue;
        float max = 0;
        const __m512 vmax = _mm512_set1_ps(amax);
        for (int g = 0; g < 16; g++) {
            __mmask16 hit = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(src + 16 * g)), vmax,
                                               _CMP_EQ_OQ);
            if (hit) {
                max = src[16 * g + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 vs = _mm512_set1_ps(iscale);
        for (int g = 0; g < 16; g++) {
            __m512 p = opaque(_mm512_mul_ps(_mm512_loadu_ps(src + 16 * g), vs));
            p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, p, _CMP_ORD_Q), p);
            p = _mm512_min_ps(_mm512_max_ps(p, _mm512_set1_ps(-128.0f)), _mm512_set1_ps(127.0f));
            __m512i q = _mm512_cvtps_epi32(p);   /* MXCSR's default: nearest, ties to even */
            b[i].bsums[g] = (int16_t)_mm512_reduce_add_epi32(q);
            _mm_storeu_si128((__m128i *)(b[i].qs + 16 * g), _mm512_cvtepi32_epi8(q));
        }
        b[i].d = 1 / iscale;
    }
}

/* ---- dequantizers (embedding rows); the rest come from the scalar table -------------------- */

static void f16_to_float(const void *src, float *dst, int64_t n)
{
    const porta_f16 *x = src;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, load_f16(x + i));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
    const porta_bf16 *x = src;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, bf16_bits(loadu256(x + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, bf16_bits(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}

/* 32 int8 -> 32 floats times d (one rounding, as the scalar code) */
static inline void store_scaled32(float *dst, __m256i q, float d)
{
    const __m512 vd = _mm512_set1_ps(d);
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
    __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
    _mm512_storeu_ps(dst, _mm512_mul_ps(lo, vd));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(hi, vd));
}

static void q4_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q4_0 *b = src;
    const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < n / PORTA_QK4_0; i++, dst += PORTA_QK4_0) {
        __m128i t = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i lo = _mm_sub_epi8(_mm_and_si128(t, m4), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(t, 4), m4), eight);
        store_scaled32(dst, _mm256_set_m128i(hi, lo), f16(b[i].d));
    }
}

static void q8_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++, dst += PORTA_QK8_0)
        store_scaled32(dst, loadu256(b[i].qs), f16(b[i].d));
}

/* ---- tile kernels over repacked weights (repack.h) --------------------------------------------
 * One call computes a 16-row group against n_tok tokens: each 64-byte chunk of the group holds
 * 4 bytes of every row, so one vpdpbusd with a broadcast 4-byte activation slice advances all
 * 16 rows; a block's unpacked weights stay in registers for NT tokens (prefill), and the 16
 * rows' scales meet the integer sums in one FMA per block and token. Weights are stored
 * unsigned (u = w + c); the activation row carries -c * sum(q) per block (porta_act32.corr).
 * Prefill on a CPU with AMX: porta_amx_gemm (amx.c) takes the whole 16-token tiles of Q4_0,
 * Q8_0, Q4_K and Q6_K first, from the same groups and activation rows, and these kernels the
 * tokens it leaves (all of them when AMX is off or absent). */

#define ALWAYS static inline __attribute__((always_inline))
#ifndef GEMM_PF
#define GEMM_PF 512                   /* weight-stream prefetch distance into L1, bytes */
#endif
#define NT_MAX 8                      /* tokens per pass over a group (32-blocks) */
#define NTK_MAX 6                     /* tokens per pass over a group (K types) */

ALWAYS __m512i bcast4(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

#ifndef GEMM_PF_FAR
#define GEMM_PF_FAR 3072              /* and into L2, further ahead */
#endif
/* one line of the weight stream, near (L1) and far (L2) ahead */
ALWAYS void prefetch_line(const uint8_t *p)
{
    _mm_prefetch((const char *)p + GEMM_PF, _MM_HINT_T0);
    if (GEMM_PF_FAR)
        _mm_prefetch((const char *)p + GEMM_PF_FAR, _MM_HINT_T1);
}

ALWAYS void prefetch_block(const uint8_t *p, size_t n)
{
    for (size_t off = 0; off < n; off += 64)
        _mm_prefetch((const char *)p + GEMM_PF + off, _MM_HINT_T0);
    if (GEMM_PF_FAR)
        for (size_t off = 0; off < n; off += 64)
            _mm_prefetch((const char *)p + GEMM_PF_FAR + off, _MM_HINT_T1);
}

ALWAYS size_t blk32_bytes(int type)
{
    return type == PORTA_Q4_0 ? 288 : type == PORTA_Q4_1 ? 320 : type == PORTA_Q5_0 ? 352 : 544;
}

/* the 8 steps (4 bytes of each row: elements 4s..4s+3) of one block, as unsigned bytes */
ALWAYS void unpack32(int type, const uint8_t *blk, __m512i u[8])
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    if (type == PORTA_Q8_0) {
#pragma GCC unroll 16
        for (int s = 0; s < 8; s++)
            u[s] = _mm512_xor_si512(loadu(blk + 32 + 64 * s), _mm512_set1_epi8((char)0x80));
        return;
    }
    const uint8_t *q = blk + (type == PORTA_Q4_0 ? 32 : type == PORTA_Q4_1 ? 64 : 96);
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) {
        __m512i v = wload(q + 64 * c);
        u[c] = _mm512_and_si512(v, m4);
        u[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
    if (type == PORTA_Q5_0) {
        const __m512i h = loadu(blk + 32), b4 = _mm512_set1_epi8(0x10);
#pragma GCC unroll 16
        for (int s = 0; s < 8; s++) {
            __m512i hs = s <= 4 ? _mm512_slli_epi16(h, 4 - s) : _mm512_srli_epi16(h, s - 4);
            u[s] = _mm512_ternarylogic_epi32(u[s], hs, b4, 0xF8);    /* u | (hs & 0x10) */
        }
    }
}

ALWAYS void tile32(int type, int NT, int nb, const uint8_t *w, const uint8_t *act, size_t as,
                   int64_t n_cols, float *y, size_t ys, __mmask16 mask)
{
    const size_t bb = blk32_bytes(type);
    __m512 acc[NT_MAX];
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++)
        acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * bb;
        prefetch_block(blk, bb);
        const __m512 dw = _mm512_cvtph_ps(loadu256(blk));
        __m512i u[8];
        unpack32(type, blk, u);
        /* the tokens' sums advance step by step together: NT independent chains of vpdpbusd
         * side by side in the instruction stream, not one chain of 8 after another */
        __m512i s[NT_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) {
            const struct porta_act32 *m = (const struct porta_act32 *)(act + (size_t)t * as +
                                                                       n_cols) + b;
            s[t] = type == PORTA_Q4_1 ? _mm512_setzero_si512() : _mm512_set1_epi32(m->corr);
        }
#pragma GCC unroll 16
        for (int st = 0; st < 8; st++)
#pragma GCC unroll 16
            for (int t = 0; t < NT; t++)
                s[t] = _mm512_dpbusd_epi32(s[t], u[st], bcast4(act + (size_t)t * as + 32 * b + 4 * st));
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) {
            const struct porta_act32 *m = (const struct porta_act32 *)(act + (size_t)t * as +
                                                                       n_cols) + b;
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(m->d)), acc[t]);
            if (type == PORTA_Q4_1)
                acc[t] = _mm512_fmadd_ps(_mm512_cvtph_ps(loadu256(blk + 32)),
                                         _mm512_set1_ps(m->s), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, mask, acc[t]);
}

#define GEMM32(fn, type)                                                                         \
    static void fn(int64_t n_cols, const void *w, const void *act, size_t as, int n_tok,          \
                   float *y, size_t ys, int n_rows)                                              \
    {                                                                                            \
        const __mmask16 mask = n_rows >= 16 ? 0xFFFF : (__mmask16)((1u << n_rows) - 1);          \
        const int nb = (int)(n_cols / 32);                                                       \
        const uint8_t *a = act;                                                                  \
        int t = porta_amx_gemm(type, n_cols, w, act, as, n_tok, y, ys, n_rows);                  \
        for (; t + NT_MAX <= n_tok; t += NT_MAX)                                                 \
            tile32(type, NT_MAX, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask);          \
        switch (n_tok - t) {                                                                     \
        case 1: tile32(type, 1, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        case 2: tile32(type, 2, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        case 3: tile32(type, 3, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        case 4: tile32(type, 4, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        case 5: tile32(type, 5, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        case 6: tile32(type, 6, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        case 7: tile32(type, 7, nb, w, a + t * as, as, n_cols, y + t * ys, ys, mask); break;    \
        default: break;                                                                          \
        }                                                                                        \
    }

GEMM32(gemm_q4_0, PORTA_Q4_0)
GEMM32(gemm_q4_1, PORTA_Q4_1)
GEMM32(gemm_q5_0, PORTA_Q5_0)
GEMM32(gemm_q8_0, PORTA_Q8_0)

/* vpshufb patterns over int32 lanes holding 4 bytes each: byte k of every lane, as an int32
 * (k_dword[k]) or as an int16 pair (k, k) (k_pair[k]) */
#define DW(b) b, 0x80, 0x80, 0x80, 4 + b, 0x80, 0x80, 0x80, 8 + b, 0x80, 0x80, 0x80, 12 + b, 0x80, 0x80, 0x80
#define PR(b) b, 0x80, b, 0x80, 4 + b, 0x80, 4 + b, 0x80, 8 + b, 0x80, 8 + b, 0x80, 12 + b, 0x80, 12 + b, 0x80
static const uint8_t k_dword[4][64] __attribute__((aligned(64))) = {
    { DW(0), DW(0), DW(0), DW(0) }, { DW(1), DW(1), DW(1), DW(1) },
    { DW(2), DW(2), DW(2), DW(2) }, { DW(3), DW(3), DW(3), DW(3) },
};
static const uint8_t k_pair[4][64] __attribute__((aligned(64))) = {
    { PR(0), PR(0), PR(0), PR(0) }, { PR(1), PR(1), PR(1), PR(1) },
    { PR(2), PR(2), PR(2), PR(2) }, { PR(3), PR(3), PR(3), PR(3) },
};
#undef DW
#undef PR

/* Q4_K: per super-block the 16 rows' 8 scales and mins, unpacked from their 12 bytes (3 chunks:
 * bytes 0-3, 4-7, 8-11 of every row) as k4_scales does for one row; the sub-block sums meet
 * their scales in int32 (vpmulld), the mins meet the activation's bsum pairs in vpdpwssd as
 * (m, m) int16 pairs, and the float scales come in once per super-block. */
ALWAYS void tile_q4_K(int NT, int nb, const uint8_t *w, const uint8_t *act, size_t as, float *y,
                      size_t ys, __mmask16 mask)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F);
    const __m512i lo4 = _mm512_set1_epi32(0x0f0f0f0f), lo2 = _mm512_set1_epi32(0x03030303);
    __m512 acc[NTK_MAX];
    __m512i sj[8], mm[8];
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++)
        acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 2304;      /* prefetched chunk by chunk below */
        prefetch_block(blk, 256);
        const __m512 dw = _mm512_cvtph_ps(loadu256(blk)), dmw = _mm512_cvtph_ps(loadu256(blk + 32));
        const __m512i u0 = loadu(blk + 64), u1 = loadu(blk + 128), u2 = loadu(blk + 192);
        const __m512i sc_lo = _mm512_and_si512(u0, m6), mn_lo = _mm512_and_si512(u1, m6);
        const __m512i sc_hi = _mm512_ternarylogic_epi32(u2, lo4,
            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), lo2), 4), 0xEA);
        const __m512i mn_hi = _mm512_ternarylogic_epi32(_mm512_srli_epi32(u2, 4), lo4,
            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), lo2), 4), 0xEA);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            sj[j] = _mm512_shuffle_epi8(j < 4 ? sc_lo : sc_hi, _mm512_load_si512(k_dword[j % 4]));
            mm[j] = _mm512_shuffle_epi8(j < 4 ? mn_lo : mn_hi, _mm512_load_si512(k_pair[j % 4]));
        }
        __m512i isum[NTK_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++)
            isum[t] = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) {
            __m512i d0[NTK_MAX], d1[NTK_MAX];
#pragma GCC unroll 16
            for (int t = 0; t < NT; t++)
                d0[t] = d1[t] = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int c = 0; c < 8; c++) {
                const uint8_t *ch = blk + 256 + 64 * (8 * p + c);
                prefetch_line(ch);
                __m512i v = wload(ch);
                __m512i l = _mm512_and_si512(v, m4), h = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
#pragma GCC unroll 16
                for (int t = 0; t < NT; t++) {
                    const int8_t *yq = ((const struct porta_block_q8_K *)(act + t * as) + b)->qs;
                    d0[t] = _mm512_dpbusd_epi32(d0[t], l, bcast4(yq + 64 * p + 4 * c));
                    d1[t] = _mm512_dpbusd_epi32(d1[t], h, bcast4(yq + 64 * p + 32 + 4 * c));
                }
            }
#pragma GCC unroll 16
            for (int t = 0; t < NT; t++)   /* |sum| <= 8 * 63 * 32 * 15 * 128: fits int32 */
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(
                    _mm512_mullo_epi32(d0[t], sj[2 * p]), _mm512_mullo_epi32(d1[t], sj[2 * p + 1])));
        }
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) {     /* d * d_y * isum - dmin * d_y * sum_j m_j * bsum_j */
            const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)(act + t * as) + b;
            __m512i mi = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int j = 0; j < 8; j++)
                mi = _mm512_dpwssd_epi32(mi, mm[j], bcast4(a->bsums + 2 * j));
            const __m512 dy = _mm512_set1_ps(a->d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, dy), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mi), _mm512_mul_ps(dmw, dy), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, mask, acc[t]);
}

/* Q6_K: 16 sub-blocks of 16 with int8 scales; u = q + 32 in [0, 63]. The sub-block sums meet
 * their scales in int32 (vpmulld; |sum| <= 16 * 127 * 16 * 63 * 128 < 2^31), the 32 comes back
 * out as -32 * sum_i sc_i * bsum_i through (sc_2k, sc_2k+1) int16 pairs, and d * d_y once. */
ALWAYS void tile_q6_K(int NT, int nb, const uint8_t *w, const uint8_t *act, size_t as, float *y,
                      size_t ys, __mmask16 mask)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    __m512 acc[NT_MAX];
    __m512i sc[16], sp[8];
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++)
        acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 3360;      /* prefetched unit by unit below */
        prefetch_block(blk, 288);
        const __m512 dw = _mm512_cvtph_ps(loadu256(blk));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m512i x = loadu(blk + 32 + 64 * k);    /* scales 4k..4k+3 of each row */
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                sc[4 * k + i] = _mm512_srai_epi32(_mm512_slli_epi32(x, 24 - 8 * i), 24);
            /* (sc_4k, sc_4k+1) and (sc_4k+2, sc_4k+3) as sign-extended int16 pairs: ev holds
             * the even bytes of x sign-extended to words, od the odd ones */
            const __m512i ev = _mm512_srai_epi16(_mm512_slli_epi16(x, 8), 8);
            const __m512i od = _mm512_srai_epi16(x, 8);
            sp[2 * k] = _mm512_mask_blend_epi16(0xAAAAAAAA, ev, _mm512_slli_epi32(od, 16));
            sp[2 * k + 1] = _mm512_mask_blend_epi16(0xAAAAAAAA, _mm512_srli_epi32(ev, 16), od);
        }
        __m512i isum[NT_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) {
            const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)(act + t * as) + b;
            __m512i ci = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int k = 0; k < 8; k++)
                ci = _mm512_dpwssd_epi32(ci, sp[k], bcast4(a->bsums + 2 * k));
            isum[t] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(ci, 5));
        }
        for (int un = 0; un < 8; un++) {
            const uint8_t *unit = blk + 288 + 384 * un;
            prefetch_block(unit, 384);
            const __m512i h0 = loadu(unit), h1 = loadu(unit + 64);
            __m512i u[8];
#pragma GCC unroll 16
            for (int c = 0; c < 4; c++) {
                __m512i v = wload(unit + 128 + 64 * c);
                u[c] = _mm512_and_si512(v, m4);
                u[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
#pragma GCC unroll 16
            for (int s = 0; s < 8; s++) {
                __m512i h = s < 4 ? h0 : h1;
                int k = s % 4;
                __m512i hs = k < 2 ? _mm512_slli_epi16(h, 4 - 2 * k) :
                             k == 2 ? h : _mm512_srli_epi16(h, 2);
                u[s] = _mm512_ternarylogic_epi32(u[s], hs, m30, 0xF8);  /* u | (hs & 0x30) */
            }
            __m512i s0[NT_MAX], s1[NT_MAX];
#pragma GCC unroll 16
            for (int t = 0; t < NT; t++)
                s0[t] = s1[t] = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int s = 0; s < 4; s++)
#pragma GCC unroll 16
                for (int t = 0; t < NT; t++) {     /* the tokens' chains side by side */
                    const int8_t *yq = ((const struct porta_block_q8_K *)(act + t * as) + b)->qs +
                                       32 * un;
                    s0[t] = _mm512_dpbusd_epi32(s0[t], u[s], bcast4(yq + 4 * s));
                    s1[t] = _mm512_dpbusd_epi32(s1[t], u[s + 4], bcast4(yq + 16 + 4 * s));
                }
#pragma GCC unroll 16
            for (int t = 0; t < NT; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(
                    _mm512_mullo_epi32(s0[t], sc[2 * un]), _mm512_mullo_epi32(s1[t], sc[2 * un + 1])));
        }
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) {
            const __m512 dy = _mm512_set1_ps(((const struct porta_block_q8_K *)(act + t * as) + b)->d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, dy), acc[t]);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, mask, acc[t]);
}

#define GEMMK(fn, tile, NTM, type)                                                               \
    static void fn(int64_t n_cols, const void *w, const void *act, size_t as, int n_tok,          \
                   float *y, size_t ys, int n_rows)                                              \
    {                                                                                            \
        const __mmask16 mask = n_rows >= 16 ? 0xFFFF : (__mmask16)((1u << n_rows) - 1);          \
        const int nb = (int)(n_cols / PORTA_QK_K);                                               \
        const uint8_t *a = act;                                                                  \
        int t = porta_amx_gemm(type, n_cols, w, act, as, n_tok, y, ys, n_rows);                  \
        for (; t + NTM <= n_tok; t += NTM)                                                       \
            tile(NTM, nb, w, a + t * as, as, y + t * ys, ys, mask);                              \
        switch (n_tok - t) {                                                                     \
        case 1: tile(1 < NTM ? 1 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        case 2: tile(2 < NTM ? 2 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        case 3: tile(3 < NTM ? 3 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        case 4: tile(4 < NTM ? 4 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        case 5: tile(5 < NTM ? 5 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        case 6: tile(6 < NTM ? 6 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        case 7: tile(7 < NTM ? 7 : 1, nb, w, a + t * as, as, y + t * ys, ys, mask); break;   \
        default: break;                                                                          \
        }                                                                                        \
    }

GEMMK(gemm_q4_K, tile_q4_K, NTK_MAX, PORTA_Q4_K)
GEMMK(gemm_q6_K, tile_q6_K, NT_MAX, PORTA_Q6_K)

/* Activation rows of the 32-block tile kernels: quantize_q8_0's values (Q8_1's for Q4_1) and
 * per block d, -c * sum(q), s. */
ALWAYS void act32_row(const float *x, void *act, int64_t n, int c, bool with_s)
{
    int8_t *qs = act;
    struct porta_act32 *m = (struct porta_act32 *)((uint8_t *)act + n);
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        __m512 mx = fold_amax(_mm512_setzero_ps(), _mm512_loadu_ps(x));
        mx = fold_amax(mx, _mm512_loadu_ps(x + 16));
        float amax = _mm512_reduce_max_ps(mx);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = round_i8x16(x, vid), q1 = round_i8x16(x + 16, vid);
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        _mm_storeu_si128((__m128i *)(qs + 32 * i), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qs + 32 * i + 16), _mm512_cvtepi32_epi8(q1));
        m[i].d = f16(porta_f32_to_f16(d));
        m[i].corr = -c * sum;
        m[i].s = with_s ? f16(porta_f32_to_f16((float)sum * d)) : 0.0f;
    }
}

static void act_q4_0(const float *x, void *a, int64_t n) { act32_row(x, a, n, 8, false); }
static void act_q4_1(const float *x, void *a, int64_t n) { act32_row(x, a, n, 0, true); }
static void act_q5_0(const float *x, void *a, int64_t n) { act32_row(x, a, n, 16, false); }
static void act_q8_0(const float *x, void *a, int64_t n) { act32_row(x, a, n, 128, false); }

/* ---- fused small ops and attention ------------------------------------------------------------ */

/* e^x on 16 lanes: Cephes' expf polynomial on x - n ln2, scaled by 2^n with vscalefps (which
 * gives 0 / inf past the float range); ~1 ulp */
static inline __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static void swiglu(float *y, const float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, g + i), b = _mm512_maskz_loadu_ps(m, u + i);
        __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), a)));
        /* a / d as a * (1 / d): a 14-bit reciprocal and one Newton step (~1 ulp), which is
         * several times cheaper than vdivps; d >= 1 so the step cannot blow up */
        __m512 r = _mm512_rcp14_ps(d);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(a, r), b));
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512 sc = _mm512_set1_ps((float)(1.0 / sqrt(ss / (double)n + eps)));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sc);
        if (w)
            v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* n floats of a cache row (F16 or F32) into dst, padded with zeros to a multiple of 16 */
static inline void row_to_f32(float *dst, const void *src, bool f16, int n)
{
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = f16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const porta_f16 *)src + i))
                       : _mm512_maskz_loadu_ps(m, (const float *)src + i);
        _mm512_store_ps(dst + i, v);
    }
}

/* lane i = the sum of the 16 lanes of v[i] (a transpose-and-add tree: 45 instructions for 16
 * sums instead of a full horizontal reduction each) */
static inline __m512 hsum16(const __m512 v[16])
{
    __m512 t[8], u[4];
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 16
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
    __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88),
                              _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
    __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88),
                              _mm512_shuffle_f32x4(u[2], u[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, 0x88), _mm512_shuffle_f32x4(w0, w1, 0xDD));
}

/* rows [j0, j0 + m) of a cache span as floats, PORTA_ATTN_ROWS x n16 (rows past m zero) */
static void rows_to_f32(float *dst, int n16, const uint8_t *base, size_t stride_bytes, bool f16,
                        int n, int j0, int m)
{
    for (int r = 0; r < PORTA_ATTN_ROWS; r++) {
        if (r < m)
            row_to_f32(dst + (size_t)r * n16, base + (size_t)(j0 + r) * stride_bytes, f16, n);
        else
            memset(dst + (size_t)r * n16, 0, sizeof(float) * (size_t)n16);
    }
}

static void attn_rows(const struct porta_attn_rows *a)
{
    const int G = a->n_q, dk = a->dk, dv = a->dv, dk16 = (dk + 15) & ~15, dv16 = (dv + 15) & ~15;
    const size_t esz = a->f16 ? 2 : 4;
    float *sc = a->scratch, *kf = sc + (size_t)G * PORTA_ATTN_CHUNK;
    float *vf = kf + (size_t)PORTA_ATTN_ROWS * dk16, *mx = vf + (size_t)PORTA_ATTN_ROWS * dv16;
    float *ls = mx + ((G + 15) & ~15);
    for (int g = 0; g < G; g++) {
        mx[g] = -INFINITY;
        ls[g] = 0;
        memset(a->o + (size_t)g * dv, 0, sizeof(float) * (size_t)dv);
    }
    for (int p0 = 0; p0 < a->n_kv; p0 += PORTA_ATTN_CHUNK) {
        int n = a->n_kv - p0 < PORTA_ATTN_CHUNK ? a->n_kv - p0 : PORTA_ATTN_CHUNK;
        /* scores: 16 K rows converted once, each query head dotted with all 16 at a time */
        for (int j0 = 0; j0 < n; j0 += PORTA_ATTN_ROWS) {
            int m = n - j0 < PORTA_ATTN_ROWS ? n - j0 : PORTA_ATTN_ROWS;
            rows_to_f32(kf, dk16, (const uint8_t *)a->k + (size_t)p0 * a->k_stride * esz,
                        a->k_stride * esz, a->f16, dk, j0, m);
            for (int g = 0; g < G; g++) {
                const float *q = a->q + (size_t)g * dk;
                __m512 acc[16];
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++)
                    acc[r] = _mm512_setzero_ps();
                for (int i = 0; i < dk; i += 16) {
                    __mmask16 mk = dk - i >= 16 ? 0xFFFF : tail_mask(dk - i);
                    const __m512 qv = _mm512_maskz_loadu_ps(mk, q + i);
#pragma GCC unroll 16
                    for (int r = 0; r < 16; r++)
                        acc[r] = _mm512_fmadd_ps(qv, _mm512_load_ps(kf + (size_t)r * dk16 + i), acc[r]);
                }
                _mm512_mask_storeu_ps(sc + g * PORTA_ATTN_CHUNK + j0, tail_mask(m),
                                      _mm512_mul_ps(hsum16(acc), _mm512_set1_ps(a->scale)));
            }
        }
        /* online softmax: new running max, rescale what was accumulated, weights e^(s - max) */
        for (int g = 0; g < G; g++) {
            float *s = sc + g * PORTA_ATTN_CHUNK, m_new = mx[g];
            for (int j = 0; j < n; j++)
                m_new = s[j] > m_new ? s[j] : m_new;
            __m512 vm = _mm512_set1_ps(m_new), sum = _mm512_setzero_ps();
            for (int j = 0; j < n; j += 16) {
                __mmask16 m = n - j >= 16 ? 0xFFFF : tail_mask(n - j);
                __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_loadu_ps(s + j), vm)));
                _mm512_mask_storeu_ps(s + j, m, e);
                sum = _mm512_add_ps(sum, e);
            }
            float corr = mx[g] == -INFINITY ? 0.0f : expf(mx[g] - m_new);
            ls[g] = ls[g] * corr + _mm512_reduce_add_ps(sum);
            mx[g] = m_new;
            if (corr != 1.0f) {
                float *o = a->o + (size_t)g * dv;
                for (int i = 0; i < dv; i += 16) {
                    __mmask16 m = dv - i >= 16 ? 0xFFFF : tail_mask(dv - i);
                    _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + i),
                                                                  _mm512_set1_ps(corr)));
                }
            }
        }
        /* values: 16 V rows converted once; each head's output (128 floats at a time) stays in
         * registers across them */
        for (int j0 = 0; j0 < n; j0 += PORTA_ATTN_ROWS) {
            int m = n - j0 < PORTA_ATTN_ROWS ? n - j0 : PORTA_ATTN_ROWS;
            rows_to_f32(vf, dv16, (const uint8_t *)a->v + (size_t)p0 * a->v_stride * esz,
                        a->v_stride * esz, a->f16, dv, j0, m);
            for (int g = 0; g < G; g++) {
                float *o = a->o + (size_t)g * dv;
                const float *w = sc + g * PORTA_ATTN_CHUNK + j0;
                for (int i0 = 0; i0 < dv; i0 += 128) {
                    __m512 acc[8];
                    int nv = (dv - i0 + 15) / 16 < 8 ? (dv - i0 + 15) / 16 : 8;
#pragma GCC unroll 16
                    for (int k = 0; k < nv; k++) {
                        int i = i0 + 16 * k;
                        acc[k] = _mm512_maskz_loadu_ps(dv - i >= 16 ? 0xFFFF : tail_mask(dv - i), o + i);
                    }
#pragma GCC unroll 16
                    for (int r = 0; r < m; r++) {
                        const __m512 wr = _mm512_set1_ps(w[r]);
#pragma GCC unroll 16
                        for (int k = 0; k < nv; k++)
                            acc[k] = _mm512_fmadd_ps(wr, _mm512_load_ps(vf + (size_t)r * dv16 + i0 + 16 * k),
                                                     acc[k]);
                    }
#pragma GCC unroll 16
                    for (int k = 0; k < nv; k++) {
                        int i = i0 + 16 * k;
                        _mm512_mask_storeu_ps(o + i, dv - i >= 16 ? 0xFFFF : tail_mask(dv - i), acc[k]);
                    }
                }
            }
        }
    }
    for (int g = 0; g < G; g++) {
        float *o = a->o + (size_t)g * dv;
        const __m512 inv = _mm512_set1_ps(1.0f / ls[g]);
        for (int i = 0; i < dv; i += 16) {
            __mmask16 m = dv - i >= 16 ? 0xFFFF : tail_mask(dv - i);
            _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + i), inv));
        }
    }
}

static const struct porta_cpu_kernels avx512_kernels = {
    .name = "avx512",
    .vec_dot = {
        [PORTA_F32] = dot_f32, [PORTA_F16] = dot_f16, [PORTA_BF16] = dot_bf16,
        [PORTA_Q4_0] = dot_q4_0, [PORTA_Q4_1] = dot_q4_1, [PORTA_Q5_0] = dot_q5_0,
        [PORTA_Q5_1] = dot_q5_1, [PORTA_Q8_0] = dot_q8_0,
        [PORTA_Q2_K] = dot_q2_K, [PORTA_Q3_K] = dot_q3_K, [PORTA_Q4_K] = dot_q4_K,
        [PORTA_Q5_K] = dot_q5_K, [PORTA_Q6_K] = dot_q6_K,
    },
    .quantize = {
        [PORTA_Q8_0] = quantize_q8_0, [PORTA_Q8_1] = quantize_q8_1, [PORTA_Q8_K] = quantize_q8_K,
    },
    .to_float = {
        [PORTA_F16] = f16_to_float, [PORTA_BF16] = bf16_to_float,
        [PORTA_Q4_0] = q4_0_to_float, [PORTA_Q8_0] = q8_0_to_float,
    },
    .gemm = {
        [PORTA_Q4_0] = gemm_q4_0, [PORTA_Q4_1] = gemm_q4_1, [PORTA_Q5_0] = gemm_q5_0,
        [PORTA_Q8_0] = gemm_q8_0, [PORTA_Q4_K] = gemm_q4_K, [PORTA_Q6_K] = gemm_q6_K,
    },
    .gemm_act = {
        [PORTA_Q4_0] = act_q4_0, [PORTA_Q4_1] = act_q4_1, [PORTA_Q5_0] = act_q5_0,
        [PORTA_Q8_0] = act_q8_0, [PORTA_Q4_K] = quantize_q8_K, [PORTA_Q6_K] = quantize_q8_K,
    },
    .swiglu = swiglu,
    .rmsnorm = rmsnorm,
    .attn = attn_rows,
};

/* The AVX-512 table; entries left NULL are filled from the scalar table by cpu.c. Does not
 * check the CPU: call only when porta_cpu_has("avx512"). */
const struct porta_cpu_kernels *porta_cpu_kernels_avx512(void)
{
    return &avx512_kernels;
}

#else /* built without the AVX-512 flags */

const struct porta_cpu_kernels *porta_cpu_kernels_avx512(void)
{
    return NULL;
}

#endif
