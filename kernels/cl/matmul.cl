/* matmul.cl - prefill matrix products y[t][r] = sum_c W[r][c] * x[t][c] for many tokens, one
 * kernel per weight type: mm_<type>. Each work-group computes an MM_TR x MM_TT tile of y
 * (rows x tokens): per step of MM_TK columns it decodes the W tile into local memory once
 * (the dequantization is shared by all MM_TT tokens) and loads the x tile beside it; each
 * work-item then accumulates an MM_MR x MM_MT block of the tile in registers.
 * Launch: global (ceil(n_rows/MM_TR) * L, ceil(n_tok/MM_TT)), local (L, 1),
 * L = (MM_TR/MM_MR) * (MM_TT/MM_MT).
 * Tuning: MM_TR, MM_TT (tile), MM_MR, MM_MT (per work-item block), MM_TK (k step: a multiple
 * of 32 that divides 256, so a step covers whole units of every type), MM_TOK_CONTIG (a
 * work-item's tokens contiguous rather than interleaved). */

#ifndef MM_TR
#define MM_TR 64
#endif
#ifndef MM_TT
#define MM_TT 32
#endif
#ifndef MM_MR
#define MM_MR 4
#endif
#ifndef MM_MT
#define MM_MT 4
#endif
#ifndef MM_TK
#define MM_TK 32
#endif
#ifndef MM_TOK_CONTIG
#define MM_TOK_CONTIG 0
#endif
#define MM_NR (MM_TR / MM_MR)   /* work-items along rows */
#define MM_NT (MM_TT / MM_MT)   /* work-items along tokens */
/* token j of a work-item's block, inside the tile: interleaved with the other work-items
 * (GPUs: neighbours read neighbouring local words) or contiguous (CPUs: one SIMD run) */
#define MM_TOK(j) (MM_TOK_CONTIG ? wt * MM_MT + (j) : wt + (j) * MM_NT)

DEVFN void mm_body(const int T, GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off,
                   u64 row_bytes, int n_rows, int n_cols, GLOBAL const float *x, u64 x_off,
                   int n_tok, LOCAL float *ws, LOCAL float *xs)
{
    const int sub = type_sub(T), qk = type_qk(T), bs = type_bs(T);
    const int ups = MM_TK / sub;                 /* units per row per k step */
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0);
    int wr = lid % MM_NR, wt = lid / MM_NR;
    int r0 = GROUP_ID(0) * MM_TR, t0 = GROUP_ID(1) * MM_TT;
    float acc[MM_MR][MM_MT], v[MAX_SUB];
    for (int i = 0; i < MM_MR; i++)
        for (int j = 0; j < MM_MT; j++)
            acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < n_cols; k0 += MM_TK) {
        /* W tile, transposed: ws[k][r] */
        for (int u = lid; u < MM_TR * ups; u += lsz) {
            int r = u / ups, c = k0 + (u % ups) * sub, kk = (u % ups) * sub;
            GLOBAL const u8 *wrow = w + w_off + (u64)(r0 + r) * row_bytes;
            if (r0 + r < n_rows && c + sub <= n_cols) {
                deq_unit(T, wrow + (u64)(c / qk) * bs, (c % qk) / sub, v);
            } else {
                /* past the last row, or the partial last block of a plain-type row */
                for (int i = 0; i < sub; i++)
                    v[i] = r0 + r < n_rows && c + i < n_cols ? load_elem(T, wrow, c + i) : 0.0f;
            }
            for (int i = 0; i < sub; i++)
                ws[(kk + i) * MM_TR + r] = v[i];
        }
        /* x tile, transposed: xs[k][t] */
        for (int u = lid; u < MM_TT * MM_TK; u += lsz) {
            int t = u / MM_TK, kk = u % MM_TK;
            float xv = 0.0f;
            if (t0 + t < n_tok && k0 + kk < n_cols)
                xv = x[x_off + (u64)(t0 + t) * n_cols + k0 + kk];
            xs[kk * MM_TT + t] = xv;
        }
        BARRIER();
        for (int kk = 0; kk < MM_TK; kk++) {
            float b[MM_MT];
            UNROLL
            for (int j = 0; j < MM_MT; j++)
                b[j] = xs[kk * MM_TT + MM_TOK(j)];
            UNROLL
            for (int i = 0; i < MM_MR; i++) {
                float a = ws[kk * MM_TR + wr + i * MM_NR];
                UNROLL
                for (int j = 0; j < MM_MT; j++)
                    acc[i][j] = MAD(a, b[j], acc[i][j]);
            }
        }
        BARRIER();
    }
    for (int j = 0; j < MM_MT; j++) {
        int t = t0 + MM_TOK(j);
        for (int i = 0; i < MM_MR; i++) {
            int r = r0 + wr + i * MM_NR;
            if (t < n_tok && r < n_rows)
                y[y_off + (u64)t * n_rows + r] = acc[i][j];
        }
    }
}

#define MM_KERNEL(name, T)                                                                    \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off, u64 row_bytes,     \
                int n_rows, int n_cols, GLOBAL const float *x, u64 x_off, int n_tok)          \
    {                                                                                         \
        LOCAL_ARRAY(float, ws, MM_TK * MM_TR);                                                \
        LOCAL_ARRAY(float, xs, MM_TK * MM_TT);                                                \
        mm_body(T, y, y_off, w, w_off, row_bytes, n_rows, n_cols, x, x_off, n_tok, ws, xs);  \
    }

MM_KERNEL(mm_f32, T_F32)
MM_KERNEL(mm_f16, T_F16)
MM_KERNEL(mm_bf16, T_BF16)
MM_KERNEL(mm_q4_0, T_Q4_0)
MM_KERNEL(mm_q4_1, T_Q4_1)
MM_KERNEL(mm_q5_0, T_Q5_0)
MM_KERNEL(mm_q5_1, T_Q5_1)
MM_KERNEL(mm_q8_0, T_Q8_0)
MM_KERNEL(mm_q2_k, T_Q2_K)
MM_KERNEL(mm_q3_k, T_Q3_K)
MM_KERNEL(mm_q4_k, T_Q4_K)
MM_KERNEL(mm_q5_k, T_Q5_K)
MM_KERNEL(mm_q6_k, T_Q6_K)
