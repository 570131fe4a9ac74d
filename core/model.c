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
    if (strcmp(a, "llama") == 0) {
        hp->arch = PORTA_ARCH_LLAMA;
        hp->rope.style = PORTA_ROPE_NORM;
    } else if (strcmp(a, "qwen2") == 0) {
        hp->arch = PORTA_ARCH_QWEN2;
        hp->rope.style = PORTA_ROPE_NEOX;
    } else {
        porta_err("%s: architecture '%s' is not supported (supported: llama, qwen2)", g->path, a);
        return PORTA_E_UNSUPPORTED;
    }
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

    /* vocabulary size: the token list is authoritative */
    const struct porta_gguf_kv *tok = porta_gguf_find(g, "tokenizer.ggml.tokens");
    if (tok && tok->type == PORTA_GGUF_ARRAY && tok->arr_n > 0 && tok->arr_n < (1u << 31))
        hp->n_vocab = (int)tok->arr_n;
    if ((rc = key_u32(g, a, "vocab_size", false, 1, 1u << 30, &hp->n_vocab)))
        return rc;
    return 0;
}

/* ---- tensors ---- */

/* Binds tensor `name` of shape [ne0] (ne1 == 0) or [ne0, ne1] to *w. Absent and optional:
 * 0 with w->buf NULL. */
static int bind(struct porta_model *m, const char *name, int64_t ne0, int64_t ne1, bool required,
                struct porta_weight *w)
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
    int want_dims = ne1 ? 2 : 1;
    bool shape_ok = t->ne[0] == (uint64_t)ne0 && t->ne[1] == (uint64_t)(ne1 ? ne1 : 1) &&
                    t->ne[2] == 1 && t->ne[3] == 1;
    if (!shape_ok || t->n_dims > want_dims) {
        porta_err("%s: tensor '%s' has shape [%llu, %llu, %llu], expected [%lld, %lld]", g->path,
                  name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                  (unsigned long long)t->ne[2], (long long)ne0, (long long)(ne1 ? ne1 : 1));
        return PORTA_E_FORMAT;
    }
    if (!ne1 && t->type != PORTA_F32) {
        porta_err("%s: 1-D tensor '%s' is %s, expected F32", g->path, name,
                  porta_dtype_name(t->type));
        return PORTA_E_UNSUPPORTED;
    }
    const struct porta_type_traits *tt = porta_type_traits(t->type);
    if (!tt || !tt->vec_dot || (ne1 && !porta_be_supports(m->be, PORTA_OP_MATMUL, t->type))) {
        porta_err("%s: tensor '%s' has type %s, which backend %s cannot multiply", g->path, name,
                  porta_dtype_name(t->type), m->be->ops->name);
        return PORTA_E_UNSUPPORTED;
    }
    w->type = t->type;
    w->n_cols = ne0;
    w->n_rows = ne1 ? ne1 : 1;
    w->n_mat = 1;
    w->row_bytes = porta_row_size(t->type, ne0);
    w->buf = m->weights;
    w->off = t->offset;
    w->name = t->name;
    return 0;
}

static int bind_layers(struct porta_model *m)
{
    const struct porta_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim,
            K = (int64_t)hp->n_head_kv * hp->head_dim, V = (int64_t)hp->n_head_kv * hp->head_dim_v,
            O = (int64_t)hp->n_head * hp->head_dim_v, F = hp->n_ff;
    bool bias = hp->arch == PORTA_ARCH_QWEN2;
    int rc = 0;
    char n[160];
#define B(field, suffix, ne0, ne1, req)                                                           \
    do {                                                                                       \
        snprintf(n, sizeof n, "blk.%d." suffix, i);                                            \
        if ((rc = bind(m, n, ne0, ne1, req, &L->field)))                                       \
            return rc;                                                                         \
    } while (0)
    for (int i = 0; i < hp->n_layer; i++) {
        struct porta_layer *L = &m->layers[i];
        B(attn_norm, "attn_norm.weight", E, 0, true);
        B(wq, "attn_q.weight", E, Q, true);
        B(wk, "attn_k.weight", E, K, true);
        B(wv, "attn_v.weight", E, V, true);
        B(bq, "attn_q.bias", Q, 0, bias);
        B(bk, "attn_k.bias", K, 0, bias);
        B(bv, "attn_v.bias", V, 0, bias);
        B(wo, "attn_output.weight", O, E, true);
        B(ffn_norm, "ffn_norm.weight", E, 0, true);
        B(w_gate, "ffn_gate.weight", E, F, true);
        B(w_up, "ffn_up.weight", E, F, true);
        B(w_down, "ffn_down.weight", F, E, true);
        const struct porta_weight *mats[] = { &L->wq, &L->wk, &L->wv, &L->wo,
                                              &L->w_gate, &L->w_up, &L->w_down };
        for (size_t j = 0; j < sizeof mats / sizeof mats[0]; j++)
            m->weight_bytes += mats[j]->row_bytes * (size_t)mats[j]->n_rows;
    }
#undef B
    return 0;
}

int porta_model_load_gguf(struct porta_gguf *g, struct porta_backend *be, struct porta_model **out)
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
    rc = porta_be_buf_from_host(be, g->base + g->data_offset, g->size - g->data_offset,
                                &m->weights);
    if (rc)
        goto fail;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    if ((rc = bind(m, "token_embd.weight", hp->n_embd, hp->n_vocab, true, &m->tok_embd)) ||
        (rc = bind(m, "output_norm.weight", hp->n_embd, 0, true, &m->out_norm)) ||
        (rc = bind(m, "output.weight", hp->n_embd, hp->n_vocab, false, &m->output)) ||
        (rc = bind_layers(m)))
        goto fail;
    if (!m->output.buf)
        m->output = m->tok_embd; /* tied embeddings */
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

int porta_model_load(const char *path, struct porta_backend *be, struct porta_model **out)
{
    *out = NULL;
    struct porta_gguf *g;
    int rc = porta_gguf_open(path, &g);
    if (rc)
        return rc;
    return porta_model_load_gguf(g, be, out);
}

void porta_model_destroy(struct porta_model *m)
{
    if (!m)
        return;
    if (m->be)
        porta_be_buf_free(m->be, m->weights);
    free(m->layers);
    free(m->rope_freqs);
    porta_gguf_close(m->gguf);
    free(m);
}

/* ---- context ---- */

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
    size_t cells = (size_t)p->n_ctx * (size_t)p->n_seq * (size_t)hp->n_head_kv;
    c->kv_layer_stride_k = cells * (size_t)hp->head_dim * es;
    c->kv_layer_stride_v = cells * (size_t)hp->head_dim_v * es;
    size_t nb = (size_t)c->p.n_batch * sizeof(float);
    int rc;
    size_t kbytes, vbytes;
    if (!porta_mul_ok(c->kv_layer_stride_k, (size_t)hp->n_layer, &kbytes) ||
        !porta_mul_ok(c->kv_layer_stride_v, (size_t)hp->n_layer, &vbytes)) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    int qdim = hp->n_head * (hp->head_dim > hp->head_dim_v ? hp->head_dim : hp->head_dim_v);
    int kdim = hp->n_head_kv * (hp->head_dim > hp->head_dim_v ? hp->head_dim : hp->head_dim_v);
    if ((rc = porta_be_buf_alloc(be, kbytes, PORTA_BUF_KV, &c->k_cache)) ||
        (rc = porta_be_buf_alloc(be, vbytes, PORTA_BUF_KV, &c->v_cache)) ||
        (rc = porta_be_buf_alloc(be, nb * hp->n_embd, PORTA_BUF_ACT, &c->x)) ||
        (rc = porta_be_buf_alloc(be, nb * (hp->n_embd > qdim ? hp->n_embd : qdim), PORTA_BUF_ACT,
                                 &c->xb)) ||
        (rc = porta_be_buf_alloc(be, nb * qdim, PORTA_BUF_ACT, &c->q)) ||
        (rc = porta_be_buf_alloc(be, nb * kdim, PORTA_BUF_ACT, &c->k)) ||
        (rc = porta_be_buf_alloc(be, nb * kdim, PORTA_BUF_ACT, &c->v)) ||
        (rc = porta_be_buf_alloc(be, nb * qdim, PORTA_BUF_ACT, &c->att)) ||
        (rc = porta_be_buf_alloc(be, nb * hp->n_ff, PORTA_BUF_ACT, &c->g)) ||
        (rc = porta_be_buf_alloc(be, nb * hp->n_ff, PORTA_BUF_ACT, &c->u)) ||
        (rc = porta_be_buf_alloc(be, nb * hp->n_vocab, PORTA_BUF_ACT, &c->logits)))
        goto fail;
    c->n_past = calloc((size_t)p->n_seq, sizeof *c->n_past);
    if (!c->n_past) {
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
    struct porta_buf *bufs[] = { c->k_cache, c->v_cache, c->x, c->xb, c->q, c->k,
                                 c->v, c->att, c->g, c->u, c->logits };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        porta_be_buf_free(be, bufs[i]);
    free(c->n_past);
    free(c);
}

void porta_ctx_reset(struct porta_ctx *c, int s)
{
    for (int i = 0; i < c->p.n_seq; i++)
        if (s < 0 || i == s)
            c->n_past[i] = 0;
}

/* ---- forward ---- */

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
        switch (hp->arch) {
        case PORTA_ARCH_LLAMA:
        case PORTA_ARCH_QWEN2:
            rc = porta_forward_llama(c, n, b->ids + i0, pos, b->seq ? b->seq + i0 : NULL, rows,
                                     n_out);
            break;
        }
        if (rc)
            goto done;
        if (n_out && logits_out) {
            size_t bytes = (size_t)n_out * hp->n_vocab * sizeof(float);
            rc = porta_be_download(c->m->be, logits_out + n_written * hp->n_vocab, c->logits, 0,
                                   bytes);
            if (rc)
                goto done;
            n_written += (size_t)n_out;
        }
    }
    rc = porta_be_synchronize(c->m->be);
done:
    free(pos);
    return rc;
}
