/* test_backend_ops.c - every op x weight type x shape on every compiled backend (and every
 * CPU kernel set this machine supports) against the scalar reference in backends/cpu/ref.c
 * (dense ops, MoE routing and expert matmuls, multi-head latent attention),
 * by normalized mean squared error, with guard bytes after every output. A backend that
 * cannot open here is reported as skipped with its reason. */
#include <math.h>

#include "backend.h"
#include "quant.h"
#include "../backends/cpu/kernels.h"
#include "../backends/cpu/ref.h"
#include "testutil.h"

#define GUARD 64            /* bytes of sentinel after each output */
#define SENTINEL 0xA5

struct target {
    const char *backend;
    const char *kernels;    /* cpu kernel set, or NULL */
    char label[64];
};

static struct target targets[8];
static int n_targets;

static void find_targets(void)
{
    int n;
    const struct porta_backend_ops *const *reg = porta_backend_registry(&n);
    for (int i = 0; i < n; i++) {
        if (strcmp(reg[i]->name, "cpu") == 0) {
            static const char *sets[] = { "scalar", "avx2", "avx512" };
            for (int s = 0; s < 3; s++) {
                if (s > 0 && !porta_cpu_has(sets[s])) {
                    printf("SKIP cpu/%s: this CPU lacks the instruction set\n", sets[s]);
                    continue;
                }
                targets[n_targets].backend = "cpu";
                targets[n_targets].kernels = sets[s];
                snprintf(targets[n_targets].label, 64, "cpu/%s", sets[s]);
                n_targets++;
            }
        } else {
            targets[n_targets].backend = reg[i]->name;
            snprintf(targets[n_targets].label, 64, "%s", reg[i]->name);
            n_targets++;
        }
    }
}

static struct porta_backend *open_target(const struct target *t)
{
    struct porta_backend_cfg cfg = { .threads = 2, .cpu_kernels = t->kernels, .platform = -1,
                                     .device = 0 }; /* PoCL (a CPU device) is taken only by index */
    struct porta_backend *be = NULL;
    if (porta_backend_open(t->backend, &cfg, &be) != 0) {
        printf("SKIP %s: cannot open: %s\n", t->label, porta_log_last_error());
        return NULL;
    }
    return be;
}

/* upload host data into a fresh buffer with GUARD sentinel bytes after it */
static struct porta_buf *mkbuf(struct porta_backend *be, const void *data, size_t n)
{
    struct porta_buf *b;
    ck_assert_int_eq(porta_be_buf_alloc(be, n + GUARD, PORTA_BUF_ACT, &b), 0);
    uint8_t *tmp = malloc(n + GUARD);
    if (data)
        memcpy(tmp, data, n);
    else
        memset(tmp, 0, n);
    memset(tmp + n, SENTINEL, GUARD);
    ck_assert_int_eq(porta_be_upload(be, b, 0, tmp, n + GUARD), 0);
    free(tmp);
    return b;
}

/* download n bytes and check the guard after them */
static void fetch(struct porta_backend *be, struct porta_buf *b, void *out, size_t n,
                  const char *what)
{
    uint8_t *tmp = malloc(n + GUARD);
    ck_assert_int_eq(porta_be_synchronize(be), 0);
    ck_assert_int_eq(porta_be_download(be, tmp, b, 0, n + GUARD), 0);
    for (int i = 0; i < GUARD; i++)
        ck_assert_msg(tmp[n + i] == SENTINEL, "%s: wrote past its output (guard byte %d)", what, i);
    memcpy(out, tmp, n);
    free(tmp);
}

static void check_nmse(const char *label, const char *what, const float *got, const float *ref,
                       size_t n, double limit)
{
    double e = tu_nmse(got, ref, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(isfinite(got[i]), "%s %s: non-finite output at %zu", label, what, i);
    ck_assert_msg(e <= limit, "%s %s: nmse %.3g > %.3g", label, what, e, limit);
}

/* ---- matmul ---- */

static const enum porta_dtype wtypes[] = {
    PORTA_F32,  PORTA_F16,  PORTA_BF16, PORTA_Q4_0, PORTA_Q4_1, PORTA_Q5_0, PORTA_Q5_1,
    PORTA_Q8_0, PORTA_Q2_K, PORTA_Q3_K, PORTA_Q4_K, PORTA_Q5_K, PORTA_Q6_K,
};
#define N_WTYPES (int)(sizeof wtypes / sizeof wtypes[0])

/* rows of random values in [-amp, amp] in type t */
static void *make_weights_amp(enum porta_dtype t, int64_t rows, int64_t cols, unsigned seed,
                              float amp, size_t *row_bytes)
{
    *row_bytes = porta_row_size(t, cols);
    uint8_t *w = malloc(*row_bytes * rows);
    float *f = malloc(sizeof(float) * cols);
    for (int64_t r = 0; r < rows; r++) {
        tu_fill(f, cols, seed * 1000 + r, amp);
        ck_assert_int_eq(porta_quantize_row(t, f, w + r * *row_bytes, cols), 0);
    }
    free(f);
    return w;
}

static void *make_weights(enum porta_dtype t, int64_t rows, int64_t cols, unsigned seed,
                          size_t *row_bytes)
{
    return make_weights_amp(t, rows, cols, seed, 1.0f, row_bytes);
}

static void run_matmul_amp(struct porta_backend *be, const char *label, enum porta_dtype t,
                           int64_t rows, int64_t cols, int n_tok, float amp)
{
    size_t rb;
    void *w = make_weights_amp(t, rows, cols, (unsigned)(rows + cols + t), amp, &rb);
    float *x = malloc(sizeof(float) * cols * n_tok), *y = malloc(sizeof(float) * rows * n_tok),
          *yr = malloc(sizeof(float) * rows * n_tok);
    tu_fill(x, (size_t)cols * n_tok, 7 + n_tok, 2.0f);
    ck_assert_int_eq(porta_ref_matmul(yr, w, t, rows, cols, rb, x, n_tok), 0);
    float ref_max = 0;
    for (int64_t i = 0; i < rows * n_tok; i++)
        ref_max = fabsf(yr[i]) > ref_max ? fabsf(yr[i]) : ref_max;
    ck_assert_msg(ref_max > 0, "matmul %s: the reference product is all zeros (amp %g)",
                  porta_dtype_name(t), amp);

    struct porta_buf *wb = mkbuf(be, w, rb * rows), *xb = mkbuf(be, x, sizeof(float) * cols * n_tok),
                     *yb = mkbuf(be, NULL, sizeof(float) * rows * n_tok);
    struct porta_weight W = { .type = t, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                              .row_bytes = rb, .buf = wb, .off = 0, .name = "test" };
    char what[96];
    snprintf(what, sizeof what, "matmul %s [%lld x %lld] x %d tok (weights within %g)",
             porta_dtype_name(t), (long long)rows, (long long)cols, n_tok, amp);
    if (!porta_be_supports(be, PORTA_OP_MATMUL, t)) {
        printf("UNSUPPORTED %s %s\n", label, what);
    } else {
        ck_assert_int_eq(porta_be_matmul(be, (struct porta_view){ yb, 0 }, &W,
                                         (struct porta_view){ xb, 0 }, n_tok), 0);
        fetch(be, yb, y, sizeof(float) * rows * n_tok, what);
        /* float weights: only summation order differs; quantized: 8-bit activations */
        double lim = porta_type_traits(t)->quantized ? 2e-4 : 1e-8;
        check_nmse(label, what, y, yr, (size_t)rows * n_tok, lim);
    }
    porta_be_buf_free(be, wb);
    porta_be_buf_free(be, xb);
    porta_be_buf_free(be, yb);
    free(w);
    free(x);
    free(y);
    free(yr);
}

static void run_matmul(struct porta_backend *be, const char *label, enum porta_dtype t,
                       int64_t rows, int64_t cols, int n_tok)
{
    run_matmul_amp(be, label, t, rows, cols, n_tok, 1.0f);
}

START_TEST(test_matmul)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    for (int i = 0; i < N_WTYPES; i++) {
        enum porta_dtype t = wtypes[i];
        int64_t blk = porta_type_traits(t)->blck;
        int64_t c1 = blk == 1 ? 37 : blk * 3, c2 = blk == 1 ? 300 : (blk == 256 ? 512 : 96);
        run_matmul(be, targets[_i].label, t, 1, c1, 1);
        run_matmul(be, targets[_i].label, t, 33, c1, 1);
        run_matmul(be, targets[_i].label, t, 67, c2, 1);
        run_matmul(be, targets[_i].label, t, 19, c2, 7);
        run_matmul(be, targets[_i].label, t, 130, c1, 33);
        /* the token remainders of the tiled kernels: 2 alone, and 14 = 8 + 4 + 2 (AVX2 Q8_0
         * takes 8 tokens a pass, the others 4) */
        run_matmul(be, targets[_i].label, t, 37, c1, 2);
        run_matmul(be, targets[_i].label, t, 21, c2, 14);
        if (blk == 1) {     /* whole blocks of 8 (OpenCL's row packs take those only) */
            run_matmul(be, targets[_i].label, t, 45, 64, 1);
            run_matmul(be, targets[_i].label, t, 45, 64, 9);
        }
    }
    porta_backend_close(be);
}
END_TEST

/* Weights written after a product has used them: the next product sees the new values, for a
 * whole rewrite and for one row (backends that keep a repacked copy of a matrix, the CPU's tiles
 * and OpenCL's row packs, must drop it). */
START_TEST(test_matmul_rewrite)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    for (int i = 0; i < N_WTYPES; i++) {
        enum porta_dtype t = wtypes[i];
        if (!porta_be_supports(be, PORTA_OP_MATMUL, t))
            continue;
        int64_t blk = porta_type_traits(t)->blck, rows = 40, cols = blk == 1 ? 64 : blk * 2;
        size_t rb;
        uint8_t *w = make_weights(t, rows, cols, 5 + i, &rb);
        uint8_t *w2 = make_weights(t, rows, cols, 50 + i, &rb);
        float *x = malloc(sizeof(float) * cols), y[40], yr[40];
        tu_fill(x, (size_t)cols, 11, 2.0f);
        struct porta_buf *wb = mkbuf(be, w, rb * rows), *xb = mkbuf(be, x, sizeof(float) * cols),
                         *yb = mkbuf(be, NULL, sizeof y);
        struct porta_weight W = { .type = t, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                                  .row_bytes = rb, .buf = wb, .off = 0, .name = "test" };
        char what[96];
        for (int step = 0; step < 3; step++) {
            if (step == 1) {            /* every row rewritten */
                memcpy(w, w2, rb * rows);
                ck_assert_int_eq(porta_be_upload(be, wb, 0, w, rb * rows), 0);
            } else if (step == 2) {     /* the last row back to the first weights' row 0 */
                uint8_t *w0 = make_weights(t, 1, cols, 5 + i, &rb);
                memcpy(w + (rows - 1) * rb, w0, rb);
                ck_assert_int_eq(porta_be_upload(be, wb, (rows - 1) * rb, w0, rb), 0);
                free(w0);
            }
            ck_assert_int_eq(porta_ref_matmul(yr, w, t, rows, cols, rb, x, 1), 0);
            ck_assert_int_eq(porta_be_matmul(be, (struct porta_view){ yb, 0 }, &W,
                                             (struct porta_view){ xb, 0 }, 1), 0);
            snprintf(what, sizeof what, "matmul %s [%lld x %lld] after rewrite %d",
                     porta_dtype_name(t), (long long)rows, (long long)cols, step);
            fetch(be, yb, y, sizeof y, what);
            check_nmse(targets[_i].label, what, y, yr, (size_t)rows,
                       porta_type_traits(t)->quantized ? 2e-4 : 1e-8);
        }
        porta_be_buf_free(be, wb);
        porta_be_buf_free(be, xb);
        porta_be_buf_free(be, yb);
        free(w);
        free(w2);
        free(x);
    }
    porta_backend_close(be);
}
END_TEST

/* Weights so small that their half-precision scales (F16: the values) are subnormal halves,
 * as in the Q6_K output matrices of real models: exact decode on every backend (the OpenCL
 * CPU kernels decode halves with integer operations). */
START_TEST(test_matmul_subnormal_scales)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    for (int i = 0; i < N_WTYPES; i++) {
        enum porta_dtype t = wtypes[i];
        if (t == PORTA_F32 || t == PORTA_BF16)
            continue;
        int64_t blk = porta_type_traits(t)->blck, cols = blk == 1 ? 96 : blk == 256 ? 512 : 32 * 37;
        /* block scales near 1e-6: subnormal halves, yet not rounded to zero */
        float amp = blk == 256 ? 1e-3f : t == PORTA_Q8_0 ? 1e-4f : 1e-5f;
        run_matmul_amp(be, targets[_i].label, t, 37, cols, 1, amp);
        run_matmul_amp(be, targets[_i].label, t, 21, cols, 5, amp);
    }
    porta_backend_close(be);
}
END_TEST

/* Rows long enough for the batched paths of the legacy block types (the OpenCL CPU kernels
 * decode the scales of 16 blocks at once and then finish the row block by block): 37 blocks
 * per row (2 batches and a tail of 5), row counts and token counts that are not multiples of
 * the rows per work-group or the tokens per work-item. */
START_TEST(test_matmul_long_rows)
{
    static const enum porta_dtype legacy[] = { PORTA_Q4_0, PORTA_Q4_1, PORTA_Q5_0, PORTA_Q5_1,
                                               PORTA_Q8_0 };
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    for (size_t i = 0; i < sizeof legacy / sizeof legacy[0]; i++) {
        run_matmul(be, targets[_i].label, legacy[i], 41, 32 * 37, 1);
        run_matmul(be, targets[_i].label, legacy[i], 23, 32 * 37, 19);
    }
    porta_backend_close(be);
}
END_TEST

/* The AVX-512 set's prefill tiles with AMX on (where the CPU and OS have it) and off
 * (PORTA_CPU_AMX=0, the VNNI tiles), at token counts that make AMX take whole 16-token tiles
 * and a tail, and a prompt whose activations outgrow L2 (the groups then run per token chunk). */
START_TEST(test_matmul_prefill)
{
    if (!porta_cpu_has("avx512")) {
        printf("SKIP cpu/avx512 prefill: this CPU lacks the instruction set\n");
        return;
    }
    static const enum porta_dtype types[] = { PORTA_Q4_0, PORTA_Q8_0, PORTA_Q4_K, PORTA_Q6_K };
    for (int off = 0; off < 2; off++) {
        struct target t = { .backend = "cpu", .kernels = "avx512" };
        snprintf(t.label, sizeof t.label, "cpu/avx512 amx %s", off ? "off" : "on");
        if (off)
            setenv("PORTA_CPU_AMX", "0", 1);
        struct porta_backend *be = open_target(&t);
        unsetenv("PORTA_CPU_AMX");
        if (!be)
            return;
        for (int i = 0; i < 4; i++) {
            int64_t blk = porta_type_traits(types[i])->blck;
            run_matmul(be, t.label, types[i], 130, blk * 3, 33);
            run_matmul(be, t.label, types[i], 19, blk == 256 ? 512 : 96, 28);
            run_matmul(be, t.label, types[i], 21, 4096, 300);   /* ~1.7 MB of activations */
        }
        porta_backend_close(be);
    }
}
END_TEST

/* ---- embed ---- */

START_TEST(test_embed)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    for (int i = 0; i < N_WTYPES; i++) {
        enum porta_dtype t = wtypes[i];
        int64_t cols = porta_type_traits(t)->blck == 1 ? 45 : porta_type_traits(t)->blck * 2,
                rows = 50;
        size_t rb;
        void *w = make_weights(t, rows, cols, 99 + i, &rb);
        int32_t ids[5] = { 0, 49, 7, 7, 23 };
        float *y = malloc(sizeof(float) * cols * 5), *yr = malloc(sizeof(float) * cols * 5);
        porta_ref_embed(yr, w, t, cols, rb, ids, 5);
        struct porta_buf *wb = mkbuf(be, w, rb * rows), *yb = mkbuf(be, NULL, sizeof(float) * cols * 5);
        struct porta_weight W = { .type = t, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                                  .row_bytes = rb, .buf = wb, .name = "emb" };
        ck_assert_int_eq(porta_be_embed(be, (struct porta_view){ yb, 0 }, &W, ids, 5), 0);
        fetch(be, yb, y, sizeof(float) * cols * 5, "embed");
        check_nmse(targets[_i].label, porta_dtype_name(t), y, yr, (size_t)cols * 5, 1e-12);
        /* an id outside the table is an error, not a read out of bounds */
        int32_t bad = 50;
        ck_assert_int_eq(porta_be_embed(be, (struct porta_view){ yb, 0 }, &W, &bad, 1),
                         PORTA_E_RANGE);
        porta_be_buf_free(be, wb);
        porta_be_buf_free(be, yb);
        free(w);
        free(y);
        free(yr);
    }
    porta_backend_close(be);
}
END_TEST

/* ---- rmsnorm, eltwise ---- */

START_TEST(test_rmsnorm)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    static const int shapes[][2] = { { 1, 7 }, { 3, 64 }, { 17, 576 }, { 5, 1000 } };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], n = shapes[s][1];
        for (int with_w = 0; with_w < 2; with_w++) {
            size_t nb = sizeof(float) * rows * n;
            float *x = malloc(nb), *w = malloc(sizeof(float) * n), *y = malloc(nb), *yr = malloc(nb);
            tu_fill(x, (size_t)rows * n, 3 + s, 3.0f);
            tu_fill(w, n, 4 + s, 1.0f);
            porta_ref_rmsnorm(yr, x, with_w ? w : NULL, rows, n, 1e-5f);
            struct porta_buf *xb = mkbuf(be, x, nb), *wb = mkbuf(be, w, sizeof(float) * n),
                             *yb = mkbuf(be, NULL, nb);
            ck_assert_int_eq(porta_be_rmsnorm(be, (struct porta_view){ yb, 0 },
                                              (struct porta_view){ xb, 0 },
                                              (struct porta_view){ with_w ? wb : NULL, 0 }, rows, n,
                                              1e-5f), 0);
            fetch(be, yb, y, nb, "rmsnorm");
            check_nmse(targets[_i].label, "rmsnorm", y, yr, (size_t)rows * n, 1e-10);
            porta_be_buf_free(be, xb);
            porta_be_buf_free(be, wb);
            porta_be_buf_free(be, yb);
            free(x);
            free(w);
            free(y);
            free(yr);
        }
    }
    porta_backend_close(be);
}
END_TEST

START_TEST(test_eltwise)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    static const enum porta_elt ops[] = { PORTA_ELT_ADD, PORTA_ELT_MUL, PORTA_ELT_SWIGLU,
                                          PORTA_ELT_SCALE, PORTA_ELT_COPY };
    static const int64_t sizes[][2] = { { 1, 1 }, { 37, 37 }, { 5000, 5000 }, { 6000, 24 },
                                        { 96, 1 } };
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s][0], nb = sizes[s][1];
            if (ops[o] == PORTA_ELT_SWIGLU)
                nb = n;
            float *a = malloc(4 * n), *b = malloc(4 * nb), *y = malloc(4 * n), *yr = malloc(4 * n);
            tu_fill(a, n, 11 + s, 4.0f);
            tu_fill(b, nb, 12 + s, 2.0f);
            porta_ref_eltwise(ops[o], yr, a, b, n, nb, 0.37f);
            struct porta_buf *ab = mkbuf(be, a, 4 * n), *bb = mkbuf(be, b, 4 * nb),
                             *yb = mkbuf(be, NULL, 4 * n);
            ck_assert_int_eq(porta_be_eltwise(be, ops[o], (struct porta_view){ yb, 0 },
                                              (struct porta_view){ ab, 0 },
                                              (struct porta_view){ bb, 0 }, n, nb, 0.37f), 0);
            fetch(be, yb, y, 4 * n, "eltwise");
            char what[64];
            snprintf(what, sizeof what, "eltwise op %d n %lld nb %lld", ops[o], (long long)n,
                     (long long)nb);
            check_nmse(targets[_i].label, what, y, yr, n, 1e-10);
            /* in place: y aliases a */
            ck_assert_int_eq(porta_be_eltwise(be, ops[o], (struct porta_view){ ab, 0 },
                                              (struct porta_view){ ab, 0 },
                                              (struct porta_view){ bb, 0 }, n, nb, 0.37f), 0);
            fetch(be, ab, y, 4 * n, "eltwise in place");
            check_nmse(targets[_i].label, what, y, yr, n, 1e-10);
            porta_be_buf_free(be, ab);
            porta_be_buf_free(be, bb);
            porta_be_buf_free(be, yb);
            free(a);
            free(b);
            free(y);
            free(yr);
        }
    porta_backend_close(be);
}
END_TEST

/* ---- rope ---- */

START_TEST(test_rope)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    float ff[32];
    for (int i = 0; i < 32; i++)
        ff[i] = 1.0f + 0.25f * i;
    struct {
        enum porta_rope_style style;
        int n_rot, head_dim;
        float base, scale, ext;
        const float *ff;
    } cases[] = {
        { PORTA_ROPE_NORM, 64, 64, 10000, 1, 0, NULL },
        { PORTA_ROPE_NEOX, 64, 64, 1e6f, 1, 0, NULL },
        { PORTA_ROPE_NORM, 16, 48, 10000, 0.025f, 1, NULL },   /* partial, YaRN */
        { PORTA_ROPE_NEOX, 32, 96, 500000, 0.5f, 0, NULL },    /* partial, linear */
        { PORTA_ROPE_NORM, 64, 64, 500000, 1, 0, ff },         /* frequency factors */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n_tok = 9, n_head = 3, hd = cases[c].head_dim;
        struct porta_rope_params p = { .style = cases[c].style, .n_rot = cases[c].n_rot,
                                       .freq_base = cases[c].base, .freq_scale = cases[c].scale,
                                       .ext_factor = cases[c].ext, .attn_factor = 1.0f,
                                       .beta_fast = 32, .beta_slow = 1, .n_ctx_orig = 4096,
                                       .freq_factors = cases[c].ff };
        int32_t pos[9] = { 0, 1, 2, 3, 100, 1000, 4095, 7, 8 };
        size_t nb = sizeof(float) * n_tok * n_head * hd;
        float *x = malloc(nb), *y = malloc(nb);
        tu_fill(x, nb / 4, 21 + c, 1.0f);
        struct porta_buf *xb = mkbuf(be, x, nb);
        porta_ref_rope(x, n_tok, n_head, hd, pos, &p);
        ck_assert_int_eq(porta_be_rope(be, (struct porta_view){ xb, 0 }, n_tok, n_head, hd, pos, &p),
                         0);
        fetch(be, xb, y, nb, "rope");
        check_nmse(targets[_i].label, "rope", y, x, nb / 4, 1e-9);
        porta_be_buf_free(be, xb);
        free(x);
        free(y);
    }
    porta_backend_close(be);
}
END_TEST

/* ---- attention ---- */

static void run_attention(struct porta_backend *be, const char *label, enum porta_dtype kvt,
                          int n_head, int n_head_kv, int dk, int dv, int n_seq)
{
    int n_ctx = 40, steps[] = { 13, 1, 1, 7 }; /* a prefill chunk, then decode, then a chunk */
    size_t es = kvt == PORTA_F16 ? 2 : 4;
    size_t kc_n = (size_t)n_ctx * n_seq * n_head_kv * dk * es,
           vc_n = (size_t)n_ctx * n_seq * n_head_kv * dv * es;
    void *kc = calloc(1, kc_n), *vc = calloc(1, vc_n);
    struct porta_buf *kcb = mkbuf(be, NULL, kc_n), *vcb = mkbuf(be, NULL, vc_n);
    int past[4] = { 0 };
    for (size_t st = 0; st < sizeof steps / sizeof steps[0]; st++) {
        for (int s = 0; s < n_seq; s++) {
            int n_tok = steps[st];
            int32_t pos[16], seq[16];
            for (int t = 0; t < n_tok; t++) {
                pos[t] = past[s] + t;
                seq[t] = s;
            }
            past[s] += n_tok;
            size_t qn = (size_t)n_tok * n_head * dk, kn = (size_t)n_tok * n_head_kv * dk,
                   vn = (size_t)n_tok * n_head_kv * dv, on = (size_t)n_tok * n_head * dv;
            float *q = malloc(4 * qn), *k = malloc(4 * kn), *v = malloc(4 * vn),
                  *o = malloc(4 * on), *orf = malloc(4 * on);
            unsigned seed = (unsigned)(st * 10 + s);
            tu_fill(q, qn, seed + 1, 1.0f);
            tu_fill(k, kn, seed + 2, 1.0f);
            tu_fill(v, vn, seed + 3, 1.0f);
            struct porta_attn_params p = { .n_tok = n_tok, .n_head = n_head, .n_head_kv = n_head_kv,
                                           .head_dim_k = dk, .head_dim_v = dv,
                                           .scale = 1.0f / sqrtf((float)dk), .pos = pos, .seq = seq,
                                           .n_ctx = n_ctx, .n_seq = n_seq, .kv_type = kvt };
            ck_assert_int_eq(porta_ref_attention(orf, q, k, v, kc, vc, &p), 0);
            struct porta_buf *qb = mkbuf(be, q, 4 * qn), *kb = mkbuf(be, k, 4 * kn),
                             *vb = mkbuf(be, v, 4 * vn), *ob = mkbuf(be, NULL, 4 * on);
            p.k_cache = (struct porta_view){ kcb, 0 };
            p.v_cache = (struct porta_view){ vcb, 0 };
            ck_assert_int_eq(porta_be_attention(be, (struct porta_view){ ob, 0 },
                                                (struct porta_view){ qb, 0 },
                                                (struct porta_view){ kb, 0 },
                                                (struct porta_view){ vb, 0 }, &p), 0);
            char what[96];
            snprintf(what, sizeof what, "attention %s heads %d/%d dims %d/%d seq %d step %zu",
                     kvt == PORTA_F16 ? "f16" : "f32", n_head, n_head_kv, dk, dv, s, st);
            fetch(be, ob, o, 4 * on, what);
            check_nmse(label, what, o, orf, on, 1e-9);
            porta_be_buf_free(be, qb);
            porta_be_buf_free(be, kb);
            porta_be_buf_free(be, vb);
            porta_be_buf_free(be, ob);
            free(q);
            free(k);
            free(v);
            free(o);
            free(orf);
        }
    }
    /* a position outside the cache is an error */
    int32_t bad = n_ctx;
    struct porta_attn_params p = { .n_tok = 1, .n_head = n_head, .n_head_kv = n_head_kv,
                                   .head_dim_k = dk, .head_dim_v = dv, .scale = 1, .pos = &bad,
                                   .n_ctx = n_ctx, .n_seq = n_seq, .kv_type = kvt,
                                   .k_cache = { kcb, 0 }, .v_cache = { vcb, 0 } };
    ck_assert_int_eq(porta_be_attention(be, (struct porta_view){ kcb, 0 }, (struct porta_view){ kcb, 0 },
                                        (struct porta_view){ kcb, 0 }, (struct porta_view){ kcb, 0 }, &p),
                     PORTA_E_RANGE);
    porta_be_buf_free(be, kcb);
    porta_be_buf_free(be, vcb);
    free(kc);
    free(vc);
}

START_TEST(test_attention)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    const char *l = targets[_i].label;
    run_attention(be, l, PORTA_F32, 4, 4, 64, 64, 1);
    run_attention(be, l, PORTA_F32, 6, 2, 32, 32, 2);   /* GQA, two sequences */
    run_attention(be, l, PORTA_F16, 9, 3, 64, 64, 1);   /* SmolLM2's head layout */
    run_attention(be, l, PORTA_F16, 4, 1, 48, 32, 3);   /* k and v head sizes differ */
    run_attention(be, l, PORTA_F32, 2, 2, 100, 100, 1); /* not a multiple of any width */
    porta_backend_close(be);
}
END_TEST

/* ---- mixture of experts: routing ---- */

struct route_case {
    const char *what;
    int n_tok, n_expert, k;
    enum porta_gating gating;
    bool norm, bias;
    float scale;
    int n_group, topk_group;
    int ties;               /* 0: random logits; 1: all equal; 2: values from a set of 3 */
};

static void run_route(struct porta_backend *be, const char *label, const struct route_case *rc)
{
    int nt = rc->n_tok, ne = rc->n_expert, k = rc->k;
    float *logits = malloc(sizeof(float) * nt * ne), *bias = malloc(sizeof(float) * ne);
    tu_fill(logits, (size_t)nt * ne, (unsigned)(ne * 7 + k), 3.0f);
    tu_fill(bias, ne, (unsigned)(ne + 5), 0.1f);
    for (int i = 0; i < nt * ne; i++) {
        if (rc->ties == 1)
            logits[i] = 0.25f;
        else if (rc->ties == 2)
            logits[i] = (float)((i * 7 + i / ne) % 3) - 1.0f;
    }
    struct porta_route_params p = { .n_tok = nt, .n_expert = ne, .k = k, .gating = rc->gating,
                                    .norm = rc->norm, .scale = rc->scale,
                                    .n_group = rc->n_group, .topk_group = rc->topk_group };
    int32_t *ids = malloc(4 * nt * k), *idr = malloc(4 * nt * k);
    float *w = malloc(4 * nt * k), *wr = malloc(4 * nt * k);
    ck_assert_int_eq(porta_ref_moe_route(idr, wr, logits, rc->bias ? bias : NULL, &p), 0);
    struct porta_buf *lb = mkbuf(be, logits, 4 * nt * ne), *bb = mkbuf(be, bias, 4 * ne),
                     *ib = mkbuf(be, NULL, 4 * nt * k), *wb = mkbuf(be, NULL, 4 * nt * k);
    p.bias = (struct porta_view){ rc->bias ? bb : NULL, 0 };
    if (!porta_be_supports(be, PORTA_OP_MOE_ROUTE, PORTA_F32)) {
        printf("UNSUPPORTED %s moe_route\n", label);
    } else {
        ck_assert_int_eq(porta_be_moe_route(be, (struct porta_view){ ib, 0 },
                                            (struct porta_view){ wb, 0 },
                                            (struct porta_view){ lb, 0 }, &p), 0);
        fetch(be, ib, ids, 4 * nt * k, "moe_route ids");
        fetch(be, wb, w, 4 * nt * k, "moe_route weights");
        for (int i = 0; i < nt * k; i++)
            ck_assert_msg(ids[i] == idr[i], "%s moe_route %s: token %d slot %d: expert %d, "
                          "reference %d", label, rc->what, i / k, i % k, ids[i], idr[i]);
        check_nmse(label, rc->what, w, wr, (size_t)nt * k, 1e-10);
    }
    /* properties of the reference itself: distinct ids, in range, decreasing biased score,
     * weights summing to scale when normalised */
    for (int t = 0; t < nt; t++) {
        float sum = 0;
        for (int j = 0; j < k; j++) {
            int e = idr[t * k + j];
            ck_assert(e >= 0 && e < ne);
            for (int i = 0; i < j; i++)
                ck_assert_int_ne(idr[t * k + i], e);
            sum += wr[t * k + j];
        }
        if (rc->norm)
            ck_assert_msg(fabsf(sum - rc->scale) < 1e-5f * rc->scale, "%s: weights sum %g",
                          rc->what, sum);
        if (rc->ties == 1) /* all equal: the lowest ids, equal weights */
            for (int j = 0; j < k; j++) {
                ck_assert_int_eq(idr[t * k + j], j);
                ck_assert_float_eq_tol(wr[t * k + j], rc->norm ? rc->scale / k : 1.0f / ne,
                                       1e-6f);
            }
    }
    porta_be_buf_free(be, lb);
    porta_be_buf_free(be, bb);
    porta_be_buf_free(be, ib);
    porta_be_buf_free(be, wb);
    free(logits);
    free(bias);
    free(ids);
    free(idr);
    free(w);
    free(wr);
}

/* hand-made cases with known answers, so that the reference itself can fail */
START_TEST(test_route_reference)
{
    /* softmax over 4, top-2, not normalised: exp weights of the two largest */
    float l1[4] = { 0.0f, 2.0f, 1.0f, 2.0f };
    int32_t id[4];
    float w[4];
    struct porta_route_params p = { .n_tok = 1, .n_expert = 4, .k = 2,
                                    .gating = PORTA_GATING_SOFTMAX, .scale = 1.0f };
    ck_assert_int_eq(porta_ref_moe_route(id, w, l1, NULL, &p), 0);
    double z = 1 + 2 * exp(2.0) + exp(1.0);
    ck_assert_int_eq(id[0], 1); /* a tie between 1 and 3: the lower index first */
    ck_assert_int_eq(id[1], 3);
    ck_assert_float_eq_tol(w[0], exp(2.0) / z, 1e-6);
    /* normalised + scaled: 0.5 * 3 each */
    p.norm = true;
    p.scale = 3.0f;
    ck_assert_int_eq(porta_ref_moe_route(id, w, l1, NULL, &p), 0);
    ck_assert_float_eq_tol(w[0], 1.5f, 1e-6);
    ck_assert_float_eq_tol(w[1], 1.5f, 1e-6);
    /* sigmoid + bias + groups: 8 experts in 4 groups of 2, keep 2 groups, top-2.
     * Biased scores: expert 0 is the single best, but its group {0,1} sums lowest, so the
     * choice comes from groups {4,5} (sum 1.3) and {6,7} (sum 1.2); weights are the
     * unbiased sigmoids. */
    float s[8] = { 0.9f, -0.5f, 0.5f, 0.05f, 0.6f, 0.7f, 0.65f, 0.55f }; /* biased targets */
    float bias[8] = { 0, -0.6f, 0.1f, 0, -0.1f, 0, 0, 0 };
    float logit[8];
    for (int e = 0; e < 8; e++) { /* sigmoid(logit) + bias = s */
        float sg = s[e] - bias[e];
        logit[e] = logf(sg / (1 - sg));
    }
    struct porta_route_params pg = { .n_tok = 1, .n_expert = 8, .k = 2,
                                     .gating = PORTA_GATING_SIGMOID, .norm = true, .scale = 2.5f,
                                     .n_group = 4, .topk_group = 2 };
    ck_assert_int_eq(porta_ref_moe_route(id, w, logit, bias, &pg), 0);
    ck_assert_int_eq(id[0], 5);
    ck_assert_int_eq(id[1], 6);
    ck_assert_float_eq_tol(w[0], 2.5f * 0.7f / (0.7f + 0.65f), 1e-5);
    /* without the group limit expert 0 wins */
    pg.n_group = 1;
    ck_assert_int_eq(porta_ref_moe_route(id, w, logit, bias, &pg), 0);
    ck_assert_int_eq(id[0], 0);
    ck_assert_int_eq(id[1], 5);
}
END_TEST

START_TEST(test_moe_route)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    const enum porta_gating SM = PORTA_GATING_SOFTMAX, SG = PORTA_GATING_SIGMOID;
    const struct route_case cases[] = {
        /* what                                 tok exp k gate norm   bias  scale grp top ties */
        { "softmax top-2 of 8 (qwen2moe)",        9, 8, 2, SM, false, false, 1, 0, 0, 0 },
        { "softmax top-2 normalised (mixtral)",   5, 8, 2, SM, true, false, 1, 0, 0, 0 },
        { "softmax top-6 of 64, scaled",         33, 64, 6, SM, false, false, 1.5f, 0, 0, 0 },
        { "all logits tied",                      3, 8, 3, SM, true, false, 1, 0, 0, 1 },
        { "three-valued ties",                   11, 16, 4, SM, false, false, 1, 0, 0, 2 },
        { "k = n_expert",                         2, 5, 5, SM, true, false, 1, 0, 0, 0 },
        { "sigmoid + bias (V3, no groups)",       7, 8, 2, SG, true, true, 2.5f, 0, 0, 0 },
        { "sigmoid + bias + groups 4/2",         13, 8, 2, SG, true, true, 2.5f, 4, 2, 0 },
        { "sigmoid groups 8/4 top-8 of 256 (V3)", 4, 256, 8, SG, true, true, 2.5f, 8, 4, 0 },
        { "sigmoid groups with ties",             6, 16, 3, SG, true, true, 1, 4, 2, 2 },
        { "one expert: a sigmoid gate",           9, 1, 1, SG, false, false, 1, 0, 0, 0 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        run_route(be, targets[_i].label, &cases[c]);
    /* bad parameters are errors, not crashes */
    struct porta_buf *b = mkbuf(be, NULL, 1024);
    struct porta_view v = { b, 0 };
    struct porta_route_params bad = { .n_tok = 1, .n_expert = 8, .k = 9,
                                      .gating = PORTA_GATING_SOFTMAX, .scale = 1 };
    if (porta_be_supports(be, PORTA_OP_MOE_ROUTE, PORTA_F32)) {
        ck_assert_int_eq(porta_be_moe_route(be, v, v, v, &bad), PORTA_E_INVAL);
        bad.k = 2;
        bad.n_group = 3; /* 8 experts do not split into 3 groups */
        bad.topk_group = 1;
        ck_assert_int_eq(porta_be_moe_route(be, v, v, v, &bad), PORTA_E_INVAL);
        bad.n_group = 0;
        bad.n_tok = 100; /* logits larger than the buffer */
        ck_assert_int_eq(porta_be_moe_route(be, v, v, v, &bad), PORTA_E_INVAL);
    }
    porta_be_buf_free(be, b);
    porta_backend_close(be);
}
END_TEST

/* ---- mixture of experts: expert matmul ---- */

struct xm_case {
    int n_tok, k, n_mat, rows;
    bool per_slot, weighted, head_ids, strided, bad_id;
};

static void run_matmul_experts(struct porta_backend *be, const char *label, enum porta_dtype t,
                               int64_t cols, const struct xm_case *xc)
{
    int nt = xc->n_tok, k = xc->k, nm = xc->n_mat, slots = nt * k;
    /* strided: every matrix holds 2 * rows rows, the view takes the second half of each */
    int64_t rows = xc->rows, stored = xc->strided ? 2 * rows : rows;
    size_t rb;
    uint8_t *w = make_weights(t, stored * nm, cols, (unsigned)(cols + rows + t), &rb);
    struct porta_weight W = { .type = t, .n_rows = rows, .n_cols = cols, .n_mat = nm,
                              .row_bytes = rb, .name = "experts" };
    size_t woff = 0;
    if (xc->strided) {
        W.mat_stride = (size_t)stored * rb;
        woff = (size_t)rows * rb;
    }
    int64_t nx = (xc->per_slot ? slots : nt) * cols, ny = (xc->weighted ? nt : slots) * rows;
    float *x = malloc(4 * nx), *y = malloc(4 * ny), *yr = malloc(4 * ny), *wt = malloc(4 * slots);
    int32_t *ids = malloc(4 * slots);
    tu_fill(x, nx, (unsigned)(nt + k + 3), 2.0f);
    tu_fill(wt, slots, 77, 1.0f);
    /* expert 1 is never picked; the others cycle, with repeats across tokens */
    for (int s = 0; s < slots; s++) {
        int e = (s * 3 + s / k) % nm;
        ids[s] = e == 1 && nm > 2 ? (e + 1) % nm : e;
    }
    for (int tk = 0; tk < nt; tk++) /* distinct within a token, as routing gives */
        for (int j = 1; j < k; j++)
            for (int i = 0; i < j; i++)
                if (ids[tk * k + j] == ids[tk * k + i]) {
                    ids[tk * k + j] = (ids[tk * k + j] + 1) % nm;
                    i = -1;
                }
    if (xc->bad_id)
        ids[slots - 1] = nm; /* out of range: contributes zeros */
    ck_assert_int_eq(porta_ref_matmul_experts(yr, w + woff, &W, x, xc->head_ids ? NULL : ids,
                                              xc->weighted ? wt : NULL, nt, k, xc->per_slot), 0);
    if (xc->bad_id && !xc->weighted)
        for (int64_t r = 0; r < rows; r++)
            ck_assert(yr[(size_t)(slots - 1) * rows + r] == 0.0f);
    struct porta_buf *wb = mkbuf(be, w, rb * stored * nm), *xb = mkbuf(be, x, 4 * nx),
                     *yb = mkbuf(be, NULL, 4 * ny), *ib = mkbuf(be, ids, 4 * slots),
                     *tb = mkbuf(be, wt, 4 * slots);
    W.buf = wb;
    W.off = woff;
    struct porta_experts_params p = { .n_tok = nt, .k = k, .x_per_slot = xc->per_slot,
                                      .ids = { xc->head_ids ? NULL : ib, 0 },
                                      .weights = { xc->weighted ? tb : NULL, 0 } };
    char what[160];
    snprintf(what, sizeof what, "matmul_experts %s [%d x %lld x %lld] %d tok x %d%s%s%s%s%s",
             porta_dtype_name(t), nm, (long long)rows, (long long)cols, nt, k,
             xc->per_slot ? " per-slot" : "", xc->weighted ? " weighted" : "",
             xc->head_ids ? " per-head" : "", xc->strided ? " strided" : "",
             xc->bad_id ? " bad-id" : "");
    if (!porta_be_supports(be, PORTA_OP_MATMUL_EXPERTS, t)) {
        printf("UNSUPPORTED %s %s\n", label, what);
    } else {
        ck_assert_int_eq(porta_be_matmul_experts(be, (struct porta_view){ yb, 0 }, &W,
                                                 (struct porta_view){ xb, 0 }, &p), 0);
        fetch(be, yb, y, 4 * ny, what);
        double lim = porta_type_traits(t)->quantized ? 2e-4 : 1e-8;
        check_nmse(label, what, y, yr, (size_t)ny, lim);
    }
    porta_be_buf_free(be, wb);
    porta_be_buf_free(be, xb);
    porta_be_buf_free(be, yb);
    porta_be_buf_free(be, ib);
    porta_be_buf_free(be, tb);
    free(w);
    free(x);
    free(y);
    free(yr);
    free(wt);
    free(ids);
}

START_TEST(test_matmul_experts)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    static const struct xm_case cases[] = {
        /* n_tok k n_mat rows  per_slot weighted head_ids strided bad_id */
        { 1, 2, 4, 19, false, false, false, false, false },  /* decode, gate/up */
        { 9, 3, 6, 33, false, false, false, false, true },   /* prefill chunk, a bad id */
        { 1, 2, 4, 21, true, true, false, false, false },    /* decode, down + sum */
        { 13, 2, 5, 17, true, true, false, false, true },    /* prefill, down + sum, bad id */
        { 3, 4, 4, 16, true, false, true, false, false },    /* per-head batched (MLA) */
        { 5, 3, 3, 9, false, false, true, true, false },     /* strided per-head view */
        /* the tile path (repacked rows, tile GEMM): rows in whole 16-row groups (one pack for
         * the stack) and not; enough tokens that an expert's run is cut into several tiles
         * (64 slots each) and ends in a partial one */
        { 1, 6, 16, 48, false, false, false, false, false }, /* decode, top-6 of 16 */
        { 1, 6, 16, 48, true, true, false, false, false },   /* decode, down + sum */
        { 70, 4, 8, 32, false, false, false, false, true },  /* prefill, one pack, bad id */
        { 70, 4, 8, 32, true, true, false, false, false },   /* prefill, down + sum */
        { 150, 2, 3, 40, true, true, false, false, false },  /* ~100 slots per expert */
        { 66, 3, 4, 16, false, false, true, true, false },   /* per-head strided, many tok */
    };
    for (int i = 0; i < N_WTYPES; i++) {
        enum porta_dtype t = wtypes[i];
        int64_t blk = porta_type_traits(t)->blck;
        int64_t cols = blk == 1 ? 37 : (blk == 256 ? 256 : blk * 3);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            run_matmul_experts(be, targets[_i].label, t, cols, &cases[c]);
    }
    porta_backend_close(be);
}
END_TEST

/* Routing feeds the expert matmul: logits with three-way ties among 16 experts (ties go to the
 * lower index), experts 0-3 never eligible (their logits lowest), 72 tokens so each chosen
 * expert has more than one 64-slot tile run; ids and weights from the backend's moe_route,
 * products against the reference on the reference's ids (the same, checked exactly) */
START_TEST(test_route_then_experts)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    enum { NT = 72, NE = 16, K = 4, ROWS = 32 };
    static const enum porta_dtype types[] = { PORTA_Q4_K, PORTA_Q8_0, PORTA_Q4_0, PORTA_F16 };
    float *logits = malloc(sizeof(float) * NT * NE), wr[NT * K], *x = malloc(4 * NT * 256);
    int32_t idr[NT * K], idb[NT * K];
    for (int t = 0; t < NT; t++)
        for (int e = 0; e < NE; e++)
            logits[t * NE + e] = e < 4 ? -8.0f : (float)((e * 5 + t) % 3);
    tu_fill(x, NT * 256, 91, 1.5f);
    struct porta_route_params rp = { .n_tok = NT, .n_expert = NE, .k = K,
                                     .gating = PORTA_GATING_SOFTMAX, .norm = true, .scale = 1 };
    ck_assert_int_eq(porta_ref_moe_route(idr, wr, logits, NULL, &rp), 0);
    struct porta_buf *lb = mkbuf(be, logits, sizeof(float) * NT * NE),
                     *ib = mkbuf(be, NULL, sizeof idb), *wb = mkbuf(be, NULL, sizeof wr),
                     *xb = mkbuf(be, x, 4 * NT * 256), *yb = mkbuf(be, NULL, 4 * NT * ROWS);
    if (porta_be_supports(be, PORTA_OP_MOE_ROUTE, PORTA_F32)) {
        ck_assert_int_eq(porta_be_moe_route(be, (struct porta_view){ ib, 0 },
                                            (struct porta_view){ wb, 0 },
                                            (struct porta_view){ lb, 0 }, &rp), 0);
        fetch(be, ib, idb, sizeof idb, "route ids");
        for (int i = 0; i < NT * K; i++) {
            ck_assert_msg(idb[i] == idr[i], "%s: tied route slot %d: %d, reference %d",
                          targets[_i].label, i, idb[i], idr[i]);
            ck_assert_int_ge(idb[i], 4);
        }
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            enum porta_dtype t = types[ti];
            size_t rb;
            uint8_t *w = make_weights(t, (int64_t)ROWS * NE, 256, 7 + (unsigned)t, &rb);
            struct porta_weight W = { .type = t, .n_rows = ROWS, .n_cols = 256, .n_mat = NE,
                                      .row_bytes = rb, .name = "experts" };
            float *y = malloc(4 * NT * ROWS), *yr = malloc(4 * NT * ROWS);
            ck_assert_int_eq(porta_ref_matmul_experts(yr, w, &W, x, idr, wr, NT, K, false), 0);
            struct porta_buf *eb = mkbuf(be, w, rb * ROWS * NE);
            W.buf = eb;
            struct porta_experts_params ep = { .n_tok = NT, .k = K, .ids = { ib, 0 },
                                               .weights = { wb, 0 } };
            char what[96];
            snprintf(what, sizeof what, "route (ties) + matmul_experts %s, %d tok",
                     porta_dtype_name(t), NT);
            if (porta_be_supports(be, PORTA_OP_MATMUL_EXPERTS, t)) {
                ck_assert_int_eq(porta_be_matmul_experts(be, (struct porta_view){ yb, 0 }, &W,
                                                         (struct porta_view){ xb, 0 }, &ep), 0);
                fetch(be, yb, y, 4 * NT * ROWS, what);
                check_nmse(targets[_i].label, what, y, yr, NT * ROWS,
                           porta_type_traits(t)->quantized ? 2e-4 : 1e-6);
            } else {
                printf("UNSUPPORTED %s %s\n", targets[_i].label, what);
            }
            porta_be_buf_free(be, eb);
            free(w);
            free(y);
            free(yr);
        }
    }
    porta_be_buf_free(be, lb);
    porta_be_buf_free(be, ib);
    porta_be_buf_free(be, wb);
    porta_be_buf_free(be, xb);
    porta_be_buf_free(be, yb);
    free(logits);
    free(x);
    porta_backend_close(be);
}
END_TEST

/* ---- multi-head latent attention ---- */

/* The MLA reference equals the plain attention reference run as MQA with q = [q_lat | q_rope],
 * k = [lat | rope] and v = lat: an independent check of its definition. */
START_TEST(test_mla_reference)
{
    int n_tok = 6, H = 3, lat = 20, rope = 8, row = lat + rope, n_ctx = 8;
    float ql[6 * 3 * 20], qr[6 * 3 * 8], kl[6 * 20], kr[6 * 8], out[6 * 3 * 20],
          q[6 * 3 * 28], k[6 * 28], o2[6 * 3 * 20];
    tu_fill(ql, sizeof ql / 4, 1, 1.0f);
    tu_fill(qr, sizeof qr / 4, 2, 1.0f);
    tu_fill(kl, sizeof kl / 4, 3, 1.0f);
    tu_fill(kr, sizeof kr / 4, 4, 1.0f);
    for (int t = 0; t < n_tok; t++) {
        for (int h = 0; h < H; h++) {
            memcpy(q + (t * H + h) * row, ql + (t * H + h) * lat, 4 * lat);
            memcpy(q + (t * H + h) * row + lat, qr + (t * H + h) * rope, 4 * rope);
        }
        memcpy(k + t * row, kl + t * lat, 4 * lat);
        memcpy(k + t * row + lat, kr + t * rope, 4 * rope);
    }
    int32_t pos[6] = { 0, 1, 2, 3, 4, 5 };
    struct porta_attn_params p = { .n_tok = n_tok, .n_head = H, .n_head_kv = 1,
                                   .head_dim_k = row, .head_dim_v = lat, .scale = 0.3f,
                                   .pos = pos, .n_ctx = n_ctx, .n_seq = 1, .kv_type = PORTA_F32 };
    float cache[8 * 28] = { 0 }, kc[8 * 28] = { 0 }, vc[8 * 20] = { 0 };
    ck_assert_int_eq(porta_ref_attention_mla(out, ql, qr, kl, kr, cache, &p), 0);
    ck_assert_int_eq(porta_ref_attention(o2, q, k, kl, kc, vc, &p), 0);
    ck_assert_msg(tu_nmse(out, o2, sizeof out / 4) < 1e-12, "MLA reference != MQA reference");
    ck_assert_msg(memcmp(cache, kc, sizeof kc) == 0, "MLA cache rows are not [lat | rope]");
}
END_TEST

/* long: a context past the kernels' 64-position softmax chunks and 16-row conversion blocks */
static void run_mla_ctx(struct porta_backend *be, const char *label, enum porta_dtype kvt,
                        int H, int lat, int rope, int n_seq, bool long_ctx)
{
    int n_ctx = long_ctx ? 160 : 40, row = lat + rope;
    int steps[4] = { 13, 1, 1, 7 };
    if (long_ctx) {
        steps[0] = 70;
        steps[3] = 61;
    }
    size_t es = kvt == PORTA_F16 ? 2 : 4, cn = (size_t)n_ctx * n_seq * row * es;
    void *cache = calloc(1, cn);
    struct porta_buf *cb = mkbuf(be, NULL, cn);
    int past[4] = { 0 };
    for (size_t st = 0; st < sizeof steps / sizeof steps[0]; st++)
        for (int s = 0; s < n_seq; s++) {
            int n_tok = steps[st];
            int32_t pos[128], seq[128];
            for (int t = 0; t < n_tok; t++) {
                pos[t] = past[s] + t;
                seq[t] = s;
            }
            past[s] += n_tok;
            size_t nql = (size_t)n_tok * H * lat, nqr = (size_t)n_tok * H * rope,
                   nkl = (size_t)n_tok * lat, nkr = (size_t)n_tok * rope;
            float *ql = malloc(4 * nql), *qr = malloc(4 * nqr), *kl = malloc(4 * nkl),
                  *kr = malloc(4 * nkr), *o = malloc(4 * nql), *orf = malloc(4 * nql);
            unsigned seed = (unsigned)(st * 10 + s + 100);
            tu_fill(ql, nql, seed + 1, 1.0f);
            tu_fill(qr, nqr, seed + 2, 1.0f);
            tu_fill(kl, nkl, seed + 3, 1.0f);
            tu_fill(kr, nkr, seed + 4, 1.0f);
            struct porta_attn_params p = { .n_tok = n_tok, .n_head = H, .n_head_kv = 1,
                                           .head_dim_k = row, .head_dim_v = lat,
                                           .scale = 1.0f / sqrtf((float)row), .pos = pos,
                                           .seq = seq, .n_ctx = n_ctx, .n_seq = n_seq,
                                           .kv_type = kvt };
            ck_assert_int_eq(porta_ref_attention_mla(orf, ql, qr, kl, kr, cache, &p), 0);
            struct porta_buf *qlb = mkbuf(be, ql, 4 * nql), *qrb = mkbuf(be, qr, 4 * nqr),
                             *klb = mkbuf(be, kl, 4 * nkl), *krb = mkbuf(be, kr, 4 * nkr),
                             *ob = mkbuf(be, NULL, 4 * nql);
            p.k_cache = (struct porta_view){ cb, 0 };
            char what[96];
            snprintf(what, sizeof what, "attention_mla %s heads %d lat %d rope %d seq %d step %zu",
                     kvt == PORTA_F16 ? "f16" : "f32", H, lat, rope, s, st);
            if (!porta_be_supports(be, PORTA_OP_ATTENTION_MLA, kvt)) {
                printf("UNSUPPORTED %s %s\n", label, what);
            } else {
                ck_assert_int_eq(porta_be_attention_mla(be, (struct porta_view){ ob, 0 },
                                                        (struct porta_view){ qlb, 0 },
                                                        (struct porta_view){ qrb, 0 },
                                                        (struct porta_view){ klb, 0 },
                                                        (struct porta_view){ krb, 0 }, &p), 0);
                fetch(be, ob, o, 4 * nql, what);
                check_nmse(label, what, o, orf, nql, 1e-9);
            }
            porta_be_buf_free(be, qlb);
            porta_be_buf_free(be, qrb);
            porta_be_buf_free(be, klb);
            porta_be_buf_free(be, krb);
            porta_be_buf_free(be, ob);
            free(ql);
            free(qr);
            free(kl);
            free(kr);
            free(o);
            free(orf);
        }
    /* the cache holds exactly the compressed rows */
    void *got = malloc(cn);
    fetch(be, cb, got, cn, "attention_mla cache");
    if (kvt == PORTA_F32 && porta_be_supports(be, PORTA_OP_ATTENTION_MLA, kvt))
        ck_assert_msg(memcmp(got, cache, cn) == 0, "%s: MLA cache differs from the reference",
                      label);
    /* a position outside the cache is an error */
    int32_t bad = n_ctx;
    struct porta_attn_params p = { .n_tok = 1, .n_head = H, .n_head_kv = 1, .head_dim_k = row,
                                   .head_dim_v = lat, .scale = 1, .pos = &bad, .n_ctx = n_ctx,
                                   .n_seq = n_seq, .kv_type = kvt, .k_cache = { cb, 0 } };
    struct porta_view v = { cb, 0 };
    if (porta_be_supports(be, PORTA_OP_ATTENTION_MLA, kvt))
        ck_assert_int_eq(porta_be_attention_mla(be, v, v, v, v, v, &p), PORTA_E_RANGE);
    free(got);
    porta_be_buf_free(be, cb);
    free(cache);
}

static void run_mla(struct porta_backend *be, const char *label, enum porta_dtype kvt, int H,
                    int lat, int rope, int n_seq)
{
    run_mla_ctx(be, label, kvt, H, lat, rope, n_seq, false);
}

START_TEST(test_attention_mla)
{
    struct porta_backend *be = open_target(&targets[_i]);
    if (!be)
        return;
    const char *l = targets[_i].label;
    run_mla(be, l, PORTA_F32, 4, 32, 16, 1);   /* the deepseek2 test models' shape */
    run_mla(be, l, PORTA_F16, 16, 64, 16, 2);  /* more heads, two sequences */
    run_mla(be, l, PORTA_F32, 3, 37, 6, 1);    /* odd sizes */
    run_mla_ctx(be, l, PORTA_F16, 8, 128, 32, 1, true); /* 134 positions: several chunks */
    run_mla_ctx(be, l, PORTA_F32, 5, 40, 8, 2, true);
    porta_backend_close(be);
}
END_TEST

int main(void)
{
    find_targets();
    Suite *s = suite_create("backend_ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_matmul, 0, n_targets);
    tcase_add_loop_test(tc, test_matmul_long_rows, 0, n_targets);
    tcase_add_loop_test(tc, test_matmul_rewrite, 0, n_targets);
    tcase_add_loop_test(tc, test_matmul_subnormal_scales, 0, n_targets);
    tcase_add_test(tc, test_matmul_prefill);
    tcase_add_loop_test(tc, test_embed, 0, n_targets);
    tcase_add_loop_test(tc, test_rmsnorm, 0, n_targets);
    tcase_add_loop_test(tc, test_eltwise, 0, n_targets);
    tcase_add_loop_test(tc, test_rope, 0, n_targets);
    tcase_add_loop_test(tc, test_attention, 0, n_targets);
    tcase_add_test(tc, test_route_reference);
    tcase_add_test(tc, test_mla_reference);
    tcase_add_loop_test(tc, test_moe_route, 0, n_targets);
    tcase_add_loop_test(tc, test_matmul_experts, 0, n_targets);
    tcase_add_loop_test(tc, test_route_then_experts, 0, n_targets);
    tcase_add_loop_test(tc, test_attention_mla, 0, n_targets);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
