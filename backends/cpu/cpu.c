/* cpu.c - the CPU backend: host buffers (weights are zero-copy views of the mmap'd model),
 * a persistent thread pool, and the ops, which call the kernel table chosen at open time
 * (scalar, AVX2 or AVX-512; see kernels.h). Matrices with a tile kernel are repacked on first
 * use (repack.h) into 2 MB-page arenas; tile matmuls are queued and run together when they
 * share an input (q/k/v, gate/up), every other op running the queue first, each thread
 * streaming its own part of the job, whose start it prefetched while it waited for the job
 * (the matrices come in the same order every token). PORTA_CPU_REPACK=0
 * keeps the row-by-row vec_dot path; PORTA_CPU_PROFILE=1 logs time per op at close. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_ops.h"
#include "kernels.h"
#include "amx.h"
#include "quant.h"
#include "ref.h"
#include "threads.h"

struct porta_buf {
    size_t size;
    uint8_t *data;
    bool owned;
};

/* Repacked matrices live in arenas of 2 MB pages, one after the other in the order they are
 * first used (the order decode streams them in); an arena is freed with its last pack. */
#define ARENA_BYTES ((size_t)64 << 20)
#define PF_SLOTS 8                  /* threads that prefetch their part of the next matmul job */
#define HUGE_PAGE ((size_t)2 << 20)

struct arena {
    uint8_t *base;
    size_t size, used;
    int live;                       /* packs in it */
    struct arena *next;
};

/* A weight matrix repacked for the tile kernels (repack.h), made on its first matmul. */
struct pack {
    struct arena *arena;
    const uint8_t *src;             /* the matrix's row 0: the key */
    const struct porta_buf *buf;    /* the buffer src lies in (an upload to it or its free drops
                                     * the pack) */
    enum porta_dtype type;
    int64_t n_rows, n_cols;
    size_t group_bytes;
    uint8_t *data;                  /* ceil(n_rows / 16) groups */
    /* where threads 0..PF_SLOTS-1 start in the matmul job this matrix comes first in, as last
     * run: the idle-time prefetch (porta_pool_prefetch) before that job */
    const uint8_t *pf_at[PF_SLOTS];
    size_t pf_len[PF_SLOTS];
};

/* PORTA_CPU_PROFILE=1: wall time per op kind and per matrix shape, logged at close */
enum prof_kind { PROF_MATMUL, PROF_ATTN, PROF_NORM, PROF_ROPE, PROF_ELT, PROF_EMBED, PROF_N };
#define PROF_SHAPES 24

struct prof {
    double repack_sec;              /* time spent repacking, kept out of the matmul times */
    double sec[PROF_N];
    long n[PROF_N];
    struct { enum porta_dtype type; int64_t rows, cols; int n_tok; long n; double sec, bytes; }
        shape[PROF_SHAPES];
    int n_shapes;
};

struct cpu_ctx {
    struct porta_cpu_kernels k;     /* complete: no NULL entry for a supported type */
    struct prof *prof;              /* NULL unless PORTA_CPU_PROFILE is set */
    struct porta_pool *pool;
    uint8_t *act;                   /* quantized activations of the current matmul */
    size_t act_cap;
    float *scores;                  /* attention: n_threads rows of n_ctx floats */
    size_t scores_cap;
    bool repack;                    /* use the tile kernels (PORTA_CPU_REPACK=0: vec_dot only) */
    struct pack *packs;
    int n_packs, cap_packs, hint;   /* hint: where the next lookup starts (matmul order repeats) */
    size_t pack_bytes;
    struct arena *arenas;           /* the last one made first: packs are cut from its end */
    struct gemm_job *batch;         /* tile matmuls queued until the next other op */
};

static void flush(struct cpu_ctx *c);
static struct gemm_job *batch_new(int nth);
static void batch_free(struct gemm_job *j);

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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void prof_add(struct cpu_ctx *c, enum prof_kind k, double t0)
{
    c->prof->sec[k] += now_s() - t0;
    c->prof->n[k]++;
}

/* one job of n_mat matmuls (the first: type x rows x cols), bytes of weights in all */
static void prof_matmul(struct cpu_ctx *c, enum porta_dtype type, int64_t rows, int64_t cols,
                        int n_mat, int n_tok, double bytes, double t0)
{
    struct prof *p = c->prof;
    double dt = now_s() - t0;
    p->sec[PROF_MATMUL] += dt;
    p->n[PROF_MATMUL]++;
    int i = 0;
    rows = rows * 16 + n_mat;       /* the key: a batch of 3 differs from one matrix */
    while (i < p->n_shapes && !(p->shape[i].type == type && p->shape[i].rows == rows &&
                                p->shape[i].cols == cols && p->shape[i].n_tok == n_tok))
        i++;
    if (i == PROF_SHAPES)
        return;
    if (i == p->n_shapes) {
        p->n_shapes++;
        p->shape[i].type = type;
        p->shape[i].rows = rows;
        p->shape[i].cols = cols;
        p->shape[i].n_tok = n_tok;
    }
    p->shape[i].n++;
    p->shape[i].sec += dt;
    p->shape[i].bytes += bytes;
}

static void prof_report(const struct prof *p)
{
    static const char *names[PROF_N] = { "matmul", "attention", "rmsnorm", "rope", "eltwise",
                                         "embed" };
    double tot = 0;
    for (int k = 0; k < PROF_N; k++)
        tot += p->sec[k];
    porta_info("cpu profile: %.3f s in ops (and %.3f s repacking weights)", tot, p->repack_sec);
    for (int k = 0; k < PROF_N; k++)
        if (p->n[k])
            porta_info("cpu profile: %-9s %8ld calls %8.3f s %5.1f%%", names[k], p->n[k],
                       p->sec[k], 100.0 * p->sec[k] / tot);
    for (int i = 0; i < p->n_shapes; i++)
        porta_info("cpu profile: %d matmul(s), first %-5s %6lld x %6lld, %4d tok: %7ld jobs %7.3f s"
                   " %6.2f GB/s %7.1f us/job", (int)(p->shape[i].rows % 16),
                   porta_dtype_name(p->shape[i].type), (long long)(p->shape[i].rows / 16),
                   (long long)p->shape[i].cols, p->shape[i].n_tok, p->shape[i].n, p->shape[i].sec,
                   p->shape[i].bytes / p->shape[i].sec / 1e9, 1e6 * p->shape[i].sec / p->shape[i].n);
}

static void cpu_close(struct porta_backend *be)
{
    struct cpu_ctx *c = be->ctx;
    if (!c)
        return;
    if (c->prof) {
        prof_report(c->prof);
        free(c->prof);
    }
    porta_pool_destroy(c->pool);
    while (c->arenas) {
        struct arena *a = c->arenas;
        c->arenas = a->next;
        free(a->base);
        free(a);
    }
    free(c->packs);
    batch_free(c->batch);
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
    c->batch = batch_new(porta_pool_size(c->pool));
    if (!c->batch) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    const char *pe = getenv("PORTA_CPU_PROFILE");
    if (pe && *pe && strcmp(pe, "0") != 0)
        c->prof = calloc(1, sizeof *c->prof);
    const char *rp = getenv("PORTA_CPU_REPACK");
    c->repack = !(rp && strcmp(rp, "0") == 0);
    /* AMX for the AVX-512 set's prefill tiles, where the CPU and OS allow it (PORTA_CPU_AMX=0:
     * off; a process-wide switch, see amx.h) */
    const char *ax = getenv("PORTA_CPU_AMX");
    porta_amx_use(!cfg->cpu_no_amx && !(ax && strcmp(ax, "0") == 0));
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
    /* the KV cache in 2 MB pages: decode reads a few rows of every layer's K and V for each
     * position, and with 4 KB pages a long context costs a page walk every few rows */
    bool huge = use == PORTA_BUF_KV && n >= HUGE_PAGE;
    size_t align = huge ? HUGE_PAGE : 64, cap = (n + align - 1) & ~(align - 1);
    if (!b || cap < n || !(b->data = aligned_alloc(align, cap))) {
        free(b);
        porta_err("cpu: out of memory allocating %zu bytes", n);
        return PORTA_E_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    if (huge)
        madvise(b->data, cap, MADV_HUGEPAGE);
#endif
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

static void arena_release(struct cpu_ctx *c, struct arena *a);

/* Drops the packs made from buf (all of them when lo == hi == 0, else those whose rows
 * overlap [lo, hi) of it). */
static void drop_packs(struct cpu_ctx *c, const struct porta_buf *b, size_t lo, size_t hi)
{
    for (int s = 0; s < porta_pool_size(c->pool); s++)
        porta_pool_prefetch(c->pool, s, NULL, 0);   /* it may name a pack dropped here */
    for (int i = 0; i < c->n_packs;) {
        struct pack *pk = &c->packs[i];
        size_t off = pk->buf == b ? (size_t)(pk->src - b->data) : 0;
        size_t len = pk->group_bytes / PORTA_GEMM_ROWS * (size_t)pk->n_rows;
        if (pk->buf == b && (hi == lo || (off < hi && lo < off + len))) {
            c->pack_bytes -= pk->group_bytes * (size_t)((pk->n_rows + 15) / 16);
            arena_release(c, pk->arena);
            *pk = c->packs[--c->n_packs];
        } else {
            i++;
        }
    }
}

static void cpu_buf_free(struct porta_backend *be, struct porta_buf *b)
{
    flush(be->ctx);
    drop_packs(be->ctx, b, 0, 0);
    if (b->owned)
        free(b->data);
    free(b);
}

static size_t cpu_buf_size(const struct porta_buf *b) { return b->size; }

static int cpu_upload(struct porta_backend *be, struct porta_buf *dst, size_t off, const void *src,
                      size_t n)
{
    flush(be->ctx);
    if (n)
        drop_packs(be->ctx, dst, off, off + n);
    memcpy(dst->data + off, src, n);
    return 0;
}

static int cpu_download(struct porta_backend *be, void *dst, const struct porta_buf *src,
                        size_t off, size_t n)
{
    flush(be->ctx);
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

/* Tasks per thread for the row-parallel loops: enough that a thread the OS deschedules holds
 * back little, few enough that taking one costs nothing. */
#define TASKS_PER_THREAD 8

static int64_t per_task(int64_t n, int nth)
{
    int64_t want = (int64_t)nth * TASKS_PER_THREAD, per = (n + want - 1) / want;
    return per > 0 ? per : 1;
}

/* bytes for a pack, 64-aligned, from the newest arena (a new one when it is full). NULL when
 * out of memory. */
static uint8_t *arena_take(struct cpu_ctx *c, size_t bytes, struct arena **from)
{
    bytes = (bytes + 63) & ~(size_t)63;
    struct arena *a = c->arenas;
    if (!a || a->size - a->used < bytes) {
        size_t size = bytes > ARENA_BYTES ? (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1) : ARENA_BYTES;
        a = calloc(1, sizeof *a);
        if (!a || !(a->base = aligned_alloc(HUGE_PAGE, size))) {
            free(a);
            return NULL;
        }
#ifdef MADV_HUGEPAGE
        /* decode streams every byte once per token; with 4 KB pages the page walks cost this
         * kind of VM a third of its read bandwidth */
        madvise(a->base, size, MADV_HUGEPAGE);
#endif
        a->size = size;
        a->next = c->arenas;
        c->arenas = a;
    }
    uint8_t *p = a->base + a->used;
    a->used += bytes;
    a->live++;
    *from = a;
    return p;
}

static void arena_release(struct cpu_ctx *c, struct arena *a)
{
    if (--a->live > 0)
        return;
    for (struct arena **pp = &c->arenas; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    free(a->base);
    free(a);
}

struct repack_job {
    struct pack *pk;
    size_t row_bytes;
    int64_t per;
};

static void repack_task(void *arg, int task, int n)
{
    struct repack_job *j = arg;
    struct pack *pk = j->pk;
    int64_t n_groups = (pk->n_rows + 15) / 16, g1 = (task + 1) * j->per;
    for (int64_t g = task * j->per; g < g1 && g < n_groups; g++) {
        int64_t r0 = g * PORTA_GEMM_ROWS, nr = pk->n_rows - r0;
        porta_repack_group(pk->type, pk->data + g * pk->group_bytes, pk->src + r0 * j->row_bytes,
                           j->row_bytes, nr < PORTA_GEMM_ROWS ? (int)nr : PORTA_GEMM_ROWS,
                           pk->n_cols);
    }
}

/* The repacked copy of w, made (on the pool) when first asked for. NULL on allocation failure:
 * the caller falls back to vec_dot. */
static const struct pack *get_pack(struct cpu_ctx *c, const struct porta_weight *w,
                                   const uint8_t *src)
{
    for (int k = 0; k < c->n_packs; k++) {
        int i = (c->hint + k) % c->n_packs;
        struct pack *pk = &c->packs[i];
        if (pk->src == src && pk->type == w->type && pk->n_rows == w->n_rows &&
            pk->n_cols == w->n_cols) {
            c->hint = i + 1 < c->n_packs ? i + 1 : 0;
            return pk;
        }
    }
    if (c->n_packs == c->cap_packs) {
        int cap = c->cap_packs ? 2 * c->cap_packs : 64;
        struct pack *np = realloc(c->packs, sizeof *np * (size_t)cap);
        if (!np)
            return NULL;
        c->packs = np;
        c->cap_packs = cap;
    }
    int64_t n_groups = (w->n_rows + 15) / 16;
    struct pack pk = { .src = src, .buf = w->buf, .type = w->type, .n_rows = w->n_rows,
                       .n_cols = w->n_cols,
                       .group_bytes = porta_repack_group_bytes(w->type, w->n_cols) };
    size_t bytes = pk.group_bytes * (size_t)n_groups;
    if (!(pk.data = arena_take(c, bytes, &pk.arena))) {
        porta_warn("cpu: no memory to repack %s (%zu bytes): multiplying it row by row", w->name,
                   bytes);
        return NULL;
    }
    struct repack_job j = { &c->packs[c->n_packs], w->row_bytes, 0 };
    c->packs[c->n_packs++] = pk;
    c->pack_bytes += bytes;
    j.per = per_task(n_groups, porta_pool_size(c->pool));
    double t0 = c->prof ? now_s() : 0;
    porta_pool_run_n(c->pool, (int)((n_groups + j.per - 1) / j.per), repack_task, &j);
    if (c->prof)
        c->prof->repack_sec += now_s() - t0;
    porta_dbg("cpu: repacked %s (%s, %lld x %lld): %zu bytes, %zu in all", w->name ? w->name : "",
              porta_dtype_name(w->type), (long long)w->n_rows, (long long)w->n_cols, bytes,
              c->pack_bytes);
    c->hint = c->n_packs - 1;
    return &c->packs[c->n_packs - 1];
}

/* A matmul through the tile kernels, as queued: the pack's fields by value (the pack table may
 * grow, and so move, before it runs). */
struct tile_mm {
    enum porta_dtype type;
    porta_gemm_fn gemm;
    porta_gemm_act_fn act_fn;
    const uint8_t *data;            /* the repacked groups */
    size_t group_bytes;
    int64_t n_rows, n_groups;
    float *y;
    int act;                        /* which activation rows (index into the job's) */
};

#define MAX_BATCH 4                 /* matmuls of one input run as one job (q, k, v; gate, up) */

struct gemm_job {
    struct tile_mm mm[MAX_BATCH];
    int n_mm;
    int64_t start[MAX_BATCH + 1];   /* first group of each matmul in the job's numbering */
    porta_gemm_act_fn act_fn[MAX_BATCH];
    uint8_t *act[MAX_BATCH];
    int n_act;
    const float *x;
    int64_t n_cols;
    size_t astride;
    int n_tok, nth;
    int64_t per;                    /* tokens per task, for the activations */
    int pack0;                      /* the pack of mm[0] (an index into the pack table) */
    struct region *reg;             /* per thread: the groups it has left (see gemm_task) */
};

/* A thread's share of a job's groups, [lo, hi) packed in one word (lo | hi << 32): the owner
 * takes groups one at a time from the front, so its reads stay one stream that its prefetches
 * run ahead of; a thread that has run out takes half of what is left from the back of
 * another's. So the threads finish together whether or not they all came or ran at the same
 * speed (a descheduled worker holds back at most one group), and each starts where it
 * prefetched before the job. Own cache line each. */
struct region {
    atomic_ullong span;
    char pad[64 - sizeof(atomic_ullong)];
};

static inline unsigned long long span_of(int64_t lo, int64_t hi)
{
    return (unsigned long long)lo | (unsigned long long)hi << 32;
}

static bool take_own(struct region *r, int64_t *g)
{
    unsigned long long sp = atomic_load_explicit(&r->span, memory_order_relaxed);
    for (;;) {
        int64_t lo = (int64_t)(sp & 0xFFFFFFFFull), hi = (int64_t)(sp >> 32);
        if (lo >= hi)
            return false;
        if (atomic_compare_exchange_weak_explicit(&r->span, &sp, span_of(lo + 1, hi),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *g = lo;
            return true;
        }
    }
}

static bool steal(struct gemm_job *j, int self, int64_t *g0, int64_t *g1)
{
    for (int k = 1; k <= j->nth; k++) {
        struct region *r = &j->reg[(self + k) % j->nth];
        unsigned long long sp = atomic_load_explicit(&r->span, memory_order_relaxed);
        for (;;) {
            int64_t lo = (int64_t)(sp & 0xFFFFFFFFull), hi = (int64_t)(sp >> 32);
            if (lo >= hi)
                break;
            int64_t take = (hi - lo + 1) / 2;
            if (atomic_compare_exchange_weak_explicit(&r->span, &sp, span_of(lo, hi - take),
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *g0 = hi - take;
                *g1 = hi;
                return true;
            }
        }
    }
    return false;
}

/* the groups of thread s at the start of a job */
static void region_bounds(const struct gemm_job *j, int s, int64_t *lo, int64_t *hi)
{
    long l, h;
    porta_split((long)j->start[j->n_mm], s, j->nth, &l, &h);
    *lo = l;
    *hi = h;
}

static void regions_reset(struct gemm_job *j)
{
    for (int s = 0; s < j->nth; s++) {
        int64_t lo, hi;
        region_bounds(j, s, &lo, &hi);
        atomic_store_explicit(&j->reg[s].span, span_of(lo, hi), memory_order_relaxed);
    }
}

/* A run of groups starts where no prefetch has been: the kernels prefetch a few KB ahead of
 * what they read, so the first KB of a run would come one memory latency after another. Ask
 * for them all at once (into L2). */
#define RUN_PREFETCH 4096

static void prefetch_run(const struct gemm_job *j, int64_t u)
{
    int m = 0;
    while (m + 1 < j->n_mm && u >= j->start[m + 1])
        m++;
    const struct tile_mm *mm = &j->mm[m];
    const uint8_t *p = mm->data + (size_t)(u - j->start[m]) * mm->group_bytes;
    size_t n = (size_t)(j->start[m + 1] - u) * mm->group_bytes;
    n = n < RUN_PREFETCH ? n : RUN_PREFETCH;
    for (size_t off = 0; off < n; off += 64)
        __builtin_prefetch(p + off, 0, 2);
}

static void gemm_act_task(void *arg, int task, int n)
{
    struct gemm_job *j = arg;
    for (int64_t u = task * j->per; u < (task + 1) * j->per && u < (int64_t)j->n_tok * j->n_act;
         u++) {
        int64_t t = u % j->n_tok, a = u / j->n_tok;
        j->act_fn[a](j->x + t * j->n_cols, j->act[a] + t * j->astride, j->n_cols);
    }
}

static void gemm_run(struct gemm_job *j, int64_t g0, int64_t g1, int *m)
{
    for (int64_t u = g0; u < g1; u++) {
        while (u >= j->start[*m + 1])
            (*m)++;
        while (u < j->start[*m])
            (*m)--;
        const struct tile_mm *mm = &j->mm[*m];
        int64_t g = u - j->start[*m], r0 = g * PORTA_GEMM_ROWS, nr = mm->n_rows - r0;
        mm->gemm(j->n_cols, mm->data + g * mm->group_bytes, j->act[mm->act], j->astride,
                 j->n_tok, mm->y + r0, (size_t)mm->n_rows,
                 nr < PORTA_GEMM_ROWS ? (int)nr : PORTA_GEMM_ROWS);
    }
}

/* Thread s runs its own region from the front, then steals (see struct region). */
static void gemm_task(void *arg, int task, int n)
{
    struct gemm_job *j = arg;
    int64_t g0, g1;
    int m = 0, s = porta_pool_slot();
    while (take_own(&j->reg[s], &g0))
        gemm_run(j, g0, g0 + 1, &m);
    while (steal(j, s, &g0, &g1)) {
        prefetch_run(j, g0);
        gemm_run(j, g0, g1, &m);
    }
}

/* Idle-time prefetch (porta_pool_prefetch): the start of each thread's region in the job that
 * will most likely follow this one (the next matrix in the order of use starts it), at most
 * this many bytes, up to the end of the matrix it starts in. */
#define NEXT_PREFETCH ((size_t)512 << 10)

/* Notes where this job's threads start, in its first matrix's pack, for the job before it. */
static void learn_prefetch(struct cpu_ctx *c, const struct gemm_job *j)
{
    if (j->pack0 < 0 || j->pack0 >= c->n_packs || c->packs[j->pack0].data != j->mm[0].data)
        return;
    struct pack *pk = &c->packs[j->pack0];
    for (int s = 0; s < PF_SLOTS; s++) {
        int64_t lo, hi;
        pk->pf_at[s] = NULL;
        pk->pf_len[s] = 0;
        if (s >= j->nth)
            continue;
        region_bounds(j, s, &lo, &hi);
        int m = 0;
        while (m + 1 < j->n_mm && lo >= j->start[m + 1])
            m++;
        if (lo >= hi || lo >= j->start[m + 1])
            continue;
        const struct tile_mm *mm = &j->mm[m];
        size_t len = (size_t)((hi < j->start[m + 1] ? hi : j->start[m + 1]) - lo) * mm->group_bytes;
        pk->pf_at[s] = mm->data + (size_t)(lo - j->start[m]) * mm->group_bytes;
        pk->pf_len[s] = len < NEXT_PREFETCH ? len : NEXT_PREFETCH;
    }
}

/* Names to the pool what each thread should prefetch once it is out of work in this job. */
static void prefetch_next(struct cpu_ctx *c, const struct gemm_job *j)
{
    if (!c->n_packs || c->hint >= c->n_packs)
        return;
    const struct pack *pk = &c->packs[c->hint];
    for (int m = 0; m < j->n_mm; m++)
        if (j->mm[m].data == pk->data)
            return;                 /* a matrix of this job: the order did not repeat */
    for (int s = 0; s < PF_SLOTS && s < j->nth; s++)
        porta_pool_prefetch(c->pool, s, pk->pf_at[s], pk->pf_len[s]);
}

/* Every group reads all of the job's activations, so they should stay in L2 from one group to
 * the next. When they outgrow it (a long prompt into a wide matrix: ffn_down) the groups run
 * once per chunk of tokens that fits, in multiples of 16 tokens (the AMX tile); the weights
 * are then read once per chunk, which costs far less than activations from L3. */
#define GEMM_ACT_L2 (1u << 20)

static void run_token_chunks(struct cpu_ctx *c, struct gemm_job *j)
{
    size_t act_all = j->astride * (size_t)j->n_tok * (size_t)j->n_act;
    int nc = act_all > GEMM_ACT_L2 ? (int)((act_all + GEMM_ACT_L2 - 1) / GEMM_ACT_L2) : 1;
    if (nc <= 1 || j->n_tok <= 16) {
        regions_reset(j);
        porta_pool_run(c->pool, gemm_task, j);
        return;
    }
    int chunk = ((j->n_tok + nc - 1) / nc + 15) & ~15, n_tok = j->n_tok;
    for (int t0 = 0; t0 < n_tok; t0 += chunk) {
        /* the job as if it had only tokens [t0, t0 + chunk); put back below */
        int nt = n_tok - t0 < chunk ? n_tok - t0 : chunk;
        for (int a = 0; a < j->n_act; a++)
            j->act[a] += (size_t)(t0 ? chunk : 0) * j->astride;
        for (int m = 0; m < j->n_mm; m++)
            j->mm[m].y += (size_t)(t0 ? chunk : 0) * (size_t)j->mm[m].n_rows;
        j->n_tok = nt;
        regions_reset(j);
        porta_pool_run(c->pool, gemm_task, j);
    }
    int moved = (n_tok - 1) / chunk * chunk;
    for (int a = 0; a < j->n_act; a++)
        j->act[a] -= (size_t)moved * j->astride;
    for (int m = 0; m < j->n_mm; m++)
        j->mm[m].y -= (size_t)moved * (size_t)j->mm[m].n_rows;
    j->n_tok = n_tok;
}

/* Runs the queued tile matmuls (all of the same input) as one job: the input quantized once
 * per activation format, then the groups of every matrix shared out together. */
static void flush(struct cpu_ctx *c)
{
    struct gemm_job *j = c->batch;
    if (!j->n_mm)
        return;
    double t0 = c->prof ? now_s() : 0;
    j->nth = porta_pool_size(c->pool);
    j->start[0] = 0;
    for (int m = 0; m < j->n_mm; m++)
        j->start[m + 1] = j->start[m] + j->mm[m].n_groups;
    /* this thread's region starts loading while it makes the activations (the others
     * prefetched theirs while they waited) */
    prefetch_run(j, 0);
    int64_t units = (int64_t)j->n_tok * j->n_act;
    /* activations: one row is quicker on this thread than a wake-up of the pool */
    j->per = units < 2 * j->nth ? units : (units + 2 * j->nth - 1) / (2 * j->nth);
    porta_pool_run_n(c->pool, (int)((units + j->per - 1) / j->per), gemm_act_task, j);
    learn_prefetch(c, j);
    prefetch_next(c, j);
    run_token_chunks(c, j);
    if (c->prof) {
        double bytes = 0;
        for (int m = 0; m < j->n_mm; m++)
            bytes += (double)j->mm[m].group_bytes * (double)j->mm[m].n_groups;
        prof_matmul(c, j->mm[0].type, j->mm[0].n_rows, j->n_cols, j->n_mm, j->n_tok, bytes, t0);
    }
    j->n_mm = 0;
    j->n_act = 0;
}

static struct gemm_job *batch_new(int nth)
{
    struct gemm_job *j = calloc(1, sizeof *j);
    if (j && !(j->reg = aligned_alloc(64, sizeof *j->reg * (size_t)nth))) {
        free(j);
        return NULL;
    }
    return j;
}

static void batch_free(struct gemm_job *j)
{
    if (j)
        free(j->reg);
    free(j);
}

static bool overlap(const void *a, size_t na, const void *b, size_t nb)
{
    const uint8_t *p = a, *q = b;
    return p < q + nb && q < p + na;
}

/* y = x W^T through the tile kernels, queued: it runs with the next flush(), together with
 * the other matmuls of the same input queued before it (every other op flushes first, so the
 * order of results is the order of the calls). PORTA_E_UNSUPPORTED when w has no tile kernel
 * here. */
static int matmul_tiles(struct cpu_ctx *c, float *y, const struct porta_weight *w,
                        const uint8_t *wdata, const float *x, int n_tok)
{
    if (!c->repack || !c->k.gemm[w->type] || !c->k.gemm_act[w->type] || w->n_mat != 1 ||
        w->row_bytes != porta_row_size(w->type, w->n_cols))
        return PORTA_E_UNSUPPORTED;
    struct gemm_job *j = c->batch;
    size_t xb = sizeof(float) * (size_t)w->n_cols * (size_t)n_tok;
    size_t yb = sizeof(float) * (size_t)w->n_rows * (size_t)n_tok;
    bool joins = j->n_mm > 0 && j->n_mm < MAX_BATCH && j->x == x && j->n_cols == w->n_cols &&
                 j->n_tok == n_tok && !overlap(y, yb, x, xb);
    for (int m = 0; joins && m < j->n_mm; m++)
        joins = !overlap(y, yb, j->mm[m].y, sizeof(float) * (size_t)j->mm[m].n_rows * n_tok);
    if (!joins)
        flush(c);
    const struct pack *pk = get_pack(c, w, wdata);
    if (!pk)
        return PORTA_E_UNSUPPORTED;
    if (!j->n_mm)
        j->pack0 = (int)(pk - c->packs);
    /* every activation format of the batch uses the same row stride, the largest one */
    size_t a32 = porta_gemm_act_bytes(PORTA_Q4_0, w->n_cols);
    size_t ak = porta_gemm_act_bytes(PORTA_Q8_K, w->n_cols);
    size_t astride = a32 > ak ? a32 : ak;
    porta_gemm_act_fn fn = c->k.gemm_act[w->type];
    int a = 0;
    while (a < j->n_act && j->act_fn[a] != fn)
        a++;
    if (a == j->n_act) {
        int rc = grow((void **)&c->act, &c->act_cap, astride * (size_t)n_tok * MAX_BATCH);
        if (rc)
            return rc;
        for (int k = 0; k <= a; k++)                /* grow() may have moved the scratch */
            j->act[k] = c->act + astride * (size_t)n_tok * (size_t)k;
        j->act_fn[a] = fn;
        j->n_act++;
    }
    j->x = x;
    j->n_cols = w->n_cols;
    j->n_tok = n_tok;
    j->astride = astride;
    j->mm[j->n_mm++] = (struct tile_mm){ .type = w->type, .gemm = c->k.gemm[w->type], .act_fn = fn,
                                         .data = pk->data, .group_bytes = pk->group_bytes,
                                         .n_rows = pk->n_rows,
                                         .n_groups = (pk->n_rows + 15) / 16, .y = y, .act = a };
    return 0;
}

/* The row-by-row path (vec_dot), for the types and sets without a tile kernel. */
struct mm_job {
    const struct porta_cpu_kernels *k;
    const struct porta_weight *w;
    const uint8_t *wdata;
    float *y;
    const float *x;
    const uint8_t *xa;              /* activations in the vec_dot type */
    size_t arow;                    /* bytes per activation row */
    int n_tok;
    int64_t per;                    /* rows (or tokens, for the activations) per task */
};

static void mm_quantize(void *arg, int task, int n)
{
    struct mm_job *j = arg;
    enum porta_dtype vt = porta_type_traits(j->w->type)->vec_dot_type;
    for (int64_t t = task * j->per; t < (task + 1) * j->per && t < j->n_tok; t++)
        j->k->quantize[vt](j->x + t * j->w->n_cols, (uint8_t *)j->xa + t * j->arow, j->w->n_cols);
}

#define MM_ROW_BLOCK 16

static void mm_rows(void *arg, int task, int n)
{
    struct mm_job *j = arg;
    porta_vec_dot_fn dot = j->k->vec_dot[j->w->type];
    int64_t nr = j->w->n_rows, nc = j->w->n_cols;
    int64_t lo = task * j->per, hi = lo + j->per < nr ? lo + j->per : nr;
    for (int64_t r0 = lo; r0 < hi; r0 += MM_ROW_BLOCK) {
        int64_t r1 = r0 + MM_ROW_BLOCK < hi ? r0 + MM_ROW_BLOCK : hi;
        for (int t = 0; t < j->n_tok; t++) {
            const uint8_t *a = j->xa + (size_t)t * j->arow;
            float *yt = j->y + (size_t)t * nr;
            for (int64_t r = r0; r < r1; r++)
                dot(nc, &yt[r], j->wdata + (size_t)r * j->w->row_bytes, a);
        }
    }
}

static int matmul_op(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                     struct porta_view x, int n_tok)
{
    struct cpu_ctx *c = be->ctx;
    int rc = matmul_tiles(c, fat(y), w, w->buf->data + w->off, fat(x), n_tok);
    if (rc != PORTA_E_UNSUPPORTED)
        return rc;
    flush(c);
    double t0 = c->prof ? now_s() : 0;
    enum porta_dtype vt = porta_type_traits(w->type)->vec_dot_type;
    int nth = porta_pool_size(c->pool);
    struct mm_job j = { .k = &c->k, .w = w, .wdata = w->buf->data + w->off, .y = fat(y),
                        .x = fat(x), .n_tok = n_tok };
    if (vt == PORTA_F32) {
        j.xa = (const uint8_t *)j.x;
        j.arow = (size_t)w->n_cols * sizeof(float);
    } else {
        j.arow = porta_row_size(vt, w->n_cols);
        rc = grow((void **)&c->act, &c->act_cap, j.arow * (size_t)n_tok);
        if (rc)
            return rc;
        j.xa = c->act;
        j.per = n_tok < 2 * nth ? n_tok : (n_tok + 2 * nth - 1) / (2 * nth);
        porta_pool_run_n(c->pool, (int)((n_tok + j.per - 1) / j.per), mm_quantize, &j);
    }
    j.per = (per_task(w->n_rows, nth) + MM_ROW_BLOCK - 1) / MM_ROW_BLOCK * MM_ROW_BLOCK;
    porta_pool_run_n(c->pool, (int)((w->n_rows + j.per - 1) / j.per), mm_rows, &j);
    if (c->prof)
        prof_matmul(c, w->type, w->n_rows, w->n_cols, 1, n_tok,
                    (double)w->row_bytes * (double)w->n_rows, t0);
    return 0;
}

/* ---- small ops ---- */

struct rows_job {
    const struct porta_cpu_kernels *k;
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
    for (long r = lo; r < hi; r++) {
        if (j->k->rmsnorm)
            j->k->rmsnorm(j->y + r * j->n, j->x + r * j->n, j->w, j->n, j->eps);
        else
            porta_ref_rmsnorm(j->y + r * j->n, j->x + r * j->n, j->w, 1, j->n, j->eps);
    }
}

static int rmsnorm_op(struct porta_backend *be, struct porta_view y, struct porta_view x,
                       struct porta_view w, int n_rows, int n, float eps)
{
    struct cpu_ctx *c = be->ctx;
    struct rows_job j = { &c->k, fat(y), fat(x), w.buf ? fat(w) : NULL, n_rows, n, eps };
    if (n_rows <= 2)
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

#define ROPE_MAX_PAIRS 512

/* ref.c's rope with each token's cos/sin computed once for all its heads (the same calls and
 * the same arithmetic, so the same bits) */
static void rope_rows(void *arg, int ith, int nth)
{
    struct rope_job *j = arg;
    const struct porta_rope_params *p = j->p;
    long lo, hi;
    porta_split(j->n_tok, ith, nth, &lo, &hi);
    if (p->n_rot / 2 > ROPE_MAX_PAIRS) {
        if (hi > lo)
            porta_ref_rope(j->x + lo * j->n_head * j->head_dim, (int)(hi - lo), j->n_head,
                           j->head_dim, j->pos + lo, p);
        return;
    }
    float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS], dims[2] = { 0, 0 };
    if (p->ext_factor != 0.0f)
        porta_rope_corr_dims(p, dims);
    int half = p->n_rot / 2;
    bool neox = p->style == PORTA_ROPE_NEOX;
    for (long t = lo; t < hi; t++) {
        for (int i0 = 0; i0 < p->n_rot; i0 += 2)
            porta_rope_cos_sin(p, dims, j->pos[t], i0, &cs[i0 / 2], &sn[i0 / 2]);
        for (int h = 0; h < j->n_head; h++) {
            float *v = j->x + ((size_t)t * j->n_head + h) * j->head_dim;
            for (int k = 0; k < half; k++) {
                int a = neox ? k : 2 * k, b = neox ? k + half : 2 * k + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs[k] - x1 * sn[k];
                v[b] = x0 * sn[k] + x1 * cs[k];
            }
        }
    }
}

static int rope_op(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                    int head_dim, const int32_t *pos, const struct porta_rope_params *p)
{
    struct cpu_ctx *c = be->ctx;
    struct rope_job j = { fat(x), n_tok, n_head, head_dim, pos, p };
    if (n_tok <= 2)
        rope_rows(&j, 0, 1);
    else
        porta_pool_run(c->pool, rope_rows, &j);
    return 0;
}

struct elt_job {
    const struct porta_cpu_kernels *k;
    enum porta_elt op;
    float *y;
    const float *a, *b;
    int64_t n, nb;
    float s;
    int64_t per;                    /* SwiGLU: elements per task */
};

/* ref.c's element-wise ops as plain loops the compiler vectorizes (the same float operations,
 * so the same bits); y may be a */
static void elt_rows(enum porta_elt op, float *y, const float *a, const float *b, int64_t n,
                     int64_t nb, float s)
{
    switch (op) {
    case PORTA_ELT_ADD:
    case PORTA_ELT_MUL:
        for (int64_t r = 0; r < n / nb; r++) {
            float *yr = y + r * nb;
            const float *ar = a + r * nb;
            if (op == PORTA_ELT_ADD)
                for (int64_t i = 0; i < nb; i++)
                    yr[i] = ar[i] + b[i];
            else
                for (int64_t i = 0; i < nb; i++)
                    yr[i] = ar[i] * b[i];
        }
        break;
    case PORTA_ELT_SCALE:
        for (int64_t i = 0; i < n; i++)
            y[i] = a[i] * s;
        break;
    case PORTA_ELT_COPY:
        if (y != a)
            memmove(y, a, sizeof(float) * (size_t)n);
        break;
    default:
        porta_ref_eltwise(op, y, a, b, n, nb, s);
        break;
    }
}

static void elt_part(void *arg, int ith, int nth)
{
    struct elt_job *j = arg;
    long lo, hi;
    if (j->b && j->nb < j->n) {
        /* b broadcast: whole periods of nb, so that b's index stays i % nb */
        porta_split((long)(j->n / j->nb), ith, nth, &lo, &hi);
        if (hi > lo)
            elt_rows(j->op, j->y + lo * j->nb, j->a + lo * j->nb, j->b, (hi - lo) * j->nb, j->nb,
                     j->s);
        return;
    }
    porta_split((long)j->n, ith, nth, &lo, &hi);
    if (hi > lo)
        elt_rows(j->op, j->y + lo, j->a + lo, j->b ? j->b + lo : NULL, hi - lo, hi - lo, j->s);
}

static void swiglu_part(void *arg, int task, int n)
{
    struct elt_job *j = arg;
    int64_t lo = task * j->per, hi = lo + j->per < j->n ? lo + j->per : j->n;
    if (j->k->swiglu)
        j->k->swiglu(j->y + lo, j->a + lo, j->b + lo, hi - lo);
    else
        porta_ref_eltwise(PORTA_ELT_SWIGLU, j->y + lo, j->a + lo, j->b + lo, hi - lo, 1, 0);
}

static int eltwise_op(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                       struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s)
{
    struct cpu_ctx *c = be->ctx;
    struct elt_job j = { &c->k, op, fat(y), fat(a), b.buf ? fat(b) : NULL, n, nb, s, 0 };
    if (op == PORTA_ELT_SWIGLU) {
        /* b is not broadcast: address it with the same offset as a */
        j.per = n < 16384 ? n : (n + 4 * porta_pool_size(c->pool) - 1) / (4 * porta_pool_size(c->pool));
        j.per = (j.per + 15) & ~(int64_t)15;
        porta_pool_run_n(c->pool, (int)((n + j.per - 1) / j.per), swiglu_part, &j);
        return 0;
    }
    if (op != PORTA_ELT_ADD && op != PORTA_ELT_MUL)
        j.b = NULL;
    if (j.b && n % nb)
        porta_ref_eltwise(op, j.y, j.a, j.b, n, nb, s);
    else if (n < 16384)
        elt_rows(op, j.y, j.a, j.b, n, j.b ? nb : n, s);
    else
        porta_pool_run(c->pool, elt_part, &j);
    return 0;
}

static int embed_op(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
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
    size_t scratch_per;             /* floats of scratch per thread (the kernel-table path) */
};

/* One task per (token, KV head): the query heads that share the KV head, in one pass over
 * the cache (k.attn). */
static void attn_groups(void *arg, int task, int n)
{
    struct attn_job *j = arg;
    const struct porta_attn_params *p = j->p;
    int nkv = p->n_head_kv, group = p->n_head / nkv, t = task / nkv, hk = task % nkv;
    int dk = p->head_dim_k, dv = p->head_dim_v;
    size_t esz = p->kv_type == PORTA_F16 ? 2 : 4;
    size_t base = (size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx;
    struct porta_attn_rows a = {
        .q = j->q + ((size_t)t * p->n_head + (size_t)hk * group) * dk,
        .o = j->out + ((size_t)t * p->n_head + (size_t)hk * group) * dv,
        .k = (const uint8_t *)j->kc + (base * nkv + hk) * dk * esz,
        .v = (const uint8_t *)j->vc + (base * nkv + hk) * dv * esz,
        .k_stride = (size_t)nkv * dk, .v_stride = (size_t)nkv * dv,
        .n_q = group, .dk = dk, .dv = dv, .n_kv = p->pos[t] + 1, .scale = p->scale,
        .f16 = p->kv_type == PORTA_F16,
        .scratch = j->c->scores + j->scratch_per * (size_t)porta_pool_slot(),
    };
    j->c->k.attn(&a);
}

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

static int attention_op(struct porta_backend *be, struct porta_view out, struct porta_view q,
                         struct porta_view k, struct porta_view v,
                         const struct porta_attn_params *p)
{
    struct cpu_ctx *c = be->ctx;
    void *kc = at(p->k_cache), *vc = at(p->v_cache);
    int nkv = p->n_head_kv;
    for (int t = 0; t < p->n_tok; t++) {
        size_t cell = ((size_t)(p->seq ? p->seq[t] : 0) * p->n_ctx + p->pos[t]) * nkv;
        int nk = nkv * p->head_dim_k, nv = nkv * p->head_dim_v;
        porta_ref_kv_store(kc, p->kv_type, cell * p->head_dim_k, fat(k) + (size_t)t * nk, nk);
        porta_ref_kv_store(vc, p->kv_type, cell * p->head_dim_v, fat(v) + (size_t)t * nv, nv);
    }
    if (c->k.attn) {
        int group = p->n_head / nkv;
        size_t per = (porta_attn_scratch_floats(group, p->head_dim_k, p->head_dim_v) + 15) &
                     ~(size_t)15;
        int rc = grow((void **)&c->scores, &c->scores_cap,
                      sizeof(float) * per * (size_t)porta_pool_size(c->pool));
        if (rc)
            return rc;
        struct attn_job j = { c, fat(out), fat(q), kc, vc, p, per };
        porta_pool_run_n(c->pool, p->n_tok * nkv, attn_groups, &j);
        return 0;
    }
    int rc = grow((void **)&c->scores, &c->scores_cap,
                  sizeof(float) * (size_t)p->n_ctx * (size_t)porta_pool_size(c->pool));
    if (rc)
        return rc;
    struct attn_job j = { c, fat(out), fat(q), kc, vc, p, 0 };
    porta_pool_run(c->pool, attn_heads, &j);
    return 0;
}

static int cpu_synchronize(struct porta_backend *be)
{
    flush(be->ctx);
    return 0;
}

/* ---- the vtable entries: the ops, timed when profiling ---- */

#define TIMED(kind, call)                                                                      \
    do {                                                                                       \
        struct cpu_ctx *c_ = be->ctx;                                                          \
        flush(c_);                                                                             \
        if (!c_->prof)                                                                         \
            return call;                                                                       \
        double t0_ = now_s();                                                                  \
        int rc_ = call;                                                                        \
        prof_add(c_, kind, t0_);                                                               \
        return rc_;                                                                            \
    } while (0)

/* A tile matmul is queued (flush() times it when it runs); the row-by-row path runs now. */
static int cpu_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                      struct porta_view x, int n_tok)
{
    return matmul_op(be, y, w, x, n_tok);
}

static int cpu_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                       struct porta_view w, int n_rows, int n, float eps)
{
    TIMED(PROF_NORM, rmsnorm_op(be, y, x, w, n_rows, n, eps));
}

static int cpu_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                    int head_dim, const int32_t *pos, const struct porta_rope_params *p)
{
    TIMED(PROF_ROPE, rope_op(be, x, n_tok, n_head, head_dim, pos, p));
}

static int cpu_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                       struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s)
{
    TIMED(PROF_ELT, eltwise_op(be, op, y, a, b, n, nb, s));
}

static int cpu_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                     const int32_t *ids, int n_tok)
{
    TIMED(PROF_EMBED, embed_op(be, y, w, ids, n_tok));
}

static int cpu_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                         struct porta_view k, struct porta_view v,
                         const struct porta_attn_params *p)
{
    TIMED(PROF_ATTN, attention_op(be, out, q, k, v, p));
}

/* accessors for the op files beside this one (cpu_ops.h) */
void porta_cpu_parts(struct porta_backend *be, const struct porta_cpu_kernels **k,
                     struct porta_pool **pool)
{
    struct cpu_ctx *c = be->ctx;
    flush(c);                       /* the op that asks reads results of queued matmuls */
    *k = &c->k;
    *pool = c->pool;
}

uint8_t *porta_cpu_ptr(struct porta_view v) { return at(v); }

const uint8_t *porta_cpu_pack(struct porta_backend *be, const struct porta_weight *w,
                              size_t *group_bytes)
{
    struct cpu_ctx *c = be->ctx;
    if (!c->repack || !c->k.gemm[w->type] || w->n_mat != 1 ||
        w->row_bytes != porta_row_size(w->type, w->n_cols))
        return NULL;
    const struct pack *pk = get_pack(c, w, w->buf->data + w->off);
    if (!pk)
        return NULL;
    *group_bytes = pk->group_bytes;
    return pk->data;
}

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
    .moe_route = porta_cpu_moe_route,
    .matmul_experts = porta_cpu_matmul_experts,
    .attention_mla = porta_cpu_attention_mla,
    .synchronize = cpu_synchronize,
};
