/* mla.c - the CPU backend's multi-head latent attention (DeepSeek-V2/V3, see attention_mla in
 * backend.h): each token's compressed row [latent | rope part] is appended to the cache, then
 * every head attends over the rows: the score uses the whole row, the output is the weighted
 * sum of the latent parts. A unit of work is one token and a block of its heads, which share
 * each cache row read (and converted from F16) instead of reading it once per head. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "quant.h"
#include "ref.h"

struct mla_job {
    const struct porta_cpu_kernels *k;
    const struct porta_attn_params *p;
    float *out;
    const float *ql, *qr;
    const uint8_t *cache;
    int hb;                         /* heads per unit */
    int units_per_tok;
    float *scratch;                 /* per thread: hb * n_ctx scores, a row, hb sums (with
                                       k->attn: hb query rows, the kernel's scratch) */
    size_t per_thread;              /* floats */
};

/* cache row `cell` as floats: in place for F32, converted into buf for F16 */
static const float *cache_row(const struct mla_job *j, size_t cell, float *buf)
{
    int row = j->p->head_dim_k;
    if (j->p->kv_type == PORTA_F32)
        return (const float *)j->cache + cell * row;
    j->k->to_float[PORTA_F16](j->cache + cell * row * sizeof(porta_f16), buf, row);
    return buf;
}

/* The kernel set's flash-attention rows (k->attn) over the latent cache: a cache row is the
 * key [latent | rope] (dk = the whole row) and its latent part the value (dv = lat, the same
 * memory, same stride); the unit's query rows are assembled as [q_lat | q_rope]. */
static void mla_units_attn(struct mla_job *j, int ith, int nth)
{
    const struct porta_attn_params *p = j->p;
    int H = p->n_head, row = p->head_dim_k, lat = p->head_dim_v, rope = row - lat;
    size_t esz = p->kv_type == PORTA_F16 ? 2 : 4;
    float *qbuf = j->scratch + (size_t)ith * j->per_thread;
    float *as = qbuf + (((size_t)j->hb * (size_t)row + 15) & ~(size_t)15);
    long lo, hi;
    porta_split((long)p->n_tok * j->units_per_tok, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) {
        int t = (int)(u / j->units_per_tok), h0 = (int)(u % j->units_per_tok) * j->hb;
        int h1 = h0 + j->hb < H ? h0 + j->hb : H;
        size_t base = (size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx;
        for (int h = h0; h < h1; h++) {
            size_t q = (size_t)t * H + h;
            memcpy(qbuf + (size_t)(h - h0) * row, j->ql + q * lat, sizeof(float) * (size_t)lat);
            memcpy(qbuf + (size_t)(h - h0) * row + lat, j->qr + q * rope,
                   sizeof(float) * (size_t)rope);
        }
        struct porta_attn_rows a = {
            .q = qbuf, .o = j->out + ((size_t)t * H + h0) * lat,
            .k = j->cache + base * row * esz, .v = j->cache + base * row * esz,
            .k_stride = (size_t)row, .v_stride = (size_t)row,
            .n_q = h1 - h0, .dk = row, .dv = lat, .n_kv = p->pos[t] + 1, .scale = p->scale,
            .f16 = p->kv_type == PORTA_F16, .scratch = as,
        };
        j->k->attn(&a);
    }
}

static void mla_units(void *arg, int ith, int nth)
{
    struct mla_job *j = arg;
    const struct porta_attn_params *p = j->p;
    if (j->k->attn) {
        mla_units_attn(j, ith, nth);
        return;
    }
    porta_vec_dot_fn dot = j->k->vec_dot[PORTA_F32];
    int H = p->n_head, lat = p->head_dim_v, rope = p->head_dim_k - lat;
    float *sc = j->scratch + (size_t)ith * j->per_thread;
    float *buf = sc + (size_t)j->hb * p->n_ctx, *inv = buf + p->head_dim_k;
    long lo, hi;
    porta_split((long)p->n_tok * j->units_per_tok, ith, nth, &lo, &hi);
    for (long u = lo; u < hi; u++) {
        int t = (int)(u / j->units_per_tok), h0 = (int)(u % j->units_per_tok) * j->hb;
        int h1 = h0 + j->hb < H ? h0 + j->hb : H, n_kv = p->pos[t] + 1;
        size_t base = (size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx;
        for (int c = 0; c < n_kv; c++) {
            const float *r = cache_row(j, base + c, buf);
            for (int h = h0; h < h1; h++) {
                size_t q = (size_t)t * H + h;
                float d1, d2;
                dot(lat, &d1, r, j->ql + q * lat);
                dot(rope, &d2, r + lat, j->qr + q * rope);
                sc[(size_t)(h - h0) * p->n_ctx + c] = (d1 + d2) * p->scale;
            }
        }
        for (int h = h0; h < h1; h++) {
            float *s = sc + (size_t)(h - h0) * p->n_ctx, mx = -INFINITY, sum = 0;
            for (int c = 0; c < n_kv; c++)
                mx = s[c] > mx ? s[c] : mx;
            for (int c = 0; c < n_kv; c++) {
                s[c] = expf(s[c] - mx);
                sum += s[c];
            }
            inv[h - h0] = 1.0f / sum;
            memset(j->out + ((size_t)t * H + h) * lat, 0, sizeof(float) * (size_t)lat);
        }
        for (int c = 0; c < n_kv; c++) {
            const float *r = cache_row(j, base + c, buf);
            for (int h = h0; h < h1; h++) {
                float wgt = sc[(size_t)(h - h0) * p->n_ctx + c] * inv[h - h0];
                float *o = j->out + ((size_t)t * H + h) * lat;
                for (int i = 0; i < lat; i++)
                    o[i] += wgt * r[i];
            }
        }
    }
}

int porta_cpu_attention_mla(struct porta_backend *be, struct porta_view out,
                            struct porta_view q_lat, struct porta_view q_rope,
                            struct porta_view kv_lat, struct porta_view k_rope,
                            const struct porta_attn_params *p)
{
    const struct porta_cpu_kernels *k;
    struct porta_pool *pool;
    porta_cpu_parts(be, &k, &pool);
    int row = p->head_dim_k, lat = p->head_dim_v, rope = row - lat, nth = porta_pool_size(pool);
    uint8_t *cache = porta_cpu_ptr(p->k_cache);
    const float *kl = (const float *)porta_cpu_ptr(kv_lat);
    const float *kr = (const float *)porta_cpu_ptr(k_rope);
    for (int t = 0; t < p->n_tok; t++) {
        size_t cell = ((size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx + p->pos[t]) * row;
        porta_ref_kv_store(cache, p->kv_type, cell, kl + (size_t)t * lat, lat);
        porta_ref_kv_store(cache, p->kv_type, cell + lat, kr + (size_t)t * rope, rope);
    }
    /* halve the head blocks until every thread has a unit (decode: one token) */
    int hb = p->n_head < 8 ? p->n_head : 8;
    while (hb > 1 && (long)p->n_tok * ((p->n_head + hb - 1) / hb) < nth)
        hb = (hb + 1) / 2;
    struct mla_job j = { .k = k, .p = p, .out = (float *)porta_cpu_ptr(out),
                         .ql = (const float *)porta_cpu_ptr(q_lat),
                         .qr = (const float *)porta_cpu_ptr(q_rope), .cache = cache, .hb = hb,
                         .units_per_tok = (p->n_head + hb - 1) / hb };
    j.per_thread = (size_t)hb * p->n_ctx + (size_t)row + (size_t)hb;
    if (k->attn) {  /* query rows, then the kernel's scratch, each 64-byte aligned */
        size_t fa = (((size_t)hb * (size_t)row + 15) & ~(size_t)15) +
                    porta_attn_scratch_floats(hb, row, lat);
        j.per_thread = fa;
    }
    j.per_thread = (j.per_thread + 15) & ~(size_t)15; /* 64-byte aligned slices */
    j.scratch = aligned_alloc(64, sizeof(float) * j.per_thread * (size_t)nth);
    if (!j.scratch) {
        porta_err("cpu: out of memory for attention_mla scratch");
        return PORTA_E_NOMEM;
    }
    /* small jobs (a short context, few heads) run on the calling thread */
    long work = 0;
    for (int t = 0; t < p->n_tok && work < 65536; t++)
        work += (long)(p->pos[t] + 1) * p->n_head * (row + lat);
    if (work < 65536)
        mla_units(&j, 0, 1);
    else
        porta_pool_run(pool, mla_units, &j);
    free(j.scratch);
    return 0;
}
