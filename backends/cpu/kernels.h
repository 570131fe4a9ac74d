/* kernels.h - the CPU backend's table of inner kernels. One table per instruction set
 * (scalar reference, AVX2+FMA+F16C, AVX-512 F/BW/VL/VNNI/BF16); cpu.c picks one at start-up by
 * cpuid (or config / PORTA_CPU) and fills each NULL entry from the scalar table, so a SIMD
 * table may implement only what it speeds up. Every entry computes exactly what the scalar
 * reference in core/quant.c computes (up to float rounding). */
#ifndef PORTA_CPU_KERNELS_H
#define PORTA_CPU_KERNELS_H

#include "quant.h"
#include "repack.h"

/* Tile kernel over repacked weights (repack.h): y[t * y_stride + r] = dot(row r, token t) for
 * the n_rows (<= 16) valid rows of one 16-row group and n_tok tokens. act: n_tok activation
 * rows prepared by the table's gemm_act for the same weight type, act_stride bytes apart. */
typedef void (*porta_gemm_fn)(int64_t n_cols, const void *group, const void *act,
                              size_t act_stride, int n_tok, float *y, size_t y_stride, int n_rows);
/* One activation row for gemm[type]: n_cols floats -> porta_gemm_act_bytes(type, n_cols) bytes,
 * quantized bit for bit as the reference quantizer of the type's vec_dot_type. */
typedef void (*porta_gemm_act_fn)(const float *x, void *act, int64_t n_cols);

/* One token's attention for the n_q query heads that share one KV head, over cache positions
 * [0, n_kv): flash-attention style, each K and V row read (and converted from F16) once for all
 * n_q heads, the softmax kept online (running max and sum) over chunks of positions. */
struct porta_attn_rows {
    const float *q;                 /* n_q rows of dk floats, dk apart */
    float *o;                       /* n_q rows of dv floats, dv apart */
    const void *k, *v;              /* position 0 of this KV head in the cache */
    size_t k_stride, v_stride;      /* elements from one position to the next */
    int n_q, dk, dv, n_kv;
    float scale;
    bool f16;                       /* cache elements F16 (else F32) */
    float *scratch;                 /* porta_attn_scratch_floats(n_q, dk, dv) floats, 64-aligned */
};
#define PORTA_ATTN_CHUNK 64           /* positions per softmax step */
#define PORTA_ATTN_ROWS 16            /* K / V rows converted to float at a time */
static inline size_t porta_attn_scratch_floats(int n_q, int dk, int dv)
{
    return (size_t)n_q * PORTA_ATTN_CHUNK + PORTA_ATTN_ROWS * (size_t)((dk + 15) & ~15) +
           PORTA_ATTN_ROWS * (size_t)((dv + 15) & ~15) + 2 * (size_t)((n_q + 15) & ~15);
}

struct porta_cpu_kernels {
    const char *name;                                 /* "scalar" | "avx2" | "avx512" */
    /* indexed by weight type: dot of a weight row with an activation row in the weight type's
     * vec_dot_type (see porta_type_traits()) */
    porta_vec_dot_fn vec_dot[PORTA_DTYPE_COUNT];
    /* indexed by activation type (Q8_0, Q8_1, Q8_K): quantize a float row */
    porta_from_float_fn quantize[PORTA_DTYPE_COUNT];
    /* indexed by weight type: dequantize a row (embedding lookups) */
    porta_to_float_fn to_float[PORTA_DTYPE_COUNT];
    /* indexed by weight type: tile kernel and its activation format; NULL where the set has
     * none (the backend then multiplies row by row with vec_dot). Never filled from the
     * scalar table: the two entries of a type come from the same set. */
    porta_gemm_fn gemm[PORTA_DTYPE_COUNT];
    porta_gemm_act_fn gemm_act[PORTA_DTYPE_COUNT];
    /* fused small ops; NULL (the scalar set) means cpu.c runs ref.c's loops */
    void (*swiglu)(float *y, const float *g, const float *u, int64_t n); /* silu(g) * u */
    /* one row: y = x / sqrt(mean(x^2) + eps) * w (w NULL: no weight), sum of squares in double */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    void (*attn)(const struct porta_attn_rows *a);
};

/* The scalar table (core/quant.c's reference functions); always available. */
const struct porta_cpu_kernels *porta_cpu_kernels_scalar(void);
/* SIMD tables: NULL when not compiled in. They do not check the CPU: the caller does. */
const struct porta_cpu_kernels *porta_cpu_kernels_avx2(void);
const struct porta_cpu_kernels *porta_cpu_kernels_avx512(void);
/* cpuid: true when the running CPU and OS support the set ("avx2" needs AVX2+FMA+F16C;
 * "avx512" needs F, BW, VL, DQ, VNNI and BF16, plus OS support of the ZMM state). */
bool porta_cpu_has(const char *set);

#endif /* PORTA_CPU_KERNELS_H */
