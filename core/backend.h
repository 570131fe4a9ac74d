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
 * Row r of matrix e starts at off + e * mat_stride + r * row_bytes; mat_stride 0 means
 * n_rows * row_bytes (packed, as a GGUF 3-D expert tensor). A larger stride views a row range
 * of every matrix of a stack (MLA: the no-rope rows of each head of attn_q). */
struct porta_weight {
    enum porta_dtype type;
    int64_t n_rows;                 /* output features */
    int64_t n_cols;                 /* input features: GGUF ne[0] */
    int64_t n_mat;                  /* 1, or the expert count */
    size_t row_bytes;
    struct porta_buf *buf;
    size_t off;
    const char *name;               /* for messages */
    size_t mat_stride;              /* bytes from matrix e to e + 1; 0 = n_rows * row_bytes */
};

/* Bytes from one matrix of a stack to the next. */
static inline size_t porta_weight_mat_stride(const struct porta_weight *w)
{
    return w->mat_stride ? w->mat_stride : (size_t)w->n_rows * w->row_bytes;
}

enum porta_op {
    PORTA_OP_MATMUL, PORTA_OP_RMSNORM, PORTA_OP_ROPE, PORTA_OP_ATTENTION, PORTA_OP_ELTWISE,
    PORTA_OP_EMBED, PORTA_OP_MOE_ROUTE, PORTA_OP_MATMUL_EXPERTS, PORTA_OP_ATTENTION_MLA,
    PORTA_OP_COUNT
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

/* ---- mixture of experts ---- */

/* How router logits become expert scores (values of GGUF `expert_gating_func`). */
enum porta_gating { PORTA_GATING_SOFTMAX = 1, PORTA_GATING_SIGMOID = 2 };

/* Top-k routing of n_tok tokens over n_expert experts. Per token t, from logits[t]:
 *   s = softmax(logits[t]) or sigmoid(logits[t])         (the scores)
 *   c = s + bias                                         (choice scores; bias absent: c = s)
 *   n_group > 1: the experts form n_group groups of n_expert / n_group consecutive ones; a
 *     group's score is the sum of its two best c (its only c for one-expert groups); only the
 *     topk_group best groups stay eligible (DeepSeek-V3 group-limited routing)
 *   ids[t] = the k eligible experts of largest c, in decreasing order of c; ties go to the
 *     lower expert index (so a result never depends on the backend)
 *   weights[t][j] = s[ids[t][j]] (unbiased), divided by their sum when norm, times scale. */
struct porta_route_params {
    int n_tok, n_expert, k;
    enum porta_gating gating;
    bool norm;                      /* renormalise the k weights to sum 1 */
    float scale;                    /* routed scaling factor, applied last (1 = none) */
    struct porta_view bias;         /* f32 [n_expert] correction bias (exp_probs_b); NULL: none */
    int n_group, topk_group;        /* group-limited routing; n_group <= 1: off */
};

/* Products with the matrices of a stack chosen per token and slot (w->n_mat experts):
 *   y[t][j] = W[ids[t][j]] x[t]      (x shared by the k slots of token t)
 *   y[t][j] = W[ids[t][j]] x[t][j]   (x_per_slot)
 * for t < n_tok, j < k. With weights, the k products of a token are summed:
 *   y[t] = sum_j weights[t][j] * W[ids[t][j]] x    (y: [n_tok][n_rows])
 * else y is [n_tok][k][n_rows]. A slot whose id is outside [0, n_mat) contributes zeros (ids
 * live on the device, so the wrapper cannot check them). x is quantized to the weight type's
 * vec_dot_type exactly as matmul does. Backends group the slots by matrix so that a matrix is
 * read once per call however many tokens chose it. */
struct porta_experts_params {
    int n_tok, k;
    struct porta_view ids;          /* int32 [n_tok][k]; buf NULL: slot j uses matrix j (k <= n_mat:
                                       a per-head batched product, MLA) */
    bool x_per_slot;                /* x: [n_tok][k][n_cols], else [n_tok][n_cols] */
    struct porta_view weights;      /* f32 [n_tok][k]; buf NULL: no sum */
};

struct porta_backend_cfg {
    int threads;                    /* cpu: 0 = all cores */
    const char *cpu_kernels;        /* cpu: "auto" | "avx512" | "avx2" | "scalar" */
    bool cpu_no_amx;                /* cpu: no AMX tiles (backend.cpu.amx = false) */
    int platform, device;           /* opencl / hip: indices, -1 = first usable */
    const char *device_name;        /* substring match; NULL = by index */
    const char *kernel_dir;         /* development only: load .cl sources from here */
    const char *cache_dir;          /* compiled-kernel cache; NULL = default */
    bool clblast;                   /* opencl: CLBlast for prefill GEMMs on GPUs (when built in;
                                       CPU devices keep porta's own kernels, faster there) */
    bool opencl_no_row_packs;       /* opencl, CPU devices: products over the matrices as stored
                                       (backend.opencl.row_packs = false), not over row packs,
                                       which cost a second copy of the weights */
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
    /* mixture of experts; NULL: unsupported. ids: int32 [n_tok][k], weights: f32 [n_tok][k],
     * logits: f32 [n_tok][n_expert] (see struct porta_route_params) */
    int  (*moe_route)(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                      struct porta_view logits, const struct porta_route_params *p);
    int  (*matmul_experts)(struct porta_backend *be, struct porta_view y,
                           const struct porta_weight *w, struct porta_view x,
                           const struct porta_experts_params *p);
    /* multi-head latent attention (DeepSeek-V2/V3) over a cache of compressed rows; NULL:
     * unsupported. p->n_head_kv is 1, p->head_dim_v = n_lat (kv_lora_rank) and
     * p->head_dim_k = n_lat + n_rope; p->k_cache holds one row [n_lat | n_rope] per cell at
     * (seq * n_ctx + pos) * head_dim_k elements; p->v_cache is unused. For each token t: store
     * [kv_lat[t] | k_rope[t]] at pos[t] of seq[t], then for each head h, over cells j <= pos[t]:
     *   s_j = scale * (q_lat[t][h] . lat_j + q_rope[t][h] . rope_j)
     *   out[t][h] = sum_j softmax(s)_j lat_j
     * q_lat, out: [n_tok][n_head][n_lat]; q_rope: [n_tok][n_head][n_rope]; kv_lat: [n_tok][n_lat];
     * k_rope: [n_tok][n_rope]. (q_lat is the no-rope query with the key up-projection absorbed.) */
    int  (*attention_mla)(struct porta_backend *be, struct porta_view out, struct porta_view q_lat,
                          struct porta_view q_rope, struct porta_view kv_lat,
                          struct porta_view k_rope, const struct porta_attn_params *p);
    int  (*synchronize)(struct porta_backend *be);          /* the only call that waits */
};

struct porta_backend {
    const struct porta_backend_ops *ops;
    void *ctx;                      /* the backend's own state */
    char desc[256];                 /* "cpu (avx512, 2 threads)" */
    size_t max_buf;                 /* largest single buffer in bytes, 0: no limit (set by open;
                                       OpenCL: CL_DEVICE_MAX_MEM_ALLOC_SIZE) */
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
/* Whether a device's name contains pattern, ASCII case ignored: how a config's device_name
 * ("gfx1030", "rtx") picks a device. "" matches every name. */
bool porta_device_name_matches(const char *name, const char *pattern);

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
/* Mixture of experts and MLA (see the vtable): PORTA_E_UNSUPPORTED when the backend lacks the
 * entry (or, for matmul_experts, the weight type), PORTA_E_INVAL for bad shapes or views. */
int porta_be_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                       struct porta_view logits, const struct porta_route_params *p);
int porta_be_matmul_experts(struct porta_backend *be, struct porta_view y,
                            const struct porta_weight *w, struct porta_view x,
                            const struct porta_experts_params *p);
int porta_be_attention_mla(struct porta_backend *be, struct porta_view out,
                           struct porta_view q_lat, struct porta_view q_rope,
                           struct porta_view kv_lat, struct porta_view k_rope,
                           const struct porta_attn_params *p);
int porta_be_synchronize(struct porta_backend *be);

static inline struct porta_view porta_view_at(struct porta_view v, size_t off)
{
    v.off += off;
    return v;
}

#endif /* PORTA_BACKEND_H */
