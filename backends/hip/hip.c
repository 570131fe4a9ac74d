/* hip.c - the HIP backend: one GPU running the kernels of kernels/cl, compiled by hipcc (or by
 * nvcc through hip_cuda.h) and embedded at build time, loaded with hipModuleLoadData. The ops
 * are backends/kops.c's launches, as for the OpenCL backend (the kernels are shared, so are
 * their grids and arguments); this file launches them and moves memory. Two streams:
 * kernels, staged host arrays and downloads run in order on one; uploads go through a pinned
 * bounce ring on the other, ordered against the kernels by events, so the host returns once
 * its bytes are copied and a large upload overlaps the host copy of one slice with the DMA of
 * the previous. */
#include <stdlib.h>
#include <string.h>

#include "hip_priv.h"
#include "backends/kops.h"

/* The kernels' compile-time shapes: the Makefile passes the same -D flags (HIP_KDEFS) to
 * hipcc/nvcc and to this file, so the grids below always match the compiled tiles. */
#if !defined(MM_TR) || !defined(MM_TT) || !defined(MM_MR) || !defined(MM_MT) || !defined(MT_TOK) \
    || !defined(MV_ROWS)
#error "build backends/hip through the Makefile: it passes the kernel shapes (HIP_KDEFS)"
#endif
#define MM_LSZ ((MM_TR / MM_MR) * (MM_TT / MM_MT))
#define MV_MAX_LSZ 256          /* kernels/cl/matvec.cl */
#define NORM_MAX_LSZ 256        /* kernels/cl/norm.cl */
#define ATT_MAX_LSZ 256         /* kernels/cl/attention.cl */

#define N_SLOTS 4               /* upload bounce ring: slots of SLOT_BYTES pinned host memory */
#define SLOT_BYTES ((size_t)4 << 20)

struct porta_buf {
    void *ptr;                  /* device memory */
    size_t size;
};

struct kern {
    hipFunction_t f;
    char name[24];              /* for messages */
};

struct hip_ctx {
    struct kops_dev kd;         /* first (KOPS_DEV): the ops of backends/kops.c on this device */
    struct hip_devinfo dev;
    hipModule_t module;
    hipStream_t stream;         /* kernels, staging, downloads */
    hipStream_t copy;           /* uploads */
    hipEvent_t kernels_done;    /* recorded on stream before an upload: the copy waits for it */
    hipEvent_t upload_done;     /* recorded on copy after an upload: stream waits for it */
    hipEvent_t slot_free[N_SLOTS];
    unsigned char *bounce;      /* pinned, N_SLOTS * SLOT_BYTES */
    int next_slot;
    struct kern k[KOPS_N_KERNELS];
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

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* ---- launching ---- */

/* kops_dev.launch: l's grid of blocks of l->lsz threads, its arguments converted to the
 * kernel's exact types (buffers as device pointers). An empty grid launches nothing. */
static int launch(void *ctx, const struct kops_launch *l)
{
    struct hip_ctx *c = ctx;
    const struct kern *k = &c->k[l->kernel];
    size_t gx = l->groups[0], gy = l->dims > 1 ? l->groups[1] : 1,
           gz = l->dims > 2 ? l->groups[2] : 1;
    unsigned block = (unsigned)l->lsz;
    if (gx == 0 || gy == 0 || gz == 0)
        return 0;
    union {
        void *p;
        uint64_t u64;
        int32_t i32;
        float f32;
    } val[KOPS_MAX_ARGS];
    void *args[KOPS_MAX_ARGS];
    for (int i = 0; i < l->na; i++) {
        const struct kops_arg *a = &l->a[i];
        switch (a->kind) {
        case KOPS_BUF: val[i].p = a->v.buf->ptr; break;
        case KOPS_STAGE: val[i].p = c->stage_dev; break;
        case KOPS_U64: val[i].u64 = a->v.u64; break;
        case KOPS_I32: val[i].i32 = a->v.i32; break;
        case KOPS_F32: val[i].f32 = a->v.f32; break;
        }
        args[i] = &val[i];
    }
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

/* kops_dev.stage: n bytes of host memory into the staging ring; *off gets their byte offset
 * there. The pinned host copy is not reused before the stream has drained, so the
 * asynchronous copy is safe however long the caller's array lives. */
static int stage(void *ctx, const void *src, size_t n, uint64_t *off)
{
    struct hip_ctx *c = ctx;
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

/* ---- open / close ---- */

static void hip_close(struct porta_backend *be)
{
    struct hip_ctx *c = be->ctx;
    if (!c)
        return;
    kops_close(be);
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

/* kops_get_kernels' callback: kernel slot from the loaded code object */
static int get_kernel(void *ctx, int slot, const char *name)
{
    struct hip_ctx *c = ctx;
    struct kern *k = &c->k[slot];
    snprintf(k->name, sizeof k->name, "%s", name);
    hipError_t e = hip_rt.hipModuleGetFunction(&k->f, c->module, name);
    if (e != hipSuccess) {
        porta_err("hip: kernel %s is not in the code object: %s", name, hip_errname(e));
        return PORTA_E_DEVICE;
    }
    return 0;
}

/* The OpenCL backend's GPU launch shapes (a wavefront or more per block, neighbouring threads
 * on neighbouring data; nothing depends on the wave size). For tuning, PORTA_HIP_MV_LSZ and
 * PORTA_HIP_MM_MIN_TOK override the matvec block size and the token count from which prefill
 * uses the tiled matmul. */
static void pick_shapes(struct hip_ctx *c)
{
    struct kops_dev *d = &c->kd;
    int max_lsz = c->dev.prop.maxThreadsPerBlock;
    *d = (struct kops_dev){
        .name = "hip", .ctx = c, .launch = launch, .stage = stage, .max_lsz = max_lsz,
        .max_rows = (size_t)c->dev.prop.maxGridSize[1], .mv_rows = MV_ROWS, .mt_tok = MT_TOK,
        .prefill_mm = true, .mm_tr = MM_TR, .mm_tt = MM_TT, .mm_lsz = MM_LSZ, .elt_per = 1,
    };
    d->mv_lsz = kops_env_int("PORTA_HIP_MV_LSZ", 64);
    d->mm_min_tok = kops_env_int("PORTA_HIP_MM_MIN_TOK", 16);
    d->norm_lsz = 256;
    d->att_lsz = 64;
    d->elt_lsz = 64;
    int *ls[] = { &d->mv_lsz, &d->norm_lsz, &d->att_lsz, &d->elt_lsz };
    const int kmax[] = { MV_MAX_LSZ, NORM_MAX_LSZ, ATT_MAX_LSZ, 1024 };  /* local arrays */
    for (int i = 0; i < 4; i++) {       /* powers of two: the kernels reduce by halving */
        int cap = kmax[i] < max_lsz ? kmax[i] : max_lsz;
        int v = 1;
        while (v * 2 <= *ls[i] && v * 2 <= cap)
            v *= 2;
        *ls[i] = v;
    }
    if (d->mv_lsz < MV_ROWS)
        d->mv_lsz = MV_ROWS;
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
    if ((rc = kops_get_kernels(c, get_kernel)))
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
    kops_drop_packs(be, b, 0, 0);
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
    if (n)
        kops_drop_packs(be, dst, off, off + n);
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

/* ---- the ops: backends/kops.c over this device ---- */

const struct porta_backend_ops porta_backend_hip = {
    .name = "hip",
    .devices = hip_devices,
    .open = hip_open,
    .close = hip_close,
    .buf_alloc = hip_buf_alloc,
    .buf_free = hip_buf_free,
    .buf_size = hip_buf_size,
    .upload = hip_upload,
    .download = hip_download,
    .matmul = kops_matmul,
    .synchronize = hip_synchronize,
    KOPS_VTABLE_OPS,
};
