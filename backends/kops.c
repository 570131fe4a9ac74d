/* kops.c - each vtable op as launches of the kernels in kernels/cl, for every backend that runs
 * them (see kops.h): argument checks, grids and argument lists in the kernels' order. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "kops.h"
#include "quant.h"
#include "rope.h"

#define ATT_DPT 16              /* kernels/cl/attention.cl: output dims per work-item */
#define ATT_MAX_DK 1024
#define ATT_MAX_LSZ 256
#define MOE_MAX_EXPERT 2048     /* kernels/cl/moe.cl */
#define STORE_LSZ 64            /* kv and mla stores: work-items per group where it matters */

/* the weight types with kernels: kernel-name suffix and elements per unit (type_sub() in
 * kernels/cl/dequant.h: one work-item of emb_/deq_ decodes one unit) */
static const struct {
    enum porta_dtype type;
    const char *suffix;
    int sub;
} types[KOPS_N_TYPES] = {
    { PORTA_F32, "f32", 8 },    { PORTA_F16, "f16", 8 },    { PORTA_BF16, "bf16", 8 },
    { PORTA_Q4_0, "q4_0", 32 }, { PORTA_Q4_1, "q4_1", 32 }, { PORTA_Q5_0, "q5_0", 32 },
    { PORTA_Q5_1, "q5_1", 32 }, { PORTA_Q8_0, "q8_0", 32 }, { PORTA_Q2_K, "q2_k", 32 },
    { PORTA_Q3_K, "q3_k", 32 }, { PORTA_Q4_K, "q4_k", 32 }, { PORTA_Q5_K, "q5_k", 32 },
    { PORTA_Q6_K, "q6_k", 32 },
};

int kops_type_index(enum porta_dtype t)
{
    for (int i = 0; i < KOPS_N_TYPES; i++)
        if (types[i].type == t)
            return i;
    return -1;
}

int kops_type_sub(enum porta_dtype t) { return types[kops_type_index(t)].sub; }

int kops_typed_slot(enum kops_typed kind, enum porta_dtype t)
{
    return (int)kind * KOPS_N_TYPES + kops_type_index(t);
}

const char *kops_kernel_name(int slot, char *buf, size_t n)
{
    static const char *const typed[KOPS_N_TYPED] = { "mv", "mt", "mm", "emb", "deq", "me",
                                                     "mr", "mrt", "mre" };
    static const char *const other[KOPS_N_KERNELS - KOPS_RMSNORM] = {
        "rmsnorm",       "eltwise",      "rope",          "kv_f32_store",  "kv_f16_store",
        "kv_f32_attn",   "kv_f16_attn",  "mla_f32_store", "mla_f16_store", "mla_f32_attn",
        "mla_f16_attn",  "moe_route",    "rp_pack",
    };
    if (slot < KOPS_RMSNORM)
        snprintf(buf, n, "%s_%s", typed[slot / KOPS_N_TYPES], types[slot % KOPS_N_TYPES].suffix);
    else
        snprintf(buf, n, "%s", other[slot - KOPS_RMSNORM]);
    return buf;
}

int kops_get_kernels(void *ctx, int (*get)(void *ctx, int slot, const char *name))
{
    char name[24];
    for (int i = 0; i < KOPS_N_KERNELS; i++) {
        int rc = get(ctx, i, kops_kernel_name(i, name, sizeof name));
        if (rc)
            return rc;
    }
    return 0;
}

int kops_env_int(const char *name, int def)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return def;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < INT_MIN || v > INT_MAX) {
        porta_warn("%s=%s is not an integer: ignored (using %d)", name, s, def);
        return def;
    }
    return (int)v;
}

/* ---- building a launch ---- */

static size_t ceil_div(size_t n, size_t m) { return (n + m - 1) / m; }

static struct kops_launch plan(int kernel, int dims, size_t g0, size_t g1, size_t g2, size_t lsz)
{
    struct kops_launch l = { .kernel = kernel, .dims = dims, .groups = { g0, g1, g2 },
                             .lsz = lsz };
    return l;
}

/* ---- argument checks ---- */

bool kops_elem_off(const struct kops_dev *d, struct porta_view v, size_t es, const char *what,
                   uint64_t *out)
{
    if (v.off % es) {
        porta_err("%s: %s: byte offset %zu is not a multiple of %zu", d->name, what, v.off, es);
        return false;
    }
    *out = v.off / es;
    return true;
}

int kops_weight_off(const struct kops_dev *d, const struct porta_weight *w, uint64_t *off)
{
    size_t align = w->type == PORTA_F32 ? 4 : 2;
    if (kops_type_index(w->type) < 0)
        return PORTA_E_UNSUPPORTED;
    if (w->off % align) {
        porta_err("%s: weight '%s' starts at byte %zu, not a multiple of %zu", d->name,
                  w->name ? w->name : "?", w->off, align);
        return PORTA_E_INVAL;
    }
    if (w->n_mat > 1 && porta_weight_mat_stride(w) % align) {
        porta_err("%s: weight '%s': its matrices are %zu bytes apart, not a multiple of %zu",
                  d->name, w->name ? w->name : "?", porta_weight_mat_stride(w), align);
        return PORTA_E_INVAL;
    }
    if (w->n_rows > INT32_MAX || w->n_cols > INT32_MAX / 2 || w->n_mat > INT32_MAX) {
        porta_err("%s: weight '%s' is too large for one launch", d->name,
                  w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    *off = w->off;
    return 0;
}

/* Copies a host array into the staging buffer; *off gets its offset in elements of es bytes. */
static int stage_elems(struct kops_dev *d, const void *src, size_t n, size_t es, uint64_t *off)
{
    int rc = d->stage(d->ctx, src, n * es, off);
    *off /= es;
    return rc;
}

/* ---- row packs ---- */

static bool pack_overlaps(const struct kops_pack *pk, const struct porta_buf *b, size_t lo,
                          size_t hi)
{
    size_t len = (size_t)pk->n_rows * pk->row_bytes;
    return pk->src == b && (lo == hi || (pk->off < hi && lo < pk->off + len));
}

void kops_drop_packs(struct porta_backend *be, const struct porta_buf *b, size_t lo, size_t hi)
{
    struct kops_dev *d = KOPS_DEV(be);
    for (int i = 0; i < d->n_packs;) {
        struct kops_pack *pk = &d->packs[i];
        if (pack_overlaps(pk, b, lo, hi)) {
            d->pack_bytes -= pk->bytes;
            be->ops->buf_free(be, pk->buf);
            *pk = d->packs[--d->n_packs];
        } else {
            i++;
        }
    }
    d->pack_hint = 0;
}

void kops_close(struct porta_backend *be)
{
    struct kops_dev *d = KOPS_DEV(be);
    while (d->n_packs)
        kops_drop_packs(be, d->packs[0].src, 0, 0);
    free(d->packs);
    d->packs = NULL;
    d->cap_packs = 0;
}

/* The row packs of w (weight offset wo), made when first asked for; NULL when they cannot be
 * made (no memory: warned once, the caller multiplies the matrix as stored). */
static const struct kops_pack *get_pack(struct porta_backend *be, const struct porta_weight *w,
                                        uint64_t wo)
{
    struct kops_dev *d = KOPS_DEV(be);
    for (int k = 0; k < d->n_packs; k++) {
        int i = (d->pack_hint + k) % d->n_packs;
        const struct kops_pack *pk = &d->packs[i];
        if (pk->src == w->buf && pk->off == wo && pk->type == w->type &&
            pk->n_rows == w->n_rows && pk->n_cols == w->n_cols && pk->row_bytes == w->row_bytes) {
            d->pack_hint = i + 1 < d->n_packs ? i + 1 : 0;   /* products come in model order */
            return pk;
        }
    }
    if (d->pack_failed)
        return NULL;
    const struct porta_type_traits *tr = porta_type_traits(w->type);
    size_t words = (size_t)(w->n_cols / tr->blck) * tr->type_size / 2;  /* per row */
    size_t groups = ceil_div((size_t)w->n_rows, KOPS_PACK_ROWS);
    struct kops_pack pk = { .src = w->buf, .off = wo, .row_bytes = w->row_bytes,
                            .type = w->type, .n_rows = w->n_rows, .n_cols = w->n_cols,
                            .bytes = groups * KOPS_PACK_ROWS * words * 2 };
    if (words > INT32_MAX || groups > INT32_MAX)
        return NULL;
    if (d->n_packs == d->cap_packs) {
        int cap = d->cap_packs ? 2 * d->cap_packs : 64;
        struct kops_pack *np = realloc(d->packs, sizeof *np * (size_t)cap);
        if (!np)
            return NULL;
        d->packs = np;
        d->cap_packs = cap;
    }
    if (be->ops->buf_alloc(be, pk.bytes, PORTA_BUF_WEIGHTS, &pk.buf)) {
        porta_warn("%s: no memory for the row packs of %s (%zu bytes, %zu in packs so far): "
                   "one-token products read the matrices as stored from now on",
                   d->name, w->name ? w->name : "a weight", pk.bytes, d->pack_bytes);
        d->pack_failed = true;
        return NULL;
    }
    struct kops_launch l = plan(KOPS_RP_PACK, 2, ceil_div(words, 64), groups, 1, 64);
    l.any_lsz = true;
    kops_a_buf(&l, pk.buf);
    kops_a_at(&l, w->buf, wo);
    kops_a_u64(&l, w->row_bytes);
    kops_a_i32(&l, (int32_t)words);
    kops_a_i32(&l, (int32_t)w->n_rows);
    if (d->launch(d->ctx, &l)) {
        be->ops->buf_free(be, pk.buf);
        return NULL;
    }
    d->packs[d->n_packs++] = pk;
    d->pack_bytes += pk.bytes;
    porta_dbg("%s: row packs of %s (%s, %lld x %lld): %zu bytes, %zu in all", d->name,
              w->name ? w->name : "?", porta_dtype_name(w->type), (long long)w->n_rows,
              (long long)w->n_cols, pk.bytes, d->pack_bytes);
    return &d->packs[d->n_packs - 1];
}

/* Whether w's products go over row packs: on devices that want them, and for plain types
 * with whole blocks of 8 elements (the kernels have no partial block). */
static bool packable(const struct kops_dev *d, const struct porta_weight *w)
{
    bool plain = w->type == PORTA_F32 || w->type == PORTA_F16 || w->type == PORTA_BF16;
    return d->row_packs && (!plain || w->n_cols % 8 == 0);
}

/* ---- matmul ---- */

int kops_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                struct porta_view x, int n_tok)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t yo, xo, wo;
    int rc = kops_weight_off(d, w, &wo);
    if (rc)
        return rc;
    if (!kops_elem_off(d, y, 4, "matmul y", &yo) || !kops_elem_off(d, x, 4, "matmul x", &xo))
        return PORTA_E_INVAL;
    size_t rows = (size_t)w->n_rows;
    struct kops_launch l;
    const struct kops_pack *pk;
    if (w->n_mat == 1 && (n_tok == 1 || d->prefill_packs) && packable(d, w) &&
        (pk = get_pack(be, w, wo))) {
        size_t groups = ceil_div(rows, KOPS_PACK_ROWS);
        if (n_tok == 1)
            l = plan(kops_typed_slot(KOPS_MR, w->type), 1, ceil_div(groups, (size_t)d->mr_lsz),
                     1, 1, (size_t)d->mr_lsz);
        else
            l = plan(kops_typed_slot(KOPS_MRT, w->type), 2, ceil_div(groups, (size_t)d->mr_lsz),
                     ceil_div((size_t)n_tok, (size_t)d->mrt_tok), 1, (size_t)d->mr_lsz);
        kops_a_at(&l, y.buf, yo);
        kops_a_buf(&l, pk->buf);
        kops_a_i32(&l, (int32_t)w->n_rows);
        kops_a_i32(&l, (int32_t)w->n_cols);
        kops_a_at(&l, x.buf, xo);
        kops_a_i32(&l, n_tok);
        return d->launch(d->ctx, &l);
    }
    if (n_tok == 1)
        l = plan(kops_typed_slot(KOPS_MV, w->type), 2, ceil_div(rows, (size_t)d->mv_rows), 1, 1,
                 (size_t)d->mv_lsz);
    else if (n_tok < d->mm_min_tok || !d->prefill_mm)
        l = plan(kops_typed_slot(KOPS_MT, w->type), 2, ceil_div(rows, (size_t)d->mv_rows),
                 ceil_div((size_t)n_tok, (size_t)d->mt_tok), 1, (size_t)d->mv_lsz);
    else
        l = plan(kops_typed_slot(KOPS_MM, w->type), 2, ceil_div(rows, (size_t)d->mm_tr),
                 ceil_div((size_t)n_tok, (size_t)d->mm_tt), 1, (size_t)d->mm_lsz);
    kops_a_at(&l, y.buf, yo);
    kops_a_at(&l, w->buf, wo);
    kops_a_u64(&l, w->row_bytes);
    kops_a_i32(&l, (int32_t)w->n_rows);
    kops_a_i32(&l, (int32_t)w->n_cols);
    kops_a_at(&l, x.buf, xo);
    kops_a_i32(&l, n_tok);
    return d->launch(d->ctx, &l);
}

/* ---- the other ops ---- */

/* a work-group per row; rows in slices of at most max_rows per launch */
int kops_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                 struct porta_view w, int n_rows, int n, float eps)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t yo, xo, wo = 0;
    if (!kops_elem_off(d, y, 4, "rmsnorm y", &yo) || !kops_elem_off(d, x, 4, "rmsnorm x", &xo) ||
        (w.buf && !kops_elem_off(d, w, 4, "rmsnorm w", &wo)))
        return PORTA_E_INVAL;
    for (size_t r0 = 0; r0 < (size_t)n_rows; r0 += d->max_rows) {
        size_t rows = (size_t)n_rows - r0 < d->max_rows ? (size_t)n_rows - r0 : d->max_rows;
        struct kops_launch l = plan(KOPS_RMSNORM, 2, 1, rows, 1, (size_t)d->norm_lsz);
        kops_a_at(&l, y.buf, yo + (uint64_t)r0 * (uint64_t)n);
        kops_a_at(&l, x.buf, xo + (uint64_t)r0 * (uint64_t)n);
        kops_a_at(&l, w.buf ? w.buf : x.buf, wo);
        kops_a_i32(&l, w.buf != NULL);
        kops_a_i32(&l, n);
        kops_a_f32(&l, eps);
        int rc = d->launch(d->ctx, &l);
        if (rc)
            return rc;
    }
    return 0;
}

int kops_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head, int head_dim,
              const int32_t *pos, const struct porta_rope_params *p)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t xo, po, to;
    float *tab;
    if (!kops_elem_off(d, x, 4, "rope x", &xo))
        return PORTA_E_INVAL;
    int rc = porta_rope_table(p, &tab);
    if (rc)
        return rc;
    int half = p->n_rot / 2;
    rc = stage_elems(d, pos, (size_t)n_tok, sizeof(int32_t), &po);
    if (!rc)
        rc = stage_elems(d, tab, 3 * (size_t)half, sizeof(float), &to);
    free(tab);
    if (rc)
        return rc;
    size_t l0 = half < d->elt_lsz ? (size_t)half : (size_t)d->elt_lsz;
    struct kops_launch l = plan(KOPS_ROPE, 3, ceil_div((size_t)half, l0 ? l0 : 1),
                                d->rope_all_heads ? 1 : (size_t)n_head, (size_t)n_tok, l0);
    kops_a_at(&l, x.buf, xo);
    kops_a_i32(&l, n_head);
    kops_a_i32(&l, head_dim);
    kops_a_i32(&l, p->n_rot);
    kops_a_i32(&l, p->style == PORTA_ROPE_NEOX);
    kops_a_stage_at(&l, po);
    kops_a_stage_at(&l, to);
    kops_a_f32(&l, p->freq_scale);
    kops_a_f32(&l, porta_rope_mscale(p));
    return d->launch(d->ctx, &l);
}

/* the attention work-group size for these head dims (each work-item owns ATT_DPT output
 * dims), or -1 (logged) when the kernel cannot take them */
static int att_lsz_for(const struct kops_dev *d, int dk, int dv)
{
    int lsz = d->att_lsz;
    while (lsz * ATT_DPT < dv && lsz < ATT_MAX_LSZ && lsz * 2 <= d->max_lsz)
        lsz *= 2;
    if (dk > ATT_MAX_DK || dv > lsz * ATT_DPT) {
        porta_err("%s: attention with head dims %d/%d is beyond the kernel's %d/%d", d->name, dk,
                  dv, ATT_MAX_DK, lsz * ATT_DPT);
        return -1;
    }
    return lsz;
}

/* What both attention ops need before their launches: the attend work-group size for the head
 * dims (*lsz) and the call's positions (and sequence ids when it has them) staged as int32
 * arrays at element offsets *po and *so (*so 0 without seq). PORTA_E_UNSUPPORTED (logged) for
 * head dims past the kernel. */
static int attn_prep(struct kops_dev *d, const struct porta_attn_params *p, int *lsz,
                     uint64_t *po, uint64_t *so)
{
    *lsz = att_lsz_for(d, p->head_dim_k, p->head_dim_v);
    if (*lsz < 0)
        return PORTA_E_UNSUPPORTED;
    int rc = stage_elems(d, p->pos, (size_t)p->n_tok, sizeof(int32_t), po);
    *so = 0;
    if (!rc && p->seq)
        rc = stage_elems(d, p->seq, (size_t)p->n_tok, sizeof(int32_t), so);
    return rc;
}

/* the arguments that the store and attend kernels share after their own: positions, sequence
 * ids and whether there are any */
static void a_pos_seq(struct kops_launch *l, const struct porta_attn_params *p, uint64_t po,
                      uint64_t so)
{
    kops_a_stage_at(l, po);
    kops_a_stage_at(l, so);
    kops_a_i32(l, p->seq != NULL);
}

int kops_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                   struct porta_view k, struct porta_view v, const struct porta_attn_params *p)
{
    struct kops_dev *d = KOPS_DEV(be);
    int f16 = p->kv_type == PORTA_F16, es = f16 ? 2 : 4, rc;
    uint64_t oo, qo, ko, vo, kco, vco, po, so;
    if (!kops_elem_off(d, out, 4, "attention out", &oo) ||
        !kops_elem_off(d, q, 4, "attention q", &qo) ||
        !kops_elem_off(d, k, 4, "attention k", &ko) ||
        !kops_elem_off(d, v, 4, "attention v", &vo) ||
        !kops_elem_off(d, p->k_cache, (size_t)es, "attention k_cache", &kco) ||
        !kops_elem_off(d, p->v_cache, (size_t)es, "attention v_cache", &vco))
        return PORTA_E_INVAL;
    int lsz;
    if ((rc = attn_prep(d, p, &lsz, &po, &so)))
        return rc;
    int dk = p->head_dim_k, dv = p->head_dim_v, nkv = p->n_head_kv;
    size_t wide = (size_t)nkv * (size_t)(dk > dv ? dk : dv);
    struct kops_launch s = plan(KOPS_KV_STORE + f16, 2, ceil_div(wide, STORE_LSZ),
                                (size_t)p->n_tok, 1, STORE_LSZ);
    s.any_lsz = true;
    kops_a_at(&s, p->k_cache.buf, kco);
    kops_a_at(&s, p->v_cache.buf, vco);
    kops_a_at(&s, k.buf, ko);
    kops_a_at(&s, v.buf, vo);
    a_pos_seq(&s, p, po, so);
    kops_a_i32(&s, nkv);
    kops_a_i32(&s, dk);
    kops_a_i32(&s, dv);
    kops_a_i32(&s, p->n_ctx);
    if ((rc = d->launch(d->ctx, &s)))
        return rc;
    struct kops_launch a = plan(KOPS_KV_ATTN + f16, 2, (size_t)p->n_head, (size_t)p->n_tok, 1,
                                (size_t)lsz);
    kops_a_at(&a, out.buf, oo);
    kops_a_at(&a, q.buf, qo);
    kops_a_at(&a, p->k_cache.buf, kco);
    kops_a_at(&a, p->v_cache.buf, vco);
    a_pos_seq(&a, p, po, so);
    kops_a_i32(&a, p->n_head);
    kops_a_i32(&a, nkv);
    kops_a_i32(&a, dk);
    kops_a_i32(&a, dv);
    kops_a_i32(&a, p->n_ctx);
    kops_a_f32(&a, p->scale);
    return d->launch(d->ctx, &a);
}

int kops_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                 struct porta_view a,
                 struct porta_view b, int64_t n, int64_t nb, float s)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t yo, ao, bo = 0;
    bool binary = op == PORTA_ELT_ADD || op == PORTA_ELT_MUL || op == PORTA_ELT_SWIGLU;
    if (!kops_elem_off(d, y, 4, "eltwise y", &yo) || !kops_elem_off(d, a, 4, "eltwise a", &ao) ||
        (binary && !kops_elem_off(d, b, 4, "eltwise b", &bo)))
        return PORTA_E_INVAL;
    if (n > INT32_MAX) {
        porta_err("%s: eltwise over %lld elements is too large for one launch", d->name,
                  (long long)n);
        return PORTA_E_UNSUPPORTED;
    }
    size_t items = ceil_div((size_t)n, (size_t)d->elt_per);
    struct kops_launch l = plan(KOPS_ELTWISE, 1, ceil_div(items, (size_t)d->elt_lsz), 1, 1,
                                (size_t)d->elt_lsz);
    kops_a_i32(&l, (int32_t)op);
    kops_a_at(&l, y.buf, yo);
    kops_a_at(&l, a.buf, ao);
    kops_a_at(&l, binary ? b.buf : a.buf, bo);
    kops_a_i32(&l, (int32_t)n);
    kops_a_i32(&l, binary ? (int32_t)nb : 1);
    kops_a_f32(&l, s);
    return d->launch(d->ctx, &l);
}

int kops_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
               const int32_t *ids, int n_tok)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t yo, wo, io;
    int rc = kops_weight_off(d, w, &wo);
    if (rc)
        return rc;
    if (!kops_elem_off(d, y, 4, "embed y", &yo))
        return PORTA_E_INVAL;
    for (int t = 0; t < n_tok; t++)
        if (ids[t] < 0 || ids[t] >= w->n_rows) {
            porta_err("%s: token id %d outside '%s'", d->name, ids[t], w->name ? w->name : "?");
            return PORTA_E_RANGE;
        }
    if ((rc = stage_elems(d, ids, (size_t)n_tok, sizeof(int32_t), &io)))
        return rc;
    size_t units = (size_t)w->n_cols / (size_t)kops_type_sub(w->type);
    struct kops_launch l = plan(kops_typed_slot(KOPS_EMB, w->type), 2,
                                ceil_div(units + 1, (size_t)d->elt_lsz), (size_t)n_tok, 1,
                                (size_t)d->elt_lsz);
    kops_a_at(&l, y.buf, yo);
    kops_a_at(&l, w->buf, wo);
    kops_a_u64(&l, w->row_bytes);
    kops_a_i32(&l, (int32_t)w->n_cols);
    kops_a_stage_at(&l, io);
    return d->launch(d->ctx, &l);
}

/* ---- mixture of experts ---- */

int kops_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                   struct porta_view logits, const struct porta_route_params *p)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t io, wo, lo, bo = 0;
    if (!kops_elem_off(d, ids, 4, "moe_route ids", &io) ||
        !kops_elem_off(d, weights, 4, "moe_route weights", &wo) ||
        !kops_elem_off(d, logits, 4, "moe_route logits", &lo) ||
        (p->bias.buf && !kops_elem_off(d, p->bias, 4, "moe_route bias", &bo)))
        return PORTA_E_INVAL;
    if (p->n_expert > MOE_MAX_EXPERT) {
        porta_err("%s: moe_route over %d experts is beyond the kernel's %d", d->name,
                  p->n_expert, MOE_MAX_EXPERT);
        return PORTA_E_UNSUPPORTED;
    }
    struct kops_launch l = plan(KOPS_MOE_ROUTE, 1, ceil_div((size_t)p->n_tok, (size_t)d->elt_lsz),
                                1, 1, (size_t)d->elt_lsz);
    kops_a_at(&l, ids.buf, io);
    kops_a_at(&l, weights.buf, wo);
    kops_a_at(&l, logits.buf, lo);
    kops_a_at(&l, p->bias.buf ? p->bias.buf : logits.buf, bo);
    kops_a_i32(&l, p->bias.buf != NULL);
    kops_a_i32(&l, p->n_tok);
    kops_a_i32(&l, p->n_expert);
    kops_a_i32(&l, p->k);
    kops_a_i32(&l, p->gating == PORTA_GATING_SOFTMAX);
    kops_a_i32(&l, p->norm);
    kops_a_f32(&l, p->scale);
    kops_a_i32(&l, p->n_group);
    kops_a_i32(&l, p->topk_group);
    return d->launch(d->ctx, &l);
}

/* A work-group per (row group, token) walks the token's k slots; the matrices are read per
 * token (decode reads each chosen matrix once; a prefill re-reads a matrix for every token
 * that chose it). */
int kops_matmul_experts(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                        struct porta_view x, const struct porta_experts_params *p)
{
    struct kops_dev *d = KOPS_DEV(be);
    uint64_t yo, xo, wo, io = 0, so = 0;
    int rc = kops_weight_off(d, w, &wo);
    if (rc)
        return rc;
    if (!kops_elem_off(d, y, 4, "matmul_experts y", &yo) ||
        !kops_elem_off(d, x, 4, "matmul_experts x", &xo) ||
        (p->ids.buf && !kops_elem_off(d, p->ids, 4, "matmul_experts ids", &io)) ||
        (p->weights.buf && !kops_elem_off(d, p->weights, 4, "matmul_experts weights", &so)))
        return PORTA_E_INVAL;
    /* a packed stack whose matrices are whole row groups: packed as one matrix */
    struct porta_weight all = *w;
    all.n_rows = w->n_rows * w->n_mat;
    all.n_mat = 1;
    const struct kops_pack *pk = NULL;
    struct kops_launch l;
    if (packable(d, w) && w->n_rows % KOPS_PACK_ROWS == 0 &&
        porta_weight_mat_stride(w) == (size_t)w->n_rows * w->row_bytes &&
        all.n_rows <= INT32_MAX && (pk = get_pack(be, &all, wo))) {
        l = plan(kops_typed_slot(KOPS_MRE, w->type), 2,
                 ceil_div(ceil_div((size_t)w->n_rows, KOPS_PACK_ROWS), (size_t)d->mr_lsz),
                 (size_t)p->n_tok, 1, (size_t)d->mr_lsz);
        kops_a_at(&l, y.buf, yo);
        kops_a_buf(&l, pk->buf);
    } else {
        l = plan(kops_typed_slot(KOPS_ME, w->type), 2,
                 ceil_div((size_t)w->n_rows, (size_t)d->mv_rows), (size_t)p->n_tok, 1,
                 (size_t)d->mv_lsz);
        kops_a_at(&l, y.buf, yo);
        kops_a_at(&l, w->buf, wo);
        kops_a_u64(&l, w->row_bytes);
        kops_a_u64(&l, porta_weight_mat_stride(w));
    }
    kops_a_i32(&l, (int32_t)w->n_mat);
    kops_a_i32(&l, (int32_t)w->n_rows);
    kops_a_i32(&l, (int32_t)w->n_cols);
    kops_a_at(&l, x.buf, xo);
    kops_a_i32(&l, p->x_per_slot);
    kops_a_at(&l, p->ids.buf ? p->ids.buf : x.buf, io);
    kops_a_i32(&l, p->ids.buf != NULL);
    kops_a_at(&l, p->weights.buf ? p->weights.buf : x.buf, so);
    kops_a_i32(&l, p->weights.buf != NULL);
    kops_a_i32(&l, p->k);
    return d->launch(d->ctx, &l);
}

/* ---- multi-head latent attention ---- */

int kops_attention_mla(struct porta_backend *be, struct porta_view out, struct porta_view q_lat,
                       struct porta_view q_rope, struct porta_view kv_lat,
                       struct porta_view k_rope, const struct porta_attn_params *p)
{
    struct kops_dev *d = KOPS_DEV(be);
    int f16 = p->kv_type == PORTA_F16, es = f16 ? 2 : 4, rc;
    uint64_t oo, qlo, qro, klo, kro, kco, po, so;
    if (!kops_elem_off(d, out, 4, "attention_mla out", &oo) ||
        !kops_elem_off(d, q_lat, 4, "attention_mla q_lat", &qlo) ||
        !kops_elem_off(d, q_rope, 4, "attention_mla q_rope", &qro) ||
        !kops_elem_off(d, kv_lat, 4, "attention_mla kv_lat", &klo) ||
        !kops_elem_off(d, k_rope, 4, "attention_mla k_rope", &kro) ||
        !kops_elem_off(d, p->k_cache, (size_t)es, "attention_mla cache", &kco))
        return PORTA_E_INVAL;
    int lsz;
    if ((rc = attn_prep(d, p, &lsz, &po, &so)))
        return rc;
    int lat = p->head_dim_v, dk = p->head_dim_k;
    struct kops_launch s = plan(KOPS_MLA_STORE + f16, 2, ceil_div((size_t)dk, STORE_LSZ),
                                (size_t)p->n_tok, 1, STORE_LSZ);
    s.any_lsz = true;
    kops_a_at(&s, p->k_cache.buf, kco);
    kops_a_at(&s, kv_lat.buf, klo);
    kops_a_at(&s, k_rope.buf, kro);
    a_pos_seq(&s, p, po, so);
    kops_a_i32(&s, lat);
    kops_a_i32(&s, dk);
    kops_a_i32(&s, p->n_ctx);
    if ((rc = d->launch(d->ctx, &s)))
        return rc;
    struct kops_launch a = plan(KOPS_MLA_ATTN + f16, 2, (size_t)p->n_head, (size_t)p->n_tok, 1,
                                (size_t)lsz);
    kops_a_at(&a, out.buf, oo);
    kops_a_at(&a, q_lat.buf, qlo);
    kops_a_at(&a, q_rope.buf, qro);
    kops_a_at(&a, p->k_cache.buf, kco);
    a_pos_seq(&a, p, po, so);
    kops_a_i32(&a, p->n_head);
    kops_a_i32(&a, lat);
    kops_a_i32(&a, dk);
    kops_a_i32(&a, p->n_ctx);
    kops_a_f32(&a, p->scale);
    return d->launch(d->ctx, &a);
}

bool kops_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt)
{
    (void)be;
    switch (op) {
    case PORTA_OP_MATMUL:
    case PORTA_OP_EMBED:
    case PORTA_OP_MATMUL_EXPERTS:
        return kops_type_index(wt) >= 0;
    case PORTA_OP_RMSNORM:
    case PORTA_OP_ROPE:
    case PORTA_OP_ATTENTION:
    case PORTA_OP_ELTWISE:
    case PORTA_OP_MOE_ROUTE:
    case PORTA_OP_ATTENTION_MLA:
        return true;
    default:
        return false;
    }
}
