/* test_model_logits.c - end-to-end numerics: the tiny reference models of ../shared/data/arch
 * (llama, qwen2, qwen2moe, qwen3moe, mixtral, deepseek2-lite, deepseek3; F32 and F16) and
 * ../shared/data/quant (every block format) run through the
 * model loader and forward pass on every backend and CPU kernel set, as one prefill, one token
 * at a time, and a prefix followed by single tokens; every position's logits must be within
 * the tolerance that the data's README states, and the argmax must agree wherever the
 * reference margin exceeds the observed error. */
#include <math.h>
#include <unistd.h>

#include "backend.h"
#include "model.h"
#include "../backends/cpu/kernels.h"
#include "testutil.h"

struct target {
    const char *backend, *kernels;
};
static struct target targets[8];
static int n_targets;

static void find_targets(void)
{
    int n;
    const struct porta_backend_ops *const *reg = porta_backend_registry(&n);
    for (int i = 0; i < n; i++) {
        if (strcmp(reg[i]->name, "cpu") == 0) {
            targets[n_targets++] = (struct target){ "cpu", "scalar" };
            if (porta_cpu_has("avx2"))
                targets[n_targets++] = (struct target){ "cpu", "avx2" };
            if (porta_cpu_has("avx512"))
                targets[n_targets++] = (struct target){ "cpu", "avx512" };
        } else {
            targets[n_targets++] = (struct target){ reg[i]->name, NULL };
        }
    }
}

enum mode { PREFILL, DECODE, SPLIT };
static const char *mode_name[] = { "prefill", "decode", "prefix+decode" };

/* Runs ids through the model in the given mode; fills logits [n][n_vocab]. */
static int run_model(struct porta_model *m, const int32_t *ids, int n, enum mode md,
                     enum porta_dtype kvt, float *logits)
{
    struct porta_ctx *c;
    struct porta_ctx_params cp = { .n_ctx = n + 4, .n_seq = 1, .n_batch = 16, .kv_type = kvt };
    int rc = porta_ctx_create(m, &cp, &c);
    if (rc)
        return rc;
    int nv = m->hp.n_vocab, split = md == PREFILL ? n : md == DECODE ? 0 : n / 2;
    bool want[256];
    for (int i = 0; i < n; i++)
        want[i] = true;
    if (split > 0) {
        struct porta_batch b = { .n_tok = split, .ids = ids, .logits = want };
        rc = porta_forward(c, &b, logits);
    }
    for (int i = split; i < n && !rc; i++) {
        struct porta_batch b = { .n_tok = 1, .ids = ids + i };
        rc = porta_forward(c, &b, logits + (size_t)i * nv);
    }
    porta_ctx_destroy(c);
    return rc;
}

/* max |a - ref| and the argmax check at clear-margin positions */
static double compare(const char *what, const float *got, const float *ref, int n, int nv)
{
    double err = tu_max_abs_diff(got, ref, (size_t)n * nv);
    for (int i = 0; i < n; i++) {
        const float *r = ref + (size_t)i * nv, *g = got + (size_t)i * nv;
        int a = 0, b = -1, ga = 0;
        for (int v = 1; v < nv; v++) {
            if (r[v] > r[a]) {
                b = a;
                a = v;
            } else if (b < 0 || r[v] > r[b]) {
                b = v;
            }
            if (g[v] > g[ga])
                ga = v;
        }
        if (r[a] - r[b] > 2 * err)
            ck_assert_msg(ga == a, "%s: argmax %d != reference %d at position %d (margin %.4f)",
                          what, ga, a, i, r[a] - r[b]);
    }
    return err;
}

static void check_path(const char *model_path, const char *logits_rel, const char *ids_rel,
                       double tol, enum porta_dtype kvt, bool all_modes);

static void check_file(const char *model_rel, const char *logits_rel, const char *ids_rel,
                       double tol, enum porta_dtype kvt, bool all_modes)
{
    check_path(tu_path(model_rel), logits_rel, ids_rel, tol, kvt, all_modes);
}

static void check_path(const char *model_path, const char *logits_rel, const char *ids_rel,
                       double tol, enum porta_dtype kvt, bool all_modes)
{
    const char *model_rel = model_path; /* for messages */
    int32_t ids[256];
    char *idtxt = tu_read_file(tu_path(ids_rel), NULL);
    ck_assert_msg(idtxt, "missing %s", tu_path(ids_rel));
    int n = tu_parse_ids(idtxt, ids, 256);
    free(idtxt);
    size_t rn;
    float *ref = tu_read_file(tu_path(logits_rel), &rn);
    ck_assert_msg(ref, "missing %s", tu_path(logits_rel));
    for (int ti = 0; ti < n_targets; ti++) {
        struct porta_backend_cfg cfg = { .threads = 2, .cpu_kernels = targets[ti].kernels,
                                         .platform = -1, .device = 0 }; /* PoCL only by index */
        struct porta_backend *be;
        char label[64];
        snprintf(label, sizeof label, "%s%s%s", targets[ti].backend, targets[ti].kernels ? "/" : "",
                 targets[ti].kernels ? targets[ti].kernels : "");
        if (porta_backend_open(targets[ti].backend, &cfg, &be)) {
            printf("SKIP %s on %s: %s\n", model_rel, label, porta_log_last_error());
            continue;
        }
        struct porta_model *m;
        ck_assert_msg(porta_model_load(model_path, be, &m) == 0, "%s: %s", model_rel,
                      porta_log_last_error());
        int nv = m->hp.n_vocab;
        ck_assert_int_eq(rn, sizeof(float) * (size_t)n * nv);
        float *got = malloc(sizeof(float) * (size_t)n * nv);
        for (int md = 0; md < (all_modes ? 3 : 1); md++) {
            ck_assert_msg(run_model(m, ids, n, md, kvt, got) == 0, "%s: forward failed: %s",
                          model_rel, porta_log_last_error());
            char what[160];
            snprintf(what, sizeof what, "%s %s %s kv %s", model_rel, label, mode_name[md],
                     kvt == PORTA_F16 ? "f16" : "f32");
            double err = compare(what, got, ref, n, nv);
            printf("%-40s max abs err %.3g (tolerance %.3g)\n", what, err, tol);
            ck_assert_msg(err <= tol, "%s: max abs error %.4g > tolerance %.4g", what, err, tol);
        }
        free(got);
        porta_model_destroy(m);
        porta_backend_close(be);
    }
    free(ref);
}

/* ---- ../shared/data/arch ---- */

START_TEST(test_arch_llama_f32) { check_file("arch/llama/model-f32.gguf", "arch/llama/logits.f32", "arch/llama/ids.json", 1e-3, PORTA_F32, true); }
END_TEST
START_TEST(test_arch_llama_f16) { check_file("arch/llama/model-f16.gguf", "arch/llama/logits.f32", "arch/llama/ids.json", 0.05, PORTA_F32, true); }
END_TEST
START_TEST(test_arch_qwen2_f32) { check_file("arch/qwen2/model-f32.gguf", "arch/qwen2/logits.f32", "arch/qwen2/ids.json", 1e-3, PORTA_F32, true); }
END_TEST
START_TEST(test_arch_qwen2_f16) { check_file("arch/qwen2/model-f16.gguf", "arch/qwen2/logits.f32", "arch/qwen2/ids.json", 0.05, PORTA_F32, true); }
END_TEST
/* the default F16 KV cache stays within the F16-weights tolerance */
START_TEST(test_arch_kv_f16) { check_file("arch/qwen2/model-f32.gguf", "arch/qwen2/logits.f32", "arch/qwen2/ids.json", 0.05, PORTA_F16, true); }
END_TEST

/* ---- mixture of experts and MLA (arch/README.md: F32 0.001, F16 per arch) ---- */

static const struct {
    const char *dir;
    double tol_f16;
} moe_archs[] = {
    { "qwen2moe", 0.05 }, { "qwen3moe", 0.05 }, { "mixtral", 0.1 },
    { "deepseek2-lite", 0.2 }, { "deepseek3", 0.2 },
};

START_TEST(test_arch_moe)
{
    char model[96], logits[96], ids[96];
    int a = _i / 2;
    bool f16 = _i % 2;
    snprintf(model, sizeof model, "arch/%s/model-%s.gguf", moe_archs[a].dir, f16 ? "f16" : "f32");
    snprintf(logits, sizeof logits, "arch/%s/logits.f32", moe_archs[a].dir);
    snprintf(ids, sizeof ids, "arch/%s/ids.json", moe_archs[a].dir);
    /* the cache paths (decode, prefix + decode) once per arch, on the F32 file */
    check_file(model, logits, ids, f16 ? moe_archs[a].tol_f16 : 1e-3, PORTA_F32, true);
}
END_TEST

/* MLA with the default F16 cache of compressed rows stays within the F16-weights tolerance */
START_TEST(test_arch_mla_kv_f16)
{
    check_file("arch/deepseek3/model-f32.gguf", "arch/deepseek3/logits.f32",
               "arch/deepseek3/ids.json", 0.2, PORTA_F16, true);
}
END_TEST

/* MLA's cache holds the compressed latent: per token and layer kv_lora_rank + rope dims
 * elements (one row for all heads) and no value cache, for both deepseek2 reference files */
START_TEST(test_arch_mla_kv_bytes)
{
    static const char *const files[] = { "arch/deepseek2-lite/model-f32.gguf",
                                         "arch/deepseek3/model-f32.gguf" };
    for (int f = 0; f < 2; f++) {
        struct porta_backend_cfg cfg = { .threads = 1, .cpu_kernels = "scalar" };
        struct porta_backend *be;
        ck_assert_int_eq(porta_backend_open("cpu", &cfg, &be), 0);
        struct porta_model *m;
        ck_assert_int_eq(porta_model_load(tu_path(files[f]), be, &m), 0);
        const struct porta_hparams *hp = &m->hp;
        for (int kv = 0; kv < 2; kv++) {
            struct porta_ctx_params cp = { .n_ctx = 40, .n_seq = 2, .n_batch = 8,
                                           .kv_type = kv ? PORTA_F32 : PORTA_F16 };
            struct porta_ctx *c;
            ck_assert_int_eq(porta_ctx_create(m, &cp, &c), 0);
            size_t es = kv ? 4 : 2, cells = 40 * 2;
            size_t per_tok = (size_t)(hp->kv_lora_rank + hp->n_rope) * (size_t)hp->n_layer * es;
            ck_assert_uint_eq(porta_be_buf_size(be, c->k_cache), per_tok * cells);
            ck_assert_ptr_null(c->v_cache);
            /* smaller than the expanded keys and values would be */
            ck_assert_uint_lt(per_tok, (size_t)hp->n_head * (hp->head_dim + hp->head_dim_v) *
                                           (size_t)hp->n_layer * es);
            porta_ctx_destroy(c);
        }
        porta_model_destroy(m);
        porta_backend_close(be);
    }
}
END_TEST

/* Newer llama.cpp converters store DeepSeek's attn_kv_b split per head into attn_k_b
 * [n_nope, kv_lora, n_head] (transposed: the absorbed form) and attn_v_b [kv_lora, v, n_head].
 * Rewrites an F32 deepseek2 file that way (model keys and tensors only) into a temporary file
 * and returns its path (static buffer). */
static const char *write_split_kv_b(const char *src_rel)
{
    static char path[64];
    struct porta_gguf *g;
    struct porta_gguf_writer *w;
    struct porta_hparams hp;
    ck_assert_int_eq(porta_gguf_open(tu_path(src_rel), &g), 0);
    ck_assert_int_eq(porta_hparams_read(g, &hp), 0);
    ck_assert_int_eq(porta_gguf_writer_create(&w), 0);
    for (int64_t i = 0; i < g->n_kv; i++) {
        const struct porta_gguf_kv *kv = &g->kv[i];
        char key[128], str[128];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
        if (strncmp(key, "deepseek2.", 10) != 0 && strcmp(key, "general.architecture") != 0)
            continue;
        uint32_t u;
        float f;
        bool b;
        struct porta_str st;
        if (kv->type == PORTA_GGUF_UINT32 && porta_gguf_get_u32(g, key, &u) == 0) {
            /* the newer description: MQA over the latent, real head sizes in *_mla */
            if (strcmp(key, "deepseek2.attention.key_length") == 0) {
                ck_assert_int_eq(porta_gguf_w_u32(w, "deepseek2.attention.key_length_mla", u), 0);
                u = (uint32_t)(hp.kv_lora_rank + hp.n_rope);
            } else if (strcmp(key, "deepseek2.attention.value_length") == 0) {
                ck_assert_int_eq(porta_gguf_w_u32(w, "deepseek2.attention.value_length_mla", u),
                                 0);
                u = (uint32_t)hp.kv_lora_rank;
            } else if (strcmp(key, "deepseek2.attention.head_count_kv") == 0) {
                u = 1;
            }
            ck_assert_int_eq(porta_gguf_w_u32(w, key, u), 0);
        } else if (kv->type == PORTA_GGUF_FLOAT32 && porta_gguf_get_f32(g, key, &f) == 0)
            ck_assert_int_eq(porta_gguf_w_f32(w, key, f), 0);
        else if (kv->type == PORTA_GGUF_BOOL && porta_gguf_get_bool(g, key, &b) == 0)
            ck_assert_int_eq(porta_gguf_w_bool(w, key, b), 0);
        else if (kv->type == PORTA_GGUF_STRING && porta_gguf_get_str(g, key, &st) == 0) {
            snprintf(str, sizeof str, "%.*s", (int)st.len, st.ptr);
            ck_assert_int_eq(porta_gguf_w_str(w, key, str), 0);
        } else {
            ck_abort_msg("%s: unexpected key type %d", key, kv->type);
        }
    }
    int H = hp.n_head, lat = hp.kv_lora_rank, nope = hp.n_nope, dv = hp.head_dim_v;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct porta_gguf_tensor *t = &g->tensors[i];
        const char *suffix = strstr(t->name, "attn_kv_b.weight");
        if (!suffix) {
            ck_assert_int_eq(porta_gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                                 t->nbytes), 0);
            continue;
        }
        ck_assert_int_eq(t->type, PORTA_F32);
        const float *kvb = t->data; /* rows h * (nope + dv) + r, of lat floats */
        size_t kn = (size_t)H * lat * nope, vn = (size_t)H * dv * lat;
        float *kb = malloc(sizeof(float) * kn), *vb = malloc(sizeof(float) * vn);
        for (int h = 0; h < H; h++) {
            const float *kvh = kvb + (size_t)h * (nope + dv) * lat;
            for (int c = 0; c < lat; c++)
                for (int j = 0; j < nope; j++)
                    kb[((size_t)h * lat + c) * nope + j] = kvh[(size_t)j * lat + c];
            memcpy(vb + (size_t)h * dv * lat, kvh + (size_t)nope * lat, sizeof(float) * dv * lat);
        }
        char name[160];
        uint64_t kne[3] = { (uint64_t)nope, (uint64_t)lat, (uint64_t)H },
                 vne[3] = { (uint64_t)lat, (uint64_t)dv, (uint64_t)H };
        int pre = (int)(suffix - t->name);
        snprintf(name, sizeof name, "%.*sattn_k_b.weight", pre, t->name);
        ck_assert_int_eq(porta_gguf_w_tensor(w, name, PORTA_F32, 3, kne, kb, 4 * kn), 0);
        snprintf(name, sizeof name, "%.*sattn_v_b.weight", pre, t->name);
        ck_assert_int_eq(porta_gguf_w_tensor(w, name, PORTA_F32, 3, vne, vb, 4 * vn), 0);
        free(kb);
        free(vb);
    }
    snprintf(path, sizeof path, "/tmp/porta-test-split-kv-b-%d.gguf", (int)getpid());
    ck_assert_int_eq(porta_gguf_w_to_file(w, path), 0);
    porta_gguf_writer_destroy(w);
    porta_gguf_close(g);
    return path;
}

START_TEST(test_arch_mla_split_kv_b)
{
    const char *path = write_split_kv_b("arch/deepseek3/model-f32.gguf");
    check_path(path, "arch/deepseek3/logits.f32", "arch/deepseek3/ids.json", 1e-3, PORTA_F32,
               false);
    remove(path);
}
END_TEST

/* ---- ../shared/data/quant: tolerance per file from its README ---- */

static const struct {
    const char *name;
    double tol;
} quant_files[] = {
    { "llama-F16", 0.05 },     { "llama-BF16", 0.1 },    { "llama-Q4_0", 0.4 },
    { "llama-Q4_1", 0.3 },     { "llama-Q5_0", 0.4 },    { "llama-Q5_1", 0.4 },
    { "llama-Q8_0", 0.4 },     { "llama-Q2_K", 0.5 },    { "llama-Q3_K_M", 0.5 },
    { "llama-Q4_K_M", 0.5 },   { "llama-Q5_K_M", 0.5 },  { "llama-Q6_K", 0.5 },
    { "llama-Q2_K-pure", 0.5 }, { "llama-Q3_K-pure", 0.4 }, { "llama-Q4_K-pure", 0.5 },
    { "llama-Q5_K-pure", 0.5 }, { "qwen2-Q4_0", 0.75 },  { "qwen2-Q8_0", 0.5 },
    { "qwen2-Q4_K_M", 0.75 },
};

START_TEST(test_quant_file)
{
    char model[128], logits[128];
    snprintf(model, sizeof model, "quant/%s.gguf", quant_files[_i].name);
    snprintf(logits, sizeof logits, "quant/%s.logits.f32", quant_files[_i].name);
    check_file(model, logits, "quant/ids.json", quant_files[_i].tol, PORTA_F32, _i % 4 == 0);
}
END_TEST

int main(void)
{
    find_targets();
    Suite *s = suite_create("model_logits");
    TCase *tc = tcase_create("arch");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_arch_llama_f32);
    tcase_add_test(tc, test_arch_llama_f16);
    tcase_add_test(tc, test_arch_qwen2_f32);
    tcase_add_test(tc, test_arch_qwen2_f16);
    tcase_add_test(tc, test_arch_kv_f16);
    tcase_add_loop_test(tc, test_arch_moe, 0, 2 * (int)(sizeof moe_archs / sizeof moe_archs[0]));
    tcase_add_test(tc, test_arch_mla_kv_f16);
    tcase_add_test(tc, test_arch_mla_split_kv_b);
    tcase_add_test(tc, test_arch_mla_kv_bytes);
    suite_add_tcase(s, tc);
    TCase *tq = tcase_create("quant");
    tcase_set_timeout(tq, 600);
    tcase_add_loop_test(tq, test_quant_file, 0, (int)(sizeof quant_files / sizeof quant_files[0]));
    suite_add_tcase(s, tq);
    return tu_run(s);
}
