/* model.h - a loaded model: hyperparameters from GGUF metadata, the tensor table mapped to
 * backend weights, and the inference context (KV cache + activation buffers) that the
 * per-architecture forward passes (forward_*.c) run in. */
#ifndef PORTA_MODEL_H
#define PORTA_MODEL_H

#include "backend.h"
#include "gguf.h"

enum porta_arch {
    PORTA_ARCH_LLAMA,               /* llama (with llama.expert_count: Mixtral) */
    PORTA_ARCH_QWEN2,
    PORTA_ARCH_QWEN2MOE,            /* Qwen1.5/Qwen2-MoE */
    PORTA_ARCH_QWEN3MOE,            /* Qwen3-MoE */
    PORTA_ARCH_DEEPSEEK2,           /* DeepSeek-V2/V2-Lite/V3/R1: MLA + MoE */
};

struct porta_hparams {
    char arch_name[32];
    enum porta_arch arch;
    int n_vocab;
    int n_embd;
    int n_layer;
    int n_head, n_head_kv;
    int head_dim;                   /* key length per head */
    int head_dim_v;                 /* value length per head */
    int n_ff;
    int n_ctx_train;
    float rms_eps;
    struct porta_rope_params rope;  /* freq_factors points into the model when present */
    /* mixture of experts (n_expert 0: dense) */
    int n_expert, n_expert_used;
    int n_ff_exp;                   /* per routed expert */
    int n_ff_shexp;                 /* shared expert(s) together; 0: none */
    int n_layer_dense_lead;         /* leading layers with a dense FFN (deepseek2) */
    enum porta_gating gating;
    bool expert_norm;               /* renormalise the top-k weights */
    float expert_scale;             /* routed scaling factor */
    int n_group, topk_group;        /* group-limited routing (0: off) */
    /* multi-head latent attention (deepseek2): head_dim = n_nope + n_rope, head_dim_v */
    int q_lora_rank;                /* 0: no q compression (V2-Lite: attn_q) */
    int kv_lora_rank;               /* n_lat: the cached latent per token */
    int n_rope, n_nope;
    float kq_scale;                 /* attention softmax scale (YaRN mscale^2 / sqrt(head_dim)) */
};

/* One GGUF tensor on the model's backend. 1-D tensors (norms, biases) are F32 weights with
 * n_rows 1; view() gives their position for ops that take a view. */
struct porta_layer {
    struct porta_weight attn_norm;  /* [n_embd] */
    struct porta_weight wq, wk, wv; /* [n_head*head_dim, n_embd], [n_head_kv*head_dim, n_embd] */
    struct porta_weight bq, bk, bv; /* qwen2 biases; type F32, buf NULL when absent */
    struct porta_weight wo;         /* [n_embd, n_head*head_dim_v] */
    struct porta_weight ffn_norm;   /* [n_embd] */
    struct porta_weight w_gate, w_up; /* [n_ff, n_embd] */
    struct porta_weight w_down;     /* [n_embd, n_ff] */
    /* qwen3moe: per-head RMSNorm of q and k before rope, [head_dim] each */
    struct porta_weight attn_q_norm, attn_k_norm;
    /* MoE FFN (gate_inp.buf NULL: a dense layer) */
    struct porta_weight gate_inp;   /* router [n_expert, n_embd] */
    struct porta_weight exp_probs_b; /* [n_expert] score-correction bias, or none */
    struct porta_weight gate_exps, up_exps; /* n_expert x [n_ff_exp, n_embd] */
    struct porta_weight down_exps;  /* n_expert x [n_embd, n_ff_exp] */
    struct porta_weight gate_shexp, up_shexp; /* [n_ff_shexp, n_embd], or none */
    struct porta_weight down_shexp; /* [n_embd, n_ff_shexp] */
    struct porta_weight gate_inp_shexp; /* qwen2moe: [1, n_embd], the shared expert's gate */
    /* MLA (deepseek2). The q and kv_a matrices are split by views (no copies) into the parts
     * the latent attention needs. */
    struct porta_weight wq_a, q_a_norm; /* [q_lora, n_embd], [q_lora] (q_lora_rank > 0) */
    struct porta_weight wq_nope;    /* n_head x [n_nope, q_in]: views of attn_q / attn_q_b */
    struct porta_weight wq_rope;    /* n_head x [n_rope, q_in] */
    struct porta_weight wkv_lat;    /* [kv_lora, n_embd]: rows 0.. of attn_kv_a_mqa */
    struct porta_weight wk_rope;    /* [n_rope, n_embd]: rows kv_lora.. of attn_kv_a_mqa */
    struct porta_weight kv_a_norm;  /* [kv_lora] */
    struct porta_weight wk_b;       /* n_head x [kv_lora, n_nope]: absorbs the key up-projection
                                       into q (attn_k_b, or transposed from attn_kv_b) */
    struct porta_weight wv_b;       /* n_head x [head_dim_v, kv_lora] (attn_v_b, or a view) */
};

struct porta_model {
    struct porta_gguf *gguf;
    struct porta_hparams hp;
    struct porta_backend *be;       /* not owned */
    struct porta_buf **wbufs;       /* the GGUF data section on the backend: one buffer, or
                                       chunks of whole tensors when it exceeds be->max_buf */
    uint64_t *wbuf_start;           /* data-section offset of each chunk's first byte */
    int n_wbufs;
    struct porta_weight tok_embd;   /* [n_vocab, n_embd] */
    struct porta_weight out_norm;   /* [n_embd] */
    struct porta_weight output;     /* [n_vocab, n_embd]; tok_embd when tied */
    struct porta_layer *layers;     /* n_layer; only [layer_from, layer_to] are bound */
    int layer_from, layer_to;       /* the layers this model runs (per-layer placement: a model
                                       per backend); the embedding with layer 0, the output
                                       norm and matrix with the last layer */
    float *rope_freqs;              /* host copy of rope_freqs.weight, or NULL */
    struct porta_buf *derived;      /* weights made at load time (MLA wk_b from attn_kv_b) */
    size_t weight_bytes;            /* bytes of the matrices one decoded token reads (MoE: the
                                       n_expert_used active experts of each layer) */
};

/* Loads a GGUF model onto `be` (weights zero-copy on the CPU, uploaded elsewhere).
 * Returns 0, or PORTA_E_IO / PORTA_E_FORMAT / PORTA_E_UNSUPPORTED (unknown architecture or
 * tensor type, logged with the tensor name) / PORTA_E_NOMEM / a backend error. */
int porta_model_load(const char *path, struct porta_backend *be, struct porta_model **out);
/* Same over an already opened GGUF, which the model then owns (closed by destroy). */
int porta_model_load_gguf(struct porta_gguf *g, struct porta_backend *be, struct porta_model **out);
/* Layers [from, to] only (per-layer placement): only their tensors, plus the token embedding
 * when from is 0 and the output norm and matrix when to is the last layer, go to `be`.
 * from > to or to past the last layer is PORTA_E_INVAL. */
int porta_model_load_range(const char *path, struct porta_backend *be, int from, int to,
                           struct porta_model **out);
void porta_model_destroy(struct porta_model *m);                    /* NULL ok */

/* Reads the hyperparameters of g; validates ranges. Used by the loader and `porta info`. */
int porta_hparams_read(const struct porta_gguf *g, struct porta_hparams *hp);

static inline struct porta_view porta_wview(const struct porta_weight *w)
{
    return (struct porta_view){ w->buf, w->off };
}

/* ---- inference context ---- */
struct porta_ctx_params {
    int n_ctx;                      /* KV cache positions per sequence */
    int n_seq;                      /* parallel sequences (server slots) */
    int n_batch;                    /* max tokens per forward call */
    enum porta_dtype kv_type;       /* PORTA_F16 (default) or PORTA_F32 */
};

struct porta_ctx {
    struct porta_model *m;
    struct porta_ctx_params p;
    struct porta_buf *k_cache, *v_cache; /* one buffer each, all layers */
    size_t kv_layer_stride_k, kv_layer_stride_v; /* bytes per layer */
    /* activations, [n_batch][dim] each */
    struct porta_buf *x, *xb, *q, *k, *v, *att, *g, *u, *logits;
    /* MoE: router logits, chosen ids/weights, expert activations, the routed sum; the
     * shared-expert gate (qwen2moe) as a one-expert route */
    struct porta_buf *rl, *ids, *rw, *eg, *eu, *xo, *sl, *sid, *sw;
    /* MLA: q_a, q no-rope/rope parts, absorbed q, latent + rope of the new tokens, output */
    struct porta_buf *qa, *qn, *qr, *ql, *kl, *kr, *ol;
    int32_t *n_past;                /* per sequence: positions filled (bookkeeping for callers) */
    /* per-layer placement: the context of the model that runs the following layers (on its
     * own backend); porta_forward hands it the hidden state through host memory. Not owned. */
    struct porta_ctx *next;
    float *xfer;                    /* host staging for the hidden state, [n_batch][n_embd] */
};

struct porta_batch {
    int n_tok;
    const int32_t *ids;
    const int32_t *pos;             /* NULL: n_past[seq] + i */
    const int32_t *seq;             /* NULL: all sequence 0 */
    const bool *logits;             /* per token: compute its logits? NULL: only the last */
};

int porta_ctx_create(struct porta_model *m, const struct porta_ctx_params *p,
                     struct porta_ctx **out);
void porta_ctx_destroy(struct porta_ctx *c);                        /* NULL ok */
/* Chains `next` (a context over the layers right after c's, any backend, same n_ctx, n_seq,
 * n_batch and kv_type) after c: porta_forward(c, ...) then runs both. c keeps the positions.
 * Returns 0 or PORTA_E_INVAL (layers not adjacent, other parameters, a different model file). */
int porta_ctx_link(struct porta_ctx *c, struct porta_ctx *next);
/* Copies the first n positions of sequence src's K/V to sequence dst, in every layer (of the
 * linked contexts too), through host memory: *tmp (*cap bytes) is the caller's scratch, grown
 * with realloc. Returns 0, PORTA_E_RANGE (a sequence or n out of range) or an error. */
int porta_ctx_kv_copy(struct porta_ctx *c, int dst, int src, int n, void **tmp, size_t *cap);
/* Forgets sequence s (or all with s < 0): positions restart at 0. */
void porta_ctx_reset(struct porta_ctx *c, int s);

/* Runs a batch (split into n_batch chunks as needed) and writes the logits of the tokens whose
 * flag is set, in token order, to logits_out ([n_flagged][n_vocab] floats, host). Updates
 * n_past. Returns 0 or an error (bad id/position: PORTA_E_RANGE, backend errors). */
int porta_forward(struct porta_ctx *c, const struct porta_batch *b, float *logits_out);

/* The per-architecture layer loops (forward_*.c): one chunk of <= n_batch tokens, hidden
 * state of the flagged rows normalized and projected into c->logits. */
int porta_forward_llama(struct porta_ctx *c, int n_tok, const int32_t *ids, const int32_t *pos,
                        const int32_t *seq, const int32_t *out_rows, int n_out);
int porta_forward_deepseek2(struct porta_ctx *c, int n_tok, const int32_t *ids,
                            const int32_t *pos, const int32_t *seq, const int32_t *out_rows,
                            int n_out);
/* Pieces the layer loops share: x += FFN(rmsnorm(x)) of layer il, dense SwiGLU (forward_llama.c)
 * or mixture of experts (forward_moe.c), and the final norm + output matrix of the rows
 * out_rows into c->logits (forward_llama.c). 0 or a backend error. */
int porta_ffn_dense(struct porta_ctx *c, int il, int n_tok);
int porta_ffn_moe(struct porta_ctx *c, int il, int n_tok);
int porta_forward_output(struct porta_ctx *c, const int32_t *out_rows, int n_out);

#endif /* PORTA_MODEL_H */
