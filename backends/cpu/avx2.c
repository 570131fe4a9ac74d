/* avx2.c - the CPU kernel table for AVX2 + FMA + F16C: the dot product of every weight type
 * with its activation format, and the activation quantizers, bit-identical to core/quant.c.
 * Built with -mavx2 -mfma -mf16c; the rest of porta reaches it only through the table. */
#include "kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static inline float f16(porta_f16 h)
{
    return _cvtsh_ss(h);
}

/* porta_f32_to_f16() in one instruction: F16C rounds to nearest even as it does */
static inline porta_f16 to_f16(float f)
{
    return (porta_f16)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

/* Keeps the compiler from fusing a multiply into a following add (gcc contracts a*b+c into an
 * FMA by default); the quantizers must round the product exactly as the scalar code does. */
static inline __m256 opaque(__m256 v)
{
    __asm__("" : "+x"(v));
    return v;
}

/* The same fence for an integer sum: s = chain(s + p) keeps a dot product's sum a chain in one
 * register. Left free, gcc reassociates the unrolled sums into trees that compute all products
 * first; with 16 ymm registers those went through the stack (measured: Q4_K decode 28%, Q4_0
 * prefill 12% slower than with the chain). The order of wrapping int16/int32 adds does not
 * change the result. */
static inline __m256i chain(__m256i v)
{
    __asm__("" : "+x"(v));
    return v;
}

/* Software prefetch of the weight stream, PREFETCH_DIST bytes ahead of the bytes [p, p + n)
 * that the current iteration reads. A matvec walks the weights once, sequentially, row after
 * row, so prefetching into the next row is right; measured 3x faster from memory on a VM whose
 * hardware prefetcher alone left Q4_0 latency-bound. Covers every line of the range. */
#define PREFETCH_DIST 2048
static inline void prefetch_ahead(const void *p, size_t n)
{
    const char *c = (const char *)p + PREFETCH_DIST;
    for (size_t off = 0; off < n; off += 64)
        _mm_prefetch(c + off, _MM_HINT_T0);
    _mm_prefetch(c + n - 1, _MM_HINT_T0);
}

static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __m256i loadu(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* A weight vector read once: the chain() fence keeps gcc from folding the load into each
 * instruction that uses it (the low- and the high-nibble one), which read every weight line
 * twice and cost the Q4_K decode 9 % of its rate with both cores streaming. */
static inline __m256i wload(const void *p)
{
    return chain(loadu(p));
}

/* The 32 4-bit values of a 32-block: low nibbles (elements 0..15) in the low lane, high
 * nibbles (elements 16..31) in the high lane. */
static inline __m256i nibbles32(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* Bit j of the 32-bit little-endian word at qh -> byte j: 0xFF when set, 0 when clear. */
static inline __m256i bits32(const uint8_t *qh)
{
    uint32_t v;
    memcpy(&v, qh, 4);
    __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit);
}

/* The first 4 halves of a block as floats, in one vcvtph2ps from memory: lanes 0 and 1 are
 * (d, m) of a Q4_1/Q5_1 block or (d, s) of Q8_1. Reads 8 bytes: every 32-block starts with its
 * d and is longer than that. */
static inline __m128 head_f16(const void *blk)
{
    return _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk));
}

/* x.d * y.d in lane 0 (and x.m * y.s in lane 1), one multiply per block */
static inline __m128 head_product(const void *xb, const void *yb)
{
    return _mm_mul_ps(head_f16(xb), head_f16(yb));
}

static inline __m256 fma_head(__m128 dd, __m256i p, __m256 acc)
{
    return _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(p), acc);
}

/* unsigned x signed bytes -> 8 int32 sums of 4 products (no saturation: u <= 63 here) */
static inline __m256i dot_u8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* signed x signed bytes: move a's sign onto b. b is an activation, never -128 (the quantizers
 * produce -127..127), so negating it cannot wrap. */
static inline __m256i dot_i8(__m256i a, __m256i b)
{
    return dot_u8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* Byte-shuffle masks over 8 16-bit scales held in both lanes. bcast[g]: scale g in every
 * lane (a 32-group under one scale); pair[j]: scale 2j in the low lane, 2j+1 in the high
 * lane (two 16-groups, as maddubs lays out 32 elements). */
#define W8(a) a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1
static const uint8_t bcast_mask[8][32] = {
    {W8(0), W8(0)}, {W8(2), W8(2)}, {W8(4), W8(4)}, {W8(6), W8(6)},
    {W8(8), W8(8)}, {W8(10), W8(10)}, {W8(12), W8(12)}, {W8(14), W8(14)},
};
static const uint8_t pair_mask[4][32] = {
    {W8(0), W8(2)}, {W8(4), W8(6)}, {W8(8), W8(10)}, {W8(12), W8(14)},
};
#undef W8

static inline __m256i scale_bcast(__m256i sc8x2, int g)
{
    return _mm256_shuffle_epi8(sc8x2, loadu(bcast_mask[g]));
}
static inline __m256i scale_pair(__m256i sc8x2, int j)
{
    return _mm256_shuffle_epi8(sc8x2, loadu(pair_mask[j]));
}

/* 8 int16 scales (from 8 signed bytes) in both lanes */
static inline __m256i scales8_i8(const int8_t *p)
{
    return _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p)));
}

/* roundf() on 8 lanes: half-way cases away from zero. Adding the float just below 0.5 and
 * truncating gives exactly roundf for every float (the sum never rounds up across an integer
 * unless the fraction is at least one half). */
static inline __m256 round_away(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 h = _mm256_or_ps(_mm256_and_ps(x, sign), _mm256_set1_ps(0.49999997f));
    return _mm256_round_ps(_mm256_add_ps(x, h), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
}

/* 4 x 8 int32 in -128..127 -> 32 int8 in element order */
static inline __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i x = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* ---- float weights against float activations ---------------------------------------------- */

static void dot_f32(int64_t n, float *s, const void *w, const void *a)
{
    const float *x = w, *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_ahead(x + i, 32 * sizeof x[0]);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += x[i] * y[i];
    *s = sum;
}

static inline __m256 load_f16(const porta_f16 *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static void dot_f16(int64_t n, float *s, const void *w, const void *a)
{
    const porta_f16 *x = w;
    const float *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_ahead(x + i, 32 * sizeof x[0]);
        acc0 = _mm256_fmadd_ps(load_f16(x + i), _mm256_loadu_ps(y + i), acc0);
        acc1 = _mm256_fmadd_ps(load_f16(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(load_f16(x + i + 16), _mm256_loadu_ps(y + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(load_f16(x + i + 24), _mm256_loadu_ps(y + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(load_f16(x + i), _mm256_loadu_ps(y + i), acc0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += f16(x[i]) * y[i];
    *s = sum;
}

static inline __m256 load_bf16(const porta_bf16 *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static inline float bf16(porta_bf16 h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void dot_bf16(int64_t n, float *s, const void *w, const void *a)
{
    const porta_bf16 *x = w;
    const float *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_ahead(x + i, 32 * sizeof x[0]);
        acc0 = _mm256_fmadd_ps(load_bf16(x + i), _mm256_loadu_ps(y + i), acc0);
        acc1 = _mm256_fmadd_ps(load_bf16(x + i + 8), _mm256_loadu_ps(y + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(load_bf16(x + i + 16), _mm256_loadu_ps(y + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(load_bf16(x + i + 24), _mm256_loadu_ps(y + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(load_bf16(x + i), _mm256_loadu_ps(y + i), acc0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += bf16(x[i]) * y[i];
    *s = sum;
}

/* ---- 32-blocks against Q8_0 / Q8_1 ---------------------------------------------------------- */

/* Two blocks per iteration into two accumulators; the float work per block is one FMA. */
static void dot_q4_0(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_0 *x = w;
    const struct porta_block_q8_0 *y = a;
    const int64_t nb = n / PORTA_QK4_0;
    const __m256i eight = _mm256_set1_epi8(8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i p0 = dot_i8(_mm256_sub_epi8(nibbles32(x[i].qs), eight), loadu(y[i].qs));
        __m256i p1 = dot_i8(_mm256_sub_epi8(nibbles32(x[i + 1].qs), eight), loadu(y[i + 1].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
        acc1 = fma_head(head_product(&x[i + 1], &y[i + 1]), p1, acc1);
    }
    for (; i < nb; i++) {
        __m256i p0 = dot_i8(_mm256_sub_epi8(nibbles32(x[i].qs), eight), loadu(y[i].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
    }
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* Unsigned nibbles: sum(q * y) * d + m * sum(y), where Q8_1 carries d * sum(y) as s. */
static void dot_q4_1(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_1 *x = w;
    const struct porta_block_q8_1 *y = a;
    const int64_t nb = n / PORTA_QK4_1;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    __m128 summ = _mm_setzero_ps();   /* lane 1: sum of m * s */
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        prefetch_ahead(&x[i], 2 * sizeof x[0]);
        __m256i p0 = dot_u8(nibbles32(x[i].qs), loadu(y[i].qs));
        __m256i p1 = dot_u8(nibbles32(x[i + 1].qs), loadu(y[i + 1].qs));
        __m128 h0 = head_product(&x[i], &y[i]), h1 = head_product(&x[i + 1], &y[i + 1]);
        acc0 = fma_head(h0, p0, acc0);
        acc1 = fma_head(h1, p1, acc1);
        summ = _mm_add_ps(summ, _mm_add_ps(h0, h1));
    }
    for (; i < nb; i++) {
        __m256i p0 = dot_u8(nibbles32(x[i].qs), loadu(y[i].qs));
        __m128 h0 = head_product(&x[i], &y[i]);
        acc0 = fma_head(h0, p0, acc0);
        summ = _mm_add_ps(summ, h0);
    }
    *s = hsum_ps(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(summ));
}

/* 5-bit signed: nibble | 0xF0 where the fifth bit is clear is nibble - 16 in two's complement. */
static inline __m256i q5_0_values(const struct porta_block_q5_0 *b)
{
    __m256i hi = _mm256_andnot_si256(bits32(b->qh), _mm256_set1_epi8((char)0xF0));
    return _mm256_or_si256(nibbles32(b->qs), hi);
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
        __m256i p0 = dot_i8(q5_0_values(&x[i]), loadu(y[i].qs));
        __m256i p1 = dot_i8(q5_0_values(&x[i + 1]), loadu(y[i + 1].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
        acc1 = fma_head(head_product(&x[i + 1], &y[i + 1]), p1, acc1);
    }
    for (; i < nb; i++) {
        __m256i p0 = dot_i8(q5_0_values(&x[i]), loadu(y[i].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
    }
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

static inline __m256i q5_1_values(const struct porta_block_q5_1 *b)
{
    __m256i hi = _mm256_and_si256(bits32(b->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles32(b->qs), hi);
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
        __m256i p0 = dot_u8(q5_1_values(&x[i]), loadu(y[i].qs));
        __m256i p1 = dot_u8(q5_1_values(&x[i + 1]), loadu(y[i + 1].qs));
        __m128 h0 = head_product(&x[i], &y[i]), h1 = head_product(&x[i + 1], &y[i + 1]);
        acc0 = fma_head(h0, p0, acc0);
        acc1 = fma_head(h1, p1, acc1);
        summ = _mm_add_ps(summ, _mm_add_ps(h0, h1));
    }
    for (; i < nb; i++) {
        __m256i p0 = dot_u8(q5_1_values(&x[i]), loadu(y[i].qs));
        __m128 h0 = head_product(&x[i], &y[i]);
        acc0 = fma_head(h0, p0, acc0);
        summ = _mm_add_ps(summ, h0);
    }
    *s = hsum_ps(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(summ));
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
        __m256i p0 = dot_i8(loadu(x[i].qs), loadu(y[i].qs));
        __m256i p1 = dot_i8(loadu(x[i + 1].qs), loadu(y[i + 1].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
        acc1 = fma_head(head_product(&x[i + 1], &y[i + 1]), p1, acc1);
    }
    for (; i < nb; i++) {
        __m256i p0 = dot_i8(loadu(x[i].qs), loadu(y[i].qs));
        acc0 = fma_head(head_product(&x[i], &y[i]), p0, acc0);
    }
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* ---- K-quants against Q8_K ------------------------------------------------------------------
 * Each 16- or 32-element group has its own integer scale; the integer sum of a block is exact
 * and meets the float scales once per block. Offsets (Q2_K/Q4_K/Q5_K mins, the -4 of Q3_K, the
 * -32 of Q6_K) come from Q8_K's per-16 sums (bsums) instead of touching the values twice; the
 * bsums must be the sums of the qs, as every porta quantizer writes them. */

/* Q4_K/Q5_K: 8 6-bit scales and 8 6-bit mins packed in 12 bytes -> bytes 0-7: scales,
 * bytes 8-15: mins. Groups 0-3 sit in the low 6 bits of bytes 0-3 (scale) and 4-7 (min);
 * groups 4-7 in the nibbles of bytes 8-11 with their top 2 bits in the top of bytes 0-7. */
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

/* sum over the 8 32-groups of min_j * (bsums[2j] + bsums[2j+1]); scmn from k4_scales */
static inline __m128i k4_minsums(const int16_t *bsums, __m128i scmn)
{
    __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)bsums),
                                _mm_loadu_si128((const __m128i *)(bsums + 8)));
    return _mm_madd_epi16(bs, _mm_cvtepu8_epi16(_mm_srli_si128(scmn, 8)));
}

static inline float hsum128_ps(__m128 v)
{
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    return _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
}

static void dot_q4_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q4_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const __m128i scmn = k4_scales(x[i].scales);
        const float d = f16(x[i].d) * y[i].d, dmin = f16(x[i].dmin) * y[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_minsums(y[i].bsums, scmn)), accm);
        const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scmn));
        const uint8_t *q = x[i].qs;
        const int8_t *q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {      /* 64 elements: low nibbles, then high nibbles */
            __m256i v = loadu(q + 32 * j);
            __m256i plo = _mm256_maddubs_epi16(_mm256_and_si256(v, m4), loadu(q8 + 64 * j));
            __m256i phi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                               loadu(q8 + 64 * j + 32));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, scale_bcast(sc16, 2 * j)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, scale_bcast(sc16, 2 * j + 1)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc) - hsum128_ps(accm);
}

/* As Q4_K; bit 2j of qh[l] is the fifth bit of low nibble l of chunk j, bit 2j+1 of the high. */
static void dot_q5_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q5_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const __m128i scmn = k4_scales(x[i].scales);
        const float d = f16(x[i].d) * y[i].d, dmin = f16(x[i].dmin) * y[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k4_minsums(y[i].bsums, scmn)), accm);
        const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scmn));
        const uint8_t *q = x[i].qs;
        const int8_t *q8 = y[i].qs;
        __m256i hb = loadu(x[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256i v = loadu(q + 32 * j);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(v, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4));
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                         _mm256_and_si256(_mm256_slli_epi16(hb, 3), b4));
            hb = _mm256_srli_epi16(hb, 2);
            __m256i plo = _mm256_maddubs_epi16(lo, loadu(q8 + 64 * j));
            __m256i phi = _mm256_maddubs_epi16(hi, loadu(q8 + 64 * j + 32));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, scale_bcast(sc16, 2 * j)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, scale_bcast(sc16, 2 * j + 1)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc) - hsum128_ps(accm);
}

/* Q6_K as unsigned u = q + 32 in [0, 63]:
 * sum(sc * q * a) = sum(sc * u * a) - 32 * sum(sc * bsum). */
static void dot_q6_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q6_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const float d = f16(x[i].d) * y[i].d;
        const __m256i sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
        __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(loadu(y[i].bsums), sc_all), 5);
        sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
        for (int h = 0; h < 2; h++) {
            const __m256i sc16 = scales8_i8(x[i].scales + 8 * h);
            const __m256i qh = loadu(x[i].qh + 32 * h);
            const __m256i l0 = loadu(x[i].ql + 64 * h), l1 = loadu(x[i].ql + 64 * h + 32);
            const int8_t *q8 = y[i].qs + 128 * h;
            __m256i u0 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
            __m256i u1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
            __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_and_si256(qh, m2));
            __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
            __m256i p0 = _mm256_maddubs_epi16(u0, loadu(q8));
            __m256i p1 = _mm256_maddubs_epi16(u1, loadu(q8 + 32));
            __m256i p2 = _mm256_maddubs_epi16(u2, loadu(q8 + 64));
            __m256i p3 = _mm256_maddubs_epi16(u3, loadu(q8 + 96));
            p0 = _mm256_madd_epi16(p0, scale_pair(sc16, 0));
            p1 = _mm256_madd_epi16(p1, scale_pair(sc16, 1));
            p2 = _mm256_madd_epi16(p2, scale_pair(sc16, 2));
            p3 = _mm256_madd_epi16(p3, scale_pair(sc16, 3));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p0, p1),
                                                           _mm256_add_epi32(p2, p3)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* Q2_K: 2-bit planes; the 4 planes of byte l of half h are elements 128h + 32k + l. */
static void dot_q2_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q2_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m256i m2 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const float d = y[i].d * f16(x[i].d), dmin = y[i].d * f16(x[i].dmin);
        const __m128i raw = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
        const __m128i sc4 = _mm_and_si128(raw, m4);
        const __m256i msum = _mm256_madd_epi16(loadu(y[i].bsums), mins);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(msum), accm);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i sc16 = _mm256_broadcastsi128_si256(
                _mm_cvtepu8_epi16(h ? _mm_srli_si128(sc4, 8) : sc4));
            const int8_t *q8 = y[i].qs + 128 * h;
            __m256i q = loadu(x[i].qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                __m256i p = _mm256_maddubs_epi16(_mm256_and_si256(q, m2), loadu(q8 + 32 * k));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(sc16, k)));
                q = _mm256_srli_epi16(q, 2);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc) - hsum_ps(accm);
}

/* Q3_K's 16 6-bit scales (stored + 32) -> 16 signed bytes. Low 4 bits of scale j: low nibble
 * of byte j (j < 8) or high nibble of byte j - 8; top 2 bits: bits 2*(j/4) of byte 8 + j%4. */
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

/* Q3_K as u = q + 4 in [0, 7] (the 2 low bits, plus 4 where the hmask bit is set):
 * sum(sc * q * a) = sum(sc * u * a) - 4 * sum(sc * bsum). */
static void dot_q3_K(int64_t n, float *s, const void *w, const void *a)
{
    const struct porta_block_q3_K *x = w;
    const struct porta_block_q8_K *y = a;
    const __m256i m2 = _mm256_set1_epi8(3), b2 = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / PORTA_QK_K; i++) {
        prefetch_ahead(&x[i], sizeof x[0]);
        const __m128i sc8 = k3_scales(x[i].scales);
        const float d = f16(x[i].d) * y[i].d;
        const __m256i sc_all = _mm256_cvtepi8_epi16(sc8);
        __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(loadu(y[i].bsums), sc_all), 2);
        sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
        __m256i hm = loadu(x[i].hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i sc16 = _mm256_broadcastsi128_si256(
                _mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
            const int8_t *q8 = y[i].qs + 128 * h;
            __m256i q = loadu(x[i].qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                __m256i u = _mm256_or_si256(_mm256_and_si256(q, m2),
                                            _mm256_and_si256(_mm256_slli_epi16(hm, 2), b2));
                __m256i p = _mm256_maddubs_epi16(u, loadu(q8 + 32 * k));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(sc16, k)));
                q = _mm256_srli_epi16(q, 2);
                hm = _mm256_srli_epi16(hm, 1);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* ---- activation quantizers: bit-identical to core/quant.c ---------------------------------- */

/* max |x| over 32 floats; NaN lanes are skipped as the scalar code skips them (maxps returns
 * its second operand when either is NaN) */
static inline float amax32(const float *x)
{
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++)
        m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs), m);
    return hmax_ps(m);
}

/* x * id rounded as quant.c's round_i8: roundf, clamped to [-127, 127], NaN -> 0 */
static inline __m256i round_i8x8(const float *x, __m256 id)
{
    __m256 p = opaque(_mm256_mul_ps(_mm256_loadu_ps(x), id));
    p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q));
    p = _mm256_min_ps(_mm256_max_ps(p, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvttps_epi32(round_away(p));
}

static void quantize_q8_0(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++, src += PORTA_QK8_0) {
        float amax = amax32(src);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        b[i].d = to_f16(d);
        __m256i q = pack32(round_i8x8(src, vid), round_i8x8(src + 8, vid),
                           round_i8x8(src + 16, vid), round_i8x8(src + 24, vid));
        _mm256_storeu_si256((__m256i *)b[i].qs, q);
    }
}

static void quantize_q8_1(const float *src, void *dst, int64_t n)
{
    struct porta_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK8_1; i++, src += PORTA_QK8_1) {
        float amax = amax32(src);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q0 = round_i8x8(src, vid), q1 = round_i8x8(src + 8, vid);
        __m256i q2 = round_i8x8(src + 16, vid), q3 = round_i8x8(src + 24, vid);
        int sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3)));
        b[i].d = to_f16(d);
        _mm256_storeu_si256((__m256i *)b[i].qs, pack32(q0, q1, q2, q3));
        b[i].s = to_f16((float)sum * d);
    }
}

/* Q8_K: the first element of largest magnitude maps to -127; q = nearest-even(iscale * x)
 * clamped to [-128, 127] (NaN -> 0), bsums per 16. */
static void quantize_q8_K(const float *src, void *dst, int64_t n)
{
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    struct porta_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / PORTA_QK_K; i++, src += PORTA_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++)
            m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + 8 * k), abs), m);
        const float amax = hmax_ps(m);
        memset(&b[i], 0, sizeof b[i]);
        if (!amax)
            continue;
        float max = 0;
        const __m256 vmax = _mm256_set1_ps(amax);
        for (int k = 0; k < 32; k++) {
            __m256 ax = _mm256_and_ps(_mm256_loadu_ps(src + 8 * k), abs);
            int hit = _mm256_movemask_ps(_mm256_cmp_ps(ax, vmax, _CMP_EQ_OQ));
            if (hit) {
                max = src[8 * k + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int g = 0; g < 16; g++) {
            __m256i q[2];
            for (int h = 0; h < 2; h++) {
                __m256 p = opaque(_mm256_mul_ps(_mm256_loadu_ps(src + 16 * g + 8 * h), vs));
                p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q));
                p = _mm256_max_ps(p, _mm256_set1_ps(-128.0f));
                p = _mm256_min_ps(p, _mm256_set1_ps(127.0f));
                q[h] = _mm256_cvtps_epi32(p);   /* MXCSR's default: nearest, ties to even */
            }
            b[i].bsums[g] = (int16_t)hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_setzero_si256());
            p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm_storeu_si128((__m128i *)(b[i].qs + 16 * g), _mm256_castsi256_si128(p8));
        }
        b[i].d = 1 / iscale;
    }
}

/* ---- dequantizers (embedding rows); the rest come from the scalar table ---------------------- */

static void f16_to_float(const void *src, float *dst, int64_t n)
{
    const porta_f16 *x = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load_f16(x + i));
    for (; i < n; i++)
        dst[i] = porta_f16_to_f32(x[i]);
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
    const porta_bf16 *x = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load_bf16(x + i));
    for (; i < n; i++)
        dst[i] = bf16(x[i]);
}

/* 32 int8 -> 32 floats times d (one rounding, as the scalar code) */
static inline void store_scaled32(float *dst, __m256i q, float d)
{
    const __m256 vd = _mm256_set1_ps(d);
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), vd));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), vd));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), vd));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), vd));
}

static void q4_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK4_0; i++, dst += PORTA_QK4_0)
        store_scaled32(dst, _mm256_sub_epi8(nibbles32(b[i].qs), _mm256_set1_epi8(8)), f16(b[i].d));
}

static void q8_0_to_float(const void *src, float *dst, int64_t n)
{
    const struct porta_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / PORTA_QK8_0; i++, dst += PORTA_QK8_0)
        store_scaled32(dst, loadu(b[i].qs), f16(b[i].d));
}

/* ---- tile kernels over repacked weights (repack.h) --------------------------------------------
 * A 16-row group is done as two halves of 8 rows: the first 32 bytes of each 64-byte chunk
 * hold rows 0-7, the last 32 rows 8-15. maddubs multiplies the unsigned weights by the signed
 * activation bytes; with weights of at most 4 bits, 8 such steps add up in int16 without
 * saturating (8 * 2 * 15 * 128 < 32768) before one madd widens them, so a block costs about
 * 20 instructions per 8 rows and token. The second half re-reads the group from L1/L2. */

#define ALWAYS static inline __attribute__((always_inline))
/* The one-token (decode) kernels are functions of their own at a page boundary: inlined into
 * the gemm entry points, their loops landed wherever the code before them ended, and some
 * placements cost the front end enough to make Q4_K decode ~7% slower, so any edit anywhere
 * could move decode speed. Placed like this they run the same in every build. */
#define DECODE_KERNEL static __attribute__((noinline, aligned(4096)))
#ifndef GEMM_PF
#define GEMM_PF 512                   /* weight-stream prefetch distance into L1, bytes */
#endif
#define NT2 4                         /* tokens per pass over a half-group */
#define NTK2 3                        /* the same for Q4_K (more live accumulators) */
#ifndef NTQ8
#define NTQ8 8                        /* the same for Q8_0 (see tile_q8_0_half2) */
#endif

ALWAYS __m256i bcast4(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
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

/* the 8 rows n_rows - 8h.. of half h that exist, as a maskstore mask */
ALWAYS __m256i row_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

ALWAYS void store_rows(float *y, __m256 v, int n)
{
    if (n >= 8)
        _mm256_storeu_ps(y, v);
    else
        _mm256_maskstore_ps(y, row_mask(n), v);
}

/* Q4_0 / Q4_1 / Q5_0: unsigned weights of at most 5 bits */
ALWAYS void unpack_nib(int type, const uint8_t *blk, int h, __m256i u[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const uint8_t *q = blk + (type == PORTA_Q4_0 ? 32 : type == PORTA_Q4_1 ? 64 : 96) + 32 * h;
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m256i v = wload(q + 64 * c);
        u[c] = _mm256_and_si256(v, m4);
        u[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    if (type == PORTA_Q5_0) {
        const __m256i hb = loadu(blk + 32 + 32 * h), b4 = _mm256_set1_epi8(0x10);
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m256i hs = s <= 4 ? _mm256_slli_epi16(hb, 4 - s) : _mm256_srli_epi16(hb, s - 4);
            u[s] = _mm256_or_si256(u[s], _mm256_and_si256(hs, b4));
        }
    }
}

/* acc + one token's products with rows 8h..8h+7 of an unpacked Q4_0 / Q4_1 / Q5_0 block u
 * (scales dw; yq the token's quantized block, m its scale, sum and offset correction) */
ALWAYS __m256 blk32_tok(int type, const __m256i u[8], __m256 dw, const uint8_t *blk, int h,
                        const uint8_t *yq, const struct porta_act32 *m, __m256 acc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s32;
    if (type == PORTA_Q5_0) {   /* 5-bit weights: two int16 sums of 4 steps */
        __m256i lo = _mm256_maddubs_epi16(u[0], bcast4(yq));
        __m256i hi = _mm256_maddubs_epi16(u[4], bcast4(yq + 16));
#pragma GCC unroll 3
        for (int s = 1; s < 4; s++) {
            lo = chain(_mm256_add_epi16(lo, _mm256_maddubs_epi16(u[s], bcast4(yq + 4 * s))));
            hi = chain(_mm256_add_epi16(hi, _mm256_maddubs_epi16(u[s + 4],
                                                                 bcast4(yq + 16 + 4 * s))));
        }
        s32 = _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones));
    } else {
        __m256i s16 = _mm256_maddubs_epi16(u[0], bcast4(yq));
#pragma GCC unroll 7
        for (int s = 1; s < 8; s++)
            s16 = chain(_mm256_add_epi16(s16, _mm256_maddubs_epi16(u[s], bcast4(yq + 4 * s))));
        s32 = _mm256_madd_epi16(s16, ones);
    }
    if (type != PORTA_Q4_1)
        s32 = _mm256_add_epi32(s32, _mm256_set1_epi32(m->corr));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(dw, _mm256_set1_ps(m->d)), acc);
    if (type == PORTA_Q4_1)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * h))),
                              _mm256_set1_ps(m->s), acc);
    return acc;
}

/* Q4_0 / Q4_1 / Q5_0, rows 8h..8h+7 of one block: acc[t] (8 floats) += the block's products */
ALWAYS void blk32_half(int type, int NT, const uint8_t *blk, int b, int h, const uint8_t *act,
                       size_t as, int64_t n_cols, float (*acc)[8])
{
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
    __m256i u[8];
    unpack_nib(type, blk, h, u);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const uint8_t *a = act + (size_t)t * as;
        const struct porta_act32 *m = (const struct porta_act32 *)(a + n_cols) + b;
        _mm256_store_ps(acc[t], blk32_tok(type, u, dw, blk, h, a + 32 * b, m,
                                          _mm256_load_ps(acc[t])));
    }
}

/* one token's int32 sums over 4 steps of a Q8_0 half-block: q the signed weights, aq = |q|;
 * maddubs(|w|, y * sign(w)) per step, int16 pairs widened per step (two could saturate) */
ALWAYS __m256i q8_0_steps4(const __m256i q[4], const __m256i aq[4], const uint8_t *yq)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s32 = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int s = 0; s < 4; s++) {
        __m256i p = _mm256_maddubs_epi16(aq[s], _mm256_sign_epi8(bcast4(yq + 4 * s), q[s]));
        s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
    }
    return s32;
}

/* q and |q| of steps 4*half .. 4*half+3 of rows 8h..8h+7 of a repacked Q8_0 block */
ALWAYS void q8_0_load4(const uint8_t *blk, int half, int h, __m256i q[4], __m256i aq[4])
{
#pragma GCC unroll 4
    for (int s = 0; s < 4; s++) {
        q[s] = loadu(blk + 32 + 64 * (4 * half + s) + 32 * h);
        aq[s] = _mm256_sign_epi8(q[s], q[s]);
    }
}

/* Q8_0, rows 8h..8h+7 of one block: acc[t] (8 floats) += the block's products */
ALWAYS void blk_q8_0_half(int NT, const uint8_t *blk, int b, int h, const uint8_t *act, size_t as,
                          int64_t n_cols, float (*acc)[8])
{
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {      /* 4 steps at a time: w and |w| in 8 regs */
        __m256i q[4], aq[4];
        q8_0_load4(blk, half, h, q, aq);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *a = act + (size_t)t * as;
            const struct porta_act32 *m = (const struct porta_act32 *)(a + n_cols) + b;
            __m256i s32 = q8_0_steps4(q, aq, a + 32 * b + 16 * half);
            _mm256_store_ps(acc[t], _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32),
                                                    _mm256_mul_ps(dw, _mm256_set1_ps(m->d)),
                                                    _mm256_load_ps(acc[t])));
        }
    }
}

/* Two passes over the group, one per half, accumulators in registers: the prefill order
 * (several tokens share each unpacked block, so the second read of the group, from L1/L2,
 * costs little next to them). */
ALWAYS void tile32_half2(int type, int NT, int nb, const uint8_t *w, int h, const uint8_t *act,
                        size_t as, int64_t n_cols, float *y, size_t ys, int nr)
{
    const size_t bb = blk32_bytes(type);
    __m256 acc[NT2];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * bb;
        if (h == 0)
            prefetch_block(blk, bb);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
        __m256i u[8];
        unpack_nib(type, blk, h, u);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *a = act + (size_t)t * as;
            const struct porta_act32 *m = (const struct porta_act32 *)(a + n_cols) + b;
            acc[t] = blk32_tok(type, u, dw, blk, h, a + 32 * b, m, acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
        store_rows(y + (size_t)t * ys + 8 * h, acc[t], nr - 8 * h);
}

/* Q8_0, one half over all blocks (the prefill order, see tile32), up to NTQ8 tokens per pass:
 * the loads and |w| of each step then serve twice as many tokens as with NT2, and each pass
 * over the 544-byte blocks is shared by twice as many; measured 12% faster than 4 tokens (the
 * 4-bit types gain nothing from it). */
ALWAYS void tile_q8_0_half2(int NT, int nb, const uint8_t *w, int h, const uint8_t *act, size_t as,
                           int64_t n_cols, float *y, size_t ys, int nr)
{
    __m256 acc[NTQ8];
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 544;
        if (h == 0)
            prefetch_block(blk, 544);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {      /* 4 steps at a time: w and |w| in 8 regs */
            __m256i q[4], aq[4];
            q8_0_load4(blk, half, h, q, aq);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                const uint8_t *a = act + (size_t)t * as;
                const struct porta_act32 *m = (const struct porta_act32 *)(a + n_cols) + b;
                __m256i s32 = q8_0_steps4(q, aq, a + 32 * b + 16 * half);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32),
                                         _mm256_mul_ps(dw, _mm256_set1_ps(m->d)), acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        store_rows(y + (size_t)t * ys + 8 * h, acc[t], nr - 8 * h);
}

/* Q4_0 / Q4_1 for one or two tokens (decode): block by block, both halves together, so that
 * each activation broadcast serves 16 rows and the sums stay in registers. Rows past nr are
 * the group's zero padding: computing them costs nothing extra. */
ALWAYS void tile32_dec(int type, int NT, int nb, const uint8_t *w, const uint8_t *act, size_t as,
                       int64_t n_cols, float *y, size_t ys, int nr)
{
    const size_t bb = blk32_bytes(type);
    const int qoff = type == PORTA_Q4_0 ? 32 : 64;
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[2][2];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++)
        acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * bb, *q = blk + qoff;
        prefetch_block(blk, bb);
        __m256i s16[2][2];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i v0 = wload(q + 64 * c), v1 = wload(q + 64 * c + 32);
            const __m256i l0 = _mm256_and_si256(v0, m4), l1 = _mm256_and_si256(v1, m4);
            const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
            const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
#pragma GCC unroll 2
            for (int t = 0; t < NT; t++) {
                const uint8_t *yq = act + (size_t)t * as + 32 * b;
                const __m256i ylo = bcast4(yq + 4 * c), yhi = bcast4(yq + 16 + 4 * c);
                __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(l0, ylo),
                                              _mm256_maddubs_epi16(h0, yhi));
                __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(l1, ylo),
                                              _mm256_maddubs_epi16(h1, yhi));
                s16[0][t] = chain(c ? _mm256_add_epi16(s16[0][t], p0) : p0);
                s16[1][t] = chain(c ? _mm256_add_epi16(s16[1][t], p1) : p1);
            }
        }
        const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16)));
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) {
            const struct porta_act32 *m = (const struct porta_act32 *)(act + (size_t)t * as + n_cols) + b;
            __m256i i0 = _mm256_madd_epi16(s16[0][t], ones), i1 = _mm256_madd_epi16(s16[1][t], ones);
            if (type == PORTA_Q4_0) {
                const __m256i corr = _mm256_set1_epi32(m->corr);
                i0 = _mm256_add_epi32(i0, corr);
                i1 = _mm256_add_epi32(i1, corr);
            }
            const __m256 d = _mm256_set1_ps(m->d);
            acc[0][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(dw0, d), acc[0][t]);
            acc[1][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(dw1, d), acc[1][t]);
            if (type == PORTA_Q4_1) {
                const __m256 s = _mm256_set1_ps(m->s);
                acc[0][t] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32))),
                                            s, acc[0][t]);
                acc[1][t] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 48))),
                                            s, acc[1][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) {
        store_rows(y + (size_t)t * ys, acc[0][t], nr);
        if (nr > 8)
            store_rows(y + (size_t)t * ys + 8, acc[1][t], nr - 8);
    }
}

/* One pass over the group: block by block, both halves, so that each weight line is read once
 * from memory and used while it is in L1 (the decode order: one or two tokens). */
ALWAYS void tile32(int type, int NT, int nb, const uint8_t *w, const uint8_t *act, size_t as,
                   int64_t n_cols, float *y, size_t ys, int nr)
{
    if (NT >= 3) {
        for (int h = 0; h < 2 && 8 * h < nr; h++) {
            if (type == PORTA_Q8_0)
                tile_q8_0_half2(NT, nb, w, h, act, as, n_cols, y, ys, nr);
            else
                tile32_half2(type, NT, nb, w, h, act, as, n_cols, y, ys, nr);
        }
        return;
    }
    if (type == PORTA_Q4_0 || type == PORTA_Q4_1) {
        tile32_dec(type, NT, nb, w, act, as, n_cols, y, ys, nr);
        return;
    }
    const size_t bb = blk32_bytes(type);
    const int nh = nr > 8 ? 2 : 1;
    float acc[2][NT2][8] __attribute__((aligned(32)));
    memset(acc, 0, sizeof acc);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * bb;
        prefetch_block(blk, bb);
        for (int h = 0; h < nh; h++) {
            if (type == PORTA_Q8_0)
                blk_q8_0_half(NT, blk, b, h, act, as, n_cols, acc[h]);
            else
                blk32_half(type, NT, blk, b, h, act, as, n_cols, acc[h]);
        }
    }
    for (int h = 0; h < nh; h++)
        for (int t = 0; t < NT; t++)
            store_rows(y + (size_t)t * ys + 8 * h, _mm256_load_ps(acc[h][t]), nr - 8 * h);
}

/* the one-token case of each 32-block type, placed (see DECODE_KERNEL) */
#define DEC32(fn, type)                                                                          \
    DECODE_KERNEL void fn(int nb, const uint8_t *w, const uint8_t *a, size_t as, int64_t n_cols,  \
                          float *y, size_t ys, int nr)                                           \
    {                                                                                            \
        tile32(type, 1, nb, w, a, as, n_cols, y, ys, nr);                                        \
    }

DEC32(dec_q4_0, PORTA_Q4_0)
DEC32(dec_q4_1, PORTA_Q4_1)
DEC32(dec_q5_0, PORTA_Q5_0)
DEC32(dec_q8_0, PORTA_Q8_0)

#define GEMM32(fn, type, dec)                                                                    \
    static void fn(int64_t n_cols, const void *w, const void *act, size_t as, int n_tok,          \
                   float *y, size_t ys, int n_rows)                                              \
    {                                                                                            \
        const int nb = (int)(n_cols / 32);                                                       \
        const uint8_t *a = act;                                                                  \
        int t = 0;                                                                               \
        if (type == PORTA_Q8_0)         /* 8 tokens per pass (see tile_q8_0_half2) */            \
            for (; t + NTQ8 <= n_tok; t += NTQ8)                                                 \
                tile32(type, NTQ8, nb, w, a + t * as, as, n_cols, y + t * ys, ys, n_rows);      \
        for (; t + NT2 <= n_tok; t += NT2)                                                       \
            tile32(type, NT2, nb, w, a + t * as, as, n_cols, y + t * ys, ys, n_rows);           \
        switch (n_tok - t) {                                                                     \
        case 1: dec(nb, w, a + t * as, as, n_cols, y + t * ys, ys, n_rows); break;              \
        case 2: tile32(type, 2, nb, w, a + t * as, as, n_cols, y + t * ys, ys, n_rows); break;  \
        case 3: tile32(type, 3, nb, w, a + t * as, as, n_cols, y + t * ys, ys, n_rows); break;  \
        default: break;                                                                          \
        }                                                                                        \
    }

GEMM32(gemm_q4_0, PORTA_Q4_0, dec_q4_0)
GEMM32(gemm_q4_1, PORTA_Q4_1, dec_q4_1)
GEMM32(gemm_q5_0, PORTA_Q5_0, dec_q5_0)
GEMM32(gemm_q8_0, PORTA_Q8_0, dec_q8_0)

/* vpshufb patterns over int32 lanes of 4 bytes: (byte k, byte k) as an int16 pair (k_pair),
 * and byte k in the high byte of both words (k_hi2, for a sign-extending shift) */
#define PR(b) b, 0x80, b, 0x80, 4 + b, 0x80, 4 + b, 0x80, 8 + b, 0x80, 8 + b, 0x80, 12 + b, 0x80, 12 + b, 0x80
#define HI(b) 0x80, b, 0x80, b, 0x80, 4 + b, 0x80, 4 + b, 0x80, 8 + b, 0x80, 8 + b, 0x80, 12 + b, 0x80, 12 + b
static const uint8_t k_pair[4][32] __attribute__((aligned(32))) = {
    { PR(0), PR(0) }, { PR(1), PR(1) }, { PR(2), PR(2) }, { PR(3), PR(3) },
};
static const uint8_t k_hi2[4][32] __attribute__((aligned(32))) = {
    { HI(0), HI(0) }, { HI(1), HI(1) }, { HI(2), HI(2) }, { HI(3), HI(3) },
};
#undef PR
#undef HI

/* (v_j, v_j) int16 pairs of the signed bytes j of each int32 lane of x */
ALWAYS __m256i pair_i8(__m256i x, int j)
{
    return _mm256_srai_epi16(_mm256_shuffle_epi8(x, _mm256_load_si256((const __m256i *)k_hi2[j])), 8);
}

/* The sums of a Q8_K super-block's 32-element sub-blocks, bsums[2j] + bsums[2j+1] (at most
 * 32 * 127: int16), as int16 4-vectors repeated over the register: j = 0..3 in *b_lo, 4..7 in
 * *b_hi. Shared by both halves of a group. */
ALWAYS void k4_bsum32(const struct porta_block_q8_K *a, __m256i *b_lo, __m256i *b_hi)
{
    const __m256i b = _mm256_madd_epi16(loadu(a->bsums), _mm256_set1_epi16(1));
    const __m256i p = _mm256_packs_epi32(b, b);     /* lane 0: j = 0..3 twice, lane 1: 4..7 */
    *b_lo = _mm256_permute4x64_epi64(p, 0x44);
    *b_hi = _mm256_permute4x64_epi64(p, 0xEE);
}

/* sum_j min_j * bsum32_j of 8 rows (byte j of row r's int32 lane of mn_lo: min j, of mn_hi:
 * min 4 + j): the mins widened to int16 rows of 4 (two rows per 128-bit lane), one madd per
 * 4 mins of 2 rows and one horizontal add: 11 instructions instead of 23 (a shuffle, a madd
 * and an add per min). Exact: the same int32 sums. */
ALWAYS __m256i k4_mins_dot(__m256i mn_lo, __m256i mn_hi, __m256i b_lo, __m256i b_hi)
{
    const __m256i z = _mm256_setzero_si256();
    /* rows 0, 1 | 4, 5 and rows 2, 3 | 6, 7, two partial sums per row each */
    const __m256i x = _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpacklo_epi8(mn_lo, z), b_lo),
                                       _mm256_madd_epi16(_mm256_unpacklo_epi8(mn_hi, z), b_hi));
    const __m256i y = _mm256_add_epi32(_mm256_madd_epi16(_mm256_unpackhi_epi8(mn_lo, z), b_lo),
                                       _mm256_madd_epi16(_mm256_unpackhi_epi8(mn_hi, z), b_hi));
    return _mm256_hadd_epi32(x, y);                 /* rows 0..3 | 4..7 */
}

/* Q4_K, rows 8h..8h+7 of one super-block: the 8 scales as (s, s) int16 pairs for madd after
 * 8 maddubs steps, the 8 mins against the activation's 32-element sums (k4_mins_dot) */
ALWAYS void blk_q4_K_half(int NT, const uint8_t *blk, int b, int h, const uint8_t *act,
                          size_t as, float (*acc)[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F);
    const __m256i lo4 = _mm256_set1_epi32(0x0f0f0f0f), lo2 = _mm256_set1_epi32(0x03030303);
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
    const __m256 dmw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32 + 16 * h)));
    const __m256i u0 = loadu(blk + 64 + 32 * h), u1 = loadu(blk + 128 + 32 * h);
    const __m256i u2 = loadu(blk + 192 + 32 * h);
    const __m256i sc_lo = _mm256_and_si256(u0, m6), mn_lo = _mm256_and_si256(u1, m6);
    const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(u2, lo4),
        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), lo2), 4));
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), lo4),
        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), lo2), 4));
    __m256i isum[NTK2];
#pragma GCC unroll 3
    for (int t = 0; t < NT; t++)
        isum[t] = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        const int8_t *yq[NTK2];
        __m256i s0[NTK2], s1[NTK2];
        const uint8_t *q = blk + 256 + 512 * p + 32 * h;
#pragma GCC unroll 3
        for (int t = 0; t < NT; t++) {
            yq[t] = ((const struct porta_block_q8_K *)(act + t * as) + b)->qs + 64 * p;
            s0[t] = s1[t] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
            if (h == 0)                 /* the super-block's lines, spread over its chunks */
                prefetch_line(q + 64 * c);
            __m256i v = loadu(q + 64 * c);
            __m256i l = _mm256_and_si256(v, m4), hh = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
#pragma GCC unroll 3
            for (int t = 0; t < NT; t++) {
                const __m256i pl = _mm256_maddubs_epi16(l, bcast4(yq[t] + 4 * c));
                const __m256i ph = _mm256_maddubs_epi16(hh, bcast4(yq[t] + 32 + 4 * c));
                s0[t] = chain(_mm256_add_epi16(s0[t], pl));
                s1[t] = chain(_mm256_add_epi16(s1[t], ph));
            }
        }
        /* the pair's two scales as (s, s) int16 pairs, one shuffle each */
        const __m256i src = p < 2 ? sc_lo : sc_hi;
        const __m256i s_a = _mm256_shuffle_epi8(src, _mm256_load_si256((const __m256i *)k_pair[(2 * p) % 4]));
        const __m256i s_b = _mm256_shuffle_epi8(src, _mm256_load_si256((const __m256i *)k_pair[(2 * p + 1) % 4]));
#pragma GCC unroll 3
        for (int t = 0; t < NT; t++)
            isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(_mm256_madd_epi16(s0[t], s_a),
                                                                 _mm256_madd_epi16(s1[t], s_b)));
    }
#pragma GCC unroll 3
    for (int t = 0; t < NT; t++) {
        const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)(act + t * as) + b;
        __m256i b_lo, b_hi;
        k4_bsum32(a, &b_lo, &b_hi);
        const __m256i mi = k4_mins_dot(mn_lo, mn_hi, b_lo, b_hi);
        const __m256 dy = _mm256_set1_ps(a->d);
        __m256 r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dw, dy),
                                   _mm256_load_ps(acc[t]));
        _mm256_store_ps(acc[t], _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mi), _mm256_mul_ps(dmw, dy), r));
    }
}

/* Q4_K's 8 6-bit scales and mins of rows 8h..8h+7: byte j of each int32 lane of sc_lo/mn_lo is
 * scale/min j (j < 4), of sc_hi/mn_hi scale/min 4 + j */
ALWAYS void k4_unpack(const uint8_t *blk, int h, __m256i *sc_lo, __m256i *sc_hi, __m256i *mn_lo,
                      __m256i *mn_hi)
{
    const __m256i m6 = _mm256_set1_epi8(0x3F);
    const __m256i lo4 = _mm256_set1_epi32(0x0f0f0f0f), lo2 = _mm256_set1_epi32(0x03030303);
    const __m256i u0 = loadu(blk + 64 + 32 * h), u1 = loadu(blk + 128 + 32 * h);
    const __m256i u2 = loadu(blk + 192 + 32 * h);
    *sc_lo = _mm256_and_si256(u0, m6);
    *mn_lo = _mm256_and_si256(u1, m6);
    *sc_hi = _mm256_or_si256(_mm256_and_si256(u2, lo4),
        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), lo2), 4));
    *mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), lo4),
        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), lo2), 4));
}

/* Q4_K for one token (decode): both halves of each super-block together, so that each
 * activation broadcast serves 16 rows; sums in registers. */
DECODE_KERNEL void tile_q4_K_dec(int nb, const uint8_t *w, const uint8_t *act, float *y, int nr)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 2304;
        const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)act + b;
        prefetch_block(blk, 256);
        __m256i sc[2][2], isum[2], b_lo, b_hi;
        k4_bsum32(a, &b_lo, &b_hi);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {       /* the mins first: their registers free up */
            __m256i mn_lo, mn_hi;
            k4_unpack(blk, h, &sc[h][0], &sc[h][1], &mn_lo, &mn_hi);
            isum[h] = k4_mins_dot(mn_lo, mn_hi, b_lo, b_hi);
        }
        const __m256 dy = _mm256_set1_ps(a->d);
        const __m256 dm0 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 32))), dy);
        const __m256 dm1 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 48))), dy);
        acc0 = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(isum[0]), dm0, acc0);
        acc1 = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(isum[1]), dm1, acc1);
        isum[0] = isum[1] = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            const int8_t *yq = a->qs + 64 * p;
            const uint8_t *q = blk + 256 + 512 * p;
            __m256i s0[2], s1[2];
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                prefetch_line(q + 64 * c);
                const __m256i v0 = wload(q + 64 * c), v1 = wload(q + 64 * c + 32);
                const __m256i ylo = bcast4(yq + 4 * c), yhi = bcast4(yq + 32 + 4 * c);
                const __m256i pl0 = _mm256_maddubs_epi16(_mm256_and_si256(v0, m4), ylo);
                const __m256i ph0 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), yhi);
                const __m256i pl1 = _mm256_maddubs_epi16(_mm256_and_si256(v1, m4), ylo);
                const __m256i ph1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4), yhi);
                s0[0] = chain(c ? _mm256_add_epi16(s0[0], pl0) : pl0);
                s1[0] = chain(c ? _mm256_add_epi16(s1[0], ph0) : ph0);
                s0[1] = chain(c ? _mm256_add_epi16(s0[1], pl1) : pl1);
                s1[1] = chain(c ? _mm256_add_epi16(s1[1], ph1) : ph1);
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i src = sc[h][p / 2];
                const __m256i s_a = _mm256_shuffle_epi8(src, _mm256_load_si256((const __m256i *)k_pair[(2 * p) % 4]));
                const __m256i s_b = _mm256_shuffle_epi8(src, _mm256_load_si256((const __m256i *)k_pair[(2 * p + 1) % 4]));
                isum[h] = _mm256_add_epi32(isum[h], _mm256_add_epi32(_mm256_madd_epi16(s0[h], s_a),
                                                                     _mm256_madd_epi16(s1[h], s_b)));
            }
        }
        const __m256 d0 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), dy);
        const __m256 d1 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16))), dy);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[0]), d0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[1]), d1, acc1);
    }
    store_rows(y, acc0, nr);
    if (nr > 8)
        store_rows(y + 8, acc1, nr - 8);
}

/* Q6_K, rows 8h..8h+7 of one super-block: u = q + 32 in [0, 63]; two maddubs steps add up in
 * int16 (2 * 2 * 63 * 128 < 32768), then madd by the sub-block's (sc, sc) pair; the 32 comes
 * back out through the bsums */
ALWAYS void blk_q6_K_half(int NT, const uint8_t *blk, int b, int h, const uint8_t *act,
                          size_t as, float (*acc)[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256i sc[16], sp[8];
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const __m256i x = loadu(blk + 32 + 64 * k + 32 * h);    /* scales 4k..4k+3 */
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            sc[4 * k + i] = pair_i8(x, i);
        const __m256i ev = _mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8);
        const __m256i od = _mm256_srai_epi16(x, 8);
        sp[2 * k] = _mm256_blend_epi16(ev, _mm256_slli_epi32(od, 16), 0xAA);
        sp[2 * k + 1] = _mm256_blend_epi16(_mm256_srli_epi32(ev, 16), od, 0xAA);
    }
    __m256i isum[NT2];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)(act + t * as) + b;
        __m256i ci = _mm256_madd_epi16(sp[0], bcast4(a->bsums));
#pragma GCC unroll 7
        for (int k = 1; k < 8; k++)
            ci = _mm256_add_epi32(ci, _mm256_madd_epi16(sp[k], bcast4(a->bsums + 2 * k)));
        isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(ci, 5));
    }
    for (int un = 0; un < 8; un++) {
        const uint8_t *unit = blk + 288 + 384 * un + 32 * h;
        if (h == 0)
            prefetch_block(unit, 384);
        const __m256i h0 = loadu(unit), h1 = loadu(unit + 64);
        __m256i u[8];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m256i v = loadu(unit + 128 + 64 * c);
            u[c] = _mm256_and_si256(v, m4);
            u[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            __m256i hb = s < 4 ? h0 : h1;
            int k = s % 4;
            __m256i hs = k < 2 ? _mm256_slli_epi16(hb, 4 - 2 * k) :
                         k == 2 ? hb : _mm256_srli_epi16(hb, 2);
            u[s] = _mm256_or_si256(u[s], _mm256_and_si256(hs, m30));
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const int8_t *yq = ((const struct porta_block_q8_K *)(act + t * as) + b)->qs + 32 * un;
            __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(u[0], bcast4(yq)),
                                          _mm256_maddubs_epi16(u[1], bcast4(yq + 4)));
            __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(u[2], bcast4(yq + 8)),
                                          _mm256_maddubs_epi16(u[3], bcast4(yq + 12)));
            __m256i p2 = _mm256_add_epi16(_mm256_maddubs_epi16(u[4], bcast4(yq + 16)),
                                          _mm256_maddubs_epi16(u[5], bcast4(yq + 20)));
            __m256i p3 = _mm256_add_epi16(_mm256_maddubs_epi16(u[6], bcast4(yq + 24)),
                                          _mm256_maddubs_epi16(u[7], bcast4(yq + 28)));
            __m256i a0 = _mm256_add_epi32(_mm256_madd_epi16(p0, sc[2 * un]),
                                          _mm256_madd_epi16(p1, sc[2 * un]));
            __m256i a1 = _mm256_add_epi32(_mm256_madd_epi16(p2, sc[2 * un + 1]),
                                          _mm256_madd_epi16(p3, sc[2 * un + 1]));
            isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(a0, a1));
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)(act + t * as) + b;
        _mm256_store_ps(acc[t], _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]),
                                                _mm256_mul_ps(dw, _mm256_set1_ps(a->d)),
                                                _mm256_load_ps(acc[t])));
    }
}

/* Q6_K for one token (decode): both halves of each super-block together (see blk_q6_K_half
 * for the arithmetic), so that each activation broadcast serves 16 rows; sums in registers.
 * A unit is done as two passes, the low nibbles with the first high-bit chunk and the high
 * nibbles with the second, each pass's 4 sums (2 per half) in registers: all 8 at once did
 * not fit in the 16 ymm registers and went through the stack. The second pass re-reads the
 * nibble chunks from L1. */
DECODE_KERNEL void tile_q6_K_dec(int nb, const uint8_t *w, const uint8_t *act, float *y, int nr)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 3360;
        const struct porta_block_q8_K *a = (const struct porta_block_q8_K *)act + b;
#pragma GCC unroll 5
        for (int off = 0; off < 288; off += 64)
            prefetch_line(blk + off);
        __m256i isum[2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {       /* -32 * sum(sc * bsum): the offset of u = q + 32 */
            /* the scales widened to int16 rows of 4, rows 0..3 and 4..7: two partial sums
             * per row, one madd per 4 scales of 4 rows */
            __m256i lo = _mm256_setzero_si256(), hi = lo;
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const uint8_t *x = blk + 32 + 64 * k + 32 * h;          /* scales 4k..4k+3 */
                int64_t bs;
                memcpy(&bs, a->bsums + 4 * k, 8);
                const __m256i b4 = _mm256_set1_epi64x(bs);
                lo = _mm256_add_epi32(lo, _mm256_madd_epi16(
                         _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x)), b4));
                hi = _mm256_add_epi32(hi, _mm256_madd_epi16(
                         _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + 16))), b4));
            }
            /* rows 0, 1, 4, 5 | 2, 3, 6, 7 -> rows 0..7 */
            const __m256i ci = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
            isum[h] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(ci, 5));
        }
        for (int un = 0; un < 8; un++) {
            const uint8_t *unit = blk + 288 + 384 * un;
            const int8_t *yq = a->qs + 32 * un;
#pragma GCC unroll 2
            for (int cp = 0; cp < 2; cp++) {    /* steps 2cp, 2cp + 1 of both parts: part 0
                                                 * is the low nibbles + h0, part 1 the high
                                                 * nibbles + h1 */
                __m256i p[2][2];                /* [part][h] */
#pragma GCC unroll 2
                for (int c = 2 * cp; c < 2 * cp + 2; c++) {
                    const int sh = 4 - 2 * c;   /* step c: bits 2c, 2c+1 of the chunk -> 4, 5 */
#pragma GCC unroll 2
                    for (int h = 0; h < 2; h++) {
                        if (h == 0) {   /* the unit's 6 lines, spread over its steps */
                            prefetch_line(unit + 64 * c);
                            if (c >= 2)
                                prefetch_line(unit + 64 * c + 128);
                        }
                        /* one load of each half, shared by both parts (see tile_q4_K_dec) */
                        const __m256i v = wload(unit + 128 + 64 * c + 32 * h);
#pragma GCC unroll 2
                        for (int part = 0; part < 2; part++) {
                            const __m256i yv = bcast4(yq + 16 * part + 4 * c);
                            const __m256i hb = loadu(unit + 64 * part + 32 * h);
                            const __m256i bits = sh > 0 ? _mm256_slli_epi16(hb, sh) :
                                                 sh == 0 ? hb : _mm256_srli_epi16(hb, -sh);
                            const __m256i nib = part ? _mm256_srli_epi16(v, 4) : v;
                            const __m256i u = _mm256_or_si256(_mm256_and_si256(nib, m4),
                                                              _mm256_and_si256(bits, m30));
                            const __m256i pm = _mm256_maddubs_epi16(u, yv);
                            /* steps c and c + 1 share a sub-block's int16 sum (see
                             * blk_q6_K_half) */
                            p[part][h] = chain(c % 2 ? _mm256_add_epi16(p[part][h], pm) : pm);
                        }
                    }
                }
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    const __m256i x = loadu(blk + 32 + 64 * (un / 2) + 32 * h);
                    isum[h] = _mm256_add_epi32(isum[h], _mm256_add_epi32(
                        _mm256_madd_epi16(p[0][h], pair_i8(x, 2 * (un % 2))),
                        _mm256_madd_epi16(p[1][h], pair_i8(x, 2 * (un % 2) + 1))));
                }
            }
        }
        const __m256 dy = _mm256_set1_ps(a->d);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h]),
                _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h))), dy),
                acc[h]);
    }
    store_rows(y, acc[0], nr);
    if (nr > 8)
        store_rows(y + 8, acc[1], nr - 8);
}

/* One pass over the group's super-blocks, both halves of each (see tile32) */
#define TILEK(fn, blk_half, bytes, head, NTM)                                                    \
    ALWAYS void fn(int NT, int nb, const uint8_t *w, const uint8_t *act, size_t as, float *y,    \
                   size_t ys, int nr)                                                            \
    {                                                                                            \
        const int nh = nr > 8 ? 2 : 1;                                                           \
        float acc[2][NTM][8] __attribute__((aligned(32)));                                       \
        memset(acc, 0, sizeof acc);                                                              \
        for (int b = 0; b < nb; b++) {                                                           \
            const uint8_t *blk = w + (size_t)b * bytes;                                          \
            prefetch_block(blk, head);       /* the rest is prefetched as it is read */          \
            for (int h = 0; h < nh; h++)                                                         \
                blk_half(NT, blk, b, h, act, as, acc[h]);                                        \
        }                                                                                        \
        for (int h = 0; h < nh; h++)                                                             \
            for (int t = 0; t < NT; t++)                                                         \
                store_rows(y + (size_t)t * ys + 8 * h, _mm256_load_ps(acc[h][t]), nr - 8 * h);   \
    }

TILEK(tile_q4_K, blk_q4_K_half, 2304, 256, NTK2)
TILEK(tile_q6_K, blk_q6_K_half, 3360, 288, NT2)

#define GEMMK(fn, tile, NTM)                                                                     \
    static void fn(int64_t n_cols, const void *w, const void *act, size_t as, int n_tok,          \
                   float *y, size_t ys, int n_rows)                                              \
    {                                                                                            \
        const int nb = (int)(n_cols / PORTA_QK_K);                                               \
        const uint8_t *a = act;                                                                  \
        int t = 0;                                                                               \
        for (; t + NTM <= n_tok; t += NTM)                                                       \
            tile(NTM, nb, w, a + t * as, as, y + t * ys, ys, n_rows);                            \
        switch (n_tok - t) {                                                                     \
        case 1: DEC1(tile, nb, w, a + t * as, as, y + t * ys, ys, n_rows); break;               \
        case 2: tile(2 < NTM ? 2 : 1, nb, w, a + t * as, as, y + t * ys, ys, n_rows); break;     \
        case 3: tile(3 < NTM ? 3 : 1, nb, w, a + t * as, as, y + t * ys, ys, n_rows); break;     \
        default: break;                                                                          \
        }                                                                                        \
    }

/* one token: the decode kernel where the type has one */
#define DEC1(tile, nb, w, a, as, y, ys, nr)                                                     \
    do {                                                                                         \
        if (tile == tile_q4_K)                                                                   \
            tile_q4_K_dec(nb, w, a, y, nr);                                                      \
        else if (tile == tile_q6_K)                                                              \
            tile_q6_K_dec(nb, w, a, y, nr);                                                      \
        else                                                                                     \
            tile(1, nb, w, a, as, y, ys, nr);                                                    \
    } while (0)

GEMMK(gemm_q4_K, tile_q4_K, NTK2)
GEMMK(gemm_q6_K, tile_q6_K, NT2)

/* Activation rows of the 32-block tile kernels: quantize_q8_0's values (Q8_1's for Q4_1) and
 * per block d, -c * sum(q), s. */
ALWAYS void act32_row(const float *x, void *act, int64_t n, int c, bool with_s)
{
    int8_t *qs = act;
    struct porta_act32 *m = (struct porta_act32 *)((uint8_t *)act + n);
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = amax32(x);
        float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q0 = round_i8x8(x, vid), q1 = round_i8x8(x + 8, vid);
        __m256i q2 = round_i8x8(x + 16, vid), q3 = round_i8x8(x + 24, vid);
        int sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3)));
        _mm256_storeu_si256((__m256i *)(qs + 32 * i), pack32(q0, q1, q2, q3));
        m[i].d = f16(to_f16(d));
        m[i].corr = -c * sum;
        m[i].s = with_s ? f16(to_f16((float)sum * d)) : 0.0f;
    }
}

static void act_q4_0(const float *x, void *a, int64_t n) { act32_row(x, a, n, 8, false); }
static void act_q4_1(const float *x, void *a, int64_t n) { act32_row(x, a, n, 0, true); }
static void act_q5_0(const float *x, void *a, int64_t n) { act32_row(x, a, n, 16, false); }
static void act_q8_0(const float *x, void *a, int64_t n) { act32_row(x, a, n, 0, false); }

/* ---- fused small ops and attention ------------------------------------------------------------ */

/* e^x on 8 lanes: Cephes' expf polynomial on x - n ln2, times 2^n built in the exponent bits
 * (x clamped to the normal float range first); ~1 ulp */
static inline __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365f)), _mm256_set1_ps(88.7228f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* n in [-126, 128]: 2^n as (n + 127) << 23, split in two factors so that n = 128 and
     * n = -126 stay finite / normal */
    __m256i e = _mm256_cvtps_epi32(n);
    __m256i e1 = _mm256_srai_epi32(e, 1), e2 = _mm256_sub_epi32(e, e1);
    __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e1, _mm256_set1_epi32(127)), 23));
    __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

static void swiglu(float *y, const float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), a));
        __m256 s = _mm256_div_ps(a, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    __m256d s = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    double ss = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++)
        ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    const __m256 sc = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), sc);
        if (w)
            v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++)
        y[i] = x[i] * scale * (w ? w[i] : 1.0f);
}

/* n floats of a cache row (F16 or F32) into dst, zero-padded to a multiple of 8 */
static inline void row_to_f32(float *dst, const void *src, bool f16, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_store_ps(dst + i, f16 ? load_f16((const porta_f16 *)src + i)
                                     : _mm256_loadu_ps((const float *)src + i));
    for (; i < n; i++)
        dst[i] = f16 ? porta_f16_to_f32(((const porta_f16 *)src)[i]) : ((const float *)src)[i];
    for (; i & 7; i++)
        dst[i] = 0;
}

/* 8 sums of 8 lanes each -> one vector [sum(v0), ..., sum(v7)] */
static inline __m256 hsum8x8(const __m256 v[8])
{
    const __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* scores s[r] = scale * q . k_r for the 8 rows r of kf (dk8 floats apart, zero-padded to a
 * multiple of 8; rows past the valid ones are zero too) */
static inline void qk8(float *s, const float *q, const float *kf, int dk, int dk8, float scale)
{
    __m256 acc[8];
    for (int r = 0; r < 8; r++)
        acc[r] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= dk; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++)
            acc[r] = _mm256_fmadd_ps(qv, _mm256_load_ps(kf + (size_t)r * dk8 + i), acc[r]);
    }
    if (i < dk) {                   /* the last dk % 8 elements: kf is zero-padded */
        float qt[8] __attribute__((aligned(32))) = { 0 };
        memcpy(qt, q + i, sizeof(float) * (size_t)(dk - i));
        const __m256 qv = _mm256_load_ps(qt);
        for (int r = 0; r < 8; r++)
            acc[r] = _mm256_fmadd_ps(qv, _mm256_load_ps(kf + (size_t)r * dk8 + i), acc[r]);
    }
    _mm256_storeu_ps(s, _mm256_mul_ps(hsum8x8(acc), _mm256_set1_ps(scale)));
}

/* o[0, dv) += sum over the nr rows r of vf (dv8 floats apart) of w[r] * v_r; the output stays
 * in registers across the rows, 64 floats at a time */
static inline void pv_rows(float *o, const float *w, const float *vf, int nr, int dv, int dv8)
{
    int i = 0;
    for (; i + 64 <= dv; i += 64) {
        __m256 acc[8];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            acc[k] = _mm256_loadu_ps(o + i + 8 * k);
        for (int r = 0; r < nr; r++) {
            const __m256 vw = _mm256_set1_ps(w[r]);
            const float *v = vf + (size_t)r * dv8 + i;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                acc[k] = _mm256_fmadd_ps(vw, _mm256_load_ps(v + 8 * k), acc[k]);
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            _mm256_storeu_ps(o + i + 8 * k, acc[k]);
    }
    for (; i + 8 <= dv; i += 8) {
        __m256 acc = _mm256_loadu_ps(o + i);
        for (int r = 0; r < nr; r++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(w[r]), _mm256_load_ps(vf + (size_t)r * dv8 + i), acc);
        _mm256_storeu_ps(o + i, acc);
    }
    for (; i < dv; i++)
        for (int r = 0; r < nr; r++)
            o[i] += w[r] * vf[(size_t)r * dv8 + i];
}

/* Flash-attention style over chunks of PORTA_ATTN_CHUNK positions: K and V rows converted to
 * float PORTA_ATTN_ROWS at a time (once for all n_q heads), scores 8 rows per pass with the
 * 8 dot products reduced together, outputs accumulated in registers over the rows. */
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
        for (int j0 = 0; j0 < n; j0 += PORTA_ATTN_ROWS) {
            int nr = n - j0 < PORTA_ATTN_ROWS ? n - j0 : PORTA_ATTN_ROWS;
            for (int r = 0; r < nr; r++)
                row_to_f32(kf + (size_t)r * dk16,
                           (const uint8_t *)a->k + (size_t)(p0 + j0 + r) * a->k_stride * esz, a->f16, dk);
            for (int r = nr; r < ((nr + 7) & ~7); r++)
                memset(kf + (size_t)r * dk16, 0, sizeof(float) * (size_t)dk16);
            for (int g = 0; g < G; g++)
                for (int r = 0; r < nr; r += 8)     /* stays inside the chunk: j0 + r + 8 <= 64 */
                    qk8(sc + g * PORTA_ATTN_CHUNK + j0 + r, a->q + (size_t)g * dk,
                        kf + (size_t)r * dk16, dk, dk16, a->scale);
        }
        for (int g = 0; g < G; g++) {
            float *s = sc + g * PORTA_ATTN_CHUNK, m_new = mx[g];
            for (int j = 0; j < n; j++)
                m_new = s[j] > m_new ? s[j] : m_new;
            __m256 vm = _mm256_set1_ps(m_new), sum = _mm256_setzero_ps();
            int j = 0;
            for (; j + 8 <= n; j += 8) {
                __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
                _mm256_storeu_ps(s + j, e);
                sum = _mm256_add_ps(sum, e);
            }
            float tot = hsum_ps(sum);
            for (; j < n; j++) {
                s[j] = expf(s[j] - m_new);
                tot += s[j];
            }
            float corr = mx[g] == -INFINITY ? 0.0f : expf(mx[g] - m_new);
            ls[g] = ls[g] * corr + tot;
            mx[g] = m_new;
            if (corr != 1.0f)
                for (int i = 0; i < dv; i++)
                    a->o[(size_t)g * dv + i] *= corr;
        }
        for (int j0 = 0; j0 < n; j0 += PORTA_ATTN_ROWS) {
            int nr = n - j0 < PORTA_ATTN_ROWS ? n - j0 : PORTA_ATTN_ROWS;
            for (int r = 0; r < nr; r++)
                row_to_f32(vf + (size_t)r * dv16,
                           (const uint8_t *)a->v + (size_t)(p0 + j0 + r) * a->v_stride * esz, a->f16, dv);
            for (int g = 0; g < G; g++)
                pv_rows(a->o + (size_t)g * dv, sc + g * PORTA_ATTN_CHUNK + j0, vf, nr, dv, dv16);
        }
    }
    for (int g = 0; g < G; g++) {
        float inv = 1.0f / ls[g];
        for (int i = 0; i < dv; i++)
            a->o[(size_t)g * dv + i] *= inv;
    }
}

static const struct porta_cpu_kernels avx2_kernels = {
    .name = "avx2",
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

/* The AVX2 table; entries left NULL are filled from the scalar table by cpu.c. Does not check
 * the CPU: call only when porta_cpu_has("avx2"). */
const struct porta_cpu_kernels *porta_cpu_kernels_avx2(void)
{
    return &avx2_kernels;
}

#else /* built without the AVX2 flags */

const struct porta_cpu_kernels *porta_cpu_kernels_avx2(void)
{
    return NULL;
}

#endif
