/* test_kops.c - backends/kops.c on a recording device: the launches each op plans (kernel,
 * grid, argument list) for the shapes the OpenCL and HIP backends give it, the grid limits
 * (rmsnorm in slices), the argument checks, kernel names and the tuning variables. The
 * kernels themselves run in test_opencl / test_backend_ops (PoCL) and test_hip (a GPU). */
#include "testutil.h"

#include <stdint.h>

#include "backends/kops.h"
#include "porta.h"
#include "quant.h"

/* this suite's own buffers: kops only passes them through */
struct porta_buf {
    int id;
};

#define MAX_LAUNCHES 16

static struct {
    struct kops_launch l[MAX_LAUNCHES];
    int n;
    int fail_at;        /* launch index that returns an error (once), -1 none */
    size_t staged;
} g_rec;

static int rec_launch(void *ctx, const struct kops_launch *l)
{
    (void)ctx;
    ck_assert_int_lt(g_rec.n, MAX_LAUNCHES);
    if (g_rec.n == g_rec.fail_at) {
        g_rec.fail_at = -1;
        return PORTA_E_DEVICE;
    }
    g_rec.l[g_rec.n++] = *l;
    return 0;
}

static int rec_stage(void *ctx, const void *src, size_t n, uint64_t *off)
{
    (void)ctx;
    (void)src;
    *off = g_rec.staged;
    g_rec.staged += (n + 63) / 64 * 64;
    return 0;
}

/* the buffers kops makes for row packs: counted, and refused on demand */
static struct {
    struct porta_buf made[8];
    int n_made, n_freed;
    bool refuse;
} g_bufs;

static int mock_alloc(struct porta_backend *be, size_t n, enum porta_buf_use use,
                      struct porta_buf **out)
{
    (void)be;
    (void)use;
    ck_assert_int_gt((int)n, 0);
    if (g_bufs.refuse)
        return PORTA_E_NOMEM;
    ck_assert_int_lt(g_bufs.n_made, 8);
    *out = &g_bufs.made[g_bufs.n_made];
    (*out)->id = 100 + g_bufs.n_made++;
    return 0;
}

static void mock_free(struct porta_backend *be, struct porta_buf *b)
{
    (void)be;
    ck_assert_int_ge(b->id, 100);
    g_bufs.n_freed++;
}

static const struct porta_backend_ops g_ops = { .name = "mock", .buf_alloc = mock_alloc,
                                                .buf_free = mock_free };

/* a kops device first in the backend context, as KOPS_DEV wants */
static struct {
    struct kops_dev d;
} g_ctx;
static struct porta_backend g_be;

static void setup(void)
{
    memset(&g_rec, 0, sizeof g_rec);
    g_rec.fail_at = -1;
    g_ctx.d = (struct kops_dev){
        .name = "mock", .launch = rec_launch, .stage = rec_stage, .max_lsz = 256,
        .max_rows = 1000, .mv_lsz = 64, .mv_rows = 1, .mt_tok = 4, .mm_min_tok = 16,
        .prefill_mm = true, .mm_tr = 64, .mm_tt = 32, .mm_lsz = 128, .norm_lsz = 256,
        .att_lsz = 64, .elt_lsz = 64, .elt_per = 1,
    };
    g_be.ctx = &g_ctx;
    g_be.ops = &g_ops;
    memset(&g_bufs, 0, sizeof g_bufs);
}

static void teardown(void)
{
    kops_close(&g_be);
    ck_assert_int_eq(g_bufs.n_freed, g_bufs.n_made);   /* nothing leaks */
}

static char g_name[32];
static const char *kname(int slot) { return kops_kernel_name(slot, g_name, sizeof g_name); }

static struct porta_buf B0 = { 0 }, B1 = { 1 }, B2 = { 2 };
static struct porta_view V(struct porta_buf *b, size_t off) { return (struct porta_view){ b, off }; }

static struct porta_weight weight(enum porta_dtype t, int64_t rows, int64_t cols)
{
    size_t rb = porta_row_size(t, cols);
    return (struct porta_weight){ .type = t, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                                  .row_bytes = rb, .buf = &B1, .off = 0, .name = "w" };
}

START_TEST(test_kernel_names)
{
    ck_assert_str_eq(kname(kops_typed_slot(KOPS_MV, PORTA_Q4_0)), "mv_q4_0");
    ck_assert_str_eq(kname(kops_typed_slot(KOPS_ME, PORTA_Q6_K)), "me_q6_k");
    ck_assert_str_eq(kname(kops_typed_slot(KOPS_DEQ, PORTA_BF16)), "deq_bf16");
    ck_assert_str_eq(kname(KOPS_RMSNORM), "rmsnorm");
    ck_assert_str_eq(kname(KOPS_KV_STORE + 1), "kv_f16_store");
    ck_assert_str_eq(kname(KOPS_MLA_ATTN), "mla_f32_attn");
    ck_assert_str_eq(kname(KOPS_MOE_ROUTE), "moe_route");
    ck_assert_str_eq(kname(kops_typed_slot(KOPS_MR, PORTA_Q4_K)), "mr_q4_k");
    ck_assert_str_eq(kname(kops_typed_slot(KOPS_MRT, PORTA_Q4_1)), "mrt_q4_1");
    ck_assert_str_eq(kname(KOPS_RP_PACK), "rp_pack");
    ck_assert_int_eq(KOPS_RP_PACK, KOPS_N_KERNELS - 1);
    ck_assert_int_eq(kops_type_index(PORTA_Q4_K), 10);
    ck_assert_int_lt(kops_type_index(PORTA_I32), 0);
    ck_assert_int_eq(kops_type_sub(PORTA_F16), 8);
    ck_assert_int_eq(kops_type_sub(PORTA_Q5_K), 32);
    ck_assert(kops_supports(&g_be, PORTA_OP_MATMUL, PORTA_Q8_0));
    ck_assert(!kops_supports(&g_be, PORTA_OP_MATMUL, PORTA_I32));
    ck_assert(kops_supports(&g_be, PORTA_OP_ATTENTION_MLA, PORTA_F32));
}
END_TEST

/* every slot gets a distinct name, and the fetch stops at the first failure */
static int g_seen;
static int fetch(void *ctx, int slot, const char *name)
{
    (void)ctx;
    ck_assert_int_eq(slot, g_seen);
    ck_assert_int_gt((int)strlen(name), 3);
    g_seen++;
    return slot == 20 ? PORTA_E_DEVICE : 0;
}

START_TEST(test_get_kernels)
{
    g_seen = 0;
    ck_assert_int_eq(kops_get_kernels(NULL, fetch), PORTA_E_DEVICE);
    ck_assert_int_eq(g_seen, 21);
}
END_TEST

START_TEST(test_env_int)
{
    unsetenv("PORTA_KOPS_TEST");
    ck_assert_int_eq(kops_env_int("PORTA_KOPS_TEST", 7), 7);
    setenv("PORTA_KOPS_TEST", "", 1);
    ck_assert_int_eq(kops_env_int("PORTA_KOPS_TEST", 7), 7);
    setenv("PORTA_KOPS_TEST", "-12", 1);
    ck_assert_int_eq(kops_env_int("PORTA_KOPS_TEST", 7), -12);
    const char *bad[] = { "12x", "x", "99999999999", "1.5" };
    for (int i = 0; i < 4; i++) {
        setenv("PORTA_KOPS_TEST", bad[i], 1);
        ck_assert_int_eq(kops_env_int("PORTA_KOPS_TEST", 7), 7);
    }
    unsetenv("PORTA_KOPS_TEST");
}
END_TEST

/* decode, a few tokens and prefill pick mv, mt and mm with their grids */
START_TEST(test_matmul_plans)
{
    struct porta_weight w = weight(PORTA_Q4_0, 100, 64);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 8), &w, V(&B2, 0), 1), 0);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 9), 0);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 40), 0);
    ck_assert_int_eq(g_rec.n, 3);
    const struct kops_launch *l = g_rec.l;
    ck_assert_str_eq(kname(l[0].kernel), "mv_q4_0");
    ck_assert_uint_eq(l[0].groups[0], 100);            /* a group per row (mv_rows 1) */
    ck_assert_uint_eq(l[0].groups[1], 1);
    ck_assert_uint_eq(l[0].lsz, 64);
    ck_assert_int_eq(l[0].na, 10);
    ck_assert_ptr_eq(l[0].a[0].v.buf, &B0);
    ck_assert_uint_eq(l[0].a[1].v.u64, 2);             /* y's byte offset 8 as floats */
    ck_assert_uint_eq(l[0].a[4].v.u64, w.row_bytes);
    ck_assert_int_eq(l[0].a[5].v.i32, 100);
    ck_assert_int_eq(l[0].a[9].v.i32, 1);
    ck_assert_str_eq(kname(l[1].kernel), "mt_q4_0");
    ck_assert_uint_eq(l[1].groups[1], 3);              /* 9 tokens, 4 per work-item */
    ck_assert_str_eq(kname(l[2].kernel), "mm_q4_0");
    ck_assert_uint_eq(l[2].groups[0], 2);              /* 100 rows in tiles of 64 */
    ck_assert_uint_eq(l[2].groups[1], 2);              /* 40 tokens in tiles of 32 */
    ck_assert_uint_eq(l[2].lsz, 128);
    /* CPU devices prefill with mt_ at any length */
    g_ctx.d.prefill_mm = false;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 40), 0);
    ck_assert_str_eq(kname(g_rec.l[3].kernel), "mt_q4_0");
    ck_assert_uint_eq(g_rec.l[3].groups[1], 10);
}
END_TEST

/* the device wants row packs (a CPU device), a group of 4 work-items for mr_ */
static void use_row_packs(void)
{
    g_ctx.d.row_packs = true;
    g_ctx.d.mr_lsz = 4;
}

/* one-token products over row packs: made once per matrix (rp_pack, then mr_), dropped when the
 * source is written or freed, and the plain kernels where packs do not apply */
START_TEST(test_row_packs)
{
    use_row_packs();
    struct porta_weight w = weight(PORTA_Q4_0, 100, 64);
    w.off = 36;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 8), &w, V(&B2, 4), 1), 0);
    ck_assert_int_eq(g_rec.n, 2);
    const struct kops_launch *l = g_rec.l;
    ck_assert_str_eq(kname(l[0].kernel), "rp_pack");
    ck_assert_int_eq(g_bufs.n_made, 1);
    ck_assert_ptr_eq(l[0].a[0].v.buf, &g_bufs.made[0]);
    ck_assert_ptr_eq(l[0].a[1].v.buf, &B1);
    ck_assert_uint_eq(l[0].a[2].v.u64, 36);            /* the weight's byte offset */
    ck_assert_uint_eq(l[0].a[3].v.u64, w.row_bytes);
    ck_assert_int_eq(l[0].a[4].v.i32, 18);             /* 2 blocks of 18 bytes: 18 words */
    ck_assert_int_eq(l[0].a[5].v.i32, 100);
    ck_assert_uint_eq(l[0].groups[1], 7);              /* 100 rows in groups of 16 */
    ck_assert(l[0].any_lsz);
    ck_assert_str_eq(kname(l[1].kernel), "mr_q4_0");
    ck_assert_uint_eq(l[1].groups[0], 2);              /* 7 groups, 4 work-items each */
    ck_assert_uint_eq(l[1].lsz, 4);
    ck_assert_int_eq(l[1].na, 8);
    ck_assert_ptr_eq(l[1].a[0].v.buf, &B0);
    ck_assert_uint_eq(l[1].a[1].v.u64, 2);
    ck_assert_ptr_eq(l[1].a[2].v.buf, &g_bufs.made[0]);
    ck_assert_int_eq(l[1].a[3].v.i32, 100);
    ck_assert_int_eq(l[1].a[4].v.i32, 64);
    ck_assert_uint_eq(l[1].a[6].v.u64, 1);
    ck_assert_int_eq(l[1].a[7].v.i32, 1);
    /* the next token reuses the packs */
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), 0);
    ck_assert_int_eq(g_rec.n, 3);
    ck_assert_str_eq(kname(g_rec.l[2].kernel), "mr_q4_0");
    /* a write elsewhere in the buffer keeps them; one over the matrix's rows drops them */
    kops_drop_packs(&g_be, &B1, 0, 36);
    kops_drop_packs(&g_be, &B1, 36 + 100 * w.row_bytes, 10000);
    kops_drop_packs(&g_be, &B2, 0, 0);
    ck_assert_int_eq(g_bufs.n_freed, 0);
    kops_drop_packs(&g_be, &B1, 36 + 99 * w.row_bytes, 36 + 99 * w.row_bytes + 1);
    ck_assert_int_eq(g_bufs.n_freed, 1);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), 0);
    ck_assert_str_eq(kname(g_rec.l[3].kernel), "rp_pack");
    ck_assert_str_eq(kname(g_rec.l[4].kernel), "mr_q4_0");
    /* the same bytes read as another shape are another matrix */
    struct porta_weight w2 = w;
    w2.n_rows = 50;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w2, V(&B2, 0), 1), 0);
    ck_assert_str_eq(kname(g_rec.l[5].kernel), "rp_pack");
    /* a plain type's partial block of 8, or several tokens without prefill over packs: the
     * kernels over the stored rows */
    struct porta_weight w5 = weight(PORTA_F16, 100, 37);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w5, V(&B2, 0), 1), 0);
    ck_assert_str_eq(kname(g_rec.l[7].kernel), "mv_f16");
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 2), 0);
    ck_assert_str_eq(kname(g_rec.l[8].kernel), "mt_q4_0");
    ck_assert_int_eq(g_bufs.n_made, 3);
    /* with prefill over packs: mrt_, mrt_tok tokens per work-item, the same packs */
    g_ctx.d.prefill_packs = true;
    g_ctx.d.mrt_tok = 8;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 20), 0);
    l = &g_rec.l[9];
    ck_assert_str_eq(kname(l->kernel), "mrt_q4_0");
    ck_assert_uint_eq(l->groups[0], 2);
    ck_assert_uint_eq(l->groups[1], 3);                 /* 20 tokens, 8 per work-item */
    ck_assert_int_eq(l->na, 8);
    ck_assert_ptr_eq(l->a[2].v.buf, &g_bufs.made[1]);
    ck_assert_int_eq(l->a[7].v.i32, 20);
    ck_assert_int_eq(g_bufs.n_made, 3);
    /* freeing the source drops both of its matrices' packs */
    kops_drop_packs(&g_be, &B1, 0, 0);
    ck_assert_int_eq(g_bufs.n_freed, 3);
}
END_TEST

/* expert stacks: a packed stack of whole 16-row groups is packed as one matrix (mre_), a stack
 * with a view's stride or a partial group stays on me_ */
START_TEST(test_row_packs_experts)
{
    use_row_packs();
    struct porta_weight w = weight(PORTA_Q4_K, 32, 256);
    w.n_mat = 4;
    struct porta_experts_params ep = { .n_tok = 3, .k = 2, .ids = { &B2, 16 } };
    ck_assert_int_eq(kops_matmul_experts(&g_be, V(&B0, 0), &w, V(&B2, 0), &ep), 0);
    ck_assert_int_eq(g_rec.n, 2);
    const struct kops_launch *l = g_rec.l;
    ck_assert_str_eq(kname(l[0].kernel), "rp_pack");
    ck_assert_int_eq(l[0].a[5].v.i32, 128);            /* the 4 matrices' rows as one */
    ck_assert_str_eq(kname(l[1].kernel), "mre_q4_k");
    ck_assert_uint_eq(l[1].groups[0], 1);              /* 2 groups of a matrix, 4 per group */
    ck_assert_uint_eq(l[1].groups[1], 3);              /* a token each */
    ck_assert_ptr_eq(l[1].a[2].v.buf, &g_bufs.made[0]);
    ck_assert_int_eq(l[1].a[3].v.i32, 4);
    ck_assert_int_eq(l[1].a[4].v.i32, 32);
    ck_assert_uint_eq(l[1].a[10].v.u64, 4);            /* ids' byte offset 16 as int32 */
    ck_assert_int_eq(l[1].a[11].v.i32, 1);
    ck_assert_int_eq(l[1].a[15].v.i32, 2);
    ck_assert_int_eq(l[1].na, 16);
    w.mat_stride = 33 * w.row_bytes;                   /* a view of each matrix's rows */
    ck_assert_int_eq(kops_matmul_experts(&g_be, V(&B0, 0), &w, V(&B2, 0), &ep), 0);
    ck_assert_str_eq(kname(g_rec.l[2].kernel), "me_q4_k");
    w = weight(PORTA_Q4_K, 24, 256);                   /* a partial 16-row group */
    w.n_mat = 4;
    ck_assert_int_eq(kops_matmul_experts(&g_be, V(&B0, 0), &w, V(&B2, 0), &ep), 0);
    ck_assert_str_eq(kname(g_rec.l[3].kernel), "me_q4_k");
    ck_assert_int_eq(g_bufs.n_made, 1);
}
END_TEST

/* without memory for packs: one warning, the plain kernel, and no further attempts */
START_TEST(test_row_packs_no_memory)
{
    use_row_packs();
    g_bufs.refuse = true;
    struct porta_weight w = weight(PORTA_Q4_K, 32, 256);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), 0);
    ck_assert_int_eq(g_rec.n, 1);
    ck_assert_str_eq(kname(g_rec.l[0].kernel), "mv_q4_k");
    ck_assert(g_ctx.d.pack_failed);
    g_bufs.refuse = false;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), 0);
    ck_assert_str_eq(kname(g_rec.l[1].kernel), "mv_q4_k");
    ck_assert_int_eq(g_bufs.n_made, 0);
    /* a failed pack launch frees its buffer and falls back too */
    g_ctx.d.pack_failed = false;
    g_rec.fail_at = 2;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), 0);
    ck_assert_str_eq(kname(g_rec.l[2].kernel), "mv_q4_k");
    ck_assert_int_eq(g_bufs.n_freed, 1);
}
END_TEST

/* bad views and weights are errors with nothing launched */
START_TEST(test_checks)
{
    struct porta_weight w = weight(PORTA_Q4_0, 10, 64);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 2), &w, V(&B2, 0), 1), PORTA_E_INVAL);
    w.off = 1;
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), PORTA_E_INVAL);
    w = weight(PORTA_Q4_0, 10, 64);
    w.n_mat = 4;
    w.mat_stride = w.row_bytes * 10 + 1;    /* stacked experts an odd byte apart */
    struct porta_experts_params ep = { .n_tok = 1, .k = 1 };
    ck_assert_int_eq(kops_matmul_experts(&g_be, V(&B0, 0), &w, V(&B2, 0), &ep), PORTA_E_INVAL);
    w = weight(PORTA_I32, 10, 64);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), PORTA_E_UNSUPPORTED);
    w = weight(PORTA_F16, (int64_t)INT32_MAX + 1, 64);
    ck_assert_int_eq(kops_matmul(&g_be, V(&B0, 0), &w, V(&B2, 0), 1), PORTA_E_UNSUPPORTED);
    w = weight(PORTA_F16, 10, 64);
    int32_t ids[2] = { 3, 10 };
    ck_assert_int_eq(kops_embed(&g_be, V(&B0, 0), &w, ids, 2), PORTA_E_RANGE);
    ck_assert_int_eq(kops_eltwise(&g_be, PORTA_ELT_ADD, V(&B0, 0), V(&B1, 0), V(&B2, 3), 8, 8,
                                  1.0f), PORTA_E_INVAL);
    struct porta_route_params rp = { .n_tok = 1, .n_expert = 4096, .k = 2 };
    ck_assert_int_eq(kops_moe_route(&g_be, V(&B0, 0), V(&B1, 0), V(&B2, 0), &rp),
                     PORTA_E_UNSUPPORTED);
    ck_assert_int_eq(g_rec.n, 0);
}
END_TEST

/* rows beyond the device's grid limit go in slices, each at its own offset */
START_TEST(test_rmsnorm_slices)
{
    g_ctx.d.max_rows = 300;
    ck_assert_int_eq(kops_rmsnorm(&g_be, V(&B0, 0), V(&B1, 40), V(NULL, 0), 700, 16, 1e-5f), 0);
    ck_assert_int_eq(g_rec.n, 3);
    const size_t rows[3] = { 300, 300, 100 };
    for (int i = 0; i < 3; i++) {
        const struct kops_launch *l = &g_rec.l[i];
        ck_assert_str_eq(kname(l->kernel), "rmsnorm");
        ck_assert_uint_eq(l->groups[0], 1);
        ck_assert_uint_eq(l->groups[1], rows[i]);
        ck_assert_uint_eq(l->a[1].v.u64, (uint64_t)i * 300 * 16);          /* y */
        ck_assert_uint_eq(l->a[3].v.u64, 10 + (uint64_t)i * 300 * 16);     /* x */
        ck_assert_ptr_eq(l->a[4].v.buf, &B1);       /* no weight: x stands in, unread */
        ck_assert_int_eq(l->a[6].v.i32, 0);
    }
    /* a failing launch ends the op with its error */
    memset(&g_rec, 0, sizeof g_rec);
    g_rec.fail_at = 1;
    ck_assert_int_eq(kops_rmsnorm(&g_be, V(&B0, 0), V(&B1, 0), V(NULL, 0), 700, 16, 1e-5f),
                     PORTA_E_DEVICE);
    ck_assert_int_eq(g_rec.n, 1);
}
END_TEST

/* attention: a store then an attend launch, positions staged once for both; the work-group
 * grows to cover the value head dim, and dims past the kernel are refused */
START_TEST(test_attention_plan)
{
    int32_t pos[3] = { 0, 1, 2 }, seq[3] = { 0, 0, 1 };
    struct porta_attn_params p = { .n_tok = 3, .n_head = 8, .n_head_kv = 2, .head_dim_k = 128,
                                   .head_dim_v = 2048, .n_ctx = 64, .pos = pos, .seq = seq,
                                   .kv_type = PORTA_F16, .k_cache = V(&B1, 0),
                                   .v_cache = V(&B2, 0), .scale = 0.125f };
    ck_assert_int_eq(kops_attention(&g_be, V(&B0, 0), V(&B0, 0), V(&B0, 0), V(&B0, 0), &p), 0);
    ck_assert_int_eq(g_rec.n, 2);
    const struct kops_launch *s = &g_rec.l[0], *a = &g_rec.l[1];
    ck_assert_str_eq(kname(s->kernel), "kv_f16_store");
    ck_assert(s->any_lsz);
    ck_assert_uint_eq(s->groups[0] * s->lsz, 2 * 2048 + 0);    /* n_kv x the wider head */
    ck_assert_uint_eq(s->groups[1], 3);
    ck_assert_str_eq(kname(a->kernel), "kv_f16_attn");
    ck_assert_uint_eq(a->groups[0], 8);
    ck_assert_uint_eq(a->lsz, 128);                    /* 2048 / 16 dims per work-item */
    ck_assert_int_eq(a->a[8].kind, KOPS_STAGE);        /* positions */
    ck_assert_int_eq(a->a[10].kind, KOPS_STAGE);       /* sequence ids */
    ck_assert_uint_ne(a->a[9].v.u64, a->a[11].v.u64);
    ck_assert_int_eq(a->a[12].v.i32, 1);               /* has_seq */
    ck_assert_float_eq(a->a[a->na - 1].v.f32, 0.125f);
    p.head_dim_v = 8192;
    ck_assert_int_eq(kops_attention(&g_be, V(&B0, 0), V(&B0, 0), V(&B0, 0), V(&B0, 0), &p),
                     PORTA_E_UNSUPPORTED);
    ck_assert_int_eq(g_rec.n, 2);
}
END_TEST

int main(void)
{
    porta_log_set_level(PORTA_LOG_ERROR);
    Suite *s = suite_create("kops");
    TCase *tc = tcase_create("kops");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_kernel_names);
    tcase_add_test(tc, test_get_kernels);
    tcase_add_test(tc, test_env_int);
    tcase_add_test(tc, test_matmul_plans);
    tcase_add_test(tc, test_row_packs);
    tcase_add_test(tc, test_row_packs_no_memory);
    tcase_add_test(tc, test_row_packs_experts);
    tcase_add_test(tc, test_checks);
    tcase_add_test(tc, test_rmsnorm_slices);
    tcase_add_test(tc, test_attention_plan);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
