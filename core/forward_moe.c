/* forward_moe.c - the mixture-of-experts FFN shared by every MoE architecture (Mixtral,
 * Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3): a router picks k experts per token, each runs a
 * SwiGLU FFN from its slice of the 3-D expert tensors, and their outputs are summed with the
 * routing weights; shared experts (always on) are added. Same recipe as the dense FFN, with
 * matmul_experts where the dense FFN has matmul. */
#include "model.h"

#define TRY(expr)                                                                              \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_)                                                                               \
            return rc_;                                                                        \
    } while (0)

static struct porta_view V(struct porta_buf *b) { return (struct porta_view){ b, 0 }; }

/* c->xb = the shared expert(s) of layer il applied to xb: a SwiGLU FFN, scaled per token by
 * sigmoid(gate_inp_shexp . xb) when the model has that gate (Qwen2-MoE) */
static int shared_experts(struct porta_ctx *c, const struct porta_layer *L, int n_tok)
{
    const struct porta_hparams *hp = &c->m->hp;
    struct porta_backend *be = c->m->be;
    int64_t nf = (int64_t)n_tok * hp->n_ff_shexp;

    TRY(porta_be_matmul(be, V(c->g), &L->gate_shexp, V(c->xb), n_tok));
    TRY(porta_be_matmul(be, V(c->u), &L->up_shexp, V(c->xb), n_tok));
    TRY(porta_be_eltwise(be, PORTA_ELT_SWIGLU, V(c->g), V(c->g), V(c->u), nf, nf, 0));
    if (!L->gate_inp_shexp.buf)
        return porta_be_matmul(be, V(c->xb), &L->down_shexp, V(c->g), n_tok);
    /* the gate is a route over one expert with sigmoid gating: weight = sigmoid(logit) */
    TRY(porta_be_matmul(be, V(c->sl), &L->gate_inp_shexp, V(c->xb), n_tok));
    struct porta_route_params rp = { .n_tok = n_tok, .n_expert = 1, .k = 1,
                                     .gating = PORTA_GATING_SIGMOID, .scale = 1.0f };
    TRY(porta_be_moe_route(be, V(c->sid), V(c->sw), V(c->sl), &rp));
    struct porta_experts_params ep = { .n_tok = n_tok, .k = 1, .ids = V(c->sid),
                                       .weights = V(c->sw) };
    return porta_be_matmul_experts(be, V(c->xb), &L->down_shexp, V(c->g), &ep);
}

int porta_ffn_moe(struct porta_ctx *c, int il, int n_tok)
{
    const struct porta_hparams *hp = &c->m->hp;
    const struct porta_layer *L = &c->m->layers[il];
    struct porta_backend *be = c->m->be;
    int k = hp->n_expert_used;
    int64_t ne = (int64_t)n_tok * hp->n_embd, nf = (int64_t)n_tok * k * hp->n_ff_exp;

    /* xb = rmsnorm(x) * ffn_norm */
    TRY(porta_be_rmsnorm(be, V(c->xb), V(c->x), porta_wview(&L->ffn_norm), n_tok, hp->n_embd,
                         hp->rms_eps));
    /* router: logits = W_gate_inp xb; ids, weights = the top k experts of each token */
    TRY(porta_be_matmul(be, V(c->rl), &L->gate_inp, V(c->xb), n_tok));
    struct porta_route_params rp = {
        .n_tok = n_tok, .n_expert = hp->n_expert, .k = k, .gating = hp->gating,
        .norm = hp->expert_norm, .scale = hp->expert_scale,
        .bias = { L->exp_probs_b.buf, L->exp_probs_b.off },
        .n_group = hp->n_group, .topk_group = hp->topk_group,
    };
    TRY(porta_be_moe_route(be, V(c->ids), V(c->rw), V(c->rl), &rp));
    /* each chosen expert's SwiGLU: eg[t][j] = silu(W_gate[e] xb[t]) * (W_up[e] xb[t]) */
    struct porta_experts_params ep = { .n_tok = n_tok, .k = k, .ids = V(c->ids) };
    TRY(porta_be_matmul_experts(be, V(c->eg), &L->gate_exps, V(c->xb), &ep));
    TRY(porta_be_matmul_experts(be, V(c->eu), &L->up_exps, V(c->xb), &ep));
    TRY(porta_be_eltwise(be, PORTA_ELT_SWIGLU, V(c->eg), V(c->eg), V(c->eu), nf, nf, 0));
    /* xo[t] = sum_j weight[t][j] * W_down[e] eg[t][j] */
    ep.x_per_slot = true;
    ep.weights = V(c->rw);
    TRY(porta_be_matmul_experts(be, V(c->xo), &L->down_exps, V(c->eg), &ep));
    /* xo += shared experts; x += xo */
    if (L->gate_shexp.buf) {
        TRY(shared_experts(c, L, n_tok));
        TRY(porta_be_eltwise(be, PORTA_ELT_ADD, V(c->xo), V(c->xo), V(c->xb), ne, ne, 0));
    }
    return porta_be_eltwise(be, PORTA_ELT_ADD, V(c->x), V(c->x), V(c->xo), ne, ne, 0);
}
