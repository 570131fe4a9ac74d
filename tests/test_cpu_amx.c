/* test_cpu_amx.c - the AMX prefill tiles (backends/cpu/amx.c) against core/quant.c's scalar
 * dot products and against the AVX-512 set's VNNI tiles, through the set's gemm entries with
 * AMX on and off; skipped (and says so) where the CPU or OS has no AMX. */
#include "testutil.h"

#include <stdint.h>

#include "backends/cpu/amx.h"
#include "backends/cpu/kernels.h"

static const enum porta_dtype amx_types[] = { PORTA_Q4_0, PORTA_Q8_0, PORTA_Q4_K, PORTA_Q6_K };
#define N_TYPES (int)(sizeof amx_types / sizeof amx_types[0])
#define GUARD 1234.5f

/* One 16-row group (n_rows of them real) times n_tok tokens through k->gemm[t], AMX on or
 * off; y: n_tok rows of n_rows floats, plus one guard float that must stay untouched. */
static void run_gemm(const struct porta_cpu_kernels *k, enum porta_dtype t, bool amx,
                     const void *group, const uint8_t *act, size_t as, int64_t cols, int n_tok,
                     int n_rows, float *y)
{
    ck_assert_int_eq(porta_amx_use(amx), amx);
    for (int i = 0; i <= n_tok * n_rows; i++)
        y[i] = GUARD;
    k->gemm[t](cols, group, act, as, n_tok, y, (size_t)n_rows, n_rows);
    ck_assert_msg(y[n_tok * n_rows] == GUARD, "%s: write past the output", porta_dtype_name(t));
}

/* max |y - ref| over max |ref|: integer products are exact, only float order differs */
static double rel_err(const float *y, const float *ref, size_t n)
{
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)y[i] - ref[i]);
        e = d > e ? d : e;
        m = fabs(ref[i]) > m ? fabs(ref[i]) : m;
    }
    return m > 0 ? e / m : e;
}

static void check_case(enum porta_dtype t, int64_t cols, int n_rows, int n_tok)
{
    const struct porta_cpu_kernels *k = porta_cpu_kernels_avx512();
    const struct porta_type_traits *tt = porta_type_traits(t), *at = porta_type_traits(tt->vec_dot_type);
    size_t rb = porta_row_size(t, cols), arb = porta_row_size(tt->vec_dot_type, cols);
    size_t as = porta_gemm_act_bytes(t, cols);
    uint8_t *w = malloc(rb * n_rows), *aref = malloc(arb * n_tok);
    uint8_t *group = aligned_alloc(64, (porta_repack_group_bytes(t, cols) + 63) & ~(size_t)63);
    uint8_t *act = aligned_alloc(64, as * n_tok);
    float *x = malloc(sizeof(float) * cols * n_tok), *ref = malloc(sizeof(float) * n_tok * n_rows);
    float *y_amx = malloc(sizeof(float) * (n_tok * n_rows + 1));
    float *y_vnni = malloc(sizeof(float) * (n_tok * n_rows + 1));
    for (int r = 0; r < n_rows; r++) {
        tu_fill(x, (size_t)cols, 100 + r, 1.0f);
        ck_assert_int_eq(porta_quantize_row(t, x, w + r * rb, cols), 0);
    }
    porta_repack_group(t, group, w, rb, n_rows, cols);
    tu_fill(x, (size_t)cols * n_tok, 7 + n_tok, 2.0f);
    for (int i = 0; i < n_tok; i++) {
        k->gemm_act[t](x + i * cols, act + i * as, cols);
        at->from_float(x + i * cols, aref + i * arb, cols);
    }
    for (int i = 0; i < n_tok; i++)
        for (int r = 0; r < n_rows; r++)
            tt->vec_dot(cols, &ref[i * n_rows + r], w + r * rb, aref + i * arb);
    /* AMX takes the whole 16-token tiles and a last tile of 12 or more, VNNI the rest */
    porta_amx_use(true);
    int want = n_tok % 16 >= 12 ? n_tok : n_tok & ~15;
    ck_assert_int_eq(porta_amx_gemm(t, cols, group, act, as, n_tok, y_amx, (size_t)n_rows, n_rows),
                     want);
    run_gemm(k, t, true, group, act, as, cols, n_tok, n_rows, y_amx);
    run_gemm(k, t, false, group, act, as, cols, n_tok, n_rows, y_vnni);
    double e_ref = rel_err(y_amx, ref, (size_t)n_tok * n_rows);
    double e_vnni = rel_err(y_amx, y_vnni, (size_t)n_tok * n_rows);
    printf("test_cpu_amx: %-4s cols %5lld rows %2d tokens %3d: |amx - ref| %.2g, |amx - vnni| %.2g\n",
           porta_dtype_name(t), (long long)cols, n_rows, n_tok, e_ref, e_vnni);
    ck_assert_msg(e_ref < 1e-5, "%s: AMX vs reference %g", porta_dtype_name(t), e_ref);
    ck_assert_msg(e_vnni < 1e-5, "%s: AMX vs VNNI %g", porta_dtype_name(t), e_vnni);
    free(w);
    free(aref);
    free(group);
    free(act);
    free(x);
    free(ref);
    free(y_amx);
    free(y_vnni);
}

START_TEST(test_amx_gemm)
{
    if (!porta_cpu_kernels_avx512() || !porta_cpu_has("avx512") || !porta_amx_supported()) {
        printf("test_cpu_amx: skipped: %s\n", !porta_cpu_kernels_avx512() ? "AVX-512 not compiled in"
               : !porta_cpu_has("avx512") ? "this CPU/OS lacks AVX-512" : "no AMX here");
        ck_assert(!porta_amx_use(true) || porta_amx_supported());
        return;
    }
    enum porta_dtype t = amx_types[_i];
    int64_t blk = porta_type_traits(t)->blck;
    /* 9 blocks: a short last pass of the 32-block kernels; 3 super-blocks for the K types */
    int64_t cols = blk == 32 ? 9 * 32 : 3 * 256, big = blk == 32 ? 48 * 32 : 6 * 256;
    check_case(t, cols, 16, 16);
    check_case(t, cols, 13, 33);     /* a short group and a short token tile */
    check_case(t, big, 16, 128);
    check_case(t, cols, 5, 9);       /* all VNNI */
    check_case(t, cols, 16, 28);     /* a 12-token AMX tail */
    porta_amx_use(false);
}
END_TEST

/* the switch: off stays off; on only where supported; the gemm entries run either way */
START_TEST(test_amx_switch)
{
    ck_assert(!porta_amx_use(false));
    ck_assert(!porta_amx_active());
    bool on = porta_amx_use(true);
    ck_assert_int_eq(on, porta_amx_supported());
    ck_assert_int_eq(porta_amx_active(), on);
    porta_amx_use(false);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cpu_amx");
    TCase *tc = tcase_create("amx");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_amx_gemm, 0, N_TYPES);
    tcase_add_test(tc, test_amx_switch);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
