/* backend.h - the backend vtable that decouples the transformer graph from devices.
 * core/ calls only the porta_be_*() wrappers (core/backend.c), which check arguments and
 * NULL entries once. Buffers are opaque and owned by the backend that made them; activations
 * are float32, row-major [n_tok][dim]; weights keep their GGUF block type. */
#ifndef PORTA_BACKEND_H
#define PORTA_BACKEND_H

#include "porta.h"

struct porta_backend;
struct porta_buf;                   /* opaque, backend-owned */

enum porta_buf_use { PORTA_BUF_WEIGHTS, PORTA_BUF_ACT, PORTA_BUF_KV };

/* A position inside a buffer: byte offset `off`. */
struct porta_view {
    struct porta_buf *buf;
    size_t off;
};

/* A weight matrix (or a stack of n_mat expert matrices) resident on one backend.
 * Row r of matrix e starts at off + (e * n_rows + r) * row_bytes. */
struct porta_weight {
    enum porta_dtype type;
    int64_t n_rows;                 /* output features */
    int64_t n_cols;                 /* input features: GGUF ne[0] */
    int64_t n_mat;                  /* 1, or the expert count */
    size_t row_bytes;
    struct porta_buf *buf;
    size_t off;
    const char *name;               /* for messages */
};

enum porta_op {
    PORTA_OP_MATMUL, PORTA_OP_RMSNORM, PORTA_OP_ROPE, PORTA_OP_ATTENTION, PORTA_OP_ELTWISE,
    PORTA_OP_EMBED, PORTA_OP_COUNT
};

enum porta_elt {
    PORTA_ELT_ADD,      /* y = a + b      (b broadcast when nb < n) */
    PORTA_ELT_MUL,      /* y = a * b      (b broadcast when nb < n) */
    PORTA_ELT_SWIGLU,   /* y = silu(a) * b */
    PORTA_ELT_SCALE,    /* y = a * s */
    PORTA_ELT_COPY,     /* y = a */
};

enum porta_rope_style { PORTA_ROPE_NORM = 0, PORTA_ROPE_NEOX = 1 };

struct porta_rope_params {
    enum porta_rope_style style;
    int n_rot;                      /* rotated dims per head (<= head_dim), even */
    float freq_base;
    float freq_scale;               /* 1 / linear scaling factor */
    /* YaRN (ext_factor 0 disables it) */
    float ext_factor, attn_factor, beta_fast, beta_slow;
    int n_ctx_orig;
    /* LLaMA-3.1 style per-dimension frequency factors (NULL: none), n_rot/2 floats, host */
    const float *freq_factors;
};

/* Attention of n_tok query rows over a KV cache. For each token t: store k[t], v[t] at cache
 * position pos[t] of sequence seq[t], then attend causally to positions 0..pos[t] of seq[t]. */
struct porta_attn_params {
    int n_tok;
    int n_head, n_head_kv;
    int head_dim_k, head_dim_v;
    float scale;                    /* usually 1/sqrt(head_dim_k) */
    const int32_t *pos;             /* host, n_tok entries */
    const int32_t *seq;             /* host, n_tok entries (NULL: all 0) */
    int n_ctx;                      /* cache capacity per sequence */
    int n_seq;                      /* sequences in the cache */
    enum porta_dtype kv_type;       /* PORTA_F32 or PORTA_F16 */
    /* cache layout: k at ((seq * n_ctx + p) * n_head_kv + h) * head_dim_k elements, v likewise */
    struct porta_view k_cache, v_cache;
};

struct porta_backend_cfg {
    int threads;                    /* cpu: 0 = all cores */
    const char *cpu_kernels;        /* cpu: "auto" | "avx512" | "avx2" | "scalar" */
    int platform, device;           /* opencl / hip: indices, -1 = first usable */
    const char *device_name;        /* substring match; NULL = by index */
    const char *kernel_dir;         /* development only: load .cl sources from here */
    const char *cache_dir;          /* compiled-kernel cache; NULL = default */
};

/* Called by devices(): one line per device. */
typedef void (*porta_device_cb)(void *user, const char *line);

struct porta_backend_ops {
    const char *name;               /* "cpu" | "opencl" | "hip" */
    /* class-level: describes what the backend sees without opening it; 0 or an error (why not) */
    int  (*devices)(porta_device_cb cb, void *user);
    int  (*open)(struct porta_backend *be, const struct porta_backend_cfg *cfg);
    void (*close)(struct porta_backend *be);
    bool (*supports)(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt);
    /* memory */
    int  (*buf_alloc)(struct porta_backend *be, size_t n, enum porta_buf_use use,
                      struct porta_buf **out);
    /* optional: a buffer over host memory that outlives it (zero-copy on the CPU);
     * the wrapper falls back to alloc + upload */
    int  (*buf_wrap_host)(struct porta_backend *be, const void *ptr, size_t n,
                          struct porta_buf **out);
    void (*buf_free)(struct porta_backend *be, struct porta_buf *buf);
    size_t (*buf_size)(const struct porta_buf *buf);
    int  (*upload)(struct porta_backend *be, struct porta_buf *dst, size_t off, const void *src,
                   size_t n);
    int  (*download)(struct porta_backend *be, void *dst, const struct porta_buf *src, size_t off,
                     size_t n);
    /* compute: enqueue only; destination first, then inputs */
    int  (*matmul)(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                   struct porta_view x, int n_tok);          /* y[t] = W x[t], y: [n_tok][n_rows] */
    int  (*rmsnorm)(struct porta_backend *be, struct porta_view y, struct porta_view x,
                    struct porta_view w, int n_rows, int n, float eps); /* w: n floats or none */
    int  (*rope)(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                 int head_dim, const int32_t *pos, const struct porta_rope_params *p); /* in place */
    int  (*attention)(struct porta_backend *be, struct porta_view out, struct porta_view q,
                      struct porta_view k, struct porta_view v, const struct porta_attn_params *p);
    int  (*eltwise)(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                    struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s);
    int  (*embed)(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                  const int32_t *ids, int n_tok);            /* ids: host, checked < n_rows */
    int  (*synchronize)(struct porta_backend *be);          /* the only call that waits */
};

struct porta_backend {
    const struct porta_backend_ops *ops;
    void *ctx;                      /* the backend's own state */
    char desc[256];                 /* "cpu (avx512, 2 threads)" */
};

/* ---- registry ---- */
/* The compiled-in backends in registry order; *n set to their count. */
const struct porta_backend_ops *const *porta_backend_registry(int *n);
const struct porta_backend_ops *porta_backend_find(const char *name);
/* Opens the named backend. 0, PORTA_E_NOTFOUND (not compiled in), or the backend's error
 * (logged with the reason). */
int porta_backend_open(const char *name, const struct porta_backend_cfg *cfg,
                       struct porta_backend **out);
/* Tries each name in order (cfgs[i] for order[i]; cfgs NULL = defaults), logs why each that
 * fails did, returns the first that opens; the error of the last one when none does. */
int porta_backend_open_first(const char *const *order, const struct porta_backend_cfg *cfgs, int n,
                             struct porta_backend **out);
void porta_backend_close(struct porta_backend *be);                  /* NULL ok */

/* ---- wrappers: the only way core/ reaches a backend ---- */
bool porta_be_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt);
int porta_be_buf_alloc(struct porta_backend *be, size_t n, enum porta_buf_use use,
                       struct porta_buf **out);
int porta_be_buf_from_host(struct porta_backend *be, const void *ptr, size_t n,
                           struct porta_buf **out);
void porta_be_buf_free(struct porta_backend *be, struct porta_buf *buf);
size_t porta_be_buf_size(const struct porta_backend *be, const struct porta_buf *buf);
int porta_be_upload(struct porta_backend *be, struct porta_buf *dst, size_t off, const void *src,
                    size_t n);
int porta_be_download(struct porta_backend *be, void *dst, const struct porta_buf *src, size_t off,
                      size_t n);
int porta_be_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                    struct porta_view x, int n_tok);
int porta_be_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                     struct porta_view w, int n_rows, int n, float eps);
int porta_be_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
                  int head_dim, const int32_t *pos, const struct porta_rope_params *p);
int porta_be_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                       struct porta_view k, struct porta_view v, const struct porta_attn_params *p);
int porta_be_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                     struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s);
int porta_be_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                   const int32_t *ids, int n_tok);
int porta_be_synchronize(struct porta_backend *be);

static inline struct porta_view porta_view_at(struct porta_view v, size_t off)
{
    v.off += off;
    return v;
}

#endif /* PORTA_BACKEND_H */
