/* amx.h - AMX int8 tile GEMM for the AVX-512 kernel set's prefill: the same 16-row repacked
 * groups and activation rows as the VNNI tile kernels (repack.h), one TDPB* per 32 (Q6_K: 16)
 * weights of 16 rows x up to 16 tokens, the per-block scales applied in float. */
#ifndef PORTA_CPU_AMX_H
#define PORTA_CPU_AMX_H

#include "quant.h"

/* True when the CPU has AMX-TILE and AMX-INT8, the OS enables the tile state and has granted
 * this process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, asked once). False when AMX is
 * not compiled in (non-x86, or a compiler without -mamx-int8). */
bool porta_amx_supported(void);

/* Switches the AMX path on or off for the whole process (every CPU backend using the AVX-512
 * set); on takes effect only where porta_amx_supported(). Returns whether it is on now. */
bool porta_amx_use(bool on);

/* Whether the AMX path is on (porta_amx_use). */
bool porta_amx_active(void);

/* The AVX-512 set's tile kernel for `type` (porta_gemm_fn, kernels.h) through AMX, for the
 * first tokens of the call: returns how many tokens it computed (y rows 0 .. that - 1), 0 when
 * AMX is off, the type has no AMX kernel (Q4_0, Q8_0, Q4_K and Q6_K have) or there are too few
 * tokens for AMX to win. The caller's VNNI kernel does the rest. act: rows of the AVX-512
 * set's gemm_act for the same type. */
int porta_amx_gemm(enum porta_dtype type, int64_t n_cols, const void *group, const void *act,
                   size_t act_stride, int n_tok, float *y, size_t y_stride, int n_rows);

#endif /* PORTA_CPU_AMX_H */
