/* hip.c - the HIP backend: one GPU running the kernels of kernels/cl, compiled by hipcc (or by
 * nvcc through hip_cuda.h) and embedded at build time, loaded with hipModuleLoadData. Each op
 * is a launch with the shapes of the OpenCL backend's GPU path (backends/opencl/opencl.c):
 * the kernels are shared, so are their grids. Two streams: kernels, staged host arrays and
 * downloads run in order on one; uploads go through a pinned bounce ring on the other, ordered
 * against the kernels by events, so the host returns once its bytes are copied and a large
 * upload overlaps the host copy of one slice with the DMA of the previous. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hip_priv.h"
#include "quant.h"
#include "rope.h"

/* The kernels' compile-time shapes: the Makefile passes the same -D flags (HIP_KDEFS) to
 * hipcc/nvcc and to this file, so the grids below always match the compiled tiles. */
#if !defined(MM_TR) || !defined(MM_TT) || !defined(MM_MR) || !defined(MM_MT) || !defined(MT_TOK) \
    || !defined(MV_ROWS)
#error "build backends/hip through the Makefile: it passes the kernel shapes (HIP_KDEFS)"
#endif
#define MM_LSZ ((MM_TR / MM_MR) * (MM_TT / MM_MT))
#define MV_MAX_LSZ 256          /* kernels/cl/matvec.cl */
#define NORM_MAX_LSZ 256        /* kernels/cl/norm.cl */
#define ATT_DPT 16              /* kernels/cl/attention.cl */
#define ATT_MAX_DK 1024
#define ATT_MAX_LSZ 256
#define MOE_MAX_EXPERT 2048     /* kernels/cl/moe.cl */

#define N_SLOTS 4               /* upload bounce ring: slots of SLOT_BYTES pinned host memory */
#define SLOT_BYTES ((size_t)4 << 20)

struct porta_buf {
    void *ptr;                  /* device memory */
    size_t size;
};

/* the weight types with kernels: kernel-name suffix and elements per unit (type_sub() in
 * kernels/cl/dequant.h: one thread of emb_ decodes one unit) */
static const struct {
    enum porta_dtype type;
    const char *suffix;
    int sub;
} hip_types[] = {
    { PORTA_F32, "f32", 8 },    { PORTA_F16, "f16", 8 },    { PORTA_BF16, "bf16", 8 },
    { PORTA_Q4_0, "q4_0", 32 }, { PORTA_Q4_1, "q4_1", 32 }, { PORTA_Q5_0, "q5_0", 32 },
    { PORTA_Q5_1, "q5_1", 32 }, { PORTA_Q8_0, "q8_0", 32 }, { PORTA_Q2_K, "q2_k", 32 },
    { PORTA_Q3_K, "q3_k", 32 }, { PORTA_Q4_K, "q4_k", 32 }, { PORTA_Q5_K, "q5_k", 32 },
    { PORTA_Q6_K, "q6_k", 32 },
};
#define N_TYPES ((int)(sizeof hip_types / sizeof hip_types[0]))

struct kern {
    hipFunction_t f;
    char name[24];              /* for messages */
};

struct type_kernels {
    struct kern mv, mt, mm, emb, me;
};

struct hip_ctx {
    struct hip_devinfo dev;
    hipModule_t module;
    hipStream_t stream;         /* kernels, staging, downloads */
    hipStream_t copy;           /* uploads */
    hipEvent_t kernels_done;    /* recorded on stream before an upload: the copy waits for it */
    hipEvent_t upload_done;     /* recorded on copy after an upload: stream waits for it */
    hipEvent_t slot_free[N_SLOTS];
    unsigned char *bounce;      /* pinned, N_SLOTS * SLOT_BYTES */
    int next_slot;
    struct type_kernels tk[PORTA_DTYPE_COUNT];
    struct kern rmsnorm, eltwise, rope, kv_store[2], kv_attn[2], mla_store[2], mla_attn[2],
        moe_route;
    int mv_lsz, norm_lsz, att_lsz, elt_lsz, mm_min_tok;
    /* staging ring for host arrays read by kernels (positions, ids, tables) */
    void *stage_dev;
    unsigned char *stage_host; /* pinned */
    size_t stage_cap, stage_used;
};

/* the device this thread last made current (HIP's current device is per thread) */
static _Thread_local int cur_dev = -1;

/* Makes the backend's device current on the calling thread. */
static int use(struct hip_ctx *c)
{
    if (cur_dev != c->dev.index) {
        HIP_TRY(hip_rt.hipSetDevice(c->dev.index));
        cur_dev = c->dev.index;
    }
    return 0;
}

static int type_index(enum porta_dtype t)
{
    for (int i = 0; i < N_TYPES; i++)
        if (hip_types[i].type == t)
            return i;
    return -1;
}

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
static unsigned ceil_div(size_t n, size_t m) { return (unsigned)((n + m - 1) / m); }

/* ---- launching ---- */

/* Enqueues kernel k on a grid of gx x gy x gz blocks of `block` threads; args points at each
 * argument's value, in the kernel's order and exact types. An empty grid launches nothing. */
static int launch(struct hip_ctx *c, const struct kern *k, size_t gx, size_t gy, size_t gz,
                  unsigned block, void **args)
{
    if (gx == 0 || gy == 0 || gz == 0)
        return 0;
    const int *mg = c->dev.prop.maxGridSize;
    if (gx > (size_t)mg[0] || gy > (size_t)mg[1] || gz > (size_t)mg[2] ||
        gx * block > UINT32_MAX || (int)block > c->dev.prop.maxThreadsPerBlock) {
        porta_err("hip: %s: a grid of %zu x %zu x %zu blocks of %u threads is beyond the device "
                  "(%d x %d x %d blocks of %d)", k->name, gx, gy, gz, block, mg[0], mg[1], mg[2],
                  c->dev.prop.maxThreadsPerBlock);
        return PORTA_E_UNSUPPORTED;
    }
    int rc = use(c);
    if (rc)
        return rc;
    hipError_t e = hip_rt.hipModuleLaunchKernel(k->f, (unsigned)gx, (unsigned)gy, (unsigned)gz,
                                                block, 1, 1, 0, c->stream, args, NULL);
    if (e != hipSuccess) {
        porta_err("hip: launching %s (%zu x %zu x %zu blocks of %u): %s", k->name, gx, gy, gz,
                  block, hip_errname(e));
        return hip_status(e);
    }
    return 0;
}

/* Copies n bytes of host memory into the staging ring; *off gets their byte offset there.
 * The pinned host copy is not reused before the stream has drained, so the asynchronous copy
 * is safe however long the caller's array lives. */
static int stage(struct hip_ctx *c, const void *src, size_t n, uint64_t *off)
{
    size_t at = round_up(c->stage_used, 64);
    int rc = use(c);
    if (rc)
        return rc;
    if (at + n > c->stage_cap) {
        HIP_TRY(hip_rt.hipStreamSynchronize(c->stream));
        at = 0;
        if (n > c->stage_cap) {
            size_t cap = round_up(n > 2 * c->stage_cap ? n : 2 * c->stage_cap, 4096);
            void *dev = NULL, *host = NULL;
            if (hip_rt.hipMalloc(&dev, cap) != hipSuccess ||
                hip_rt.hipHostMalloc(&host, cap, hipHostMallocDefault) != hipSuccess) {
                if (dev)
                    hip_rt.hipFree(dev);
                porta_err("hip: cannot grow the staging buffer to %zu bytes", cap);
                return PORTA_E_NOMEM;
            }
            hip_rt.hipFree(c->stage_dev);
            hip_rt.hipHostFree(c->stage_host);
            c->stage_dev = dev;
            c->stage_host = host;
            c->stage_cap = cap;
        }
    }
    memcpy(c->stage_host + at, src, n);
    HIP_TRY(hip_rt.hipMemcpyAsync((char *)c->stage_dev + at, c->stage_host + at, n,
                                  hipMemcpyHostToDevice, c->stream));
    c->stage_used = at + n;
    *off = at;
    return 0;
}

/* byte offset of a view as an element index of size es; false (logged) when misaligned */
static bool elem_off(struct porta_view v, size_t es, const char *what, uint64_t *out)
{
    if (v.off % es) {
        porta_err("hip: %s: byte offset %zu is not a multiple of %zu", what, v.off, es);
        return false;
    }
    *out = v.off / es;
    return true;
}

/* ---- open / close ---- */

static void hip_close(struct porta_backend *be)
{
    struct hip_ctx *c = be->ctx;
    if (!c)
        return;
    if (c->stream || c->copy)
        use(c);
    if (c->stream)
        hip_rt.hipStreamSynchronize(c->stream);
    if (c->copy)
        hip_rt.hipStreamSynchronize(c->copy);
    hipEvent_t evs[N_SLOTS + 2] = { c->kernels_done, c->upload_done };
    memcpy(evs + 2, c->slot_free, sizeof c->slot_free);
    for (int i = 0; i < N_SLOTS + 2; i++)
        if (evs[i])
            hip_rt.hipEventDestroy(evs[i]);
    if (c->stream)
        hip_rt.hipStreamDestroy(c->stream);
    if (c->copy)
        hip_rt.hipStreamDestroy(c->copy);
    if (c->bounce)
        hip_rt.hipHostFree(c->bounce);
    if (c->stage_host)
        hip_rt.hipHostFree(c->stage_host);
    if (c->stage_dev)
        hip_rt.hipFree(c->stage_dev);
    if (c->module)
        hip_rt.hipModuleUnload(c->module);
    free(c);
    be->ctx = NULL;
}

static int get_kernel(struct hip_ctx *c, const char *name, struct kern *k)
{
    snprintf(k->name, sizeof k->name, "%s", name);
    hipError_t e = hip_rt.hipModuleGetFunction(&k->f, c->module, name);
    if (e != hipSuccess) {
        porta_err("hip: kernel %s is not in the code object: %s", name, hip_errname(e));
        return PORTA_E_DEVICE;
    }
    return 0;
}

static int get_kernels(struct hip_ctx *c)
{
    static const char *const kinds[] = { "mv", "mt", "mm", "emb", "me" };
    char name[64];
    int rc;
    for (int i = 0; i < N_TYPES; i++) {
        struct type_kernels *k = &c->tk[hip_types[i].type];
        struct kern *slot[] = { &k->mv, &k->mt, &k->mm, &k->emb, &k->me };
        for (int j = 0; j < 5; j++) {
            snprintf(name, sizeof name, "%s_%s", kinds[j], hip_types[i].suffix);
            if ((rc = get_kernel(c, name, slot[j])))
                return rc;
        }
    }
    if ((rc = get_kernel(c, "rmsnorm", &c->rmsnorm)) ||
        (rc = get_kernel(c, "eltwise", &c->eltwise)) || (rc = get_kernel(c, "rope", &c->rope)) ||
        (rc = get_kernel(c, "kv_f32_store", &c->kv_store[0])) ||
        (rc = get_kernel(c, "kv_f16_store", &c->kv_store[1])) ||
        (rc = get_kernel(c, "kv_f32_attn", &c->kv_attn[0])) ||
        (rc = get_kernel(c, "kv_f16_attn", &c->kv_attn[1])) ||
        (rc = get_kernel(c, "mla_f32_store", &c->mla_store[0])) ||
        (rc = get_kernel(c, "mla_f16_store", &c->mla_store[1])) ||
        (rc = get_kernel(c, "mla_f32_attn", &c->mla_attn[0])) ||
        (rc = get_kernel(c, "mla_f16_attn", &c->mla_attn[1])) ||
        (rc = get_kernel(c, "moe_route", &c->moe_route)))
        return rc;
    return 0;
}

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);
    return s && *s ? atoi(s) : def;
}

/* The OpenCL backend's GPU launch shapes (a wavefront or more per block, neighbouring threads
 * on neighbouring data; nothing depends on the wave size). For tuning, PORTA_HIP_MV_LSZ and
 * PORTA_HIP_MM_MIN_TOK override the matvec block size and the token count from which prefill
 * uses the tiled matmul. */
static void pick_shapes(struct hip_ctx *c)
{
    c->mv_lsz = env_int("PORTA_HIP_MV_LSZ", 64);
    c->mm_min_tok = env_int("PORTA_HIP_MM_MIN_TOK", 16);
    c->norm_lsz = 256;
    c->att_lsz = 64;
    c->elt_lsz = 64;
    int *ls[] = { &c->mv_lsz, &c->norm_lsz, &c->att_lsz, &c->elt_lsz };
    const int kmax[] = { MV_MAX_LSZ, NORM_MAX_LSZ, ATT_MAX_LSZ, 1024 };  /* local arrays */
    for (int i = 0; i < 4; i++) {       /* powers of two: the kernels reduce by halving */
        int cap = kmax[i] < c->dev.prop.maxThreadsPerBlock ? kmax[i]
                                                           : c->dev.prop.maxThreadsPerBlock;
        int v = 1;
        while (v * 2 <= *ls[i] && v * 2 <= cap)
            v *= 2;
        *ls[i] = v;
    }
    if (c->mv_lsz < MV_ROWS)
        c->mv_lsz = MV_ROWS;
}

static int hip_open(struct porta_backend *be, const struct porta_backend_cfg *cfg)
{
    struct hip_ctx *c = calloc(1, sizeof *c);
    int rc;
    if (!c)
        return PORTA_E_NOMEM;
    be->ctx = c;
    if ((rc = hip_pick_device(cfg, &c->dev)))
        goto fail;
    cur_dev = -1;
    if ((rc = use(c)))
        goto fail;
    hip_rt.hipMemGetInfo(&c->dev.free_mem, &c->dev.total_mem);
    char line[1024];
    hip_devinfo_line(&c->dev, line, sizeof line);
    porta_info("%s", line);
    if (MM_LSZ > c->dev.prop.maxThreadsPerBlock) {
        porta_err("hip: device '%s' allows blocks of %d threads, the matmul tile needs %d",
                  c->dev.prop.name, c->dev.prop.maxThreadsPerBlock, MM_LSZ);
        rc = PORTA_E_UNSUPPORTED;
        goto fail;
    }
    double t0 = porta_time_s();
    hipError_t e = hip_rt.hipModuleLoadData(&c->module, c->dev.image->data);
    if (e != hipSuccess) {
        porta_err("hip: loading the %s kernels on '%s' (%s): %s (%d)%s", c->dev.image->name,
                  c->dev.prop.name, c->dev.arch, hip_errname(e), (int)e,
                  e == hipErrorNoBinaryForGpu ? ": the code object does not match this device's "
                                                "target features" : "");
        rc = hip_status(e);
        goto fail;
    }
    porta_info("hip: %s kernels loaded in %.2f s", c->dev.image->name, porta_time_s() - t0);
    if ((rc = get_kernels(c)))
        goto fail;
    HIP_TRYF(hip_rt.hipStreamCreateWithFlags(&c->stream, hipStreamNonBlocking));
    HIP_TRYF(hip_rt.hipStreamCreateWithFlags(&c->copy, hipStreamNonBlocking));
    HIP_TRYF(hip_rt.hipEventCreateWithFlags(&c->kernels_done, hipEventDisableTiming));
    HIP_TRYF(hip_rt.hipEventCreateWithFlags(&c->upload_done, hipEventDisableTiming));
    for (int i = 0; i < N_SLOTS; i++) {
        HIP_TRYF(hip_rt.hipEventCreateWithFlags(&c->slot_free[i], hipEventDisableTiming));
        HIP_TRYF(hip_rt.hipEventRecord(c->slot_free[i], c->copy));
    }
    void *p = NULL;
    HIP_TRYF(hip_rt.hipHostMalloc(&p, N_SLOTS * SLOT_BYTES, hipHostMallocDefault));
    c->bounce = p;
    c->stage_cap = 1 << 16;
    HIP_TRYF(hip_rt.hipHostMalloc(&p, c->stage_cap, hipHostMallocDefault));
    c->stage_host = p;
    HIP_TRYF(hip_rt.hipMalloc(&c->stage_dev, c->stage_cap));
    pick_shapes(c);
    snprintf(be->desc, sizeof be->desc, "hip (%.180s, %.64s)", c->dev.prop.name, c->dev.arch);
    return 0;
fail:
    hip_close(be);
    return rc;
}

static bool hip_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt)
{
    switch (op) {
    case PORTA_OP_MATMUL:
    case PORTA_OP_EMBED:
    case PORTA_OP_MATMUL_EXPERTS:
        return type_index(wt) >= 0;
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

/* ---- memory ---- */

static int hip_buf_alloc(struct porta_backend *be, size_t n, enum porta_buf_use use_,
                         struct porta_buf **out)
{
    struct hip_ctx *c = be->ctx;
    *out = NULL;
    int rc = use(c);
    if (rc)
        return rc;
    struct porta_buf *b = calloc(1, sizeof *b);
    if (!b)
        return PORTA_E_NOMEM;
    hipError_t e = hip_rt.hipMalloc(&b->ptr, n);
    if (e != hipSuccess) {
        size_t free_b = 0, total_b = 0;
        hip_rt.hipMemGetInfo(&free_b, &total_b);
        free(b);
        porta_err("hip: cannot allocate %.1f MiB on '%s': %s (%.1f MiB free of %.1f MiB)",
                  n / 1048576.0, c->dev.prop.name, hip_errname(e), free_b / 1048576.0,
                  total_b / 1048576.0);
        return hip_status(e);
    }
    b->size = n;
    *out = b;
    return 0;
}

/* Waits for the queued work that may still read or write b, then frees it. */
static void hip_buf_free(struct porta_backend *be, struct porta_buf *b)
{
    struct hip_ctx *c = be->ctx;
    if (!b)
        return;
    if (use(c) == 0) {
        hip_rt.hipStreamSynchronize(c->stream);
        hip_rt.hipStreamSynchronize(c->copy);
        hip_rt.hipFree(b->ptr);
    }
    free(b);
}

static size_t hip_buf_size(const struct porta_buf *b) { return b ? b->size : 0; }

/* Asynchronous: returns once src has been copied into pinned memory (src may be reused at
 * once); the DMA runs on the copy stream after the kernels queued so far (which may still use
 * dst), and kernels queued later wait for it. Slices of SLOT_BYTES rotate through N_SLOTS
 * pinned slots, so the host fills one while the previous ones are in flight. */
static int hip_upload(struct porta_backend *be, struct porta_buf *dst, size_t off,
                      const void *src, size_t n)
{
    struct hip_ctx *c = be->ctx;
    int rc = use(c);
    if (rc)
        return rc;
    HIP_TRY(hip_rt.hipEventRecord(c->kernels_done, c->stream));
    HIP_TRY(hip_rt.hipStreamWaitEvent(c->copy, c->kernels_done, 0));
    for (size_t done = 0; done < n;) {
        size_t len = n - done < SLOT_BYTES ? n - done : SLOT_BYTES;
        int s = c->next_slot;
        unsigned char *slot = c->bounce + (size_t)s * SLOT_BYTES;
        HIP_TRY(hip_rt.hipEventSynchronize(c->slot_free[s]));  /* its last DMA has finished */
        memcpy(slot, (const unsigned char *)src + done, len);
        HIP_TRY(hip_rt.hipMemcpyAsync((char *)dst->ptr + off + done, slot, len,
                                      hipMemcpyHostToDevice, c->copy));
        HIP_TRY(hip_rt.hipEventRecord(c->slot_free[s], c->copy));
        c->next_slot = (s + 1) % N_SLOTS;
        done += len;
    }
    HIP_TRY(hip_rt.hipEventRecord(c->upload_done, c->copy));
    HIP_TRY(hip_rt.hipStreamWaitEvent(c->stream, c->upload_done, 0));
    return 0;
}

/* Blocking: dst holds the data (after all earlier work, uploads included) on return. */
static int hip_download(struct porta_backend *be, void *dst, const struct porta_buf *src,
                        size_t off, size_t n)
{
    struct hip_ctx *c = be->ctx;
    int rc = use(c);
    if (rc)
        return rc;
    HIP_TRY(hip_rt.hipMemcpyAsync(dst, (const char *)src->ptr + off, n, hipMemcpyDeviceToHost,
                                  c->stream));
    HIP_TRY(hip_rt.hipStreamSynchronize(c->stream));
    c->stage_used = 0;
    return 0;
}

/* Waits for everything queued: the kernel stream has waited for every upload, so draining it
 * drains both. */
static int hip_synchronize(struct porta_backend *be)
{
    struct hip_ctx *c = be->ctx;
    int rc = use(c);
    if (rc)
        return rc;
    HIP_TRY(hip_rt.hipStreamSynchronize(c->stream));
    c->stage_used = 0;
    return 0;
}

/* ---- matmul ---- */

/* weight row 0 as a byte offset, checked for the kernels' aligned loads */
static bool weight_off(const struct porta_weight *w, uint64_t *off)
{
    size_t align = w->type == PORTA_F32 ? 4 : 2;
    if (w->off % align) {
        porta_err("hip: weight '%s' starts at byte %zu, not a multiple of %zu",
                  w->name ? w->name : "?", w->off, align);
        return false;
    }
    *off = w->off;
    return true;
}

/* decode (one token): mv, a block per MV_ROWS rows; a few tokens: mt, MT_TOK tokens per
 * thread; from mm_min_tok tokens: the tiled mm */
static int hip_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                      struct porta_view x, int n_tok)
{
    struct hip_ctx *c = be->ctx;
    uint64_t yo, xo, wo, row_bytes = w->row_bytes;
    if (type_index(w->type) < 0)
        return PORTA_E_UNSUPPORTED;
    if (!elem_off(y, 4, "matmul y", &yo) || !elem_off(x, 4, "matmul x", &xo) ||
        !weight_off(w, &wo))
        return PORTA_E_INVAL;
    if (w->n_rows > INT32_MAX || w->n_cols > INT32_MAX / 2) {
        porta_err("hip: weight '%s' is too large for one launch", w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    int32_t n_rows = (int32_t)w->n_rows, n_cols = (int32_t)w->n_cols, nt = n_tok;
    void *yp = y.buf->ptr, *wp = w->buf->ptr, *xp = x.buf->ptr;
    void *a[] = { &yp, &yo, &wp, &wo, &row_bytes, &n_rows, &n_cols, &xp, &xo, &nt };
    const struct type_kernels *k = &c->tk[w->type];
    size_t groups = ceil_div((size_t)n_rows, MV_ROWS);
    if (n_tok == 1)
        return launch(c, &k->mv, groups, 1, 1, (unsigned)c->mv_lsz, a);
    if (n_tok < c->mm_min_tok)
        return launch(c, &k->mt, groups, ceil_div((size_t)n_tok, MT_TOK), 1,
                      (unsigned)c->mv_lsz, a);
    return launch(c, &k->mm, ceil_div((size_t)n_rows, MM_TR), ceil_div((size_t)n_tok, MM_TT), 1,
                  MM_LSZ, a);
}

/* ---- the other ops ---- */

/* one block per row; launched in slices of rows when n_rows exceeds the grid's y limit */
static int hip_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                       struct porta_view w, int n_rows, int n, float eps)
{
    struct hip_ctx *c = be->ctx;
    uint64_t yo, xo, wo = 0;
    if (!elem_off(y, 4, "rmsnorm y", &yo) || !elem_off(x, 4, "rmsnorm x", &xo) ||
        (w.buf && !elem_off(w, 4, "rmsnorm w", &wo)))
        return PORTA_E_INVAL;
    int32_t has_w = w.buf != NULL, ni = n;
    void *yp = y.buf->ptr, *xp = x.buf->ptr, *wp = w.buf ? w.buf->ptr : x.buf->ptr;
    int slice = c->dev.prop.maxGridSize[1];
    for (int r0 = 0; r0 < n_rows; r0 += slice) {
        int rows = n_rows - r0 < slice ? n_rows - r0 : slice;
        uint64_t ys = yo + (uint64_t)r0 * (uint64_t)n, xs = xo + (uint64_t)r0 * (uint64_t)n;
        void *a[] = { &yp, &ys, &xp, &xs, &wp, &wo, &has_w, &ni, &eps };
        int rc = launch(c, &c->rmsnorm, 1, (size_t)rows, 1, (unsigned)c->norm_lsz, a);
        if (rc)
            return rc;
    }
    return 0;
}

static int hip_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                    int head_dim, const int32_t *pos, const struct porta_rope_params *p)
{
    struct hip_ctx *c = be->ctx;
    uint64_t xo, po, to;
    float *tab;
    if (!elem_off(x, 4, "rope x", &xo))
        return PORTA_E_INVAL;
    int rc = porta_rope_table(p, &tab);
    if (rc)
        return rc;
    int half = p->n_rot / 2;
    rc = stage(c, pos, sizeof(int32_t) * (size_t)n_tok, &po);
    if (!rc)
        rc = stage(c, tab, sizeof(float) * 3 * (size_t)half, &to);
    free(tab);
    if (rc)
        return rc;
    po /= 4;
    to /= 4;
    float mscale = porta_rope_mscale(p), fs = p->freq_scale;
    int32_t neox = p->style == PORTA_ROPE_NEOX, n_rot = p->n_rot, nh = n_head, hd = head_dim;
    void *xp = x.buf->ptr, *sp = c->stage_dev;
    void *a[] = { &xp, &xo, &nh, &hd, &n_rot, &neox, &sp, &po, &sp, &to, &fs, &mscale };
    size_t l0 = half < c->elt_lsz ? (size_t)half : (size_t)c->elt_lsz;
    return launch(c, &c->rope, ceil_div((size_t)half, l0), (size_t)n_head, (size_t)n_tok,
                  (unsigned)l0, a);
}

/* the attention block size for these head dims (each thread owns ATT_DPT output dims), or -1
 * (logged) when the kernel cannot take them */
static int att_lsz_for(const struct hip_ctx *c, int dk, int dv)
{
    int lsz = c->att_lsz;
    while (lsz * ATT_DPT < dv && lsz < ATT_MAX_LSZ && lsz * 2 <= c->dev.prop.maxThreadsPerBlock)
        lsz *= 2;
    if (dk > ATT_MAX_DK || dv > lsz * ATT_DPT) {
        porta_err("hip: attention with head dims %d/%d is beyond the kernel's %d/%d", dk, dv,
                  ATT_MAX_DK, lsz * ATT_DPT);
        return -1;
    }
    return lsz;
}

/* pos (and seq) staged for the store and attend kernels; element offsets in *po, *so */
static int stage_positions(struct hip_ctx *c, const struct porta_attn_params *p, uint64_t *po,
                           uint64_t *so)
{
    int rc = stage(c, p->pos, sizeof(int32_t) * (size_t)p->n_tok, po);
    *so = 0;
    if (!rc && p->seq)
        rc = stage(c, p->seq, sizeof(int32_t) * (size_t)p->n_tok, so);
    *po /= 4;
    *so /= 4;
    return rc;
}

static int hip_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                         struct porta_view k, struct porta_view v,
                         const struct porta_attn_params *p)
{
    struct hip_ctx *c = be->ctx;
    int f16 = p->kv_type == PORTA_F16, es = f16 ? 2 : 4, rc;
    uint64_t oo, qo, ko, vo, kco, vco, po, so;
    if (!elem_off(out, 4, "attention out", &oo) || !elem_off(q, 4, "attention q", &qo) ||
        !elem_off(k, 4, "attention k", &ko) || !elem_off(v, 4, "attention v", &vo) ||
        !elem_off(p->k_cache, (size_t)es, "attention k_cache", &kco) ||
        !elem_off(p->v_cache, (size_t)es, "attention v_cache", &vco))
        return PORTA_E_INVAL;
    int lsz = att_lsz_for(c, p->head_dim_k, p->head_dim_v);
    if (lsz < 0)
        return PORTA_E_UNSUPPORTED;
    if ((rc = stage_positions(c, p, &po, &so)))
        return rc;
    int32_t has_seq = p->seq != NULL, nh = p->n_head, nkv = p->n_head_kv, dk = p->head_dim_k,
            dv = p->head_dim_v, n_ctx = p->n_ctx;
    float scale = p->scale;
    void *kc = p->k_cache.buf->ptr, *vc = p->v_cache.buf->ptr, *kp = k.buf->ptr,
         *vp = v.buf->ptr, *sp = c->stage_dev, *op = out.buf->ptr, *qp = q.buf->ptr;
    int wide = nkv * (dk > dv ? dk : dv);
    void *as[] = { &kc, &kco, &vc, &vco, &kp, &ko, &vp, &vo, &sp, &po,
                   &sp, &so, &has_seq, &nkv, &dk, &dv, &n_ctx };
    if ((rc = launch(c, &c->kv_store[f16], ceil_div((size_t)wide, 64), (size_t)p->n_tok, 1, 64,
                     as)))
        return rc;
    void *aa[] = { &op, &oo, &qp, &qo, &kc, &kco, &vc, &vco, &sp, &po,
                   &sp, &so, &has_seq, &nh, &nkv, &dk, &dv, &n_ctx, &scale };
    return launch(c, &c->kv_attn[f16], (size_t)nh, (size_t)p->n_tok, 1, (unsigned)lsz, aa);
}

static int hip_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                       struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s)
{
    struct hip_ctx *c = be->ctx;
    uint64_t yo, ao, bo = 0;
    bool binary = op == PORTA_ELT_ADD || op == PORTA_ELT_MUL || op == PORTA_ELT_SWIGLU;
    if (!elem_off(y, 4, "eltwise y", &yo) || !elem_off(a, 4, "eltwise a", &ao) ||
        (binary && !elem_off(b, 4, "eltwise b", &bo)))
        return PORTA_E_INVAL;
    if (n > INT32_MAX) {
        porta_err("hip: eltwise over %lld elements is too large for one launch", (long long)n);
        return PORTA_E_UNSUPPORTED;
    }
    int32_t opi = (int32_t)op, ni = (int32_t)n, nbi = binary ? (int32_t)nb : 1;
    void *yp = y.buf->ptr, *ap = a.buf->ptr, *bp = binary ? b.buf->ptr : a.buf->ptr;
    void *k[] = { &opi, &yp, &yo, &ap, &ao, &bp, &bo, &ni, &nbi, &s };
    return launch(c, &c->eltwise, ceil_div((size_t)n, (size_t)c->elt_lsz), 1, 1,
                  (unsigned)c->elt_lsz, k);
}

/* ids were checked against the vocabulary by porta_be_embed */
static int hip_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                     const int32_t *ids, int n_tok)
{
    struct hip_ctx *c = be->ctx;
    uint64_t yo, wo, io, row_bytes = w->row_bytes;
    int ti = type_index(w->type);
    if (ti < 0)
        return PORTA_E_UNSUPPORTED;
    if (!elem_off(y, 4, "embed y", &yo) || !weight_off(w, &wo))
        return PORTA_E_INVAL;
    if (w->n_cols > INT32_MAX / 2) {
        porta_err("hip: weight '%s' is too large for one launch", w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    int rc = stage(c, ids, sizeof(int32_t) * (size_t)n_tok, &io);
    if (rc)
        return rc;
    io /= 4;
    int32_t n_cols = (int32_t)w->n_cols;
    size_t units = (size_t)n_cols / (size_t)hip_types[ti].sub;
    void *yp = y.buf->ptr, *wp = w->buf->ptr, *sp = c->stage_dev;
    void *a[] = { &yp, &yo, &wp, &wo, &row_bytes, &n_cols, &sp, &io };
    return launch(c, &c->tk[w->type].emb, ceil_div(units + 1, (size_t)c->elt_lsz),
                  (size_t)n_tok, 1, (unsigned)c->elt_lsz, a);
}

/* ---- mixture of experts ---- */

static int hip_moe_route(struct porta_backend *be, struct porta_view ids,
                         struct porta_view weights, struct porta_view logits,
                         const struct porta_route_params *p)
{
    struct hip_ctx *c = be->ctx;
    uint64_t io, wo, lo, bo = 0;
    if (!elem_off(ids, 4, "moe_route ids", &io) ||
        !elem_off(weights, 4, "moe_route weights", &wo) ||
        !elem_off(logits, 4, "moe_route logits", &lo) ||
        (p->bias.buf && !elem_off(p->bias, 4, "moe_route bias", &bo)))
        return PORTA_E_INVAL;
    if (p->n_expert > MOE_MAX_EXPERT) {
        porta_err("hip: moe_route over %d experts is beyond the kernel's %d", p->n_expert,
                  MOE_MAX_EXPERT);
        return PORTA_E_UNSUPPORTED;
    }
    int32_t has_bias = p->bias.buf != NULL, n_tok = p->n_tok, n_expert = p->n_expert, k = p->k,
            softmax = p->gating == PORTA_GATING_SOFTMAX, norm = p->norm, n_group = p->n_group,
            topk_group = p->topk_group;
    float scale = p->scale;
    void *ip = ids.buf->ptr, *wp = weights.buf->ptr, *lp = logits.buf->ptr,
         *bp = p->bias.buf ? p->bias.buf->ptr : logits.buf->ptr;
    void *a[] = { &ip, &io, &wp, &wo, &lp, &lo, &bp, &bo, &has_bias, &n_tok, &n_expert, &k,
                  &softmax, &norm, &scale, &n_group, &topk_group };
    return launch(c, &c->moe_route, ceil_div((size_t)n_tok, (size_t)c->elt_lsz), 1, 1,
                  (unsigned)c->elt_lsz, a);
}

/* One block per (row group, token) walks the token's k slots (as the OpenCL backend). */
static int hip_matmul_experts(struct porta_backend *be, struct porta_view y,
                              const struct porta_weight *w, struct porta_view x,
                              const struct porta_experts_params *p)
{
    struct hip_ctx *c = be->ctx;
    uint64_t yo, xo, wo, io = 0, so = 0, row_bytes = w->row_bytes;
    uint64_t stride = porta_weight_mat_stride(w);
    if (type_index(w->type) < 0)
        return PORTA_E_UNSUPPORTED;
    if (!elem_off(y, 4, "matmul_experts y", &yo) || !elem_off(x, 4, "matmul_experts x", &xo) ||
        !weight_off(w, &wo) || stride % (w->type == PORTA_F32 ? 4 : 2) ||
        (p->ids.buf && !elem_off(p->ids, 4, "matmul_experts ids", &io)) ||
        (p->weights.buf && !elem_off(p->weights, 4, "matmul_experts weights", &so)))
        return PORTA_E_INVAL;
    if (w->n_rows > INT32_MAX || w->n_cols > INT32_MAX / 2 || w->n_mat > INT32_MAX) {
        porta_err("hip: weight '%s' is too large for one launch", w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    int32_t n_mat = (int32_t)w->n_mat, n_rows = (int32_t)w->n_rows, n_cols = (int32_t)w->n_cols,
            x_per_slot = p->x_per_slot, has_ids = p->ids.buf != NULL,
            has_wts = p->weights.buf != NULL, k = p->k;
    void *yp = y.buf->ptr, *wp = w->buf->ptr, *xp = x.buf->ptr,
         *ip = has_ids ? p->ids.buf->ptr : x.buf->ptr,
         *sp = has_wts ? p->weights.buf->ptr : x.buf->ptr;
    void *a[] = { &yp, &yo, &wp, &wo, &row_bytes, &stride, &n_mat, &n_rows, &n_cols, &xp, &xo,
                  &x_per_slot, &ip, &io, &has_ids, &sp, &so, &has_wts, &k };
    return launch(c, &c->tk[w->type].me, ceil_div((size_t)n_rows, MV_ROWS), (size_t)p->n_tok, 1,
                  (unsigned)c->mv_lsz, a);
}

/* ---- multi-head latent attention ---- */

static int hip_attention_mla(struct porta_backend *be, struct porta_view out,
                             struct porta_view q_lat, struct porta_view q_rope,
                             struct porta_view kv_lat, struct porta_view k_rope,
                             const struct porta_attn_params *p)
{
    struct hip_ctx *c = be->ctx;
    int f16 = p->kv_type == PORTA_F16, es = f16 ? 2 : 4, rc;
    uint64_t oo, qlo, qro, klo, kro, kco, po, so;
    if (!elem_off(out, 4, "attention_mla out", &oo) ||
        !elem_off(q_lat, 4, "attention_mla q_lat", &qlo) ||
        !elem_off(q_rope, 4, "attention_mla q_rope", &qro) ||
        !elem_off(kv_lat, 4, "attention_mla kv_lat", &klo) ||
        !elem_off(k_rope, 4, "attention_mla k_rope", &kro) ||
        !elem_off(p->k_cache, (size_t)es, "attention_mla cache", &kco))
        return PORTA_E_INVAL;
    int lsz = att_lsz_for(c, p->head_dim_k, p->head_dim_v);
    if (lsz < 0)
        return PORTA_E_UNSUPPORTED;
    if ((rc = stage_positions(c, p, &po, &so)))
        return rc;
    int32_t has_seq = p->seq != NULL, nh = p->n_head, lat = p->head_dim_v, dk = p->head_dim_k,
            n_ctx = p->n_ctx;
    float scale = p->scale;
    void *kc = p->k_cache.buf->ptr, *lp = kv_lat.buf->ptr, *rp = k_rope.buf->ptr,
         *sp = c->stage_dev, *op = out.buf->ptr, *qlp = q_lat.buf->ptr, *qrp = q_rope.buf->ptr;
    void *as[] = { &kc, &kco, &lp, &klo, &rp, &kro, &sp, &po, &sp, &so, &has_seq, &lat, &dk,
                   &n_ctx };
    if ((rc = launch(c, &c->mla_store[f16], ceil_div((size_t)dk, 64), (size_t)p->n_tok, 1, 64,
                     as)))
        return rc;
    void *aa[] = { &op, &oo, &qlp, &qlo, &qrp, &qro, &kc, &kco, &sp, &po,
                   &sp, &so, &has_seq, &nh, &lat, &dk, &n_ctx, &scale };
    return launch(c, &c->mla_attn[f16], (size_t)nh, (size_t)p->n_tok, 1, (unsigned)lsz, aa);
}

const struct porta_backend_ops porta_backend_hip = {
    .name = "hip",
    .devices = hip_devices,
    .open = hip_open,
    .close = hip_close,
    .supports = hip_supports,
    .buf_alloc = hip_buf_alloc,
    .buf_free = hip_buf_free,
    .buf_size = hip_buf_size,
    .upload = hip_upload,
    .download = hip_download,
    .matmul = hip_matmul,
    .rmsnorm = hip_rmsnorm,
    .rope = hip_rope,
    .attention = hip_attention,
    .eltwise = hip_eltwise,
    .embed = hip_embed,
    .moe_route = hip_moe_route,
    .matmul_experts = hip_matmul_experts,
    .attention_mla = hip_attention_mla,
    .synchronize = hip_synchronize,
};
