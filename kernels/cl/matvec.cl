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
 * meet in a local-memory tree. Each work-item keeps one accumulator per element of a unit:
 * independent chains that a CPU compiler turns into SIMD.
 * Tuning: MV_ROWS (rows per work-group, power of two, default 1), MT_TOK (default 4), the
 * local size (host). */

#ifndef MV_ROWS
#define MV_ROWS 1
#endif
#define MV_MAX_LSZ 256

#ifndef MT_TOK
#define MT_TOK 4
#endif

/* partial dot of row wr with x over this work-item's units (fused decode) */
DEVFN float row_dot(const int T, GLOBAL const u8 *wr, GLOBAL const float *xt, int n_cols, int tl,
                    int team)
{
    const int sub = type_sub(T), upb = type_qk(T) / sub, bs = type_bs(T);
    int n_units = n_cols / sub;
    float acc[MAX_SUB], s = 0.0f;
    for (int i = 0; i < sub; i++)
        acc[i] = 0.0f;
    for (int u = tl; u < n_units; u += team)
        dot_unit(T, wr + (u / upb) * bs, u % upb, xt + u * sub, acc);
    if (type_plain(T))
        for (int c = n_units * sub + tl; c < n_cols; c += team)
            s = MAD(load_elem(T, wr, c), xt[c], s);
    for (int i = 0; i < sub; i++)
        s += acc[i];
    return s;
}

DEVFN void mv_body(const int T, const int NT, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w,
                   u64 w_off, u64 row_bytes, int n_rows, int n_cols, GLOBAL const float *x,
                   u64 x_off, int n_tok, LOCAL float *red)
{
    const int sub = type_sub(T), upb = type_qk(T) / sub, bs = type_bs(T);
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0), team = lsz / MV_ROWS;
    int r = GROUP_ID(0) * MV_ROWS + lid / team, tl = lid % team, tok0 = GROUP_ID(1) * NT;
    int n_units = n_cols / sub;
    float acc[MT_TOK][MAX_SUB], v[MAX_SUB], sum[MT_TOK];
    for (int t = 0; t < NT; t++) {
        sum[t] = 0.0f;
        for (int i = 0; i < sub; i++)
            acc[t][i] = 0.0f;
    }
    if (r < n_rows && NT == 1) {            /* decode: fused with the products */
        sum[0] = row_dot(T, w + w_off + (u64)r * row_bytes, x + x_off + (u64)tok0 * n_cols,
                         n_cols, tl, team);
    } else if (r < n_rows) {
        GLOBAL const u8 *wr = w + w_off + (u64)r * row_bytes;
        for (int u = tl; u < n_units; u += team) {
            deq_unit(T, wr + (u / upb) * bs, u % upb, v);
            for (int t = 0; t < NT; t++) {
                /* a token past the end reads the last one and is not stored */
                int tok = tok0 + t < n_tok ? tok0 + t : n_tok - 1;
                GLOBAL const float *xs = x + x_off + (u64)tok * n_cols + u * sub;
                for (int i = 0; i < sub; i++)
                    acc[t][i] = MAD(v[i], xs[i], acc[t][i]);
            }
        }
        if (type_plain(T))
            for (int t = 0; t < NT; t++) {
                int tok = tok0 + t < n_tok ? tok0 + t : n_tok - 1;
                GLOBAL const float *xt = x + x_off + (u64)tok * n_cols;
                for (int c = n_units * sub + tl; c < n_cols; c += team)
                    sum[t] = MAD(load_elem(T, wr, c), xt[c], sum[t]);
            }
    }
    for (int t = 0; t < NT; t++) {
        float s = sum[t];
        for (int i = 0; i < sub; i++)
            s += acc[t][i];
        red[lid] = s;
        BARRIER();
        for (int k = team / 2; k > 0; k >>= 1) {
            if (tl < k)
                red[lid] += red[lid + k];
            BARRIER();
        }
        if (tl == 0 && r < n_rows && tok0 + t < n_tok)
            y[y_off + (u64)(tok0 + t) * n_rows + r] = red[lid];
        BARRIER();
    }
}

DEVFN void me_body(const int T, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off,
                   u64 row_bytes, u64 mat_stride, int n_mat, int n_rows, int n_cols,
                   GLOBAL const float *x, u64 x_off, int x_per_slot, GLOBAL const i32 *ids,
                   u64 ids_off, int has_ids, GLOBAL const float *wts, u64 wts_off, int has_wts,
                   int k, LOCAL float *red)
{
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0), team = lsz / MV_ROWS;
    int r = GROUP_ID(0) * MV_ROWS + lid / team, tl = lid % team, t = GROUP_ID(1);
    float total = 0.0f;
    for (int j = 0; j < k; j++) {
        u64 slot = (u64)t * k + j;
        int e = has_ids ? ids[ids_off + slot] : j;  /* the same for the whole work-group */
        float part = 0.0f;
        if (r < n_rows && e >= 0 && e < n_mat)
            part = row_dot(T, w + w_off + (u64)e * mat_stride + (u64)r * row_bytes,
                           x + x_off + (x_per_slot ? slot : (u64)t) * n_cols, n_cols, tl, team);
        red[lid] = part;
        BARRIER();
        for (int h = team / 2; h > 0; h >>= 1) {
            if (tl < h)
                red[lid] += red[lid + h];
            BARRIER();
        }
        if (tl == 0 && r < n_rows) {
            if (has_wts)
                total += wts[wts_off + slot] * red[lid];
            else
                y[y_off + slot * n_rows + r] = red[lid];
        }
        BARRIER();
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
