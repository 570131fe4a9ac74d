/* embed.cl - whole rows of a weight matrix dequantized to float32, one kernel pair per type:
 * emb_<type>: y[t] = row ids[t] of W (token embeddings);
 * deq_<type>: y[r] = row r of W, for rows r0 .. r0+n-1 (feeds a float GEMM library).
 * Launch: global (ceil((n_cols/SUB + 1) / lsz) * lsz, n_tok or n), any local size; one
 * work-item per unit (SUB consecutive elements, see dequant.h), one more for a partial last
 * block of a plain-type row. No tuning macros. */

DEVFN void row_unit(const int T, GLOBAL float *y, GLOBAL const u8 *wr, int n_cols)
{
    const int sub = type_sub(T), upb = type_qk(T) / sub;
    int u = GLOBAL_ID(0);
    float v[MAX_SUB];
    if (u < n_cols / sub) {
        deq_unit(T, wr + (u / upb) * type_bs(T), u % upb, v);
        for (int i = 0; i < sub; i++)
            y[u * sub + i] = v[i];
    } else if (type_plain(T) && u == n_cols / sub) {
        for (int c = u * sub; c < n_cols; c++)   /* a partial last block */
            y[c] = load_elem(T, wr, c);
    }
}

#define EMB_KERNEL(name, T)                                                                   \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off, u64 row_bytes,     \
                int n_cols, GLOBAL const i32 *ids, u64 ids_off)                               \
    {                                                                                         \
        int t = GLOBAL_ID(1);                                                                 \
        row_unit(T, y + y_off + (u64)t * n_cols, w + w_off + (u64)ids[ids_off + t] * row_bytes, \
                 n_cols);                                                                     \
    }

#define DEQ_KERNEL(name, T)                                                                   \
    KERNEL name(GLOBAL float *y, u64 y_off, GLOBAL const u8 *w, u64 w_off, u64 row_bytes,     \
                int n_cols, int r0)                                                           \
    {                                                                                         \
        int r = GLOBAL_ID(1);                                                                 \
        row_unit(T, y + y_off + (u64)r * n_cols, w + w_off + (u64)(r0 + r) * row_bytes, n_cols); \
    }

EMB_KERNEL(emb_f32, T_F32)
EMB_KERNEL(emb_f16, T_F16)
EMB_KERNEL(emb_bf16, T_BF16)
EMB_KERNEL(emb_q4_0, T_Q4_0)
EMB_KERNEL(emb_q4_1, T_Q4_1)
EMB_KERNEL(emb_q5_0, T_Q5_0)
EMB_KERNEL(emb_q5_1, T_Q5_1)
EMB_KERNEL(emb_q8_0, T_Q8_0)
EMB_KERNEL(emb_q2_k, T_Q2_K)
EMB_KERNEL(emb_q3_k, T_Q3_K)
EMB_KERNEL(emb_q4_k, T_Q4_K)
EMB_KERNEL(emb_q5_k, T_Q5_K)
EMB_KERNEL(emb_q6_k, T_Q6_K)

DEQ_KERNEL(deq_f32, T_F32)
DEQ_KERNEL(deq_f16, T_F16)
DEQ_KERNEL(deq_bf16, T_BF16)
DEQ_KERNEL(deq_q4_0, T_Q4_0)
DEQ_KERNEL(deq_q4_1, T_Q4_1)
DEQ_KERNEL(deq_q5_0, T_Q5_0)
DEQ_KERNEL(deq_q5_1, T_Q5_1)
DEQ_KERNEL(deq_q8_0, T_Q8_0)
DEQ_KERNEL(deq_q2_k, T_Q2_K)
DEQ_KERNEL(deq_q3_k, T_Q3_K)
DEQ_KERNEL(deq_q4_k, T_Q4_K)
DEQ_KERNEL(deq_q5_k, T_Q5_K)
DEQ_KERNEL(deq_q6_k, T_Q6_K)
