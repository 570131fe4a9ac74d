/* forward_llama.c - the transformer layer loop shared by `llama` (LLaMA, SmolLM2,
 * R1-Distill-Llama; Mixtral when it has experts), `qwen2` (Qwen2/2.5, R1-Distill-Qwen: q/k/v
 * biases, NeoX rope), `qwen2moe` and `qwen3moe` (per-head q/k RMSNorm); the dense FFN and the
 * final projection. Written once against the porta_be_* wrappers; every backend runs it. */
#include <math.h>

#include "model.h"

#define TRY(expr)                                                                              \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_)                                                                               \
            return rc_;                                                                        \
    } while (0)

static struct porta_view V(struct porta_buf *b) { return (struct porta_view){ b, 0 }; }

/* y += bias (broadcast over n_tok rows) when the model has one */
static int add_bias(struct porta_backend *be, struct porta_view y, const struct porta_weight *b,
                    int n_tok)
{
    if (!b->buf)
        return 0;
    return porta_be_eltwise(be, PORTA_ELT_ADD, y, y, porta_wview(b), (int64_t)n_tok * b->n_cols,
                            b->n_cols, 0);
}

static int attention_block(struct porta_ctx *c, int il, int n_tok, const int32_t *pos,
                           const int32_t *seq)
{
    const struct porta_hparams *hp = &c->m->hp;
    const struct porta_layer *L = &c->m->layers[il];
    struct porta_backend *be = c->m->be;

    /* xb = rmsnorm(x) * attn_norm */
    TRY(porta_be_rmsnorm(be, V(c->xb), V(c->x), porta_wview(&L->attn_norm), n_tok, hp->n_embd,
                         hp->rms_eps));
    /* q, k, v projections (+ biases for qwen2) */
    TRY(porta_be_matmul(be, V(c->q), &L->wq, V(c->xb), n_tok));
    TRY(porta_be_matmul(be, V(c->k), &L->wk, V(c->xb), n_tok));
    TRY(porta_be_matmul(be, V(c->v), &L->wv, V(c->xb), n_tok));
    TRY(add_bias(be, V(c->q), &L->bq, n_tok));
    TRY(add_bias(be, V(c->k), &L->bk, n_tok));
    TRY(add_bias(be, V(c->v), &L->bv, n_tok));
    /* qwen3moe: RMSNorm of every q and k head */
    if (L->attn_q_norm.buf)
        TRY(porta_be_rmsnorm(be, V(c->q), V(c->q), porta_wview(&L->attn_q_norm),
                             n_tok * hp->n_head, hp->head_dim, hp->rms_eps));
    if (L->attn_k_norm.buf)
        TRY(porta_be_rmsnorm(be, V(c->k), V(c->k), porta_wview(&L->attn_k_norm),
                             n_tok * hp->n_head_kv, hp->head_dim, hp->rms_eps));
    /* rotary position embedding of q and k */
    TRY(porta_be_rope(be, V(c->q), n_tok, hp->n_head, hp->head_dim, pos, &hp->rope));
    TRY(porta_be_rope(be, V(c->k), n_tok, hp->n_head_kv, hp->head_dim, pos, &hp->rope));
    /* causal attention over the cache (k, v appended at pos) */
    struct porta_attn_params ap = {
        .n_tok = n_tok, .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
        .head_dim_k = hp->head_dim, .head_dim_v = hp->head_dim_v,
        .scale = 1.0f / sqrtf((float)hp->head_dim), .pos = pos, .seq = seq,
        .n_ctx = c->p.n_ctx, .n_seq = c->p.n_seq, .kv_type = c->p.kv_type,
        .k_cache = { c->k_cache, (size_t)(il - c->m->layer_from) * c->kv_layer_stride_k },
        .v_cache = { c->v_cache, (size_t)(il - c->m->layer_from) * c->kv_layer_stride_v },
    };
    TRY(porta_be_attention(be, V(c->att), V(c->q), V(c->k), V(c->v), &ap));
    /* x += wo @ att */
    TRY(porta_be_matmul(be, V(c->xb), &L->wo, V(c->att), n_tok));
    return porta_be_eltwise(be, PORTA_ELT_ADD, V(c->x), V(c->x), V(c->xb),
                            (int64_t)n_tok * hp->n_embd, (int64_t)n_tok * hp->n_embd, 0);
}

int porta_ffn_dense(struct porta_ctx *c, int il, int n_tok)
{
    const struct porta_hparams *hp = &c->m->hp;
    const struct porta_layer *L = &c->m->layers[il];
    struct porta_backend *be = c->m->be;
    int64_t nf = (int64_t)n_tok * hp->n_ff, ne = (int64_t)n_tok * hp->n_embd;

    /* xb = rmsnorm(x) * ffn_norm */
    TRY(porta_be_rmsnorm(be, V(c->xb), V(c->x), porta_wview(&L->ffn_norm), n_tok, hp->n_embd,
                         hp->rms_eps));
    /* SwiGLU: g = silu(W_gate xb) * (W_up xb) */
    TRY(porta_be_matmul(be, V(c->g), &L->w_gate, V(c->xb), n_tok));
    TRY(porta_be_matmul(be, V(c->u), &L->w_up, V(c->xb), n_tok));
    TRY(porta_be_eltwise(be, PORTA_ELT_SWIGLU, V(c->g), V(c->g), V(c->u), nf, nf, 0));
    /* x += W_down g */
    TRY(porta_be_matmul(be, V(c->xb), &L->w_down, V(c->g), n_tok));
    return porta_be_eltwise(be, PORTA_ELT_ADD, V(c->x), V(c->x), V(c->xb), ne, ne, 0);
}

int porta_forward_llama(struct porta_ctx *c, int n_tok, const int32_t *ids, const int32_t *pos,
                        const int32_t *seq, const int32_t *out_rows, int n_out)
{
    struct porta_backend *be = c->m->be;

    /* x = token embeddings (a model of later layers gets x from the one before it) */
    if (c->m->layer_from == 0)
        TRY(porta_be_embed(be, V(c->x), &c->m->tok_embd, ids, n_tok));
    for (int il = c->m->layer_from; il <= c->m->layer_to; il++) {
        TRY(attention_block(c, il, n_tok, pos, seq));
        TRY(c->m->layers[il].gate_inp.buf ? porta_ffn_moe(c, il, n_tok)
                                          : porta_ffn_dense(c, il, n_tok));
    }
    return porta_forward_output(c, out_rows, n_out);
}

int porta_forward_output(struct porta_ctx *c, const int32_t *out_rows, int n_out)
{
    const struct porta_hparams *hp = &c->m->hp;
    struct porta_backend *be = c->m->be;
    size_t row = (size_t)hp->n_embd * sizeof(float);
    if (n_out == 0 || c->m->layer_to != hp->n_layer - 1)   /* the last layers' model only */
        return 0;
    /* gather the rows whose logits are wanted into xb (in order), then norm + output matrix */
    for (int i = 0; i < n_out; i++)
        TRY(porta_be_eltwise(be, PORTA_ELT_COPY, porta_view_at(V(c->xb), (size_t)i * row),
                             porta_view_at(V(c->x), (size_t)out_rows[i] * row), V(NULL),
                             hp->n_embd, 1, 0));
    TRY(porta_be_rmsnorm(be, V(c->xb), V(c->xb), porta_wview(&c->m->out_norm), n_out, hp->n_embd,
                         hp->rms_eps));
    return porta_be_matmul(be, V(c->logits), &c->m->output, V(c->xb), n_out);
}
