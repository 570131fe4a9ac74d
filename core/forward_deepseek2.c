/* forward_deepseek2.c - the `deepseek2` layer loop (DeepSeek-V2, V2-Lite, V3, R1): multi-head
 * latent attention, then a dense FFN in the leading layers and the MoE FFN after them.
 * MLA caches one compressed row per position, [normed latent (kv_lora_rank) | roped shared key
 * part (n_rope)], instead of n_head expanded keys and values. The key up-projection is absorbed
 * into the query (q_lat = W_uk^T q_nope per head), so scores are taken against the latent
 * directly, and the value up-projection is applied once per head to the attended latent. */
#include "model.h"

#define TRY(expr)                                                                              \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_)                                                                               \
            return rc_;                                                                        \
    } while (0)

static struct porta_view V(struct porta_buf *b) { return (struct porta_view){ b, 0 }; }

static int mla_block(struct porta_ctx *c, int il, int n_tok, const int32_t *pos,
                     const int32_t *seq)
{
    const struct porta_hparams *hp = &c->m->hp;
    const struct porta_layer *L = &c->m->layers[il];
    struct porta_backend *be = c->m->be;
    int H = hp->n_head, lat = hp->kv_lora_rank;
    int64_t ne = (int64_t)n_tok * hp->n_embd;

    /* xb = rmsnorm(x) * attn_norm */
    TRY(porta_be_rmsnorm(be, V(c->xb), V(c->x), porta_wview(&L->attn_norm), n_tok, hp->n_embd,
                         hp->rms_eps));
    /* the query's input: xb, or its normed low-rank compression (V3: q_lora_rank) */
    struct porta_view qin = V(c->xb);
    if (hp->q_lora_rank) {
        TRY(porta_be_matmul(be, V(c->qa), &L->wq_a, V(c->xb), n_tok));
        TRY(porta_be_rmsnorm(be, V(c->qa), V(c->qa), porta_wview(&L->q_a_norm), n_tok,
                             hp->q_lora_rank, hp->rms_eps));
        qin = V(c->qa);
    }
    /* per head (slot j = head j): qn = no-rope part, qr = rope part of the query */
    struct porta_experts_params per_head = { .n_tok = n_tok, .k = H };
    TRY(porta_be_matmul_experts(be, V(c->qn), &L->wq_nope, qin, &per_head));
    TRY(porta_be_matmul_experts(be, V(c->qr), &L->wq_rope, qin, &per_head));
    TRY(porta_be_rope(be, V(c->qr), n_tok, H, hp->n_rope, pos, &hp->rope));
    /* absorb the key up-projection: ql[h] = W_uk[h]^T qn[h], a query against the latent */
    per_head.x_per_slot = true;
    TRY(porta_be_matmul_experts(be, V(c->ql), &L->wk_b, V(c->qn), &per_head));
    /* this chunk's compressed rows: kl = rmsnorm(W_kv_a xb), kr = rope(W_k_rope xb) */
    TRY(porta_be_matmul(be, V(c->kl), &L->wkv_lat, V(c->xb), n_tok));
    TRY(porta_be_rmsnorm(be, V(c->kl), V(c->kl), porta_wview(&L->kv_a_norm), n_tok, lat,
                         hp->rms_eps));
    TRY(porta_be_matmul(be, V(c->kr), &L->wk_rope, V(c->xb), n_tok));
    TRY(porta_be_rope(be, V(c->kr), n_tok, 1, hp->n_rope, pos, &hp->rope));
    /* causal attention over the latent cache (rows appended at pos): ol[h] = sum p_j lat_j */
    struct porta_attn_params ap = {
        .n_tok = n_tok, .n_head = H, .n_head_kv = 1, .head_dim_k = lat + hp->n_rope,
        .head_dim_v = lat, .scale = hp->kq_scale, .pos = pos, .seq = seq, .n_ctx = c->p.n_ctx,
        .n_seq = c->p.n_seq, .kv_type = c->p.kv_type,
        .k_cache = { c->k_cache, (size_t)(il - c->m->layer_from) * c->kv_layer_stride_k },
    };
    TRY(porta_be_attention_mla(be, V(c->ol), V(c->ql), V(c->qr), V(c->kl), V(c->kr), &ap));
    /* values per head: att[h] = W_uv[h] ol[h]; x += W_o att */
    TRY(porta_be_matmul_experts(be, V(c->att), &L->wv_b, V(c->ol), &per_head));
    TRY(porta_be_matmul(be, V(c->xb), &L->wo, V(c->att), n_tok));
    return porta_be_eltwise(be, PORTA_ELT_ADD, V(c->x), V(c->x), V(c->xb), ne, ne, 0);
}

int porta_forward_deepseek2(struct porta_ctx *c, int n_tok, const int32_t *ids,
                            const int32_t *pos, const int32_t *seq, const int32_t *out_rows,
                            int n_out)
{
    struct porta_backend *be = c->m->be;

    /* x = token embeddings (a model of later layers gets x from the one before it) */
    if (c->m->layer_from == 0)
        TRY(porta_be_embed(be, V(c->x), &c->m->tok_embd, ids, n_tok));
    for (int il = c->m->layer_from; il <= c->m->layer_to; il++) {
        TRY(mla_block(c, il, n_tok, pos, seq));
        TRY(c->m->layers[il].gate_inp.buf ? porta_ffn_moe(c, il, n_tok)
                                          : porta_ffn_dense(c, il, n_tok));
    }
    return porta_forward_output(c, out_rows, n_out);
}
