/* test_synth.c - core/synth.c: the random-weight model writer. A tiny shape is written in
 * several file types, read back (tensor types as llama.cpp's mixes give them, shapes,
 * determinism), loaded by the model loader and the tokenizer, and run through the forward pass
 * on the CPU backend; bad shapes and unwritable paths fail cleanly. */
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "synth.h"
#include "tokenizer.h"
#include "testutil.h"

static char g_dir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
    return buf[i];
}

static const struct porta_synth_shape *tiny(void)
{
    const struct porta_synth_shape *s = porta_synth_shape_find("tiny");
    ck_assert_ptr_nonnull(s);
    return s;
}

static int write_model(const char *path, enum porta_synth_ftype ft, uint64_t seed, int pool,
                       int n_layer)
{
    struct porta_synth_opts o = { .seed = seed, .pool_rows = pool, .threads = 2,
                                  .n_layer = n_layer };
    return porta_synth_write(path, tiny(), ft, &o);
}

static enum porta_dtype type_of(const struct porta_gguf *g, const char *name)
{
    const struct porta_gguf_tensor *t = porta_gguf_tensor(g, name);
    ck_assert_msg(t != NULL, "tensor %s missing", name);
    return t->type;
}

/* llama.cpp's use_more_bits(): which layers get the bigger type in Q4_K_M */
START_TEST(test_mix_rule)
{
    int n = 0;
    const struct porta_synth_shape *s = porta_synth_shape_find("r1-distill-qwen-1.5b");
    ck_assert_ptr_nonnull(s);
    for (int il = 0; il < s->n_layer; il++) {
        enum porta_dtype v = porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "attn_v", il, 1536);
        enum porta_dtype d = porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "ffn_down", il, 8960);
        ck_assert_int_eq(v, d);
        ck_assert(v == PORTA_Q6_K || v == PORTA_Q4_K);
        n += v == PORTA_Q6_K;
        ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "attn_q", il, 1536),
                         PORTA_Q4_K);
    }
    ck_assert_int_eq(n, 14); /* half of 28: layers 0-2, 24-27 and 5, 8, ..., 23 */
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "attn_v", 0, 1536), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "attn_v", 3, 1536), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "attn_v", 5, 1536), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "output", 0, 1536), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_K_M, "token_embd", 0, 1536),
                     PORTA_Q4_K);
    /* the classic types keep a Q6_K output; Q8_0 and F16 files do not */
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_0, "output", 0, 1536), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_0, "ffn_up", 3, 1536), PORTA_Q4_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q8_0, "output", 0, 1536), PORTA_Q8_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_F16, "output", 0, 1536), PORTA_F16);
    /* rows that are not whole 256-blocks fall back as llama-quantize does; tied output */
    const struct porta_synth_shape *q = porta_synth_shape_find("qwen2.5-0.5b");
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(porta_synth_tensor_type(q, PORTA_SYNTH_Q4_K_M, "attn_q", 3, 896), PORTA_Q5_0);
    ck_assert_int_eq(porta_synth_tensor_type(q, PORTA_SYNTH_Q4_K_M, "token_embd", 0, 896),
                     PORTA_Q8_0);
    ck_assert_int_eq(porta_synth_tensor_type(q, PORTA_SYNTH_Q4_K_M, "ffn_down", 0, 4864),
                     PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(q, PORTA_SYNTH_Q4_K_M, "ffn_down", 3, 4864),
                     PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(q, PORTA_SYNTH_Q4_0, "token_embd", 0, 896),
                     PORTA_Q8_0);
}
END_TEST

START_TEST(test_parse_and_shapes)
{
    enum porta_synth_ftype ft;
    ck_assert_int_eq(porta_synth_ftype_parse("q4_k_m", &ft), 0);
    ck_assert_int_eq(ft, PORTA_SYNTH_Q4_K_M);
    ck_assert_str_eq(porta_synth_ftype_name(ft), "Q4_K_M");
    ck_assert_int_eq(porta_synth_ftype_parse("Q3_K_S", &ft), PORTA_E_INVAL);
    ck_assert_int_eq(porta_synth_ftype_parse(NULL, &ft), PORTA_E_INVAL);
    ck_assert_ptr_null(porta_synth_shape_find("gpt-5"));
    const struct porta_synth_shape *s = porta_synth_shape_find("r1-distill-qwen-7b");
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->n_embd, 3584);
    ck_assert_int_eq(s->n_ff, 18944);
    ck_assert_int_eq(s->n_vocab, 152064);
    ck_assert(!s->tied);
    ck_assert(porta_synth_shape_find("qwen2.5-0.5b")->tied);
}
END_TEST

/* Q4_K_M of the tiny shape: every tensor's type, shape and offsets as the reader sees them */
START_TEST(test_q4_k_m_file)
{
    const char *path = tmp_path("tiny-q4km.gguf");
    ck_assert_int_eq(write_model(path, PORTA_SYNTH_Q4_K_M, 7, 0, 0), 0);
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open(path, &g), 0);
    ck_assert_int_eq(g->n_tensors, 1 + 2 * 12 + 2);   /* embd, 2 layers of 12, norm, output */
    ck_assert_int_eq(type_of(g, "token_embd.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "output.weight"), PORTA_Q6_K);
    ck_assert_int_eq(type_of(g, "output_norm.weight"), PORTA_F32);
    /* 2 layers: use_more_bits picks layer 1 (the last eighth) only */
    ck_assert_int_eq(type_of(g, "blk.0.attn_v.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.0.ffn_down.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.1.attn_v.weight"), PORTA_Q6_K);
    ck_assert_int_eq(type_of(g, "blk.1.ffn_down.weight"), PORTA_Q6_K);
    ck_assert_int_eq(type_of(g, "blk.1.attn_q.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.1.ffn_gate.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.0.attn_q.bias"), PORTA_F32);
    ck_assert_int_eq(type_of(g, "blk.0.attn_norm.weight"), PORTA_F32);
    const struct porta_gguf_tensor *t = porta_gguf_tensor(g, "blk.0.ffn_down.weight");
    ck_assert_int_eq(t->ne[0], 512);
    ck_assert_int_eq(t->ne[1], 256);
    t = porta_gguf_tensor(g, "blk.0.attn_k.weight");
    ck_assert_int_eq(t->ne[1], 2 * 64);                /* n_head_kv * head_dim */
    struct porta_hparams hp;
    ck_assert_int_eq(porta_hparams_read(g, &hp), 0);
    ck_assert_int_eq(hp.arch, PORTA_ARCH_QWEN2);
    ck_assert_int_eq(hp.n_embd, 256);
    ck_assert_int_eq(hp.n_layer, 2);
    ck_assert_int_eq(hp.n_head, 4);
    ck_assert_int_eq(hp.n_head_kv, 2);
    ck_assert_int_eq(hp.n_ff, 512);
    ck_assert_int_eq(hp.n_vocab, 512);
    uint32_t ftype;
    ck_assert_int_eq(porta_gguf_get_u32(g, "general.file_type", &ftype), 0);
    ck_assert_int_eq(ftype, 15);
    /* the weights are the requested distribution: dequantized matrix std near 0.02 */
    t = porta_gguf_tensor(g, "blk.0.ffn_up.weight");
    float *row = malloc(sizeof(float) * 256);
    double ss = 0;
    for (int r = 0; r < 64; r++) {
        ck_assert_int_eq(porta_dequantize_row(t->type, (const uint8_t *)t->data +
                                              r * porta_row_size(t->type, 256), row, 256), 0);
        for (int i = 0; i < 256; i++)
            ss += (double)row[i] * row[i];
    }
    double std = sqrt(ss / (64.0 * 256));
    ck_assert_msg(std > 0.015 && std < 0.025, "weight std %.4f", std);
    free(row);
    porta_gguf_close(g);
    unlink(path);
}
END_TEST

/* same seed: the same bytes, whatever the thread count; another seed: other weights */
START_TEST(test_deterministic)
{
    const char *a = tmp_path("a.gguf"), *b = tmp_path("b.gguf"), *c = tmp_path("c.gguf");
    struct porta_synth_opts o1 = { .seed = 3, .threads = 1 }, o2 = { .seed = 3, .threads = 3 },
                            o3 = { .seed = 4, .threads = 2 };
    ck_assert_int_eq(porta_synth_write(a, tiny(), PORTA_SYNTH_Q4_0, &o1), 0);
    ck_assert_int_eq(porta_synth_write(b, tiny(), PORTA_SYNTH_Q4_0, &o2), 0);
    ck_assert_int_eq(porta_synth_write(c, tiny(), PORTA_SYNTH_Q4_0, &o3), 0);
    size_t na, nb, nc;
    char *da = tu_read_file(a, &na), *db = tu_read_file(b, &nb), *dc = tu_read_file(c, &nc);
    ck_assert(da && db && dc);
    ck_assert_uint_eq(na, nb);
    ck_assert_uint_eq(na, nc);
    ck_assert(memcmp(da, db, na) == 0);
    ck_assert(memcmp(da, dc, na) != 0);
    free(da);
    free(db);
    free(dc);
    unlink(a);
    unlink(b);
    unlink(c);
}
END_TEST

/* every file type loads and runs: finite logits that differ between tokens, and the same
 * logits one token at a time as in one batch */
START_TEST(test_forward)
{
    static const enum porta_synth_ftype fts[] = { PORTA_SYNTH_F16, PORTA_SYNTH_Q8_0,
                                                  PORTA_SYNTH_Q4_0, PORTA_SYNTH_Q4_1,
                                                  PORTA_SYNTH_Q4_K_M };
    enum porta_synth_ftype ft = fts[_i];
    const char *path = tmp_path("fwd.gguf");
    ck_assert_int_eq(write_model(path, ft, 1, 16, 0), 0);
    struct porta_backend_cfg cfg = { .threads = 2, .cpu_kernels = "auto" };
    struct porta_backend *be;
    ck_assert_int_eq(porta_backend_open("cpu", &cfg, &be), 0);
    struct porta_model *m;
    ck_assert_int_eq(porta_model_load(path, be, &m), 0);
    struct porta_ctx *c;
    struct porta_ctx_params cp = { .n_ctx = 16, .n_seq = 1, .n_batch = 8, .kv_type = PORTA_F16 };
    ck_assert_int_eq(porta_ctx_create(m, &cp, &c), 0);
    int nv = m->hp.n_vocab;
    int32_t ids[4] = { 104, 101, 108, 270 };
    bool want[4] = { true, true, true, true };
    float *batch = malloc(sizeof(float) * 4 * nv), *step = malloc(sizeof(float) * nv);
    struct porta_batch b = { .n_tok = 4, .ids = ids, .logits = want };
    ck_assert_int_eq(porta_forward(c, &b, batch), 0);
    double diff = 0;
    for (int i = 0; i < 4 * nv; i++)
        ck_assert_msg(isfinite(batch[i]), "%s: logit %d not finite", porta_synth_ftype_name(ft), i);
    for (int v = 0; v < nv; v++)
        diff += fabs(batch[v] - batch[nv + v]);
    ck_assert_msg(diff > 1e-3, "%s: two positions gave the same logits", porta_synth_ftype_name(ft));
    porta_ctx_reset(c, -1);
    double maxd = 0;
    for (int t = 0; t < 4; t++) {
        struct porta_batch d = { .n_tok = 1, .ids = ids + t };
        ck_assert_int_eq(porta_forward(c, &d, step), 0);
        for (int v = 0; v < nv; v++)
            maxd = fmax(maxd, fabs(step[v] - batch[(size_t)t * nv + v]));
    }
    ck_assert_msg(maxd < 1e-3, "%s: decode differs from prefill by %g", porta_synth_ftype_name(ft),
                  maxd);
    free(batch);
    free(step);
    porta_ctx_destroy(c);
    porta_model_destroy(m);
    porta_backend_close(be);
    unlink(path);
}
END_TEST

/* the minimal tokenizer: byte-level, a few merges, ChatML specials, padding to n_vocab */
START_TEST(test_tokenizer)
{
    const char *path = tmp_path("tok.gguf");
    ck_assert_int_eq(write_model(path, PORTA_SYNTH_Q8_0, 1, 8, 1), 0);
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open(path, &g), 0);
    struct porta_tokenizer *t;
    ck_assert_int_eq(porta_tokenizer_load(g, &t), 0);
    ck_assert_int_eq(porta_tokenizer_n_vocab(t), 512);
    int32_t *ids;
    int n;
    const char *text = "the cat, \xc3\xa9t\xc3\xa9 <|im_end|>";
    ck_assert_int_eq(porta_tokenize(t, text, strlen(text), false, true, &ids, &n), 0);
    ck_assert_int_gt(n, 3);
    ck_assert_int_eq(ids[n - 1], porta_tokenizer_find(t, "<|im_end|>"));
    ck_assert(porta_tokenizer_is_eog(t, ids[n - 1]));
    char *back;
    size_t len;
    ck_assert_int_eq(porta_detokenize(t, ids, n, true, false, &back, &len), 0);
    ck_assert_str_eq(back, text);
    free(back);
    free(ids);
    porta_tokenizer_destroy(t);
    porta_gguf_close(g);
    unlink(path);
}
END_TEST

START_TEST(test_errors)
{
    struct porta_synth_shape bad = *tiny();
    bad.n_head = 3;                                   /* does not divide n_embd 256 */
    const char *path = tmp_path("bad.gguf");
    ck_assert_int_eq(porta_synth_write(path, &bad, PORTA_SYNTH_Q4_0, NULL), PORTA_E_INVAL);
    ck_assert(access(path, F_OK) != 0);
    bad = *tiny();
    bad.n_embd = 250;                                 /* not a multiple of 32 */
    bad.n_head = 5;
    ck_assert_int_eq(porta_synth_write(path, &bad, PORTA_SYNTH_Q4_0, NULL), PORTA_E_INVAL);
    ck_assert_int_eq(porta_synth_write("/nonexistent-dir/x.gguf", tiny(), PORTA_SYNTH_Q4_0, NULL),
                     PORTA_E_IO);
    ck_assert_int_eq(porta_synth_write(path, tiny(), PORTA_SYNTH_FTYPE_COUNT, NULL), PORTA_E_INVAL);
    ck_assert(access(path, F_OK) != 0);
}
END_TEST

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/porta-test-synth-%d", (int)getpid());
    if (mkdir(g_dir, 0700) != 0) {
        perror(g_dir);
        return 1;
    }
    porta_log_set_level(PORTA_LOG_ERROR);
    Suite *s = suite_create("synth");
    TCase *tc = tcase_create("synth");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mix_rule);
    tcase_add_test(tc, test_parse_and_shapes);
    tcase_add_test(tc, test_q4_k_m_file);
    tcase_add_test(tc, test_deterministic);
    tcase_add_loop_test(tc, test_forward, 0, 5);
    tcase_add_test(tc, test_tokenizer);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    rmdir(g_dir);
    return rc;
}
