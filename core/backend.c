/* backend.c - the backend registry and the porta_be_* wrappers. Every check that a
 * backend would otherwise repeat (NULL entries, view bounds, argument ranges) is done here
 * once, so backends implement only the computation. */
#include "backend.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

extern const struct porta_backend_ops porta_backend_cpu;
#ifdef PORTA_HAVE_OPENCL
extern const struct porta_backend_ops porta_backend_opencl;
#endif
#ifdef PORTA_HAVE_HIP
extern const struct porta_backend_ops porta_backend_hip;
#endif

static const struct porta_backend_ops *const registry[] = {
#ifdef PORTA_HAVE_HIP
    &porta_backend_hip,
#endif
#ifdef PORTA_HAVE_OPENCL
    &porta_backend_opencl,
#endif
    &porta_backend_cpu,
};

const struct porta_backend_ops *const *porta_backend_registry(int *n)
{
    *n = (int)(sizeof registry / sizeof registry[0]);
    return registry;
}

const struct porta_backend_ops *porta_backend_find(const char *name)
{
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

int porta_backend_open(const char *name, const struct porta_backend_cfg *cfg,
                       struct porta_backend **out)
{
    *out = NULL;
    const struct porta_backend_ops *ops = porta_backend_find(name);
    if (!ops) {
        bool known = !strcmp(name, "cpu") || !strcmp(name, "opencl") || !strcmp(name, "hip");
        /* a known backend left out of this build is a normal fallback step, not an error */
        porta_log(known ? PORTA_LOG_INFO : PORTA_LOG_ERROR, "backend '%s' is %s", name,
                  known ? "not compiled into this binary" : "unknown (cpu, opencl, hip)");
        return PORTA_E_NOTFOUND;
    }
    struct porta_backend_cfg def = { .threads = 0, .cpu_kernels = "auto", .platform = -1,
                                     .device = -1 };
    struct porta_backend *be = calloc(1, sizeof *be);
    if (!be)
        return PORTA_E_NOMEM;
    be->ops = ops;
    snprintf(be->desc, sizeof be->desc, "%s", ops->name);
    int rc = ops->open(be, cfg ? cfg : &def);
    if (rc) {
        free(be);
        return rc;
    }
    *out = be;
    return 0;
}

#define BACKEND_ORDER_MAX 8 /* reasons kept for the final error */

int porta_backend_open_first(const char *const *order, const struct porta_backend_cfg *cfgs, int n,
                             struct porta_backend **out)
{
    *out = NULL;
    int rc = PORTA_E_NOTFOUND;
    /* why each entry failed: logged as errors only when no entry opens (a machine without a GPU
     * running the default order hip, opencl, cpu is not an error) */
    char why[BACKEND_ORDER_MAX][256];
    for (int i = 0; i < n; i++) {
        bool last = i + 1 == n;
        porta_log_demote(!last);
        rc = porta_backend_open(order[i], cfgs ? &cfgs[i] : NULL, out);
        porta_log_demote(false);
        if (rc == 0) {
            if (i > 0)
                porta_info("using backend %s (entry %d of backend.order)", (*out)->desc, i + 1);
            return 0;
        }
        if (i < BACKEND_ORDER_MAX)
            snprintf(why[i], sizeof why[i], "%s", porta_log_last_error());
        if (!last)
            porta_info("backend %s unavailable (%s), trying %s", order[i], porta_strerror(rc),
                       order[i + 1]);
    }
    for (int i = 0; i + 1 < n && i < BACKEND_ORDER_MAX; i++)
        porta_err("backend %s: %s", order[i], why[i]);
    porta_err(n ? "no backend in backend.order could be opened" : "backend.order is empty");
    return rc;
}

void porta_backend_close(struct porta_backend *be)
{
    if (!be)
        return;
    be->ops->close(be);
    free(be);
}

bool porta_device_name_matches(const char *name, const char *pattern)
{
    size_t n = strlen(pattern);
    for (; *name; name++) {
        size_t i = 0;
        while (i < n && name[i] &&
               tolower((unsigned char)name[i]) == tolower((unsigned char)pattern[i]))
            i++;
        if (i == n)
            return true;
    }
    return n == 0;
}

/* ---- wrappers ---- */

#define NEED(be, entry, opname)                                                                \
    do {                                                                                       \
        if (!(be) || !(be)->ops->entry) {                                                      \
            porta_err("backend %s does not implement %s", (be) ? (be)->ops->name : "(null)",   \
                      opname);                                                                 \
            return PORTA_E_UNSUPPORTED;                                                        \
        }                                                                                      \
    } while (0)

/* true when [v.off, v.off + n) lies inside v.buf */
static bool view_ok(const struct porta_backend *be, struct porta_view v, size_t n, const char *what)
{
    size_t end;
    if (!v.buf) {
        porta_err("%s: missing buffer", what);
        return false;
    }
    if (!porta_add_ok(v.off, n, &end) || end > be->ops->buf_size(v.buf)) {
        porta_err("%s: view [%zu, +%zu) outside its buffer of %zu bytes", what, v.off, n,
                  be->ops->buf_size(v.buf));
        return false;
    }
    return true;
}

static bool f32s(size_t n, size_t *bytes)
{
    return porta_mul_ok(n, sizeof(float), bytes);
}

bool porta_be_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt)
{
    if (!be)
        return false;
    /* the newer ops are optional entries: a backend written before them answers `supports`
     * for op ids it does not know, so the entry itself decides */
    if ((op == PORTA_OP_MOE_ROUTE && !be->ops->moe_route) ||
        (op == PORTA_OP_MATMUL_EXPERTS && !be->ops->matmul_experts) ||
        (op == PORTA_OP_ATTENTION_MLA && !be->ops->attention_mla))
        return false;
    return be->ops->supports && be->ops->supports(be, op, wt);
}

int porta_be_buf_alloc(struct porta_backend *be, size_t n, enum porta_buf_use use,
                       struct porta_buf **out)
{
    NEED(be, buf_alloc, "buf_alloc");
    *out = NULL;
    return be->ops->buf_alloc(be, n ? n : 1, use, out);
}

int porta_be_buf_from_host(struct porta_backend *be, const void *ptr, size_t n,
                           struct porta_buf **out)
{
    *out = NULL;
    if (be->ops->buf_wrap_host)
        return be->ops->buf_wrap_host(be, ptr, n, out);
    int rc = porta_be_buf_alloc(be, n, PORTA_BUF_WEIGHTS, out);
    if (rc)
        return rc;
    rc = porta_be_upload(be, *out, 0, ptr, n);
    if (rc) {
        porta_be_buf_free(be, *out);
        *out = NULL;
    }
    return rc;
}

void porta_be_buf_free(struct porta_backend *be, struct porta_buf *buf)
{
    if (be && buf)
        be->ops->buf_free(be, buf);
}

size_t porta_be_buf_size(const struct porta_backend *be, const struct porta_buf *buf)
{
    return buf ? be->ops->buf_size(buf) : 0;
}

int porta_be_upload(struct porta_backend *be, struct porta_buf *dst, size_t off, const void *src,
                    size_t n)
{
    NEED(be, upload, "upload");
    if (!view_ok(be, (struct porta_view){ dst, off }, n, "upload"))
        return PORTA_E_INVAL;
    return n ? be->ops->upload(be, dst, off, src, n) : 0;
}

int porta_be_download(struct porta_backend *be, void *dst, const struct porta_buf *src, size_t off,
                      size_t n)
{
    NEED(be, download, "download");
    if (!view_ok(be, (struct porta_view){ (struct porta_buf *)src, off }, n, "download"))
        return PORTA_E_INVAL;
    return n ? be->ops->download(be, dst, src, off, n) : 0;
}

static bool weight_ok(const struct porta_backend *be, const struct porta_weight *w,
                      const char *what)
{
    const struct porta_type_traits *tt = porta_type_traits(w->type);
    size_t n;
    size_t mat, last;
    if (!tt || w->n_rows <= 0 || w->n_cols <= 0 || w->n_mat <= 0 ||
        porta_row_size(w->type, w->n_cols) != w->row_bytes ||
        !porta_mul_ok((size_t)w->n_rows, w->row_bytes, &mat) ||
        (w->mat_stride && w->mat_stride < mat)) {
        porta_err("%s: weight '%s' has a bad shape or type", what, w->name ? w->name : "?");
        return false;
    }
    /* the last matrix ends at (n_mat - 1) * stride + its own bytes */
    if (!porta_mul_ok((size_t)(w->n_mat - 1), porta_weight_mat_stride(w), &last) ||
        !porta_add_ok(last, mat, &n))
        return false;
    return view_ok(be, (struct porta_view){ w->buf, w->off }, n, what);
}

int porta_be_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                    struct porta_view x, int n_tok)
{
    NEED(be, matmul, "matmul");
    size_t ny, nx;
    if (n_tok <= 0 || !weight_ok(be, w, "matmul") ||
        !f32s((size_t)n_tok * (size_t)w->n_rows, &ny) ||
        !f32s((size_t)n_tok * (size_t)w->n_cols, &nx) || !view_ok(be, y, ny, "matmul y") ||
        !view_ok(be, x, nx, "matmul x"))
        return PORTA_E_INVAL;
    if (!porta_be_supports(be, PORTA_OP_MATMUL, w->type)) {
        porta_err("backend %s: matmul with %s weights ('%s') is not supported", be->ops->name,
                  porta_dtype_name(w->type), w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    return be->ops->matmul(be, y, w, x, n_tok);
}

int porta_be_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                     struct porta_view w, int n_rows, int n, float eps)
{
    NEED(be, rmsnorm, "rmsnorm");
    size_t nb;
    if (n_rows <= 0 || n <= 0 || !f32s((size_t)n_rows * (size_t)n, &nb) ||
        !view_ok(be, y, nb, "rmsnorm y") || !view_ok(be, x, nb, "rmsnorm x") ||
        (w.buf && !view_ok(be, w, (size_t)n * sizeof(float), "rmsnorm w")))
        return PORTA_E_INVAL;
    return be->ops->rmsnorm(be, y, x, w, n_rows, n, eps);
}

int porta_be_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                  int head_dim, const int32_t *pos, const struct porta_rope_params *p)
{
    NEED(be, rope, "rope");
    size_t nb;
    if (n_tok <= 0 || n_head <= 0 || head_dim <= 0 || !pos || !p || p->n_rot <= 0 ||
        p->n_rot > head_dim || (p->n_rot & 1) ||
        !f32s((size_t)n_tok * (size_t)n_head * (size_t)head_dim, &nb) ||
        !view_ok(be, x, nb, "rope x"))
        return PORTA_E_INVAL;
    return be->ops->rope(be, x, n_tok, n_head, head_dim, pos, p);
}

int porta_be_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                       struct porta_view k, struct porta_view v, const struct porta_attn_params *p)
{
    NEED(be, attention, "attention");
    if (!p || p->n_tok <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        p->n_head % p->n_head_kv || p->head_dim_k <= 0 || p->head_dim_v <= 0 || !p->pos ||
        p->n_ctx <= 0 || p->n_seq <= 0 || (p->kv_type != PORTA_F32 && p->kv_type != PORTA_F16))
        return PORTA_E_INVAL;
    for (int t = 0; t < p->n_tok; t++) {
        int s = p->seq ? p->seq[t] : 0;
        if (p->pos[t] < 0 || p->pos[t] >= p->n_ctx || s < 0 || s >= p->n_seq) {
            porta_err("attention: token %d at position %d of sequence %d is outside the KV cache "
                      "(%d positions x %d sequences)", t, p->pos[t], s, p->n_ctx, p->n_seq);
            return PORTA_E_RANGE;
        }
    }
    size_t t = (size_t)p->n_tok, es = p->kv_type == PORTA_F16 ? 2 : 4;
    size_t cells = (size_t)p->n_ctx * (size_t)p->n_seq * (size_t)p->n_head_kv;
    if (!view_ok(be, q, t * p->n_head * p->head_dim_k * 4, "attention q") ||
        !view_ok(be, k, t * p->n_head_kv * p->head_dim_k * 4, "attention k") ||
        !view_ok(be, v, t * p->n_head_kv * p->head_dim_v * 4, "attention v") ||
        !view_ok(be, out, t * p->n_head * p->head_dim_v * 4, "attention out") ||
        !view_ok(be, p->k_cache, cells * p->head_dim_k * es, "attention k_cache") ||
        !view_ok(be, p->v_cache, cells * p->head_dim_v * es, "attention v_cache"))
        return PORTA_E_INVAL;
    return be->ops->attention(be, out, q, k, v, p);
}

int porta_be_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                     struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s)
{
    NEED(be, eltwise, "eltwise");
    bool binary = op == PORTA_ELT_ADD || op == PORTA_ELT_MUL || op == PORTA_ELT_SWIGLU;
    if (n <= 0 || (binary && (nb <= 0 || nb > n || n % nb)) ||
        !view_ok(be, y, (size_t)n * 4, "eltwise y") || !view_ok(be, a, (size_t)n * 4, "eltwise a") ||
        (binary && !view_ok(be, b, (size_t)nb * 4, "eltwise b")))
        return PORTA_E_INVAL;
    if (op == PORTA_ELT_SWIGLU && nb != n)
        return PORTA_E_INVAL;
    return be->ops->eltwise(be, op, y, a, b, n, nb, s);
}

int porta_be_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                   const int32_t *ids, int n_tok)
{
    NEED(be, embed, "embed");
    if (n_tok <= 0 || !ids || !weight_ok(be, w, "embed") ||
        !view_ok(be, y, (size_t)n_tok * (size_t)w->n_cols * 4, "embed y"))
        return PORTA_E_INVAL;
    for (int t = 0; t < n_tok; t++)
        if (ids[t] < 0 || ids[t] >= w->n_rows) {
            porta_err("token id %d is outside the vocabulary (0..%lld)", ids[t],
                      (long long)w->n_rows - 1);
            return PORTA_E_RANGE;
        }
    return be->ops->embed(be, y, w, ids, n_tok);
}

int porta_be_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                       struct porta_view logits, const struct porta_route_params *p)
{
    NEED(be, moe_route, "moe_route");
    if (!p || p->n_tok <= 0 || p->n_expert <= 0 || p->k <= 0 || p->k > p->n_expert ||
        (p->gating != PORTA_GATING_SOFTMAX && p->gating != PORTA_GATING_SIGMOID) ||
        !isfinite(p->scale)) {
        porta_err("moe_route: bad parameters");
        return PORTA_E_INVAL;
    }
    if (p->n_group > 1) {
        int per = p->n_expert / p->n_group;
        if (p->n_expert % p->n_group || p->topk_group < 1 || p->topk_group > p->n_group ||
            p->k > p->topk_group * per) {
            porta_err("moe_route: %d experts, %d groups, %d groups used and top-%d do not fit",
                      p->n_expert, p->n_group, p->topk_group, p->k);
            return PORTA_E_INVAL;
        }
    }
    size_t tk = (size_t)p->n_tok * (size_t)p->k * 4, te;
    if (!porta_mul_ok((size_t)p->n_tok * 4, (size_t)p->n_expert, &te) ||
        !view_ok(be, ids, tk, "moe_route ids") || !view_ok(be, weights, tk, "moe_route weights") ||
        !view_ok(be, logits, te, "moe_route logits") ||
        (p->bias.buf && !view_ok(be, p->bias, (size_t)p->n_expert * 4, "moe_route bias")))
        return PORTA_E_INVAL;
    return be->ops->moe_route(be, ids, weights, logits, p);
}

int porta_be_matmul_experts(struct porta_backend *be, struct porta_view y,
                            const struct porta_weight *w, struct porta_view x,
                            const struct porta_experts_params *p)
{
    NEED(be, matmul_experts, "matmul_experts");
    if (!p || !w || p->n_tok <= 0 || p->k <= 0 || !weight_ok(be, w, "matmul_experts") ||
        (!p->ids.buf && p->k > w->n_mat)) {
        porta_err("matmul_experts: bad parameters for '%s'", w && w->name ? w->name : "?");
        return PORTA_E_INVAL;
    }
    size_t slots = (size_t)p->n_tok * (size_t)p->k, ny, nx;
    if (!f32s((p->weights.buf ? (size_t)p->n_tok : slots) * (size_t)w->n_rows, &ny) ||
        !f32s((p->x_per_slot ? slots : (size_t)p->n_tok) * (size_t)w->n_cols, &nx) ||
        !view_ok(be, y, ny, "matmul_experts y") || !view_ok(be, x, nx, "matmul_experts x") ||
        (p->ids.buf && !view_ok(be, p->ids, slots * 4, "matmul_experts ids")) ||
        (p->weights.buf && !view_ok(be, p->weights, slots * 4, "matmul_experts weights")))
        return PORTA_E_INVAL;
    if (!porta_be_supports(be, PORTA_OP_MATMUL, w->type) ||
        !porta_be_supports(be, PORTA_OP_MATMUL_EXPERTS, w->type)) {
        porta_err("backend %s: expert matmul with %s weights ('%s') is not supported",
                  be->ops->name, porta_dtype_name(w->type), w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    return be->ops->matmul_experts(be, y, w, x, p);
}

int porta_be_attention_mla(struct porta_backend *be, struct porta_view out,
                           struct porta_view q_lat, struct porta_view q_rope,
                           struct porta_view kv_lat, struct porta_view k_rope,
                           const struct porta_attn_params *p)
{
    NEED(be, attention_mla, "attention_mla");
    if (!p || p->n_tok <= 0 || p->n_head <= 0 || p->n_head_kv != 1 || p->head_dim_v <= 0 ||
        p->head_dim_k <= p->head_dim_v || !p->pos || p->n_ctx <= 0 || p->n_seq <= 0 ||
        (p->kv_type != PORTA_F32 && p->kv_type != PORTA_F16))
        return PORTA_E_INVAL;
    for (int t = 0; t < p->n_tok; t++) {
        int s = p->seq ? p->seq[t] : 0;
        if (p->pos[t] < 0 || p->pos[t] >= p->n_ctx || s < 0 || s >= p->n_seq) {
            porta_err("attention_mla: token %d at position %d of sequence %d is outside the KV "
                      "cache (%d positions x %d sequences)", t, p->pos[t], s, p->n_ctx, p->n_seq);
            return PORTA_E_RANGE;
        }
    }
    size_t t = (size_t)p->n_tok, h = (size_t)p->n_head, lat = (size_t)p->head_dim_v,
           rope = (size_t)(p->head_dim_k - p->head_dim_v),
           es = p->kv_type == PORTA_F16 ? 2 : 4,
           cells = (size_t)p->n_ctx * (size_t)p->n_seq;
    if (!view_ok(be, q_lat, t * h * lat * 4, "attention_mla q_lat") ||
        !view_ok(be, q_rope, t * h * rope * 4, "attention_mla q_rope") ||
        !view_ok(be, kv_lat, t * lat * 4, "attention_mla kv_lat") ||
        !view_ok(be, k_rope, t * rope * 4, "attention_mla k_rope") ||
        !view_ok(be, out, t * h * lat * 4, "attention_mla out") ||
        !view_ok(be, p->k_cache, cells * (size_t)p->head_dim_k * es, "attention_mla cache"))
        return PORTA_E_INVAL;
    return be->ops->attention_mla(be, out, q_lat, q_rope, kv_lat, k_rope, p);
}

int porta_be_synchronize(struct porta_backend *be)
{
    NEED(be, synchronize, "synchronize");
    return be->ops->synchronize(be);
}
