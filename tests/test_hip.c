/* test_hip.c - the HIP backend where it can be checked without a GPU: the embedded code
 * objects hold exactly the targets the build asked for, their headers are read safely even
 * when damaged, opening without a GPU fails with the reason, a config that orders hip first
 * falls back, and `porta devices` shows the backend, its targets and why it has no device.
 * With a GPU present, buffers round-trip through the upload ring (the ops themselves are
 * compared with the reference by test_backend_ops.c on every backend). */
#include "backend.h"
#include "config.h"
#include "testutil.h"

#ifdef PORTA_HAVE_HIP
#include <ctype.h>
#include <stdint.h>
#include <unistd.h>

#include "../backends/hip/hip.h"

#ifndef PORTA_HIP_EXPECT
#error "the Makefile passes PORTA_HIP_EXPECT (the targets asked for)"
#endif

struct names {
    char s[1024];
    int n;
};

static void collect(void *user, const char *target)
{
    struct names *nm = user;
    size_t len = strlen(nm->s);
    snprintf(nm->s + len, sizeof nm->s - len, "%s%s", len ? " " : "", target);
    nm->n++;
}

/* the targets of every embedded image, in image order */
static int embedded(struct names *nm)
{
    memset(nm, 0, sizeof *nm);
    for (int i = 0; porta_hip_images[i].name; i++) {
        int rc = porta_hip_image_targets(porta_hip_images[i].data, porta_hip_images[i].size,
                                         collect, nm);
        if (rc < 0)
            return rc;
    }
    return nm->n;
}

static bool on_cuda(void) { return strcmp(porta_hip_images[0].name, "cuda") == 0; }

static bool word_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == ':'; }

/* every word of list appears as a whole word of s */
static bool has_words(const char *s, const char *list)
{
    char buf[1024], *save, *w;
    snprintf(buf, sizeof buf, "%s", list);
    for (w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        size_t n = strlen(w);
        const char *p = s;
        bool found = false;
        while (!found && (p = strstr(p, w)) != NULL) {
            found = (p == s || !word_char(p[-1])) && !word_char(p[n]);
            p += n;
        }
        if (!found)
            return false;
    }
    return true;
}

static int count_words(const char *s)
{
    int n = 0;
    for (bool in = false; *s; s++) {
        if (*s != ' ' && !in)
            n++;
        in = *s != ' ';
    }
    return n;
}

START_TEST(test_embedded_targets)
{
    struct names nm;
    ck_assert_int_eq(embedded(&nm), count_words(PORTA_HIP_EXPECT));
    printf("hip: embedded targets: %s (asked for: %s)\n", nm.s, PORTA_HIP_EXPECT);
    ck_assert_msg(has_words(nm.s, PORTA_HIP_EXPECT), "embedded '%s', asked for '%s'", nm.s,
                  PORTA_HIP_EXPECT);
    char joined[1024];
    ck_assert_int_eq(porta_hip_targets(joined, sizeof joined), nm.n);
    ck_assert_str_eq(joined, nm.s);
    /* AMD: one bundle per target, named after it; each is a real code-object bundle */
    if (!on_cuda()) {
        for (int i = 0; porta_hip_images[i].name; i++) {
            struct names one = { .n = 0 };
            ck_assert_int_eq(porta_hip_image_targets(porta_hip_images[i].data,
                                                     porta_hip_images[i].size, collect, &one), 1);
            ck_assert_str_eq(one.s, porta_hip_images[i].name);
            ck_assert_uint_eq((uintptr_t)porta_hip_images[i].data % 4096, 0);
        }
    }
}
END_TEST

/* ---- damaged headers ---- */

static int n_logged;

/* counts the errors the parser logs instead of printing hundreds of them */
static void count_sink(enum porta_log_level level, const char *msg, void *user)
{
    if (level >= PORTA_LOG_ERROR)
        n_logged++;
}

/* the parse of data[0..n) fails and says so */
static void expect_bad(const unsigned char *data, size_t n)
{
    int before = n_logged;
    ck_assert_int_eq(porta_hip_image_targets(data, n, NULL, NULL), PORTA_E_FORMAT);
    ck_assert_int_eq(n_logged, before + 1);
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* a bundle of a host entry and the given targets, code objects of 16 bytes each */
static size_t make_bundle(unsigned char *b, const char *const *ids, int n)
{
    size_t at = 24 + 8, hdr = at;
    memcpy(b, "__CLANG_OFFLOAD_BUNDLE__", 24);
    put64(b + 24, (uint64_t)n);
    for (int i = 0; i < n; i++)
        hdr += 24 + strlen(ids[i]);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(ids[i]);
        put64(b + at, hdr + 16 * (size_t)i);
        put64(b + at + 8, 16);
        put64(b + at + 16, len);
        memcpy(b + at + 24, ids[i], len);
        at += 24 + len;
    }
    memset(b + hdr, 0x5a, 16 * (size_t)n);
    return hdr + 16 * (size_t)n;
}

START_TEST(test_bundle_parse)
{
    static const char *const ids[] = { "host-x86_64-unknown-linux",
                                       "hipv4-amdgcn-amd-amdhsa--gfx906",
                                       "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack+" };
    unsigned char b[512];
    size_t n = make_bundle(b, ids, 3);
    struct names nm = { .n = 0 };
    ck_assert_int_eq(porta_hip_image_targets(b, n, collect, &nm), 2);
    ck_assert_str_eq(nm.s, "gfx906 gfx90a:xnack+");
    ck_assert_int_eq(porta_hip_image_targets(b, n, NULL, NULL), 2);
    porta_log_set_sink(count_sink, NULL);
    /* every truncation fails cleanly, none reads past the end (ASan watches: exact sizes) */
    for (size_t cut = 0; cut < n; cut++) {
        unsigned char *t = malloc(cut ? cut : 1);
        memcpy(t, b, cut);
        expect_bad(t, cut);
        free(t);
    }
    unsigned char bad[512];
    memcpy(bad, b, n);                          /* an absurd entry count */
    put64(bad + 24, UINT64_MAX);
    expect_bad(bad, n);
    memcpy(bad, b, n);                          /* a code object past the end */
    put64(bad + 32 + 24 + strlen(ids[0]), n - 8);
    expect_bad(bad, n);
    memcpy(bad, b, n);                          /* size overflowing offset + size */
    put64(bad + 32 + 8, UINT64_MAX);
    expect_bad(bad, n);
    memcpy(bad, b, n);                          /* an id longer than the file */
    put64(bad + 32 + 16, UINT64_MAX - 3);
    expect_bad(bad, n);
    expect_bad((const unsigned char *)"\177ELF", 4);
    expect_bad(NULL, 0);
    porta_log_set_sink(NULL, NULL);
}
END_TEST

/* a fatbin as nvcc lays it out: header, then entries (kind, header size, payload, arch) */
static size_t make_fatbin(unsigned char *b, const unsigned *kinds, const unsigned *archs, int n)
{
    size_t at = 16;
    memset(b, 0, 16);
    put64(b, 0);
    b[0] = 0x50, b[1] = 0xed, b[2] = 0x55, b[3] = 0xba, b[4] = 1, b[6] = 16;
    for (int i = 0; i < n; i++) {
        memset(b + at, 0, 64);
        b[at] = (unsigned char)kinds[i];
        b[at + 4] = 64;
        put64(b + at + 8, 24);
        b[at + 28] = (unsigned char)archs[i];
        memset(b + at + 64, 0x11, 24);
        at += 64 + 24;
    }
    put64(b + 8, at - 16);
    return at;
}

START_TEST(test_fatbin_parse)
{
    static const unsigned kinds[] = { 2, 2, 1 }, archs[] = { 80, 90, 90 };
    unsigned char b[512];
    size_t n = make_fatbin(b, kinds, archs, 3);
    struct names nm = { .n = 0 };
    ck_assert_int_eq(porta_hip_image_targets(b, n, collect, &nm), 3);
    ck_assert_str_eq(nm.s, "sm_80 sm_90 compute_90");
    porta_log_set_sink(count_sink, NULL);
    for (size_t cut = 4; cut < n; cut++) {
        unsigned char *t = malloc(cut);
        memcpy(t, b, cut);
        expect_bad(t, cut);
        free(t);
    }
    unsigned char bad[512];
    memcpy(bad, b, n);
    put64(bad + 16 + 8, UINT64_MAX - 10);       /* payload overflowing */
    expect_bad(bad, n);
    memcpy(bad, b, n);
    bad[16] = 7;                                /* unknown entry kind */
    expect_bad(bad, n);
    memcpy(bad, b, n);
    put64(bad + 8, UINT64_MAX);                 /* entries longer than the file */
    expect_bad(bad, n);
    porta_log_set_sink(NULL, NULL);
}
END_TEST

/* ---- opening, fallback, devices ---- */

static struct porta_backend *try_open(int *rc)
{
    struct porta_backend_cfg cfg = { .platform = -1, .device = -1 };
    struct porta_backend *be = NULL;
    *rc = porta_backend_open("hip", &cfg, &be);
    return be;
}

/* without the runtime library: a clear message and PORTA_E_NOTFOUND (first in the case: the
 * runtime, once loaded, stays loaded) */
START_TEST(test_open_without_runtime)
{
    if (on_cuda()) {
        printf("SKIP hip runtime missing: the CUDA runtime is linked in\n");
        return;
    }
    setenv("PORTA_HIP_LIB", "/nonexistent/libamdhip64.so", 1);
    int rc;
    struct porta_backend *be = try_open(&rc);
    unsetenv("PORTA_HIP_LIB");
    if (be) {                                   /* loaded by an earlier test (CK_FORK=no) */
        porta_backend_close(be);
        return;
    }
    ck_assert_int_eq(rc, PORTA_E_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(porta_log_last_error(), "cannot load the HIP runtime"));
    ck_assert_ptr_nonnull(strstr(porta_log_last_error(), "/nonexistent/libamdhip64.so"));
}
END_TEST

START_TEST(test_open)
{
    int rc;
    struct porta_backend *be = try_open(&rc);
    if (be) {
        printf("hip: opened %s\n", be->desc);
        ck_assert_str_eq(be->ops->name, "hip");
        ck_assert_ptr_nonnull(strstr(be->desc, "hip ("));
        porta_backend_close(be);
        return;
    }
    const char *why = porta_log_last_error();
    printf("SKIP hip device tests: %s\n", why);
    ck_assert_msg(rc == PORTA_E_NOTFOUND || rc == PORTA_E_DEVICE || rc == PORTA_E_UNSUPPORTED,
                  "rc %d", rc);
    ck_assert_ptr_nonnull(strstr(why, "hip:"));
    if (rc == PORTA_E_NOTFOUND && strstr(why, "no GPU")) {
        /* the reason names the embedded targets, so a user sees what this binary supports */
        ck_assert_msg(has_words(why, PORTA_HIP_EXPECT), "'%s' lacks the targets", why);
    }
    /* an index beyond the devices is a config error, never a crash */
    struct porta_backend_cfg cfg = { .platform = -1, .device = 1000 };
    ck_assert_int_ne(porta_backend_open("hip", &cfg, &be), 0);
    ck_assert_ptr_null(be);
}
END_TEST

/* backend.order = hip, opencl, cpu: without a GPU, hip is skipped and a later one opens */
START_TEST(test_fallback_order)
{
    struct porta_config cfg;
    porta_config_defaults(&cfg);
    ck_assert_int_eq(porta_config_set(&cfg, "backend.order", "hip,opencl,cpu"), 0);
    ck_assert_int_eq(cfg.backend.n_order, 3);
    const char *order[3];
    struct porta_backend_cfg bc[3];
    for (int i = 0; i < 3; i++) {
        order[i] = cfg.backend.order[i];
        ck_assert_int_eq(porta_config_backend_cfg(&cfg, order[i], &bc[i]), 0);
    }
    bc[2].threads = 1;
    int rc;
    struct porta_backend *hip = try_open(&rc), *be = NULL;
    ck_assert_int_eq(porta_backend_open_first(order, bc, 3, &be), 0);
    ck_assert_ptr_nonnull(be);
    if (hip)
        ck_assert_str_eq(be->ops->name, "hip");
    else
        ck_assert_msg(strcmp(be->ops->name, "opencl") == 0 || strcmp(be->ops->name, "cpu") == 0,
                      "fell back to '%s'", be->ops->name);
    printf("hip: backend.order hip,opencl,cpu opened %s\n", be->desc);
    porta_backend_close(be);
    porta_backend_close(hip);
}
END_TEST

static void add_line(void *user, const char *line)
{
    struct names *nm = user;
    size_t len = strlen(nm->s);
    snprintf(nm->s + len, sizeof nm->s - len, "%s\n", line);
    nm->n++;
}

START_TEST(test_devices)
{
    const struct porta_backend_ops *ops = porta_backend_find("hip");
    ck_assert_ptr_nonnull(ops);
    ck_assert_ptr_nonnull(ops->devices);
    struct names nm = { .n = 0 };
    int rc = ops->devices(add_line, &nm);
    ck_assert_int_ge(nm.n, 1);
    ck_assert_ptr_nonnull(strstr(nm.s, "kernels for "));
    ck_assert_msg(has_words(strstr(nm.s, "kernels for ") + 12, PORTA_HIP_EXPECT), "%s", nm.s);
    if (rc)
        ck_assert_ptr_nonnull(strstr(porta_log_last_error(), "hip:"));
    else
        ck_assert_ptr_nonnull(strstr(nm.s, "hip: device 0:"));
}
END_TEST

/* `porta devices` (the binary make test passes in $PORTA_BIN) lists hip with its targets, and
 * the reason when it has no device */
START_TEST(test_cli_devices)
{
    const char *bin = getenv("PORTA_BIN");
    if (!bin || access(bin, X_OK) != 0) {
        printf("SKIP porta devices: $PORTA_BIN is not set (make test sets it)\n");
        return;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' devices 2>/dev/null", bin);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    static char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    ck_assert_ptr_nonnull(strstr(out, "backends built: hip"));
    const char *k = strstr(out, "kernels for ");
    ck_assert_ptr_nonnull(k);
    ck_assert_msg(has_words(k + 12, PORTA_HIP_EXPECT), "%s", out);
    if (!strstr(out, "hip: device 0:")) {
        const char *why = strstr(out, "no usable device: hip:");
        ck_assert_msg(why != NULL, "no device and no reason in:\n%s", out);
    }
}
END_TEST

/* with a GPU: uploads larger than the bounce ring, at odd offsets, come back intact */
START_TEST(test_roundtrip)
{
    int rc;
    struct porta_backend *be = try_open(&rc);
    if (!be) {
        printf("SKIP hip round trip: no device\n");
        return;
    }
    size_t n = (size_t)37 << 20;
    unsigned char *src = malloc(n), *dst = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)(i * 2654435761u >> 13);
    struct porta_buf *b;
    ck_assert_int_eq(porta_be_buf_alloc(be, n + 64, PORTA_BUF_WEIGHTS, &b), 0);
    ck_assert_int_eq(porta_be_upload(be, b, 3, src, n), 0);
    ck_assert_int_eq(porta_be_upload(be, b, 0, src + 100, 3), 0);
    memset(dst, 0, n);
    ck_assert_int_eq(porta_be_download(be, dst, b, 3, n), 0);
    ck_assert_int_eq(memcmp(dst, src, n), 0);
    ck_assert_int_eq(porta_be_download(be, dst, b, 0, 3), 0);
    ck_assert_int_eq(memcmp(dst, src + 100, 3), 0);
    ck_assert_int_eq(porta_be_synchronize(be), 0);
    porta_be_buf_free(be, b);
    porta_backend_close(be);
    free(src);
    free(dst);
}
END_TEST

static Suite *hip_suite(void)
{
    Suite *s = suite_create("hip");
    TCase *tc = tcase_create("hip");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_open_without_runtime);
    tcase_add_test(tc, test_embedded_targets);
    tcase_add_test(tc, test_bundle_parse);
    tcase_add_test(tc, test_fatbin_parse);
    tcase_add_test(tc, test_open);
    tcase_add_test(tc, test_fallback_order);
    tcase_add_test(tc, test_devices);
    tcase_add_test(tc, test_cli_devices);
    tcase_add_test(tc, test_roundtrip);
    suite_add_tcase(s, tc);
    return s;
}

#else /* !PORTA_HAVE_HIP */

START_TEST(test_not_built)
{
    printf("SKIP hip: not compiled into this build (no hipcc / HIP headers, or HAVE_HIP=0)\n");
    ck_assert_ptr_null(porta_backend_find("hip"));
}
END_TEST

static Suite *hip_suite(void)
{
    Suite *s = suite_create("hip");
    TCase *tc = tcase_create("hip");
    tcase_add_test(tc, test_not_built);
    suite_add_tcase(s, tc);
    return s;
}

#endif

int main(void)
{
    return tu_run(hip_suite());
}
