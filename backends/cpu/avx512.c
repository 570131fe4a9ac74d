/* avx512.c - the CPU kernel table for AVX-512 (F, BW, VL, DQ, VNNI, BF16): 512-bit K-quant and
 * float kernels, VNNI integer dot products, masked tails. Same results as core/quant.c (dot
 * products up to float rounding, quantizers bit for bit). Built with the AVX-512 flags; the
 * rest of porta reaches it only through the table. */
#include "kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__AVX512VNNI__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
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
