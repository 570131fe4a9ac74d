/* opencl.c - the OpenCL backend: one device, one in-order queue, buffers, and each op as a
 * launch of the shared kernels in kernels/cl (matvec for decode; for prefill a matvec over a
 * few tokens at a time on CPU devices, local-memory tiles on GPUs, or CLBlast). Host arrays
 * that kernels read (positions, ids, tables) are staged into a device ring whose host copy
 * lives until the next synchronize(). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_priv.h"
#include "quant.h"
#include "rope.h"

#ifdef PORTA_HAVE_CLBLAST
#include <clblast_c.h>
#endif

struct porta_buf {
    cl_mem mem;
    size_t size;
    bool wrapped;                   /* over host memory: not counted as device memory */
};

/* the weight types with kernels: kernel-name suffix and elements per unit (type_sub() in
 * kernels/cl/dequant.h: one work-item of emb_/deq_ decodes one unit) */
static const struct {
    enum porta_dtype type;
    const char *suffix;
    int sub;
} cl_types[] = {
    { PORTA_F32, "f32", 8 },    { PORTA_F16, "f16", 8 },    { PORTA_BF16, "bf16", 8 },
    { PORTA_Q4_0, "q4_0", 32 }, { PORTA_Q4_1, "q4_1", 32 }, { PORTA_Q5_0, "q5_0", 32 },
    { PORTA_Q5_1, "q5_1", 32 }, { PORTA_Q8_0, "q8_0", 32 }, { PORTA_Q2_K, "q2_k", 32 },
    { PORTA_Q3_K, "q3_k", 32 }, { PORTA_Q4_K, "q4_k", 32 }, { PORTA_Q5_K, "q5_k", 32 },
    { PORTA_Q6_K, "q6_k", 32 },
};
#define N_TYPES ((int)(sizeof cl_types / sizeof cl_types[0]))

/* matmul.cl's tile, passed to the compiler; the host sizes the grids with the same numbers */
struct mm_tile {
    int tr, tt, mr, mt, contig;
};
#define ATT_DPT 16       /* kernels/cl/attention.cl */
#define ATT_MAX_DK 1024
#define ATT_MAX_LSZ 256

/* how a product of many tokens runs */
enum prefill {
    PF_MV,          /* mv_<type>: one token per work-item (decode) */
    PF_MT,          /* mt_<type>: mt_tok tokens per work-item (CPU devices; few tokens) */
    PF_MM,          /* mm_<type>: local-memory tiles (GPUs) */
    PF_CLBLAST,     /* deq_<type> to float + CLBlast SGEMM */
};

struct type_kernels {
    cl_kernel mv, mt, mm, emb, deq, me;
};

#define PROF_NAME 48
#define PROF_ROWS 64

struct cl_ctx {
    struct cl_devinfo dev;
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    struct type_kernels tk[PORTA_DTYPE_COUNT];
    cl_kernel rmsnorm, eltwise, rope, kv_store[2], kv_attn[2], mla_store[2], mla_attn[2];
    cl_kernel moe_route;
    /* launch shapes, chosen per device type at open */
    bool cpu_shapes;                /* launch shapes for a CPU device (see pick_shapes) */
    int mv_lsz, mv_rows, norm_lsz, att_lsz, elt_lsz, mm_min_tok, mt_tok;
    int elt_per;                    /* eltwise.cl's ELT_PER */
    struct mm_tile mm;
    int mm_lsz;
    enum prefill prefill;           /* for n_tok >= mm_min_tok (below: mt, or mv for 1) */
    cl_mem scratch;                 /* dequantized weights for CLBlast */
    size_t scratch_cap;
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

static int type_index(enum porta_dtype t)
{
    for (int i = 0; i < N_TYPES; i++)
        if (cl_types[i].type == t)
            return i;
    return -1;
}

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

struct karg {
    size_t n;
    const void *p;
};
#define KA(v) ((struct karg){ sizeof(v), &(v) })
#define N_ARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int launch(struct cl_ctx *c, cl_kernel k, cl_uint dims, const size_t *gws,
                  const size_t *lws, const struct karg *a, int na)
{
    for (int i = 0; i < na; i++) {
        cl_int e = clSetKernelArg(k, (cl_uint)i, a[i].n, a[i].p);
        if (e != CL_SUCCESS) {
            char name[64] = "?";
            clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
            porta_err("opencl: kernel %s argument %d: %s", name, i, cl_errname(e));
            return PORTA_E_DEVICE;
        }
    }
    for (cl_uint d = 0; d < dims; d++)
        if (gws[d] == 0)
            return 0;
    cl_event *ev = prof_slot(c, k);
    cl_int e = clEnqueueNDRangeKernel(c->queue, k, dims, NULL, gws, lws, 0, NULL, ev);
    if (ev && e == CL_SUCCESS)
        c->prof_n++;
    if (e != CL_SUCCESS) {
        char name[64] = "?";
        clGetKernelInfo(k, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
        porta_err("opencl: launching %s (global %zu x %zu, local %zu): %s", name, gws[0],
                  dims > 1 ? gws[1] : 1, lws ? lws[0] : 0, cl_errname(e));
        return cl_status(e);
    }
    return 0;
}

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* Copies n bytes of host memory into the staging ring; *off gets their byte offset there.
 * The host copy is not reused before the queue has drained, so the non-blocking write is
 * safe however long the caller's array lives. */
static int stage(struct cl_ctx *c, const void *src, size_t n, cl_ulong *off)
{
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

/* An attention call's positions (and sequence ids when it has them) staged as int32 arrays;
 * *po and *so receive their element offsets in the staging buffer (*so 0 without seq). */
static int stage_pos_seq(struct cl_ctx *c, const struct porta_attn_params *p, cl_ulong *po,
                         cl_ulong *so)
{
    int rc;
    *so = 0;
    if ((rc = stage(c, p->pos, sizeof(int32_t) * (size_t)p->n_tok, po)))
        return rc;
    if (p->seq && (rc = stage(c, p->seq, sizeof(int32_t) * (size_t)p->n_tok, so)))
        return rc;
    *po /= 4;
    *so /= 4;
    return 0;
}

/* byte offset of a view as an element index of size es; false (logged) when misaligned */
static bool elem_off(struct porta_view v, size_t es, const char *what, cl_ulong *out)
{
    if (v.off % es) {
        porta_err("opencl: %s: byte offset %zu is not a multiple of %zu", what, v.off, es);
        return false;
    }
    *out = v.off / es;
    return true;
}

/* ---- open / close ---- */

static void cl_close(struct porta_backend *be)
{
    struct cl_ctx *c = be->ctx;
    if (!c)
        return;
    if (c->queue)
        clFinish(c->queue);
    if (c->prof) {
        prof_collect(c);
        prof_report(c);
        free(c->prof_ev);
    }
    for (int t = 0; t < PORTA_DTYPE_COUNT; t++) {
        cl_kernel *ks[] = { &c->tk[t].mv, &c->tk[t].mt, &c->tk[t].mm, &c->tk[t].emb,
                            &c->tk[t].deq, &c->tk[t].me };
        for (int i = 0; i < 6; i++)
            if (*ks[i])
                clReleaseKernel(*ks[i]);
    }
    cl_kernel ks[] = { c->rmsnorm,      c->eltwise,     c->rope,        c->kv_store[0],
                       c->kv_store[1],  c->kv_attn[0],  c->kv_attn[1],  c->mla_store[0],
                       c->mla_store[1], c->mla_attn[0], c->mla_attn[1], c->moe_route };
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
        if (ks[i])
            clReleaseKernel(ks[i]);
    if (c->scratch)
        clReleaseMemObject(c->scratch);
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

static int make_kernel(struct cl_ctx *c, const char *name, cl_kernel *out)
{
    cl_int e;
    *out = clCreateKernel(c->program, name, &e);
    if (e != CL_SUCCESS) {
        porta_err("opencl: kernel %s: %s", name, cl_errname(e));
        return PORTA_E_DEVICE;
    }
    return 0;
}

static int make_kernels(struct cl_ctx *c)
{
    static const char *const kinds[] = { "mv", "mt", "mm", "emb", "deq", "me" };
    char name[64];
    int rc;
    for (int i = 0; i < N_TYPES; i++) {
        struct type_kernels *k = &c->tk[cl_types[i].type];
        cl_kernel *slot[] = { &k->mv, &k->mt, &k->mm, &k->emb, &k->deq, &k->me };
        for (int j = 0; j < 6; j++) {
            snprintf(name, sizeof name, "%s_%s", kinds[j], cl_types[i].suffix);
            if ((rc = make_kernel(c, name, slot[j])))
                return rc;
        }
    }
    if ((rc = make_kernel(c, "rmsnorm", &c->rmsnorm)) ||
        (rc = make_kernel(c, "eltwise", &c->eltwise)) || (rc = make_kernel(c, "rope", &c->rope)) ||
        (rc = make_kernel(c, "kv_f32_store", &c->kv_store[0])) ||
        (rc = make_kernel(c, "kv_f16_store", &c->kv_store[1])) ||
        (rc = make_kernel(c, "kv_f32_attn", &c->kv_attn[0])) ||
        (rc = make_kernel(c, "kv_f16_attn", &c->kv_attn[1])) ||
        (rc = make_kernel(c, "mla_f32_store", &c->mla_store[0])) ||
        (rc = make_kernel(c, "mla_f16_store", &c->mla_store[1])) ||
        (rc = make_kernel(c, "mla_f32_attn", &c->mla_attn[0])) ||
        (rc = make_kernel(c, "mla_f16_attn", &c->mla_attn[1])) ||
        (rc = make_kernel(c, "moe_route", &c->moe_route)))
        return rc;
    return 0;
}

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);
    return s && *s ? atoi(s) : def;
}

/* Launch shapes per device type. CPU devices (PoCL) run a work-group per thread and loop
 * over its work-items, vectorizing only loops inside one work-item, and pay ~50 ns per
 * work-group and per barrier region: they want groups of whole rows without barriers
 * (matvec.cl's MV_SOLO), wide contiguous inner loops (eltwise.cl's ELT_PER), no repeated
 * libm calls (rope.cl's ROPE_ALL_HEADS) and the smallest attention group that covers the head.
 * Prefill on PoCL: mt_<type> with 16 tokens per work-item beats the tiled mm_<type> ~3x and
 * CLBlast (dequantize + SGEMM) ~3-4x (measured on 1536x576 and 4864x896 Q4 weights, 64 and
 * 256 tokens). GPUs want a wavefront or more per group and neighbouring work-items on
 * neighbouring data; their prefill GEMM is CLBlast's when it is built in and the config's
 * backend.opencl.clblast is on (the default; not measured on a GPU here: no GPU was lent),
 * else the tiled mm_<type>. PORTA_OPENCL_SHAPES=cpu|gpu picks either set on any device (the tests run
 * the GPU shapes on PoCL). For tuning, PORTA_OPENCL_MV_LSZ, _MV_ROWS, _MT_TOK, _MM_MIN_TOK,
 * _ATT_LSZ, _MM="tr,tt,mr,mt,contig" and _GEMM=mt|mm|clblast override the choice;
 * PORTA_OPENCL_BUILD_OPTS is appended to the compiler options and PORTA_OPENCL_PROFILE=1 logs
 * the device time per kernel at close. */
static void pick_shapes(struct cl_ctx *c, bool clblast)
{
    bool cpu = c->cpu_shapes;
    c->mv_lsz = cpu ? 16 : 64;
    c->norm_lsz = cpu ? 16 : 256;
    c->att_lsz = cpu ? 1 : 64;      /* grown to cover the head dim (att_lsz_for) */
    c->mm_min_tok = 16;             /* below: mt_<type>, one pass over W per mt_tok tokens */
    c->mt_tok = cpu ? 16 : 4;
    c->prefill = cpu ? PF_MT : PF_MM;
#ifdef PORTA_HAVE_CLBLAST
    if (clblast && !cpu)
        c->prefill = PF_CLBLAST;
#else
    (void)clblast;
#endif
    c->mm = cpu ? (struct mm_tile){ 64, 16, 8, 16, 1 } : (struct mm_tile){ 64, 32, 4, 4, 0 };
    c->mv_lsz = env_int("PORTA_OPENCL_MV_LSZ", c->mv_lsz);
    c->att_lsz = env_int("PORTA_OPENCL_ATT_LSZ", c->att_lsz);
    c->mm_min_tok = env_int("PORTA_OPENCL_MM_MIN_TOK", c->mm_min_tok);
    c->mt_tok = env_int("PORTA_OPENCL_MT_TOK", c->mt_tok);
    c->mv_rows = env_int("PORTA_OPENCL_MV_ROWS", 1);
    if (c->mt_tok < 1 || c->mt_tok > 16)
        c->mt_tok = cpu ? 16 : 4;
    const char *mm = getenv("PORTA_OPENCL_MM");
    struct mm_tile t;
    if (mm && sscanf(mm, "%d,%d,%d,%d,%d", &t.tr, &t.tt, &t.mr, &t.mt, &t.contig) == 5 &&
        t.mr > 0 && t.mt > 0 && t.tr % t.mr == 0 && t.tt % t.mt == 0)
        c->mm = t;
    c->mm_lsz = (c->mm.tr / c->mm.mr) * (c->mm.tt / c->mm.mt);
    size_t cap = c->dev.max_wg < 256 ? c->dev.max_wg : 256;
    c->elt_lsz = 64;
    c->elt_per = cpu ? 16 : 1;
    int *ls[] = { &c->mv_lsz, &c->norm_lsz, &c->att_lsz, &c->elt_lsz };
    for (int i = 0; i < 4; i++) {
        int v = 1;
        while (v * 2 <= *ls[i] && (size_t)(v * 2) <= cap)
            v *= 2;
        *ls[i] = v;
    }
    while (c->mv_rows > 1 && (c->mv_rows > c->mv_lsz || (c->mv_rows & (c->mv_rows - 1))))
        c->mv_rows--;                   /* a power of two, at most one row per work-item */
    if (c->mv_rows < 1)
        c->mv_rows = 1;
    if (cpu)
        c->mv_rows = c->mv_lsz;         /* matvec.cl's MV_SOLO: one row per work-item */
    const char *g = getenv("PORTA_OPENCL_GEMM");
    if (g && strcmp(g, "mt") == 0)
        c->prefill = PF_MT;
    else if (g && strcmp(g, "mm") == 0)
        c->prefill = PF_MM;
#ifdef PORTA_HAVE_CLBLAST
    else if (g && strcmp(g, "clblast") == 0)
        c->prefill = PF_CLBLAST;
#endif
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
    c->prof = env_int("PORTA_OPENCL_PROFILE", 0) != 0;
    c->queue = clCreateCommandQueue(c->context, c->dev.device,
                                    c->prof ? CL_QUEUE_PROFILING_ENABLE : 0, &e);
    CL_TRYF_E(e, "clCreateCommandQueue");
    const char *shapes = getenv("PORTA_OPENCL_SHAPES");
    c->cpu_shapes = shapes && *shapes ? strcmp(shapes, "cpu") == 0
                                      : (c->dev.type & CL_DEVICE_TYPE_CPU) != 0;
    pick_shapes(c, cfg->clblast);
    if ((size_t)c->mm_lsz > c->dev.max_wg) {
        porta_err("opencl: device '%s' allows work-groups of %zu, the matmul tile needs %d",
                  c->dev.name, c->dev.max_wg, c->mm_lsz);
        rc = PORTA_E_UNSUPPORTED;
        goto fail;
    }
    char opts[512];
    const char *extra = getenv("PORTA_OPENCL_BUILD_OPTS");   /* for tuning: appended */
    snprintf(opts, sizeof opts,
             "-cl-std=CL1.2 -DMM_TR=%d -DMM_TT=%d -DMM_MR=%d -DMM_MT=%d -DMM_TOK_CONTIG=%d "
             "-DMT_TOK=%d -DMV_ROWS=%d -DELT_PER=%d%s%s%.200s",
             c->mm.tr, c->mm.tt, c->mm.mr, c->mm.mt, c->mm.contig, c->mt_tok, c->mv_rows,
             c->elt_per,
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
    if ((rc = make_kernels(c)))
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
    snprintf(be->desc, sizeof be->desc, "opencl (%.200s%s)", c->dev.name,
             c->prefill == PF_CLBLAST ? ", CLBlast prefill" : "");
    return 0;
fail:
    cl_close(be);
    return rc;
}

static bool cl_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt)
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

/* ---- matmul ---- */

/* weight row 0 as a byte offset, checked for the kernels' aligned loads */
static bool weight_off(const struct porta_weight *w, cl_ulong *off)
{
    size_t align = w->type == PORTA_F32 ? 4 : 2;
    if (w->off % align) {
        porta_err("opencl: weight '%s' starts at byte %zu, not a multiple of %zu",
                  w->name ? w->name : "?", w->off, align);
        return false;
    }
    *off = w->off;
    return true;
}

#ifdef PORTA_HAVE_CLBLAST
/* y = x W^T with W dequantized to float in slices of rows that fit the scratch buffer. */
static int matmul_clblast(struct cl_ctx *c, struct porta_view y, const struct porta_weight *w,
                          cl_ulong w_off, struct porta_view x, int n_tok)
{
    size_t row_f = (size_t)w->n_cols * sizeof(float), want = 64u << 20;
    int rows = (int)(want / row_f);
    if (rows < 1)
        rows = 1;
    if (rows > w->n_rows)
        rows = (int)w->n_rows;
    size_t need = (size_t)rows * row_f;
    if (need > c->scratch_cap) {
        cl_int e;
        if (c->scratch)
            clReleaseMemObject(c->scratch);
        c->scratch = clCreateBuffer(c->context, CL_MEM_READ_WRITE, need, NULL, &e);
        c->scratch_cap = c->scratch ? need : 0;
        if (e != CL_SUCCESS)
            return cl_fail("clCreateBuffer", e, __FILE__, __LINE__);
    }
    cl_kernel k = c->tk[w->type].deq;
    cl_ulong zero = 0, row_bytes = w->row_bytes, xo = x.off / 4, yo = y.off / 4;
    int n_cols = (int)w->n_cols, units = n_cols / cl_types[type_index(w->type)].sub;
    for (int r0 = 0; r0 < w->n_rows; r0 += rows) {
        int nr = (int)(w->n_rows - r0 < rows ? w->n_rows - r0 : rows);
        size_t gws[2] = { round_up((size_t)units + 1, 64), (size_t)nr };
        struct karg a[] = { KA(c->scratch), KA(zero), KA(w->buf->mem), KA(w_off),
                            KA(row_bytes), KA(n_cols), KA(r0) };
        int rc = launch(c, k, 2, gws, NULL, a, N_ARGS(a));
        if (rc)
            return rc;
        CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo,
                                           CLBlastTransposeYes, (size_t)n_tok, (size_t)nr,
                                           (size_t)n_cols, 1.0f, x.buf->mem, xo, (size_t)n_cols,
                                           c->scratch, 0, (size_t)n_cols, 0.0f, y.buf->mem,
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
    struct cl_ctx *c = be->ctx;
    cl_ulong yo, xo, wo, row_bytes = w->row_bytes;
    if (type_index(w->type) < 0)
        return PORTA_E_UNSUPPORTED;
    if (!elem_off(y, 4, "matmul y", &yo) || !elem_off(x, 4, "matmul x", &xo) ||
        !weight_off(w, &wo))
        return PORTA_E_INVAL;
    if (w->n_rows > INT32_MAX || w->n_cols > INT32_MAX / 2) {
        porta_err("opencl: weight '%s' is too large for one launch", w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    int n_rows = (int)w->n_rows, n_cols = (int)w->n_cols;
    struct karg a[] = { KA(y.buf->mem), KA(yo), KA(w->buf->mem), KA(wo), KA(row_bytes),
                        KA(n_rows), KA(n_cols), KA(x.buf->mem), KA(xo), KA(n_tok) };
    enum prefill how = n_tok == 1 ? PF_MV : n_tok < c->mm_min_tok ? PF_MT : c->prefill;
    if (how == PF_MV || how == PF_MT) {
        int per = how == PF_MV ? 1 : c->mt_tok;
        size_t lws[2] = { (size_t)c->mv_lsz, 1 };
        size_t gws[2] = { (size_t)(n_rows + c->mv_rows - 1) / c->mv_rows * lws[0],
                          (size_t)((n_tok + per - 1) / per) };
        return launch(c, how == PF_MV ? c->tk[w->type].mv : c->tk[w->type].mt, 2, gws, lws, a,
                      N_ARGS(a));
    }
#ifdef PORTA_HAVE_CLBLAST
    if (how == PF_CLBLAST)
        return matmul_clblast(c, y, w, wo, x, n_tok);
#endif
    size_t lws[2] = { (size_t)c->mm_lsz, 1 };
    size_t gws[2] = { (size_t)(n_rows + c->mm.tr - 1) / c->mm.tr * lws[0],
                      (size_t)(n_tok + c->mm.tt - 1) / c->mm.tt };
    return launch(c, c->tk[w->type].mm, 2, gws, lws, a, N_ARGS(a));
}

/* ---- the other ops ---- */

static int cl_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                      struct porta_view w, int n_rows, int n, float eps)
{
    struct cl_ctx *c = be->ctx;
    cl_ulong yo, xo, wo = 0;
    if (!elem_off(y, 4, "rmsnorm y", &yo) || !elem_off(x, 4, "rmsnorm x", &xo) ||
        (w.buf && !elem_off(w, 4, "rmsnorm w", &wo)))
        return PORTA_E_INVAL;
    cl_int has_w = w.buf != NULL;
    cl_mem wm = w.buf ? w.buf->mem : x.buf->mem;
    size_t lws[2] = { (size_t)c->norm_lsz, 1 }, gws[2] = { lws[0], (size_t)n_rows };
    struct karg a[] = { KA(y.buf->mem), KA(yo), KA(x.buf->mem), KA(xo), KA(wm), KA(wo),
                        KA(has_w), KA(n), KA(eps) };
    return launch(c, c->rmsnorm, 2, gws, lws, a, N_ARGS(a));
}

static int cl_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                   int head_dim, const int32_t *pos, const struct porta_rope_params *p)
{
    struct cl_ctx *c = be->ctx;
    cl_ulong xo, po, to;
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
    float mscale = porta_rope_mscale(p);
    cl_int neox = p->style == PORTA_ROPE_NEOX, n_rot = p->n_rot;
    float fs = p->freq_scale;
    size_t l0 = half < c->elt_lsz ? (size_t)half : (size_t)c->elt_lsz;
    size_t lws[3] = { l0, 1, 1 };
    size_t gws[3] = { round_up((size_t)half, l0), c->cpu_shapes ? 1 : (size_t)n_head,
                      (size_t)n_tok };        /* CPU: ROPE_ALL_HEADS */
    struct karg a[] = { KA(x.buf->mem), KA(xo), KA(n_head), KA(head_dim), KA(n_rot), KA(neox),
                        KA(c->stage), KA(po), KA(c->stage), KA(to), KA(fs), KA(mscale) };
    return launch(c, c->rope, 3, gws, lws, a, N_ARGS(a));
}

/* the attention work-group size for these head dims (each work-item owns ATT_DPT output
 * dims), or -1 (logged) when the kernel cannot take them */
static int att_lsz_for(const struct cl_ctx *c, int dk, int dv)
{
    int lsz = c->att_lsz;
    while (lsz * ATT_DPT < dv && lsz < ATT_MAX_LSZ && (size_t)lsz * 2 <= c->dev.max_wg)
        lsz *= 2;
    if (dk > ATT_MAX_DK || dv > lsz * ATT_DPT) {
        porta_err("opencl: attention with head dims %d/%d is beyond the kernel's %d/%d", dk, dv,
                  ATT_MAX_DK, lsz * ATT_DPT);
        return -1;
    }
    return lsz;
}

static int cl_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                        struct porta_view k, struct porta_view v,
                        const struct porta_attn_params *p)
{
    struct cl_ctx *c = be->ctx;
    int f16 = p->kv_type == PORTA_F16, es = f16 ? 2 : 4, rc;
    cl_ulong oo, qo, ko, vo, kco, vco, po, so = 0;
    if (!elem_off(out, 4, "attention out", &oo) || !elem_off(q, 4, "attention q", &qo) ||
        !elem_off(k, 4, "attention k", &ko) || !elem_off(v, 4, "attention v", &vo) ||
        !elem_off(p->k_cache, (size_t)es, "attention k_cache", &kco) ||
        !elem_off(p->v_cache, (size_t)es, "attention v_cache", &vco))
        return PORTA_E_INVAL;
    int lsz = att_lsz_for(c, p->head_dim_k, p->head_dim_v);
    if (lsz < 0)
        return PORTA_E_UNSUPPORTED;
    if ((rc = stage_pos_seq(c, p, &po, &so)))
        return rc;
    cl_int has_seq = p->seq != NULL, nh = p->n_head, nkv = p->n_head_kv, dk = p->head_dim_k,
           dv = p->head_dim_v, n_ctx = p->n_ctx;
    float scale = p->scale;
    int wide = nkv * (dk > dv ? dk : dv);
    size_t gs[2] = { round_up((size_t)wide, 64), (size_t)p->n_tok };
    struct karg as[] = { KA(p->k_cache.buf->mem), KA(kco), KA(p->v_cache.buf->mem), KA(vco),
                         KA(k.buf->mem), KA(ko), KA(v.buf->mem), KA(vo), KA(c->stage), KA(po),
                         KA(c->stage), KA(so), KA(has_seq), KA(nkv), KA(dk), KA(dv), KA(n_ctx) };
    if ((rc = launch(c, c->kv_store[f16], 2, gs, NULL, as, N_ARGS(as))))
        return rc;
    size_t lws[2] = { (size_t)lsz, 1 }, gws[2] = { (size_t)nh * lsz, (size_t)p->n_tok };
    struct karg aa[] = { KA(out.buf->mem), KA(oo), KA(q.buf->mem), KA(qo),
                         KA(p->k_cache.buf->mem), KA(kco), KA(p->v_cache.buf->mem), KA(vco),
                         KA(c->stage), KA(po), KA(c->stage), KA(so), KA(has_seq), KA(nh), KA(nkv),
                         KA(dk), KA(dv), KA(n_ctx), KA(scale) };
    return launch(c, c->kv_attn[f16], 2, gws, lws, aa, N_ARGS(aa));
}

static int cl_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                      struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s)
{
    struct cl_ctx *c = be->ctx;
    cl_ulong yo, ao, bo = 0;
    bool binary = op == PORTA_ELT_ADD || op == PORTA_ELT_MUL || op == PORTA_ELT_SWIGLU;
    if (!elem_off(y, 4, "eltwise y", &yo) || !elem_off(a, 4, "eltwise a", &ao) ||
        (binary && !elem_off(b, 4, "eltwise b", &bo)))
        return PORTA_E_INVAL;
    if (n > INT32_MAX) {
        porta_err("opencl: eltwise over %lld elements is too large for one launch", (long long)n);
        return PORTA_E_UNSUPPORTED;
    }
    cl_int opi = (cl_int)op, ni = (cl_int)n, nbi = binary ? (cl_int)nb : 1;
    cl_mem bm = binary ? b.buf->mem : a.buf->mem;
    size_t lws = (size_t)c->elt_lsz;
    size_t gws = round_up(((size_t)n + c->elt_per - 1) / c->elt_per, lws);
    struct karg k[] = { KA(opi), KA(y.buf->mem), KA(yo), KA(a.buf->mem), KA(ao), KA(bm), KA(bo),
                        KA(ni), KA(nbi), KA(s) };
    return launch(c, c->eltwise, 1, &gws, &lws, k, N_ARGS(k));
}

static int cl_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                    const int32_t *ids, int n_tok)
{
    struct cl_ctx *c = be->ctx;
    cl_ulong yo, wo, io, row_bytes = w->row_bytes;
    if (type_index(w->type) < 0)
        return PORTA_E_UNSUPPORTED;
    if (!elem_off(y, 4, "embed y", &yo) || !weight_off(w, &wo))
        return PORTA_E_INVAL;
    if (w->n_cols > INT32_MAX / 2) {
        porta_err("opencl: weight '%s' is too large for one launch", w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    for (int t = 0; t < n_tok; t++)
        if (ids[t] < 0 || ids[t] >= w->n_rows) {
            porta_err("opencl: token id %d outside '%s'", ids[t], w->name ? w->name : "?");
            return PORTA_E_RANGE;
        }
    int rc = stage(c, ids, sizeof(int32_t) * (size_t)n_tok, &io);
    if (rc)
        return rc;
    io /= 4;
    cl_int n_cols = (cl_int)w->n_cols;
    size_t units = (size_t)n_cols / (size_t)cl_types[type_index(w->type)].sub;
    size_t lws[2] = { (size_t)c->elt_lsz, 1 };
    size_t gws[2] = { round_up(units + 1, lws[0]), (size_t)n_tok };
    struct karg a[] = { KA(y.buf->mem), KA(yo), KA(w->buf->mem), KA(wo), KA(row_bytes),
                        KA(n_cols), KA(c->stage), KA(io) };
    return launch(c, c->tk[w->type].emb, 2, gws, lws, a, N_ARGS(a));
}

/* ---- mixture of experts ---- */

static int cl_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                        struct porta_view logits, const struct porta_route_params *p)
{
    struct cl_ctx *c = be->ctx;
    cl_ulong io, wo, lo, bo = 0;
    if (!elem_off(ids, 4, "moe_route ids", &io) ||
        !elem_off(weights, 4, "moe_route weights", &wo) ||
        !elem_off(logits, 4, "moe_route logits", &lo) ||
        (p->bias.buf && !elem_off(p->bias, 4, "moe_route bias", &bo)))
        return PORTA_E_INVAL;
    if (p->n_expert > 2048) {       /* MOE_MAX_EXPERT in kernels/cl/moe.cl */
        porta_err("opencl: moe_route over %d experts is beyond the kernel's 2048", p->n_expert);
        return PORTA_E_UNSUPPORTED;
    }
    cl_int has_bias = p->bias.buf != NULL, n_tok = p->n_tok, n_expert = p->n_expert, k = p->k,
           softmax = p->gating == PORTA_GATING_SOFTMAX, norm = p->norm, n_group = p->n_group,
           topk_group = p->topk_group;
    float scale = p->scale;
    cl_mem bm = p->bias.buf ? p->bias.buf->mem : logits.buf->mem;
    size_t lws = (size_t)c->elt_lsz, gws = round_up((size_t)n_tok, lws);
    struct karg a[] = { KA(ids.buf->mem), KA(io), KA(weights.buf->mem), KA(wo),
                        KA(logits.buf->mem), KA(lo), KA(bm), KA(bo), KA(has_bias), KA(n_tok),
                        KA(n_expert), KA(k), KA(softmax), KA(norm), KA(scale), KA(n_group),
                        KA(topk_group) };
    return launch(c, c->moe_route, 1, &gws, &lws, a, N_ARGS(a));
}

/* One work-group per (row, token) walks the token's k slots; the matrices are read per token
 * (decode reads each chosen matrix once; a prefill re-reads a matrix for every token that
 * chose it). */
static int cl_matmul_experts(struct porta_backend *be, struct porta_view y,
                             const struct porta_weight *w, struct porta_view x,
                             const struct porta_experts_params *p)
{
    struct cl_ctx *c = be->ctx;
    cl_ulong yo, xo, wo, io = 0, so = 0, row_bytes = w->row_bytes;
    cl_ulong stride = porta_weight_mat_stride(w);
    if (type_index(w->type) < 0)
        return PORTA_E_UNSUPPORTED;
    if (!elem_off(y, 4, "matmul_experts y", &yo) || !elem_off(x, 4, "matmul_experts x", &xo) ||
        !weight_off(w, &wo) || stride % (w->type == PORTA_F32 ? 4 : 2) ||
        (p->ids.buf && !elem_off(p->ids, 4, "matmul_experts ids", &io)) ||
        (p->weights.buf && !elem_off(p->weights, 4, "matmul_experts weights", &so)))
        return PORTA_E_INVAL;
    if (w->n_rows > INT32_MAX || w->n_cols > INT32_MAX / 2 || w->n_mat > INT32_MAX) {
        porta_err("opencl: weight '%s' is too large for one launch", w->name ? w->name : "?");
        return PORTA_E_UNSUPPORTED;
    }
    cl_int n_mat = (cl_int)w->n_mat, n_rows = (cl_int)w->n_rows, n_cols = (cl_int)w->n_cols,
           x_per_slot = p->x_per_slot, has_ids = p->ids.buf != NULL,
           has_wts = p->weights.buf != NULL, k = p->k;
    cl_mem im = has_ids ? p->ids.buf->mem : x.buf->mem;
    cl_mem sm = has_wts ? p->weights.buf->mem : x.buf->mem;
    size_t lws[2] = { (size_t)c->mv_lsz, 1 };
    size_t gws[2] = { (size_t)(n_rows + c->mv_rows - 1) / c->mv_rows * lws[0],
                      (size_t)p->n_tok };
    struct karg a[] = { KA(y.buf->mem), KA(yo), KA(w->buf->mem), KA(wo), KA(row_bytes),
                        KA(stride), KA(n_mat), KA(n_rows), KA(n_cols), KA(x.buf->mem), KA(xo),
                        KA(x_per_slot), KA(im), KA(io), KA(has_ids), KA(sm), KA(so), KA(has_wts),
                        KA(k) };
    return launch(c, c->tk[w->type].me, 2, gws, lws, a, N_ARGS(a));
}

/* ---- multi-head latent attention ---- */

static int cl_attention_mla(struct porta_backend *be, struct porta_view out,
                            struct porta_view q_lat, struct porta_view q_rope,
                            struct porta_view kv_lat, struct porta_view k_rope,
                            const struct porta_attn_params *p)
{
    struct cl_ctx *c = be->ctx;
    int f16 = p->kv_type == PORTA_F16, es = f16 ? 2 : 4, rc;
    cl_ulong oo, qlo, qro, klo, kro, kco, po, so = 0;
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
    if ((rc = stage_pos_seq(c, p, &po, &so)))
        return rc;
    cl_int has_seq = p->seq != NULL, nh = p->n_head, lat = p->head_dim_v, dk = p->head_dim_k,
           n_ctx = p->n_ctx;
    float scale = p->scale;
    cl_mem kc = p->k_cache.buf->mem;
    size_t gs[2] = { round_up((size_t)dk, 64), (size_t)p->n_tok };
    struct karg as[] = { KA(kc), KA(kco), KA(kv_lat.buf->mem), KA(klo), KA(k_rope.buf->mem),
                         KA(kro), KA(c->stage), KA(po), KA(c->stage), KA(so), KA(has_seq),
                         KA(lat), KA(dk), KA(n_ctx) };
    if ((rc = launch(c, c->mla_store[f16], 2, gs, NULL, as, N_ARGS(as))))
        return rc;
    size_t lws[2] = { (size_t)lsz, 1 }, gws[2] = { (size_t)nh * lsz, (size_t)p->n_tok };
    struct karg aa[] = { KA(out.buf->mem), KA(oo), KA(q_lat.buf->mem), KA(qlo),
                         KA(q_rope.buf->mem), KA(qro), KA(kc), KA(kco), KA(c->stage), KA(po),
                         KA(c->stage), KA(so), KA(has_seq), KA(nh), KA(lat), KA(dk), KA(n_ctx),
                         KA(scale) };
    return launch(c, c->mla_attn[f16], 2, gws, lws, aa, N_ARGS(aa));
}

const struct porta_backend_ops porta_backend_opencl = {
    .name = "opencl",
    .devices = cl_devices,
    .open = cl_open,
    .close = cl_close,
    .supports = cl_supports,
    .buf_alloc = cl_buf_alloc,
    .buf_wrap_host = cl_buf_wrap_host,
    .buf_free = cl_buf_free,
    .buf_size = cl_buf_size,
    .upload = cl_upload,
    .download = cl_download,
    .matmul = cl_matmul,
    .rmsnorm = cl_rmsnorm,
    .rope = cl_rope,
    .attention = cl_attention,
    .eltwise = cl_eltwise,
    .embed = cl_embed,
    .moe_route = cl_moe_route,
    .matmul_experts = cl_matmul_experts,
    .attention_mla = cl_attention_mla,
    .synchronize = cl_synchronize,
};
