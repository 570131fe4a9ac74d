/* matvec.cl - matrix times a few vectors: y[t][r] = sum_c W[r][c] * x[t][c], W in its GGUF
 * block format, x float32 (no requantization). Two kernels per weight type:
 * mv_<type>: one token per work-item (decode);
 * mt_<type>: MT_TOK tokens per work-item, each weight unit decoded once for all of them (prefill
 *   on CPU devices, where it beats the tiled matmul.cl: no local memory, no barriers);
 * me_<type>: mixture of experts, per token t and slot j < k the matrix ids[t][j] of a stack
 *   (rows of matrix e at e * mat_stride) times x[t] (or x[t][j]); with weights the k products
 *   are summed, y[t] = sum_j weights[t][j] * W[ids[t][j]] x, else y[t][j] = W[ids[t][j]] x.
 *   An id outside [0, n_mat) contributes zeros. Grid dim 1 is the token.
 * Launch: global (ceil(n_rows / MV_ROWS) * lsz, ceil(n_tok / tokens per work-item)),
 * local (lsz, 1), lsz a power of two <= 256. A work-group owns MV_ROWS rows: its work-items
 * split into MV_ROWS teams, each team walks one row unit by unit (units of consecutive
 * elements, see dequant.h), so neighbouring work-items read neighbouring bytes; partial sums
 * meet in a local-memory tree. Each work-item keeps one accumulator per element of a unit
 * (mt_: MT_LANES per token): independent chains that a CPU compiler turns into SIMD.
 * CPU devices (MV_SOLO 1): teams of one, MV_ROWS = lsz; the legacy types' half scales are
 * decoded MV_GROUP blocks at a time (one vector, not two scalar conversions per block).
 * Tuning: MV_ROWS (rows per work-group, power of two, default 1), MT_TOK (default 4), MV_SOLO
 * (default 0), the local size (host). */

#ifndef MV_ROWS
#define MV_ROWS 1
#endif
#define MV_MAX_LSZ 256

#ifndef MT_TOK
#define MT_TOK 4
#endif

/* MV_SOLO 1 (CPU devices): every work-item owns whole rows (MV_ROWS = the local size, teams of
 * one), so there is no local memory and no barrier: a CPU runtime runs the work-group as one
 * loop over its rows. */
#ifndef MV_SOLO
#define MV_SOLO 0
#endif
#define MV_GROUP 16     /* MV_SOLO: legacy blocks whose scales are decoded together */
#ifndef MV_PREFETCH
#define MV_PREFETCH 2048 /* MV_SOLO: bytes of its row ahead that a work-item asks to be fetched */
#endif
#define MT_LANES 8      /* mt_<type>: accumulator lanes per token (a power of two <= 32) */

/* acc[0] + ... + acc[n-1], n a power of two <= MAX_SUB, as a tree: log2(n) steps of
 * independent adds that vectorize, rather than a chain of n dependent adds */
DEVFN float sum_acc(float *acc, const int n)
{
    UNROLL
    for (int h = MAX_SUB / 2; h > 0; h >>= 1)
        if (2 * h <= n) {
            UNROLL
            for (int i = 0; i < h; i++)
                acc[i] += acc[i + h];
        }
    return acc[0];
}

/* d and m (legacy_m) of the MV_GROUP legacy blocks at gb: unrolled, so the integer half
 * decode of all of them becomes a few vector operations */
DEVFN void group_scales(const int T, GLOBAL const u8 *gb, float *dg, float *mg)
{
    const int bs = type_bs(T);
    UNROLL
    for (int j = 0; j < MV_GROUP; j++)
        dg[j] = half_bits_to_float(legacy_d_bits(gb + j * bs));
    UNROLL
    for (int j = 0; j < MV_GROUP; j++)
        mg[j] = legacy_m(T, dg[j], half_bits_to_float(legacy_m_bits(T, gb + j * bs)));
}

/* partial dot of row wr with x over this work-item's units (fused decode) */
DEVFN float row_dot(const int T, GLOBAL const u8 *wr, GLOBAL const float *xt, int n_cols, int tl,
                    int team)
{
    const int sub = type_sub(T), upb = type_qk(T) / sub, bs = type_bs(T);
    int n_units = n_cols / sub;
    float acc[MAX_SUB], s = 0.0f;
    UNROLL
    for (int i = 0; i < MAX_SUB; i++)
        acc[i] = 0.0f;
    int u = tl;
#if MV_SOLO
    /* a legacy type has a half scale per 32 elements: decoded one at a time, the two scales
     * cost more than the 32 products; a group's scales decode as one vector */
    if (type_legacy(T))
        for (; u + MV_GROUP <= n_units; u += MV_GROUP) {
            GLOBAL const u8 *gb = wr + (u64)u * bs;
            GLOBAL const float *gx = xt + (u64)u * sub;
            float dg[MV_GROUP], mg[MV_GROUP];
            for (int o = 0; o < MV_GROUP * bs; o += 64)
                PREFETCH(gb + MV_PREFETCH + o);
            group_scales(T, gb, dg, mg);
            for (int j = 0; j < MV_GROUP; j++)
                unit_op_dm(T, gb + j * bs, 0, acc, gx + j * sub, 1, dg[j], mg[j]);
        }
#endif
#if MV_SOLO
    /* a K-quant super-block's units unrolled: their scale numbers and shifts fold into
     * constants and the super-block's half scales decode once */
    if (upb > 1)
        for (; u + upb <= n_units; u += upb) {
            GLOBAL const u8 *b = wr + (u64)(u / upb) * bs;
            for (int o = 0; o < bs; o += 64)
                PREFETCH(b + MV_PREFETCH + o);
            UNROLL
            for (int k = 0; k < 8; k++)
                if (k < upb)
                    dot_unit(T, b, k, xt + (u + k) * sub, acc);
        }
#endif
    for (; u < n_units; u += team)
        dot_unit(T, wr + (u / upb) * bs, u % upb, xt + u * sub, acc);
    if (type_plain(T))
        for (int c = n_units * sub + tl; c < n_cols; c += team)
            s = MAD(load_elem(T, wr, c), xt[c], s);
    return s + sum_acc(acc, sub);
}

/* the team's sum of s (lid's share) in red[lid - tl]; all work-items must call it */
DEVFN float team_sum(float s, LOCAL float *red, int lid, int tl, int team)
{
#if MV_SOLO
    return s;
#else
    red[lid] = s;
    BARRIER();
    for (int k = team / 2; k > 0; k >>= 1) {
        if (tl < k)
            red[lid] += red[lid + k];
        BARRIER();
    }
    s = red[lid - tl];
    BARRIER();
    return s;
#endif
}

/* this work-item's row, its place in the row's team and the team size */
#if MV_SOLO
#define MV_PLACE(r, tl, team) \
    int team = 1, tl = 0, r = GROUP_ID(0) * LOCAL_SIZE(0) + lid
#else
#define MV_PLACE(r, tl, team) \
    int team = LOCAL_SIZE(0) / MV_ROWS, tl = lid % team, r = GROUP_ID(0) * MV_ROWS + lid / team
#endif

/* the products of one decoded unit v (elements c0 .. c0+sub-1) with NT tokens' x: each token
 * accumulates into MT_LANES lanes, so MT_TOK tokens' accumulators fit in registers */
DEVFN void unit_tokens(const int NT, const int sub, const float *v, GLOBAL const float **xt,
                       int c0, float acc[MT_TOK][MT_LANES])
{
    UNROLL
    for (int t = 0; t < NT; t++) {
        GLOBAL const float *xs = xt[t] + c0;
        UNROLL
        for (int i = 0; i < MAX_SUB; i++)
            if (i < sub)
                acc[t][i % MT_LANES] = MAD(v[i], xs[i], acc[t][i % MT_LANES]);
    }
}

/* row wr times NT tokens (xt[t]) over this work-item's units: the weight decoded once for
 * all tokens; plain types' tail elements go to sum[t] */
DEVFN void row_tokens(const int T, const int NT, GLOBAL const u8 *wr, GLOBAL const float **xt,
                      int n_cols, int tl, int team, float acc[MT_TOK][MT_LANES], float *sum)
{
    const int sub = type_sub(T), upb = type_qk(T) / sub, bs = type_bs(T);
    int n_units = n_cols / sub, u = tl;
    float v[MAX_SUB];
#if MV_SOLO
    if (type_legacy(T))         /* the scales of a group decode as one vector (row_dot) */
        for (; u + MV_GROUP <= n_units; u += MV_GROUP) {
            GLOBAL const u8 *gb = wr + (u64)u * bs;
            float dg[MV_GROUP], mg[MV_GROUP];
            group_scales(T, gb, dg, mg);
            for (int j = 0; j < MV_GROUP; j++) {
                unit_op_dm(T, gb + j * bs, 0, v, (GLOBAL const float *)0, 0, dg[j], mg[j]);
                unit_tokens(NT, sub, v, xt, (u + j) * sub, acc);
            }
        }
#endif
    for (; u < n_units; u += team) {
        deq_unit(T, wr + (u / upb) * bs, u % upb, v);
        unit_tokens(NT, sub, v, xt, u * sub, acc);
    }
    if (type_plain(T))
        for (int t = 0; t < NT; t++)
            for (int c = n_units * sub + tl; c < n_cols; c += team)
                sum[t] = MAD(load_elem(T, wr, c), xt[t][c], sum[t]);
}

DEVFN void mv_body(const int T, const int NT, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w,
                   u64 w_off, u64 row_bytes, int n_rows, int n_cols, GLOBAL const float *x,
                   u64 x_off, int n_tok, LOCAL float *red)
{
    int lid = LOCAL_ID(0), tok0 = GROUP_ID(1) * NT;
    MV_PLACE(r, tl, team);
    float acc[MT_TOK][MT_LANES], sum[MT_TOK];
    UNROLL
    for (int t = 0; t < MT_TOK; t++) {
        sum[t] = 0.0f;
        UNROLL
        for (int i = 0; i < MT_LANES; i++)
            acc[t][i] = 0.0f;
    }
    GLOBAL const u8 *wr = w + w_off + (u64)(r < n_rows ? r : 0) * row_bytes;
    if (r < n_rows && NT == 1) {            /* decode: fused with the products */
        sum[0] = row_dot(T, wr, x + x_off + (u64)tok0 * n_cols, n_cols, tl, team);
    } else if (r < n_rows) {
        GLOBAL const float *xt[MT_TOK];
        UNROLL
        for (int t = 0; t < MT_TOK; t++) {
            /* a token past the end reads the last one and is not stored */
            int tok = tok0 + t < n_tok ? tok0 + t : n_tok - 1;
            xt[t] = x + x_off + (u64)tok * n_cols;
        }
        row_tokens(T, NT, wr, xt, n_cols, tl, team, acc, sum);
    }
    UNROLL
    for (int t = 0; t < NT; t++) {
        float s = NT == 1 ? sum[t] : sum[t] + sum_acc(acc[t], MT_LANES);
        s = team_sum(s, red, lid, tl, team);
        if (tl == 0 && r < n_rows && tok0 + t < n_tok)
            y[y_off + (u64)(tok0 + t) * n_rows + r] = s;
    }
}

DEVFN void me_body(const int T, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off,
                   u64 row_bytes, u64 mat_stride, int n_mat, int n_rows, int n_cols,
                   GLOBAL const float *x, u64 x_off, int x_per_slot, GLOBAL const i32 *ids,
                   u64 ids_off, int has_ids, GLOBAL const float *wts, u64 wts_off, int has_wts,
                   int k, LOCAL float *red)
{
    int lid = LOCAL_ID(0), t = GROUP_ID(1);
    MV_PLACE(r, tl, team);
    float total = 0.0f;
    for (int j = 0; j < k; j++) {
        u64 slot = (u64)t * k + j;
        int e = has_ids ? ids[ids_off + slot] : j;  /* the same for the whole work-group */
        float part = 0.0f;
        if (r < n_rows && e >= 0 && e < n_mat)
            part = row_dot(T, w + w_off + (u64)e * mat_stride + (u64)r * row_bytes,
                           x + x_off + (x_per_slot ? slot : (u64)t) * n_cols, n_cols, tl, team);
        part = team_sum(part, red, lid, tl, team);
        if (tl == 0 && r < n_rows) {
            if (has_wts)
                total += wts[wts_off + slot] * part;
            else
                y[y_off + slot * n_rows + r] = part;
        }
    }
    if (has_wts && tl == 0 && r < n_rows)
        y[y_off + (u64)t * n_rows + r] = total;
}

#define ME_KERNEL(name, T)                                                                    \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off, u64 row_bytes,     \
                u64 mat_stride, int n_mat, int n_rows, int n_cols, GLOBAL const float *x,     \
                u64 x_off, int x_per_slot, GLOBAL const i32 *ids, u64 ids_off, int has_ids,   \
                GLOBAL const float *wts, u64 wts_off, int has_wts, int k)                     \
    {                                                                                         \
        LOCAL_ARRAY(float, red, MV_MAX_LSZ);                                                  \
        me_body(T, y, y_off, w, w_off, row_bytes, mat_stride, n_mat, n_rows, n_cols, x, x_off, \
                x_per_slot, ids, ids_off, has_ids, wts, wts_off, has_wts, k, red);            \
    }

#define MV_KERNEL(name, T, NT)                                                                \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off, u64 row_bytes,     \
                int n_rows, int n_cols, GLOBAL const float *x, u64 x_off, int n_tok)          \
    {                                                                                         \
        LOCAL_ARRAY(float, red, MV_MAX_LSZ);                                                  \
        mv_body(T, NT, y, y_off, w, w_off, row_bytes, n_rows, n_cols, x, x_off, n_tok, red);  \
    }

#define MV_KERNELS(mv, mt, me, T) MV_KERNEL(mv, T, 1) MV_KERNEL(mt, T, MT_TOK) ME_KERNEL(me, T)

MV_KERNELS(mv_f32, mt_f32, me_f32, T_F32)
MV_KERNELS(mv_f16, mt_f16, me_f16, T_F16)
MV_KERNELS(mv_bf16, mt_bf16, me_bf16, T_BF16)
MV_KERNELS(mv_q4_0, mt_q4_0, me_q4_0, T_Q4_0)
MV_KERNELS(mv_q4_1, mt_q4_1, me_q4_1, T_Q4_1)
MV_KERNELS(mv_q5_0, mt_q5_0, me_q5_0, T_Q5_0)
MV_KERNELS(mv_q5_1, mt_q5_1, me_q5_1, T_Q5_1)
MV_KERNELS(mv_q8_0, mt_q8_0, me_q8_0, T_Q8_0)
MV_KERNELS(mv_q2_k, mt_q2_k, me_q2_k, T_Q2_K)
MV_KERNELS(mv_q3_k, mt_q3_k, me_q3_k, T_Q3_K)
MV_KERNELS(mv_q4_k, mt_q4_k, me_q4_k, T_Q4_K)
MV_KERNELS(mv_q5_k, mt_q5_k, me_q5_k, T_Q5_K)
MV_KERNELS(mv_q6_k, mt_q6_k, me_q6_k, T_Q6_K)
