/* model.c - model loading (hyperparameters, tensor table -> backend weights), the inference
 * context (KV cache, activation buffers) and porta_forward(), which splits a batch into
 * chunks and hands each to its architecture's layer loop. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* ---- hyperparameters ---- */

static int key_u32(const struct porta_gguf *g, const char *arch, const char *suffix, bool required,
                   uint32_t lo, uint32_t hi, int *out)
{
    char key[128];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = porta_gguf_get_u32(g, key, &v);
    if (rc == PORTA_E_NOTFOUND && !required)
        return 0;
    if (rc == PORTA_E_NOTFOUND) {
        porta_err("%s: required key '%s' is missing", g->path, key);
        return PORTA_E_FORMAT;
    }
    if (rc)
        return rc;
    if (v < lo || v > hi) {
        porta_err("%s: %s = %u is outside %u..%u", g->path, key, v, lo, hi);
        return PORTA_E_FORMAT;
    }
    *out = (int)v;
    return 0;
}

static int key_f32(const struct porta_gguf *g, const char *arch, const char *suffix, float *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v;
    int rc = porta_gguf_get_f32(g, key, &v);
    if (rc == PORTA_E_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    if (!isfinite(v)) {
        porta_err("%s: %s is not a finite number", g->path, key);
        return PORTA_E_FORMAT;
    }
    *out = v;
    return 0;
}

static int key_bool(const struct porta_gguf *g, const char *arch, const char *suffix, bool *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = porta_gguf_get_bool(g, key, out);
    return rc == PORTA_E_NOTFOUND ? 0 : rc;
}

/* Mixture-of-experts keys (llama.cpp names); all absent: a dense model. */
static int read_moe(const struct porta_gguf *g, struct porta_hparams *hp)
{
    const char *a = hp->arch_name;
    int rc, gating = PORTA_GATING_SOFTMAX;
    if ((rc = key_u32(g, a, "expert_count", false, 0, 65536, &hp->n_expert)))
        return rc;
    if (hp->n_expert == 0) {
        if (hp->arch == PORTA_ARCH_QWEN2MOE || hp->arch == PORTA_ARCH_QWEN3MOE ||
            hp->arch == PORTA_ARCH_DEEPSEEK2) {
            porta_err("%s: %s.expert_count is missing", g->path, a);
            return PORTA_E_FORMAT;
        }
        return 0;
    }
    /* Qwen2-MoE keeps the softmax probabilities of the top k as they are; Mixtral, Qwen3-MoE
     * renormalise them; DeepSeek says so in expert_weights_norm */
    hp->expert_norm = hp->arch != PORTA_ARCH_QWEN2MOE && hp->arch != PORTA_ARCH_DEEPSEEK2;
    hp->expert_scale = 1.0f;
    hp->n_ff_exp = hp->n_ff;
    int n_shared = 0;
    if ((rc = key_u32(g, a, "expert_used_count", true, 1, (uint32_t)hp->n_expert,
                      &hp->n_expert_used)) ||
        (rc = key_u32(g, a, "expert_feed_forward_length", false, 1, 1u << 24, &hp->n_ff_exp)) ||
        (rc = key_u32(g, a, "expert_shared_feed_forward_length", false, 0, 1u << 24,
                      &hp->n_ff_shexp)) ||
        (rc = key_u32(g, a, "expert_shared_count", false, 0, 64, &n_shared)) ||
        (rc = key_u32(g, a, "leading_dense_block_count", false, 0, (uint32_t)hp->n_layer,
                      &hp->n_layer_dense_lead)) ||
        (rc = key_u32(g, a, "expert_gating_func", false, 0, 2, &gating)) ||
        (rc = key_u32(g, a, "expert_group_count", false, 0, (uint32_t)hp->n_expert,
                      &hp->n_group)) ||
        (rc = key_u32(g, a, "expert_group_used_count", false, 0, (uint32_t)hp->n_expert,
                      &hp->topk_group)) ||
        (rc = key_bool(g, a, "expert_weights_norm", &hp->expert_norm)) ||
        (rc = key_f32(g, a, "expert_weights_scale", &hp->expert_scale)))
        return rc;
    hp->gating = gating == PORTA_GATING_SIGMOID ? PORTA_GATING_SIGMOID : PORTA_GATING_SOFTMAX;
    if (hp->arch == PORTA_ARCH_QWEN2MOE && hp->n_ff_shexp == 0)
        hp->n_ff_shexp = hp->n_ff;
    if (hp->arch == PORTA_ARCH_DEEPSEEK2)
        hp->n_ff_shexp = n_shared * hp->n_ff_exp;
    if (hp->n_group > 1) {
        int per = hp->n_expert / hp->n_group;
        if (hp->n_expert % hp->n_group || hp->topk_group < 1 || hp->topk_group > hp->n_group ||
            hp->n_expert_used > hp->topk_group * per) {
            porta_err("%s: %s.expert_count %d, expert_group_count %d, expert_group_used_count %d "
                      "and expert_used_count %d do not fit together", g->path, a, hp->n_expert,
                      hp->n_group, hp->topk_group, hp->n_expert_used);
            return PORTA_E_FORMAT;
        }
    }
    if (!(hp->expert_scale > 0)) {
        porta_err("%s: %s.expert_weights_scale = %g must be positive", g->path, a,
                  hp->expert_scale);
        return PORTA_E_FORMAT;
    }
    return 0;
}

/* Multi-head latent attention (deepseek2): the head is n_nope + n_rope (key_length), rope
 * only on the n_rope part; YaRN scales the softmax by mscale^2 but not cos/sin. */
static int read_mla(const struct porta_gguf *g, struct porta_hparams *hp, float factor)
{
    const char *a = hp->arch_name;
    int rc;
    /* newer converters describe MLA as MQA over the latent (key_length = kv_lora + rope,
     * value_length = kv_lora) and give the real head sizes in *_length_mla */
    if (hp->arch == PORTA_ARCH_DEEPSEEK2 &&
        ((rc = key_u32(g, a, "attention.key_length_mla", false, 1, 65536, &hp->head_dim)) ||
         (rc = key_u32(g, a, "attention.value_length_mla", false, 1, 65536, &hp->head_dim_v))))
        return rc;
    hp->kq_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (hp->arch != PORTA_ARCH_DEEPSEEK2)
        return 0;
    float ylm = 0.0f;
    if ((rc = key_u32(g, a, "attention.q_lora_rank", false, 0, 1u << 20, &hp->q_lora_rank)) ||
        (rc = key_u32(g, a, "attention.kv_lora_rank", true, 1, 1u << 20, &hp->kv_lora_rank)) ||
        (rc = key_f32(g, a, "rope.scaling.yarn_log_multiplier", &ylm)))
        return rc;
    hp->n_rope = hp->rope.n_rot;
    hp->n_nope = hp->head_dim - hp->n_rope;
    if (hp->n_nope < 1) {
        porta_err("%s: %s.attention.key_length %d leaves no room beside the %d rope dims",
                  g->path, a, hp->head_dim, hp->n_rope);
        return PORTA_E_FORMAT;
    }
    if (hp->rope.ext_factor != 0.0f && factor > 1.0f) {
        float mscale = 1.0f + ylm * logf(factor);
        hp->kq_scale = mscale * mscale / sqrtf((float)hp->head_dim);
        /* the rope op multiplies cos/sin by attn_factor * (1 + 0.1 ln factor): cancel it */
        hp->rope.attn_factor = 1.0f / (1.0f + 0.1f * logf(factor));
    }
    return 0;
}

int porta_hparams_read(const struct porta_gguf *g, struct porta_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    struct porta_str an;
    if (porta_gguf_get_str(g, "general.architecture", &an)) {
        porta_err("%s: general.architecture is missing or not a string", g->path);
        return PORTA_E_FORMAT;
    }
    if (an.len >= sizeof hp->arch_name) {
        porta_err("%s: general.architecture is too long", g->path);
        return PORTA_E_FORMAT;
    }
    memcpy(hp->arch_name, an.ptr, an.len);
    hp->arch_name[an.len] = 0;
    const char *a = hp->arch_name;
    static const struct {
        const char *name;
        enum porta_arch arch;
        enum porta_rope_style rope;
    } archs[] = {
        { "llama", PORTA_ARCH_LLAMA, PORTA_ROPE_NORM },
        { "qwen2", PORTA_ARCH_QWEN2, PORTA_ROPE_NEOX },
        { "qwen2moe", PORTA_ARCH_QWEN2MOE, PORTA_ROPE_NEOX },
        { "qwen3moe", PORTA_ARCH_QWEN3MOE, PORTA_ROPE_NEOX },
        { "deepseek2", PORTA_ARCH_DEEPSEEK2, PORTA_ROPE_NORM },
    };
    size_t ai = 0;
    while (ai < sizeof archs / sizeof archs[0] && strcmp(a, archs[ai].name) != 0)
        ai++;
    if (ai == sizeof archs / sizeof archs[0]) {
        porta_err("%s: architecture '%s' is not supported (supported: llama, qwen2, qwen2moe, "
                  "qwen3moe, deepseek2)", g->path, a);
        return PORTA_E_UNSUPPORTED;
    }
    hp->arch = archs[ai].arch;
    hp->rope.style = archs[ai].rope;
    int rc;
    const uint32_t BIG = 1u << 24;
    if ((rc = key_u32(g, a, "block_count", true, 1, 4096, &hp->n_layer)) ||
        (rc = key_u32(g, a, "embedding_length", true, 1, BIG, &hp->n_embd)) ||
        (rc = key_u32(g, a, "feed_forward_length", true, 1, BIG, &hp->n_ff)) ||
        (rc = key_u32(g, a, "attention.head_count", true, 1, 65536, &hp->n_head)))
        return rc;
    hp->n_head_kv = hp->n_head;
    hp->n_ctx_train = 4096;
    if ((rc = key_u32(g, a, "attention.head_count_kv", false, 1, 65536, &hp->n_head_kv)) ||
        (rc = key_u32(g, a, "context_length", false, 1, 1u << 30, &hp->n_ctx_train)))
        return rc;
    if (hp->n_head % hp->n_head_kv) {
        porta_err("%s: head_count %d is not a multiple of head_count_kv %d", g->path, hp->n_head,
                  hp->n_head_kv);
        return PORTA_E_FORMAT;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((rc = key_u32(g, a, "attention.key_length", false, 1, 65536, &hp->head_dim)))
        return rc;
    hp->head_dim_v = hp->head_dim;
    if ((rc = key_u32(g, a, "attention.value_length", false, 1, 65536, &hp->head_dim_v)))
        return rc;
    if (hp->head_dim <= 0) {
        porta_err("%s: embedding_length %d < head_count %d", g->path, hp->n_embd, hp->n_head);
        return PORTA_E_FORMAT;
    }
    hp->rms_eps = 1e-5f;
    if ((rc = key_f32(g, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps)))
        return rc;
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1)) {
        porta_err("%s: %s.attention.layer_norm_rms_epsilon = %g is outside (0, 1)", g->path, a,
                  hp->rms_eps);
        return PORTA_E_FORMAT;
    }

    /* rope */
    struct porta_rope_params *r = &hp->rope;
    r->n_rot = hp->head_dim;
    r->freq_base = 10000.0f;
    r->freq_scale = 1.0f;
    r->attn_factor = 1.0f;
    r->beta_fast = 32.0f;
    r->beta_slow = 1.0f;
    r->n_ctx_orig = hp->n_ctx_train;
    if ((rc = key_u32(g, a, "rope.dimension_count", false, 2, (uint32_t)hp->head_dim, &r->n_rot)) ||
        (rc = key_f32(g, a, "rope.freq_base", &r->freq_base)))
        return rc;
    if (r->n_rot & 1 || !(r->freq_base > 1.0f)) {
        porta_err("%s: bad rope parameters (dimension_count %d, freq_base %g)", g->path, r->n_rot,
                  r->freq_base);
        return PORTA_E_FORMAT;
    }
    char key[128];
    struct porta_str st = { "none", 4 };
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if ((rc = porta_gguf_get_str(g, key, &st)) && rc != PORTA_E_NOTFOUND)
        return rc;
    float factor = 1.0f;
    if ((rc = key_f32(g, a, "rope.scaling.factor", &factor)) ||
        (rc = key_f32(g, a, "rope.scale_linear", &factor)))
        return rc;
    if (!(factor >= 1.0f || factor == 0.0f)) {
        porta_err("%s: %s.rope.scaling.factor = %g must be >= 1", g->path, a, factor);
        return PORTA_E_FORMAT;
    }
    if (porta_str_eq(st, "linear") || (porta_str_eq(st, "none") && factor > 1.0f)) {
        r->freq_scale = 1.0f / factor;
    } else if (porta_str_eq(st, "yarn")) {
        r->freq_scale = 1.0f / factor;
        r->ext_factor = 1.0f;
        if ((rc = key_u32(g, a, "rope.scaling.original_context_length", false, 1, 1u << 30,
                          &r->n_ctx_orig)))
            return rc;
    } else if (!porta_str_eq(st, "none")) {
        porta_err("%s: %s = '%.*s' is not supported (none, linear, yarn)", g->path, key,
                  (int)st.len, st.ptr);
        return PORTA_E_UNSUPPORTED;
    }

    if ((rc = read_moe(g, hp)) || (rc = read_mla(g, hp, factor)))
        return rc;

    /* vocabulary size: the token list is authoritative */
    const struct porta_gguf_kv *tok = porta_gguf_find(g, "tokenizer.ggml.tokens");
    if (tok && tok->type == PORTA_GGUF_ARRAY && tok->arr_n > 0 && tok->arr_n < (1u << 31))
        hp->n_vocab = (int)tok->arr_n;
    if ((rc = key_u32(g, a, "vocab_size", false, 1, 1u << 30, &hp->n_vocab)))
        return rc;
    return 0;
}

/* ---- tensors ---- */

/* Binds tensor `name` of shape [ne0] (ne1 == 0), [ne0, ne1] (ne2 == 0) or the expert stack
 * [ne0, ne1, ne2] (ne2 matrices of ne1 rows) to *w. Absent and optional: 0 with w->buf NULL. */
static int bind(struct porta_model *m, const char *name, int64_t ne0, int64_t ne1, int64_t ne2,
                bool required, struct porta_weight *w)
{
    memset(w, 0, sizeof *w);
    const struct porta_gguf *g = m->gguf;
    const struct porta_gguf_tensor *t = porta_gguf_tensor(g, name);
    if (!t) {
        if (!required)
            return 0;
        porta_err("%s: tensor '%s' is missing", g->path, name);
        return PORTA_E_FORMAT;
    }
    int want_dims = ne2 ? 3 : ne1 ? 2 : 1;
    bool shape_ok = t->ne[0] == (uint64_t)ne0 && t->ne[1] == (uint64_t)(ne1 ? ne1 : 1) &&
                    t->ne[2] == (uint64_t)(ne2 ? ne2 : 1) && t->ne[3] == 1;
    if (!shape_ok || t->n_dims > want_dims) {
        porta_err("%s: tensor '%s' has shape [%llu, %llu, %llu], expected [%lld, %lld, %lld]",
                  g->path, name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                  (unsigned long long)t->ne[2], (long long)ne0, (long long)(ne1 ? ne1 : 1),
                  (long long)(ne2 ? ne2 : 1));
        return PORTA_E_FORMAT;
    }
    if (!ne1 && t->type != PORTA_F32) {
        porta_err("%s: 1-D tensor '%s' is %s, expected F32", g->path, name,
                  porta_dtype_name(t->type));
        return PORTA_E_UNSUPPORTED;
    }
    const struct porta_type_traits *tt = porta_type_traits(t->type);
    if (!tt || !tt->vec_dot || (ne1 && !porta_be_supports(m->be, PORTA_OP_MATMUL, t->type)) ||
        (ne2 && !porta_be_supports(m->be, PORTA_OP_MATMUL_EXPERTS, t->type))) {
        porta_err("%s: tensor '%s' has type %s, which backend %s cannot multiply%s", g->path,
                  name, porta_dtype_name(t->type), m->be->ops->name,
                  ne2 ? " as an expert stack" : "");
        return PORTA_E_UNSUPPORTED;
    }
    w->type = t->type;
    w->n_cols = ne0;
    w->n_rows = ne1 ? ne1 : 1;
    w->n_mat = ne2 ? ne2 : 1;
    w->row_bytes = porta_row_size(t->type, ne0);
    int c = 0;
    while (c + 1 < m->n_wbufs && m->wbuf_start[c + 1] <= t->offset)
        c++;
    w->buf = m->wbufs[c];
    w->off = t->offset - m->wbuf_start[c];
    w->name = t->name;
    return 0;
}

/* bind() of "blk.<il>.<suffix>" */
static int bind_l(struct porta_model *m, int il, const char *suffix, int64_t ne0, int64_t ne1,
                  int64_t ne2, bool required, struct porta_weight *w)
{
    char n[160];
    snprintf(n, sizeof n, "blk.%d.%s", il, suffix);
    return bind(m, n, ne0, ne1, ne2, required, w);
}

/* bytes of a matrix (stack) that one decoded token reads: all of it, or `used` matrices */
static size_t read_bytes(const struct porta_weight *w, int used)
{
    if (!w->buf)
        return 0;
    return (size_t)w->n_rows * w->row_bytes * (size_t)(w->n_mat > 1 && used ? used : w->n_mat);
}

/* rows [r0, r0 + n) of each of the n_mat blocks of `per` rows of `full`, as a stack */
static struct porta_weight rows_view(const struct porta_weight *full, int n_mat, int64_t per,
                                     int64_t r0, int64_t n)
{
    struct porta_weight w = *full;
    w.n_rows = n;
    w.n_mat = n_mat;
    w.mat_stride = (size_t)per * full->row_bytes;
    w.off = full->off + (size_t)r0 * full->row_bytes;
    return w;
}

/* llama / qwen2 / qwen2moe / qwen3moe attention */
static int bind_attn(struct porta_model *m, int il, struct porta_layer *L)
{
    const struct porta_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim,
            K = (int64_t)hp->n_head_kv * hp->head_dim, V = (int64_t)hp->n_head_kv * hp->head_dim_v,
            O = (int64_t)hp->n_head * hp->head_dim_v, D = hp->head_dim;
    bool bias = hp->arch == PORTA_ARCH_QWEN2 || hp->arch == PORTA_ARCH_QWEN2MOE;
    bool qk_norm = hp->arch == PORTA_ARCH_QWEN3MOE;
    int rc;
    if ((rc = bind_l(m, il, "attn_q.weight", E, Q, 0, true, &L->wq)) ||
        (rc = bind_l(m, il, "attn_k.weight", E, K, 0, true, &L->wk)) ||
        (rc = bind_l(m, il, "attn_v.weight", E, V, 0, true, &L->wv)) ||
        (rc = bind_l(m, il, "attn_q.bias", Q, 0, 0, bias, &L->bq)) ||
        (rc = bind_l(m, il, "attn_k.bias", K, 0, 0, bias, &L->bk)) ||
        (rc = bind_l(m, il, "attn_v.bias", V, 0, 0, bias, &L->bv)) ||
        (rc = bind_l(m, il, "attn_q_norm.weight", D, 0, 0, qk_norm, &L->attn_q_norm)) ||
        (rc = bind_l(m, il, "attn_k_norm.weight", D, 0, 0, qk_norm, &L->attn_k_norm)) ||
        (rc = bind_l(m, il, "attn_output.weight", O, E, 0, true, &L->wo)))
        return rc;
    m->weight_bytes += read_bytes(&L->wq, 0) + read_bytes(&L->wk, 0) + read_bytes(&L->wv, 0) +
                       read_bytes(&L->wo, 0);
    return 0;
}

/* deepseek2 multi-head latent attention: q (direct or through the q_lora compression) split per
 * head into no-rope and rope rows, the kv compression split into latent and shared rope rows,
 * and the per-head up-projections of the latent: attn_k_b / attn_v_b (newer converters) or
 * both from attn_kv_b (wk_b then derived at load, see derive_wk_b) */
static int bind_mla(struct porta_model *m, int il, struct porta_layer *L)
{
    const struct porta_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, H = hp->n_head, D = hp->head_dim, lat = hp->kv_lora_rank,
            nope = hp->n_nope, rope = hp->n_rope, dv = hp->head_dim_v, QL = hp->q_lora_rank;
    struct porta_weight q, kva, kvb;
    int rc;
    if (QL) {
        if ((rc = bind_l(m, il, "attn_q_a.weight", E, QL, 0, true, &L->wq_a)) ||
            (rc = bind_l(m, il, "attn_q_a_norm.weight", QL, 0, 0, true, &L->q_a_norm)) ||
            (rc = bind_l(m, il, "attn_q_b.weight", QL, H * D, 0, true, &q)))
            return rc;
    } else if ((rc = bind_l(m, il, "attn_q.weight", E, H * D, 0, true, &q))) {
        return rc;
    }
    if ((rc = bind_l(m, il, "attn_kv_a_mqa.weight", E, lat + rope, 0, true, &kva)) ||
        (rc = bind_l(m, il, "attn_kv_a_norm.weight", lat, 0, 0, true, &L->kv_a_norm)) ||
        (rc = bind_l(m, il, "attn_k_b.weight", nope, lat, H, false, &L->wk_b)) ||
        (rc = bind_l(m, il, "attn_output.weight", H * dv, E, 0, true, &L->wo)))
        return rc;
    if (L->wk_b.buf) {
        if ((rc = bind_l(m, il, "attn_v_b.weight", lat, dv, H, true, &L->wv_b)))
            return rc;
    } else {
        if ((rc = bind_l(m, il, "attn_kv_b.weight", lat, H * (nope + dv), 0, true, &kvb)))
            return rc;
        if (!porta_be_supports(m->be, PORTA_OP_MATMUL_EXPERTS, kvb.type)) {
            porta_err("%s: backend %s cannot multiply '%s' (%s) per head", m->gguf->path,
                      m->be->ops->name, kvb.name, porta_dtype_name(kvb.type));
            return PORTA_E_UNSUPPORTED;
        }
        L->wv_b = rows_view(&kvb, (int)H, nope + dv, nope, dv);
    }
    L->wq_nope = rows_view(&q, (int)H, D, 0, nope);
    L->wq_rope = rows_view(&q, (int)H, D, nope, rope);
    L->wkv_lat = rows_view(&kva, 1, lat + rope, 0, lat);
    L->wk_rope = rows_view(&kva, 1, lat + rope, lat, rope);
    m->weight_bytes += read_bytes(&L->wq_a, 0) + read_bytes(&q, 0) + read_bytes(&kva, 0) +
                       read_bytes(&L->wv_b, 0) + read_bytes(&L->wo, 0) +
                       (size_t)H * lat * porta_row_size(L->wk_b.buf ? L->wk_b.type : PORTA_F16,
                                                        nope);
    return 0;
}

/* The key up-projection transposed per head, wk_b[h][c][i] = attn_kv_b[h * (nope + dv) + i][c],
 * for files with the single attn_kv_b: F32 from F32, else F16, in one buffer for all layers. */
static int derive_wk_b(struct porta_model *m)
{
    const struct porta_hparams *hp = &m->hp;
    int H = hp->n_head, lat = hp->kv_lora_rank, nope = hp->n_nope, dv = hp->head_dim_v;
    size_t total = 0;
    for (int il = m->layer_from; il <= m->layer_to; il++) {
        struct porta_layer *L = &m->layers[il];
        if (L->wk_b.buf)
            continue;
        enum porta_dtype dt = L->wv_b.type == PORTA_F32 ? PORTA_F32 : PORTA_F16;
        total += (size_t)H * lat * porta_row_size(dt, nope);
    }
    if (total == 0)
        return 0;
    uint8_t *host = malloc(total);
    float *row = malloc(sizeof(float) * (size_t)lat);
    int rc = 0;
    if (!host || !row) {
        rc = PORTA_E_NOMEM;
        goto done;
    }
    size_t off = 0;
    for (int il = m->layer_from; il <= m->layer_to; il++) {
        struct porta_layer *L = &m->layers[il];
        if (L->wk_b.buf)
            continue;
        char n[160];
        snprintf(n, sizeof n, "blk.%d.attn_kv_b.weight", il);
        const struct porta_gguf_tensor *t = porta_gguf_tensor(m->gguf, n);
        enum porta_dtype dt = L->wv_b.type == PORTA_F32 ? PORTA_F32 : PORTA_F16;
        size_t rb = porta_row_size(t->type, lat), drb = porta_row_size(dt, nope);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < nope; i++) {
                const uint8_t *src = (const uint8_t *)t->data + ((size_t)h * (nope + dv) + i) * rb;
                if ((rc = porta_dequantize_row(t->type, src, row, lat)))
                    goto done;
                for (int c = 0; c < lat; c++) {
                    uint8_t *dst = host + off + ((size_t)h * lat + c) * drb;
                    if (dt == PORTA_F32)
                        ((float *)dst)[i] = row[c];
                    else
                        ((porta_f16 *)dst)[i] = porta_f32_to_f16(row[c]);
                }
            }
        L->wk_b = (struct porta_weight){ .type = dt, .n_rows = lat, .n_cols = nope, .n_mat = H,
                                         .row_bytes = drb, .off = off, .name = t->name };
        off += (size_t)H * lat * drb;
    }
    if ((rc = porta_be_buf_alloc(m->be, total, PORTA_BUF_WEIGHTS, &m->derived)) ||
        (rc = porta_be_upload(m->be, m->derived, 0, host, total)))
        goto done;
    for (int il = m->layer_from; il <= m->layer_to; il++)
        if (!m->layers[il].wk_b.buf)
            m->layers[il].wk_b.buf = m->derived;
done:
    free(host);
    free(row);
    return rc;
}

/* dense SwiGLU, or router + experts (+ shared experts) from layer n_layer_dense_lead on */
static int bind_ffn(struct porta_model *m, int il, struct porta_layer *L)
{
    const struct porta_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, F = hp->n_ff, X = hp->n_expert, FE = hp->n_ff_exp,
            FS = hp->n_ff_shexp;
    int rc;
    if ((rc = bind_l(m, il, "ffn_norm.weight", E, 0, 0, true, &L->ffn_norm)))
        return rc;
    if (X == 0 || il < hp->n_layer_dense_lead) {
        if ((rc = bind_l(m, il, "ffn_gate.weight", E, F, 0, true, &L->w_gate)) ||
            (rc = bind_l(m, il, "ffn_up.weight", E, F, 0, true, &L->w_up)) ||
            (rc = bind_l(m, il, "ffn_down.weight", F, E, 0, true, &L->w_down)))
            return rc;
        m->weight_bytes += read_bytes(&L->w_gate, 0) + read_bytes(&L->w_up, 0) +
                           read_bytes(&L->w_down, 0);
        return 0;
    }
    bool gated_shared = hp->arch == PORTA_ARCH_QWEN2MOE;
    if ((rc = bind_l(m, il, "ffn_gate_inp.weight", E, X, 0, true, &L->gate_inp)) ||
        (rc = bind_l(m, il, "exp_probs_b.bias", X, 0, 0, false, &L->exp_probs_b)) ||
        (rc = bind_l(m, il, "ffn_gate_exps.weight", E, FE, X, true, &L->gate_exps)) ||
        (rc = bind_l(m, il, "ffn_up_exps.weight", E, FE, X, true, &L->up_exps)) ||
        (rc = bind_l(m, il, "ffn_down_exps.weight", FE, E, X, true, &L->down_exps)) ||
        (FS && (rc = bind_l(m, il, "ffn_gate_shexp.weight", E, FS, 0, true, &L->gate_shexp))) ||
        (FS && (rc = bind_l(m, il, "ffn_up_shexp.weight", E, FS, 0, true, &L->up_shexp))) ||
        (FS && (rc = bind_l(m, il, "ffn_down_shexp.weight", FS, E, 0, true, &L->down_shexp))) ||
        (FS && gated_shared &&
         (rc = bind_l(m, il, "ffn_gate_inp_shexp.weight", E, 1, 0, true, &L->gate_inp_shexp))))
        return rc;
    int k = hp->n_expert_used;
    m->weight_bytes += read_bytes(&L->gate_inp, 0) + read_bytes(&L->gate_exps, k) +
                       read_bytes(&L->up_exps, k) + read_bytes(&L->down_exps, k) +
                       read_bytes(&L->gate_shexp, 0) + read_bytes(&L->up_shexp, 0) +
                       read_bytes(&L->down_shexp, 0) + read_bytes(&L->gate_inp_shexp, 0);
    return 0;
}

static int bind_layers(struct porta_model *m)
{
    const struct porta_hparams *hp = &m->hp;
    int rc;
    for (int il = m->layer_from; il <= m->layer_to; il++) {
        struct porta_layer *L = &m->layers[il];
        if ((rc = bind_l(m, il, "attn_norm.weight", hp->n_embd, 0, 0, true, &L->attn_norm)) ||
            (rc = hp->arch == PORTA_ARCH_DEEPSEEK2 ? bind_mla(m, il, L) : bind_attn(m, il, L)) ||
            (rc = bind_ffn(m, il, L)))
            return rc;
    }
    return hp->arch == PORTA_ARCH_DEEPSEEK2 ? derive_wk_b(m) : 0;
}

static int cmp_tensor_off(const void *a, const void *b)
{
    uint64_t x = (*(const struct porta_gguf_tensor *const *)a)->offset,
             y = (*(const struct porta_gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

static bool whole_model(const struct porta_model *m)
{
    return m->layer_from == 0 && m->layer_to == m->hp.n_layer - 1;
}

/* whether this model's layers need the tensor (see porta_model_load_range) */
static bool tensor_needed(const struct porta_model *m, const char *name)
{
    int il;
    bool first = m->layer_from == 0, last = m->layer_to == m->hp.n_layer - 1;
    if (sscanf(name, "blk.%d.", &il) == 1)
        return il >= m->layer_from && il <= m->layer_to;
    if (strcmp(name, "token_embd.weight") == 0)
        return first || (last && !porta_gguf_tensor(m->gguf, "output.weight"));
    if (strcmp(name, "output_norm.weight") == 0 || strcmp(name, "output.weight") == 0)
        return last;
    return first;
}

/* Puts the GGUF data section on the backend: one buffer when the backend takes it whole
 * (be->max_buf 0 or large enough), else consecutive chunks of whole tensors, each at most
 * be->max_buf bytes (OpenCL devices cap one buffer at CL_DEVICE_MAX_MEM_ALLOC_SIZE, often a
 * quarter of their memory). A single tensor over the limit is an error naming it. A model of
 * some layers only takes the chunks of the tensors they need (tensor_needed). */
static int map_weights(struct porta_model *m)
{
    const struct porta_gguf *g = m->gguf;
    struct porta_backend *be = m->be;
    const uint8_t *base = g->base + g->data_offset;
    size_t total = g->size - g->data_offset, lim = be->max_buf;
    int rc = 0, n = 1;
    const struct porta_gguf_tensor **ts = NULL;
    bool part = !whole_model(m);
    if (!lim)
        lim = SIZE_MAX;
    if (part || total > lim) {
        ts = malloc(sizeof *ts * (size_t)(g->n_tensors ? g->n_tensors : 1));
        if (!ts)
            return PORTA_E_NOMEM;
        for (int64_t i = 0; i < g->n_tensors; i++)
            ts[i] = &g->tensors[i];
        qsort(ts, (size_t)g->n_tensors, sizeof *ts, cmp_tensor_off);
        uint64_t cs = 0;
        bool open = false;
        n = 0;
        for (int64_t i = 0; i < g->n_tensors; i++) {
            if (part && !tensor_needed(m, ts[i]->name)) {
                open = false;           /* a skipped tensor ends the chunk */
                continue;
            }
            if (ts[i]->nbytes > lim) {
                porta_err("%s: tensor '%s' is %zu bytes, more than the %zu bytes that backend %s "
                          "can hold in one buffer", g->path, ts[i]->name, ts[i]->nbytes, lim,
                          be->ops->name);
                free(ts);
                return PORTA_E_UNSUPPORTED;
            }
            if (!open || ts[i]->offset + ts[i]->nbytes - cs > lim) {
                cs = ts[i]->offset;
                n++;
                open = true;
            }
        }
    }
    m->wbufs = calloc((size_t)(n ? n : 1), sizeof *m->wbufs);
    m->wbuf_start = calloc((size_t)(n ? n : 1), sizeof *m->wbuf_start);
    if (!m->wbufs || !m->wbuf_start) {
        free(ts);
        return PORTA_E_NOMEM;
    }
    if (!ts) {
        m->n_wbufs = 1;
        return porta_be_buf_from_host(be, base, total, &m->wbufs[0]);
    }
    /* the same walk again, now allocating: chunk c covers [start[c], end of its last tensor) */
    int c = -1;
    bool open = false;
    uint64_t end = 0;
    for (int64_t i = 0; i <= g->n_tensors && !rc; i++) {
        bool skip = i < g->n_tensors && part && !tensor_needed(m, ts[i]->name);
        bool flush = i == g->n_tensors || (open && skip) ||
                     (open && ts[i]->offset + ts[i]->nbytes - m->wbuf_start[c] > lim);
        if (flush && open) {
            rc = porta_be_buf_from_host(be, base + m->wbuf_start[c], end - m->wbuf_start[c],
                                        &m->wbufs[c]);
            m->n_wbufs = c + 1;
            open = false;
        }
        if (i == g->n_tensors || rc)
            break;
        if (skip)
            continue;
        if (!open) {
            m->wbuf_start[++c] = ts[i]->offset;
            end = 0;
            open = true;
        }
        if (ts[i]->offset + ts[i]->nbytes > end)
            end = ts[i]->offset + ts[i]->nbytes;
    }
    if (!rc && part)
        porta_info("%s: layers %d..%d on %s: %d weight buffers", g->path, m->layer_from,
                   m->layer_to, be->ops->name, n);
    else if (!rc)
        porta_info("%s: weights in %d buffers of at most %.1f MiB (the backend's limit)", g->path,
                  n, lim / 1048576.0);
    free(ts);
    return rc;
}

/* layers [from, to], or all with from < 0 */
static int load(struct porta_gguf *g, struct porta_backend *be, int from, int to,
                struct porta_model **out)
{
    *out = NULL;
    struct porta_model *m = calloc(1, sizeof *m);
    if (!m) {
        porta_gguf_close(g);
        return PORTA_E_NOMEM;
    }
    m->gguf = g;
    m->be = be;
    int rc = porta_hparams_read(g, &m->hp);
    if (rc)
        goto fail;
    struct porta_hparams *hp = &m->hp;
    m->layer_from = from < 0 ? 0 : from;
    m->layer_to = from < 0 ? hp->n_layer - 1 : to;
    if (m->layer_from > m->layer_to || m->layer_to >= hp->n_layer) {
        porta_err("%s: layers %d..%d: the model has layers 0..%d", g->path, from, to,
                  hp->n_layer - 1);
        rc = PORTA_E_INVAL;
        goto fail;
    }
    bool last = m->layer_to == hp->n_layer - 1;
    const char *need = hp->n_expert && !porta_be_supports(be, PORTA_OP_MOE_ROUTE, PORTA_F32)
                           ? "moe_route"
                       : hp->arch == PORTA_ARCH_DEEPSEEK2 &&
                               !porta_be_supports(be, PORTA_OP_ATTENTION_MLA, PORTA_F32)
                           ? "attention_mla"
                           : NULL;
    if (need) {
        porta_err("%s: backend %s does not implement %s, which %s models need", g->path,
                  be->ops->name, need, hp->arch_name);
        rc = PORTA_E_UNSUPPORTED;
        goto fail;
    }
    const struct porta_gguf_tensor *te = porta_gguf_tensor(g, "token_embd.weight");
    if (!te) {
        porta_err("%s: tensor 'token_embd.weight' is missing", g->path);
        rc = PORTA_E_FORMAT;
        goto fail;
    }
    if (hp->n_vocab == 0)
        hp->n_vocab = (int)te->ne[1];
    if (te->ne[1] != (uint64_t)hp->n_vocab) {
        porta_err("%s: token_embd.weight has %llu rows but the vocabulary has %d tokens", g->path,
                  (unsigned long long)te->ne[1], hp->n_vocab);
        rc = PORTA_E_FORMAT;
        goto fail;
    }
    if ((rc = map_weights(m)))
        goto fail;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    if ((tensor_needed(m, "token_embd.weight") &&
         (rc = bind(m, "token_embd.weight", hp->n_embd, hp->n_vocab, 0, true, &m->tok_embd))) ||
        (last && (rc = bind(m, "output_norm.weight", hp->n_embd, 0, 0, true, &m->out_norm))) ||
        (last &&
         (rc = bind(m, "output.weight", hp->n_embd, hp->n_vocab, 0, false, &m->output))) ||
        (rc = bind_layers(m)))
        goto fail;
    if (last && !m->output.buf)
        m->output = m->tok_embd; /* tied embeddings */
    if (last)
        m->weight_bytes += m->output.row_bytes * (size_t)m->output.n_rows;

    const struct porta_gguf_tensor *rf = porta_gguf_tensor(g, "rope_freqs.weight");
    if (rf) {
        if (rf->type != PORTA_F32 || rf->ne[0] != (uint64_t)(hp->rope.n_rot / 2) ||
            rf->n_dims != 1) {
            porta_err("%s: rope_freqs.weight must be F32 [%d]", g->path, hp->rope.n_rot / 2);
            rc = PORTA_E_FORMAT;
            goto fail;
        }
        m->rope_freqs = malloc(rf->nbytes);
        if (!m->rope_freqs) {
            rc = PORTA_E_NOMEM;
            goto fail;
        }
        memcpy(m->rope_freqs, rf->data, rf->nbytes);
        hp->rope.freq_factors = m->rope_freqs;
    }
    *out = m;
    return 0;
fail:
    porta_model_destroy(m);
    return rc;
}

int porta_model_load_gguf(struct porta_gguf *g, struct porta_backend *be, struct porta_model **out)
{
    return load(g, be, -1, -1, out);
}

int porta_model_load(const char *path, struct porta_backend *be, struct porta_model **out)
{
    *out = NULL;
    struct porta_gguf *g;
    int rc = porta_gguf_open(path, &g);
    if (rc)
        return rc;
    return load(g, be, -1, -1, out);
}

int porta_model_load_range(const char *path, struct porta_backend *be, int from, int to,
                           struct porta_model **out)
{
    *out = NULL;
    if (from < 0 || to < from) {
        porta_err("%s: layers %d..%d is not a range of layers", path, from, to);
        return PORTA_E_INVAL;
    }
    struct porta_gguf *g;
    int rc = porta_gguf_open(path, &g);
    if (rc)
        return rc;
    return load(g, be, from, to, out);
}

void porta_model_destroy(struct porta_model *m)
{
    if (!m)
        return;
    if (m->be) {
        for (int i = 0; i < m->n_wbufs; i++)
            porta_be_buf_free(m->be, m->wbufs[i]);
        porta_be_buf_free(m->be, m->derived);
    }
    free(m->wbufs);
    free(m->wbuf_start);
    free(m->layers);
    free(m->rope_freqs);
    porta_gguf_close(m->gguf);
    free(m);
}

/* ---- context ---- */

static int imax(int a, int b) { return a > b ? a : b; }

/* The activation buffers and their floats (or int32s) per token; 0: not needed here. */
static int ctx_buffers(struct porta_ctx *c, struct porta_buf ***bufs, size_t *per_tok)
{
    const struct porta_hparams *hp = &c->m->hp;
    bool mla = hp->arch == PORTA_ARCH_DEEPSEEK2, moe = hp->n_expert > 0;
    bool gated = false;
    bool last = c->m->layer_to == hp->n_layer - 1;
    for (int il = c->m->layer_from; il <= c->m->layer_to; il++)
        gated = gated || c->m->layers[il].gate_inp_shexp.buf;
    int hd = imax(hp->head_dim, hp->head_dim_v), H = hp->n_head, k = hp->n_expert_used;
    int qdim = H * hd, kdim = hp->n_head_kv * hd;
    int n_ff = imax(hp->n_expert == 0 || hp->n_layer_dense_lead > 0 ? hp->n_ff : 0,
                    hp->n_ff_shexp);
    struct {
        struct porta_buf **b;
        size_t n;
    } t[] = {
        { &c->x, hp->n_embd }, { &c->xb, imax(hp->n_embd, qdim) },
        { &c->q, mla ? 0 : qdim }, { &c->k, mla ? 0 : kdim }, { &c->v, mla ? 0 : kdim },
        { &c->att, qdim }, { &c->g, n_ff }, { &c->u, n_ff }, { &c->logits, last ? hp->n_vocab : 0 },
        { &c->rl, moe ? hp->n_expert : 0 }, { &c->ids, moe ? k : 0 }, { &c->rw, moe ? k : 0 },
        { &c->eg, moe ? (size_t)k * hp->n_ff_exp : 0 },
        { &c->eu, moe ? (size_t)k * hp->n_ff_exp : 0 }, { &c->xo, moe ? hp->n_embd : 0 },
        { &c->sl, gated }, { &c->sid, gated }, { &c->sw, gated },
        { &c->qa, mla ? hp->q_lora_rank : 0 }, { &c->qn, mla ? H * hp->n_nope : 0 },
        { &c->qr, mla ? H * hp->n_rope : 0 }, { &c->ql, mla ? H * hp->kv_lora_rank : 0 },
        { &c->kl, mla ? hp->kv_lora_rank : 0 }, { &c->kr, mla ? hp->n_rope : 0 },
        { &c->ol, mla ? H * hp->kv_lora_rank : 0 },
    };
    int n = (int)(sizeof t / sizeof t[0]);
    for (int i = 0; i < n; i++) {
        bufs[i] = t[i].b;
        per_tok[i] = t[i].n;
    }
    return n;
}

int porta_ctx_create(struct porta_model *m, const struct porta_ctx_params *p,
                     struct porta_ctx **out)
{
    *out = NULL;
    const struct porta_hparams *hp = &m->hp;
    if (p->n_ctx <= 0 || p->n_seq <= 0 || p->n_batch <= 0 ||
        (p->kv_type != PORTA_F16 && p->kv_type != PORTA_F32)) {
        porta_err("context: n_ctx, n_seq and n_batch must be positive, kv_type f16 or f32");
        return PORTA_E_INVAL;
    }
    struct porta_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return PORTA_E_NOMEM;
    c->m = m;
    c->p = *p;
    if (c->p.n_batch > c->p.n_ctx)
        c->p.n_batch = c->p.n_ctx;
    struct porta_backend *be = m->be;
    size_t es = p->kv_type == PORTA_F16 ? 2 : 4;
    size_t cells = (size_t)p->n_ctx * (size_t)p->n_seq;
    if (hp->arch == PORTA_ARCH_DEEPSEEK2) {
        /* MLA caches the compressed row [kv_lora | rope] per position, shared by all heads */
        c->kv_layer_stride_k = cells * (size_t)(hp->kv_lora_rank + hp->n_rope) * es;
        c->kv_layer_stride_v = 0;
    } else {
        c->kv_layer_stride_k = cells * (size_t)hp->n_head_kv * (size_t)hp->head_dim * es;
        c->kv_layer_stride_v = cells * (size_t)hp->n_head_kv * (size_t)hp->head_dim_v * es;
    }
    int rc;
    size_t kbytes, vbytes;
    size_t n_layers = (size_t)(m->layer_to - m->layer_from + 1);   /* this model's layers */
    if (!porta_mul_ok(c->kv_layer_stride_k, n_layers, &kbytes) ||
        !porta_mul_ok(c->kv_layer_stride_v, n_layers, &vbytes)) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    if ((rc = porta_be_buf_alloc(be, kbytes, PORTA_BUF_KV, &c->k_cache)) ||
        (vbytes && (rc = porta_be_buf_alloc(be, vbytes, PORTA_BUF_KV, &c->v_cache))))
        goto fail;
    struct porta_buf **bufs[32];
    size_t per_tok[32];
    int nb = ctx_buffers(c, bufs, per_tok);
    for (int i = 0; i < nb; i++) {
        size_t bytes;
        if (!per_tok[i])
            continue;
        if (!porta_mul_ok(per_tok[i] * sizeof(float), (size_t)c->p.n_batch, &bytes)) {
            rc = PORTA_E_NOMEM;
            goto fail;
        }
        if ((rc = porta_be_buf_alloc(be, bytes, PORTA_BUF_ACT, bufs[i])))
            goto fail;
    }
    c->n_past = calloc((size_t)p->n_seq, sizeof *c->n_past);
    c->xfer = malloc(sizeof(float) * (size_t)hp->n_embd * (size_t)c->p.n_batch);
    if (!c->n_past || !c->xfer) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    *out = c;
    return 0;
fail:
    porta_ctx_destroy(c);
    return rc;
}

void porta_ctx_destroy(struct porta_ctx *c)
{
    if (!c)
        return;
    struct porta_backend *be = c->m->be;
    struct porta_buf **bufs[32];
    size_t per_tok[32];
    int nb = ctx_buffers(c, bufs, per_tok);
    for (int i = 0; i < nb; i++)
        porta_be_buf_free(be, *bufs[i]);
    porta_be_buf_free(be, c->k_cache);
    porta_be_buf_free(be, c->v_cache);
    free(c->n_past);
    free(c->xfer);
    free(c);
}

int porta_ctx_link(struct porta_ctx *c, struct porta_ctx *next)
{
    const struct porta_model *a = c->m, *b = next->m;
    if (b->layer_from != a->layer_to + 1 || strcmp(a->gguf->path, b->gguf->path) != 0 ||
        c->p.n_ctx != next->p.n_ctx || c->p.n_seq != next->p.n_seq ||
        c->p.n_batch != next->p.n_batch || c->p.kv_type != next->p.kv_type) {
        porta_err("context: layers %d..%d of %s cannot follow layers %d..%d of %s (the next "
                  "layers of the same file, with the same context parameters)",
                  b->layer_from, b->layer_to, b->gguf->path, a->layer_from, a->layer_to,
                  a->gguf->path);
        return PORTA_E_INVAL;
    }
    c->next = next;
    return 0;
}

int porta_ctx_kv_copy(struct porta_ctx *c, int dst, int src, int n, void **tmp, size_t *cap)
{
    if (dst < 0 || src < 0 || dst >= c->p.n_seq || src >= c->p.n_seq || n < 0 ||
        n > c->p.n_ctx) {
        porta_err("kv copy: sequences %d -> %d, %d positions: out of range", src, dst, n);
        return PORTA_E_RANGE;
    }
    size_t cells = (size_t)c->p.n_ctx * (size_t)c->p.n_seq;
    for (struct porta_ctx *s = c; s; s = s->next) {
        struct {
            struct porta_buf *b;
            size_t stride;
        } kv[2] = { { s->k_cache, s->kv_layer_stride_k }, { s->v_cache, s->kv_layer_stride_v } };
        for (int j = 0; j < 2; j++) {
            size_t per = kv[j].stride / cells, seq = (size_t)s->p.n_ctx * per, bytes = n * per;
            if (!kv[j].b || !bytes)
                continue;
            if (bytes > *cap) {
                void *p = realloc(*tmp, bytes);
                if (!p)
                    return PORTA_E_NOMEM;
                *tmp = p;
                *cap = bytes;
            }
            for (int il = s->m->layer_from; il <= s->m->layer_to; il++) {
                size_t base = (size_t)(il - s->m->layer_from) * kv[j].stride;
                int rc = porta_be_download(s->m->be, *tmp, kv[j].b, base + (size_t)src * seq,
                                           bytes);
                if (!rc)
                    rc = porta_be_upload(s->m->be, kv[j].b, base + (size_t)dst * seq, *tmp,
                                         bytes);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

void porta_ctx_reset(struct porta_ctx *c, int s)
{
    for (int i = 0; i < c->p.n_seq; i++)
        if (s < 0 || i == s)
            c->n_past[i] = 0;
}

/* ---- forward ---- */

/* one chunk through the layers of c's model */
static int run_layers(struct porta_ctx *c, int n, const int32_t *ids, const int32_t *pos,
                      const int32_t *seq, const int32_t *rows, int n_out)
{
    switch (c->m->hp.arch) {
    case PORTA_ARCH_DEEPSEEK2:
        return porta_forward_deepseek2(c, n, ids, pos, seq, rows, n_out);
    default:
        return porta_forward_llama(c, n, ids, pos, seq, rows, n_out);
    }
}

/* one chunk through c and the contexts linked after it: the hidden state passes from one
 * backend to the next through host memory; *last = the context holding the logits */
static int run_chain(struct porta_ctx *c, int n, const int32_t *ids, const int32_t *pos,
                     const int32_t *seq, const int32_t *rows, int n_out, struct porta_ctx **last)
{
    int rc = run_layers(c, n, ids, pos, seq, rows, n_out);
    for (; !rc && c->next; c = c->next) {
        size_t bytes = (size_t)n * (size_t)c->m->hp.n_embd * sizeof(float);
        rc = porta_be_download(c->m->be, c->xfer, c->x, 0, bytes);
        if (!rc)
            rc = porta_be_upload(c->next->m->be, c->next->x, 0, c->xfer, bytes);
        if (!rc)
            rc = run_layers(c->next, n, ids, pos, seq, rows, n_out);
    }
    *last = c;
    return rc;
}

int porta_forward(struct porta_ctx *c, const struct porta_batch *b, float *logits_out)
{
    const struct porta_hparams *hp = &c->m->hp;
    int nb = c->p.n_batch, rc = 0;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)nb * 2);
    if (!pos)
        return PORTA_E_NOMEM;
    int32_t *rows = pos + nb;
    size_t n_written = 0;
    for (int i0 = 0; i0 < b->n_tok; i0 += nb) {
        int n = b->n_tok - i0 < nb ? b->n_tok - i0 : nb, n_out = 0;
        for (int i = 0; i < n; i++) {
            int t = i0 + i, s = b->seq ? b->seq[t] : 0;
            if (s < 0 || s >= c->p.n_seq) {
                porta_err("forward: sequence id %d outside 0..%d", s, c->p.n_seq - 1);
                rc = PORTA_E_RANGE;
                goto done;
            }
            pos[i] = b->pos ? b->pos[t] : c->n_past[s]++;
            if (b->pos && pos[i] + 1 > c->n_past[s])
                c->n_past[s] = pos[i] + 1;
            if (pos[i] < 0 || pos[i] >= c->p.n_ctx) {
                porta_err("forward: position %d is outside the context of %d tokens", pos[i],
                          c->p.n_ctx);
                rc = PORTA_E_RANGE;
                goto done;
            }
            bool want = b->logits ? b->logits[t] : t == b->n_tok - 1;
            if (want)
                rows[n_out++] = i;
        }
        struct porta_ctx *last;
        rc = run_chain(c, n, b->ids + i0, pos, b->seq ? b->seq + i0 : NULL, rows, n_out, &last);
        if (rc)
            goto done;
        if (n_out && logits_out) {
            size_t bytes = (size_t)n_out * hp->n_vocab * sizeof(float);
            rc = porta_be_download(last->m->be, logits_out + n_written * hp->n_vocab,
                                   last->logits, 0, bytes);
            if (rc)
                goto done;
            n_written += (size_t)n_out;
        }
    }
    for (struct porta_ctx *s = c; s && !rc; s = s->next)
        rc = porta_be_synchronize(s->m->be);
done:
    free(pos);
    return rc;
}
