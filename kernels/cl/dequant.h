/* dequant.h - the GGUF block formats on the device: for each weight type, its block size
 * (QK elements in BS bytes) and deq_unit(), which decodes one "unit" of SUB consecutive
 * elements of a block into private floats. Matvec, tiled matmul, embed and dequantize all go
 * through deq_unit() with a compile-time type, so after inlining each kernel decodes only its
 * own format. Formats and element order are those of core/quant.h (bit-compatible with ggml).
 * Type ids are GGUF's ggml_type numbers (enum porta_dtype). */

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q2_K 10
#define T_Q3_K 11
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

#define MAX_SUB 32      /* largest unit of any type: private arrays are this long */

/* elements per block; the plain types (F32, F16, BF16) count in "blocks" of 8 elements, and
 * a row of them may end with a partial block (see load_elem) */
DEVFN int type_qk(const int t)
{
    return t == T_F32 || t == T_F16 || t == T_BF16 ? 8 : t >= T_Q2_K && t <= T_Q6_K ? 256 : 32;
}

/* bytes per block */
DEVFN int type_bs(const int t)
{
    switch (t) {
    case T_F32: return 32;
    case T_F16: return 16;
    case T_BF16: return 16;
    case T_Q4_0: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q5_1: return 24;
    case T_Q8_0: return 34;
    case T_Q2_K: return 84;
    case T_Q3_K: return 110;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    default: return 210; /* T_Q6_K */
    }
}

/* elements per unit: 32 consecutive elements of a quantized block (one or two scales), 8 of
 * a plain type. Long units keep one work-item's inner loop wide enough for SIMD on CPU
 * devices (the per-element accumulators are independent) and amortize the scale decode. */
DEVFN int type_sub(const int t) { return t == T_F32 || t == T_F16 || t == T_BF16 ? 8 : 32; }

DEVFN bool type_plain(const int t) { return t == T_F32 || t == T_F16 || t == T_BF16; }

/* an IEEE half given as its bits, as a float: integer operations and selects only, so that
 * it vectorizes (and runs where the device converts halves one at a time). Exact for every
 * half, subnormals, infinities and NaNs included. No float operation sees a denormal operand:
 * a CPU takes a microcode assist of ~100 cycles on each one, and the small scales of Q6_K
 * output matrices are often subnormal halves (a 6x slower product, measured on PoCL). */
DEVFN float half_bits_to_float(u32 h)
{
    u32 em = h & 0x7fffu;
    u32 bits = (em << 13) + 0x38000000u;                  /* rebias the exponent 15 -> 127 */
    bits |= em >= 0x7c00u ? 0x7f800000u : 0u;             /* infinities and NaNs */
    float sub = (float)(i32)em * 5.9604644775390625e-8f;  /* subnormal: em * 2^-24, exact */
    float f = em < 0x400u ? sub : AS_FLOAT(bits);
    return AS_FLOAT(AS_UINT(f) | ((h & 0x8000u) << 16));
}

DEVFN float blk_half(GLOBAL const u8 *b, int o) { return LOAD_HALF(b + o, 0); }

DEVFN u32 blk_u32(GLOBAL const u8 *b, int o)
{
    return (u32)b[o] | ((u32)b[o + 1] << 8) | ((u32)b[o + 2] << 16) | ((u32)b[o + 3] << 24);
}

DEVFN float bf16_bits(u32 lo, u32 hi) { return AS_FLOAT((lo | (hi << 8)) << 16); }

/* element c of a row of a plain type (the tail of a row that is not whole blocks) */
DEVFN float load_elem(const int t, GLOBAL const u8 *row, int c)
{
    if (t == T_F32)
        return ((GLOBAL const float *)row)[c];
    if (t == T_F16)
        return LOAD_HALF(row, c);
    return bf16_bits(row[2 * c], row[2 * c + 1]);
}

/* Q4_K / Q5_K: 6-bit scale and min number j (0..7) from the 12 packed bytes at sc */
DEVFN void k4_scale_min(GLOBAL const u8 *sc, int j, float *s, float *m)
{
    int a, b;
    if (j < 4) {
        a = sc[j] & 63;
        b = sc[j + 4] & 63;
    } else {
        a = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        b = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
    *s = (float)a;
    *m = (float)b;
}

/* Q3_K: signed 6-bit scale number j (0..15) from the 12 packed bytes at sc */
DEVFN int k3_scale(GLOBAL const u8 *sc, int j)
{
    int lo = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4;
    int hi = (sc[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* One output element of unit_op(): stored (dot 0) or multiplied by x and accumulated (dot 1).
 * dot is a compile-time constant after inlining, so the choice costs nothing. */
DEVFN void put(float *v, int i, float val, GLOBAL const float *xs, const int dot)
{
    v[i] = dot ? MAD(val, xs[i], v[i]) : val;
}

/* the legacy block formats (Q4_0 .. Q8_0): one unit per block, element = d * q + m */
DEVFN bool type_legacy(const int t)
{
    return t == T_Q4_0 || t == T_Q4_1 || t == T_Q5_0 || t == T_Q5_1 || t == T_Q8_0;
}

/* the bits of a legacy block's scale d and offset m (0 for the types whose offset is a
 * multiple of d) */
DEVFN u32 legacy_d_bits(GLOBAL const u8 *b) { return ((GLOBAL const u16 *)b)[0]; }
DEVFN u32 legacy_m_bits(const int t, GLOBAL const u8 *b)
{
    return t == T_Q4_1 || t == T_Q5_1 ? ((GLOBAL const u16 *)b)[1] : 0u;
}

/* a legacy block's offset m from its scale d and its stored offset m (Q4_1, Q5_1) */
DEVFN float legacy_m(const int t, float d, float m)
{
    return t == T_Q4_0 ? -8.0f * d : t == T_Q5_0 ? -16.0f * d : t == T_Q8_0 ? 0.0f : m;
}

/* Decodes unit s (elements s*SUB .. s*SUB+SUB-1) of the block at b: into v[0..SUB) (dot 0), or
 * v[i] += element i * xs[i] (dot 1: the decode feeds the products directly, no round trip
 * through memory). The legacy types take their scale d and offset m (legacy_m) from the
 * caller, which may have decoded many blocks' scales at once; the others ignore d and m. */
DEVFN void unit_op_dm(const int t, GLOBAL const u8 *b, int s, float *v, GLOBAL const float *xs,
                      const int dot, float d, float m)
{
    int i;
    if (dot && t == T_Q8_0) {
        /* v[l] += d * sum q x over the elements l mod 8: five vector multiply-adds per block
         * rather than eight (the same for Q4_0 and Q5_0 measured slower on PoCL) */
        float p[8];
        UNROLL
        for (i = 0; i < 8; i++)
            p[i] = 0.0f;
        UNROLL
        for (i = 0; i < 32; i++)
            p[i % 8] = MAD((float)(i8)b[2 + i], xs[i], p[i % 8]);
        UNROLL
        for (i = 0; i < 8; i++)
            v[i] = MAD(d, p[i], v[i]);
        return;
    }
    if (t == T_F32) {
        UNROLL
        for (i = 0; i < 8; i++)
            put(v, i, ((GLOBAL const float *)b)[i], xs, dot);
    } else if (t == T_F16) {
        UNROLL
        for (i = 0; i < 8; i++)
            put(v, i, LOAD_HALF(b, i), xs, dot);
    } else if (t == T_BF16) {
        UNROLL
        for (i = 0; i < 8; i++)
            put(v, i, bf16_bits(b[2 * i], b[2 * i + 1]), xs, dot);
    } else if (t == T_Q4_0 || t == T_Q4_1) {
        /* elements 0..15: low nibbles of qs[0..15]; 16..31: high nibbles */
        int q0 = t == T_Q4_0 ? 2 : 4;
        /* two loops, one output stream each: SIMD-friendly on CPU devices */
        UNROLL
        for (i = 0; i < 16; i++)
            put(v, i, MAD(d, (float)(b[q0 + i] & 15), m), xs, dot);
        UNROLL
        for (i = 0; i < 16; i++)
            put(v, i + 16, MAD(d, (float)(b[q0 + i] >> 4), m), xs, dot);
    } else if (t == T_Q5_0 || t == T_Q5_1) {
        /* bit e of the 32-bit qh is the fifth bit of element e */
        int h0 = t == T_Q5_0 ? 2 : 4;
        u32 qh = blk_u32(b, h0);
        UNROLL
        for (i = 0; i < 16; i++)
            put(v, i, MAD(d, (float)((b[h0 + 4 + i] & 15) | (((qh >> i) & 1) << 4)), m), xs,
                dot);
        UNROLL
        for (i = 0; i < 16; i++)
            put(v, i + 16,
                MAD(d, (float)((b[h0 + 4 + i] >> 4) | (((qh >> (i + 16)) & 1) << 4)), m), xs,
                dot);
    } else if (t == T_Q8_0) {
        UNROLL
        for (i = 0; i < 32; i++)
            put(v, i, d * (float)(i8)b[2 + i], xs, dot);
    } else if (t == T_Q2_K) {
        /* scales[16] qs[64] d dmin; unit s: 128-half s>>2, 2-bit plane s&3, scales 2s, 2s+1 */
        int sh = (s & 3) * 2, q0 = 16 + (s >> 2) * 32;
        float d = blk_half(b, 80), dmin = blk_half(b, 82);
        UNROLL
        for (int g = 0; g < 2; g++) {
            int sc = b[2 * s + g];
            float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
            UNROLL
            for (i = 0; i < 16; i++)
                put(v, 16 * g + i, dl * (float)((b[q0 + 16 * g + i] >> sh) & 3) - ml, xs,
                    dot);
        }
    } else if (t == T_Q3_K) {
        /* hmask[32] qs[64] scales[12] d; a clear hmask bit subtracts 4 */
        int j = s & 3, q0 = 32 + (s >> 2) * 32, hb = s;  /* hmask bit (s>>2)*4 + j == s */
        float d = blk_half(b, 108);
        UNROLL
        for (int g = 0; g < 2; g++) {
            float dl = d * (float)k3_scale(b + 96, 2 * s + g);
            UNROLL
            for (i = 0; i < 16; i++) {
                int l = 16 * g + i;
                int q = ((b[q0 + l] >> (2 * j)) & 3) - (((b[l] >> hb) & 1) ? 0 : 4);
                put(v, l, dl * (float)q, xs, dot);
            }
        }
    } else if (t == T_Q4_K || t == T_Q5_K) {
        /* d dmin scales[12] (qh[32]) qs[128]; unit s: 64-chunk s>>1, nibble s&1, scale s */
        float sc, mn;
        k4_scale_min(b + 4, s, &sc, &mn);
        float dl = blk_half(b, 0) * sc, ml = blk_half(b, 2) * mn;
        int sh = (s & 1) * 4;
        if (t == T_Q4_K) {
            int q0 = 16 + (s >> 1) * 32;
            UNROLL
            for (i = 0; i < 32; i++)
                put(v, i, dl * (float)((b[q0 + i] >> sh) & 15) - ml, xs, dot);
        } else {
            int q0 = 48 + (s >> 1) * 32;
            UNROLL
            for (i = 0; i < 32; i++) {
                int q = ((b[q0 + i] >> sh) & 15) | (((b[16 + i] >> s) & 1) << 4);
                put(v, i, dl * (float)q - ml, xs, dot);
            }
        }
    } else { /* T_Q6_K: ql[128] qh[64] scales[16] d; unit s: 128-half s>>2, quarter k = s&3 */
        int hf = s >> 2, k = s & 3;
        int ql0 = hf * 64 + (k & 1) * 32, qh0 = 128 + hf * 32, sh = (k >> 1) * 4;
        float d = blk_half(b, 208);
        UNROLL
        for (int g = 0; g < 2; g++) {
            float dl = d * (float)(i8)b[192 + hf * 8 + g + 2 * k];
            UNROLL
            for (i = 0; i < 16; i++) {
                int l = 16 * g + i;
                int q = ((b[ql0 + l] >> sh) & 15) | (((b[qh0 + l] >> (2 * k)) & 3) << 4);
                put(v, l, dl * (float)(q - 32), xs, dot);
            }
        }
    }
}

/* unit_op_dm() with a legacy block's d and m read from the block */
DEVFN void unit_op(const int t, GLOBAL const u8 *b, int s, float *v, GLOBAL const float *xs,
                   const int dot)
{
    float d = 0.0f, m = 0.0f;
    if (type_legacy(t)) {
        d = blk_half(b, 0);
        m = legacy_m(t, d, t == T_Q4_1 || t == T_Q5_1 ? blk_half(b, 2) : 0.0f);
    }
    unit_op_dm(t, b, s, v, xs, dot, d, m);
}

DEVFN void deq_unit(const int t, GLOBAL const u8 *b, int s, float *v)
{
    unit_op(t, b, s, v, (GLOBAL const float *)0, 0);
}

DEVFN void dot_unit(const int t, GLOBAL const u8 *b, int s, GLOBAL const float *xs, float *acc)
{
    unit_op(t, b, s, acc, xs, 1);
}
