/* matvec_rows.cl - matrix products over weights repacked for CPU devices ("row packs"):
 * mr_<type> one token (decode), mrt_<type> MRT_TOK tokens a work-item (prefill), mre_<type>
 * mixture-of-experts stacks, rp_pack the repacking itself. Every weight type.
 *
 * Why: a CPU runtime (PoCL) vectorizes only inside one work-item. mv_<type> gives a work-item
 * one row and gets its SIMD from the 32 elements of a block, which costs widening, scale
 * gathers and a horizontal sum per block (~13 cycles a 32-weight block on AVX-512 hardware).
 * Here a work-item owns RP_ROWS rows whose 16-bit words are interleaved, so one vector load
 * brings the same word of all of its rows: the lanes are rows, as in the CPU backend's tiles,
 * and every operation is a plain vertical one on row vectors (rv_u / rv_f, see the prelude):
 * ~4.5 cycles a 32-weight row-block, 2x the rate of mv_.
 *
 * Layout (rp_pack): rows go in groups of RP_ROWS (the last one padded with zero rows); in a
 * group, 16-bit word w of row r (bytes 2w, 2w+1 of the row as stored in GGUF) is at word
 * w * RP_ROWS + r. Every block size is even, so blocks keep their GGUF bytes and only the
 * word order changes.
 *
 * The quants become floats without a conversion instruction: a b-bit unsigned value placed in
 * the top b mantissa bits of 1.0f reads as 1 + q / 2^b (ONE_PLUS). mr_ of the five common
 * types sums (1 + q / 2^b) x over a block and gets sum q x = 2^b (p - sum x), the x sums shared
 * by all rows; the other kernels turn each value into the element with one multiply-add
 * (rt_block).
 *
 * Launch: global (ceil(groups / lsz) * lsz, tokens (mre_: one each; mrt_: MRT_TOK each)),
 * local (lsz, 1); one work-item per row group. The host (backends/kops.c) packs a matrix on its
 * first product on a CPU device and drops the packs when the matrix is written or freed. */

#define RP_ROWS RV_N
#define RP_PREFETCH 2048    /* bytes ahead of the block being read (best of 1-4 KiB on PoCL) */

/* word w of the group's block at b, for all its rows */
#define RPV(b, w) RV_LOAD_U16((b) + (w) * RP_ROWS)

/* the floats with 1.0f's exponent and the given mantissa bits */
#define ONE_PLUS(bits) RV_AS_F((bits) | 0x3F800000u)

/* bits [from, from + n) of v moved to [to, to + n), the others cleared (all compile-time) */
DEVFN rv_u bits_to(rv_u v, const int from, const int n, const int to)
{
    u32 m = ((1u << n) - 1u) << to;
    if (to >= from)
        return (v << (u32)(to - from)) & m;
    return (v >> (u32)(from - to)) & m;
}

/* nibble i (bits 4i .. 4i+3) of q as 1 + nibble / 16 */
DEVFN rv_f nib4(rv_u q, const int i) { return ONE_PLUS(bits_to(q, 4 * i, 4, 19)); }

/* Q6_K: the nibble at bit nb of ql with bits hb, hb + 1 of qh above it, as 1 + q / 64 */
DEVFN rv_f q6v(rv_u ql, const int nb, rv_u qh, const int hb)
{
    return ONE_PLUS(bits_to(ql, nb, 4, 17) | bits_to(qh, hb, 2, 21));
}

/* byte i of the group's block at b, for all its rows */
DEVFN rv_u rp_byte(GLOBAL const u16 *b, const int i)
{
    return (RPV(b, i >> 1) >> (u32)(8 * (i & 1))) & 255u;
}

/* Q6_K: signed scale byte i (flipping the sign bit gives it plus 128) */
DEVFN rv_f q6_scale(GLOBAL const u16 *b, const int i)
{
    return RV_CVT_F(rp_byte(b, i) ^ 0x80u) - 128.0f;
}

/* half_bits_to_float (dequant.h) of every lane */
DEVFN rv_f rv_half_to_float(rv_u h)
{
    rv_u em = h & 0x7fffu;
    rv_u bits = ((em << 13u) + 0x38000000u) | (RV_GE(em, 0x7c00u) & 0x7f800000u);
    rv_u sub = RV_AS_U(RV_CVT_F(em) * 5.9604644775390625e-8f);
    rv_u normal = RV_GE(em, 0x400u);
    return RV_AS_F((bits & normal) | (sub & ~normal) | ((h & 0x8000u) << 16u));
}

/* x[0] + ... + x[n-1], n 16 or 32, as a tree of independent adds */
DEVFN float sum_x(GLOBAL const float *x, const int n)
{
    float s[8];
    UNROLL
    for (int i = 0; i < 8; i++)
        s[i] = n == 32 ? (x[i] + x[i + 8]) + (x[i + 16] + x[i + 24]) : x[i] + x[i + 8];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* asks for the block bw words a row ahead of b to be fetched RP_PREFETCH bytes early: the
 * hardware prefetchers alone leave a CPU core waiting on DRAM between blocks (9.3 GB/s on 2
 * cores; 16 with this: 8960x1536 Q4_0, weights not in cache) */
DEVFN void rp_prefetch(GLOBAL const u16 *b, const int bw)
{
    for (int o = 0; o < 2 * bw * RP_ROWS; o += 64)
        PREFETCH((GLOBAL const u8 *)b + RP_PREFETCH + o);
}

/* the RP_ROWS values of v to y (rows past n_rows dropped) */
DEVFN void rt_store(rv_f v, GLOBAL float *y, int r0, int n_rows)
{
    float out[RP_ROWS];
    RV_STORE(v, out);
    for (int r = 0; r < RP_ROWS; r++)
        if (r0 + r < n_rows)
            y[r0 + r] = out[r];
}

/* Each rp_<type> adds the products of one block of the group's rows with xb to acc. The scales
 * and the x sums come first: the loads of a block then go out in address order, which the
 * memory system streams best (measured: the other order ran at 0.55x from DRAM). */

/* Q4_0 / Q4_1: word 0 d, (Q4_1: word 1 m), 8 words of quants; element k is the low nibble of
 * byte k, element k + 16 its high nibble */
DEVFN rv_f rp_q4_legacy(const int T, GLOBAL const u16 *b, GLOBAL const float *xb, rv_f acc)
{
    const int q0 = T == T_Q4_0 ? 1 : 2;
    rv_f d = rv_half_to_float(RPV(b, 0));
    rv_f pa = RV_F(0.0f), pb = pa, pc = pa, pd = pa;
    float sx = sum_x(xb, 32);
    for (int k = 0; k < 8; k++) {
        rv_u q = RPV(b, q0 + k);
        pa = MAD(nib4(q, 0), xb[2 * k], pa);
        pb = MAD(nib4(q, 1), xb[2 * k + 16], pb);
        pc = MAD(nib4(q, 2), xb[2 * k + 1], pc);
        pd = MAD(nib4(q, 3), xb[2 * k + 17], pd);
    }
    rv_f qx = (((pa + pb) + (pc + pd)) - sx) * 16.0f;          /* sum q x */
    if (T == T_Q4_0)
        return MAD(d, qx - 8.0f * sx, acc);
    return MAD(rv_half_to_float(RPV(b, 1)), sx, MAD(d, qx, acc));
}

/* Q8_0: word 0 d, 16 words of signed bytes (element 2k low byte of word 1 + k); with the sign
 * bit flipped a byte is q + 128 */
DEVFN rv_f rp_q8_0(GLOBAL const u16 *b, GLOBAL const float *xb, rv_f acc)
{
    rv_f d = rv_half_to_float(RPV(b, 0));
    rv_f pa = RV_F(0.0f), pb = pa, pc = pa, pd = pa;
    float sx = sum_x(xb, 32);
    for (int k = 0; k < 16; k += 2) {
        rv_u q = RPV(b, 1 + k) ^ 0x8080u, q2 = RPV(b, 2 + k) ^ 0x8080u;
        pa = MAD(ONE_PLUS(bits_to(q, 0, 8, 15)), xb[2 * k], pa);
        pb = MAD(ONE_PLUS(bits_to(q, 8, 8, 15)), xb[2 * k + 1], pb);
        pc = MAD(ONE_PLUS(bits_to(q2, 0, 8, 15)), xb[2 * k + 2], pc);
        pd = MAD(ONE_PLUS(bits_to(q2, 8, 8, 15)), xb[2 * k + 3], pd);
    }
    /* sum (q + 128) x = 256 (p - sx) */
    rv_f qx = (((pa + pb) + (pc + pd)) - sx) * 256.0f - 128.0f * sx;
    return MAD(d, qx, acc);
}

/* Q4_K / Q5_K: the 6-bit scale and min of units j and j + 1 (j even) from scale bytes 4..15 */
DEVFN void k4_scales(GLOBAL const u16 *b, const int j, rv_u *sl, rv_u *ml, rv_u *sh, rv_u *mh)
{
    if (j < 4) {
        *sl = rp_byte(b, 4 + j) & 63u;
        *ml = rp_byte(b, 4 + j + 4) & 63u;
        *sh = rp_byte(b, 4 + j + 1) & 63u;
        *mh = rp_byte(b, 4 + j + 5) & 63u;
    } else {
        *sl = (rp_byte(b, 4 + j + 4) & 15u) | ((rp_byte(b, 4 + j - 4) >> 6u) << 4u);
        *ml = (rp_byte(b, 4 + j + 4) >> 4u) | ((rp_byte(b, 4 + j) >> 6u) << 4u);
        *sh = (rp_byte(b, 4 + j + 5) & 15u) | ((rp_byte(b, 4 + j - 3) >> 6u) << 4u);
        *mh = (rp_byte(b, 4 + j + 5) >> 4u) | ((rp_byte(b, 4 + j + 1) >> 6u) << 4u);
    }
}

/* Q4_K: words 0 d, 1 dmin, 2..7 the 12 scale bytes (bytes 4..15), 8..71 qs; 64-element chunk
 * c is 16 words, unit 2c the low nibbles and 2c + 1 the high ones (elements 2k and 2k + 1 in
 * word k) */
DEVFN rv_f rp_q4_k(GLOBAL const u16 *b, GLOBAL const float *xb, rv_f acc)
{
    rv_f d = rv_half_to_float(RPV(b, 0)), dmin = rv_half_to_float(RPV(b, 1));
    UNROLL      /* the scale numbers become constants */
    for (int c = 0; c < 4; c++) {
        rv_u sl, ml, sh, mh;            /* 6-bit scales and mins of units 2c and 2c + 1 */
        k4_scales(b, 2 * c, &sl, &ml, &sh, &mh);
        GLOBAL const float *xc = xb + 64 * c;
        float slo = sum_x(xc, 32), shi = sum_x(xc + 32, 32);
        rv_f pa = RV_F(0.0f), pb = pa, pc = pa, pd = pa;
        for (int k = 0; k < 16; k++) {
            rv_u q = RPV(b, 8 + 16 * c + k);
            pa = MAD(nib4(q, 0), xc[2 * k], pa);
            pb = MAD(nib4(q, 1), xc[2 * k + 32], pb);
            pc = MAD(nib4(q, 2), xc[2 * k + 1], pc);
            pd = MAD(nib4(q, 3), xc[2 * k + 33], pd);
        }
        rv_f qlo = ((pa + pc) - slo) * 16.0f, qhi = ((pb + pd) - shi) * 16.0f;
        rv_f dq = MAD(RV_CVT_F(sl), qlo, RV_CVT_F(sh) * qhi);
        rv_f mx = MAD(RV_CVT_F(ml), slo, RV_CVT_F(mh) * shi);
        acc = MAD(d, dq, acc) - dmin * mx;
    }
    return acc;
}

/* Q6_K: words 0..63 ql, 64..95 qh, 96..103 the 16 signed scale bytes, 104 d. In 128-element
 * half h, element 32 k + l (quarter k, l < 32) has the nibble of ql byte 64 h + 32 (k & 1) + l
 * (high nibble for k >= 2) and bits 2k, 2k + 1 of qh byte 32 h + l; scale 8 h + 2 k + l / 16. */
DEVFN rv_f rp_q6_k(GLOBAL const u16 *b, GLOBAL const float *xb, rv_f acc)
{
    rv_f d = rv_half_to_float(RPV(b, 104));
    UNROLL      /* the word and scale numbers become constants */
    for (int hs = 0; hs < 4; hs++) {    /* half h = hs >> 1, elements l0 .. l0 + 15 of it */
        const int h = hs >> 1, l0 = 16 * (hs & 1);
        const int wl = (64 * h + l0) / 2, wh = 64 + (32 * h + l0) / 2;
        const int s0 = 192 + 8 * h + (hs & 1);
        GLOBAL const float *xh = xb + 128 * h + l0;
        float sx[4];
        UNROLL
        for (int k = 0; k < 4; k++)
            sx[k] = sum_x(xh + 32 * k, 16);
        rv_f p0 = RV_F(0.0f), p1 = p0, p2 = p0, p3 = p0;      /* quarters 0..3 */
        for (int lw = 0; lw < 8; lw++) {    /* elements 2 lw (byte 0 of words) and 2 lw + 1 */
            rv_u qa = RPV(b, wl + lw), qb = RPV(b, wl + 16 + lw), qh = RPV(b, wh + lw);
            GLOBAL const float *x = xh + 2 * lw;
            p0 = MAD(q6v(qa, 0, qh, 0), x[0], p0);
            p1 = MAD(q6v(qb, 0, qh, 2), x[32], p1);
            p2 = MAD(q6v(qa, 4, qh, 4), x[64], p2);
            p3 = MAD(q6v(qb, 4, qh, 6), x[96], p3);
            p0 = MAD(q6v(qa, 8, qh, 8), x[1], p0);
            p1 = MAD(q6v(qb, 8, qh, 10), x[33], p1);
            p2 = MAD(q6v(qa, 12, qh, 12), x[65], p2);
            p3 = MAD(q6v(qb, 12, qh, 14), x[97], p3);
        }
        /* per quarter: sum (q - 32) x = 64 (p - sx) - 32 sx, times its signed scale */
        rv_f s = q6_scale(b, s0) * ((p0 - sx[0]) * 64.0f - 32.0f * sx[0]);
        s = MAD(q6_scale(b, s0 + 2), (p1 - sx[1]) * 64.0f - 32.0f * sx[1], s);
        s = MAD(q6_scale(b, s0 + 4), (p2 - sx[2]) * 64.0f - 32.0f * sx[2], s);
        s = MAD(q6_scale(b, s0 + 6), (p3 - sx[3]) * 64.0f - 32.0f * sx[3], s);
        acc = MAD(d, s, acc);
    }
    return acc;
}

DEVFN void mr_body(const int T, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, int n_rows,
                   int n_cols, GLOBAL const float *x, u64 x_off)
{
    int g = GLOBAL_ID(0);
    if (g * RP_ROWS >= n_rows)
        return;
    const int qk = type_qk(T), bw = type_bs(T) / 2;     /* elements and words per block */
    int nb = n_cols / qk;
    GLOBAL const u16 *grp = (GLOBAL const u16 *)w + (u64)g * RP_ROWS * nb * bw;
    rv_f acc = RV_F(0.0f);
    for (int j = 0; j < nb; j++) {
        GLOBAL const u16 *b = grp + (u64)j * bw * RP_ROWS;
        GLOBAL const float *xb = x + x_off + (u64)j * qk;
        rp_prefetch(b, bw);
        if (T == T_Q4_0 || T == T_Q4_1)
            acc = rp_q4_legacy(T, b, xb, acc);
        else if (T == T_Q8_0)
            acc = rp_q8_0(b, xb, acc);
        else if (T == T_Q4_K)
            acc = rp_q4_k(b, xb, acc);
        else
            acc = rp_q6_k(b, xb, acc);
    }
    rt_store(acc, y + y_off, g * RP_ROWS, n_rows);
}

#define MR_KERNEL(name, T)                                                                    \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, int n_rows, int n_cols,       \
                GLOBAL const float *x, u64 x_off, int n_tok)                                  \
    {                                                                                         \
        (void)n_tok;            /* one token: the signature of every mr_ and mrt_ kernel */   \
        mr_body(T, y, y_off, w, n_rows, n_cols, x, x_off);                                    \
    }

MR_KERNEL(mr_q4_0, T_Q4_0)
MR_KERNEL(mr_q4_1, T_Q4_1)
MR_KERNEL(mr_q8_0, T_Q8_0)
MR_KERNEL(mr_q4_k, T_Q4_K)
MR_KERNEL(mr_q6_k, T_Q6_K)

/* ---- any type, any token count: rt_block ----
 * A work-item multiplies its group's RP_ROWS rows with NT tokens: each word of a block is
 * decoded once into dequantized row vectors v = ONE_PLUS(q) * A + B (A, B per block or unit and
 * row, so that v is the element's value) and multiplied with every token's x. mrt_<type> (NT =
 * MRT_TOK, prefill) for the types above, and mr_<type> (NT = 1) for the others, whose decode
 * has no sum-of-x form here. Grid dim 1 is the token block; a token past n_tok reads the last
 * one and is not stored. */
#ifndef MRT_TOK
#define MRT_TOK 8
#endif
#define RT_ACC (MRT_TOK > 4 ? MRT_TOK : 4)

/* acc += v x[e] for the NT tokens; with one token, slot (0..3, compile-time) picks one of four
 * accumulators, so that consecutive products do not wait on each other */
DEVFN void rt_fma(const int NT, rv_f *acc, rv_f v, GLOBAL const float **xt, int e, const int slot)
{
    if (NT == 1) {
        acc[slot] = MAD(v, xt[0][e], acc[slot]);
        return;
    }
    UNROLL      /* a literal trip count: unrolled before NT is known, so acc stays in registers */
    for (int t = 0; t < MRT_TOK; t++)
        if (t < NT)
            acc[t] = MAD(v, xt[t][e], acc[t]);
}

/* A (1 + q / 2^n) + B for the n-bit value q at bits [23 - n, 23) of bits */
#define RT_V(bits, A, B) MAD(ONE_PLUS(bits), (A), (B))

/* the four nibbles of each of the n words from word w0 on: nibble 0 and 2 (low nibbles of the
 * word's bytes) are elements e0 + 2k and e0 + 2k + 1, nibbles 1 and 3 the same plus eh */
DEVFN void rt_nibbles(const int NT, GLOBAL const u16 *b, int w0, int n, rv_f A, rv_f B,
                      GLOBAL const float **xt, int e0, int eh, rv_f *acc)
{
    for (int k = 0; k < n; k++) {
        rv_u q = RPV(b, w0 + k);
        rt_fma(NT, acc, MAD(nib4(q, 0), A, B), xt, e0 + 2 * k, 0);
        rt_fma(NT, acc, MAD(nib4(q, 1), A, B), xt, e0 + 2 * k + eh, 1);
        rt_fma(NT, acc, MAD(nib4(q, 2), A, B), xt, e0 + 2 * k + 1, 2);
        rt_fma(NT, acc, MAD(nib4(q, 3), A, B), xt, e0 + 2 * k + 1 + eh, 3);
    }
}

/* Q5_0 / Q5_1: 5-bit values, the fifth bit e of the 32-bit qh (words qw, qw + 1) above nibble
 * e; element k and k + 16 as in Q4 */
DEVFN void rt_q5_legacy(const int NT, GLOBAL const u16 *b, int qw, rv_f A, rv_f B,
                        GLOBAL const float **xt, int c0, rv_f *acc)
{
    rv_u ql = RPV(b, qw), qh = RPV(b, qw + 1);
    for (int k = 0; k < 8; k++) {
        rv_u q = RPV(b, qw + 2 + k), hl = ql >> (u32)(2 * k), hh = qh >> (u32)(2 * k);
        rt_fma(NT, acc, RT_V(bits_to(q, 0, 4, 18) | bits_to(hl, 0, 1, 22), A, B), xt,
               c0 + 2 * k, 0);
        rt_fma(NT, acc, RT_V(bits_to(q, 4, 4, 18) | bits_to(hh, 0, 1, 22), A, B), xt,
               c0 + 2 * k + 16, 1);
        rt_fma(NT, acc, RT_V(bits_to(q, 8, 4, 18) | bits_to(hl, 1, 1, 22), A, B), xt,
               c0 + 2 * k + 1, 2);
        rt_fma(NT, acc, RT_V(bits_to(q, 12, 4, 18) | bits_to(hh, 1, 1, 22), A, B), xt,
               c0 + 2 * k + 17, 3);
    }
}


/* Q3_K: signed scale number i (0..15) from scale bytes 96..107 */
DEVFN rv_f k3_scale_v(GLOBAL const u16 *b, const int i)
{
    rv_u lo = i < 8 ? rp_byte(b, 96 + i) & 15u : rp_byte(b, 96 + i - 8) >> 4u;
    rv_u hi = (rp_byte(b, 104 + (i & 3)) >> (u32)(2 * (i >> 2))) & 3u;
    return RV_CVT_F(lo | (hi << 4u)) - 32.0f;
}

/* the block at b (elements c0 .. of the row) times the tokens */
DEVFN void rt_block(const int T, const int NT, GLOBAL const u16 *b, GLOBAL const float **xt,
                    int c0, rv_f *acc)
{
    if (T == T_Q4_0 || T == T_Q4_1) {
        /* 16 d (1 + q / 16) - 24 d = d (q - 8); Q4_1: 16 d (1 + q / 16) + m - 16 d = d q + m */
        rv_f d = rv_half_to_float(RPV(b, 0)), A = d * 16.0f;
        rv_f B = T == T_Q4_0 ? d * -24.0f : rv_half_to_float(RPV(b, 1)) - A;
        rt_nibbles(NT, b, T == T_Q4_0 ? 1 : 2, 8, A, B, xt, c0, 16, acc);
    } else if (T == T_Q5_0 || T == T_Q5_1) {
        /* 32 d (1 + q / 32) - 48 d = d (q - 16); Q5_1: d q + m */
        rv_f d = rv_half_to_float(RPV(b, 0)), A = d * 32.0f;
        rv_f B = T == T_Q5_0 ? d * -48.0f : rv_half_to_float(RPV(b, 1)) - A;
        rt_q5_legacy(NT, b, T == T_Q5_0 ? 1 : 2, A, B, xt, c0, acc);
    } else if (T == T_Q8_0) {
        /* 256 d (1 + (q + 128) / 256) - 384 d = d q */
        rv_f d = rv_half_to_float(RPV(b, 0)), A = d * 256.0f, B = d * -384.0f;
        for (int k = 0; k < 16; k += 2) {
            rv_u q = RPV(b, 1 + k) ^ 0x8080u, q2 = RPV(b, 2 + k) ^ 0x8080u;
            rt_fma(NT, acc, RT_V(bits_to(q, 0, 8, 15), A, B), xt, c0 + 2 * k, 0);
            rt_fma(NT, acc, RT_V(bits_to(q, 8, 8, 15), A, B), xt, c0 + 2 * k + 1, 1);
            rt_fma(NT, acc, RT_V(bits_to(q2, 0, 8, 15), A, B), xt, c0 + 2 * k + 2, 2);
            rt_fma(NT, acc, RT_V(bits_to(q2, 8, 8, 15), A, B), xt, c0 + 2 * k + 3, 3);
        }
    } else if (T == T_Q4_K || T == T_Q5_K) {
        /* unit j: ds q - dm = 2^n ds (1 + q / 2^n) - 2^n ds - dm; the low nibbles of chunk c's
         * bytes are unit j = 2c, the high ones unit j + 1; Q5_K's fifth bits: bit j of qh byte
         * l (bytes 16..47) */
        const float top = T == T_Q4_K ? 16.0f : 32.0f;
        const int sh = T == T_Q4_K ? 19 : 18, qs = T == T_Q4_K ? 8 : 24;
        rv_f d = rv_half_to_float(RPV(b, 0)), dmin = rv_half_to_float(RPV(b, 1));
        UNROLL      /* the scale numbers become constants */
        for (int c = 0; c < 4; c++) {
            rv_u sl, ml, shs, mh;
            k4_scales(b, 2 * c, &sl, &ml, &shs, &mh);
            rv_f al = d * RV_CVT_F(sl) * top, ah = d * RV_CVT_F(shs) * top;
            rv_f bl = al * -1.0f - dmin * RV_CVT_F(ml);
            rv_f bh = ah * -1.0f - dmin * RV_CVT_F(mh);
            for (int k = 0; k < 16; k++) {
                rv_u q = RPV(b, qs + 16 * c + k);
                rv_u h0 = RV_U(0u), h1 = h0, h2 = h0, h3 = h0;
                if (T == T_Q5_K) {
                    rv_u qh = RPV(b, 8 + k);
                    h0 = bits_to(qh, 2 * c, 1, 22);
                    h1 = bits_to(qh, 2 * c + 1, 1, 22);
                    h2 = bits_to(qh, 8 + 2 * c, 1, 22);
                    h3 = bits_to(qh, 9 + 2 * c, 1, 22);
                }
                int e = c0 + 64 * c + 2 * k;
                rt_fma(NT, acc, RT_V(bits_to(q, 0, 4, sh) | h0, al, bl), xt, e, 0);
                rt_fma(NT, acc, RT_V(bits_to(q, 4, 4, sh) | h1, ah, bh), xt, e + 32, 1);
                rt_fma(NT, acc, RT_V(bits_to(q, 8, 4, sh) | h2, al, bl), xt, e + 1, 2);
                rt_fma(NT, acc, RT_V(bits_to(q, 12, 4, sh) | h3, ah, bh), xt, e + 33, 3);
            }
        }
    } else if (T == T_Q2_K || T == T_Q3_K) {
        /* 128-element half h, plane p (bits 2p of qs byte l) is unit s = 4h + p, elements
         * 32 s + l; scale 2 s + (l >= 16). Q2_K: d sc q - dmin m (sc, m the scale byte's
         * nibbles), 2-bit q; Q3_K: d sc (q - 4), q's third bit bit s of hmask byte l */
        rv_f d = rv_half_to_float(RPV(b, T == T_Q2_K ? 40 : 54));
        rv_f dmin = T == T_Q2_K ? rv_half_to_float(RPV(b, 41)) : d;
        const int qw = T == T_Q2_K ? 8 : 16;
        UNROLL
        for (int hg = 0; hg < 4; hg++) {    /* half h = hg >> 1, elements l of 16 (hg & 1) on */
            const int h = hg >> 1, g = hg & 1;
            rv_f A[4], B[4];
            UNROLL
            for (int p = 0; p < 4; p++) {
                const int s = 4 * h + p;
                if (T == T_Q2_K) {
                    rv_u sc = rp_byte(b, 2 * s + g);
                    A[p] = d * RV_CVT_F(sc & 15u) * 4.0f;
                    B[p] = A[p] * -1.0f - dmin * RV_CVT_F(sc >> 4u);
                } else {
                    A[p] = d * k3_scale_v(b, 2 * s + g) * 8.0f;
                    B[p] = A[p] * -1.5f;
                }
            }
            for (int k = 0; k < 8; k++) {   /* bytes l = 16 g + 2k and 16 g + 2k + 1 */
                int kw = 8 * g + k, e = c0 + 128 * h + 16 * g + 2 * k;
                rv_u q = RPV(b, qw + 16 * h + kw);
                rv_u hm = T == T_Q3_K ? RPV(b, kw) : RV_U(0u);
                UNROLL
                for (int p = 0; p < 4; p++)
                    UNROLL
                    for (int by = 0; by < 2; by++) {
                        rv_u bits = T == T_Q2_K
                                        ? bits_to(q, 8 * by + 2 * p, 2, 21)
                                        : bits_to(q, 8 * by + 2 * p, 2, 20) |
                                              bits_to(hm, 8 * by + 4 * h + p, 1, 22);
                        rt_fma(NT, acc, RT_V(bits, A[p], B[p]), xt, e + 32 * p + by, p);
                    }
            }
        }
    } else if (T == T_Q6_K) {  /* d sc (q - 32) = 64 d sc (1 + q / 64) - 96 d sc */
        rv_f d = rv_half_to_float(RPV(b, 104));
        UNROLL
        for (int hs = 0; hs < 4; hs++) {
            const int h = hs >> 1, l0 = 16 * (hs & 1);
            const int wl = (64 * h + l0) / 2, wh = 64 + (32 * h + l0) / 2;
            const int s0 = 192 + 8 * h + (hs & 1);
            rv_f a[4], bb[4];
            UNROLL
            for (int k = 0; k < 4; k++) {
                a[k] = d * q6_scale(b, s0 + 2 * k) * 64.0f;
                bb[k] = a[k] * -1.5f;
            }
            int e = c0 + 128 * h + l0;
            for (int lw = 0; lw < 8; lw++, e += 2) {
                rv_u qa = RPV(b, wl + lw), qb = RPV(b, wl + 16 + lw), qh = RPV(b, wh + lw);
                rt_fma(NT, acc, MAD(q6v(qa, 0, qh, 0), a[0], bb[0]), xt, e, 0);
                rt_fma(NT, acc, MAD(q6v(qb, 0, qh, 2), a[1], bb[1]), xt, e + 32, 1);
                rt_fma(NT, acc, MAD(q6v(qa, 4, qh, 4), a[2], bb[2]), xt, e + 64, 2);
                rt_fma(NT, acc, MAD(q6v(qb, 4, qh, 6), a[3], bb[3]), xt, e + 96, 3);
                rt_fma(NT, acc, MAD(q6v(qa, 8, qh, 8), a[0], bb[0]), xt, e + 1, 0);
                rt_fma(NT, acc, MAD(q6v(qb, 8, qh, 10), a[1], bb[1]), xt, e + 33, 1);
                rt_fma(NT, acc, MAD(q6v(qa, 12, qh, 12), a[2], bb[2]), xt, e + 65, 2);
                rt_fma(NT, acc, MAD(q6v(qb, 12, qh, 14), a[3], bb[3]), xt, e + 97, 3);
            }
        }
    } else {    /* F16, BF16, F32: 8 elements a block */
        UNROLL
        for (int k = 0; k < 8; k++) {
            rv_f v;
            if (T == T_F16)
                v = rv_half_to_float(RPV(b, k));
            else if (T == T_BF16)
                v = RV_AS_F(RPV(b, k) << 16u);
            else
                v = RV_AS_F(RPV(b, 2 * k) | (RPV(b, 2 * k + 1) << 16u));
            rt_fma(NT, acc, v, xt, c0 + k, k & 3);
        }
    }
}

/* one token (x) times the row group at grp (nb blocks a row): four accumulators, summed */
DEVFN rv_f rt_one(const int T, GLOBAL const u16 *grp, int nb, GLOBAL const float *x)
{
    const int qk = type_qk(T), bw = type_bs(T) / 2;
    GLOBAL const float *xt[MRT_TOK];
    xt[0] = x;
    rv_f acc[RT_ACC];
    UNROLL
    for (int t = 0; t < RT_ACC; t++)
        acc[t] = RV_F(0.0f);
    for (int j = 0; j < nb; j++) {
        GLOBAL const u16 *b = grp + (u64)j * bw * RP_ROWS;
        rp_prefetch(b, bw);
        rt_block(T, 1, b, xt, j * qk, acc);
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}


DEVFN void mrt_body(const int T, const int NT, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w,
                    int n_rows, int n_cols, GLOBAL const float *x, u64 x_off, int n_tok)
{
    int g = GLOBAL_ID(0), tok0 = GROUP_ID(1) * NT;
    if (g * RP_ROWS >= n_rows)
        return;
    const int qk = type_qk(T), bw = type_bs(T) / 2;
    int nb = n_cols / qk;
    GLOBAL const u16 *grp = (GLOBAL const u16 *)w + (u64)g * RP_ROWS * nb * bw;
    if (NT == 1) {
        rt_store(rt_one(T, grp, nb, x + x_off + (u64)tok0 * n_cols),
                 y + y_off + (u64)tok0 * n_rows, g * RP_ROWS, n_rows);
        return;
    }
    GLOBAL const float *xt[MRT_TOK];
    rv_f acc[RT_ACC];
    UNROLL
    for (int t = 0; t < RT_ACC; t++)
        acc[t] = RV_F(0.0f);
    UNROLL
    for (int t = 0; t < MRT_TOK; t++) {
        int tok = tok0 + t < n_tok ? tok0 + t : n_tok - 1;
        xt[t] = x + x_off + (u64)tok * n_cols;
    }
    for (int j = 0; j < nb; j++)
        rt_block(T, NT, grp + (u64)j * bw * RP_ROWS, xt, j * qk, acc);
    for (int t = 0; t < NT; t++)
        if (tok0 + t < n_tok)
            rt_store(acc[t], y + y_off + (u64)(tok0 + t) * n_rows, g * RP_ROWS, n_rows);
}

#define MRT_KERNEL(name, T, NT)                                                               \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, int n_rows, int n_cols,       \
                GLOBAL const float *x, u64 x_off, int n_tok)                                  \
    {                                                                                         \
        mrt_body(T, NT, y, y_off, w, n_rows, n_cols, x, x_off, n_tok);                        \
    }

MRT_KERNEL(mrt_f32, T_F32, MRT_TOK)
MRT_KERNEL(mrt_f16, T_F16, MRT_TOK)
MRT_KERNEL(mrt_bf16, T_BF16, MRT_TOK)
MRT_KERNEL(mrt_q4_0, T_Q4_0, MRT_TOK)
MRT_KERNEL(mrt_q4_1, T_Q4_1, MRT_TOK)
MRT_KERNEL(mrt_q5_0, T_Q5_0, MRT_TOK)
MRT_KERNEL(mrt_q5_1, T_Q5_1, MRT_TOK)
MRT_KERNEL(mrt_q8_0, T_Q8_0, MRT_TOK)
MRT_KERNEL(mrt_q2_k, T_Q2_K, MRT_TOK)
MRT_KERNEL(mrt_q3_k, T_Q3_K, MRT_TOK)
MRT_KERNEL(mrt_q4_k, T_Q4_K, MRT_TOK)
MRT_KERNEL(mrt_q5_k, T_Q5_K, MRT_TOK)
MRT_KERNEL(mrt_q6_k, T_Q6_K, MRT_TOK)
/* one token for the types without a sum-of-x decode above (same arguments as mrt_) */
MRT_KERNEL(mr_f32, T_F32, 1)
MRT_KERNEL(mr_f16, T_F16, 1)
MRT_KERNEL(mr_bf16, T_BF16, 1)
MRT_KERNEL(mr_q5_0, T_Q5_0, 1)
MRT_KERNEL(mr_q5_1, T_Q5_1, 1)
MRT_KERNEL(mr_q2_k, T_Q2_K, 1)
MRT_KERNEL(mr_q3_k, T_Q3_K, 1)
MRT_KERNEL(mr_q5_k, T_Q5_K, 1)

/* ---- mixture of experts: mre_<type> ----
 * matvec.cl's me_ over the row packs of a stack of n_mat matrices packed as one matrix of
 * n_mat * n_rows rows (n_rows a multiple of RP_ROWS, so that no group spans two matrices):
 * work-item g of token t (grid dim 1) takes row group g of matrix ids[t][j] for each slot j. */
DEVFN void mre_body(const int T, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, int n_mat,
                    int n_rows, int n_cols, GLOBAL const float *x, u64 x_off, int x_per_slot,
                    GLOBAL const i32 *ids, u64 ids_off, int has_ids, GLOBAL const float *wts,
                    u64 wts_off, int has_wts, int k)
{
    int g = GLOBAL_ID(0), t = GROUP_ID(1);
    if (g * RP_ROWS >= n_rows)
        return;
    const int bw = type_bs(T) / 2;
    int nb = n_cols / type_qk(T);
    rv_f total = RV_F(0.0f);
    for (int j = 0; j < k; j++) {
        u64 slot = (u64)t * k + j;
        int e = has_ids ? ids[ids_off + slot] : j;
        rv_f part = RV_F(0.0f);
        if (e >= 0 && e < n_mat) {
            u64 grp = ((u64)e * (n_rows / RP_ROWS) + g) * RP_ROWS * nb * bw;
            part = rt_one(T, (GLOBAL const u16 *)w + grp, nb,
                          x + x_off + (x_per_slot ? slot : (u64)t) * n_cols);
        }
        if (has_wts)
            total = MAD(part, wts[wts_off + slot], total);
        else
            rt_store(part, y + y_off + slot * n_rows, g * RP_ROWS, n_rows);
    }
    if (has_wts)
        rt_store(total, y + y_off + (u64)t * n_rows, g * RP_ROWS, n_rows);
}

#define MRE_KERNEL(name, T)                                                                   \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, int n_mat, int n_rows,        \
                int n_cols, GLOBAL const float *x, u64 x_off, int x_per_slot,                 \
                GLOBAL const i32 *ids, u64 ids_off, int has_ids, GLOBAL const float *wts,     \
                u64 wts_off, int has_wts, int k)                                              \
    {                                                                                         \
        mre_body(T, y, y_off, w, n_mat, n_rows, n_cols, x, x_off, x_per_slot, ids, ids_off,   \
                 has_ids, wts, wts_off, has_wts, k);                                          \
    }

MRE_KERNEL(mre_f32, T_F32)
MRE_KERNEL(mre_f16, T_F16)
MRE_KERNEL(mre_bf16, T_BF16)
MRE_KERNEL(mre_q4_0, T_Q4_0)
MRE_KERNEL(mre_q4_1, T_Q4_1)
MRE_KERNEL(mre_q5_0, T_Q5_0)
MRE_KERNEL(mre_q5_1, T_Q5_1)
MRE_KERNEL(mre_q8_0, T_Q8_0)
MRE_KERNEL(mre_q2_k, T_Q2_K)
MRE_KERNEL(mre_q3_k, T_Q3_K)
MRE_KERNEL(mre_q4_k, T_Q4_K)
MRE_KERNEL(mre_q5_k, T_Q5_K)
MRE_KERNEL(mre_q6_k, T_Q6_K)

/* The row packs of a matrix: src (rows of row_bytes bytes, the first words_per_row words of
 * each are its blocks) into dst in the layout above. Work-item (w, g) moves word w of the
 * RP_ROWS rows of group g; rows past n_rows become zeros. Launch: global (words_per_row,
 * groups), any local size. */
KERNEL rp_pack(GLOBAL u16 *dst, GLOBAL const u8 *src, u64 src_off, u64 row_bytes,
               int words_per_row, int n_rows)
{
    int w = GLOBAL_ID(0), g = GLOBAL_ID(1);
    if (w >= words_per_row)
        return;
    GLOBAL u16 *d = dst + ((u64)g * words_per_row + w) * RP_ROWS;
    for (int r = 0; r < RP_ROWS; r++) {
        int row = g * RP_ROWS + r;
        d[r] = row < n_rows ? ((GLOBAL const u16 *)(src + src_off + (u64)row * row_bytes))[w]
                            : (u16)0;
    }
}
