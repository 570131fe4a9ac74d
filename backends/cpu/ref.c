/* ref.c - scalar reference implementations of the backend ops (see ref.h). Numbers here are
 * the definition every other backend is tested against. */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

int porta_ref_matmul(float *y, const void *w, enum porta_dtype type, int64_t n_rows,
                     int64_t n_cols, size_t row_bytes, const float *x, int n_tok)
{
    const struct porta_type_traits *tt = porta_type_traits(type);
    const struct porta_type_traits *at = porta_type_traits(tt->vec_dot_type);
    size_t arow = porta_row_size(tt->vec_dot_type, n_cols);
    uint8_t *xq = NULL;
    if (tt->vec_dot_type != PORTA_F32) {
        xq = malloc(arow);
        if (!xq)
            return PORTA_E_NOMEM;
    }
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * n_cols;
        const void *a = xt;
        if (xq) {
            at->from_float(xt, xq, n_cols);
            a = xq;
        }
        for (int64_t r = 0; r < n_rows; r++)
            tt->vec_dot(n_cols, &y[(size_t)t * n_rows + r], (const uint8_t *)w + r * row_bytes, a);
    }
    free(xq);
    return 0;
}

void porta_ref_rmsnorm(float *y, const float *x, const float *w, int n_rows, int n, float eps)
{
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / n + eps));
        for (int i = 0; i < n; i++)
            yr[i] = xr[i] * scale * (w ? w[i] : 1.0f);
    }
}

/* ---- rope ---- */

void porta_ref_rope(float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
                    const struct porta_rope_params *p)
{
    float dims[2] = { 0, 0 };
    if (p->ext_factor != 0.0f)
        porta_rope_corr_dims(p, dims);
    int half = p->n_rot / 2;
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_head; h++) {
            float *v = x + ((size_t)t * n_head + h) * head_dim;
            for (int i0 = 0; i0 < p->n_rot; i0 += 2) {
                float c, s;
                porta_rope_cos_sin(p, dims, pos[t], i0, &c, &s);
                int a = p->style == PORTA_ROPE_NEOX ? i0 / 2 : i0;
                int b = p->style == PORTA_ROPE_NEOX ? i0 / 2 + half : i0 + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
}

/* ---- attention ---- */

void porta_ref_kv_store(void *cache, enum porta_dtype type, size_t idx, const float *src, int n)
{
    if (type == PORTA_F16) {
        porta_f16 *d = (porta_f16 *)cache + idx;
        for (int i = 0; i < n; i++)
            d[i] = porta_f32_to_f16(src[i]);
    } else {
        memcpy((float *)cache + idx, src, (size_t)n * sizeof(float));
    }
}

static float kv_get(const void *cache, enum porta_dtype type, size_t idx)
{
    return type == PORTA_F16 ? porta_f16_to_f32(((const porta_f16 *)cache)[idx])
                             : ((const float *)cache)[idx];
}

/* o[0..n) = sum over j < n_kv of softmax(sc)[j] * cache row j, with mx = max(sc) and row j
 * starting at element first + j * stride; sc is overwritten with e^(sc - mx) */
static void softmax_rows(float *o, float *sc, int n_kv, float mx, const void *cache,
                         enum porta_dtype type, size_t first, size_t stride, int n)
{
    double sum = 0;
    for (int j = 0; j < n_kv; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    for (int i = 0; i < n; i++)
        o[i] = 0;
    for (int j = 0; j < n_kv; j++) {
        size_t cell = first + (size_t)j * stride;
        float wgt = (float)(sc[j] / sum);
        for (int i = 0; i < n; i++)
            o[i] += wgt * kv_get(cache, type, cell + i);
    }
}

int porta_ref_attention(float *out, const float *q, const float *k, const float *v,
                         void *k_cache, void *v_cache, const struct porta_attn_params *p)
{
    int dk = p->head_dim_k, dv = p->head_dim_v, nkv = p->n_head_kv;
    for (int t = 0; t < p->n_tok; t++) {
        size_t cell = ((size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx + p->pos[t]) * nkv;
        porta_ref_kv_store(k_cache, p->kv_type, cell * dk, k + (size_t)t * nkv * dk, nkv * dk);
        porta_ref_kv_store(v_cache, p->kv_type, cell * dv, v + (size_t)t * nkv * dv, nkv * dv);
    }
    int group = p->n_head / nkv;
    float *sc = malloc(sizeof(float) * (size_t)p->n_ctx);
    if (!sc)
        return PORTA_E_NOMEM;
    for (int t = 0; t < p->n_tok; t++) {
        size_t base = (size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx;
        int n_kv = p->pos[t] + 1;
        for (int h = 0; h < p->n_head; h++) {
            const float *qh = q + ((size_t)t * p->n_head + h) * dk;
            int hk = h / group;
            float mx = -INFINITY;
            for (int j = 0; j < n_kv; j++) {
                size_t cell = ((base + j) * nkv + hk) * dk;
                float d = 0;
                for (int i = 0; i < dk; i++)
                    d += qh[i] * kv_get(k_cache, p->kv_type, cell + i);
                sc[j] = d * p->scale;
                mx = fmaxf(mx, sc[j]);
            }
            softmax_rows(out + ((size_t)t * p->n_head + h) * dv, sc, n_kv, mx, v_cache,
                         p->kv_type, (base * nkv + hk) * dv, (size_t)nkv * dv, dv);
        }
    }
    free(sc);
    return 0;
}

void porta_ref_eltwise(enum porta_elt op, float *y, const float *a, const float *b, int64_t n,
                       int64_t nb, float s)
{
    for (int64_t i = 0; i < n; i++) {
        switch (op) {
        case PORTA_ELT_ADD: y[i] = a[i] + b[i % nb]; break;
        case PORTA_ELT_MUL: y[i] = a[i] * b[i % nb]; break;
        case PORTA_ELT_SWIGLU: y[i] = a[i] / (1.0f + expf(-a[i])) * b[i]; break;
        case PORTA_ELT_SCALE: y[i] = a[i] * s; break;
        case PORTA_ELT_COPY: y[i] = a[i]; break;
        }
    }
}

void porta_ref_embed(float *y, const void *w, enum porta_dtype type, int64_t n_cols,
                     size_t row_bytes, const int32_t *ids, int n_tok)
{
    const struct porta_type_traits *tt = porta_type_traits(type);
    for (int t = 0; t < n_tok; t++)
        tt->to_float((const uint8_t *)w + (size_t)ids[t] * row_bytes, y + (size_t)t * n_cols,
                     n_cols);
}

/* ---- mixture of experts ---- */

/* index of the best eligible expert (c largest, ties to the lower index), -1 when none */
static int best_expert(const float *c, const float *taken, int n)
{
    int best = -1;
    for (int e = 0; e < n; e++)
        if (taken[e] == 0.0f && (best < 0 || c[e] > c[best]))
            best = e;
    return best;
}

/* marks (taken = 1) every expert outside the topk_group best groups */
static void limit_groups(const float *c, float *taken, const struct porta_route_params *p)
{
    int per = p->n_expert / p->n_group;
    for (int round = 0; round < p->n_group - p->topk_group; round++) {
        /* drop the worst group still eligible (ties: the higher index goes first) */
        int worst = -1;
        float wscore = 0;
        for (int g = 0; g < p->n_group; g++) {
            const float *cg = c + (size_t)g * per;
            if (taken[(size_t)g * per] != 0.0f)
                continue;
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int i = 0; i < per; i++) {
                if (cg[i] > b1) {
                    b2 = b1;
                    b1 = cg[i];
                } else if (cg[i] > b2) {
                    b2 = cg[i];
                }
            }
            float score = per > 1 ? b1 + b2 : b1;
            if (worst < 0 || score <= wscore) {
                worst = g;
                wscore = score;
            }
        }
        for (int i = 0; i < per; i++)
            taken[(size_t)worst * per + i] = 1.0f;
    }
}

void porta_ref_route_token(int32_t *ids, float *weights, const float *logits, const float *bias,
                           const struct porta_route_params *p, float *scratch)
{
    int n = p->n_expert;
    float *s = scratch, *c = scratch + n, *taken = scratch + 2 * n;
    if (p->gating == PORTA_GATING_SOFTMAX) {
        float mx = logits[0];
        for (int e = 1; e < n; e++)
            mx = fmaxf(mx, logits[e]);
        float sum = 0;
        for (int e = 0; e < n; e++) {
            s[e] = expf(logits[e] - mx);
            sum += s[e];
        }
        for (int e = 0; e < n; e++)
            s[e] /= sum;
    } else {
        for (int e = 0; e < n; e++)
            s[e] = 1.0f / (1.0f + expf(-logits[e]));
    }
    for (int e = 0; e < n; e++) {
        c[e] = bias ? s[e] + bias[e] : s[e];
        taken[e] = 0.0f;
    }
    if (p->n_group > 1)
        limit_groups(c, taken, p);
    float sum = 0;
    for (int j = 0; j < p->k; j++) {
        int e = best_expert(c, taken, n);
        if (e < 0) /* cannot happen for valid parameters: k <= eligible experts */
            e = 0;
        taken[e] = 1.0f;
        ids[j] = e;
        weights[j] = s[e];
        sum += s[e];
    }
    for (int j = 0; j < p->k; j++) {
        if (p->norm && sum > 0)
            weights[j] /= sum;
        weights[j] *= p->scale;
    }
}

int porta_ref_moe_route(int32_t *ids, float *weights, const float *logits, const float *bias,
                        const struct porta_route_params *p)
{
    float *scratch = malloc(sizeof(float) * 3 * (size_t)p->n_expert);
    if (!scratch)
        return PORTA_E_NOMEM;
    for (int t = 0; t < p->n_tok; t++)
        porta_ref_route_token(ids + (size_t)t * p->k, weights + (size_t)t * p->k,
                              logits + (size_t)t * p->n_expert, bias, p, scratch);
    free(scratch);
    return 0;
}

int porta_ref_matmul_experts(float *y, const void *w, const struct porta_weight *wt,
                             const float *x, const int32_t *ids, const float *weights, int n_tok,
                             int k, bool x_per_slot)
{
    int64_t nr = wt->n_rows, nc = wt->n_cols;
    float *tmp = malloc(sizeof(float) * (size_t)nr);
    if (!tmp)
        return PORTA_E_NOMEM;
    size_t stride = porta_weight_mat_stride(wt);
    for (int t = 0; t < n_tok; t++) {
        float *yt = y + (size_t)t * nr;
        if (weights)
            memset(yt, 0, sizeof(float) * (size_t)nr);
        for (int j = 0; j < k; j++) {
            size_t slot = (size_t)t * k + j;
            int e = ids ? ids[slot] : j;
            const float *xin = x + (x_per_slot ? slot : (size_t)t) * nc;
            if (e < 0 || e >= wt->n_mat) {
                memset(tmp, 0, sizeof(float) * (size_t)nr);
            } else if (porta_ref_matmul(tmp, (const uint8_t *)w + (size_t)e * stride, wt->type, nr,
                                        nc, wt->row_bytes, xin, 1)) {
                free(tmp);
                return PORTA_E_NOMEM;
            }
            if (weights)
                for (int64_t r = 0; r < nr; r++)
                    yt[r] += weights[slot] * tmp[r];
            else
                memcpy(y + slot * nr, tmp, sizeof(float) * (size_t)nr);
        }
    }
    free(tmp);
    return 0;
}

/* ---- multi-head latent attention ---- */

int porta_ref_attention_mla(float *out, const float *q_lat, const float *q_rope,
                            const float *kv_lat, const float *k_rope, void *cache,
                            const struct porta_attn_params *p)
{
    int row = p->head_dim_k, lat = p->head_dim_v, rope = row - lat;
    for (int t = 0; t < p->n_tok; t++) {
        size_t cell = ((size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx + p->pos[t]) * row;
        porta_ref_kv_store(cache, p->kv_type, cell, kv_lat + (size_t)t * lat, lat);
        porta_ref_kv_store(cache, p->kv_type, cell + lat, k_rope + (size_t)t * rope, rope);
    }
    float *sc = malloc(sizeof(float) * (size_t)p->n_ctx);
    if (!sc)
        return PORTA_E_NOMEM;
    for (int t = 0; t < p->n_tok; t++) {
        size_t base = (size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx;
        int n_kv = p->pos[t] + 1;
        for (int h = 0; h < p->n_head; h++) {
            const float *ql = q_lat + ((size_t)t * p->n_head + h) * lat;
            const float *qr = q_rope + ((size_t)t * p->n_head + h) * rope;
            float mx = -INFINITY;
            for (int j = 0; j < n_kv; j++) {
                size_t cell = (base + j) * row;
                float d = 0;
                for (int i = 0; i < lat; i++)
                    d += ql[i] * kv_get(cache, p->kv_type, cell + i);
                for (int i = 0; i < rope; i++)
                    d += qr[i] * kv_get(cache, p->kv_type, cell + lat + i);
                sc[j] = d * p->scale;
                mx = fmaxf(mx, sc[j]);
            }
            softmax_rows(out + ((size_t)t * p->n_head + h) * lat, sc, n_kv, mx, cache,
                         p->kv_type, base * row, (size_t)row, lat);
        }
    }
    free(sc);
    return 0;
}
