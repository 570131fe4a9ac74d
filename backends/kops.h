/* kops.h - the host side of kernels/cl, shared by the device backends that run those kernels
 * (opencl, hip): for each vtable op, the checks of its arguments, which kernel runs, on which
 * grid and with which arguments. A backend supplies the few things that differ between device
 * APIs (launching, staging host arrays, its launch shapes) in a struct kops_dev; the op
 * functions here then serve as its vtable entries, so the two backends cannot drift apart. */
#ifndef PORTA_KOPS_H
#define PORTA_KOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* ---- kernels ---- */

/* The weight types with kernels, in kernel-slot order. */
#define KOPS_N_TYPES 13
/* Kernels that exist once per weight type (kernel name "<kind>_<type suffix>"). */
enum kops_typed {
    KOPS_MV,        /* matvec.cl mv_: one token per work-item (decode) */
    KOPS_MT,        /* matvec.cl mt_: mt_tok tokens per work-item */
    KOPS_MM,        /* matmul.cl mm_: local-memory tiles */
    KOPS_EMB,       /* embed.cl emb_: rows of a weight by token id */
    KOPS_DEQ,       /* embed.cl deq_: rows dequantized to float (CLBlast's input) */
    KOPS_ME,        /* matvec.cl me_: mixture-of-experts products */
    KOPS_MR,        /* matvec_rows.cl mr_: one token over row packs */
    KOPS_MRT,       /* matvec_rows.cl mrt_: mrt_tok tokens per work-item over row packs */
    KOPS_MRE,       /* matvec_rows.cl mre_: mixture-of-experts products over row packs */
    KOPS_N_TYPED
};
/* The others, numbered after the typed ones. The kv and mla kernels come as an F32 and an F16
 * pair (cache type): slot + 1 is the F16 one. */
enum kops_kernel {
    KOPS_RMSNORM = KOPS_N_TYPED * KOPS_N_TYPES,
    KOPS_ELTWISE,
    KOPS_ROPE,
    KOPS_KV_STORE,  /* + 1: F16 */
    KOPS_KV_ATTN = KOPS_KV_STORE + 2,
    KOPS_MLA_STORE = KOPS_KV_ATTN + 2,
    KOPS_MLA_ATTN = KOPS_MLA_STORE + 2,
    KOPS_MOE_ROUTE = KOPS_MLA_ATTN + 2,
    KOPS_RP_PACK,   /* matvec_rows.cl: a matrix into row packs */
    KOPS_N_KERNELS
};

/* The index of a weight type among the types with kernels, or -1. */
int kops_type_index(enum porta_dtype t);
/* Elements per unit of a type with kernels (kernels/cl/dequant.h's type_sub: one work-item
 * of emb_/deq_ decodes one unit). */
int kops_type_sub(enum porta_dtype t);
/* The slot of kind for weight type t (which must have kernels). */
int kops_typed_slot(enum kops_typed kind, enum porta_dtype t);
/* The kernel function's name of a slot, written to buf. */
const char *kops_kernel_name(int slot, char *buf, size_t n);

/* Calls get(ctx, slot, name) for every kernel slot, in order; stops at the first error and
 * returns it (0 when all succeed). How a backend fetches its kernel handles. */
int kops_get_kernels(void *ctx, int (*get)(void *ctx, int slot, const char *name));

/* A tuning variable's integer value: def when unset or empty; a value that is not a whole
 * decimal integer in int range is ignored with a warning naming it (def is used). */
int kops_env_int(const char *name, int def);

/* ---- launches ---- */

enum kops_arg_kind {
    KOPS_BUF,       /* a porta_buf (the device memory) */
    KOPS_STAGE,     /* the backend's staging buffer (see kops_dev.stage) */
    KOPS_U64,
    KOPS_I32,
    KOPS_F32,
};

struct kops_arg {
    enum kops_arg_kind kind;
    union {
        const struct porta_buf *buf;
        uint64_t u64;
        int32_t i32;
        float f32;
    } v;
};

#define KOPS_MAX_ARGS 20

/* One kernel launch: groups[d] work-groups along dimension d (1 past dims), of lsz work-items
 * along dimension 0. any_lsz: the work-items are what counts (groups[0] * lsz of them, each
 * checking its own bounds); the device may group them as it likes. */
struct kops_launch {
    int kernel;
    int dims;
    size_t groups[3];
    size_t lsz;
    bool any_lsz;
    int na;
    struct kops_arg a[KOPS_MAX_ARGS];
};

/* Appending a launch's arguments in the kernel's order (at most KOPS_MAX_ARGS). */
static inline void kops_a_buf(struct kops_launch *l, const struct porta_buf *b)
{
    l->a[l->na++] = (struct kops_arg){ .kind = KOPS_BUF, .v.buf = b };
}
static inline void kops_a_u64(struct kops_launch *l, uint64_t v)
{
    l->a[l->na++] = (struct kops_arg){ .kind = KOPS_U64, .v.u64 = v };
}
static inline void kops_a_i32(struct kops_launch *l, int32_t v)
{
    l->a[l->na++] = (struct kops_arg){ .kind = KOPS_I32, .v.i32 = v };
}
static inline void kops_a_f32(struct kops_launch *l, float v)
{
    l->a[l->na++] = (struct kops_arg){ .kind = KOPS_F32, .v.f32 = v };
}
/* a buffer and an element offset: how every kernel takes its arrays */
static inline void kops_a_at(struct kops_launch *l, const struct porta_buf *b, uint64_t off)
{
    kops_a_buf(l, b);
    kops_a_u64(l, off);
}
/* the staging buffer (kops_dev.stage) and an element offset in it */
static inline void kops_a_stage_at(struct kops_launch *l, uint64_t off)
{
    l->a[l->na++] = (struct kops_arg){ .kind = KOPS_STAGE };
    kops_a_u64(l, off);
}

/* Row packs (kernels/cl/matvec_rows.cl): RP_ROWS rows with their 16-bit words interleaved,
 * so that a CPU device's SIMD lanes are rows. Made from a weight matrix on its first one-token
 * product and kept until the source is written or freed (kops_drop_packs). */
#define KOPS_PACK_ROWS 16

struct kops_pack {
    const struct porta_buf *src;    /* the matrix as the core gave it */
    size_t off, row_bytes;
    enum porta_dtype type;
    int64_t n_rows, n_cols;
    struct porta_buf *buf;          /* its row packs (a buffer of their own) */
    size_t bytes;
};

/* What a device backend supplies. The shapes must match the kernels as the backend compiled
 * them (matvec.cl's MV_ROWS, MT_TOK, matmul.cl's tile, eltwise.cl's ELT_PER, rope.cl's
 * ROPE_ALL_HEADS). */
struct kops_dev {
    const char *name;               /* message prefix: "opencl", "hip" */
    void *ctx;
    /* Enqueues l; an empty grid launches nothing. 0 or a porta status (logged). */
    int (*launch)(void *ctx, const struct kops_launch *l);
    /* Copies n bytes of host memory into the staging buffer, in order with the launches that
     * follow and kept until the next synchronize; *off gets their byte offset there. */
    int (*stage)(void *ctx, const void *src, size_t n, uint64_t *off);
    int max_lsz;                    /* the largest work-group */
    size_t max_rows;                /* rmsnorm rows per launch (a grid limit), >= 1 */
    int mv_lsz, mv_rows;            /* matvec work-group and the rows it owns */
    int mr_lsz;                     /* mr_ work-group (row packs: a group per work-item) */
    int mrt_tok;                    /* tokens per work-item of mrt_ (matvec_rows.cl's MRT_TOK) */
    int mt_tok;                     /* tokens per work-item of mt_ */
    int mm_min_tok;                 /* from this many tokens: the prefill kernel below */
    bool prefill_mm;                /* prefill with mm_ (tiles), else with mt_ */
    int mm_tr, mm_tt, mm_lsz;       /* mm_: rows and tokens per work-group, its size */
    int norm_lsz, att_lsz, elt_lsz;
    int elt_per;                    /* elements per work-item of eltwise */
    bool rope_all_heads;            /* one work-item walks every head of a token */
    bool row_packs;                 /* one-token products over row packs where a type has them */
    bool prefill_packs;             /* and the products of several tokens (mrt_) */
    /* kops' own state (zero at open): the row packs made so far */
    struct kops_pack *packs;
    int n_packs, cap_packs, pack_hint;
    size_t pack_bytes;
    bool pack_failed;               /* an allocation failed: no more packs (warned once) */
};

/* ---- argument checks ---- */

/* A view's byte offset as an index of es-byte elements; false (logged) when misaligned. */
bool kops_elem_off(const struct kops_dev *d, struct porta_view v, size_t es, const char *what,
                   uint64_t *out);
/* A weight's byte offset, checked for the kernels' aligned loads, and its size for one
 * launch; 0, PORTA_E_UNSUPPORTED (no kernels for the type, too large) or PORTA_E_INVAL. */
int kops_weight_off(const struct kops_dev *d, const struct porta_weight *w, uint64_t *off);

/* Forgets (and frees) the row packs made from b: all of them when lo == hi, else those whose
 * source bytes overlap [lo, hi). A backend calls it before it writes or frees a buffer. */
void kops_drop_packs(struct porta_backend *be, const struct porta_buf *b, size_t lo, size_t hi);
/* Frees what kops holds (the row packs); a backend calls it first in its close. */
void kops_close(struct porta_backend *be);

/* ---- the ops: the vtable's entries themselves ---- */

/* A backend that uses these puts its struct kops_dev first in its context (be->ctx). */
#define KOPS_DEV(be) ((struct kops_dev *)(be)->ctx)

/* The kernel products only: mv_ (mr_ over row packs where the device wants them) for one
 * token, mt_ below mm_min_tok tokens, then mm_ or mt_. */
int kops_matmul(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
                struct porta_view x, int n_tok);
int kops_rmsnorm(struct porta_backend *be, struct porta_view y, struct porta_view x,
                 struct porta_view w, int n_rows, int n, float eps);
int kops_rope(struct porta_backend *be, struct porta_view x, int n_tok, int n_head,
              int head_dim, const int32_t *pos, const struct porta_rope_params *p);
int kops_attention(struct porta_backend *be, struct porta_view out, struct porta_view q,
                   struct porta_view k, struct porta_view v, const struct porta_attn_params *p);
int kops_eltwise(struct porta_backend *be, enum porta_elt op, struct porta_view y,
                 struct porta_view a, struct porta_view b, int64_t n, int64_t nb, float s);
int kops_embed(struct porta_backend *be, struct porta_view y, const struct porta_weight *w,
               const int32_t *ids, int n_tok);
int kops_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                   struct porta_view logits, const struct porta_route_params *p);
int kops_matmul_experts(struct porta_backend *be, struct porta_view y,
                        const struct porta_weight *w, struct porta_view x,
                        const struct porta_experts_params *p);
int kops_attention_mla(struct porta_backend *be, struct porta_view out, struct porta_view q_lat,
                       struct porta_view q_rope, struct porta_view kv_lat,
                       struct porta_view k_rope, const struct porta_attn_params *p);
/* The vtable's supports: whether the kernels implement op for weight type wt. */
bool kops_supports(const struct porta_backend *be, enum porta_op op, enum porta_dtype wt);

/* The vtable entries that kops serves, for a backend's struct porta_backend_ops initializer
 * (matmul stays the backend's: it may route prefill elsewhere, as OpenCL does to CLBlast). */
#define KOPS_VTABLE_OPS                                                                        \
    .supports = kops_supports, .rmsnorm = kops_rmsnorm, .rope = kops_rope,                     \
    .attention = kops_attention, .eltwise = kops_eltwise, .embed = kops_embed,                 \
    .moe_route = kops_moe_route, .matmul_experts = kops_matmul_experts,                        \
    .attention_mla = kops_attention_mla

#endif
