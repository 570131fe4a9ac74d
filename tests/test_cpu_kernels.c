/* test_cpu_kernels.c - every CPU kernel table this machine can run (scalar always; AVX2 and
 * AVX-512 when porta_cpu_has() says so) against core/quant.c's reference: dot products within
 * float rounding of the reference, activation quantizers and dequantizers bit for bit. */
#include "testutil.h"

#include <stddef.h>
#include <stdint.h>

#include "backends/cpu/kernels.h"

/* ---- the tables under test ------------------------------------------------------------------ */

struct table {
    const char *set;
    const struct porta_cpu_kernels *k;
};

static const char *const simd_sets[2] = { "avx2", "avx512" };

static const struct porta_cpu_kernels *simd_table(int i)
{
    return i == 0 ? porta_cpu_kernels_avx2() : porta_cpu_kernels_avx512();
}

/* Fills out[] with the tables this machine runs: scalar first, then the SIMD ones. */
static int tables(struct table *out)
{
    int n = 0;
    out[n++] = (struct table){ "scalar", porta_cpu_kernels_scalar() };
    for (int i = 0; i < 2; i++)
        if (simd_table(i) && porta_cpu_has(simd_sets[i]))
            out[n++] = (struct table){ simd_sets[i], simd_table(i) };
    return n;
}

/* Says which SIMD tables are skipped, and why. */
static void report_skipped(void)
{
    for (int i = 0; i < 2; i++) {
        if (!simd_table(i))
            printf("test_cpu_kernels: %s skipped: not compiled in\n", simd_sets[i]);
        else if (!porta_cpu_has(simd_sets[i]))
            printf("test_cpu_kernels: %s skipped: this CPU/OS lacks it\n", simd_sets[i]);
    }
}

static const enum porta_dtype weight_types[] = {
    PORTA_F32, PORTA_F16, PORTA_BF16, PORTA_Q4_0, PORTA_Q4_1, PORTA_Q5_0, PORTA_Q5_1,
    PORTA_Q8_0, PORTA_Q2_K, PORTA_Q3_K, PORTA_Q4_K, PORTA_Q5_K, PORTA_Q6_K,
};
#define N_WEIGHT_TYPES (int)(sizeof weight_types / sizeof weight_types[0])

static const int64_t float_sizes[] = { 1, 7, 8, 33, 1000, 4099 };
static const int64_t block_sizes[] = { 32, 96, 256, 768, 4864 };

/* ---- test data ------------------------------------------------------------------------------ */

/* Where the half-precision scales of a block live: random payload bytes get sane ones there. */
struct scale_fields {
    enum porta_dtype type;
    int d, m;                         /* byte offsets in the block; m = -1 when absent */
};
static const struct scale_fields scale_fields[] = {
    { PORTA_Q4_0, offsetof(struct porta_block_q4_0, d), -1 },
    { PORTA_Q4_1, offsetof(struct porta_block_q4_1, d), offsetof(struct porta_block_q4_1, m) },
    { PORTA_Q5_0, offsetof(struct porta_block_q5_0, d), -1 },
    { PORTA_Q5_1, offsetof(struct porta_block_q5_1, d), offsetof(struct porta_block_q5_1, m) },
    { PORTA_Q8_0, offsetof(struct porta_block_q8_0, d), -1 },
    { PORTA_Q2_K, offsetof(struct porta_block_q2_K, d), offsetof(struct porta_block_q2_K, dmin) },
    { PORTA_Q3_K, offsetof(struct porta_block_q3_K, d), -1 },
    { PORTA_Q4_K, offsetof(struct porta_block_q4_K, d), offsetof(struct porta_block_q4_K, dmin) },
    { PORTA_Q5_K, offsetof(struct porta_block_q5_K, d), offsetof(struct porta_block_q5_K, dmin) },
    { PORTA_Q6_K, offsetof(struct porta_block_q6_K, d), -1 },
};

static void put_f16(uint8_t *p, float v)
{
    porta_f16 h = porta_f32_to_f16(v);
    memcpy(p, &h, sizeof h);
}

/* Random floats whose magnitude varies from block to block (as real weights and activations
 * do), so that block scales differ. */
static void rand_floats(float *x, int64_t n, unsigned long long *st)
{
    float scale = 1;
    for (int64_t i = 0; i < n; i++) {
        if (i % 32 == 0)
            scale = 0.01f + 2.0f * (float)fabs(tu_randf(st));
        x[i] = scale * tu_randf(st);
    }
}

/* Random payload bytes: every nibble / crumb / sign pattern. Float types get their exponent's
 * top bit cleared (|x| < 2, subnormals included, no inf/NaN); block types get sane f16 scales. */
static void rand_bytes(enum porta_dtype t, uint8_t *buf, int64_t n, unsigned long long *st)
{
    const struct porta_type_traits *tr = porta_type_traits(t);
    size_t bytes = porta_row_size(t, n);
    for (size_t i = 0; i < bytes; i++)
        buf[i] = (uint8_t)(tu_rng_next(st) >> 56);
    if (t == PORTA_F32) {
        for (size_t i = 3; i < bytes; i += 4)
            buf[i] &= 0xBF;
    } else if (t == PORTA_F16 || t == PORTA_BF16) {
        for (size_t i = 1; i < bytes; i += 2)
            buf[i] &= 0xBF;
    }
    for (size_t f = 0; f < sizeof scale_fields / sizeof scale_fields[0]; f++) {
        if (scale_fields[f].type != t)
            continue;
        for (int64_t b = 0; b < n / tr->blck; b++) {
            uint8_t *blk = buf + b * tr->type_size;
            put_f16(blk + scale_fields[f].d, 0.05f * tu_randf(st));
            if (scale_fields[f].m >= 0)
                put_f16(blk + scale_fields[f].m, 0.05f * tu_randf(st));
        }
    }
}

/* ---- vec_dot -------------------------------------------------------------------------------- */

/* Buffers for one (type, n) case; rows start 4 bytes past a malloc'd address so the SIMD
 * loads are unaligned, as rows inside a GGUF tensor generally are. */
struct dot_case {
    enum porta_dtype t, vt;
    int64_t n;
    uint8_t *wbuf, *abuf;
    uint8_t *w, *a;
    float *x, *wf, *af;
};

static void dot_case_init(struct dot_case *c, enum porta_dtype t, int64_t n)
{
    c->t = t;
    c->vt = porta_type_traits(t)->vec_dot_type;
    c->n = n;
    c->wbuf = malloc(porta_row_size(t, n) + 4);
    c->abuf = malloc(porta_row_size(c->vt, n) + 4);
    c->x = malloc((size_t)n * sizeof(float));
    c->wf = malloc((size_t)n * sizeof(float));
    c->af = malloc((size_t)n * sizeof(float));
    ck_assert(c->wbuf && c->abuf && c->x && c->wf && c->af);
    c->w = c->wbuf + 4;
    c->a = c->abuf + 4;
}

static void dot_case_free(struct dot_case *c)
{
    free(c->wbuf);
    free(c->abuf);
    free(c->x);
    free(c->wf);
    free(c->af);
}

/* Max over all cases of |simd - ref| / sum|w*a|, reported at the end. */
static double worst_rel;

/* Fills weights (mode 0: quantized random floats; mode 1: random payload bytes) and
 * activations, then checks every table's vec_dot against the reference. */
static void check_dot(struct dot_case *c, int mode, unsigned long long seed)
{
    unsigned long long st = seed * 0x9E3779B97F4A7C15ULL + 7;
    const struct porta_type_traits *tr = porta_type_traits(c->t), *vtr = porta_type_traits(c->vt);
    if (mode == 0) {
        rand_floats(c->x, c->n, &st);
        ck_assert_int_eq(porta_quantize_row(c->t, c->x, c->w, c->n), 0);
    } else {
        rand_bytes(c->t, c->w, c->n, &st);
    }
    rand_floats(c->x, c->n, &st);
    ck_assert_int_eq(porta_quantize_row(c->vt, c->x, c->a, c->n), 0);
    tr->to_float(c->w, c->wf, c->n);
    vtr->to_float(c->a, c->af, c->n);
    double mag = 0;
    for (int64_t i = 0; i < c->n; i++)
        mag += fabs((double)c->wf[i] * c->af[i]);

    float ref;
    tr->vec_dot(c->n, &ref, c->w, c->a);
    ck_assert_msg(isfinite(ref), "%s n=%lld: reference not finite", tr->name, (long long)c->n);

    struct table tb[3];
    int nt = tables(tb);
    for (int k = 0; k < nt; k++) {
        porta_vec_dot_fn dot = tb[k].k->vec_dot[c->t];
        if (!dot) {
            ck_assert_msg(k != 0, "scalar table lacks vec_dot for %s", tr->name);
            continue;                 /* cpu.c takes the scalar one */
        }
        float got = NAN;
        dot(c->n, &got, c->w, c->a);
        double err = fabs((double)got - ref);
        ck_assert_msg(err <= 1e-5 * mag + 1e-30,
                      "%s vec_dot %s n=%lld mode %d: got %.9g, reference %.9g (|err| %.3g, "
                      "sum|w*a| %.3g)", tb[k].set, tr->name, (long long)c->n, mode, got, ref,
                      err, mag);
        if (mag > 0 && err / mag > worst_rel)
            worst_rel = err / mag;
    }
}

START_TEST(test_vec_dot)
{
    const enum porta_dtype t = weight_types[_i];
    const struct porta_type_traits *tr = porta_type_traits(t);
    ck_assert_ptr_nonnull(tr);
    worst_rel = 0;
    const int64_t *sizes = tr->blck == 1 ? float_sizes : block_sizes;
    int nsizes = tr->blck == 1 ? (int)(sizeof float_sizes / sizeof float_sizes[0])
                               : (int)(sizeof block_sizes / sizeof block_sizes[0]);
    for (int s = 0; s < nsizes; s++) {
        if (sizes[s] % tr->blck)
            continue;
        struct dot_case c;
        dot_case_init(&c, t, sizes[s]);
        for (int mode = 0; mode < 2; mode++)
            for (unsigned long long seed = 1; seed <= 3; seed++)
                check_dot(&c, mode, seed + 100ULL * (unsigned)s + 1000ULL * (unsigned)t);
        dot_case_free(&c);
    }
    /* Check runs each test in a child process: report from here */
    printf("test_cpu_kernels: vec_dot %-4s worst |simd - ref| / sum|w*a| = %.3g (limit 1e-5)\n",
           tr->name, worst_rel);
}
END_TEST

/* An integer-only case where the answer is known: all-ones weights against a ramp, so a kernel
 * that drops a block or a nibble half fails visibly even if the reference were wrong the same
 * way. */
START_TEST(test_vec_dot_known)
{
    float x[256], ones[256];
    for (int i = 0; i < 256; i++) {
        x[i] = (float)((i % 19) - 9);
        ones[i] = 1;
    }
    const enum porta_dtype types[] = { PORTA_Q4_0, PORTA_Q8_0, PORTA_Q4_K, PORTA_Q6_K };
    double want = 0;
    for (int i = 0; i < 256; i++)
        want += x[i];
    struct table tb[3];
    int nt = tables(tb);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        enum porta_dtype t = types[ti], vt = porta_type_traits(t)->vec_dot_type;
        uint8_t w[512], a[512];
        ck_assert_int_eq(porta_quantize_row(t, ones, w, 256), 0);
        ck_assert_int_eq(porta_quantize_row(vt, x, a, 256), 0);
        float wf[256], af[256];
        porta_dequantize_row(t, w, wf, 256);
        porta_dequantize_row(vt, a, af, 256);
        double exact = 0;
        for (int i = 0; i < 256; i++)
            exact += (double)wf[i] * af[i];
        ck_assert_msg(fabs(exact - want) < 0.05 * 256, "%s: round trip off", porta_dtype_name(t));
        for (int k = 0; k < nt; k++) {
            float got;
            tb[k].k->vec_dot[t](256, &got, w, a);
            ck_assert_msg(fabs(got - exact) <= 1e-4 * fabs(exact) + 1e-3,
                          "%s %s: got %g want %g", tb[k].set, porta_dtype_name(t), got, exact);
        }
    }
}
END_TEST

/* ---- activation quantizers: bit-identical ------------------------------------------------- */

static const enum porta_dtype act_types[] = { PORTA_Q8_0, PORTA_Q8_1, PORTA_Q8_K };

/* Inputs that stress the rounding: exact halves after scaling, both signs of the largest
 * magnitude, zeros, NaN, inf, subnormals, huge values. */
static void special_floats(float *x, int64_t n, int kind, unsigned long long *st)
{
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case 0:   /* multiples of 0.5 up to 127: scale 1 for Q8_0 (amax 127) and Q8_K (max -127) */
            x[i] = 0.5f * (float)((int)(tu_rng_next(st) % 509) - 254);
            if (i % 32 == 0)
                x[i] = (i / 32) % 2 ? 127.0f : -127.0f;
            break;
        case 1:   /* zero blocks and blocks with a single value */
            x[i] = (i / 32) % 3 == 0 ? 0.0f : (i % 32 == 5 ? -3.0f : 0.0f);
            break;
        case 2:   /* +a and -a both present: the first one decides Q8_K's sign */
            x[i] = tu_randf(st);
            if (i % 64 == 3)
                x[i] = (i / 64) % 2 ? -1.5f : 1.5f;
            if (i % 64 == 40)
                x[i] = (i / 64) % 2 ? 1.5f : -1.5f;
            break;
        case 3:   /* NaN, inf, subnormal and huge values sprinkled in */
            x[i] = tu_randf(st);
            if (i % 37 == 0)
                x[i] = NAN;
            if (i % 301 == 7)
                x[i] = (i % 2) ? INFINITY : -INFINITY;
            if ((i / 256) % 4 == 2)
                x[i] *= 1e-41f;
            if ((i / 256) % 4 == 3)
                x[i] *= 3e38f;
            break;
        default:  /* values just below / above the halves */
            x[i] = 0.5f * (float)((int)(tu_rng_next(st) % 255) - 127);
            x[i] = (tu_rng_next(st) & 1) ? nextafterf(x[i], 0) : nextafterf(x[i], 1e9f);
            if (i % 32 == 0)
                x[i] = 127.0f;
            break;
        }
    }
}

START_TEST(test_quantize_bitexact)
{
    const enum porta_dtype vt = act_types[_i];
    const struct porta_type_traits *vtr = porta_type_traits(vt);
    const int64_t n = 4096;
    float *x = malloc(n * sizeof(float));
    size_t bytes = porta_row_size(vt, n);
    uint8_t *ref = malloc(bytes), *got = malloc(bytes + 64);
    ck_assert(x && ref && got);
    unsigned long long st = 12345 + (unsigned long long)vt;
    struct table tb[3];
    int nt = tables(tb);
    ck_assert_ptr_eq(tb[0].k->quantize[vt], vtr->from_float);
    for (int kind = -3; kind < 5; kind++) {
        if (kind < 0)
            rand_floats(x, n, &st);
        else
            special_floats(x, n, kind, &st);
        vtr->from_float(x, ref, n);
        for (int k = 1; k < nt; k++) {
            porta_from_float_fn q = tb[k].k->quantize[vt];
            if (!q)
                continue;
            memset(got, 0xA5, bytes + 64);
            q(x, got, n);
            for (size_t i = 0; i < bytes; i++)
                ck_assert_msg(got[i] == ref[i], "%s quantize %s input kind %d: byte %zu "
                              "(block %zu) is %02x, reference %02x", tb[k].set, vtr->name, kind, i,
                              i / vtr->type_size, got[i], ref[i]);
            for (size_t i = bytes; i < bytes + 64; i++)
                ck_assert_msg(got[i] == 0xA5, "%s quantize %s wrote past the row", tb[k].set,
                              vtr->name);
        }
    }
    /* short rows: one block, and a few */
    for (int64_t m = vtr->blck; m <= 3 * vtr->blck; m += vtr->blck) {
        rand_floats(x, m, &st);
        size_t b = porta_row_size(vt, m);
        vtr->from_float(x, ref, m);
        for (int k = 1; k < nt; k++) {
            if (!tb[k].k->quantize[vt])
                continue;
            memset(got, 0xA5, b + 64);
            tb[k].k->quantize[vt](x, got, m);
            ck_assert_msg(memcmp(got, ref, b) == 0, "%s quantize %s n=%lld differs", tb[k].set,
                          vtr->name, (long long)m);
            ck_assert_int_eq(got[b], 0xA5);
        }
    }
    free(x);
    free(ref);
    free(got);
}
END_TEST

/* The 129 floats nearest each k + 1/2 (k in -128..127) at scale 1: the first element of every
 * 32 is -127, so Q8_0 gets d = 1 and Q8_K iscale = 1. Q8_0's roundf and Q8_K's nearest-even
 * must match the reference on every one, ties and near-ties included. */
START_TEST(test_quantize_rounding_sweep)
{
    const int64_t n = 256 * 160;
    float *x = malloc(n * sizeof(float));
    const size_t cap = porta_row_size(PORTA_Q8_K, n);   /* the larger of the two rows */
    uint8_t *ref = malloc(cap), *got = malloc(cap);
    ck_assert(x && ref && got);
    int64_t i = 0;
    for (int k = -128; k < 128; k++) {
        float v = (float)k + 0.5f;
        for (int u = 0; u < 64; u++)
            v = nextafterf(v, -1e9f);
        for (int u = 0; u <= 128; u++, v = nextafterf(v, 1e9f)) {
            if (i % 32 == 0)
                x[i++] = -127.0f;
            x[i++] = v;
        }
    }
    while (i < n) {
        x[i] = i % 32 == 0 ? -127.0f : 0.5f;
        i++;
    }
    struct table tb[3];
    int nt = tables(tb);
    const enum porta_dtype types[2] = { PORTA_Q8_0, PORTA_Q8_K };
    for (int ti = 0; ti < 2; ti++) {
        size_t bytes = porta_row_size(types[ti], n);
        porta_quantize_row(types[ti], x, ref, n);
        for (int k = 1; k < nt; k++) {
            if (!tb[k].k->quantize[types[ti]])
                continue;
            tb[k].k->quantize[types[ti]](x, got, n);
            ck_assert_msg(memcmp(got, ref, bytes) == 0, "%s quantize %s: rounding differs",
                          tb[k].set, porta_dtype_name(types[ti]));
        }
    }
    free(x);
    free(ref);
    free(got);
}
END_TEST

/* ---- dequantizers: bit-identical ------------------------------------------------------------ */

static bool same_float(float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub || (a != a && b != b);
}

START_TEST(test_to_float_bitexact)
{
    const enum porta_dtype t = weight_types[_i];
    const struct porta_type_traits *tr = porta_type_traits(t);
    const int64_t n = 4864;
    uint8_t *w = malloc(porta_row_size(t, n) + 4);
    float *x = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    float *got = malloc((n + 16) * sizeof(float));
    ck_assert(w && x && ref && got);
    unsigned long long st = 777 + (unsigned long long)t;
    struct table tb[3];
    int nt = tables(tb);
    ck_assert_ptr_eq(tb[0].k->to_float[t], tr->to_float);
    for (int mode = 0; mode < 2; mode++) {
        for (int64_t m = n; m >= tr->blck; m = m / 7 / tr->blck * tr->blck) {
            if (mode == 0) {
                rand_floats(x, m, &st);
                porta_quantize_row(t, x, w + 4, m);
            } else {
                rand_bytes(t, w + 4, m, &st);
            }
            tr->to_float(w + 4, ref, m);
            for (int k = 1; k < nt; k++) {
                if (!tb[k].k->to_float[t])
                    continue;
                for (int i = 0; i < m + 16; i++)
                    got[i] = -12345.0f;
                tb[k].k->to_float[t](w + 4, got, m);
                for (int64_t i = 0; i < m; i++)
                    ck_assert_msg(same_float(got[i], ref[i]), "%s to_float %s n=%lld: "
                                  "[%lld] = %.9g, reference %.9g", tb[k].set, tr->name,
                                  (long long)m, (long long)i,
                                  got[i], ref[i]);
                ck_assert_msg(got[m] == -12345.0f, "%s to_float %s wrote past the row", tb[k].set,
                              tr->name);
            }
            if (m == tr->blck)
                break;
        }
    }
    free(w);
    free(x);
    free(ref);
    free(got);
}
END_TEST

/* All 65536 half-precision values (NaN payloads aside). */
START_TEST(test_f16_all_values)
{
    porta_f16 *h = malloc(65536 * sizeof *h);
    float *ref = malloc(65536 * sizeof(float)), *got = malloc(65536 * sizeof(float));
    ck_assert(h && ref && got);
    for (int i = 0; i < 65536; i++)
        h[i] = (porta_f16)i;
    porta_dequantize_row(PORTA_F16, h, ref, 65536);
    struct table tb[3];
    int nt = tables(tb);
    for (int k = 1; k < nt; k++) {
        if (!tb[k].k->to_float[PORTA_F16])
            continue;
        tb[k].k->to_float[PORTA_F16](h, got, 65536);
        for (int i = 0; i < 65536; i++)
            ck_assert_msg(same_float(got[i], ref[i]), "%s f16 %04x: %g vs %g", tb[k].set, i,
                          got[i], ref[i]);
    }
    free(h);
    free(ref);
    free(got);
}
END_TEST

/* ---- the tables themselves ------------------------------------------------------------------ */

START_TEST(test_tables)
{
    const struct porta_cpu_kernels *sc = porta_cpu_kernels_scalar();
    ck_assert_ptr_nonnull(sc);
    ck_assert_str_eq(sc->name, "scalar");
    ck_assert(porta_cpu_has("scalar"));
    ck_assert(!porta_cpu_has("avx9000"));
    ck_assert(!porta_cpu_has(NULL));
    if (porta_cpu_has("avx512"))
        ck_assert_msg(porta_cpu_has("avx2"), "avx512 without avx2");
    for (int i = 0; i < N_WEIGHT_TYPES; i++) {
        enum porta_dtype t = weight_types[i];
        enum porta_dtype vt = porta_type_traits(t)->vec_dot_type;
        ck_assert_ptr_nonnull(sc->vec_dot[t]);
        ck_assert_ptr_nonnull(sc->to_float[t]);
        ck_assert_msg(sc->quantize[vt] != NULL, "scalar table: no quantizer for %s",
                      porta_dtype_name(vt));
    }
    if (porta_cpu_kernels_avx2())
        ck_assert_str_eq(porta_cpu_kernels_avx2()->name, "avx2");
    if (porta_cpu_kernels_avx512())
        ck_assert_str_eq(porta_cpu_kernels_avx512()->name, "avx512");
    struct table tb[3];
    int nt = tables(tb);
    printf("test_cpu_kernels: testing %d table(s):", nt);
    for (int k = 0; k < nt; k++)
        printf(" %s", tb[k].set);
    printf("\n");
}
END_TEST

int main(void)
{
    report_skipped();
    Suite *s = suite_create("cpu_kernels");
    TCase *tc = tcase_create("tables");
    tcase_add_test(tc, test_tables);
    suite_add_tcase(s, tc);

    tc = tcase_create("vec_dot");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_vec_dot, 0, N_WEIGHT_TYPES);
    tcase_add_test(tc, test_vec_dot_known);
    suite_add_tcase(s, tc);

    tc = tcase_create("quantize");
    tcase_add_loop_test(tc, test_quantize_bitexact, 0,
                        (int)(sizeof act_types / sizeof act_types[0]));
    tcase_add_test(tc, test_quantize_rounding_sweep);
    suite_add_tcase(s, tc);

    tc = tcase_create("to_float");
    tcase_add_loop_test(tc, test_to_float_bitexact, 0, N_WEIGHT_TYPES);
    tcase_add_test(tc, test_f16_all_values);
    suite_add_tcase(s, tc);

    return tu_run(s);
}
