/* attention.cl - causal attention over a KV cache of float32 (kv_f32_*) or IEEE half
 * (kv_f16_*) elements; cache cell of (seq, p, kv head h) at ((seq * n_ctx + p) * n_head_kv + h)
 * * head_dim elements.
 * kv_*_store: writes k[t], v[t] (n_head_kv * head_dim floats) at position pos[t] of seq[t].
 *   Launch: global (ceil(n_head_kv * max(dk, dv) / lsz) * lsz, n_tok), any local size.
 * kv_*_attn: for token t and head h (kv head h / (n_head / n_head_kv)), softmax(scale * q.K)
 *   over positions 0..pos[t] of seq[t], times V -> out[t][h]. One work-group per (h, t); the
 *   positions go through in chunks of ATT_CHUNK with a running max and sum (online softmax),
 *   so any n_ctx fits in a fixed local memory. Each work-item owns ATT_DPT output dims
 *   (see ATT_DIM).
 *   Launch: global (n_head * lsz, n_tok), local (lsz, 1), lsz a power of two <= ATT_MAX_LSZ;
 *   needs dk <= ATT_MAX_DK and dv <= lsz * ATT_DPT.
 * mla_*_store / mla_*_attn: the same for multi-head latent attention (DeepSeek), whose cache
 *   holds one row [lat | rope] per cell and whose V is the lat part of that row (see below).
 * Tuning: ATT_CHUNK (scores held in local memory at once), ATT_DIM_CONTIG, the local size
 * (host). */

#ifndef ATT_CHUNK
#define ATT_CHUNK 256
#endif
#ifndef ATT_DIM_CONTIG
#define ATT_DIM_CONTIG 0
#endif
#define ATT_MAX_LSZ 256
#define ATT_MAX_DK 1024
#define ATT_DPT 16
/* output dim jd of a work-item: interleaved with its neighbours (GPUs: coalesced loads) or
 * a contiguous run (CPUs: one SIMD run) */
#define ATT_DIM(jd) (ATT_DIM_CONTIG ? lid * ATT_DPT + (jd) : lid + (jd) * lsz)

DEVFN float kv_load(const int f16, GLOBAL const u8 *c, u64 i)
{
    return f16 ? LOAD_HALF(c, i) : ((GLOBAL const float *)c)[i];
}

DEVFN void kv_put(const int f16, GLOBAL u8 *c, u64 i, float v)
{
    if (f16)
        STORE_HALF(v, c, i);
    else
        ((GLOBAL float *)c)[i] = v;
}

DEVFN void kv_store_body(const int f16, GLOBAL u8 *kc, u64 kc_off, GLOBAL u8 *vc, u64 vc_off,
                         GLOBAL const float *k, u64 k_off, GLOBAL const float *v, u64 v_off,
                         GLOBAL const i32 *pos, u64 pos_off, GLOBAL const i32 *seq, u64 seq_off,
                         int has_seq, int n_head_kv, int dk, int dv, int n_ctx)
{
    int i = GLOBAL_ID(0), t = GLOBAL_ID(1);
    u64 cell = ((u64)(has_seq ? seq[seq_off + t] : 0) * n_ctx + pos[pos_off + t]) * n_head_kv;
    if (i < n_head_kv * dk)
        kv_put(f16, kc, kc_off + cell * dk + i, k[k_off + (u64)t * n_head_kv * dk + i]);
    if (i < n_head_kv * dv)
        kv_put(f16, vc, vc_off + cell * dv + i, v[v_off + (u64)t * n_head_kv * dv + i]);
}

/* all work-items get op(red[0..lsz)) after the call; red is free again on return */
DEVFN float group_max(LOCAL float *red, float x)
{
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0);
    red[lid] = x;
    BARRIER();
    for (int k = lsz / 2; k > 0; k >>= 1) {
        if (lid < k)
            red[lid] = FMAXF(red[lid], red[lid + k]);
        BARRIER();
    }
    float r = red[0];
    BARRIER();
    return r;
}

DEVFN float group_sum(LOCAL float *red, float x)
{
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0);
    red[lid] = x;
    BARRIER();
    for (int k = lsz / 2; k > 0; k >>= 1) {
        if (lid < k)
            red[lid] += red[lid + k];
        BARRIER();
    }
    float r = red[0];
    BARRIER();
    return r;
}

/* q of (t, h): its first q_split elements from q (rows of q_split), the rest from q2 (rows of
 * dk - q_split); V row of a cell: v_row elements from the cell's start (dv for a separate V
 * cache; MLA reads V from the first dv elements of the K row, v_row = dk) */
DEVFN void attn_body(const int f16, GLOBAL float *out, u64 out_off, GLOBAL const float *q,
                     u64 q_off, GLOBAL const float *q2, u64 q2_off, int q_split,
                     GLOBAL const u8 *kc, u64 kc_off, GLOBAL const u8 *vc, u64 vc_off, int v_row,
                     GLOBAL const i32 *pos, u64 pos_off, GLOBAL const i32 *seq, u64 seq_off,
                     int has_seq, int n_head, int n_head_kv, int dk, int dv, int n_ctx, float scale,
                     LOCAL float *ql, LOCAL float *sl, LOCAL float *red)
{
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0), h = GROUP_ID(0), t = GROUP_ID(1);
    int hk = h / (n_head / n_head_kv), n_kv = pos[pos_off + t] + 1;
    u64 base = (u64)(has_seq ? seq[seq_off + t] : 0) * n_ctx;
    float m = -1e30f, l = 0.0f, acc[ATT_DPT];
    for (int j = 0; j < ATT_DPT; j++)
        acc[j] = 0.0f;
    for (int i = lid; i < dk; i += lsz)
        ql[i] = i < q_split ? q[q_off + ((u64)t * n_head + h) * q_split + i]
                            : q2[q2_off + ((u64)t * n_head + h) * (dk - q_split) + i - q_split];
    BARRIER();
    for (int c0 = 0; c0 < n_kv; c0 += ATT_CHUNK) {
        int cn = n_kv - c0 < ATT_CHUNK ? n_kv - c0 : ATT_CHUNK;
        float cmax = -1e30f;
        for (int j = lid; j < cn; j += lsz) {
            u64 cell = kc_off + ((base + c0 + j) * n_head_kv + hk) * dk;
            float part[8], s = 0.0f;
            int i = 0;
            for (int l = 0; l < 8; l++)
                part[l] = 0.0f;
            for (; i + 8 <= dk; i += 8)         /* 8 independent chains: SIMD on CPUs */
                for (int l = 0; l < 8; l++)
                    part[l] = MAD(ql[i + l], kv_load(f16, kc, cell + i + l), part[l]);
            for (; i < dk; i++)
                s = MAD(ql[i], kv_load(f16, kc, cell + i), s);
            for (int l = 0; l < 8; l++)
                s += part[l];
            s *= scale;
            sl[j] = s;
            cmax = FMAXF(cmax, s);
        }
        float m_new = FMAXF(m, group_max(red, cmax));
        float csum = 0.0f;
        for (int j = lid; j < cn; j += lsz) {
            float p = EXPF(sl[j] - m_new);
            sl[j] = p;
            csum += p;
        }
        float corr = EXPF(m - m_new);
        l = l * corr + group_sum(red, csum);  /* its barriers also publish sl[] */
        m = m_new;
        for (int jd = 0; jd < ATT_DPT; jd++)
            acc[jd] *= corr;
        for (int j = 0; j < cn; j++) {
            u64 cell = vc_off + ((base + c0 + j) * n_head_kv + hk) * v_row;
            float p = sl[j];
            for (int jd = 0; jd < ATT_DPT; jd++) {
                int d = ATT_DIM(jd);
                if (d < dv)
                    acc[jd] = MAD(p, kv_load(f16, vc, cell + d), acc[jd]);
            }
        }
        BARRIER();
    }
    for (int jd = 0; jd < ATT_DPT; jd++) {
        int d = ATT_DIM(jd);
        if (d < dv)
            out[out_off + ((u64)t * n_head + h) * dv + d] = acc[jd] / l;
    }
}

#define ATT_KERNELS(store, attn, F16)                                                         \
    KERNEL store(GLOBAL u8 *kc, u64 kc_off, GLOBAL u8 *vc, u64 vc_off, GLOBAL const float *k, \
                 u64 k_off, GLOBAL const float *v, u64 v_off, GLOBAL const i32 *pos,          \
                 u64 pos_off, GLOBAL const i32 *seq, u64 seq_off, int has_seq, int n_head_kv, \
                 int dk, int dv, int n_ctx)                                                   \
    {                                                                                         \
        kv_store_body(F16, kc, kc_off, vc, vc_off, k, k_off, v, v_off, pos, pos_off, seq,     \
                      seq_off, has_seq, n_head_kv, dk, dv, n_ctx);                            \
    }                                                                                         \
    KERNEL attn(GLOBAL float *out, u64 out_off, GLOBAL const float *q, u64 q_off,             \
                GLOBAL const u8 *kc, u64 kc_off, GLOBAL const u8 *vc, u64 vc_off,             \
                GLOBAL const i32 *pos, u64 pos_off, GLOBAL const i32 *seq, u64 seq_off,       \
                int has_seq, int n_head, int n_head_kv, int dk, int dv, int n_ctx,            \
                float scale)                                                                  \
    {                                                                                         \
        LOCAL_ARRAY(float, ql, ATT_MAX_DK);                                                   \
        LOCAL_ARRAY(float, sl, ATT_CHUNK);                                                    \
        LOCAL_ARRAY(float, red, ATT_MAX_LSZ);                                                 \
        attn_body(F16, out, out_off, q, q_off, q, q_off, dk, kc, kc_off, vc, vc_off, dv, pos,  \
                  pos_off, seq, seq_off, has_seq, n_head, n_head_kv, dk, dv, n_ctx, scale, ql, \
                  sl, red);                                                                   \
    }

ATT_KERNELS(kv_f32_store, kv_f32_attn, 0)
ATT_KERNELS(kv_f16_store, kv_f16_attn, 1)

/* MLA: one cache row [lat | rope] of dk = lat + rope elements per cell, (seq * n_ctx + p) * dk */
DEVFN void mla_store_body(const int f16, GLOBAL u8 *kc, u64 kc_off, GLOBAL const float *kv_lat,
                          u64 lat_off, GLOBAL const float *k_rope, u64 rope_off,
                          GLOBAL const i32 *pos, u64 pos_off, GLOBAL const i32 *seq, u64 seq_off,
                          int has_seq, int lat, int dk, int n_ctx)
{
    int i = GLOBAL_ID(0), t = GLOBAL_ID(1), rope = dk - lat;
    u64 cell = ((u64)(has_seq ? seq[seq_off + t] : 0) * n_ctx + pos[pos_off + t]) * dk;
    if (i < lat)
        kv_put(f16, kc, kc_off + cell + i, kv_lat[lat_off + (u64)t * lat + i]);
    else if (i < dk)
        kv_put(f16, kc, kc_off + cell + i, k_rope[rope_off + (u64)t * rope + i - lat]);
}

/* mla_*_store launch: global (ceil(dk / lsz) * lsz, n_tok). mla_*_attn: as kv_*_attn with
 * n_head_kv = 1, dv = lat; q_lat [n_tok][n_head][lat], q_rope [n_tok][n_head][dk - lat]. */
#define MLA_KERNELS(store, attn, F16)                                                         \
    KERNEL store(GLOBAL u8 *kc, u64 kc_off, GLOBAL const float *kv_lat, u64 lat_off,          \
                 GLOBAL const float *k_rope, u64 rope_off, GLOBAL const i32 *pos, u64 pos_off, \
                 GLOBAL const i32 *seq, u64 seq_off, int has_seq, int lat, int dk, int n_ctx) \
    {                                                                                         \
        mla_store_body(F16, kc, kc_off, kv_lat, lat_off, k_rope, rope_off, pos, pos_off, seq,  \
                       seq_off, has_seq, lat, dk, n_ctx);                                     \
    }                                                                                         \
    KERNEL attn(GLOBAL float *out, u64 out_off, GLOBAL const float *q_lat, u64 ql_off,        \
                GLOBAL const float *q_rope, u64 qr_off, GLOBAL const u8 *kc, u64 kc_off,      \
                GLOBAL const i32 *pos, u64 pos_off, GLOBAL const i32 *seq, u64 seq_off,       \
                int has_seq, int n_head, int lat, int dk, int n_ctx, float scale)             \
    {                                                                                         \
        LOCAL_ARRAY(float, ql, ATT_MAX_DK);                                                   \
        LOCAL_ARRAY(float, sl, ATT_CHUNK);                                                    \
        LOCAL_ARRAY(float, red, ATT_MAX_LSZ);                                                 \
        attn_body(F16, out, out_off, q_lat, ql_off, q_rope, qr_off, lat, kc, kc_off, kc,      \
                  kc_off, dk, pos, pos_off, seq, seq_off, has_seq, n_head, 1, dk, lat, n_ctx, \
                  scale, ql, sl, red);                                                        \
    }

MLA_KERNELS(mla_f32_store, mla_f32_attn, 0)
MLA_KERNELS(mla_f16_store, mla_f16_attn, 1)
