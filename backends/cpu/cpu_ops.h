/* cpu_ops.h - what the op files beside cpu.c (moe.c, mla.c) share with it: two accessors into
 * an open CPU backend (its kernel table and thread pool, host pointers into its buffers) and
 * the op entry points that cpu.c's vtable lists. */
#ifndef PORTA_CPU_OPS_H
#define PORTA_CPU_OPS_H

#include "backend.h"
#include "kernels.h"
#include "threads.h"

/* The kernel table (complete: no NULL entry for a supported type) and the pool of an open
 * CPU backend. Defined in cpu.c. */
void porta_cpu_parts(struct porta_backend *be, const struct porta_cpu_kernels **k,
                     struct porta_pool **pool);
/* Host address of a view into a CPU buffer. Defined in cpu.c. */
uint8_t *porta_cpu_ptr(struct porta_view v);
/* The repacked copy (repack.h) of the one-matrix weight w for the tile kernels, made on first
 * use (on the pool: call it outside a task) and kept with the dense matrices' packs until w's
 * buffer is freed or written; NULL when repacking is off (PORTA_CPU_REPACK=0), the kernel set
 * has no tile kernel for the type, or memory is short (the caller multiplies row by row).
 * *group_bytes: bytes of one 16-row group. Defined in cpu.c. */
const uint8_t *porta_cpu_pack(struct porta_backend *be, const struct porta_weight *w,
                              size_t *group_bytes);

/* moe.c */
int porta_cpu_moe_route(struct porta_backend *be, struct porta_view ids, struct porta_view weights,
                        struct porta_view logits, const struct porta_route_params *p);
int porta_cpu_matmul_experts(struct porta_backend *be, struct porta_view y,
                             const struct porta_weight *w, struct porta_view x,
                             const struct porta_experts_params *p);
/* mla.c */
int porta_cpu_attention_mla(struct porta_backend *be, struct porta_view out,
                            struct porta_view q_lat, struct porta_view q_rope,
                            struct porta_view kv_lat, struct porta_view k_rope,
                            const struct porta_attn_params *p);

#endif /* PORTA_CPU_OPS_H */
