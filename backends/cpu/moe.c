/* moe.c - the CPU backend's mixture-of-experts ops: top-k routing (the scalar reference per
 * token, tokens spread over the pool) and the expert matmul, which groups the (token, slot)
 * pairs by expert so that each chosen expert's rows are read once per call and multiplied with
 * every token that picked it, through the tile GEMM over repacked expert rows where the kernel
 * set has one: a prefill chunk streams an expert's weights once, not once per token. */
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

/* Two paths share the plan (slots sorted by expert, cut into tiles of 16 rows of one expert):
 * - tiles: the kernel set's tile GEMM over the repacked expert rows (repack.h). The slots'
 *   activations are gathered in expert order, so each tile multiplies one 16-row group with a
 *   run of up to XM_TILE_TOK consecutive slots of its expert; the products land in expert order
 *   and are scattered (or summed with the routing weights) afterwards.
 * - rows: vec_dot per (row, slot), for the types and sets without a tile kernel.
 * Either way only the chosen experts' rows are read: decode streams k experts, not n_mat. */

#define XM_ROW_BLOCK 16             /* = PORTA_GEMM_ROWS */
#define XM_TILE_TOK 64              /* slots per tile on the tile path */
/* below this many multiply-adds a job runs on the calling thread: waking the pool costs more */
#define XM_INLINE_WORK 65536
#define XM_ACT_PAR 16               /* activation rows worth the pool (decode's k are not) */

static void run(struct porta_pool *pool, porta_job_fn fn, void *arg, bool parallel)
{
    if (parallel)
        porta_pool_run(pool, fn, arg);
    else
        fn(arg, 0, 1);
}

/* ROW_BLOCK rows of one expert, multiplied with the slots [q0, q1) of the expert order (the
 * rows path: all of the expert's slots) */
struct xm_tile {
    int32_t e, r0, q0, q1;
};

struct xm_job {
    const struct porta_cpu_kernels *k;
    const struct porta_weight *w;
    const uint8_t *wdata;           /* matrix 0 */
    size_t stride;                  /* bytes from one matrix to the next */
    const float *x;
    uint8_t *xa;                    /* rows path: x rows in the vec_dot type; tiles path: the
                                       slots' activations in expert order */
    size_t arow;                    /* bytes per xa row */
    long n_xrows;
    int n_tok, k_slots;
    bool x_per_slot;
    const int32_t *ids;             /* NULL: slot j uses matrix j */
    int32_t *order, *start;         /* slots grouped by expert: order[start[e] .. start[e + 1]),
                                       then n_mat cursors */
    int32_t *inv;                   /* slot -> its place in order (-1: no expert) */
    struct xm_tile *tiles;
    int64_t *cum;                   /* cost before tile i; cum[n_tiles] = total */
    int n_tiles;
    float *out;                     /* products: rows path [slots][n_rows]; tiles path
                                       [place in order][n_rows] */
    float *y;                       /* the reduced output (weights set) */
    const float *weights;
    /* tiles path */
    porta_gemm_fn gemm;
    porta_gemm_act_fn act_fn;
    const uint8_t **packs;          /* per matrix: its first repacked group */
};

static inline int slot_id(const struct xm_job *j, int slot)
{
    return j->ids ? j->ids[slot] : slot % j->k_slots;
}

static void xm_quantize(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    enum porta_dtype vt = porta_type_traits(j->w->type)->vec_dot_type;
    long lo, hi;
    porta_split(j->n_xrows, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++)
        j->k->quantize[vt](j->x + r * j->w->n_cols, j->xa + r * j->arow, j->w->n_cols);
}

/* tiles path: activation row q = the input of slot order[q], in the tile kernel's format */
static void xt_act(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    int64_t nc = j->w->n_cols;
    long lo, hi;
    porta_split(j->start[j->w->n_mat], ith, nth, &lo, &hi);
    for (long q = lo; q < hi; q++) {
        int slot = j->order[q];
        long xr = j->x_per_slot ? slot : slot / j->k_slots;
        j->act_fn(j->x + xr * nc, j->xa + (size_t)q * j->arow, nc);
    }
}

/* the tiles whose cost starts inside task ith's share of the total */
static void xm_tiles(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    porta_vec_dot_fn dot = j->k->vec_dot[j->w->type];
    int64_t nr = j->w->n_rows, nc = j->w->n_cols, total = j->cum[j->n_tiles];
    int64_t lo = total * ith / nth, hi = total * (ith + 1) / nth;
    size_t gbytes = porta_repack_group_bytes(j->w->type, nc);
    for (int i = 0; i < j->n_tiles; i++) {
        if (j->cum[i] < lo || j->cum[i] >= hi)
            continue;
        const struct xm_tile *tl = &j->tiles[i];
        long r0 = tl->r0, r1 = r0 + XM_ROW_BLOCK < nr ? r0 + XM_ROW_BLOCK : nr;
        if (j->gemm) {
            j->gemm(nc, j->packs[tl->e] + (size_t)(r0 / XM_ROW_BLOCK) * gbytes,
                    j->xa + (size_t)tl->q0 * j->arow, j->arow, tl->q1 - tl->q0,
                    j->out + (size_t)tl->q0 * nr + r0, (size_t)nr, (int)(r1 - r0));
            continue;
        }
        const uint8_t *we = j->wdata + (size_t)tl->e * j->stride;
        for (int32_t q = tl->q0; q < tl->q1; q++) {
            int32_t slot = j->order[q];
            long xr = j->x_per_slot ? slot : slot / j->k_slots;
            const uint8_t *a = j->xa + (size_t)xr * j->arow;
            float *o = j->out + (size_t)slot * nr;
            for (long r = r0; r < r1; r++)
                dot(nc, &o[r], we + (size_t)r * j->w->row_bytes, a);
        }
    }
}

/* the product of a slot: where the path left it, or NULL (no expert) */
static inline const float *slot_out(const struct xm_job *j, int slot)
{
    int e = slot_id(j, slot);
    if (e < 0 || e >= j->w->n_mat)
        return NULL;
    return j->out + (size_t)(j->gemm ? j->inv[slot] : slot) * j->w->n_rows;
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
            int slot = (int)t * j->k_slots + s;
            const float *o = slot_out(j, slot);
            if (!o)
                continue;
            float wt = j->weights[slot];
            for (int64_t r = 0; r < nr; r++)
                yt[r] += wt * o[r];
        }
    }
}

/* tiles path, no weights: y[slot] = its product (zeros for a slot without an expert) */
static void xt_scatter(void *arg, int ith, int nth)
{
    struct xm_job *j = arg;
    int64_t nr = j->w->n_rows;
    long lo, hi;
    porta_split((long)j->n_tok * j->k_slots, ith, nth, &lo, &hi);
    for (long s = lo; s < hi; s++) {
        const float *o = slot_out(j, (int)s);
        if (o)
            memcpy(j->y + (size_t)s * nr, o, sizeof(float) * (size_t)nr);
        else
            memset(j->y + (size_t)s * nr, 0, sizeof(float) * (size_t)nr);
    }
}

/* Counting sort of the slots by expert (inv: each slot's place); builds the tiles (runs of at
 * most tile_tok slots, all of an expert's slots when tile_tok is 0) and their cost prefix. */
static void xm_plan(struct xm_job *j, int tile_tok)
{
    int32_t *start = j->start, *order = j->order, *inv = j->inv;
    struct xm_tile *tiles = j->tiles;
    int64_t *cum = j->cum;
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
        inv[s] = e >= 0 && e < n_mat ? fill[e] : -1;
        if (e >= 0 && e < n_mat)
            order[fill[e]++] = s;
    }
    int n = 0;
    int64_t c = 0;
    for (int e = 0; e < n_mat; e++) {
        int q0 = start[e], q1 = start[e + 1], run = tile_tok ? tile_tok : q1 - q0;
        for (int qa = q0; qa < q1; qa += run)
            for (int64_t r0 = 0; r0 < nr; r0 += XM_ROW_BLOCK) {
                int qb = qa + run < q1 ? qa + run : q1;
                tiles[n] = (struct xm_tile){ e, (int32_t)r0, qa, qb };
                cum[n++] = c;
                c += (int64_t)(qb - qa) * (nr - r0 < XM_ROW_BLOCK ? nr - r0 : XM_ROW_BLOCK);
            }
    }
    cum[n] = c;
    j->n_tiles = n;
}

/* The tiles path's repacked matrices, or false (no tile kernel here, repacking off, no
 * memory): a stack whose matrices lie back to back in whole 16-row groups is repacked as one
 * matrix, any other (a strided view, a row count off the group size) one matrix at a time. */
static bool xt_packs(struct porta_backend *be, const struct porta_cpu_kernels *k,
                     const struct porta_weight *w, const uint8_t **packs)
{
    if (!k->gemm[w->type] || !k->gemm_act[w->type] || !porta_repack_supported(w->type) ||
        w->row_bytes != porta_row_size(w->type, w->n_cols))
        return false;
    size_t gb, stride = porta_weight_mat_stride(w);
    struct porta_weight m = *w;
    m.n_mat = 1;
    m.mat_stride = 0;
    if (w->n_rows % XM_ROW_BLOCK == 0 && stride == (size_t)w->n_rows * w->row_bytes) {
        m.n_rows = w->n_rows * w->n_mat;
        const uint8_t *p = porta_cpu_pack(be, &m, &gb);
        for (int64_t e = 0; p && e < w->n_mat; e++)
            packs[e] = p + (size_t)e * (size_t)(w->n_rows / XM_ROW_BLOCK) * gb;
        return p != NULL;
    }
    for (int64_t e = 0; e < w->n_mat; e++) {
        m.off = w->off + (size_t)e * stride;
        if (!(packs[e] = porta_cpu_pack(be, &m, &gb)))
            return false;
    }
    return true;
}

/* The call's scratch, one block: start[n_mat + 1], order[slots] + cursors[n_mat], inv[slots],
 * tiles, cum, the activations (xa) and the products (out: the tiles path's always, the rows
 * path's when they are summed; else y itself). Points j's arrays into it; NULL when out of
 * memory (logged). */
static uint8_t *xm_scratch(struct xm_job *j, bool tiles)
{
    int n_mat = (int)j->w->n_mat, slots = j->n_tok * j->k_slots;
    int64_t nr = j->w->n_rows, blocks = (nr + XM_ROW_BLOCK - 1) / XM_ROW_BLOCK;
    bool f32 = porta_type_traits(j->w->type)->vec_dot_type == PORTA_F32;
    int64_t max_tiles = ((int64_t)(slots < n_mat ? slots : n_mat) +
                         (tiles ? slots / XM_TILE_TOK : 0)) * blocks;
    size_t n_xa = tiles ? (size_t)slots : f32 ? 0 : (size_t)j->n_xrows;
    bool own_out = j->weights || tiles;
    size_t o_order = sizeof(int32_t) * (size_t)(n_mat + 1),
           o_inv = o_order + sizeof(int32_t) * (size_t)(slots + n_mat),
           o_tiles = o_inv + sizeof(int32_t) * (size_t)slots,
           o_cum = (o_tiles + sizeof(struct xm_tile) * (size_t)max_tiles + 7) & ~(size_t)7,
           o_xa = (o_cum + sizeof(int64_t) * (size_t)(max_tiles + 1) + 63) & ~(size_t)63,
           o_out = (o_xa + j->arow * n_xa + 63) & ~(size_t)63,
           total = o_out + (own_out ? sizeof(float) * (size_t)slots * (size_t)nr : 0);
    uint8_t *s = aligned_alloc(64, (total + 63) & ~(size_t)63);
    if (!s) {
        porta_err("cpu: out of memory for %zu bytes of expert matmul scratch", total);
        return NULL;
    }
    j->start = (int32_t *)s;
    j->order = (int32_t *)(s + o_order);
    j->inv = (int32_t *)(s + o_inv);
    j->tiles = (struct xm_tile *)(s + o_tiles);
    j->cum = (int64_t *)(s + o_cum);
    j->xa = !tiles && f32 ? (uint8_t *)j->x : s + o_xa;
    j->out = own_out ? (float *)(s + o_out) : j->y;
    return s;
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
    int64_t nr = w->n_rows;
    struct porta_view wv = { w->buf, w->off };
    struct xm_job j = { .k = k, .w = w, .wdata = porta_cpu_ptr(wv),
                        .stride = porta_weight_mat_stride(w), .x = (const float *)porta_cpu_ptr(x),
                        .n_xrows = p->x_per_slot ? slots : p->n_tok, .n_tok = p->n_tok,
                        .k_slots = p->k, .x_per_slot = p->x_per_slot,
                        .ids = p->ids.buf ? (const int32_t *)porta_cpu_ptr(p->ids) : NULL,
                        .y = (float *)porta_cpu_ptr(y),
                        .weights = p->weights.buf ? (const float *)porta_cpu_ptr(p->weights)
                                                  : NULL };
    const uint8_t **packs = malloc(sizeof *packs * (size_t)n_mat);
    if (!packs) {
        porta_err("cpu: out of memory for the expert matmul of %s", w->name ? w->name : "?");
        return PORTA_E_NOMEM;
    }
    bool tiles = xt_packs(be, k, w, packs);
    if (tiles) {
        j.gemm = k->gemm[w->type];
        j.act_fn = k->gemm_act[w->type];
        j.packs = packs;
        j.arow = porta_gemm_act_bytes(w->type, w->n_cols);
    } else {
        j.arow = vt == PORTA_F32 ? (size_t)w->n_cols * sizeof(float)
                                 : porta_row_size(vt, w->n_cols);
    }
    uint8_t *scratch = xm_scratch(&j, tiles);
    if (!scratch) {
        free(packs);
        return PORTA_E_NOMEM;
    }
    xm_plan(&j, tiles ? XM_TILE_TOK : 0);
    /* rows path, no sum: a slot without a valid expert has a zero output */
    if (!tiles && !j.weights)
        for (int s = 0; s < slots; s++)
            if (slot_id(&j, s) < 0 || slot_id(&j, s) >= n_mat)
                memset(j.y + (size_t)s * nr, 0, sizeof(float) * (size_t)nr);
    bool par = j.cum[j.n_tiles] * w->n_cols >= XM_INLINE_WORK;
    if (tiles)
        run(pool, xt_act, &j, par && j.start[n_mat] >= XM_ACT_PAR);
    else if (vt != PORTA_F32)
        run(pool, xm_quantize, &j, par);
    /* tiles in more, smaller tasks than threads: whichever thread is running takes the next */
    if (par)
        porta_pool_run_n(pool, 4 * porta_pool_size(pool), xm_tiles, &j);
    else
        xm_tiles(&j, 0, 1);
    bool par_out = par && (int64_t)slots * nr >= XM_INLINE_WORK;
    if (j.weights)
        run(pool, xm_reduce, &j, par_out);
    else if (tiles)
        run(pool, xt_scatter, &j, par_out);
    free(scratch);
    free(packs);
    return 0;
}
