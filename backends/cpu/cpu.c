/* cpu.c - the CPU backend: host buffers (weights are zero-copy views of the mmap'd model),
 * a persistent thread pool, and the ops, which call the kernel table chosen at open time
 * (scalar, AVX2 or AVX-512; see kernels.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "kernels.h"
#include "quant.h"
#include "ref.h"
#include "threads.h"

struct porta_buf {
    size_t size;
    uint8_t *data;
    bool owned;
};

struct cpu_ctx {
    struct porta_cpu_kernels k;     /* complete: no NULL entry for a supported type */
    struct porta_pool *pool;
    uint8_t *act;                   /* quantized activations of the current matmul */
    size_t act_cap;
    float *scores;                  /* attention: n_threads rows of n_ctx floats */
    size_t scores_cap;
};

static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;
static void f16_table_init(void)
{
    for (int i = 0; i < 65536; i++)
        f16_table[i] = porta_f16_to_f32((porta_f16)i);
}

static uint8_t *at(struct porta_view v) { return v.buf->data + v.off; }
static float *fat(struct porta_view v) { return (float *)(v.buf->data + v.off); }

/* ---- kernel set ---- */

static const char *env_or(const char *cfgval)
{
    const char *e = getenv("PORTA_CPU");
    return e && *e ? e : (cfgval && *cfgval ? cfgval : "auto");
}

static int pick_kernels(struct cpu_ctx *c, const char *want)
{
    const struct porta_cpu_kernels *sc = porta_cpu_kernels_scalar(), *k = NULL;
    if (strcmp(want, "auto") == 0) {
        if (porta_cpu_has("avx512") && porta_cpu_kernels_avx512())
            k = porta_cpu_kernels_avx512();
        else if (porta_cpu_has("avx2") && porta_cpu_kernels_avx2())
            k = porta_cpu_kernels_avx2();
        else
            k = sc;
    } else if (strcmp(want, "scalar") == 0) {
        k = sc;
    } else if (strcmp(want, "avx2") == 0 || strcmp(want, "avx512") == 0) {
        k = strcmp(want, "avx2") == 0 ? porta_cpu_kernels_avx2() : porta_cpu_kernels_avx512();
        if (!k || !porta_cpu_has(want)) {
            porta_err("cpu: kernel set '%s' is %s", want,
                      k ? "not supported by this CPU" : "not compiled in");
            return PORTA_E_UNSUPPORTED;
        }
    } else {
        porta_err("cpu: kernel set '%s' is not one of auto, avx512, avx2, scalar", want);
        return PORTA_E_CONFIG;
    }
    c->k = *k;
    for (int t = 0; t < PORTA_DTYPE_COUNT; t++) {
        if (!c->k.vec_dot[t])
            c->k.vec_dot[t] = sc->vec_dot[t];
        if (!c->k.quantize[t])
            c->k.quantize[t] = sc->quantize[t];
        if (!c->k.to_float[t])
            c->k.to_float[t] = sc->to_float[t];
    }
    return 0;
}

/* ---- open / close / devices ---- */

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(buf, n, "%s", colon + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    }
    fclose(f);
}

static int cpu_devices(porta_device_cb cb, void *user)
{
    char model[256], line[512];
    cpu_model(model, sizeof model);
    snprintf(line, sizeof line, "cpu0: %s, %d threads; kernel sets: %s%s%s", model, cpu_count(),
             porta_cpu_has("avx512") && porta_cpu_kernels_avx512() ? "avx512 " : "",
             porta_cpu_has("avx2") && porta_cpu_kernels_avx2() ? "avx2 " : "", "scalar");
    cb(user, line);
    return 0;
}

static void cpu_close(struct porta_backend *be)
{
    struct cpu_ctx *c = be->ctx;
    if (!c)
        return;
    porta_pool_destroy(c->pool);
    free(c->act);
    free(c->scores);
    free(c);
    be->ctx = NULL;
}

static int cpu_open(struct porta_backend *be, const struct porta_backend_cfg *cfg)
{
    pthread_once(&f16_once, f16_table_init);
    struct cpu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return PORTA_E_NOMEM;
    be->ctx = c;
    int rc = pick_kernels(c, env_or(cfg->cpu_kernels));
    if (rc)
        goto fail;
    int nt = cfg->threads > 0 ? cfg->threads : cpu_count();
    rc = porta_pool_create(nt, &c->pool);
    if (rc)
        goto fail;
    snprintf(be->desc, sizeof be->desc, "cpu (%s, %d threads)", c->k.name, nt);
    return 0;
fail:
    cpu_close(be);
    return rc;
}

static bool cpu_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt)
{
    const struct cpu_ctx *c = be->ctx;
    if (op != PORTA_OP_MATMUL && op != PORTA_OP_EMBED)
        return true;
    const struct porta_type_traits *tt = porta_type_traits(wt);
    if (!tt || wt == PORTA_Q8_1 || wt == PORTA_Q8_K)
        return false;
    return op == PORTA_OP_EMBED ? c->k.to_float[wt] != NULL : c->k.vec_dot[wt] != NULL;
}

/* ---- buffers ---- */

static int cpu_buf_alloc(struct porta_backend *be, size_t n, enum porta_buf_use use,
                         struct porta_buf **out)
{
    struct porta_buf *b = calloc(1, sizeof *b);
    size_t cap = (n + 63) & ~(size_t)63;
    if (!b || cap < n || !(b->data = aligned_alloc(64, cap))) {
        free(b);
        porta_err("cpu: out of memory allocating %zu bytes", n);
        return PORTA_E_NOMEM;
    }
    memset(b->data, 0, cap);
    b->size = n;
    b->owned = true;
    *out = b;
    return 0;
}

static int cpu_buf_wrap_host(struct porta_backend *be, const void *ptr, size_t n,
                             struct porta_buf **out)
{
    struct porta_buf *b = calloc(1, sizeof *b);
    if (!b)
        return PORTA_E_NOMEM;
    b->data = (uint8_t *)ptr; /* never written: weights only */
    b->size = n;
    *out = b;
    return 0;
}

static void cpu_buf_free(struct porta_backend *be, struct porta_buf *b)
{
    if (b->owned)
        free(b->data);
    free(b);
}

static size_t cpu_buf_size(const struct porta_buf *b) { return b->size; }

static int cpu_upload(struct porta_backend *be, struct porta_buf *dst, size_t off, const void *src,
                      size_t n)
{
    memcpy(dst->data + off, src, n);
    return 0;
}

static int cpu_download(struct porta_backend *be, void *dst, const struct porta_buf *src,
                        size_t off, size_t n)
{
    memcpy(dst, src->data + off, n);
    return 0;
}

static int grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    void *q = aligned_alloc(64, (need + 63) & ~(size_t)63);
    if (!q) {
        porta_err("cpu: out of memory allocating %zu bytes of scratch", need);
        return PORTA_E_NOMEM;
    }
    free(*p);
    *p = q;
    *cap = need;
    return 0;
}

/* ---- matmul ---- */

struct mm_job {
    const struct porta_cpu_kernels *k;
    const struct porta_weight *w;
    const uint8_t *wdata;
    float *y;
    const float *x;
    const uint8_t *xa;              /* activations in the vec_dot type */
    size_t arow;                    /* bytes per activation row */
    int n_tok;
};

static void mm_quantize(void *arg, int ith, int nth)
{
    struct mm_job *j = arg;
    enum porta_dtype vt = porta_type_traits(j->w->type)->vec_dot_type;
    long lo, hi;
    porta_split(j->n_tok, ith, nth, &lo, &hi);
    for (long t = lo; t < hi; t++)
        j->k->quantize[vt](j->x + t * j->w->n_cols, (uint8_t *)j->xa + t * j->arow, j->w->n_cols);
}

#define MM_ROW_BLOCK 16

static void mm_rows(void *arg, int ith, int nth)
{
    struct mm_job *j = arg;
    porta_vec_dot_fn dot = j->k->vec_dot[j->w->type];
    int64_t nr = j->w->n_rows, nc = j->w->n_cols;
    long lo, hi;
    porta_split((long)nr, ith, nth, &lo, &hi);
    for (long r0 = lo; r0 < hi; r0 += MM_ROW_BLOCK) {
        long r1 = r0 + MM_ROW_BLOCK < hi ? r0 + MM_ROW_BLOCK : hi;
        for (int t = 0; t < j->n_tok; t++) {
            const uint8_t *a = j->xa + (size_t)t * j->arow;
            float *yt = j->y + (size_t)t * nr;
            for (long r = r0; r < r1; r++)
                dot(nc, &yt[r], j->wdata + (size_t)r * j->w->row_bytes, a);
        }
    }
}

static int cpu_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                      struct porta_view x, int n_tok)
{
    struct cpu_ctx *c = be->ctx;
    enum porta_dtype vt = porta_type_traits(w->type)->vec_dot_type;
    struct mm_job j = { .k = &c->k, .w = w, .wdata = w->buf->data + w->off, .y = fat(y),
                        .x = fat(x), .n_tok = n_tok };
    if (vt == PORTA_F32) {
        j.xa = (const uint8_t *)j.x;
        j.arow = (size_t)w->n_cols * sizeof(float);
    } else {
        j.arow = porta_row_size(vt, w->n_cols);
        int rc = grow((void **)&c->act, &c->act_cap, j.arow * (size_t)n_tok);
        if (rc)
            return rc;
        j.xa = c->act;
        porta_pool_run(c->pool, mm_quantize, &j);
    }
    porta_pool_run(c->pool, mm_rows, &j);
    return 0;
}

/* ---- small ops ---- */

struct rows_job {
    float *y;
    const float *x, *w;
    int n_rows, n;
    float eps;
};

static void rmsnorm_rows(void *arg, int ith, int nth)
{
    struct rows_job *j = arg;
    long lo, hi;
    porta_split(j->n_rows, ith, nth, &lo, &hi);
    if (hi > lo)
        porta_ref_rmsnorm(j->y + lo * j->n, j->x + lo * j->n, j->w, (int)(hi - lo), j->n, j->eps);
}

static int cpu_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                       struct porta_view w, int n_rows, int n, float eps)
{
    struct cpu_ctx *c = be->ctx;
    struct rows_job j = { fat(y), fat(x), w.buf ? fat(w) : NULL, n_rows, n, eps };
    if (n_rows == 1)
        rmsnorm_rows(&j, 0, 1);
    else
        porta_pool_run(c->pool, rmsnorm_rows, &j);
    return 0;
}

struct rope_job {
    float *x;
    int n_tok, n_head, head_dim;
    const int32_t *pos;
    const struct porta_rope_params *p;
};

static void rope_rows(void *arg, int ith, int nth)
{
    struct rope_job *j = arg;
    long lo, hi;
    porta_split(j->n_tok, ith, nth, &lo, &hi);
    if (hi > lo)
        porta_ref_rope(j->x + lo * j->n_head * j->head_dim, (int)(hi - lo), j->n_head,
                       j->head_dim, j->pos + lo, j->p);
}

static int cpu_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                    int head_dim, const int32_t *pos, const struct porta_rope_params *p)
{
    struct cpu_ctx *c = be->ctx;
    struct rope_job j = { fat(x), n_tok, n_head, head_dim, pos, p };
    if (n_tok == 1)
        rope_rows(&j, 0, 1);
    else
        porta_pool_run(c->pool, rope_rows, &j);
    return 0;
}

struct elt_job {
    enum porta_elt op;
    float *y;
    const float *a, *b;
    int64_t n, nb;
    float s;
};

static void elt_part(void *arg, int ith, int nth)
{
    struct elt_job *j = arg;
    long lo, hi;
    /* split on whole broadcast periods so b's index stays i % nb */
    int64_t period = (j->op == PORTA_ELT_ADD || j->op == PORTA_ELT_MUL) ? j->nb : 1;
    porta_split((long)(j->n / period), ith, nth, &lo, &hi);
    for (long i = lo; i < hi; i++) {
        int64_t o = i * period;
        porta_ref_eltwise(j->op, j->y + o, j->a + o, j->b, period, j->nb, j->s);
    }
}

static int cpu_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                       struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s)
{
    struct cpu_ctx *c = be->ctx;
    struct elt_job j = { op, fat(y), fat(a), b.buf ? fat(b) : NULL, n, nb, s };
    if (op == PORTA_ELT_SWIGLU) {
        /* b is not broadcast: address it with the same offset as a */
        j.nb = 1;
        for (int64_t i = 0; i < n; i++) {
            float v = j.a[i];
            j.y[i] = v / (1.0f + expf(-v)) * fat(b)[i];
        }
        return 0;
    }
    if (n < 4096)
        porta_ref_eltwise(op, j.y, j.a, j.b, n, nb, s);
    else
        porta_pool_run(c->pool, elt_part, &j);
    return 0;
}

static int cpu_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                     const int32_t *ids, int n_tok)
{
    struct cpu_ctx *c = be->ctx;
    const uint8_t *base = w->buf->data + w->off;
    for (int t = 0; t < n_tok; t++)
        c->k.to_float[w->type](base + (size_t)ids[t] * w->row_bytes, fat(y) + (size_t)t * w->n_cols,
                               w->n_cols);
    return 0;
}

/* ---- attention ---- */

struct attn_job {
    struct cpu_ctx *c;
    float *out;
    const float *q;
    const void *kc, *vc;
    const struct porta_attn_params *p;
};

static inline float kv_at(const void *cache, enum porta_dtype t, size_t i)
{
    return t == PORTA_F16 ? f16_table[((const uint16_t *)cache)[i]] : ((const float *)cache)[i];
}

static void attn_heads(void *arg, int ith, int nth)
{
    struct attn_job *j = arg;
    const struct porta_attn_params *p = j->p;
    int dk = p->head_dim_k, dv = p->head_dim_v, nkv = p->n_head_kv, group = p->n_head / nkv;
    float *sc = j->c->scores + (size_t)ith * p->n_ctx;
    long lo, hi;
    porta_split((long)p->n_tok * p->n_head, ith, nth, &lo, &hi);
    for (long th = lo; th < hi; th++) {
        int t = (int)(th / p->n_head), h = (int)(th % p->n_head), hk = h / group;
        size_t base = (size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx;
        int n_kv = p->pos[t] + 1;
        const float *qh = j->q + ((size_t)t * p->n_head + h) * dk;
        float mx = -INFINITY;
        for (int s = 0; s < n_kv; s++) {
            size_t cell = ((base + s) * nkv + hk) * dk;
            float d = 0;
            if (p->kv_type == PORTA_F32) {
                const float *kr = (const float *)j->kc + cell;
                for (int i = 0; i < dk; i++)
                    d += qh[i] * kr[i];
            } else {
                const uint16_t *kr = (const uint16_t *)j->kc + cell;
                for (int i = 0; i < dk; i++)
                    d += qh[i] * f16_table[kr[i]];
            }
            sc[s] = d * p->scale;
            mx = sc[s] > mx ? sc[s] : mx;
        }
        float sum = 0;
        for (int s = 0; s < n_kv; s++) {
            sc[s] = expf(sc[s] - mx);
            sum += sc[s];
        }
        float inv = 1.0f / sum;
        float *o = j->out + ((size_t)t * p->n_head + h) * dv;
        memset(o, 0, sizeof(float) * (size_t)dv);
        for (int s = 0; s < n_kv; s++) {
            size_t cell = ((base + s) * nkv + hk) * dv;
            float wgt = sc[s] * inv;
            if (p->kv_type == PORTA_F32) {
                const float *vr = (const float *)j->vc + cell;
                for (int i = 0; i < dv; i++)
                    o[i] += wgt * vr[i];
            } else {
                for (int i = 0; i < dv; i++)
                    o[i] += wgt * kv_at(j->vc, PORTA_F16, cell + i);
            }
        }
    }
}

static void kv_store(void *cache, enum porta_dtype type, size_t idx, const float *src, int n)
{
    if (type == PORTA_F16) {
        porta_f16 *d = (porta_f16 *)cache + idx;
        for (int i = 0; i < n; i++)
            d[i] = porta_f32_to_f16(src[i]);
    } else {
        memcpy((float *)cache + idx, src, (size_t)n * sizeof(float));
    }
}

static int cpu_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                         struct porta_view k, struct porta_view v,
                         const struct porta_attn_params *p)
{
    struct cpu_ctx *c = be->ctx;
    void *kc = at(p->k_cache), *vc = at(p->v_cache);
    int nkv = p->n_head_kv;
    for (int t = 0; t < p->n_tok; t++) {
        size_t cell = ((size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx + p->pos[t]) * nkv;
        kv_store(kc, p->kv_type, cell * p->head_dim_k, fat(k) + (size_t)t * nkv * p->head_dim_k,
                 nkv * p->head_dim_k);
        kv_store(vc, p->kv_type, cell * p->head_dim_v, fat(v) + (size_t)t * nkv * p->head_dim_v,
                 nkv * p->head_dim_v);
    }
    int rc = grow((void **)&c->scores, &c->scores_cap,
                  sizeof(float) * (size_t)p->n_ctx * (size_t)porta_pool_size(c->pool));
    if (rc)
        return rc;
    struct attn_job j = { c, fat(out), fat(q), kc, vc, p };
    porta_pool_run(c->pool, attn_heads, &j);
    return 0;
}

static int cpu_synchronize(struct porta_backend *be) { return 0; }

const struct porta_backend_ops porta_backend_cpu = {
    .name = "cpu",
    .devices = cpu_devices,
    .open = cpu_open,
    .close = cpu_close,
    .supports = cpu_supports,
    .buf_alloc = cpu_buf_alloc,
    .buf_wrap_host = cpu_buf_wrap_host,
    .buf_free = cpu_buf_free,
    .buf_size = cpu_buf_size,
    .upload = cpu_upload,
    .download = cpu_download,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .eltwise = cpu_eltwise,
    .embed = cpu_embed,
    .synchronize = cpu_synchronize,
};
