/* test_quant.c - the block formats: hand-built blocks with known values for every layout,
 * half-precision edge cases, quantize/dequantize round trips within a stated error per type,
 * dot products against double-precision references, and real GGUF files (bit-exact dequant,
 * byte-exact requantization, and error against the F16 source of the same model). */
#include "testutil.h"

#include "gguf.h"
#include "quant.h"

#include <float.h>
#include <limits.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static const int weight_types[] = {
    PORTA_F32, PORTA_F16, PORTA_BF16, PORTA_Q4_0, PORTA_Q4_1, PORTA_Q5_0, PORTA_Q5_1,
    PORTA_Q8_0, PORTA_Q2_K, PORTA_Q3_K, PORTA_Q4_K, PORTA_Q5_K, PORTA_Q6_K,
};
#define N_WEIGHT_TYPES (int)(sizeof weight_types / sizeof weight_types[0])

/* Round-trip bound per type: RMS(dequant(quant(x)) - x) / RMS(x), for well-behaved data
 * (uniform, gaussian, positive, tiny, huge, mixed blocks) and for heavy tails (1/64 outliers
 * at 12 sigma, gaussian cubed). Fixed seeds; measured worst case in the comments, bounds ~15%
 * above. A wrong layout gives ~1.0 or more; a wrong scale rounding 10-50% more error. */
static double rt_bound(int type, bool tails)
{
    switch (type) {
    case PORTA_F32:  return 0;
    case PORTA_F16:  return 3e-4;                   /* 0.00020 (2^-11 rounding) */
    case PORTA_BF16: return 2.5e-3;                 /* 0.0018 (2^-8) */
    case PORTA_Q8_0: return tails ? 0.012 : 0.0065; /* 0.0097 / 0.0054 */
    case PORTA_Q6_K: return tails ? 0.033 : 0.021;  /* 0.0284 / 0.0181 */
    case PORTA_Q5_0: return tails ? 0.09 : 0.05;    /* 0.0788 / 0.0433 */
    case PORTA_Q5_1: return tails ? 0.065 : 0.045;  /* 0.0547 / 0.0388 */
    case PORTA_Q5_K: return tails ? 0.06 : 0.042;   /* 0.0518 / 0.0366 */
    case PORTA_Q4_0: return tails ? 0.18 : 0.10;    /* 0.1526 / 0.0879 */
    case PORTA_Q4_1: return tails ? 0.14 : 0.09;    /* 0.1222 / 0.0799 */
    case PORTA_Q4_K: return tails ? 0.12 : 0.082;   /* 0.1020 / 0.0722 */
    case PORTA_Q3_K: return tails ? 0.23 : 0.17;    /* 0.2026 / 0.1539 */
    case PORTA_Q2_K: return tails ? 0.42 : 0.34;    /* 0.3758 / 0.3056 */
    default:         return 0;
    }
}

static float gauss(unsigned long long *st)
{
    float u1 = 0.5f * (tu_randf(st) + 1.0f), u2 = tu_randf(st);
    if (u1 < 1e-7f)
        u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(3.14159265f * u2);
}

enum { D_UNIFORM, D_GAUSS, D_OUTLIERS, D_HEAVY, D_POSITIVE, D_SMALL, D_LARGE, D_MIXED, D_COUNT };
static const char *dist_name[D_COUNT] = {
    "uniform", "gauss", "outliers", "heavy", "positive", "small", "large", "mixed",
};

/* Fills x[0..n) (n a multiple of 256) from one of the test distributions. */
static void gen(int dist, float *x, int n, unsigned long long seed)
{
    unsigned long long st = seed * 0x9E3779B97F4A7C15ULL + 7;
    for (int i = 0; i < n; i++) {
        float g = gauss(&st);
        switch (dist) {
        case D_UNIFORM:  x[i] = tu_randf(&st); break;
        case D_GAUSS:    x[i] = g; break;
        case D_OUTLIERS: x[i] = (tu_rng_next(&st) % 64 == 0) ? 12 * g : g; break;
        case D_HEAVY:    x[i] = g * g * g; break;
        case D_POSITIVE: x[i] = 0.5f * (tu_randf(&st) + 1.0f); break;
        case D_SMALL:    x[i] = 1e-2f * g; break;
        case D_LARGE:    x[i] = 1e3f * g; break;
        default: {
            /* per 256: zeros, a constant, a negative constant, a lone spike, then gaussian */
            int chunk = (i / 256) % 6;
            x[i] = chunk == 0 ? 0.0f : chunk == 1 ? 0.7f : chunk == 2 ? -3.0f
                 : chunk == 3 ? (i % 256 == 77 ? 5.0f : 0.0f) : g;
        }
        }
    }
}

static double rel_rmse(const float *y, const float *x, size_t n)
{
    return sqrt(tu_nmse(y, x, n));
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* quantize then dequantize through the public row API */
static void round_trip(int type, const float *x, float *y, int n)
{
    void *q = xmalloc(porta_row_size(type, n));
    ck_assert_int_eq(porta_quantize_row(type, x, q, n), 0);
    ck_assert_int_eq(porta_dequantize_row(type, q, y, n), 0);
    free(q);
}

static void put_f16(porta_f16 *dst, float v)
{
    *dst = porta_f32_to_f16(v);
    ck_assert_float_eq(porta_f16_to_f32(*dst), v);   /* test values are exact halves */
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ------------------------------------------------------------------------------------------ */
/* traits and row API                                                                         */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_traits_table)
{
    /* ggml's block sizes and bytes per block */
    static const struct { int type; const char *name; int64_t blck; size_t size; bool quant; int vdt; }
    want[] = {
        { PORTA_F32, "F32", 1, 4, false, PORTA_F32 },      { PORTA_F16, "F16", 1, 2, false, PORTA_F32 },
        { PORTA_BF16, "BF16", 1, 2, false, PORTA_F32 },    { PORTA_Q4_0, "Q4_0", 32, 18, true, PORTA_Q8_0 },
        { PORTA_Q4_1, "Q4_1", 32, 20, true, PORTA_Q8_1 },  { PORTA_Q5_0, "Q5_0", 32, 22, true, PORTA_Q8_0 },
        { PORTA_Q5_1, "Q5_1", 32, 24, true, PORTA_Q8_1 },  { PORTA_Q8_0, "Q8_0", 32, 34, true, PORTA_Q8_0 },
        { PORTA_Q8_1, "Q8_1", 32, 36, true, PORTA_Q8_1 },  { PORTA_Q2_K, "Q2_K", 256, 84, true, PORTA_Q8_K },
        { PORTA_Q3_K, "Q3_K", 256, 110, true, PORTA_Q8_K },{ PORTA_Q4_K, "Q4_K", 256, 144, true, PORTA_Q8_K },
        { PORTA_Q5_K, "Q5_K", 256, 176, true, PORTA_Q8_K },{ PORTA_Q6_K, "Q6_K", 256, 210, true, PORTA_Q8_K },
        { PORTA_Q8_K, "Q8_K", 256, 292, true, PORTA_Q8_K },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct porta_type_traits *t = porta_type_traits(want[i].type);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->name, want[i].name);
        ck_assert_str_eq(porta_dtype_name(want[i].type), want[i].name);
        ck_assert_int_eq(t->blck, want[i].blck);
        ck_assert_uint_eq(t->type_size, want[i].size);
        ck_assert(t->quantized == want[i].quant);
        ck_assert_int_eq(t->vec_dot_type, want[i].vdt);
        ck_assert_ptr_nonnull(t->to_float);
        ck_assert_ptr_nonnull(t->from_float);
        bool act_only = want[i].type == PORTA_Q8_1 || want[i].type == PORTA_Q8_K;
        ck_assert(act_only ? t->vec_dot == NULL : t->vec_dot != NULL);
    }
    /* ids GGUF defines but porta does not support, and any other int */
    static const int bad[] = { -1, -1000, INT_MIN, INT_MAX, 4, 5, 16, 17, 23, 27, 29, 31, 39, 40, 41, 1 << 20 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_ptr_null(porta_type_traits(bad[i]));
        ck_assert_str_eq(porta_dtype_name(bad[i]), "?");
        ck_assert_uint_eq(porta_row_size((enum porta_dtype)bad[i], 256), 0);
    }
    /* the integer tensor types read as floats */
    int8_t i8[3] = { -128, 0, 127 };
    int32_t i32[2] = { -70000, 123456 };
    float y[3];
    ck_assert_int_eq(porta_dequantize_row(PORTA_I8, i8, y, 3), 0);
    ck_assert(y[0] == -128 && y[1] == 0 && y[2] == 127);
    ck_assert_int_eq(porta_dequantize_row(PORTA_I32, i32, y, 2), 0);
    ck_assert(y[0] == -70000 && y[1] == 123456);
}
END_TEST

START_TEST(test_row_size)
{
    ck_assert_uint_eq(porta_row_size(PORTA_F32, 7), 28);
    ck_assert_uint_eq(porta_row_size(PORTA_F16, 7), 14);
    ck_assert_uint_eq(porta_row_size(PORTA_Q4_0, 64), 36);
    ck_assert_uint_eq(porta_row_size(PORTA_Q4_K, 512), 288);
    ck_assert_uint_eq(porta_row_size(PORTA_Q6_K, 256), 210);
    ck_assert_uint_eq(porta_row_size(PORTA_Q4_0, 0), 0);
    ck_assert_uint_eq(porta_row_size(PORTA_Q4_0, 33), 0);     /* not a multiple */
    ck_assert_uint_eq(porta_row_size(PORTA_Q4_K, 128), 0);
    ck_assert_uint_eq(porta_row_size(PORTA_Q4_0, -32), 0);    /* negative */
    ck_assert_uint_eq(porta_row_size(PORTA_F32, INT64_MAX), 0);                   /* overflows */
    ck_assert_uint_eq(porta_row_size(PORTA_F32, (int64_t)1 << 62), 0);          /* exactly 2^64 */
    ck_assert_uint_eq(porta_row_size(PORTA_F32, ((int64_t)1 << 62) - 1), SIZE_MAX - 3);
    if (sizeof(size_t) == 8)
        ck_assert_uint_eq(porta_row_size(PORTA_Q8_0, (int64_t)1 << 40), ((size_t)1 << 35) * 34);
}
END_TEST

static void quiet_sink(enum porta_log_level level, const char *msg, void *user)
{
    (void)level, (void)msg;
    ++*(int *)user;
}

START_TEST(test_row_api_errors)
{
    int logged = 0;
    float x[256] = { 0 }, y[256];
    uint8_t q[512];
    porta_log_set_sink(quiet_sink, &logged);
    ck_assert_int_eq(porta_quantize_row(PORTA_Q4_0, x, q, 33), PORTA_E_INVAL);
    ck_assert_int_eq(porta_quantize_row(PORTA_Q4_K, x, q, -256), PORTA_E_INVAL);
    ck_assert_int_eq(porta_quantize_row(PORTA_Q4_0, NULL, q, 32), PORTA_E_INVAL);
    ck_assert_int_eq(porta_dequantize_row(PORTA_Q4_0, q, NULL, 32), PORTA_E_INVAL);
    ck_assert_int_eq(porta_dequantize_row(PORTA_Q6_K, q, y, 255), PORTA_E_INVAL);
    ck_assert_int_eq(porta_quantize_row((enum porta_dtype)99, x, q, 32), PORTA_E_UNSUPPORTED);
    ck_assert_int_eq(porta_dequantize_row((enum porta_dtype)-3, q, y, 32), PORTA_E_UNSUPPORTED);
    ck_assert_int_eq(porta_quantize_row(PORTA_I32, x, q, 4), PORTA_E_UNSUPPORTED);
    ck_assert_int_eq(porta_quantize_row(PORTA_F32, x, q, (int64_t)1 << 62), PORTA_E_INVAL);
    ck_assert_int_ge(logged, 9);
    /* n = 0 is a valid empty row, NULL pointers allowed */
    ck_assert_int_eq(porta_quantize_row(PORTA_Q4_0, NULL, NULL, 0), 0);
    ck_assert_int_eq(porta_dequantize_row(PORTA_Q4_K, NULL, NULL, 0), 0);
    porta_log_set_sink(NULL, NULL);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* half precision                                                                             */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_f16_edges)
{
    static const struct { float f; uint16_t h; } cases[] = {
        { 0.0f, 0x0000 }, { -0.0f, 0x8000 }, { 1.0f, 0x3c00 }, { -2.0f, 0xc000 },
        { 0.5f, 0x3800 }, { 65504.0f, 0x7bff }, { 65519.0f, 0x7bff }, { 65520.0f, 0x7c00 },
        { 1e6f, 0x7c00 }, { -1e30f, 0xfc00 }, { INFINITY, 0x7c00 }, { -INFINITY, 0xfc00 },
        { 6.103515625e-05f, 0x0400 },          /* 2^-14, smallest normal */
        { 5.9604644775390625e-08f, 0x0001 },   /* 2^-24, smallest subnormal */
        { 2.98023223876953125e-08f, 0x0000 },  /* 2^-25: tie, rounds to even 0 */
        { 4.4703483581542969e-08f, 0x0001 },   /* 1.5 * 2^-25 */
        { -8.940696716308594e-08f, 0x8002 },   /* -1.5 * 2^-24: tie, to even 2 */
        { 6.097555160522461e-05f, 0x03ff },    /* largest subnormal */
        { 1e-10f, 0x0000 }, { -1e-10f, 0x8000 }, { 1e-45f, 0x0000 },
        { 1.00048828125f, 0x3c00 },            /* 1 + 2^-11: tie, to even */
        { 1.00146484375f, 0x3c02 },            /* 1 + 3 * 2^-11: tie, to even (up) */
        { 1.0004883f + 1e-7f, 0x3c01 },        /* just above the tie */
        { 3.14159265f, 0x4248 }, { -65504.0f, 0xfbff },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(porta_f32_to_f16(cases[i].f) == cases[i].h, "f16(%g) = %04x, want %04x",
                      (double)cases[i].f, porta_f32_to_f16(cases[i].f), cases[i].h);

    /* NaN stays NaN (quiet, sign kept), also for a NaN whose payload sits in the low bits only */
    uint16_t n1 = porta_f32_to_f16(NAN), n2 = porta_f32_to_f16(bitsf(0xff800001u));
    ck_assert((n1 & 0x7c00) == 0x7c00 && (n1 & 0x03ff) != 0);
    ck_assert((n2 & 0x7c00) == 0x7c00 && (n2 & 0x03ff) != 0 && (n2 & 0x8000));
    ck_assert(isnan(porta_f16_to_f32(0x7e00)) && isnan(porta_f16_to_f32(0xfd01)));
    ck_assert(isinf(porta_f16_to_f32(0x7c00)) && porta_f16_to_f32(0xfc00) < 0);
    ck_assert_float_eq(porta_f16_to_f32(0x0001), ldexpf(1, -24));
    ck_assert_float_eq(porta_f16_to_f32(0x83ff), -ldexpf(1023, -24));

    /* every half: exact round trip through float; every midpoint between neighbours rounds
     * to the even one, and one float ulp either side of it rounds to the nearer neighbour */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = porta_f16_to_f32((porta_f16)h);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) {
            ck_assert(isnan(f));
            ck_assert((porta_f32_to_f16(f) & 0x7e00) == 0x7e00);
            continue;
        }
        ck_assert_uint_eq(porta_f32_to_f16(f), h);
        ck_assert_uint_eq(porta_f32_to_f16(-f), h ^ 0x8000);
        if (h >= 0x7bff)   /* negative halves: covered by the sign symmetry above */
            continue;
        float g = porta_f16_to_f32((porta_f16)(h + 1));
        float mid = (float)(((double)f + g) / 2);    /* exact: halves have 11 bits */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        ck_assert_uint_eq(porta_f32_to_f16(mid), even);
        ck_assert_uint_eq(porta_f32_to_f16(-mid), even | 0x8000);
        ck_assert_uint_eq(porta_f32_to_f16(nextafterf(mid, 0.0f)), h);
        ck_assert_uint_eq(porta_f32_to_f16(nextafterf(mid, INFINITY)), h + 1);
    }
    /* the overflow threshold: 65520 (midpoint of 65504 and 2^16) is a tie to even -> inf */
    ck_assert_uint_eq(porta_f32_to_f16(nextafterf(65520.0f, 0)), 0x7bff);
}
END_TEST

START_TEST(test_bf16_edges)
{
    ck_assert_uint_eq(porta_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(porta_f32_to_bf16(-0.0f), 0x8000);
    ck_assert_uint_eq(porta_f32_to_bf16(bitsf(0x3f808000u)), 0x3f80);   /* tie, to even */
    ck_assert_uint_eq(porta_f32_to_bf16(bitsf(0x3f818000u)), 0x3f82);   /* tie, to even (up) */
    ck_assert_uint_eq(porta_f32_to_bf16(bitsf(0x3f808001u)), 0x3f81);
    ck_assert_uint_eq(porta_f32_to_bf16(bitsf(0x3f807fffu)), 0x3f80);
    ck_assert_uint_eq(porta_f32_to_bf16(FLT_MAX), 0x7f80);               /* rounds up to inf */
    ck_assert_uint_eq(porta_f32_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(porta_f32_to_bf16(bitsf(0x00000001u)), 0x0000);    /* float subnormal */
    ck_assert_uint_eq(porta_f32_to_bf16(bitsf(0x00018000u)), 0x0002);
    uint16_t n = porta_f32_to_bf16(bitsf(0x7f800001u));                 /* NaN, payload low */
    ck_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    ck_assert(isnan(porta_bf16_to_f32(0xffc0)));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = porta_bf16_to_f32((porta_bf16)h);
        ck_assert_uint_eq(fbits(f), h << 16);
        if (!isnan(f))
            ck_assert_uint_eq(porta_f32_to_bf16(f), h);
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* known answers: blocks built by hand from the documented layouts                             */
/* ------------------------------------------------------------------------------------------ */

/* a fixed pseudo-random integer in [0, m) for element e: no period that a layout bug could hide in */
static int pick(int e, int salt, int m)
{
    uint32_t h = (uint32_t)e * 2654435761u ^ (uint32_t)salt * 40503u;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    return (int)(h % (uint32_t)m);
}

static void dequant(int type, const void *blk, float *y, int n)
{
    ck_assert_int_eq(porta_dequantize_row(type, blk, y, n), 0);
}

START_TEST(test_kat_q4_0)
{
    struct porta_block_q4_0 b;
    float y[32];
    put_f16(&b.d, 1.0f);
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | (15 - j) << 4);  /* element j = j, element 16 + j = 15 - j */
    dequant(PORTA_Q4_0, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        ck_assert_float_eq(y[j], (float)(j - 8));
        ck_assert_float_eq(y[16 + j], (float)(7 - j));
    }
    put_f16(&b.d, -0.25f);
    dequant(PORTA_Q4_0, &b, y, 32);
    ck_assert_float_eq(y[0], 2.0f);
    ck_assert_float_eq(y[31], 2.0f);
    ck_assert_float_eq(y[15], -1.75f);
}
END_TEST

START_TEST(test_kat_q4_1)
{
    struct porta_block_q4_1 b[2];
    float y[64];
    for (int i = 0; i < 2; i++) {
        put_f16(&b[i].d, i ? 0.5f : 2.0f);
        put_f16(&b[i].m, i ? -3.0f : 1.0f);
        for (int j = 0; j < 16; j++)
            b[i].qs[j] = (uint8_t)(pick(j, i, 16) | pick(j + 16, i, 16) << 4);
    }
    dequant(PORTA_Q4_1, b, y, 64);
    for (int i = 0; i < 2; i++)
        for (int e = 0; e < 32; e++)
            ck_assert_float_eq(y[32 * i + e], (float)pick(e, i, 16) * (i ? 0.5f : 2.0f) + (i ? -3.0f : 1.0f));
}
END_TEST

/* 5-bit values q[e] into qs nibbles and the little-endian 32-bit qh */
static void pack5(const int q[32], uint8_t qs[16], uint8_t qh[4])
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
    for (int e = 0; e < 32; e++)
        h |= (uint32_t)(q[e] >> 4) << e;
    qh[0] = (uint8_t)h, qh[1] = (uint8_t)(h >> 8), qh[2] = (uint8_t)(h >> 16), qh[3] = (uint8_t)(h >> 24);
}

START_TEST(test_kat_q5)
{
    struct porta_block_q5_0 b0;
    struct porta_block_q5_1 b1;
    int q[32];
    float y[32];
    for (int e = 0; e < 32; e++)
        q[e] = pick(e, 5, 32);
    q[3] = 31, q[20] = 16, q[31] = 0;
    put_f16(&b0.d, 0.5f);
    pack5(q, b0.qs, b0.qh);
    dequant(PORTA_Q5_0, &b0, y, 32);
    for (int e = 0; e < 32; e++)
        ck_assert_float_eq(y[e], (float)(q[e] - 16) * 0.5f);
    put_f16(&b1.d, 4.0f);
    put_f16(&b1.m, -100.0f);
    pack5(q, b1.qs, b1.qh);
    dequant(PORTA_Q5_1, &b1, y, 32);
    for (int e = 0; e < 32; e++)
        ck_assert_float_eq(y[e], (float)q[e] * 4.0f - 100.0f);
}
END_TEST

START_TEST(test_kat_q8)
{
    struct porta_block_q8_0 b;
    float y[256];
    put_f16(&b.d, 0.125f);
    for (int e = 0; e < 32; e++)
        b.qs[e] = (int8_t)(pick(e, 8, 256) - 128);
    dequant(PORTA_Q8_0, &b, y, 32);
    for (int e = 0; e < 32; e++)
        ck_assert_float_eq(y[e], (float)b.qs[e] * 0.125f);

    /* activation quantizers, exactly as ggml's reference */
    float x[256];
    for (int e = 0; e < 32; e++)
        x[e] = (float)(e - 16) * 0.5f;         /* amax 8 -> d = 8/127, q = roundf(x*127/8) */
    ck_assert_int_eq(porta_quantize_row(PORTA_Q8_0, x, &b, 32), 0);
    ck_assert_uint_eq(b.d, porta_f32_to_f16(8.0f / 127));
    ck_assert_int_eq(b.qs[0], -127);
    ck_assert_int_eq(b.qs[24], 64);            /* 4 * 15.875 = 63.5: half away from zero */
    ck_assert_int_eq(b.qs[8], -64);
    ck_assert_int_eq(b.qs[16], 0);
    ck_assert_int_eq(b.qs[31], 119);           /* 7.5 * 15.875 = 119.06 */
    struct porta_block_q8_1 b1;
    ck_assert_int_eq(porta_quantize_row(PORTA_Q8_1, x, &b1, 32), 0);
    int sum = 0;
    for (int e = 0; e < 32; e++) {
        ck_assert_int_eq(b1.qs[e], b.qs[e]);
        sum += b1.qs[e];
    }
    ck_assert_uint_eq(b1.d, b.d);
    ck_assert_uint_eq(b1.s, porta_f32_to_f16((float)sum * (8.0f / 127)));
    /* s uses d before its rounding to half: visible with a large sum */
    for (int e = 0; e < 32; e++)
        x[e] = 0.9f * (float)(e + 1) / 32;
    ck_assert_int_eq(porta_quantize_row(PORTA_Q8_1, x, &b1, 32), 0);
    float d1 = x[31] / 127;
    sum = 0;
    for (int e = 0; e < 32; e++)
        sum += b1.qs[e];
    ck_assert_int_gt(sum, 1500);
    ck_assert_uint_eq(b1.s, porta_f32_to_f16((float)sum * d1));
    ck_assert_uint_ne(b1.s, porta_f32_to_f16((float)sum * porta_f16_to_f32(b1.d)));

    /* Q8_K: the value of largest magnitude keeps its sign and maps to -127; d = 1/iscale
     * (negative for a positive maximum); ties of iscale*x round to even; bsums per 16 */
    struct porta_block_q8_K k;
    for (int e = 0; e < 256; e++)
        x[e] = (float)(pick(e, 9, 200) - 100) / 100;   /* |x| < 1 */
    x[0] = -127.0f;                                    /* iscale = 1 */
    x[1] = 2.5f, x[2] = 3.5f, x[3] = -2.5f, x[4] = 126.5f;
    ck_assert_int_eq(porta_quantize_row(PORTA_Q8_K, x, &k, 256), 0);
    ck_assert_float_eq(k.d, 1.0f);
    ck_assert_int_eq(k.qs[0], -127);
    ck_assert_int_eq(k.qs[1], 2);
    ck_assert_int_eq(k.qs[2], 4);
    ck_assert_int_eq(k.qs[3], -2);
    ck_assert_int_eq(k.qs[4], 126);
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++)
            s += k.qs[16 * g + l];
        ck_assert_int_eq(k.bsums[g], s);
    }
    x[0] = 63.5f;                                      /* positive max: iscale = -2 */
    x[4] = 0;
    ck_assert_int_eq(porta_quantize_row(PORTA_Q8_K, x, &k, 256), 0);
    ck_assert_float_eq(k.d, -0.5f);
    ck_assert_int_eq(k.qs[0], -127);
    ck_assert_int_eq(k.qs[1], -5);
    ck_assert_int_eq(k.qs[2], -7);
    dequant(PORTA_Q8_K, &k, y, 256);
    ck_assert_float_eq(y[1], 2.5f);
    memset(x, 0, sizeof x);
    ck_assert_int_eq(porta_quantize_row(PORTA_Q8_K, x, &k, 256), 0);
    ck_assert(k.d == 0 && k.qs[100] == 0 && k.bsums[15] == 0);
}
END_TEST

/* Q2_K / Q3_K crumb planes: element e is bits 2*((e%128)/32) of qs[32*(e/128) + e%32] */
static void put_crumb(uint8_t *qs, int e, int v)
{
    qs[32 * (e / 128) + e % 32] |= (uint8_t)(v << (2 * ((e % 128) / 32)));
}

START_TEST(test_kat_q2_k)
{
    struct porta_block_q2_K b;
    int q[256], sc[16], mn[16];
    float y[256];
    memset(&b, 0, sizeof b);
    put_f16(&b.d, 0.5f);
    put_f16(&b.dmin, 0.25f);
    for (int j = 0; j < 16; j++) {
        sc[j] = (j * 5 + 1) % 16;   /* a permutation of 0..15: every sub-block distinct */
        mn[j] = (j * 3 + 2) % 16;
        b.scales[j] = (uint8_t)(sc[j] | mn[j] << 4);
    }
    for (int e = 0; e < 256; e++) {
        q[e] = pick(e, 2, 4);
        put_crumb(b.qs, e, q[e]);
    }
    dequant(PORTA_Q2_K, &b, y, 256);
    for (int e = 0; e < 256; e++)
        ck_assert_msg(y[e] == 0.5f * (float)(sc[e / 16] * q[e]) - 0.25f * (float)mn[e / 16],
                      "Q2_K element %d: %g", e, (double)y[e]);
}
END_TEST

START_TEST(test_kat_q3_k)
{
    struct porta_block_q3_K b;
    int q[256], sc[16];
    float y[256];
    memset(&b, 0, sizeof b);
    put_f16(&b.d, 0.25f);
    for (int j = 0; j < 16; j++) {
        sc[j] = (j * 11) % 64 - 32;   /* distinct 6-bit scales in [-32, 31], all high bits used */
        int l = sc[j] + 32;
        if (j < 8)
            b.scales[j] |= (uint8_t)(l & 15);
        else
            b.scales[j - 8] |= (uint8_t)((l & 15) << 4);
        b.scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
    for (int e = 0; e < 256; e++) {
        q[e] = pick(e, 3, 8) - 4;                 /* [-4, 3] */
        int u = q[e] + 4;
        put_crumb(b.qs, e, u & 3);
        if (u & 4)                                /* hmask bit set: no -4 */
            b.hmask[e % 32] |= (uint8_t)(1 << (e / 32));
    }
    dequant(PORTA_Q3_K, &b, y, 256);
    for (int e = 0; e < 256; e++)
        ck_assert_msg(y[e] == 0.25f * (float)(sc[e / 16] * q[e]), "Q3_K element %d: %g want %g",
                      e, (double)y[e], 0.25 * sc[e / 16] * q[e]);
}
END_TEST

/* Q4_K / Q5_K 12-byte scale packing, written out byte by byte */
static void pack_k4_scales(uint8_t s[12], const int sc[8], const int mn[8])
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

/* 6-bit scales and mins with every combination of the top bits across the sub-blocks */
static const int k4_sc[8] = { 63, 1, 32, 17, 48, 5, 33, 62 };
static const int k4_mn[8] = { 0, 45, 16, 63, 19, 34, 60, 7 };

START_TEST(test_kat_q4_k)
{
    struct porta_block_q4_K b;
    int q[256];
    float y[256];
    memset(&b, 0, sizeof b);
    put_f16(&b.d, 0.5f);
    put_f16(&b.dmin, 0.125f);
    pack_k4_scales(b.scales, k4_sc, k4_mn);
    for (int e = 0; e < 256; e++) {
        q[e] = pick(e, 4, 16);
        /* element e: low (e%64 < 32) or high nibble of qs[32*(e/64) + e%32] */
        b.qs[32 * (e / 64) + e % 32] |= (uint8_t)(q[e] << ((e % 64) < 32 ? 0 : 4));
    }
    dequant(PORTA_Q4_K, &b, y, 256);
    for (int e = 0; e < 256; e++)
        ck_assert_msg(y[e] == 0.5f * (float)(k4_sc[e / 32] * q[e]) - 0.125f * (float)k4_mn[e / 32],
                      "Q4_K element %d: %g", e, (double)y[e]);
}
END_TEST

START_TEST(test_kat_q5_k)
{
    struct porta_block_q5_K b;
    int q[256];
    float y[256];
    memset(&b, 0, sizeof b);
    put_f16(&b.d, 0.25f);
    put_f16(&b.dmin, 2.0f);
    pack_k4_scales(b.scales, k4_sc, k4_mn);
    for (int e = 0; e < 256; e++) {
        q[e] = pick(e, 5, 32);
        b.qs[32 * (e / 64) + e % 32] |= (uint8_t)((q[e] & 15) << ((e % 64) < 32 ? 0 : 4));
        b.qh[e % 32] |= (uint8_t)((q[e] >> 4) << (e / 32));   /* fifth bit: bit e/32 of qh[e%32] */
    }
    dequant(PORTA_Q5_K, &b, y, 256);
    for (int e = 0; e < 256; e++)
        ck_assert_msg(y[e] == 0.25f * (float)(k4_sc[e / 32] * q[e]) - 2.0f * (float)k4_mn[e / 32],
                      "Q5_K element %d: %g", e, (double)y[e]);
}
END_TEST

START_TEST(test_kat_q6_k)
{
    static const int sc[16] = { -128, 127, -1, 1, 64, -64, 3, -7, 100, -100, 17, -17, 33, -33, 0, 5 };
    struct porta_block_q6_K b;
    int q[256];
    float y[256];
    memset(&b, 0, sizeof b);
    put_f16(&b.d, 0.5f);
    for (int j = 0; j < 16; j++)
        b.scales[j] = (int8_t)sc[j];
    for (int e = 0; e < 256; e++) {
        q[e] = pick(e, 6, 64) - 32;
        int u = q[e] + 32, h = e / 128, c = (e % 128) / 32, l = e % 32;
        /* low 4 bits: ql[64h + l + 32*(c&1)], low nibble for c < 2; top 2: bits 2c of qh[32h + l] */
        b.ql[64 * h + l + 32 * (c & 1)] |= (uint8_t)((u & 15) << (c < 2 ? 0 : 4));
        b.qh[32 * h + l] |= (uint8_t)((u >> 4) << (2 * c));
    }
    dequant(PORTA_Q6_K, &b, y, 256);
    for (int e = 0; e < 256; e++)
        ck_assert_msg(y[e] == 0.5f * (float)(sc[e / 16] * q[e]), "Q6_K element %d: %g want %g", e,
                      (double)y[e], 0.5 * sc[e / 16] * q[e]);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* round trips                                                                                */
/* ------------------------------------------------------------------------------------------ */

#define RT_N 4096

START_TEST(test_round_trip)
{
    float *x = xmalloc(RT_N * sizeof(float)), *y = xmalloc(RT_N * sizeof(float));
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        int type = weight_types[t];
        double worst = 0;
        int worst_d = 0;
        for (int d = 0; d < D_COUNT; d++) {
            gen(d, x, RT_N, 1000 + (unsigned)d);
            round_trip(type, x, y, RT_N);
            double e = rel_rmse(y, x, RT_N), bound = rt_bound(type, d == D_OUTLIERS || d == D_HEAVY);
            ck_assert_msg(e <= bound, "%s on %s: relative RMSE %.4g > %.4g",
                          porta_dtype_name(type), dist_name[d], e, bound);
            if (e > worst)
                worst = e, worst_d = d;
            /* the zero blocks of the mixed distribution come back exactly zero */
            if (d == D_MIXED)
                for (int i = 0; i < 256; i++)
                    ck_assert_msg(y[i] == 0, "%s: zero block -> %g", porta_dtype_name(type), (double)y[i]);
        }
        printf("round trip %-5s worst relative RMSE %.4f (%s)\n", porta_dtype_name(type), worst,
               dist_name[worst_d]);
    }
    free(x);
    free(y);
}
END_TEST

/* constant rows come back close to the constant for every type */
START_TEST(test_round_trip_constant)
{
    static const float consts[] = { 1.0f, -1.0f, 0.3f, -7.25f, 0.05f, 500.0f };
    float x[512], y[512];
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        int type = weight_types[t];
        for (size_t c = 0; c < sizeof consts / sizeof consts[0]; c++) {
            for (int i = 0; i < 512; i++)
                x[i] = consts[c];
            round_trip(type, x, y, 512);
            for (int i = 0; i < 512; i++)
                ck_assert_msg(fabsf(y[i] - x[i]) <= 4e-3f * fabsf(x[i]), "%s constant %g -> %g",
                              porta_dtype_name(type), (double)x[i], (double)y[i]);
        }
    }
}
END_TEST

/* NaN, inf and huge values must not crash any quantizer (the output is unspecified) */
START_TEST(test_hostile_values)
{
    float x[512], y[512];
    static const float bad[] = { NAN, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, 1e-40f };
    for (int t = 0; t < N_WEIGHT_TYPES + 2; t++) {
        int type = t < N_WEIGHT_TYPES ? weight_types[t] : t == N_WEIGHT_TYPES ? PORTA_Q8_1 : PORTA_Q8_K;
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            gen(D_GAUSS, x, 512, 7);
            for (int i = 0; i < 512; i += 37)
                x[i] = bad[b];
            round_trip(type, x, y, 512);
            for (int i = 0; i < 512; i++)
                x[i] = bad[b];
            round_trip(type, x, y, 512);
        }
    }
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* dot products                                                                               */
/* ------------------------------------------------------------------------------------------ */

START_TEST(test_vec_dot)
{
    enum { NMAX = 2048 };
    float *w = xmalloc(NMAX * sizeof(float)), *a = xmalloc(NMAX * sizeof(float));
    float *wd = xmalloc(NMAX * sizeof(float)), *ad = xmalloc(NMAX * sizeof(float));
    void *wq = xmalloc(porta_row_size(PORTA_F32, NMAX)), *aq = xmalloc(porta_row_size(PORTA_F32, NMAX));
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        int type = weight_types[t];
        const struct porta_type_traits *tt = porta_type_traits(type);
        int vdt = tt->vec_dot_type;
        double worst_exact = 0, worst_act = 0;
        for (int mult = 1; mult <= 8; mult *= 2) {
            int n = (int)(tt->blck == 1 ? 32 : tt->blck) * mult * (tt->blck == 256 ? 1 : 3);
            for (int d = 0; d < 4; d++) {
                gen(d == 3 ? D_OUTLIERS : D_GAUSS, w, n, 50 + (unsigned)(mult * 4 + d));
                gen(d == 2 ? D_HEAVY : D_UNIFORM, a, n, 90 + (unsigned)(mult * 4 + d));
                if (d == 1)
                    for (int i = 0; i < n; i++)
                        w[i] = fabsf(w[i]), a[i] = 0.5f + 0.5f * a[i];  /* no cancellation */
                ck_assert_int_eq(porta_quantize_row(type, w, wq, n), 0);
                ck_assert_int_eq(porta_dequantize_row(type, wq, wd, n), 0);
                ck_assert_int_eq(porta_quantize_row(vdt, a, aq, n), 0);
                ck_assert_int_eq(porta_dequantize_row(vdt, aq, ad, n), 0);
                float s = NAN;
                tt->vec_dot(n, &s, wq, aq);
                /* references in double; errors scaled by sum |w*a| (no blow-up on cancellation) */
                double exact = 0, act = 0, mag = 0;
                for (int i = 0; i < n; i++) {
                    exact += (double)wd[i] * ad[i];   /* same quantized operands */
                    act += (double)wd[i] * a[i];      /* float activations */
                    mag += fabs((double)wd[i] * a[i]);
                }
                double e1 = fabs(s - exact) / mag, e2 = fabs(s - act) / mag;
                worst_exact = fmax(worst_exact, e1);
                worst_act = fmax(worst_act, e2);
                /* Q8_1's s is d*sum(q) with d before its rounding to half: ~2^-11 relative in
                 * the min term; everything else is the same integer sum up to float rounding */
                double lim = vdt == PORTA_Q8_1 ? 1e-3 : 2e-6;
                ck_assert_msg(e1 <= lim, "%s n=%d: vec_dot %.7g vs dequantized operands %.7g",
                              porta_dtype_name(type), n, (double)s, exact);
                /* activation rounding: 8 bits per value, or none for float weights */
                double lim2 = vdt == PORTA_F32 ? 2e-6 : 0.01;
                ck_assert_msg(e2 <= lim2, "%s n=%d: vec_dot %.7g vs float activations %.7g",
                              porta_dtype_name(type), n, (double)s, act);
            }
        }
        printf("vec_dot %-5s x %-4s: max error vs quantized operands %.2e, vs float activations %.2e\n",
               porta_dtype_name(type), porta_dtype_name(vdt), worst_exact, worst_act);
    }
    free(w), free(a), free(wd), free(ad), free(wq), free(aq);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* real files                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static uint64_t fnv1a(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* FNV-1a 64 of every tensor of the file dequantized to float32, in file order, as gguf-py 0.19.0's
 * gguf.quants.dequantize gives them (which the data README says is bit-identical to ggml's
 * to_float at llama.cpp c392e50; the reference logits were made from exactly these floats). */
static const struct { const char *file; uint64_t hash; } gguf_hashes[] = {
    { "llama-F16.gguf",       0xac9022d732ac904cULL },
    { "llama-BF16.gguf",      0xbd99461e6224e9e6ULL },
    { "llama-Q4_0.gguf",      0x29783705ce712a90ULL },
    { "llama-Q4_1.gguf",      0x5e395d6b0367ae1fULL },
    { "llama-Q5_0.gguf",      0xb3c2e93da13b749eULL },
    { "llama-Q5_1.gguf",      0x9e48ea0efac3aa17ULL },
    { "llama-Q8_0.gguf",      0x9e61afdd4671760eULL },
    { "llama-Q2_K.gguf",      0x9384a89497adb7d2ULL },
    { "llama-Q2_K-pure.gguf", 0xa82b223084f28b4eULL },
    { "llama-Q3_K_M.gguf",    0x83d31194c2e941a1ULL },
    { "llama-Q3_K-pure.gguf", 0xe0be2d352e24c298ULL },
    { "llama-Q4_K_M.gguf",    0x493358fe1baa3357ULL },
    { "llama-Q4_K-pure.gguf", 0x1307f349fcebad2cULL },
    { "llama-Q5_K_M.gguf",    0x17c9d9d2dbdf6e1dULL },
    { "llama-Q5_K-pure.gguf", 0xbbb304e248e3ba9fULL },
    { "llama-Q6_K.gguf",      0x0dca0a3d587fc5b8ULL },
    { "qwen2-Q4_0.gguf",      0x65ccebafcfcf348fULL },
    { "qwen2-Q4_K_M.gguf",    0x7bd7443125605f6bULL },
    { "qwen2-Q8_0.gguf",      0x59e7b1a63c037f90ULL },
};
#define N_GGUF (int)(sizeof gguf_hashes / sizeof gguf_hashes[0])

/* Opens quant/<name>; NULL (and a note) when the shared data is not there. A file that exists
 * but does not open is a failure. */
static struct porta_gguf *open_data(const char *name)
{
    char full[1024];
    struct porta_gguf *g = NULL;
    snprintf(full, sizeof full, "%s/quant/%s", tu_shared(), name);
    FILE *f = fopen(full, "rb");
    if (!f) {
        printf("skipped: %s not found (shared data missing)\n", full);
        return NULL;
    }
    fclose(f);
    ck_assert_msg(porta_gguf_open(full, &g) == 0, "cannot open %s", full);
    return g;
}

static int64_t n_elems(const struct porta_gguf_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++)
        n *= (int64_t)t->ne[d];
    return n;
}

/* whole tensor to float32 (malloc'd) */
static float *tensor_floats(const struct porta_gguf_tensor *t)
{
    int64_t n = n_elems(t);
    float *y = xmalloc((size_t)n * sizeof(float));
    ck_assert_uint_eq(porta_row_size(t->type, n), t->nbytes);
    ck_assert_int_eq(porta_dequantize_row(t->type, t->data, y, n), 0);
    return y;
}

START_TEST(test_gguf_bit_exact)
{
    struct porta_gguf *g = open_data(gguf_hashes[_i].file);
    if (!g)
        return;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        float *y = tensor_floats(&g->tensors[i]);
        h = fnv1a(y, (size_t)n_elems(&g->tensors[i]) * sizeof(float), h);
        free(y);
    }
    ck_assert_msg(h == gguf_hashes[_i].hash, "%s: dequantized hash %016llx, want %016llx",
                  gguf_hashes[_i].file, (unsigned long long)h, (unsigned long long)gguf_hashes[_i].hash);
    porta_gguf_close(g);
}
END_TEST

/* Error of each tensor of each llama file against the F16 file of the same model: within the
 * type's round-trip bound (reading one format as another gives ~100%). */
START_TEST(test_gguf_vs_f16)
{
    const char *name = gguf_hashes[_i].file;
    if (strncmp(name, "llama-", 6) || !strcmp(name, "llama-F16.gguf"))
        return;
    struct porta_gguf *ref = open_data("llama-F16.gguf"), *g = open_data(name);
    if (!ref || !g) {
        porta_gguf_close(ref);
        porta_gguf_close(g);
        return;
    }
    int n_checked = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct porta_gguf_tensor *t = &g->tensors[i], *r = porta_gguf_tensor(ref, t->name);
        ck_assert_msg(r != NULL, "%s: %s not in the F16 file", name, t->name);
        ck_assert_int_eq(n_elems(t), n_elems(r));
        float *y = tensor_floats(t), *x = tensor_floats(r);
        double e = rel_rmse(y, x, (size_t)n_elems(t));
        /* BF16 and F16 both round the same float32 source: 2^-8 apart at most */
        double bound = t->type == r->type ? 0 : t->type == PORTA_BF16 ? 3e-3 : rt_bound(t->type, false);
        if (getenv("QUANT_MEASURE"))
            printf("  %s %s %s %.4f\n", name, t->name, porta_dtype_name(t->type), e);
        ck_assert_msg(e <= bound, "%s %s (%s): relative RMSE vs F16 %.4g > %.4g", name, t->name,
                      porta_dtype_name(t->type), e, bound);
        n_checked++;
        free(x);
        free(y);
    }
    ck_assert_int_ge(n_checked, 10);
    porta_gguf_close(ref);
    porta_gguf_close(g);
}
END_TEST

/* Quantizing the F16 weights with porta reproduces llama-quantize's bytes (no imatrix: ggml's
 * reference quantizers) for every tensor of each single-type file. */
static const char *requant_files[] = {
    "llama-Q4_0.gguf", "llama-Q4_1.gguf", "llama-Q5_0.gguf", "llama-Q5_1.gguf", "llama-Q8_0.gguf",
    "llama-BF16.gguf", "llama-Q2_K-pure.gguf", "llama-Q3_K-pure.gguf", "llama-Q4_K-pure.gguf",
    "llama-Q5_K-pure.gguf", "llama-Q6_K.gguf",
};

START_TEST(test_gguf_requantize)
{
    struct porta_gguf *ref = open_data("llama-F16.gguf"), *g = open_data(requant_files[_i]);
    if (!ref || !g) {
        porta_gguf_close(ref);
        porta_gguf_close(g);
        return;
    }
    int n_checked = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct porta_gguf_tensor *t = &g->tensors[i], *r = porta_gguf_tensor(ref, t->name);
        if (t->type == PORTA_F32)
            continue;
        ck_assert_ptr_nonnull(r);
        int64_t n = n_elems(t);
        float *x = tensor_floats(r);
        uint8_t *q = xmalloc(t->nbytes);
        ck_assert_int_eq(porta_quantize_row(t->type, x, q, n), 0);
        size_t bs = porta_type_traits(t->type)->type_size, bad = 0;
        for (size_t off = 0; off < t->nbytes; off += bs)
            bad += memcmp(q + off, (const uint8_t *)t->data + off, bs) != 0;
        ck_assert_msg(bad == 0, "%s %s (%s): %zu of %zu blocks differ from llama-quantize's",
                      requant_files[_i], t->name, porta_dtype_name(t->type), bad, t->nbytes / bs);
        n_checked++;
        free(x);
        free(q);
    }
    ck_assert_int_ge(n_checked, 10);
    porta_gguf_close(ref);
    porta_gguf_close(g);
}
END_TEST

static Suite *quant_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_traits_table);
    tcase_add_test(tc, test_row_size);
    tcase_add_test(tc, test_row_api_errors);
    tcase_add_test(tc, test_f16_edges);
    tcase_add_test(tc, test_bf16_edges);
    tcase_add_test(tc, test_kat_q4_0);
    tcase_add_test(tc, test_kat_q4_1);
    tcase_add_test(tc, test_kat_q5);
    tcase_add_test(tc, test_kat_q8);
    tcase_add_test(tc, test_kat_q2_k);
    tcase_add_test(tc, test_kat_q3_k);
    tcase_add_test(tc, test_kat_q4_k);
    tcase_add_test(tc, test_kat_q5_k);
    tcase_add_test(tc, test_kat_q6_k);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_round_trip_constant);
    tcase_add_test(tc, test_hostile_values);
    tcase_add_test(tc, test_vec_dot);
    suite_add_tcase(s, tc);

    TCase *tf = tcase_create("gguf");
    tcase_set_timeout(tf, 120);
    tcase_add_loop_test(tf, test_gguf_bit_exact, 0, N_GGUF);
    tcase_add_loop_test(tf, test_gguf_vs_f16, 0, N_GGUF);
    tcase_add_loop_test(tf, test_gguf_requantize, 0,
                        (int)(sizeof requant_files / sizeof requant_files[0]));
    suite_add_tcase(s, tf);
    return s;
}

int main(void)
{
    return tu_run(quant_suite());
}
