/* synth.h - random-weight GGUF models of real shapes, for speed work: the tensor names, shapes,
 * metadata and per-tensor types (llama.cpp's quantization mixes) of a real model, weights drawn
 * from a seeded generator and quantized with porta's reference quantizers (core/quant.c), plus a
 * minimal byte-level tokenizer so every porta command loads the file. */
#ifndef PORTA_SYNTH_H
#define PORTA_SYNTH_H

#include "porta.h"

struct porta_synth_shape {
    const char *name;               /* "r1-distill-qwen-1.5b" */
    const char *arch;               /* "qwen2" (q/k/v biases, NeoX rope) | "llama" | "qwen2moe"
                                       | "deepseek2" */
    int n_embd, n_layer, n_head, n_head_kv;
    int n_ff;                       /* dense FFN (qwen2moe: feed_forward_length, unused by the
                                       layers; deepseek2: the leading dense layers) */
    int n_vocab;
    bool tied;                      /* no output.weight: token_embd is the output matrix */
    float rope_base, rms_eps;
    int n_ctx_train;
    /* mixture of experts (n_expert 0: dense). Routing is softmax over the experts, top-k
     * weights not renormalised, scale 1 (Qwen1.5-MoE, DeepSeek-V2) */
    int n_expert, n_expert_used;
    int n_ff_exp;                   /* per routed expert */
    int n_ff_shexp;                 /* the shared expert(s) together; 0: none. qwen2moe: one,
                                       scaled by a sigmoid gate; deepseek2: n_expert_shared of
                                       n_ff_exp each, stacked */
    int n_expert_shared;            /* deepseek2 */
    int n_layer_dense_lead;         /* deepseek2: leading layers with the dense FFN */
    /* multi-head latent attention (deepseek2): head = n_nope + n_rope, value head_dim_v */
    int q_lora_rank;                /* 0: plain attn_q (V2-Lite) */
    int kv_lora_rank, n_nope, n_rope, head_dim_v;
    /* YaRN rope scaling (factor 0: none): factor, original context, log multiplier
     * (0.1 * mscale_all_dim) */
    float yarn_factor;
    int yarn_orig_ctx;
    float yarn_log_mul;
};

/* A file type: every matrix in one type, or one of llama.cpp's mixes. */
enum porta_synth_ftype {
    PORTA_SYNTH_F32, PORTA_SYNTH_F16, PORTA_SYNTH_BF16, PORTA_SYNTH_Q8_0, PORTA_SYNTH_Q4_0,
    PORTA_SYNTH_Q4_1, PORTA_SYNTH_Q5_0, PORTA_SYNTH_Q4_K_M, PORTA_SYNTH_Q4_K, PORTA_SYNTH_Q6_K,
    PORTA_SYNTH_FTYPE_COUNT
};

struct porta_synth_opts {
    uint64_t seed;
    /* > 0: quantize this many random rows per tensor and repeat them (pseudo-randomly chosen
     * per row) over the tensor: the same bytes per token and the same speed as independent
     * rows, at a fraction of the quantizing time (Q4_K's reference quantizer runs ~75 ns per
     * weight). 0: every row independent. */
    int pool_rows;
    int threads;                    /* quantizing threads; <= 0: one per core */
    int n_layer;                    /* > 0: override the shape's layer count (tests) */
    /* optional progress callback, frac in [0, 1] */
    void (*progress)(void *user, double frac);
    void *user;
};

/* The built-in shapes; *n receives their count. */
const struct porta_synth_shape *porta_synth_shapes(int *n);
/* A built-in shape by name, or NULL. */
const struct porta_synth_shape *porta_synth_shape_find(const char *name);

/* "F16", "Q4_K_M", ... (case-insensitive) -> file type. 0 or PORTA_E_INVAL (logged with the
 * accepted names). */
int porta_synth_ftype_parse(const char *name, enum porta_synth_ftype *out);
const char *porta_synth_ftype_name(enum porta_synth_ftype ft);

/* The type the mix gives a 2-D tensor or 3-D expert stack: `role` is the GGUF tensor name
 * without "blk.N." and ".weight" ("token_embd", "output", "attn_q", "attn_k", "attn_v",
 * "attn_output", "ffn_gate", "ffn_up", "ffn_down", the MoE roles "ffn_gate_inp",
 * "ffn_{gate,up,down}_exps", "ffn_{gate,up,down}_shexp", the MLA roles "attn_q_a", "attn_q_b",
 * "attn_kv_a_mqa", "attn_kv_b"), il its layer, n_cols its row length. As llama.cpp's
 * llama-quantize: the router (ffn_gate_inp) stays F32; the output matrix (token_embd when tied)
 * Q6_K except in Q8_0/F16/pure files; in Q4_K_M the attn_v-like tensors (attn_v, attn_kv_b) and
 * every ffn_down* (dense, experts, shared) Q6_K in the layers use_more_bits() picks (the first
 * and last eighth, and every third between: half of them), Q4_K elsewhere; a K type whose rows
 * are not a multiple of 256 falls back to Q5_0 (for Q4_K) or Q8_0 (for Q6_K). */
enum porta_dtype porta_synth_tensor_type(const struct porta_synth_shape *s,
                                         enum porta_synth_ftype ft, const char *role, int il,
                                         int64_t n_cols);

/* Writes the model to `path`, streaming one tensor at a time (a 7B F16 file never sits in
 * memory). Returns 0, PORTA_E_INVAL (bad shape: dims not multiples of the block sizes the types
 * need, heads not dividing n_embd), PORTA_E_IO (logged with the path) or PORTA_E_NOMEM. A failed
 * write leaves no partial file. */
int porta_synth_write(const char *path, const struct porta_synth_shape *s,
                      enum porta_synth_ftype ft, const struct porta_synth_opts *opts);

#endif /* PORTA_SYNTH_H */
