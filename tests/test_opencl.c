/* test_opencl.c - what only the OpenCL backend has: device listing and choice, the program
 * builder and its on-disk cache (hit, corrupt and truncated entries, build errors with their
 * log), error paths (bad config, oversized and misaligned requests), the staging ring for host
 * arrays, zero-copy host buffers, and the GPU launch shapes run on whatever device is here
 * (matmul, experts, attention, MLA).
 * The ops themselves are compared with the reference in test_backend_ops.c. */
#include "testutil.h"

#ifdef PORTA_HAVE_OPENCL

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "quant.h"
#include "../backends/cpu/ref.h"
#include "../backends/opencl/cl_priv.h"

extern const struct porta_backend_ops porta_backend_opencl;

/* ---- log capture ---- */

static char g_log[16384];
static void sink(enum porta_log_level level, const char *msg, void *user)
{
    size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", msg);
}
static void capture(void)
{
    g_log[0] = 0;
    porta_log_set_sink(sink, NULL);
}

/* ---- fixture: one opened backend per test (each test runs in its own process) ---- */

static struct porta_backend g_be;
static bool g_open;
static const struct porta_backend_ops *O = &porta_backend_opencl;

static int open_be_packs(const char *shapes, bool clblast, bool row_packs)
{
    if (shapes)
        setenv("PORTA_OPENCL_SHAPES", shapes, 1);
    memset(&g_be, 0, sizeof g_be);
    g_be.ops = O;
    struct porta_backend_cfg cfg = { .platform = -1, .device = 0, .clblast = clblast,
                                     .opencl_no_row_packs = !row_packs };
    int rc = O->open(&g_be, &cfg);
    g_open = rc == 0;
    if (!g_open)
        printf("SKIP opencl: cannot open (%s): %s\n", porta_strerror(rc), porta_log_last_error());
    return rc;
}

static int open_be_cfg(const char *shapes, bool clblast)
{
    return open_be_packs(shapes, clblast, true);
}

static int open_be(const char *shapes)
{
    return open_be_cfg(shapes, false);
}

static void setup(void)
{
    capture();
    open_be(NULL);
}

static void teardown(void)
{
    if (g_open)
        O->close(&g_be);
    g_open = false;
    porta_log_set_sink(NULL, NULL);
}

#define NEED_DEVICE()                                                                          \
    do {                                                                                       \
        if (!g_open)                                                                           \
            return;                                                                            \
    } while (0)

static struct porta_buf *upbuf(const void *p, size_t n)
{
    struct porta_buf *b = NULL;
    ck_assert_int_eq(O->buf_alloc(&g_be, n, PORTA_BUF_ACT, &b), 0);
    if (p)
        ck_assert_int_eq(O->upload(&g_be, b, 0, p, n), 0);
    return b;
}

static void downbuf(void *dst, struct porta_buf *b, size_t n)
{
    ck_assert_int_eq(O->synchronize(&g_be), 0);
    ck_assert_int_eq(O->download(&g_be, dst, b, 0, n), 0);
}

static void make_dir(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "/tmp/porta-test-opencl-%s-XXXXXX", tag);
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void rm_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* ---- devices ---- */

static int n_lines;
static char first_line[1024];
static void count_line(void *user, const char *line)
{
    if (n_lines++ == 0)
        snprintf(first_line, sizeof first_line, "%s", line);
}

START_TEST(devices_listed)
{
    NEED_DEVICE();
    n_lines = 0;
    ck_assert_int_eq(O->devices(count_line, NULL), 0);
    ck_assert_int_ge(n_lines, 1);
    ck_assert_ptr_nonnull(strstr(first_line, "opencl: platform 0 device 0: "));
    ck_assert_ptr_nonnull(strstr(first_line, "compute units"));
    ck_assert_ptr_nonnull(strstr(first_line, "GiB global"));
    ck_assert_ptr_nonnull(strstr(first_line, "OpenCL C"));
    ck_assert_ptr_nonnull(strstr(first_line, "fp16 "));
    ck_assert_ptr_nonnull(strstr(first_line, "subgroups "));
    ck_assert_ptr_nonnull(strstr(g_be.desc, "opencl ("));
}
END_TEST

START_TEST(bad_device_choice)
{
    NEED_DEVICE();
    struct porta_backend be = { .ops = O };
    struct porta_backend_cfg cfg = { .platform = 99, .device = -1 };
    capture();
    ck_assert_int_eq(O->open(&be, &cfg), PORTA_E_CONFIG);
    ck_assert_ptr_nonnull(strstr(g_log, "platform 99 requested"));
    ck_assert_ptr_null(be.ctx);

    cfg = (struct porta_backend_cfg){ .platform = -1, .device = 42 };
    capture();
    ck_assert_int_eq(O->open(&be, &cfg), PORTA_E_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(g_log, "candidates: '"));

    cfg = (struct porta_backend_cfg){ .platform = -1, .device = 0,
                                      .device_name = "no-such-device-anywhere" };
    capture();
    ck_assert_int_eq(O->open(&be, &cfg), PORTA_E_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(g_log, "no-such-device-anywhere"));

    /* a substring of the real name, in another case, picks it */
    struct cl_devinfo d;
    cfg = (struct porta_backend_cfg){ .platform = -1, .device = 0 };
    ck_assert_int_eq(cl_pick_device(&cfg, &d), 0);
    char sub[8] = { 0 };
    for (int i = 0; i < 4 && d.name[i]; i++)
        sub[i] = (char)(d.name[i] ^ ((d.name[i] >= 'a' && d.name[i] <= 'z') ? 0x20 : 0));
    cfg.device_name = sub;
    struct cl_devinfo d2;
    ck_assert_int_eq(cl_pick_device(&cfg, &d2), 0);
    ck_assert_str_eq(d2.name, d.name);

    cfg = (struct porta_backend_cfg){ .platform = -1, .device = 0,
                                      .kernel_dir = "/nonexistent/porta/kernels" };
    capture();
    ck_assert_int_eq(O->open(&be, &cfg), PORTA_E_IO);
    ck_assert_ptr_nonnull(strstr(g_log, "/nonexistent/porta/kernels"));
}
END_TEST

/* ---- the program builder and its cache ---- */

static const char *k_prelude = "#define KERNEL __kernel void\n";
static const char *k_good =
    "KERNEL twice(__global float *y) { int i = get_global_id(0); y[i] = 2.0f * y[i]; }\n";
static const char *k_bad = "KERNEL broken(__global float *y) { y[0] = undeclared_thing; }\n";

struct built {
    cl_context ctx;
    struct cl_devinfo dev;
};

static void ctx_open(struct built *b)
{
    struct porta_backend_cfg cfg = { .platform = -1, .device = 0 };
    ck_assert_int_eq(cl_pick_device(&cfg, &b->dev), 0);
    cl_int e;
    b->ctx = clCreateContext(NULL, 1, &b->dev.device, NULL, NULL, &e);
    ck_assert_int_eq(e, CL_SUCCESS);
}

static int build(struct built *b, const char *kdir, const char *cdir, const char *opts,
                 bool *cached)
{
    cl_program p = NULL;
    int rc = cl_program_build(b->ctx, &b->dev, kdir, cdir, opts, &p, cached);
    if (p) {
        cl_int e;
        cl_kernel k = clCreateKernel(p, "twice", &e);
        ck_assert_int_eq(e, CL_SUCCESS);
        clReleaseKernel(k);
        clReleaseProgram(p);
    }
    return rc;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

START_TEST(program_cache)
{
    NEED_DEVICE();
    struct built b;
    ctx_open(&b);
    char kdir[128], cdir[128], path[4300], path2[4300];
    make_dir(kdir, sizeof kdir, "src");
    make_dir(cdir, sizeof cdir, "cache");
    write_file(kdir, "prelude.h", k_prelude);
    write_file(kdir, "twice.cl", k_good);
    write_file(kdir, "notes.txt", "not a kernel: ignored\n");

    /* miss: compiled and stored */
    bool cached = true;
    capture();
    ck_assert_int_eq(build(&b, kdir, cdir, "-DX=1", &cached), 0);
    ck_assert(!cached);
    cl_program_cache_path(&b.dev, kdir, cdir, "-DX=1", path, sizeof path);
    ck_assert_ptr_nonnull(strstr(path, cdir));
    long size = file_size(path);
    ck_assert_int_gt(size, 32);

    /* hit */
    ck_assert_int_eq(build(&b, kdir, cdir, "-DX=1", &cached), 0);
    ck_assert(cached);

    /* other build options, other entry */
    cl_program_cache_path(&b.dev, kdir, cdir, "-DX=2", path2, sizeof path2);
    ck_assert_str_ne(path, path2);

    /* a flipped byte in the binary: detected, rebuilt, rewritten */
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, size - 5, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, size - 5, SEEK_SET);
    fputc(ch ^ 0x5A, f);
    fclose(f);
    capture();
    ck_assert_int_eq(build(&b, kdir, cdir, "-DX=1", &cached), 0);
    ck_assert(!cached);
    ck_assert_ptr_nonnull(strstr(g_log, "checksum mismatch"));
    ck_assert_int_eq(build(&b, kdir, cdir, "-DX=1", &cached), 0);
    ck_assert(cached);

    /* truncated: detected and rebuilt */
    ck_assert_int_eq(truncate(path, size / 2), 0);
    capture();
    ck_assert_int_eq(build(&b, kdir, cdir, "-DX=1", &cached), 0);
    ck_assert(!cached);
    ck_assert_ptr_nonnull(strstr(g_log, "truncated"));
    ck_assert_int_eq(file_size(path), size);

    /* a changed source is a different entry */
    write_file(kdir, "twice.cl", "/* edited */\n");
    write_file(kdir, "zz.cl", k_good);
    cl_program_cache_path(&b.dev, kdir, cdir, "-DX=1", path2, sizeof path2);
    ck_assert_str_ne(path, path2);

    /* "" turns the cache off */
    cl_program_cache_path(&b.dev, kdir, "", "-DX=1", path2, sizeof path2);
    ck_assert_str_eq(path2, "");

    clReleaseContext(b.ctx);
    rm_tree(kdir);
    rm_tree(cdir);
}
END_TEST

START_TEST(build_errors)
{
    NEED_DEVICE();
    struct built b;
    ctx_open(&b);
    char kdir[128];
    make_dir(kdir, sizeof kdir, "bad");
    bool cached;

    /* no prelude.h */
    write_file(kdir, "twice.cl", k_good);
    capture();
    ck_assert_int_eq(build(&b, kdir, "", "", &cached), PORTA_E_CONFIG);
    ck_assert_ptr_nonnull(strstr(g_log, "prelude.h"));

    /* a compile error: the status and the compiler's log naming the file */
    write_file(kdir, "prelude.h", k_prelude);
    write_file(kdir, "broken.cl", k_bad);
    capture();
    ck_assert_int_eq(build(&b, kdir, "", "", &cached), PORTA_E_DEVICE);
    ck_assert_ptr_nonnull(strstr(g_log, "build log"));
    ck_assert_ptr_nonnull(strstr(g_log, "undeclared_thing"));
    ck_assert_ptr_nonnull(strstr(g_log, "CL_BUILD_PROGRAM_FAILURE"));

    /* the same through open(): the backend reports it and stays closed */
    struct porta_backend be = { .ops = O };
    struct porta_backend_cfg cfg = { .platform = -1, .device = 0, .kernel_dir = kdir };
    ck_assert_int_eq(O->open(&be, &cfg), PORTA_E_DEVICE);
    ck_assert_ptr_null(be.ctx);

    clReleaseContext(b.ctx);
    rm_tree(kdir);
}
END_TEST

START_TEST(error_names)
{
    ck_assert_str_eq(cl_errname(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES");
    ck_assert_str_eq(cl_errname(CL_INVALID_KERNEL_ARGS), "CL_INVALID_KERNEL_ARGS");
    ck_assert_str_eq(cl_errname(-1001), "CL_PLATFORM_NOT_FOUND_KHR");
    ck_assert_str_eq(cl_errname(-12345), "CL_UNKNOWN_ERROR");
    ck_assert_int_eq(cl_status(CL_MEM_OBJECT_ALLOCATION_FAILURE), PORTA_E_NOMEM);
    ck_assert_int_eq(cl_status(CL_INVALID_VALUE), PORTA_E_DEVICE);
}
END_TEST

/* ---- memory and argument errors ---- */

START_TEST(memory_errors)
{
    NEED_DEVICE();
    struct porta_buf *b = NULL;
    capture();
    ck_assert_int_eq(O->buf_alloc(&g_be, (size_t)1 << 62, PORTA_BUF_WEIGHTS, &b), PORTA_E_NOMEM);
    ck_assert_ptr_null(b);
    ck_assert_ptr_nonnull(strstr(g_log, "cannot allocate"));

    /* upload/download at offsets */
    float in[64], out[64];
    for (int i = 0; i < 64; i++)
        in[i] = (float)i;
    b = upbuf(NULL, 1024);
    ck_assert_uint_eq(O->buf_size(b), 1024);
    ck_assert_int_eq(O->upload(&g_be, b, 100, in, sizeof in), 0);
    ck_assert_int_eq(O->download(&g_be, out, b, 100, sizeof out), 0);
    ck_assert_mem_eq(in, out, sizeof in);

    /* misaligned float views and weights are refused, not miscomputed */
    size_t rb = porta_row_size(PORTA_Q4_0, 64);
    struct porta_weight w = { .type = PORTA_Q4_0, .n_rows = 4, .n_cols = 64, .n_mat = 1,
                              .row_bytes = rb, .buf = b, .name = "w" };
    struct porta_view x = { b, 512 };
    capture();
    ck_assert_int_eq(O->matmul(&g_be, (struct porta_view){ b, 2 }, &w, x, 1), PORTA_E_INVAL);
    ck_assert_ptr_nonnull(strstr(g_log, "matmul y"));
    w.off = 1;
    ck_assert_int_eq(O->matmul(&g_be, (struct porta_view){ b, 0 }, &w, x, 1), PORTA_E_INVAL);
    ck_assert(!O->supports(&g_be, PORTA_OP_MATMUL, PORTA_Q8_K));
    ck_assert(!O->supports(&g_be, PORTA_OP_EMBED, PORTA_I32));
    ck_assert(O->supports(&g_be, PORTA_OP_MATMUL, PORTA_Q6_K));
    ck_assert(O->supports(&g_be, PORTA_OP_ATTENTION, PORTA_F32));
    ck_assert(!O->supports(&g_be, PORTA_OP_MATMUL_EXPERTS, PORTA_Q4_0) ||
              O->matmul_experts != NULL);
    O->buf_free(&g_be, b);
    O->buf_free(&g_be, NULL);
}
END_TEST

/* ---- host arrays through the staging ring ---- */

START_TEST(staging_ring)
{
    NEED_DEVICE();
    /* more embed calls than the ring holds, without synchronize, then one larger than it */
    int rows = 300, cols = 32;
    float *w = malloc(sizeof(float) * rows * cols);
    tu_fill(w, (size_t)rows * cols, 5, 1.0f);
    struct porta_buf *wb = upbuf(w, sizeof(float) * rows * cols);
    struct porta_weight wt = { .type = PORTA_F32, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                               .row_bytes = sizeof(float) * cols, .buf = wb, .name = "emb" };
    int n_call = 40, n_tok = 1000, big = 40000;
    struct porta_buf *yb = upbuf(NULL, sizeof(float) * cols * (size_t)big);
    int32_t *ids = malloc(sizeof(int32_t) * big);
    float *y = malloc(sizeof(float) * cols * (size_t)big);
    for (int c = 0; c < n_call; c++) {
        for (int t = 0; t < n_tok; t++)
            ids[t] = (t * 7 + c) % rows;
        struct porta_view yc = { yb, sizeof(float) * cols * (size_t)c };
        ck_assert_int_eq(O->embed(&g_be, yc, &wt, ids, 1), 0);
        /* ids is overwritten right away: the backend must have copied it */
        ck_assert_int_eq(O->embed(&g_be, (struct porta_view){ yb, sizeof(float) * cols * 100 },
                                  &wt, ids, n_tok),
                         0);
    }
    downbuf(y, yb, sizeof(float) * cols * (100 + n_tok));
    for (int c = 0; c < n_call; c++)
        ck_assert_mem_eq(y + c * cols, w + (c % rows) * cols, sizeof(float) * cols);
    for (int t = 0; t < n_tok; t++)     /* the last call's ids */
        ck_assert_mem_eq(y + (100 + t) * cols, w + ((t * 7 + n_call - 1) % rows) * cols,
                         sizeof(float) * cols);
    for (int t = 0; t < big; t++)
        ids[t] = (t * 13) % rows;
    ck_assert_int_eq(O->embed(&g_be, (struct porta_view){ yb, 0 }, &wt, ids, big), 0);
    downbuf(y, yb, sizeof(float) * cols * (size_t)big);
    for (int t = 0; t < big; t += 997)
        ck_assert_mem_eq(y + (size_t)t * cols, w + ((t * 13) % rows) * cols, sizeof(float) * cols);
    O->buf_free(&g_be, wb);
    O->buf_free(&g_be, yb);
    free(w);
    free(ids);
    free(y);
}
END_TEST

/* ---- zero-copy host buffers ---- */

START_TEST(wrap_host)
{
    NEED_DEVICE();
    int rows = 16, cols = 256;
    size_t rb = porta_row_size(PORTA_Q4_K, cols), n = rb * rows;
    float *f = malloc(sizeof(float) * cols);
    /* read-only pages, as a mmap'd model file is */
    uint8_t *map = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);
    for (int r = 0; r < rows; r++) {
        tu_fill(f, cols, 100 + r, 1.0f);
        ck_assert_int_eq(porta_quantize_row(PORTA_Q4_K, f, map + r * rb, cols), 0);
    }
    ck_assert_int_eq(mprotect(map, n, PROT_READ), 0);
    struct porta_buf *wb = NULL;
    ck_assert_int_eq(O->buf_wrap_host(&g_be, map, n, &wb), 0);
    ck_assert_uint_eq(O->buf_size(wb), n);
    struct porta_weight w = { .type = PORTA_Q4_K, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                              .row_bytes = rb, .buf = wb, .name = "wrapped" };
    int32_t ids[3] = { 15, 0, 7 };
    float got[3 * 256], ref[3 * 256];
    struct porta_buf *yb = upbuf(NULL, sizeof got);
    ck_assert_int_eq(O->embed(&g_be, (struct porta_view){ yb, 0 }, &w, ids, 3), 0);
    downbuf(got, yb, sizeof got);
    porta_ref_embed(ref, map, PORTA_Q4_K, cols, rb, ids, 3);
    ck_assert_mem_eq(got, ref, sizeof got);
    O->buf_free(&g_be, yb);
    O->buf_free(&g_be, wb);
    munmap(map, n);
    free(f);
}
END_TEST

/* ---- the GPU launch shapes (work-groups of 64, local-memory tiles), run here ---- */

static void matmul_case(enum porta_dtype t, int rows, int cols, int n_tok)
{
    size_t rb = porta_row_size(t, cols);
    uint8_t *w = malloc(rb * rows);
    float *f = malloc(sizeof(float) * cols), *x = malloc(sizeof(float) * cols * n_tok);
    float *y = malloc(sizeof(float) * rows * n_tok), *yr = malloc(sizeof(float) * rows * n_tok);
    for (int r = 0; r < rows; r++) {
        tu_fill(f, cols, 7 * r + t, 1.0f);
        ck_assert_int_eq(porta_quantize_row(t, f, w + r * rb, cols), 0);
    }
    tu_fill(x, (size_t)cols * n_tok, 3, 1.0f);
    /* the exact product of the dequantized weights with the float activations */
    for (int r = 0; r < rows; r++) {
        ck_assert_int_eq(porta_dequantize_row(t, w + r * rb, f, cols), 0);
        for (int k = 0; k < n_tok; k++) {
            double s = 0;
            for (int c = 0; c < cols; c++)
                s += (double)f[c] * x[(size_t)k * cols + c];
            yr[(size_t)k * rows + r] = (float)s;
        }
    }
    struct porta_buf *wb = upbuf(w, rb * rows), *xb = upbuf(x, sizeof(float) * cols * n_tok),
                     *yb = upbuf(NULL, sizeof(float) * rows * n_tok);
    struct porta_weight wt = { .type = t, .n_rows = rows, .n_cols = cols, .n_mat = 1,
                               .row_bytes = rb, .buf = wb, .name = "w" };
    struct porta_view yv = { yb, 0 }, xv = { xb, 0 };
    ck_assert_int_eq(O->matmul(&g_be, yv, &wt, xv, n_tok), 0);
    downbuf(y, yb, sizeof(float) * rows * n_tok);
    double e = tu_nmse(y, yr, (size_t)rows * n_tok);
    ck_assert_msg(e < 1e-10, "%s %dx%d n_tok %d: nmse %.3g", porta_dtype_name(t), rows, cols,
                  n_tok, e);
    O->buf_free(&g_be, wb);
    O->buf_free(&g_be, xb);
    O->buf_free(&g_be, yb);
    free(w);
    free(f);
    free(x);
    free(y);
    free(yr);
}

static void attention_case(enum porta_dtype kv, int n_tok, int start, int dk, int dv)
{
    int nh = 4, nkv = 2, n_ctx = 300, es = kv == PORTA_F16 ? 2 : 4;
    size_t cells = (size_t)n_ctx * nkv, qn = (size_t)n_tok * nh * dk, kn = (size_t)n_tok * nkv * dk,
           vn = (size_t)n_tok * nkv * dv, on = (size_t)n_tok * nh * dv;
    float *q = malloc(4 * qn), *k = malloc(4 * kn), *v = malloc(4 * vn), *o = malloc(4 * on),
          *orf = malloc(4 * on), *fill = malloc(4 * cells * (dk > dv ? dk : dv));
    void *kc = malloc(cells * dk * es), *vc = malloc(cells * dv * es);
    tu_fill(q, qn, 1, 1.0f);
    tu_fill(k, kn, 2, 1.0f);
    tu_fill(v, vn, 3, 1.0f);
    tu_fill(fill, cells * (dk > dv ? dk : dv), 4, 1.0f);
    for (size_t i = 0; i < cells * dk; i++)
        if (es == 2)
            ((porta_f16 *)kc)[i] = porta_f32_to_f16(fill[i]);
        else
            ((float *)kc)[i] = fill[i];
    for (size_t i = 0; i < cells * dv; i++)
        if (es == 2)
            ((porta_f16 *)vc)[i] = porta_f32_to_f16(-fill[i]);
        else
            ((float *)vc)[i] = -fill[i];
    int32_t pos[8];
    for (int t = 0; t < n_tok; t++)
        pos[t] = start + t;
    struct porta_buf *qb = upbuf(q, 4 * qn), *kb = upbuf(k, 4 * kn), *vb = upbuf(v, 4 * vn),
                     *ob = upbuf(NULL, 4 * on), *kcb = upbuf(kc, cells * dk * es),
                     *vcb = upbuf(vc, cells * dv * es);
    struct porta_attn_params p = { .n_tok = n_tok, .n_head = nh, .n_head_kv = nkv,
                                   .head_dim_k = dk, .head_dim_v = dv, .scale = 0.125f,
                                   .pos = pos, .n_ctx = n_ctx, .n_seq = 1, .kv_type = kv,
                                   .k_cache = { kcb, 0 }, .v_cache = { vcb, 0 } };
    ck_assert_int_eq(O->attention(&g_be, (struct porta_view){ ob, 0 }, (struct porta_view){ qb, 0 },
                                  (struct porta_view){ kb, 0 }, (struct porta_view){ vb, 0 }, &p),
                     0);
    downbuf(o, ob, 4 * on);
    ck_assert_int_eq(porta_ref_attention(orf, q, k, v, kc, vc, &p), 0);
    double e = tu_nmse(o, orf, on);
    ck_assert_msg(e < 1e-10, "attention %s n_tok %d: nmse %.3g", porta_dtype_name(kv), n_tok, e);
    struct porta_buf *bufs[] = { qb, kb, vb, ob, kcb, vcb };
    for (int i = 0; i < 6; i++)
        O->buf_free(&g_be, bufs[i]);
    free(q), free(k), free(v), free(o), free(orf), free(fill), free(kc), free(vc);
}

/* y[t] = sum_j weights[t][j] W[ids[t][j]] x[t] over a stack of n_mat matrices, one bad id */
static void experts_case(enum porta_dtype t, int n_mat, int rows, int cols, int n_tok, int k)
{
    size_t rb = porta_row_size(t, cols), wn = rb * rows * n_mat, slots = (size_t)n_tok * k;
    uint8_t *w = malloc(wn);
    float *f = malloc(sizeof(float) * cols), *x = malloc(sizeof(float) * cols * n_tok);
    float *wts = malloc(sizeof(float) * slots), *y = malloc(sizeof(float) * rows * n_tok),
          *yr = malloc(sizeof(float) * rows * n_tok);
    int32_t *ids = malloc(sizeof(int32_t) * slots);
    for (int r = 0; r < rows * n_mat; r++) {
        tu_fill(f, cols, 11 * r + 1, 1.0f);
        ck_assert_int_eq(porta_quantize_row(t, f, w + r * rb, cols), 0);
    }
    tu_fill(x, (size_t)cols * n_tok, 8, 1.0f);
    tu_fill(wts, slots, 9, 1.0f);
    for (size_t i = 0; i < slots; i++)
        ids[i] = (int32_t)((i * 5 + 1) % (size_t)(n_mat + 1)); /* n_mat: out of range */
    for (int tk = 0; tk < n_tok; tk++) {
        for (int r = 0; r < rows; r++)
            yr[(size_t)tk * rows + r] = 0.0f;
        for (int j = 0; j < k; j++) {
            int e = ids[(size_t)tk * k + j];
            if (e >= n_mat)
                continue;
            for (int r = 0; r < rows; r++) {
                porta_dequantize_row(t, w + ((size_t)e * rows + r) * rb, f, cols);
                double d = 0;
                for (int c = 0; c < cols; c++)
                    d += (double)f[c] * x[(size_t)tk * cols + c];
                yr[(size_t)tk * rows + r] += wts[(size_t)tk * k + j] * (float)d;
            }
        }
    }
    struct porta_buf *wb = upbuf(w, wn), *xb = upbuf(x, sizeof(float) * cols * n_tok),
                     *ib = upbuf(ids, sizeof(int32_t) * slots),
                     *sb = upbuf(wts, sizeof(float) * slots),
                     *yb = upbuf(NULL, sizeof(float) * rows * n_tok);
    struct porta_weight wt = { .type = t, .n_rows = rows, .n_cols = cols, .n_mat = n_mat,
                               .row_bytes = rb, .buf = wb, .name = "experts" };
    struct porta_experts_params p = { .n_tok = n_tok, .k = k, .ids = { ib, 0 },
                                      .weights = { sb, 0 } };
    struct porta_view yv = { yb, 0 }, xv = { xb, 0 };
    ck_assert_int_eq(O->matmul_experts(&g_be, yv, &wt, xv, &p), 0);
    downbuf(y, yb, sizeof(float) * rows * n_tok);
    double e = tu_nmse(y, yr, (size_t)rows * n_tok);
    ck_assert_msg(e < 1e-10, "experts %s: nmse %.3g", porta_dtype_name(t), e);
    struct porta_buf *bufs[] = { wb, xb, ib, sb, yb };
    for (int i = 0; i < 5; i++)
        O->buf_free(&g_be, bufs[i]);
    free(w), free(f), free(x), free(wts), free(y), free(yr), free(ids);
}

/* MLA: cache rows [lat | rope], V = the lat part */
static void mla_case(enum porta_dtype kv, int n_tok, int start, int lat, int rope)
{
    int nh = 3, n_ctx = 64, es = kv == PORTA_F16 ? 2 : 4, dk = lat + rope;
    size_t qln = (size_t)n_tok * nh * lat, qrn = (size_t)n_tok * nh * rope;
    float *ql = malloc(4 * qln), *qr = malloc(4 * qrn), *kl = malloc(4 * (size_t)n_tok * lat),
          *kr = malloc(4 * (size_t)n_tok * rope), *o = malloc(4 * qln), *orf = malloc(4 * qln),
          *fill = malloc(4 * (size_t)n_ctx * dk);
    void *cache = malloc((size_t)n_ctx * dk * es);
    tu_fill(ql, qln, 21, 1.0f);
    tu_fill(qr, qrn, 22, 1.0f);
    tu_fill(kl, (size_t)n_tok * lat, 23, 1.0f);
    tu_fill(kr, (size_t)n_tok * rope, 24, 1.0f);
    tu_fill(fill, (size_t)n_ctx * dk, 25, 1.0f);
    for (size_t i = 0; i < (size_t)n_ctx * dk; i++)
        if (es == 2)
            ((porta_f16 *)cache)[i] = porta_f32_to_f16(fill[i]);
        else
            ((float *)cache)[i] = fill[i];
    int32_t pos[8];
    for (int t = 0; t < n_tok; t++)
        pos[t] = start + t;
    struct porta_buf *qlb = upbuf(ql, 4 * qln), *qrb = upbuf(qr, 4 * qrn),
                     *klb = upbuf(kl, 4 * (size_t)n_tok * lat),
                     *krb = upbuf(kr, 4 * (size_t)n_tok * rope), *ob = upbuf(NULL, 4 * qln),
                     *cb = upbuf(cache, (size_t)n_ctx * dk * es);
    struct porta_attn_params p = { .n_tok = n_tok, .n_head = nh, .n_head_kv = 1,
                                   .head_dim_k = dk, .head_dim_v = lat, .scale = 0.1f,
                                   .pos = pos, .n_ctx = n_ctx, .n_seq = 1, .kv_type = kv,
                                   .k_cache = { cb, 0 } };
    struct porta_view ov = { ob, 0 }, qlv = { qlb, 0 }, qrv = { qrb, 0 }, klv = { klb, 0 },
                      krv = { krb, 0 };
    ck_assert_int_eq(O->attention_mla(&g_be, ov, qlv, qrv, klv, krv, &p), 0);
    downbuf(o, ob, 4 * qln);
    ck_assert_int_eq(porta_ref_attention_mla(orf, ql, qr, kl, kr, cache, &p), 0);
    double e = tu_nmse(o, orf, qln);
    ck_assert_msg(e < 1e-10, "attention_mla %s: nmse %.3g", porta_dtype_name(kv), e);
    struct porta_buf *bufs[] = { qlb, qrb, klb, krb, ob, cb };
    for (int i = 0; i < 6; i++)
        O->buf_free(&g_be, bufs[i]);
    free(ql), free(qr), free(kl), free(kr), free(o), free(orf), free(fill), free(cache);
}

/* the model loader splits weights at be->max_buf: the device's largest buffer */
static void be_max_buf_is_device_limit(void)
{
    ck_assert_uint_ge(g_be.max_buf, 128u << 20); /* OpenCL 1.2 guarantees 128 MiB */
    struct porta_buf *b = NULL;
    ck_assert_int_ne(O->buf_alloc(&g_be, g_be.max_buf + 1, PORTA_BUF_ACT, &b), 0);
}

static void setup_gpu_shapes(void)
{
    capture();
    open_be("gpu");
}

START_TEST(gpu_shapes)
{
    NEED_DEVICE();
    matmul_case(PORTA_Q4_K, 70, 512, 1);
    matmul_case(PORTA_Q4_K, 70, 512, 37);
    matmul_case(PORTA_Q5_0, 33, 96, 40);
    matmul_case(PORTA_F16, 65, 100, 33);
    matmul_case(PORTA_Q8_0, 20, 64, 5);
    attention_case(PORTA_F16, 3, 270, 64, 64);
    attention_case(PORTA_F32, 1, 5, 128, 96);
    experts_case(PORTA_Q4_K, 4, 40, 256, 3, 3);
    mla_case(PORTA_F16, 2, 30, 96, 32);
}
END_TEST

static void setup_clblast(void)
{
    capture();
    open_be_cfg("gpu", true);
}

/* GPU shapes with clblast = true: prefill GEMMs through dequantize + CLBlast SGEMM (when built
 * in; else the tiled kernel), decode and short batches through porta's own kernels */
START_TEST(clblast_prefill)
{
    NEED_DEVICE();
#ifdef PORTA_HAVE_CLBLAST
    ck_assert_msg(strstr(g_be.desc, "CLBlast prefill"), "desc: %s", g_be.desc);
#endif
    be_max_buf_is_device_limit();
    matmul_case(PORTA_Q4_0, 70, 512, 37);
    matmul_case(PORTA_Q4_K, 33, 256, 64);
    matmul_case(PORTA_Q6_K, 17, 256, 20);
    matmul_case(PORTA_Q8_0, 20, 64, 3);
    matmul_case(PORTA_F16, 65, 100, 33);
}
END_TEST

/* every half bit pattern class through the kernels' half loads: exact, as the host converts */
START_TEST(half_values)
{
    NEED_DEVICE();
    static const porta_f16 h[16] = { 0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xbc00,
                                     0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x3555, 0x8001,
                                     0x4248, 0x1234 };
    float got[16], want[16];
    struct porta_buf *wb = upbuf(h, sizeof h), *yb = upbuf(NULL, sizeof got);
    struct porta_weight w = { .type = PORTA_F16, .n_rows = 1, .n_cols = 16, .n_mat = 1,
                              .row_bytes = sizeof h, .buf = wb, .name = "halfs" };
    int32_t id = 0;
    ck_assert_int_eq(O->embed(&g_be, (struct porta_view){ yb, 0 }, &w, &id, 1), 0);
    downbuf(got, yb, sizeof got);
    for (int i = 0; i < 16; i++) {
        want[i] = porta_f16_to_f32(h[i]);
        if (want[i] != want[i])
            ck_assert_msg(got[i] != got[i], "half %04x: %g, want NaN", h[i], got[i]);
        else
            ck_assert_msg(memcmp(&got[i], &want[i], 4) == 0, "half %04x: %g, want %g", h[i],
                          got[i], want[i]);
    }
    O->buf_free(&g_be, wb);
    O->buf_free(&g_be, yb);
}
END_TEST

/* the CPU shapes with the awkward sizes (tails of plain-type rows, token tails) */
START_TEST(cpu_shapes_tails)
{
    NEED_DEVICE();
    if (strstr(g_be.desc, "CPU") || strstr(g_be.desc, "pthread"))   /* PoCL: a CPU device */
        ck_assert_msg(strstr(g_be.desc, "row packs"), "desc: %s", g_be.desc);
    matmul_case(PORTA_F32, 9, 13, 1);
    matmul_case(PORTA_BF16, 9, 13, 6);
    matmul_case(PORTA_Q6_K, 5, 256, 7);
    attention_case(PORTA_F16, 2, 0, 40, 24);
    experts_case(PORTA_F16, 3, 7, 20, 2, 2);
    mla_case(PORTA_F32, 1, 10, 40, 24);
}
END_TEST

static void setup_stored(void)
{
    capture();
    open_be_packs(NULL, false, false);
}

/* backend.opencl.row_packs = false: the CPU shapes' products over the matrices as stored
 * (mv_, mt_), every type, one token and several */
START_TEST(cpu_shapes_stored)
{
    NEED_DEVICE();
    ck_assert_msg(!strstr(g_be.desc, "row packs"), "desc: %s", g_be.desc);
    static const enum porta_dtype types[] = { PORTA_F32,  PORTA_F16,  PORTA_BF16, PORTA_Q4_0,
                                              PORTA_Q4_1, PORTA_Q5_0, PORTA_Q5_1, PORTA_Q8_0,
                                              PORTA_Q2_K, PORTA_Q3_K, PORTA_Q4_K, PORTA_Q5_K,
                                              PORTA_Q6_K };
    for (int i = 0; i < 13; i++) {
        int cols = porta_type_traits(types[i])->blck == 256 ? 512 : 96;
        matmul_case(types[i], 37, cols, 1);
        matmul_case(types[i], 21, cols, 19);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("opencl");
    TCase *tc = tcase_create("backend");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, devices_listed);
    tcase_add_test(tc, bad_device_choice);
    tcase_add_test(tc, program_cache);
    tcase_add_test(tc, build_errors);
    tcase_add_test(tc, error_names);
    tcase_add_test(tc, memory_errors);
    tcase_add_test(tc, staging_ring);
    tcase_add_test(tc, wrap_host);
    tcase_add_test(tc, cpu_shapes_tails);
    tcase_add_test(tc, half_values);
    suite_add_tcase(s, tc);
    TCase *tg = tcase_create("gpu_shapes");
    tcase_set_timeout(tg, 300);
    tcase_add_checked_fixture(tg, setup_gpu_shapes, teardown);
    tcase_add_test(tg, gpu_shapes);
    tcase_add_test(tg, half_values);
    suite_add_tcase(s, tg);
    TCase *ts = tcase_create("stored");
    tcase_set_timeout(ts, 300);
    tcase_add_checked_fixture(ts, setup_stored, teardown);
    tcase_add_test(ts, cpu_shapes_stored);
    suite_add_tcase(s, ts);
    TCase *tb = tcase_create("clblast");
    tcase_set_timeout(tb, 300);
    tcase_add_checked_fixture(tb, setup_clblast, teardown);
    tcase_add_test(tb, clblast_prefill);
    suite_add_tcase(s, tb);
    return s;
}

#else /* no OpenCL in this build */

START_TEST(not_built)
{
    printf("SKIP opencl: not compiled in (no OpenCL headers at build time)\n");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("opencl");
    TCase *tc = tcase_create("none");
    tcase_add_test(tc, not_built);
    suite_add_tcase(s, tc);
    return s;
}

#endif

int main(void) { return tu_run(suite()); }
