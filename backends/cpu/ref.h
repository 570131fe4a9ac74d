/* ref.h - the scalar reference of every backend op, on host pointers. Always built; the CPU
 * backend runs it when kernels = "scalar", and tests/test_backend_ops.c compares every backend
 * with it. Plain loops, no threads, written to be read. */
#ifndef PORTA_CPU_REF_H
#define PORTA_CPU_REF_H

#include "backend.h"
#include "rope.h"

/* y[t][r] = dot(W[r], x[t]) with x quantized to the weight type's vec_dot_type, as the
 * integer kernels do. w points at row 0. Returns PORTA_E_NOMEM or 0. */
int porta_ref_matmul(float *y, const void *w, enum porta_dtype type, int64_t n_rows,
                     int64_t n_cols, size_t row_bytes, const float *x, int n_tok);
/* w may be NULL (no scale). */
void porta_ref_rmsnorm(float *y, const float *x, const float *w, int n_rows, int n, float eps);
void porta_ref_rope(float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
                    const struct porta_rope_params *p);
/* k_cache/v_cache: host memory in p->kv_type, layout as in struct porta_attn_params.
 * Returns 0 or PORTA_E_NOMEM. */
int porta_ref_attention(float *out, const float *q, const float *k, const float *v,
                         void *k_cache, void *v_cache, const struct porta_attn_params *p);
void porta_ref_eltwise(enum porta_elt op, float *y, const float *a, const float *b, int64_t n,
                       int64_t nb, float s);
/* Stores n floats of src at element idx of a KV cache of type kv (PORTA_F16 or PORTA_F32). */
void porta_ref_kv_store(void *cache, enum porta_dtype kv, size_t idx, const float *src, int n);
/* y[t] = row ids[t] of w, dequantized. */
void porta_ref_embed(float *y, const void *w, enum porta_dtype type, int64_t n_cols,
                     size_t row_bytes, const int32_t *ids, int n_tok);

/* ---- mixture of experts, MLA (see struct porta_route_params / porta_experts_params and the
 * attention_mla entry in backend.h for the definitions) ---- */

/* Routes one token: ids/weights [p->k] from logits [p->n_expert]; bias: host [n_expert] or
 * NULL (p->bias is ignored); scratch: 3 * n_expert floats. */
void porta_ref_route_token(int32_t *ids, float *weights, const float *logits, const float *bias,
                           const struct porta_route_params *p, float *scratch);
/* All p->n_tok tokens; logits [n_tok][n_expert]. Returns 0 or PORTA_E_NOMEM. */
int porta_ref_moe_route(int32_t *ids, float *weights, const float *logits, const float *bias,
                        const struct porta_route_params *p);
/* w: host pointer at matrix 0 of the stack that wt describes (wt->buf and wt->off are not
 * used); ids NULL: slot j uses matrix j; weights NULL: y is [n_tok][k][n_rows], no sum.
 * Returns 0 or PORTA_E_NOMEM. */
int porta_ref_matmul_experts(float *y, const void *w, const struct porta_weight *wt,
                             const float *x, const int32_t *ids, const float *weights, int n_tok,
                             int k, bool x_per_slot);
/* cache: host memory in p->kv_type, layout as the attention_mla entry says. 0 or NOMEM. */
int porta_ref_attention_mla(float *out, const float *q_lat, const float *q_rope,
                            const float *kv_lat, const float *k_rope, void *cache,
                            const struct porta_attn_params *p);

#endif /* PORTA_CPU_REF_H */
