/* test_placement.c - per-layer placement: a model split into runs of layers, each loaded on
 * its own backend (porta_model_load_range) with linked contexts (porta_ctx_link), gives the
 * reference logits of ../shared/data/arch; each part holds only its layers' weights; the KV
 * copy between sequences covers every part; bad ranges and links are errors. */
#include <math.h>

#include "../backends/cpu/kernels.h"
#include "backend.h"
#include "gguf.h"
#include "model.h"
#include "testutil.h"

struct part {
    const char *backend, *kernels;
    int from, to;                   /* to < 0: the last layer */
};

static struct porta_backend *open_be(const char *name, const char *kernels)
{
    struct porta_backend_cfg cfg = { .threads = 2, .cpu_kernels = kernels, .platform = 0,
                                     .device = 0 };   /* PoCL only by index */
    struct porta_backend *be = NULL;
    if (porta_backend_open(name, &cfg, &be)) {
        printf("SKIP placement on %s: %s\n", name, porta_log_last_error());
        return NULL;
    }
    return be;
}

/* Runs ids (prefill of the first half, then one token at a time) through the parts and checks
 * every position's logits against the reference. Returns false when a backend is missing. */
static bool check_split(const char *arch, const struct part *parts, int n_parts, double tol)
{
    char model[96], logits_rel[96], ids_rel[96];
    snprintf(model, sizeof model, "arch/%s/model-f32.gguf", arch);
    snprintf(logits_rel, sizeof logits_rel, "arch/%s/logits.f32", arch);
    snprintf(ids_rel, sizeof ids_rel, "arch/%s/ids.json", arch);
    int32_t ids[256];
    char *txt = tu_read_file(tu_path(ids_rel), NULL);
    ck_assert_ptr_nonnull(txt);
    int n = tu_parse_ids(txt, ids, 256);
    free(txt);
    size_t rn;
    float *ref = tu_read_file(tu_path(logits_rel), &rn);
    ck_assert_ptr_nonnull(ref);

    struct porta_backend *be[4] = { 0 };
    struct porta_model *m[4] = { 0 };
    struct porta_ctx *c[4] = { 0 };
    struct porta_ctx_params cp = { .n_ctx = n + 4, .n_seq = 2, .n_batch = 16,
                                   .kv_type = PORTA_F32 };
    bool ok = true;
    char label[160] = "";
    size_t ll = 0;
    for (int i = 0; i < n_parts && ok; i++) {
        if (!(be[i] = open_be(parts[i].backend, parts[i].kernels))) {
            ok = false;
            break;
        }
        int to = parts[i].to;
        if (to < 0) {
            struct porta_gguf *g;
            struct porta_hparams hp;
            ck_assert_int_eq(porta_gguf_open(tu_path(model), &g), 0);
            ck_assert_int_eq(porta_hparams_read(g, &hp), 0);
            to = hp.n_layer - 1;
            porta_gguf_close(g);
        }
        ck_assert_msg(porta_model_load_range(tu_path(model), be[i], parts[i].from, to, &m[i]) ==
                          0,
                      "%s layers %d..%d: %s", arch, parts[i].from, to, porta_log_last_error());
        /* only the first part embeds, only the last holds the output matrix */
        ck_assert(!!m[i]->tok_embd.buf == (parts[i].from == 0 ||
                                           (i == n_parts - 1 && m[i]->output.buf ==
                                                                    m[i]->tok_embd.buf)));
        ck_assert(!!m[i]->output.buf == (i == n_parts - 1));
        for (int il = 0; il < m[i]->hp.n_layer; il++)
            ck_assert(!!m[i]->layers[il].attn_norm.buf == (il >= parts[i].from && il <= to));
        ck_assert_int_eq(porta_ctx_create(m[i], &cp, &c[i]), 0);
        if (i > 0)
            ck_assert_int_eq(porta_ctx_link(c[i - 1], c[i]), 0);
        ll += (size_t)snprintf(label + ll, sizeof label - ll, "%s%s%s%s %d..%d",
                               i ? " + " : "", parts[i].backend, parts[i].kernels ? "/" : "",
                               parts[i].kernels ? parts[i].kernels : "", parts[i].from, to);
    }
    if (ok) {
        int nv = m[0]->hp.n_vocab, half = n / 2;
        ck_assert_uint_eq(rn, sizeof(float) * (size_t)n * nv);
        float *got = malloc(sizeof(float) * (size_t)n * nv), *again = malloc(sizeof(float) * nv);
        bool want[256];
        for (int i = 0; i < n; i++)
            want[i] = true;
        struct porta_batch b = { .n_tok = half, .ids = ids, .logits = want };
        ck_assert_int_eq(porta_forward(c[0], &b, got), 0);
        for (int i = half; i < n; i++) {
            struct porta_batch d = { .n_tok = 1, .ids = ids + i };
            ck_assert_int_eq(porta_forward(c[0], &d, got + (size_t)i * nv), 0);
        }
        double err = tu_max_abs_diff(got, ref, (size_t)n * nv);
        printf("placement %s %-44s max abs err %.3g (tolerance %.3g)\n", arch, label, err, tol);
        ck_assert_msg(err <= tol, "%s %s: max abs error %.4g > %.4g", arch, label, err, tol);

        /* sequence 1 gets sequence 0's first n - 1 positions in every part, then decodes the
         * last token to the same logits */
        void *tmp = NULL;
        size_t cap = 0;
        ck_assert_int_eq(porta_ctx_kv_copy(c[0], 1, 0, n - 1, &tmp, &cap), 0);
        int32_t pos = n - 1, seq = 1;
        struct porta_batch d = { .n_tok = 1, .ids = ids + n - 1, .pos = &pos, .seq = &seq };
        ck_assert_int_eq(porta_forward(c[0], &d, again), 0);
        double e2 = tu_max_abs_diff(again, got + (size_t)(n - 1) * nv, (size_t)nv);
        ck_assert_msg(e2 <= 1e-4, "%s %s: decode after the KV copy differs by %.4g", arch,
                      label, e2);
        ck_assert_int_eq(porta_ctx_kv_copy(c[0], 2, 0, 1, &tmp, &cap), PORTA_E_RANGE);
        free(tmp);
        free(got);
        free(again);
    }
    for (int i = 0; i < n_parts; i++) {
        porta_ctx_destroy(c[i]);
        porta_model_destroy(m[i]);
        porta_backend_close(be[i]);
    }
    free(ref);
    return ok;
}

/* two CPU kernel sets: the split itself, with no device in the way */
START_TEST(test_cpu_split)
{
    static const char *const archs[] = { "llama", "qwen2", "qwen2moe", "deepseek2-lite" };
    for (int a = 0; a < 4; a++) {
        struct part p[] = { { "cpu", "avx2", 0, 0 }, { "cpu", "scalar", 1, -1 } };
        if (!porta_cpu_has("avx2"))
            p[0].kernels = "scalar";
        ck_assert(check_split(archs[a], p, 2, 1e-3));
    }
}
END_TEST

/* CPU, an OpenCL device (PoCL in CI), CPU again: the hidden state crosses backends twice */
START_TEST(test_cpu_opencl_split)
{
    static const char *const archs[] = { "llama", "qwen2moe", "deepseek2-lite" };
    for (int a = 0; a < 3; a++) {
        struct part p[] = { { "cpu", NULL, 0, 0 }, { "opencl", NULL, 1, 1 },
                            { "cpu", NULL, 2, -1 } };
        if (!check_split(archs[a], p, 3, 1e-3))
            return;                 /* no OpenCL device: said above */
    }
}
END_TEST

START_TEST(test_bad_ranges)
{
    struct porta_backend *be = open_be("cpu", "scalar");
    ck_assert_ptr_nonnull(be);
    const char *path = tu_path("arch/llama/model-f32.gguf");
    struct porta_model *a, *b, *x;
    ck_assert_int_eq(porta_model_load_range(path, be, 2, 1, &x), PORTA_E_INVAL);
    ck_assert_ptr_null(x);
    ck_assert_int_eq(porta_model_load_range(path, be, -1, 1, &x), PORTA_E_INVAL);
    ck_assert_int_eq(porta_model_load_range(path, be, 0, 99, &x), PORTA_E_INVAL);
    ck_assert_ptr_nonnull(strstr(porta_log_last_error(), "the model has layers 0..2"));
    ck_assert_int_eq(porta_model_load_range(path, be, 0, 0, &a), 0);
    ck_assert_int_eq(porta_model_load_range(path, be, 2, 2, &b), 0);
    struct porta_ctx_params cp = { .n_ctx = 8, .n_seq = 1, .n_batch = 4, .kv_type = PORTA_F32 };
    struct porta_ctx *ca, *cb;
    ck_assert_int_eq(porta_ctx_create(a, &cp, &ca), 0);
    ck_assert_int_eq(porta_ctx_create(b, &cp, &cb), 0);
    ck_assert_int_eq(porta_ctx_link(ca, cb), PORTA_E_INVAL);   /* layer 1 missing */
    porta_ctx_destroy(ca);
    porta_ctx_destroy(cb);
    porta_model_destroy(a);
    porta_model_destroy(b);
    porta_backend_close(be);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("placement");
    TCase *tc = tcase_create("split");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cpu_split);
    tcase_add_test(tc, test_cpu_opencl_split);
    tcase_add_test(tc, test_bad_ranges);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
