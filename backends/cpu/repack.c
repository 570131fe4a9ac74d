/* repack.c - GGUF rows -> the 16-row group layouts of the tile kernels (see repack.h). Plain
 * C, run once per matrix (when the CPU backend first multiplies by it); the bytes are only
 * moved, never re-quantized, so the tile kernels compute exactly what vec_dot computes. */
#include "repack.h"

#include <string.h>

#define G PORTA_GEMM_ROWS

bool porta_repack_supported(enum porta_dtype type)
{
    switch (type) {
    case PORTA_Q4_0: case PORTA_Q4_1: case PORTA_Q5_0: case PORTA_Q8_0: case PORTA_Q4_K:
    case PORTA_Q6_K:
        return true;
    default:
        return false;
    }
}

size_t porta_repack_group_bytes(enum porta_dtype type, int64_t n_cols)
{
    return G * porta_row_size(type, n_cols);
}

size_t porta_gemm_act_bytes(enum porta_dtype type, int64_t n_cols)
{
    size_t n;
    if (type == PORTA_Q4_K || type == PORTA_Q6_K)
        n = porta_row_size(PORTA_Q8_K, n_cols);
    else
        n = (size_t)n_cols + (size_t)(n_cols / 32) * sizeof(struct porta_act32);
    return (n + 63) & ~(size_t)63;
}

/* 4 bytes of row r into chunk `chunk` (64 bytes: 4 per row) starting at base */
static void put4(uint8_t *base, int chunk, int r, const void *src)
{
    memcpy(base + 64 * chunk + 4 * r, src, 4);
}

static void group_q4_0(uint8_t *dst, const uint8_t *src, size_t rb, int n, int nb)
{
    for (int b = 0; b < nb; b++, dst += 288)
        for (int r = 0; r < n; r++) {
            const struct porta_block_q4_0 *x = (const void *)(src + r * rb);
            memcpy(dst + 2 * r, &x[b].d, 2);
            for (int c = 0; c < 4; c++)
                put4(dst + 32, c, r, x[b].qs + 4 * c);
        }
}

static void group_q4_1(uint8_t *dst, const uint8_t *src, size_t rb, int n, int nb)
{
    for (int b = 0; b < nb; b++, dst += 320)
        for (int r = 0; r < n; r++) {
            const struct porta_block_q4_1 *x = (const void *)(src + r * rb);
            memcpy(dst + 2 * r, &x[b].d, 2);
            memcpy(dst + 32 + 2 * r, &x[b].m, 2);
            for (int c = 0; c < 4; c++)
                put4(dst + 64, c, r, x[b].qs + 4 * c);
        }
}

static void group_q5_0(uint8_t *dst, const uint8_t *src, size_t rb, int n, int nb)
{
    for (int b = 0; b < nb; b++, dst += 352)
        for (int r = 0; r < n; r++) {
            const struct porta_block_q5_0 *x = (const void *)(src + r * rb);
            uint32_t qh, hb = 0;
            memcpy(&qh, x[b].qh, 4);
            /* byte j, bit k: the fifth bit of element 4k + j */
            for (int k = 0; k < 8; k++)
                for (int j = 0; j < 4; j++)
                    hb |= ((qh >> (4 * k + j)) & 1u) << (8 * j + k);
            memcpy(dst + 2 * r, &x[b].d, 2);
            put4(dst + 32, 0, r, &hb);
            for (int c = 0; c < 4; c++)
                put4(dst + 96, c, r, x[b].qs + 4 * c);
        }
}

static void group_q8_0(uint8_t *dst, const uint8_t *src, size_t rb, int n, int nb)
{
    for (int b = 0; b < nb; b++, dst += 544)
        for (int r = 0; r < n; r++) {
            const struct porta_block_q8_0 *x = (const void *)(src + r * rb);
            memcpy(dst + 2 * r, &x[b].d, 2);
            for (int s = 0; s < 8; s++)
                put4(dst + 32, s, r, x[b].qs + 4 * s);
        }
}

static void group_q4_K(uint8_t *dst, const uint8_t *src, size_t rb, int n, int nb)
{
    for (int b = 0; b < nb; b++, dst += 2304)
        for (int r = 0; r < n; r++) {
            const struct porta_block_q4_K *x = (const void *)(src + r * rb);
            memcpy(dst + 2 * r, &x[b].d, 2);
            memcpy(dst + 32 + 2 * r, &x[b].dmin, 2);
            for (int k = 0; k < 3; k++)
                put4(dst + 64, k, r, x[b].scales + 4 * k);
            for (int c = 0; c < 32; c++)
                put4(dst + 256, c, r, x[b].qs + 4 * c);
        }
}

/* Q6_K's 6-bit values (0..63), as core/quant.c's q6_k_unpack reads them (before its - 32):
 * element 128h + 32c + l has its low 4 bits in ql[64h + l + 32 * (c & 1)] (low nibble for c < 2)
 * and its top 2 bits at bits 2c of qh[32h + l] */
static void q6_values(const struct porta_block_q6_K *x, uint8_t q[256])
{
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            uint8_t b0 = x->ql[64 * h + l], b1 = x->ql[64 * h + 32 + l], hb = x->qh[32 * h + l];
            uint8_t *o = q + 128 * h + l;
            o[0] = (uint8_t)((b0 & 15) | (hb & 3) << 4);
            o[32] = (uint8_t)((b1 & 15) | ((hb >> 2) & 3) << 4);
            o[64] = (uint8_t)((b0 >> 4) | ((hb >> 4) & 3) << 4);
            o[96] = (uint8_t)((b1 >> 4) | ((hb >> 6) & 3) << 4);
        }
}

static void group_q6_K(uint8_t *dst, const uint8_t *src, size_t rb, int n, int nb)
{
    uint8_t q[256];
    for (int b = 0; b < nb; b++, dst += 3360)
        for (int r = 0; r < n; r++) {
            const struct porta_block_q6_K *x = (const struct porta_block_q6_K *)(src + r * rb) + b;
            q6_values(x, q);
            memcpy(dst + 2 * r, &x->d, 2);
            for (int k = 0; k < 4; k++)
                put4(dst + 32, k, r, x->scales + 4 * k);
            for (int u = 0; u < 8; u++) {
                const uint8_t *qu = q + 32 * u;
                uint8_t *unit = dst + 288 + 384 * u, hb[2][4] = { { 0 } }, nib[4][4];
                for (int s = 0; s < 8; s++)
                    for (int j = 0; j < 4; j++)
                        hb[s / 4][j] |= (uint8_t)((qu[4 * s + j] >> 4) << (2 * (s % 4)));
                for (int c = 0; c < 4; c++)
                    for (int j = 0; j < 4; j++)
                        nib[c][j] = (uint8_t)((qu[4 * c + j] & 15) | (qu[16 + 4 * c + j] & 15) << 4);
                put4(unit, 0, r, hb[0]);
                put4(unit, 1, r, hb[1]);
                for (int c = 0; c < 4; c++)
                    put4(unit + 128, c, r, nib[c]);
            }
        }
}

void porta_repack_group(enum porta_dtype type, void *dst, const void *src, size_t row_bytes,
                        int n_rows, int64_t n_cols)
{
    memset(dst, 0, porta_repack_group_bytes(type, n_cols));
    int nb32 = (int)(n_cols / 32), nbk = (int)(n_cols / PORTA_QK_K);
    switch (type) {
    case PORTA_Q4_0: group_q4_0(dst, src, row_bytes, n_rows, nb32); break;
    case PORTA_Q4_1: group_q4_1(dst, src, row_bytes, n_rows, nb32); break;
    case PORTA_Q5_0: group_q5_0(dst, src, row_bytes, n_rows, nb32); break;
    case PORTA_Q8_0: group_q8_0(dst, src, row_bytes, n_rows, nb32); break;
    case PORTA_Q4_K: group_q4_K(dst, src, row_bytes, n_rows, nbk); break;
    case PORTA_Q6_K: group_q6_K(dst, src, row_bytes, n_rows, nbk); break;
    default: break;
    }
}
