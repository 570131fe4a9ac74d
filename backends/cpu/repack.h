/* repack.h - weight layouts for the CPU tile kernels. A matrix is stored as groups of
 * PORTA_GEMM_ROWS rows; within a group, block by block, every 64-byte chunk holds the same 4
 * bytes of each of the 16 rows, so that one 512-bit load (or two 256-bit ones) feeds a VNNI /
 * maddubs step for all 16 rows at once, and the 16 rows' scales sit side by side. A repacked
 * group has exactly the bytes of its 16 rows in the GGUF format, rearranged (a short last group
 * is padded with zero rows). The layouts (one block of a group; r = row, 0..15):
 *   Q4_0 (288 B): d[16] f16 | 4 nibble chunks: chunk c, row r = bytes 4c..4c+3 of the row's qs
 *   Q4_1 (320 B): d[16] | m[16] | 4 nibble chunks
 *   Q5_0 (352 B): d[16] | 1 high-bit chunk | 4 nibble chunks
 *   Q8_0 (544 B): d[16] | 8 chunks of signed bytes: chunk s, row r = qs[4s..4s+3]
 *   Q4_K (2304 B / 256): d[16] | dmin[16] | 3 chunks of the 12 scale bytes | 4 pairs x 8
 *        nibble chunks: pair p, chunk c, row r = qs[32p + 4c .. +3]
 *   Q6_K (3360 B / 256): d[16] | 4 chunks of the 16 int8 scales | 8 units of 32 elements, each
 *        2 high-bit chunks + 4 nibble chunks of the 6-bit values q (0..63)
 * A "nibble chunk" c of a 32-element unit holds, in byte j of row r, element 4c + j in the low
 * nibble and element 16 + 4c + j in the high nibble: step s (elements 4s..4s+3) is the low
 * nibbles of chunk s for s < 4 and the high nibbles of chunk s - 4 otherwise. A "high-bit
 * chunk" holds in byte j of row r the extra bits of element 4k + j at bit k (Q5_0: 1 bit,
 * k = 0..7) or at bits 2k, 2k+1 (Q6_K: 2 bits; the first chunk k = 0..3, the second 4..7). */
#ifndef PORTA_CPU_REPACK_H
#define PORTA_CPU_REPACK_H

#include "quant.h"

#define PORTA_GEMM_ROWS 16

/* True when `type` has a repacked layout (and so, in a SIMD table, a tile kernel). */
bool porta_repack_supported(enum porta_dtype type);
/* Bytes of one repacked group of n_cols columns: PORTA_GEMM_ROWS rows in the GGUF type. */
size_t porta_repack_group_bytes(enum porta_dtype type, int64_t n_cols);
/* Repacks rows [0, n_rows) (n_rows <= PORTA_GEMM_ROWS; the rest of the group is zero) of
 * `src` (row_bytes apart) into one group at dst. */
void porta_repack_group(enum porta_dtype type, void *dst, const void *src, size_t row_bytes,
                        int n_rows, int64_t n_cols);

/* Activations for the tile kernels. For the 32-block weight types a row is n_cols int8 values
 * (the Q8_0 / Q8_1 quantization of the reference) followed by one struct porta_act32 per block;
 * for the K types it is the Q8_K row itself. */
struct porta_act32 {
    float d;                        /* the block's scale (the f16 of Q8_0, as float) */
    int32_t corr;                   /* -c * sum(q) for weights stored as unsigned u = w + c */
    float s;                        /* Q8_1's s = d * sum(q) (rounded to f16), for Q4_1 */
};
/* Bytes of one activation row for weight type `type` (a multiple of 64). */
size_t porta_gemm_act_bytes(enum porta_dtype type, int64_t n_cols);

#endif /* PORTA_CPU_REPACK_H */
