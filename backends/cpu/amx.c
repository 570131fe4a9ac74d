/* amx.c - AMX int8 tile GEMM for prefill in the AVX-512 set (see amx.h): tokens as the A tile,
 * a repacked group's 64-byte chunks (16 rows x 4 bytes) as the B tile in AMX's VNNI layout, one
 * TDPBSSD / TDPBSUD per scale block into a 16 x 16 int32 tile; the scales meet the stored int32
 * products in AVX-512 float. Integer products are exact: results differ from the VNNI kernels
 * only in float summation order. Built with -mamx-tile -mamx-int8 and the AVX-512 flags. */
#include "amx.h"
#include "repack.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && \
    defined(__AVX512BW__) && defined(__F16C__) && defined(__linux__)
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define XCR0_TILE (3u << 17)          /* XTILECFG, XTILEDATA */

static bool amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static atomic_bool amx_on;

static void amx_probe(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 0xD || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    if (!(d & (1u << 24)) || !(d & (1u << 25)))     /* AMX-TILE, AMX-INT8 */
        return;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))   /* OSXSAVE */
        return;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & XCR0_TILE) != XCR0_TILE)
        return;
    /* Linux hands out the 8 KB tile state only on request; a kernel before 5.16 has no such
     * request and no AMX either */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return;
    amx_ok = true;
}

bool porta_amx_supported(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

bool porta_amx_use(bool on)
{
    bool v = on && porta_amx_supported();
    atomic_store_explicit(&amx_on, v, memory_order_relaxed);
    return v;
}

bool porta_amx_active(void)
{
    return atomic_load_explicit(&amx_on, memory_order_relaxed);
}

/* ---- tile configuration ---------------------------------------------------------------------
 * Two sets of (C, A, B) so that one block's product and store overlap the next one's:
 * tmm0/tmm3 C (m tokens x 16 int32), tmm1/tmm4 A (m tokens x kb bytes), tmm2/tmm5 B (kb / 4
 * steps x 16 rows x 4 bytes). */
struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* the configuration loaded on this thread (rows | kb << 8): the tile state, configuration
 * included, is the thread's and survives context switches, and only this file changes it */
static __thread int tls_cfg = -1;

static void configure(int m, int kb)
{
    if (tls_cfg == (m | kb << 8))
        return;
    tls_cfg = m | kb << 8;
    struct tilecfg c __attribute__((aligned(64)));
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int s = 0; s < 2; s++) {
        c.rows[3 * s] = (uint8_t)m;
        c.colsb[3 * s] = 64;
        c.rows[3 * s + 1] = (uint8_t)m;
        c.colsb[3 * s + 1] = (uint16_t)kb;
        c.rows[3 * s + 2] = (uint8_t)(kb / 4);
        c.colsb[3 * s + 2] = 64;
    }
    /* not _tile_loadconfig: gcc 12's asm for it names only 8 bytes of the config as read, so
     * the stores of colsb and rows above may be dropped */
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

#define ALWAYS static inline __attribute__((always_inline))
#ifndef AMX_PF_HINT
#define AMX_PF_HINT _MM_HINT_T0
#endif
#define MAX_SUB 16                    /* scale blocks per pass: 8 x 32 (32-blocks, Q4_K), 16 x 16 */

/* One pass's weights, unpacked to bytes in B layout (sub-block j at 512 * j, or 256 * j for
 * Q6_K), and the int32 products of two token tiles (sub-block j at 1024 * j: token t at 64 t):
 * tile i's products are issued before tile i - 1's float work. Measured on Sapphire Rapids, a
 * 16 x 16 block product costs about what its float work does (a TDPB* with K = 32 takes as
 * long as one with K = 64, and the 1 KB tile store about as long again), and the two overlap
 * little: issuing the products block by block between the float steps, or two tiles ahead,
 * was slower or no faster. */
struct scratch {
    int8_t w[MAX_SUB * 512] __attribute__((aligned(64)));
    int32_t c[2][MAX_SUB * 256] __attribute__((aligned(64)));   /* two token tiles in flight */
};

/* The products of one token tile (m rows of A from act, as apart) with n_sub B tiles: A of
 * sub-block j at a + j * a_step, B at b + j * b_step (64 bytes a step). SIGNED: weights signed
 * (TDPBSSD), else unsigned (TDPBSUD). */
ALWAYS void products(bool SIGNED, int n_sub, const uint8_t *a, size_t a_step, size_t as,
                     const int8_t *b, size_t b_step, int32_t *c)
{
    int j = 0;
    for (; j + 2 <= n_sub; j += 2) {
        _tile_loadd(1, a + j * a_step, (long)as);
        _tile_loadd(2, b + j * b_step, 64);
        _tile_zero(0);
        _tile_loadd(4, a + (j + 1) * a_step, (long)as);
        _tile_loadd(5, b + (j + 1) * b_step, 64);
        _tile_zero(3);
        if (SIGNED) {
            _tile_dpbssd(0, 1, 2);
            _tile_dpbssd(3, 4, 5);
        } else {
            _tile_dpbsud(0, 1, 2);
            _tile_dpbsud(3, 4, 5);
        }
        _tile_stored(0, c + 256 * j, 64);
        _tile_stored(3, c + 256 * (j + 1), 64);
    }
    if (j < n_sub) {
        _tile_loadd(1, a + j * a_step, (long)as);
        _tile_loadd(2, b + j * b_step, 64);
        _tile_zero(0);
        if (SIGNED)
            _tile_dpbssd(0, 1, 2);
        else
            _tile_dpbsud(0, 1, 2);
        _tile_stored(0, c + 256 * j, 64);
    }
}

/* the next pass's weights, fetched while this pass runs (a pass is short next to a memory
 * latency per line; the hardware prefetcher alone left each pass waiting for its first lines) */
ALWAYS void prefetch_pass(const uint8_t *p, size_t n)
{
    for (size_t off = 0; off < n; off += 64)
        _mm_prefetch((const char *)p + off, AMX_PF_HINT);
}

ALWAYS __m512 cvt_row(const int32_t *c)
{
    return _mm512_cvtepi32_ps(_mm512_load_si512(c));
}

/* y row of token t (16 floats, masked) += v; first: y = v */
ALWAYS void add_y(float *y, __mmask16 mask, bool first, __m512 v)
{
    if (!first)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, y));
    _mm512_mask_storeu_ps(y, mask, v);
}

/* ---- 32-blocks: Q4_0 (nibbles - 8), Q8_0 (signed bytes), both against act32 rows ---------- */

/* block j of a pass: 8 steps x 64 bytes, signed */
ALWAYS void unpack_q4_0(const uint8_t *blk, int8_t *dst)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512i v = _mm512_loadu_si512(blk + 32 + 64 * c);
        _mm512_store_si512(dst + 64 * c, _mm512_sub_epi8(_mm512_and_si512(v, m4), eight));
        _mm512_store_si512(dst + 64 * (c + 4),
                           _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), eight));
    }
}

/* y rows of m tokens (+)= sum over the pass's n_sub blocks of products * d_w * d_x; sc: the
 * first token's porta_act32 of the pass's first block (the next token's as bytes on) */
ALWAYS void scale32(int n_sub, const int32_t *c, const __m512 dw[8], const uint8_t *sc, size_t as,
                    int m, float *y, size_t ys, __mmask16 mask, bool first)
{
    for (int t = 0; t < m; t++, sc += as, y += ys) {
        const struct porta_act32 *d = (const struct porta_act32 *)sc;
        __m512 v = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int j = 0; j < n_sub; j++)
            v = _mm512_fmadd_ps(cvt_row(c + 256 * j + 16 * t),
                                _mm512_mul_ps(dw[j], _mm512_set1_ps(d[j].d)), v);
        add_y(y, mask, first, v);
    }
}

ALWAYS void gemm32(int type, int64_t n_cols, const uint8_t *w, const uint8_t *act, size_t as,
                   int n_tok, float *y, size_t ys, __mmask16 mask, struct scratch *s)
{
    const size_t bb = type == PORTA_Q4_0 ? 288 : 544;
    const int nb = (int)(n_cols / 32);
    for (int b0 = 0; b0 < nb; b0 += 8) {
        const int n_sub = nb - b0 < 8 ? nb - b0 : 8;
        const uint8_t *blk0 = w + (size_t)b0 * bb;
        if (b0 + 8 < nb)
            prefetch_pass(blk0 + 8 * bb, (size_t)(nb - b0 - 8 < 8 ? nb - b0 - 8 : 8) * bb);
        __m512 dw[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            dw[j] = j < n_sub ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk0 + j * bb)))
                              : _mm512_setzero_ps();
        const int8_t *bsrc;
        size_t bstep;
        if (type == PORTA_Q4_0) {
            for (int j = 0; j < n_sub; j++)
                unpack_q4_0(blk0 + j * bb, s->w + 512 * j);
            bsrc = s->w;
            bstep = 512;
        } else {
            bsrc = (const int8_t *)blk0 + 32;
            bstep = bb;
        }
        const int n_tt = (n_tok + 15) / 16;
        for (int i = 0; i <= n_tt; i++) {
            if (i < n_tt) {
                const int m = n_tok - 16 * i < 16 ? n_tok - 16 * i : 16;
                configure(m, 32);
                products(true, n_sub, act + (size_t)(16 * i) * as + 32 * b0, 32, as, bsrc, bstep,
                         s->c[i & 1]);
            }
            if (i == 0)
                continue;
            const int t0 = 16 * (i - 1), m = n_tok - t0 < 16 ? n_tok - t0 : 16;
            const int32_t *c = s->c[(i - 1) & 1];
            const uint8_t *a = act + (size_t)t0 * as;
            if (n_sub == 8)
                scale32(8, c, dw, a + n_cols + sizeof(struct porta_act32) * b0, as, m,
                        y + (size_t)t0 * ys, ys, mask, b0 == 0);
            else
                scale32(n_sub, c, dw, a + n_cols + sizeof(struct porta_act32) * b0, as, m,
                        y + (size_t)t0 * ys, ys, mask, b0 == 0);
        }
    }
}

/* ---- Q4_K: 8 sub-blocks of 32 unsigned nibbles; 6-bit scales and mins per sub-block --------- */

ALWAYS void gemm_q4_K(int64_t n_cols, const uint8_t *w, const uint8_t *act, size_t as, int n_tok,
                      float *y, size_t ys, __mmask16 mask, struct scratch *s)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F);
    const __m512i lo4 = _mm512_set1_epi32(0x0f0f0f0f), lo2 = _mm512_set1_epi32(0x03030303);
    const __m512i low8 = _mm512_set1_epi32(0xFF);
    const int nb = (int)(n_cols / PORTA_QK_K);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 2304;
        if (b + 1 < nb)
            prefetch_pass(blk + 2304, 2304);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 32)));
        const __m512i u0 = _mm512_loadu_si512(blk + 64), u1 = _mm512_loadu_si512(blk + 128),
                      u2 = _mm512_loadu_si512(blk + 192);
        const __m512i sc_lo = _mm512_and_si512(u0, m6), mn_lo = _mm512_and_si512(u1, m6);
        const __m512i sc_hi = _mm512_ternarylogic_epi32(u2, lo4,
            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), lo2), 4), 0xEA);
        const __m512i mn_hi = _mm512_ternarylogic_epi32(_mm512_srli_epi32(u2, 4), lo4,
            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), lo2), 4), 0xEA);
        /* fsc[j] = d * scale j per row; mm[j] = (min j, min j) as int16 pairs for vpdpwssd */
        __m512 fsc[8];
        __m512i mm[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m512i sj = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? sc_lo : sc_hi, 8 * (j % 4)), low8);
            __m512i mj = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? mn_lo : mn_hi, 8 * (j % 4)), low8);
            fsc[j] = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(sj));
            mm[j] = _mm512_or_si512(mj, _mm512_slli_epi32(mj, 16));
        }
        for (int p = 0; p < 4; p++)
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                __m512i v = _mm512_loadu_si512(blk + 256 + 64 * (8 * p + c));
                _mm512_store_si512(s->w + 1024 * p + 64 * c, _mm512_and_si512(v, m4));
                _mm512_store_si512(s->w + 1024 * p + 512 + 64 * c,
                                   _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            }
        const int n_tt = (n_tok + 15) / 16;
        for (int i = 0; i <= n_tt; i++) {
            if (i < n_tt) {
                const int m = n_tok - 16 * i < 16 ? n_tok - 16 * i : 16;
                configure(m, 32);
                products(false, 8, act + (size_t)(16 * i) * as + (size_t)b * sizeof(struct porta_block_q8_K) +
                         offsetof(struct porta_block_q8_K, qs), 32, as, s->w, 512, s->c[i & 1]);
            }
            if (i == 0)
                continue;
            const int t0 = 16 * (i - 1), m = n_tok - t0 < 16 ? n_tok - t0 : 16;
            const int32_t *c = s->c[(i - 1) & 1];
            const uint8_t *a = act + (size_t)t0 * as;
            for (int t = 0; t < m; t++) {
                const struct porta_block_q8_K *q = (const struct porta_block_q8_K *)(a + (size_t)t * as) + b;
                __m512 v0 = _mm512_setzero_ps(), v1 = v0;
                __m512i mi = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int j = 0; j < 8; j += 2) {
                    v0 = _mm512_fmadd_ps(cvt_row(c + 256 * j + 16 * t), fsc[j], v0);
                    v1 = _mm512_fmadd_ps(cvt_row(c + 256 * (j + 1) + 16 * t), fsc[j + 1], v1);
                }
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    int32_t pr;
                    memcpy(&pr, q->bsums + 2 * j, 4);
                    mi = _mm512_dpwssd_epi32(mi, mm[j], _mm512_set1_epi32(pr));
                }
                __m512 v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mi), dmw, _mm512_add_ps(v0, v1));
                add_y(y + (size_t)(t0 + t) * ys, mask, b == 0, _mm512_mul_ps(v, _mm512_set1_ps(q->d)));
            }
        }
    }
}

/* ---- Q6_K: 16 sub-blocks of 16 signed 6-bit values (q - 32), int8 scales ------------------- */

ALWAYS void gemm_q6_K(int64_t n_cols, const uint8_t *w, const uint8_t *act, size_t as, int n_tok,
                      float *y, size_t ys, __mmask16 mask, struct scratch *s)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i k32 = _mm512_set1_epi8(32);
    const int nb = (int)(n_cols / PORTA_QK_K);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = w + (size_t)b * 3360;
        if (b + 1 < nb)
            prefetch_pass(blk + 3360, 3360);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        __m512 fsc[16];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m512i x = _mm512_loadu_si512(blk + 32 + 64 * k);
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                fsc[4 * k + i] = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(
                    _mm512_srai_epi32(_mm512_slli_epi32(x, 24 - 8 * i), 24)));
        }
        for (int un = 0; un < 8; un++) {
            const uint8_t *unit = blk + 288 + 384 * un;
            const __m512i h0 = _mm512_loadu_si512(unit), h1 = _mm512_loadu_si512(unit + 64);
#pragma GCC unroll 8
            for (int st = 0; st < 8; st++) {
                __m512i v = _mm512_loadu_si512(unit + 128 + 64 * (st % 4));
                __m512i u = st < 4 ? _mm512_and_si512(v, m4) :
                                     _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                __m512i h = st < 4 ? h0 : h1;
                int k = st % 4;
                __m512i hs = k < 2 ? _mm512_slli_epi16(h, 4 - 2 * k) :
                             k == 2 ? h : _mm512_srli_epi16(h, 2);
                u = _mm512_ternarylogic_epi32(u, hs, m30, 0xF8);   /* u | (hs & 0x30) */
                _mm512_store_si512(s->w + 512 * un + 64 * st, _mm512_sub_epi8(u, k32));
            }
        }
        const int n_tt = (n_tok + 15) / 16;
        for (int i = 0; i <= n_tt; i++) {
            if (i < n_tt) {
                const int m = n_tok - 16 * i < 16 ? n_tok - 16 * i : 16;
                configure(m, 16);
                products(true, 16, act + (size_t)(16 * i) * as + (size_t)b * sizeof(struct porta_block_q8_K) +
                         offsetof(struct porta_block_q8_K, qs), 16, as, s->w, 256, s->c[i & 1]);
            }
            if (i == 0)
                continue;
            const int t0 = 16 * (i - 1), m = n_tok - t0 < 16 ? n_tok - t0 : 16;
            const int32_t *c = s->c[(i - 1) & 1];
            const uint8_t *a = act + (size_t)t0 * as;
            for (int t = 0; t < m; t++) {
                const struct porta_block_q8_K *q = (const struct porta_block_q8_K *)(a + (size_t)t * as) + b;
                __m512 v0 = _mm512_setzero_ps(), v1 = v0;
#pragma GCC unroll 16
                for (int j = 0; j < 16; j += 2) {
                    v0 = _mm512_fmadd_ps(cvt_row(c + 256 * j + 16 * t), fsc[j], v0);
                    v1 = _mm512_fmadd_ps(cvt_row(c + 256 * (j + 1) + 16 * t), fsc[j + 1], v1);
                }
                add_y(y + (size_t)(t0 + t) * ys, mask, b == 0,
                      _mm512_mul_ps(_mm512_add_ps(v0, v1), _mm512_set1_ps(q->d)));
            }
        }
    }
}

/* Token counts where the AMX kernels win (measured on Sapphire Rapids against the VNNI tiles,
 * 1536 x 1536, one thread): a full 16-token tile 1.1-1.6x, 12 tokens 1.0-1.2x, 8 tokens
 * 0.7-1.0x; so AMX takes the 16-token tiles and a last tile of 12 or more, and the VNNI kernel
 * the rest (it keeps a block in registers for up to 8 tokens). */
#ifndef AMX_MIN_TAIL
#define AMX_MIN_TAIL 12
#endif

/* Per-thread scratch, made on a thread's first AMX call and freed when the thread exits. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_key_ok;

static void scratch_key_make(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, free) == 0;
}

static struct scratch *thread_scratch(void)
{
    pthread_once(&scratch_once, scratch_key_make);
    if (!scratch_key_ok)
        return NULL;
    struct scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = aligned_alloc(64, sizeof *s);
        if (s && pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

int porta_amx_gemm(enum porta_dtype type, int64_t n_cols, const void *group, const void *act,
                   size_t act_stride, int n_tok, float *y, size_t y_stride, int n_rows)
{
    int n = n_tok % 16 >= AMX_MIN_TAIL ? n_tok : n_tok & ~15;
    if (n == 0 || !porta_amx_active())
        return 0;
    if (type != PORTA_Q4_0 && type != PORTA_Q8_0 && type != PORTA_Q4_K && type != PORTA_Q6_K)
        return 0;
    struct scratch *s = thread_scratch();
    if (!s)
        return 0;       /* no memory: the VNNI kernel does it all */
    const __mmask16 mask = n_rows >= 16 ? 0xFFFF : (__mmask16)((1u << n_rows) - 1);
    switch (type) {
    case PORTA_Q4_0: gemm32(PORTA_Q4_0, n_cols, group, act, act_stride, n, y, y_stride, mask, s); break;
    case PORTA_Q8_0: gemm32(PORTA_Q8_0, n_cols, group, act, act_stride, n, y, y_stride, mask, s); break;
    case PORTA_Q4_K: gemm_q4_K(n_cols, group, act, act_stride, n, y, y_stride, mask, s); break;
    case PORTA_Q6_K: gemm_q6_K(n_cols, group, act, act_stride, n, y, y_stride, mask, s); break;
    default: return 0;
    }
    return n;
}

#else /* no AMX in this build */

bool porta_amx_supported(void)
{
    return false;
}

bool porta_amx_use(bool on)
{
    (void)on;
    return false;
}

bool porta_amx_active(void)
{
    return false;
}

int porta_amx_gemm(enum porta_dtype type, int64_t n_cols, const void *group, const void *act,
                   size_t act_stride, int n_tok, float *y, size_t y_stride, int n_rows)
{
    (void)type, (void)n_cols, (void)group, (void)act, (void)act_stride, (void)n_tok, (void)y;
    (void)y_stride, (void)n_rows;
    return 0;
}

#endif
