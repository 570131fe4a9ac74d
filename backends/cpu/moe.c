/* moe.c - the CPU backend's mixture-of-experts ops: top-k routing (the scalar reference per
 * token, tokens spread over the pool) and the expert matmul, which groups the (token, slot)
 * pairs by expert so that each chosen expert's rows are read once per call and multiplied with
 * every token that picked it: a prefill chunk streams an expert's weights once, not once per
 * token. */
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "quant.h"
#include "ref.h"

/* ---- routing ---- */

struct route_job {
    int32_t *ids;
    float *w;
    const float *logits, *bias;
    const struct porta_route_params *p;
    float *scratch;                 /* 3 * n_expert floats per thread */
};

static void route_part(void *arg, int ith, int nth)
{
    struct route_job *j = arg;
    const struct porta_route_params *p = j->p;
    long lo, hi;
    porta_split(p->n_tok, ith, nth, &lo, &hi);
    float *sc = j->scratch + (size_t)ith * 3 * p->n_expert;
    for (long t = lo; t < hi; t++)
        porta_ref_route_token(j->ids + t * p->k, j->w + t * p->k, j->logits + t * p->n_expert,
                              j->bias, p, sc);
}

int porta_cpu_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                        struct porta_view logits, const struct porta_route_params *p)
{
    const struct porta_cpu_kernels *k;
    struct porta_pool *pool;
    porta_cpu_parts(be, &k, &pool);
    /* routing is cheap: spread over the pool only for long chunks of many experts */
    int nth = (long)p->n_tok * p->n_expert < 16384 ? 1 : porta_pool_size(pool);
    struct route_job j = { (int32_t *)porta_cpu_ptr(ids), (float *)porta_cpu_ptr(weights),
                           (const float *)porta_cpu_ptr(logits),
                           p->bias.buf ? (const float *)porta_cpu_ptr(p->bias) : NULL, p, NULL };
    j.scratch = malloc(sizeof(float) * 3 * (size_t)p->n_expert * (size_t)nth);
    if (!j.scratch) {
        porta_err("cpu: out of memory for moe_route scratch");
        return PORTA_E_NOMEM;
    }
    if (nth == 1)
        route_part(&j, 0, 1);
    else
        porta_pool_run(pool, route_part, &j);
    free(j.scratch);
    return 0;
}

/* ---- expert matmul ---- */

#define XM_ROW_BLOCK 16
/* below this many multiply-adds a job runs on the calling thread: waking the pool costs more */
#define XM_INLINE_WORK 65536

static void run(struct porta_pool *pool, porta_job_fn fn, void *arg, bool parallel)
{
    if (parallel)
        porta_pool_run(pool, fn, arg);
    else
        fn(arg, 0, 1);
}

/* ROW_BLOCK rows of one expert, multiplied with every slot that chose the expert */
struct xm_tile {
    int32_t e, r0;
};

struct xm_job {
    const struct porta_cpu_kernels *k;
    const struct porta_weight *w;
    const uint8_t *wdata;           /* matrix 0 */
    size_t stride;                  /* bytes from one matrix to the next */
    const float *x;
    uint8_t *xa;                    /* x rows in the vec_dot type */
    size_t arow;                    /* bytes per xa row */
    long n_xrows;
    int n_tok, k_slots;
    bool x_per_slot;
    const int32_t *ids;             /* NULL: slot j uses matrix j */
    const int32_t *order, *start;   /* slots grouped by expert: order[start[e] .. start[e + 1]) */
    const struct xm_tile *tiles;
    const int64_t *cum;             /* cost before tile i; cum[n_tiles] = total */
    int n_tiles;
    float *out;                     /* [slots][n_rows] products */
    float *y;                       /* the reduced output (weights set) */
    const float *weights;
};

static void xm_quantize(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    enum porta_dtype vt = porta_type_traits(j->w->type)->vec_dot_type;
    long lo, hi;
    porta_split(j->n_xrows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++)
        j->k->quantize[vt](j->x + r * j->w->n_cols, j->xa + r * j->arow, j->w->n_cols);
}

/* the tiles whose cost starts inside task ith's share of the total */
static void xm_tiles(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    porta_vec_dot_fn dot = j->k->vec_dot[j->w->type];
    int64_t nr = j->w->n_rows, nc = j->w->n_cols, total = j->cum[j->n_tiles];
    int64_t lo = total * ith / nth, hi = total * (ith + 1) / nth;
    for (int i = 0; i < j->n_tiles; i++) {
        if (j->cum[i] < lo || j->cum[i] >= hi)
            continue;
        int e = j->tiles[i].e;
        long r0 = j->tiles[i].r0, r1 = r0 + XM_ROW_BLOCK < nr ? r0 + XM_ROW_BLOCK : nr;
        const uint8_t *we = j->wdata + (size_t)e * j->stride;
        for (int32_t q = j->start[e]; q < j->start[e + 1]; q++) {
            int32_t slot = j->order[q];
            long xr = j->x_per_slot ? slot : slot / j->k_slots;
            const uint8_t *a = j->xa + (size_t)xr * j->arow;
            float *o = j->out + (size_t)slot * nr;
            for (long r = r0; r < r1; r++)
                dot(nc, &o[r], we + (size_t)r * j->w->row_bytes, a);
        }
    }
}

static inline int slot_id(const struct xm_job *j, int slot)
{
    return j->ids ? j->ids[slot] : slot % j->k_slots;
}

/* y[t] = sum_j weights[t][j] out[t][j], j in order (as the reference sums) */
static void xm_reduce(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    int64_t nr = j->w->n_rows;
    long lo, hi;
    porta_split(j->n_tok, ith, nth, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        float *yt = j->y + (size_t)t * nr;
        memset(yt, 0, sizeof(float) * (size_t)nr);
        for (int s = 0; s < j->k_slots; s++) {
            int slot = (int)t * j->k_slots + s, e = slot_id(j, slot);
            if (e < 0 || e >= j->w->n_mat)
                continue;
            const float *o = j->out + (size_t)slot * nr;
            float wt = j->weights[slot];
            for (int64_t r = 0; r < nr; r++)
                yt[r] += wt * o[r];
        }
    }
}

/* Counting sort of the slots by expert; builds the tiles and their cost prefix. */
static void xm_plan(struct xm_job *j, int32_t *start, int32_t *order, struct xm_tile *tiles,
                    int64_t *cum)
{
    int n_mat = (int)j->w->n_mat, slots = j->n_tok * j->k_slots;
    int64_t nr = j->w->n_rows;
    memset(start, 0, sizeof(int32_t) * (size_t)(n_mat + 1));
    for (int s = 0; s < slots; s++) {
        int e = slot_id(j, s);
        if (e >= 0 && e < n_mat)
            start[e + 1]++;
    }
    for (int e = 0; e < n_mat; e++)
        start[e + 1] += start[e];
    int32_t *fill = order + slots; /* n_mat cursors after the order array */
    memcpy(fill, start, sizeof(int32_t) * (size_t)n_mat);
    for (int s = 0; s < slots; s++) {
        int e = slot_id(j, s);
        if (e >= 0 && e < n_mat)
            order[fill[e]++] = s;
    }
    int n = 0;
    int64_t c = 0;
    for (int e = 0; e < n_mat; e++) {
        int cnt = start[e + 1] - start[e];
        for (int64_t r0 = 0; cnt && r0 < nr; r0 += XM_ROW_BLOCK) {
            tiles[n] = (struct xm_tile){ e, (int32_t)r0 };
            cum[n++] = c;
            c += (int64_t)cnt * (nr - r0 < XM_ROW_BLOCK ? nr - r0 : XM_ROW_BLOCK);
        }
    }
    cum[n] = c;
    j->n_tiles = n;
}

int porta_cpu_matmul_experts(struct porta_backend *be, struct porta_view y,
                             const struct porta_weight *w, struct porta_view x,
                             const struct porta_experts_params *p)
{
    const struct porta_cpu_kernels *k;
    struct porta_pool *pool;
    porta_cpu_parts(be, &k, &pool);
    enum porta_dtype vt = porta_type_traits(w->type)->vec_dot_type;
    int slots = p->n_tok * p->k, n_mat = (int)w->n_mat;
    int64_t nr = w->n_rows, blocks = (nr + XM_ROW_BLOCK - 1) / XM_ROW_BLOCK;
    struct porta_view wv = { w->buf, w->off };
    struct xm_job j = { .k = k, .w = w, .wdata = porta_cpu_ptr(wv),
                        .stride = porta_weight_mat_stride(w), .x = (const float *)porta_cpu_ptr(x),
                        .n_xrows = p->x_per_slot ? slots : p->n_tok, .n_tok = p->n_tok,
                        .k_slots = p->k, .x_per_slot = p->x_per_slot,
                        .ids = p->ids.buf ? (const int32_t *)porta_cpu_ptr(p->ids) : NULL,
                        .y = (float *)porta_cpu_ptr(y),
                        .weights = p->weights.buf ? (const float *)porta_cpu_ptr(p->weights)
                                                  : NULL };
    /* scratch: start[n_mat + 1], order[slots] + cursors[n_mat], tiles, cum, xa, out */
    int64_t max_tiles = (int64_t)(slots < n_mat ? slots : n_mat) * blocks;
    j.arow = vt == PORTA_F32 ? (size_t)w->n_cols * sizeof(float) : porta_row_size(vt, w->n_cols);
    size_t o_start = 0, o_order = o_start + sizeof(int32_t) * (size_t)(n_mat + 1),
           o_tiles = o_order + sizeof(int32_t) * (size_t)(slots + n_mat),
           o_cum = (o_tiles + sizeof(struct xm_tile) * (size_t)max_tiles + 7) & ~(size_t)7,
           o_xa = (o_cum + sizeof(int64_t) * (size_t)(max_tiles + 1) + 63) & ~(size_t)63,
           o_out = (o_xa + (vt == PORTA_F32 ? 0 : j.arow * (size_t)j.n_xrows) + 63) & ~(size_t)63,
           total = o_out + (j.weights ? sizeof(float) * (size_t)slots * (size_t)nr : 0);
    uint8_t *scratch = malloc(total);
    if (!scratch) {
        porta_err("cpu: out of memory for %zu bytes of expert matmul scratch", total);
        return PORTA_E_NOMEM;
    }
    int32_t *start = (int32_t *)(scratch + o_start), *order = (int32_t *)(scratch + o_order);
    j.start = start;
    j.order = order;
    j.tiles = (struct xm_tile *)(scratch + o_tiles);
    j.cum = (int64_t *)(scratch + o_cum);
    j.out = j.weights ? (float *)(scratch + o_out) : j.y;
    xm_plan(&j, start, order, (struct xm_tile *)j.tiles, (int64_t *)j.cum);
    /* a slot without a valid expert has a zero output (and no share of a sum) */
    if (!j.weights)
        for (int s = 0; s < slots; s++)
            if (slot_id(&j, s) < 0 || slot_id(&j, s) >= n_mat)
                memset(j.y + (size_t)s * nr, 0, sizeof(float) * (size_t)nr);
    bool par = j.cum[j.n_tiles] * w->n_cols >= XM_INLINE_WORK;
    if (vt == PORTA_F32) {
        j.xa = (uint8_t *)j.x;
    } else {
        j.xa = scratch + o_xa;
        run(pool, xm_quantize, &j, par);
    }
    /* tiles in more, smaller tasks than threads: whichever thread is running takes the next */
    if (par)
        porta_pool_run_n(pool, 4 * porta_pool_size(pool), xm_tiles, &j);
    else
        xm_tiles(&j, 0, 1);
    if (j.weights)
        run(pool, xm_reduce, &j, par && (int64_t)slots * nr >= XM_INLINE_WORK);
    free(scratch);
    return 0;
}
