/* opencl.c - the OpenCL backend: one device, one in-order queue, buffers, and each op as
 * backends/kops.c's launches of the shared kernels in kernels/cl (matvec for decode; for
 * prefill a matvec over a few tokens at a time on CPU devices, local-memory tiles on GPUs, or
 * CLBlast, which this file runs). Host arrays that kernels read (positions, ids, tables) are
 * staged into a device ring whose host copy lives until the next synchronize(). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_priv.h"
#include "backends/kops.h"

#ifdef PORTA_HAVE_CLBLAST
#include <clblast_c.h>
#endif

struct porta_buf {
    cl_mem mem;
    size_t size;
    bool wrapped;                   /* over host memory: not counted as device memory */
};

/* matmul.cl's tile, passed to the compiler; the host sizes the grids with the same numbers */
struct mm_tile {
    int tr, tt, mr, mt, contig;
};

/* how a product of mm_min_tok or more tokens runs (one token: mv_<type>, fewer: mt_<type>) */
enum prefill {
    PF_MT,          /* mt_<type>: mt_tok tokens per work-item (CPU devices; few tokens) */
    PF_MM,          /* mm_<type>: local-memory tiles (GPUs) */
    PF_CLBLAST,     /* deq_<type> to float + CLBlast SGEMM */
};

#define PROF_NAME 48
#define PROF_ROWS 64

struct cl_ctx {
    struct kops_dev kd;             /* first (KOPS_DEV): the ops of backends/kops.c, the shapes */
    struct cl_devinfo dev;
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    cl_kernel k[KOPS_N_KERNELS];
    /* launch shapes, chosen per device type at open */
    bool cpu_shapes;                /* launch shapes for a CPU device (see pick_shapes) */
    struct mm_tile mm;
    enum prefill prefill;           /* for n_tok >= mm_min_tok (below: mt, or mv for 1) */
    struct porta_buf scratch;       /* dequantized weights for CLBlast */
    size_t allocated;               /* bytes of live buffers made by buf_alloc */
    /* staging ring for host arrays read by kernels */
    cl_mem stage;
    unsigned char *stage_host;
    size_t stage_cap, stage_used;
    /* PORTA_OPENCL_PROFILE=1: device time per kernel, summed at each synchronize() and
     * logged at close */
    bool prof;
    struct prof_ev {
        cl_event ev;
        char name[PROF_NAME];
    } *prof_ev;
    int prof_n, prof_cap;
    struct prof_row {
        char name[PROF_NAME];
        double s;
        long n;
    } prof_rows[PROF_ROWS];
    int prof_nrows;
    long prof_syncs, prof_waits;    /* synchronize() calls; clFinish in stage() */
};

/* ---- launching ---- */

/* adds the finished events' device times to the per-kernel table */
static void prof_collect(struct cl_ctx *c)
{
    for (int i = 0; i < c->prof_n; i++) {
        cl_ulong t0 = 0, t1 = 0;
        clGetEventProfilingInfo(c->prof_ev[i].ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0,
                                NULL);
        clGetEventProfilingInfo(c->prof_ev[i].ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1,
                                NULL);
        clReleaseEvent(c->prof_ev[i].ev);
        int j;
        for (j = 0; j < c->prof_nrows; j++)
            if (strcmp(c->prof_rows[j].name, c->prof_ev[i].name) == 0)
                break;
        if (j == c->prof_nrows) {
            if (j == PROF_ROWS)
                continue;
            memcpy(c->prof_rows[c->prof_nrows++].name, c->prof_ev[i].name, PROF_NAME);
        }
        c->prof_rows[j].s += (double)(t1 - t0) * 1e-9;
        c->prof_rows[j].n++;
    }
    c->prof_n = 0;
}

/* logs the per-kernel table, largest first */
static void prof_report(struct cl_ctx *c)
{
    double total = 0;
    porta_info("opencl profile: %ld synchronize() calls, %ld waits for the staging ring",
               c->prof_syncs, c->prof_waits);
    for (int i = 0; i < c->prof_nrows; i++)
        total += c->prof_rows[i].s;
    for (int i = 0; i < c->prof_nrows; i++) {
        int m = i;
        for (int j = i + 1; j < c->prof_nrows; j++)
            if (c->prof_rows[j].s > c->prof_rows[m].s)
                m = j;
        struct prof_row t = c->prof_rows[i];
        c->prof_rows[i] = c->prof_rows[m];
        c->prof_rows[m] = t;
        porta_info("opencl profile: %-20s %9.3f s %5.1f%% %8ld launches %8.1f us each",
                   c->prof_rows[i].name, c->prof_rows[i].s,
                   total > 0 ? 100 * c->prof_rows[i].s / total : 0.0, c->prof_rows[i].n,
                   1e6 * c->prof_rows[i].s / (double)c->prof_rows[i].n);
    }
}

/* the event slot for the next launch (NULL when not profiling) */
static cl_event *prof_slot(struct cl_ctx *c, cl_kernel k)
{
    if (!c->prof)
        return NULL;
    if (c->prof_n == c->prof_cap) {
        int cap = c->prof_cap ? 2 * c->prof_cap : 1024;
        void *p = realloc(c->prof_ev, sizeof *c->prof_ev * (size_t)cap);
        if (!p)
            return NULL;
        c->prof_ev = p;
        c->prof_cap = cap;
    }
    struct prof_ev *e = &c->prof_ev[c->prof_n];
    memset(e->name, 0, PROF_NAME);
    clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, PROF_NAME - 1, e->name, NULL);
    return &e->ev;
}

/* kops_dev.launch: l as an NDRange of groups[d] * lsz (dimension 0) by groups[d] work-items,
 * in work-groups of lsz (the runtime's choice for l->any_lsz). An empty grid launches
 * nothing. */
static int launch(void *ctx, const struct kops_launch *l)
{
    struct cl_ctx *c = ctx;
    cl_kernel k = c->k[l->kernel];
    for (int i = 0; i < l->na; i++) {
        const struct kops_arg *a = &l->a[i];
        cl_ulong u64 = a->v.u64;
        cl_int i32 = a->v.i32;
        cl_float f32 = a->v.f32;
        cl_mem m = a->kind == KOPS_STAGE ? c->stage : a->kind == KOPS_BUF ? a->v.buf->mem : NULL;
        cl_int e;
        switch (a->kind) {
        case KOPS_U64: e = clSetKernelArg(k, (cl_uint)i, sizeof u64, &u64); break;
        case KOPS_I32: e = clSetKernelArg(k, (cl_uint)i, sizeof i32, &i32); break;
        case KOPS_F32: e = clSetKernelArg(k, (cl_uint)i, sizeof f32, &f32); break;
        default: e = clSetKernelArg(k, (cl_uint)i, sizeof m, &m); break;
        }
        if (e != CL_SUCCESS) {
            char name[64] = "?";
            clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
            porta_err("opencl: kernel %s argument %d: %s", name, i, cl_errname(e));
            return PORTA_E_DEVICE;
        }
    }
    size_t gws[3], lws[3] = { l->lsz, 1, 1 };
    for (int d = 0; d < l->dims; d++) {
        gws[d] = l->groups[d] * (d == 0 ? l->lsz : 1);
        if (gws[d] == 0)
            return 0;
    }
    cl_event *ev = prof_slot(c, k);
    cl_int e = clEnqueueNDRangeKernel(c->queue, k, (cl_uint)l->dims, NULL, gws,
                                      l->any_lsz ? NULL : lws, 0, NULL, ev);
    if (ev && e == CL_SUCCESS)
        c->prof_n++;
    if (e != CL_SUCCESS) {
        char name[64] = "?";
        clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
        porta_err("opencl: launching %s (global %zu x %zu, local %zu): %s", name, gws[0],
                  l->dims > 1 ? gws[1] : 1, l->any_lsz ? 0 : l->lsz, cl_errname(e));
        return cl_status(e);
    }
    return 0;
}

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* kops_dev.stage: n bytes of host memory into the staging ring; *off gets their byte offset
 * there. The host copy is not reused before the queue has drained, so the non-blocking write
 * is safe however long the caller's array lives. */
static int stage(void *ctx, const void *src, size_t n, uint64_t *off)
{
    struct cl_ctx *c = ctx;
    size_t at = round_up(c->stage_used, 64);
    if (at + n > c->stage_cap) {
        c->prof_waits++;
        CL_TRY(clFinish(c->queue));
        at = 0;
        if (n > c->stage_cap) {
            size_t cap = round_up(n > 2 * c->stage_cap ? n : 2 * c->stage_cap, 4096);
            unsigned char *h = malloc(cap);
            cl_int e;
            cl_mem m = h ? clCreateBuffer(c->context, CL_MEM_READ_ONLY, cap, NULL, &e) : NULL;
            if (!m) {
                free(h);
                porta_err("opencl: cannot grow the staging buffer to %zu bytes", cap);
                return PORTA_E_NOMEM;
            }
            clReleaseMemObject(c->stage);
            free(c->stage_host);
            c->stage = m;
            c->stage_host = h;
            c->stage_cap = cap;
        }
    }
    memcpy(c->stage_host + at, src, n);
    CL_TRY(clEnqueueWriteBuffer(c->queue, c->stage, CL_FALSE, at, n, c->stage_host + at, 0,
                                NULL, NULL));
    c->stage_used = at + n;
    *off = at;
    return 0;
}

/* ---- open / close ---- */

static void cl_close(struct porta_backend *be)
{
    struct cl_ctx *c = be->ctx;
    if (!c)
        return;
    if (c->queue)
        clFinish(c->queue);
    kops_close(be);
    if (c->prof) {
        prof_collect(c);
        prof_report(c);
        free(c->prof_ev);
    }
    for (int i = 0; i < KOPS_N_KERNELS; i++)
        if (c->k[i])
            clReleaseKernel(c->k[i]);
    if (c->scratch.mem)
        clReleaseMemObject(c->scratch.mem);
    if (c->stage)
        clReleaseMemObject(c->stage);
    free(c->stage_host);
    if (c->program)
        clReleaseProgram(c->program);
    if (c->queue)
        clReleaseCommandQueue(c->queue);
    if (c->context)
        clReleaseContext(c->context);
    free(c);
    be->ctx = NULL;
}

/* kops_get_kernels' callback: kernel slot from the built program */
static int make_kernel(void *ctx, int slot, const char *name)
{
    struct cl_ctx *c = ctx;
    cl_int e;
    c->k[slot] = clCreateKernel(c->program, name, &e);
    if (e != CL_SUCCESS) {
        porta_err("opencl: kernel %s: %s", name, cl_errname(e));
        return PORTA_E_DEVICE;
    }
    return 0;
}

/* Launch shapes per device type. CPU devices (PoCL) run a work-group per thread and loop
 * over its work-items, vectorizing only loops inside one work-item, and pay ~50 ns per
 * work-group and per barrier region: they want groups of whole rows without barriers
 * (matvec.cl's MV_SOLO), wide contiguous inner loops (eltwise.cl's ELT_PER), no repeated
 * libm calls (rope.cl's ROPE_ALL_HEADS) and the smallest attention group that covers the head.
 * Their matrix products run over row packs (kernels/cl/matvec_rows.cl: SIMD lanes are rows,
 * 2x the rate of mv_/mt_ on PoCL, for a second copy of each matrix) unless
 * backend.opencl.row_packs is off; then prefill is mt_<type> with 16 tokens per work-item,
 * which beats the tiled mm_<type> ~3x and CLBlast (dequantize + SGEMM) ~3-4x (measured on
 * 1536x576 and 4864x896 Q4 weights, 64 and 256 tokens). GPUs want a wavefront or more per
 * group and neighbouring work-items on neighbouring data; their prefill GEMM is CLBlast's when
 * it is built in and the config's backend.opencl.clblast is on (the default; not measured on a
 * GPU here: no GPU was lent), else the tiled mm_<type>. PORTA_OPENCL_SHAPES=cpu|gpu picks
 * either set on any device (the tests run the GPU shapes on PoCL). For tuning,
 * PORTA_OPENCL_MV_LSZ, _MV_ROWS, _MT_TOK, _MM_MIN_TOK, _ATT_LSZ, _MM="tr,tt,mr,mt,contig" and
 * _GEMM=mt|mm|clblast override the choice; _ROW_PACKS=0|1 overrides backend.opencl.row_packs
 * (CPU devices: products over row packs, kernels/cl/matvec_rows.cl, else mv_/mt_ over the
 * matrices as stored), _PREFILL_PACKS=0 keeps prefill on mt_, _MRT_TOK and _MR_LSZ set mrt_'s
 * tokens per work-item and mr_/mrt_'s group size; PORTA_OPENCL_BUILD_OPTS is appended to the
 * compiler options and PORTA_OPENCL_PROFILE=1 logs the device time per kernel at close. */
static void pick_shapes(struct cl_ctx *c, bool clblast, bool row_packs)
{
    bool cpu = c->cpu_shapes;
    struct kops_dev *d = &c->kd;
    *d = (struct kops_dev){ .name = "opencl", .ctx = c, .launch = launch, .stage = stage,
                            .max_rows = SIZE_MAX, .rope_all_heads = cpu };
    d->max_lsz = c->dev.max_wg < 1024 ? (int)c->dev.max_wg : 1024;
    d->mv_lsz = cpu ? 16 : 64;
    d->norm_lsz = cpu ? 16 : 256;
    d->att_lsz = cpu ? 1 : 64;      /* grown to cover the head dim (kops.c) */
    d->mm_min_tok = 16;             /* below: mt_<type>, one pass over W per mt_tok tokens */
    d->mt_tok = cpu ? 16 : 4;
    c->prefill = cpu ? PF_MT : PF_MM;
#ifdef PORTA_HAVE_CLBLAST
    if (clblast && !cpu)
        c->prefill = PF_CLBLAST;
#else
    (void)clblast;
#endif
    c->mm = cpu ? (struct mm_tile){ 64, 16, 8, 16, 1 } : (struct mm_tile){ 64, 32, 4, 4, 0 };
    d->mv_lsz = kops_env_int("PORTA_OPENCL_MV_LSZ", d->mv_lsz);
    d->att_lsz = kops_env_int("PORTA_OPENCL_ATT_LSZ", d->att_lsz);
    d->mm_min_tok = kops_env_int("PORTA_OPENCL_MM_MIN_TOK", d->mm_min_tok);
    d->mt_tok = kops_env_int("PORTA_OPENCL_MT_TOK", d->mt_tok);
    d->mv_rows = kops_env_int("PORTA_OPENCL_MV_ROWS", 1);
    if (d->mt_tok < 1 || d->mt_tok > 16)
        d->mt_tok = cpu ? 16 : 4;
    const char *mm = getenv("PORTA_OPENCL_MM");
    struct mm_tile t;
    if (mm && sscanf(mm, "%d,%d,%d,%d,%d", &t.tr, &t.tt, &t.mr, &t.mt, &t.contig) == 5 &&
        t.mr > 0 && t.mt > 0 && t.tr % t.mr == 0 && t.tt % t.mt == 0)
        c->mm = t;
    d->mm_tr = c->mm.tr;
    d->mm_tt = c->mm.tt;
    d->mm_lsz = (c->mm.tr / c->mm.mr) * (c->mm.tt / c->mm.mt);
    size_t cap = c->dev.max_wg < 256 ? c->dev.max_wg : 256;
    d->elt_lsz = 64;
    d->elt_per = cpu ? 16 : 1;
    int *ls[] = { &d->mv_lsz, &d->norm_lsz, &d->att_lsz, &d->elt_lsz };
    for (int i = 0; i < 4; i++) {
        int v = 1;
        while (v * 2 <= *ls[i] && (size_t)(v * 2) <= cap)
            v *= 2;
        *ls[i] = v;
    }
    while (d->mv_rows > 1 && (d->mv_rows > d->mv_lsz || (d->mv_rows & (d->mv_rows - 1))))
        d->mv_rows--;                   /* a power of two, at most one row per work-item */
    if (d->mv_rows < 1)
        d->mv_rows = 1;
    if (cpu)
        d->mv_rows = d->mv_lsz;         /* matvec.cl's MV_SOLO: one row per work-item */
    /* one-token products over row packs (matvec_rows.cl): 1.8-2.3x mv_'s decode rate on PoCL */
    d->row_packs = cpu && kops_env_int("PORTA_OPENCL_ROW_PACKS", row_packs) != 0;
    d->mr_lsz = kops_env_int("PORTA_OPENCL_MR_LSZ", 4);
    if (d->mr_lsz < 1 || d->mr_lsz > 256)
        d->mr_lsz = 4;
    d->prefill_packs = d->row_packs && kops_env_int("PORTA_OPENCL_PREFILL_PACKS", 1) != 0;
    d->mrt_tok = kops_env_int("PORTA_OPENCL_MRT_TOK", 8);
    if (d->mrt_tok < 1 || d->mrt_tok > 32)
        d->mrt_tok = 8;
    const char *g = getenv("PORTA_OPENCL_GEMM");
    if (g && strcmp(g, "mt") == 0)
        c->prefill = PF_MT;
    else if (g && strcmp(g, "mm") == 0)
        c->prefill = PF_MM;
#ifdef PORTA_HAVE_CLBLAST
    else if (g && strcmp(g, "clblast") == 0)
        c->prefill = PF_CLBLAST;
#endif
    d->prefill_mm = c->prefill == PF_MM;
}

/* The kernel cache folder to use, "" for none. PoCL compiles kernels when they are first
 * launched and caches them itself; asking it for a program binary makes it compile every
 * kernel up front (20-35 s on 2 cores), so porta's cache is off there unless
 * PORTA_OPENCL_CACHE=1. PORTA_OPENCL_CACHE=0 turns it off everywhere. */
static const char *cache_dir(const struct cl_ctx *c, const struct porta_backend_cfg *cfg)
{
    const char *env = getenv("PORTA_OPENCL_CACHE");
    if (env && strcmp(env, "0") == 0)
        return "";
    if (env && strcmp(env, "1") == 0)
        return cfg->cache_dir;
    if (strstr(c->dev.platform_name, "Portable Computing Language") ||
        strstr(c->dev.version, "PoCL")) {
        porta_dbg("opencl: PoCL caches its compiled kernels itself; porta's kernel cache is off");
        return "";
    }
    return cfg->cache_dir;
}

static int cl_open(struct porta_backend *be, const struct porta_backend_cfg *cfg)
{
    struct cl_ctx *c = calloc(1, sizeof *c);
    int rc;
    cl_int e;
    if (!c)
        return PORTA_E_NOMEM;
    be->ctx = c;
    if ((rc = cl_pick_device(cfg, &c->dev)))
        goto fail;
    char line[1024];
    cl_devinfo_line(&c->dev, line, sizeof line);
    porta_info("%s", line);
    cl_context_properties props[] = { CL_CONTEXT_PLATFORM, (cl_context_properties)c->dev.platform,
                                      0 };
    c->context = clCreateContext(props, 1, &c->dev.device, NULL, NULL, &e);
    CL_TRYF_E(e, "clCreateContext");
    c->prof = kops_env_int("PORTA_OPENCL_PROFILE", 0) != 0;
    c->queue = clCreateCommandQueue(c->context, c->dev.device,
                                    c->prof ? CL_QUEUE_PROFILING_ENABLE : 0, &e);
    CL_TRYF_E(e, "clCreateCommandQueue");
    const char *shapes = getenv("PORTA_OPENCL_SHAPES");
    c->cpu_shapes = shapes && *shapes ? strcmp(shapes, "cpu") == 0
                                      : (c->dev.type & CL_DEVICE_TYPE_CPU) != 0;
    pick_shapes(c, cfg->clblast, !cfg->opencl_no_row_packs);
    if ((size_t)c->kd.mm_lsz > c->dev.max_wg) {
        porta_err("opencl: device '%s' allows work-groups of %zu, the matmul tile needs %d",
                  c->dev.name, c->dev.max_wg, c->kd.mm_lsz);
        rc = PORTA_E_UNSUPPORTED;
        goto fail;
    }
    char opts[512];
    const char *extra = getenv("PORTA_OPENCL_BUILD_OPTS");   /* for tuning: appended */
    snprintf(opts, sizeof opts,
             "-cl-std=CL1.2 -DMM_TR=%d -DMM_TT=%d -DMM_MR=%d -DMM_MT=%d -DMM_TOK_CONTIG=%d "
             "-DMT_TOK=%d -DMRT_TOK=%d -DMV_ROWS=%d -DELT_PER=%d%s%s%.200s",
             c->mm.tr, c->mm.tt, c->mm.mr, c->mm.mt, c->mm.contig, c->kd.mt_tok, c->kd.mrt_tok,
             c->kd.mv_rows,
             c->kd.elt_per,
             c->cpu_shapes ? " -DPORTA_SOFT_HALF -DATT_DIM_CONTIG=1 -DMV_SOLO=1 -DROPE_ALL_HEADS=1"
                           : "",
             extra ? " " : "", extra ? extra : "");
    bool cached;
    double t0 = porta_time_s();
    if ((rc = cl_program_build(c->context, &c->dev, cfg->kernel_dir, cache_dir(c, cfg), opts,
                               &c->program, &cached)))
        goto fail;
    porta_info("opencl: kernels %s in %.2f s", cached ? "loaded from the cache" : "compiled",
               porta_time_s() - t0);
    if ((rc = kops_get_kernels(c, make_kernel)))
        goto fail;
    c->stage_cap = 1 << 16;
    c->stage_host = malloc(c->stage_cap);
    c->stage = clCreateBuffer(c->context, CL_MEM_READ_ONLY, c->stage_cap, NULL, &e);
    if (!c->stage_host) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    CL_TRYF_E(e, "clCreateBuffer");
    be->max_buf = (size_t)c->dev.max_alloc;
    snprintf(be->desc, sizeof be->desc, "opencl (%.200s%s%s)", c->dev.name,
             c->prefill == PF_CLBLAST ? ", CLBlast prefill" : "",
             c->kd.row_packs ? ", row packs" : "");
    return 0;
fail:
    cl_close(be);
    return rc;
}

/* ---- memory ---- */

static int cl_buf_alloc(struct porta_backend *be, size_t n, enum porta_buf_use use,
                        struct porta_buf **out)
{
    struct cl_ctx *c = be->ctx;
    *out = NULL;
    if (n > c->dev.max_alloc || c->allocated + n > c->dev.global_mem) {
        porta_err("opencl: cannot allocate %.1f MiB on '%s': %s (%.1f MiB in use of %.1f MiB, "
                  "largest buffer %.1f MiB)",
                  n / 1048576.0, c->dev.name,
                  n > c->dev.max_alloc ? "larger than the largest buffer" : "device memory full",
                  c->allocated / 1048576.0, c->dev.global_mem / 1048576.0,
                  c->dev.max_alloc / 1048576.0);
        return PORTA_E_NOMEM;
    }
    struct porta_buf *b = calloc(1, sizeof *b);
    if (!b)
        return PORTA_E_NOMEM;
    cl_int e;
    b->mem = clCreateBuffer(c->context, CL_MEM_READ_WRITE, n, NULL, &e);
    if (e != CL_SUCCESS) {
        free(b);
        porta_err("opencl: allocating %zu bytes on '%s': %s", n, c->dev.name, cl_errname(e));
        return cl_status(e);
    }
    b->size = n;
    c->allocated += n;
    *out = b;
    return 0;
}

static void cl_buf_free(struct porta_backend *be, struct porta_buf *b)
{
    struct cl_ctx *c = be->ctx;
    if (!b)
        return;
    kops_drop_packs(be, b, 0, 0);
    clReleaseMemObject(b->mem);   /* the driver keeps it until queued work is done */
    if (!b->wrapped)
        c->allocated -= b->size;
    free(b);
}

static size_t cl_buf_size(const struct porta_buf *b) { return b ? b->size : 0; }

/* Blocking, so src may be reused as soon as this returns. */
static int cl_upload(struct porta_backend *be, struct porta_buf *dst, size_t off, const void *src,
                     size_t n)
{
    struct cl_ctx *c = be->ctx;
    if (n)
        kops_drop_packs(be, dst, off, off + n);
    CL_TRY(clEnqueueWriteBuffer(c->queue, dst->mem, CL_TRUE, off, n, src, 0, NULL, NULL));
    return 0;
}

/* Blocking: dst holds the data (after all earlier work) when this returns. */
static int cl_download(struct porta_backend *be, void *dst, const struct porta_buf *src,
                       size_t off, size_t n)
{
    struct cl_ctx *c = be->ctx;
    CL_TRY(clEnqueueReadBuffer(c->queue, src->mem, CL_TRUE, off, n, dst, 0, NULL, NULL));
    return 0;
}

/* On a device that shares host memory (a CPU device such as PoCL) the buffer uses ptr in
 * place (zero-copy, read-only); elsewhere it is a device copy. ptr must outlive the buffer. */
static int cl_buf_wrap_host(struct porta_backend *be, const void *ptr, size_t n,
                            struct porta_buf **out)
{
    struct cl_ctx *c = be->ctx;
    *out = NULL;
    if (!(c->dev.type & CL_DEVICE_TYPE_CPU) || !c->dev.unified) {
        int rc = cl_buf_alloc(be, n, PORTA_BUF_WEIGHTS, out);
        if (rc == 0 && (rc = cl_upload(be, *out, 0, ptr, n))) {
            cl_buf_free(be, *out);
            *out = NULL;
        }
        return rc;
    }
    if (n > c->dev.max_alloc) {
        porta_err("opencl: cannot map %.1f MiB of host memory as one buffer: '%s' allows at most "
                  "%.1f MiB per buffer (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
                  n / 1048576.0, c->dev.name, c->dev.max_alloc / 1048576.0);
        return PORTA_E_NOMEM;
    }
    struct porta_buf *b = calloc(1, sizeof *b);
    if (!b)
        return PORTA_E_NOMEM;
    cl_int e;
    b->mem = clCreateBuffer(c->context, CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR, n, (void *)ptr,
                            &e);
    if (e != CL_SUCCESS) {
        free(b);
        porta_err("opencl: wrapping %zu bytes of host memory: %s", n, cl_errname(e));
        return cl_status(e);
    }
    b->size = n;
    b->wrapped = true;
    *out = b;
    return 0;
}

static int cl_synchronize(struct porta_backend *be)
{
    struct cl_ctx *c = be->ctx;
    CL_TRY(clFinish(c->queue));
    c->stage_used = 0;
    c->prof_syncs++;
    if (c->prof)
        prof_collect(c);
    return 0;
}

/* ---- the ops: backends/kops.c over this device, CLBlast here ---- */

#ifdef PORTA_HAVE_CLBLAST
/* y = x W^T with W dequantized to float in slices of rows that fit the scratch buffer. */
static int matmul_clblast(struct cl_ctx *c, struct porta_view y, const struct porta_weight *w,
                          struct porta_view x, int n_tok)
{
    uint64_t yo, xo, wo;
    int rc = kops_weight_off(&c->kd, w, &wo);
    if (rc)
        return rc;
    if (!kops_elem_off(&c->kd, y, 4, "matmul y", &yo) ||
        !kops_elem_off(&c->kd, x, 4, "matmul x", &xo))
        return PORTA_E_INVAL;
    size_t row_f = (size_t)w->n_cols * sizeof(float), want = 64u << 20;
    int rows = (int)(want / row_f);
    if (rows < 1)
        rows = 1;
    if (rows > w->n_rows)
        rows = (int)w->n_rows;
    size_t need = (size_t)rows * row_f;
    if (need > c->scratch.size) {
        cl_int e;
        if (c->scratch.mem)
            clReleaseMemObject(c->scratch.mem);
        c->scratch.mem = clCreateBuffer(c->context, CL_MEM_READ_WRITE, need, NULL, &e);
        c->scratch.size = c->scratch.mem ? need : 0;
        if (e != CL_SUCCESS)
            return cl_fail("clCreateBuffer", e, __FILE__, __LINE__);
    }
    int n_cols = (int)w->n_cols, units = n_cols / kops_type_sub(w->type);
    for (int r0 = 0; r0 < w->n_rows; r0 += rows) {
        int nr = (int)(w->n_rows - r0 < rows ? w->n_rows - r0 : rows);
        /* deq_<type>(out, out_off, w, w_off, row_bytes, n_cols, row0): rows r0.. as floats */
        struct kops_launch l = { .kernel = kops_typed_slot(KOPS_DEQ, w->type), .dims = 2,
                                 .groups = { ((size_t)units + 64) / 64, (size_t)nr, 1 },
                                 .lsz = 64, .any_lsz = true };
        kops_a_at(&l, &c->scratch, 0);
        kops_a_at(&l, w->buf, wo);
        kops_a_u64(&l, w->row_bytes);
        kops_a_i32(&l, n_cols);
        kops_a_i32(&l, r0);
        if ((rc = launch(c, &l)))
            return rc;
        CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo,
                                           CLBlastTransposeYes, (size_t)n_tok, (size_t)nr,
                                           (size_t)n_cols, 1.0f, x.buf->mem, xo, (size_t)n_cols,
                                           c->scratch.mem, 0, (size_t)n_cols, 0.0f, y.buf->mem,
                                           yo + (size_t)r0, (size_t)w->n_rows, &c->queue, NULL);
        if (s != CLBlastSuccess) {
            porta_err("opencl: CLBlastSgemm (%d x %d x %d) failed with status %d", n_tok, nr,
                      n_cols, (int)s);
            return PORTA_E_DEVICE;
        }
    }
    return 0;
}
#endif

static int cl_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                     struct porta_view x, int n_tok)
{
#ifdef PORTA_HAVE_CLBLAST
    struct cl_ctx *c = be->ctx;
    if (n_tok >= c->kd.mm_min_tok && c->prefill == PF_CLBLAST)
        return matmul_clblast(c, y, w, x, n_tok);
#endif
    return kops_matmul(be, y, w, x, n_tok);
}

const struct porta_backend_ops porta_backend_opencl = {
    .name = "opencl",
    .devices = cl_devices,
    .open = cl_open,
    .close = cl_close,
    .buf_alloc = cl_buf_alloc,
    .buf_wrap_host = cl_buf_wrap_host,
    .buf_free = cl_buf_free,
    .buf_size = cl_buf_size,
    .upload = cl_upload,
    .download = cl_download,
    .matmul = cl_matmul,
    .synchronize = cl_synchronize,
    KOPS_VTABLE_OPS,
};
