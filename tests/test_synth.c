/* test_synth.c - core/synth.c: the random-weight model writer. A tiny shape is written in
 * several file types, read back (tensor types as llama.cpp's mixes give them, shapes,
 * determinism), loaded by the model loader and the tokenizer, and run through the forward pass
 * on the CPU backend; bad shapes and unwritable paths fail cleanly. The MoE / MLA shapes
 * (tiny-moe, tiny-deepseek2) load and run too, SIMD equal to scalar, with the latent KV cache. */
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

/* ---- mixture of experts and latent attention ---- */

static const struct porta_synth_shape *shape(const char *name)
{
    const struct porta_synth_shape *s = porta_synth_shape_find(name);
    ck_assert_msg(s != NULL, "shape %s missing", name);
    return s;
}

/* llama-quantize's Q4_K_M for MoE / MLA tensors of the DeepSeek-V2-Lite shape: the router
 * stays F32, every ffn_down* and the attn_v-like attn_kv_b take Q6_K in use_more_bits layers,
 * and 1408-column rows (not whole 256-blocks) fall back to Q5_0 / Q8_0 */
START_TEST(test_moe_mix)
{
    const struct porta_synth_shape *s = shape("deepseek-v2-lite");
    const enum porta_synth_ftype M = PORTA_SYNTH_Q4_K_M;
    ck_assert_int_eq(s->n_layer, 27);
    ck_assert_int_eq(s->n_expert, 64);
    ck_assert_int_eq(s->n_expert_used, 6);
    ck_assert_int_eq(s->n_ff_shexp, 2 * 1408);
    ck_assert_int_eq(s->q_lora_rank, 0);
    /* use_more_bits(il, 27): layers 0-2, 5, 8, ..., 23 and 24-26 */
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_down_exps", 1, 1408), PORTA_Q8_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_down_exps", 4, 1408), PORTA_Q5_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_down_exps", 5, 1408), PORTA_Q8_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_down_shexp", 1, 2816), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_down_shexp", 4, 2816), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_down", 0, 10944), PORTA_Q8_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_gate_exps", 1, 2048), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_up_exps", 26, 2048), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "ffn_gate_inp", 3, 2048), PORTA_F32);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "attn_kv_b", 0, 512), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "attn_kv_b", 4, 512), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "attn_kv_a_mqa", 4, 2048), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "attn_q", 0, 2048), PORTA_Q4_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, M, "output", 0, 2048), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q4_0, "ffn_down_exps", 1, 1408),
                     PORTA_Q4_0);
    ck_assert_int_eq(porta_synth_tensor_type(s, PORTA_SYNTH_Q8_0, "ffn_gate_inp", 1, 2048),
                     PORTA_F32);
    const struct porta_synth_shape *q = shape("qwen1.5-moe-a2.7b");
    ck_assert_int_eq(q->n_expert, 60);
    ck_assert_int_eq(q->n_expert_used, 4);
    ck_assert_int_eq(q->n_ff_shexp, 5632);
    ck_assert_int_eq(porta_synth_tensor_type(q, M, "ffn_down_shexp", 0, 5632), PORTA_Q6_K);
    ck_assert_int_eq(porta_synth_tensor_type(q, M, "ffn_down_exps", 3, 1408), PORTA_Q5_0);
}
END_TEST

static int write_shape(const char *path, const char *name, enum porta_synth_ftype ft)
{
    struct porta_synth_opts o = { .seed = 5, .pool_rows = 16, .threads = 2 };
    return porta_synth_write(path, shape(name), ft, &o);
}

/* the files carry llama.cpp's keys and tensors, which the loader reads back as the shape */
START_TEST(test_moe_files)
{
    const char *path = tmp_path("ds2.gguf");
    ck_assert_int_eq(write_shape(path, "tiny-deepseek2", PORTA_SYNTH_Q4_K_M), 0);
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open(path, &g), 0);
    struct porta_hparams hp;
    ck_assert_int_eq(porta_hparams_read(g, &hp), 0);
    ck_assert_int_eq(hp.arch, PORTA_ARCH_DEEPSEEK2);
    ck_assert_int_eq(hp.n_expert, 16);
    ck_assert_int_eq(hp.n_expert_used, 4);
    ck_assert_int_eq(hp.n_ff_exp, 256);
    ck_assert_int_eq(hp.n_ff_shexp, 512);
    ck_assert_int_eq(hp.n_ff, 512);
    ck_assert_int_eq(hp.n_layer_dense_lead, 1);
    ck_assert_int_eq(hp.gating, PORTA_GATING_SOFTMAX);
    ck_assert(!hp.expert_norm);
    ck_assert_float_eq(hp.expert_scale, 1.0f);
    ck_assert_int_eq(hp.q_lora_rank, 0);
    ck_assert_int_eq(hp.kv_lora_rank, 256);
    ck_assert_int_eq(hp.n_rope, 32);
    ck_assert_int_eq(hp.n_nope, 64);
    ck_assert_int_eq(hp.head_dim_v, 64);
    ck_assert_float_eq_tol(hp.rope.freq_scale, 0.25f, 1e-7);
    ck_assert_int_eq(hp.rope.n_ctx_orig, 4096);
    float ms = 1.0f + 0.0707f * logf(4.0f);
    ck_assert_float_eq_tol(hp.kq_scale, ms * ms / sqrtf(96.0f), 1e-6);
    /* layer 0 dense, layer 1 routed: 3-D expert stacks [n_cols, n_rows, n_expert] */
    ck_assert_ptr_nonnull(porta_gguf_tensor(g, "blk.0.ffn_gate.weight"));
    ck_assert_ptr_null(porta_gguf_tensor(g, "blk.0.ffn_gate_exps.weight"));
    const struct porta_gguf_tensor *t = porta_gguf_tensor(g, "blk.1.ffn_down_exps.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->n_dims, 3);
    ck_assert_int_eq(t->ne[0], 256);
    ck_assert_int_eq(t->ne[1], 256);
    ck_assert_int_eq(t->ne[2], 16);
    ck_assert_int_eq(t->type, PORTA_Q6_K);             /* 2 layers: layer 1 is the last eighth */
    ck_assert_int_eq(type_of(g, "blk.1.ffn_gate_exps.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.1.ffn_gate_inp.weight"), PORTA_F32);
    ck_assert_int_eq(type_of(g, "blk.1.ffn_up_shexp.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.0.attn_q.weight"), PORTA_Q4_K);
    ck_assert_int_eq(type_of(g, "blk.1.attn_kv_b.weight"), PORTA_Q6_K);
    ck_assert_ptr_null(porta_gguf_tensor(g, "blk.0.attn_k.weight"));
    t = porta_gguf_tensor(g, "blk.0.attn_kv_a_mqa.weight");
    ck_assert_int_eq(t->ne[1], 256 + 32);
    porta_gguf_close(g);
    unlink(path);

    path = tmp_path("q2moe.gguf");
    ck_assert_int_eq(write_shape(path, "tiny-moe", PORTA_SYNTH_Q8_0), 0);
    ck_assert_int_eq(porta_gguf_open(path, &g), 0);
    ck_assert_int_eq(porta_hparams_read(g, &hp), 0);
    ck_assert_int_eq(hp.arch, PORTA_ARCH_QWEN2MOE);
    ck_assert_int_eq(hp.n_expert, 16);
    ck_assert_int_eq(hp.n_ff_shexp, 512);
    ck_assert(!hp.expert_norm);
    t = porta_gguf_tensor(g, "blk.0.ffn_gate_inp_shexp.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->n_dims, 1);
    ck_assert_int_eq(t->type, PORTA_F32);
    ck_assert_int_eq(type_of(g, "blk.1.ffn_up_exps.weight"), PORTA_Q8_0);
    ck_assert_int_eq(type_of(g, "blk.1.attn_k.bias"), PORTA_F32);
    porta_gguf_close(g);
    unlink(path);
}
END_TEST

/* the logits of prompt ids on one backend configuration (kernel set) */
static float *moe_logits(const char *path, const char *kernels, int n, const int32_t *ids,
                         bool one_by_one, size_t *kv_bytes)
{
    struct porta_backend_cfg cfg = { .threads = 2, .cpu_kernels = kernels };
    struct porta_backend *be;
    ck_assert_int_eq(porta_backend_open("cpu", &cfg, &be), 0);
    struct porta_model *m;
    ck_assert_int_eq(porta_model_load(path, be, &m), 0);
    struct porta_ctx *c;
    struct porta_ctx_params cp = { .n_ctx = 96, .n_seq = 1, .n_batch = 96,
                                   .kv_type = PORTA_F16 };
    ck_assert_int_eq(porta_ctx_create(m, &cp, &c), 0);
    int nv = m->hp.n_vocab;
    float *out = malloc(sizeof(float) * (size_t)n * nv);
    bool *want = malloc((size_t)n);
    for (int i = 0; i < n; i++)
        want[i] = true;
    if (one_by_one) {
        for (int t = 0; t < n; t++) {
            struct porta_batch d = { .n_tok = 1, .ids = ids + t };
            ck_assert_int_eq(porta_forward(c, &d, out + (size_t)t * nv), 0);
        }
    } else {
        struct porta_batch b = { .n_tok = n, .ids = ids, .logits = want };
        ck_assert_int_eq(porta_forward(c, &b, out), 0);
    }
    if (kv_bytes)
        *kv_bytes = porta_be_buf_size(be, c->k_cache) +
                    (c->v_cache ? porta_be_buf_size(be, c->v_cache) : 0);
    free(want);
    porta_ctx_destroy(c);
    porta_model_destroy(m);
    porta_backend_close(be);
    return out;
}

/* tiny MoE and MLA files run: finite logits that differ between positions; decode equals
 * prefill; the SIMD set (tile GEMM over repacked experts, enough tokens for several tiles per
 * expert) equals the scalar reference */
START_TEST(test_moe_forward)
{
    static const struct { const char *shape; enum porta_synth_ftype ft; } cases[] = {
        { "tiny-deepseek2", PORTA_SYNTH_Q4_K_M }, { "tiny-deepseek2", PORTA_SYNTH_Q8_0 },
        { "tiny-deepseek2", PORTA_SYNTH_F16 }, { "tiny-moe", PORTA_SYNTH_Q4_K_M },
        { "tiny-moe", PORTA_SYNTH_Q4_0 },
    };
    const char *name = cases[_i].shape;
    enum porta_synth_ftype ft = cases[_i].ft;
    const char *path = tmp_path("moe-fwd.gguf");
    ck_assert_int_eq(write_shape(path, name, ft), 0);
    enum { N = 80 };
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 37 + 11) % 300);
    const int nv = 512;
    float *simd = moe_logits(path, "auto", N, ids, false, NULL);
    float *ref = moe_logits(path, "scalar", N, ids, false, NULL);
    float *step = moe_logits(path, "auto", 6, ids, true, NULL);
    double diff = 0, maxd = 0, maxs = 0, mag = 0;
    for (int i = 0; i < N * nv; i++) {
        ck_assert_msg(isfinite(simd[i]), "%s %s: logit %d not finite", name,
                      porta_synth_ftype_name(ft), i);
        maxd = fmax(maxd, fabs(simd[i] - ref[i]));
        mag = fmax(mag, fabs(ref[i]));
    }
    for (int v = 0; v < nv; v++)
        diff += fabs(simd[v] - simd[nv + v]);
    for (int i = 0; i < 6 * nv; i++)
        maxs = fmax(maxs, fabs(step[i] - simd[i]));
    ck_assert_msg(diff > 1e-3, "%s: two positions gave the same logits", name);
    ck_assert_msg(mag > 1e-3, "%s: logits all zero", name);
    /* not bit for bit: a float rounding that moves one activation across a quantization step
     * at one position reaches every later position through the next layer's attention (a few
     * 1e-3 of the logits here); a wrong expert or row would be of the order of the logits */
    double nmse = tu_nmse(simd, ref, (size_t)N * nv);
    ck_assert_msg(nmse < 1e-2 && maxd < 0.05 * mag, "%s %s: SIMD differs from scalar by %g "
                  "(max %g, nmse %g)", name, porta_synth_ftype_name(ft), maxd, mag, nmse);
    /* prefill's tile kernels run several tokens at once: the same rounding effect */
    ck_assert_msg(maxs < 0.05 * mag && tu_nmse(step, simd, 6 * nv) < 1e-2,
                  "%s %s: decode differs from prefill by %g", name, porta_synth_ftype_name(ft), maxs);
    free(simd);
    free(ref);
    free(step);
    unlink(path);
}
END_TEST

/* MLA caches the compressed latent: (kv_lora_rank + rope dims) elements per token and layer,
 * no V cache; the plain-attention MoE caches n_head_kv * (head_dim + head_dim_v) */
START_TEST(test_mla_kv_bytes)
{
    const char *path = tmp_path("kv.gguf");
    int32_t ids[2] = { 104, 101 };
    size_t kv;
    ck_assert_int_eq(write_shape(path, "tiny-deepseek2", PORTA_SYNTH_Q8_0), 0);
    free(moe_logits(path, "auto", 2, ids, false, &kv));
    const struct porta_synth_shape *s = shape("tiny-deepseek2");
    size_t per_tok = (size_t)(s->kv_lora_rank + s->n_rope) * (size_t)s->n_layer * 2; /* F16 */
    ck_assert_uint_eq(kv, per_tok * 96);               /* n_ctx 96 */
    ck_assert_uint_eq(per_tok, (256 + 32) * 2 * 2);
    /* DeepSeek-V2-Lite: 576 elements per token and layer, where expanded keys and values
     * would take 16 heads x (192 + 128) = 5120 */
    const struct porta_synth_shape *v2 = shape("deepseek-v2-lite");
    ck_assert_int_eq(v2->kv_lora_rank + v2->n_rope, 576);
    ck_assert_int_eq(v2->n_head * (v2->n_nope + v2->n_rope + v2->head_dim_v), 5120);
    unlink(path);
    ck_assert_int_eq(write_shape(path, "tiny-moe", PORTA_SYNTH_Q8_0), 0);
    free(moe_logits(path, "auto", 2, ids, false, &kv));
    s = shape("tiny-moe");
    ck_assert_uint_eq(kv, (size_t)s->n_head_kv * (64 + 64) * (size_t)s->n_layer * 2 * 96);
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
    tcase_add_test(tc, test_moe_mix);
    tcase_add_test(tc, test_moe_files);
    tcase_add_loop_test(tc, test_moe_forward, 0, 5);
    tcase_add_test(tc, test_mla_kv_bytes);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    rmdir(g_dir);
    return rc;
}
