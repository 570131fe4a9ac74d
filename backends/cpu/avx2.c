/* avx2.c - the CPU kernel table for AVX2 + FMA + F16C: the dot product of every weight type
 * with its activation format, and the activation quantizers, bit-identical to core/quant.c.
 * Built with -mavx2 -mfma -mf16c; the rest of porta reaches it only through the table. */
#include "kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static inline float f16(porta_f16 h)
{
    return _cvtsh_ss(h);
}

/* Keeps the compiler from fusing a multiply into a following add (gcc contracts a*b+c into an
 * FMA by default); the quantizers must round the product exactly as the scalar code does. */
static inline __m256 opaque(__m256 v)
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
        b[i].d = porta_f32_to_f16(d);
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
        b[i].d = porta_f32_to_f16(d);
        _mm256_storeu_si256((__m256i *)b[i].qs, pack32(q0, q1, q2, q3));
        b[i].s = porta_f32_to_f16((float)sum * d);
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
