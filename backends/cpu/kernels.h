/* kernels.h - the CPU backend's table of inner kernels. One table per instruction set
 * (scalar reference, AVX2+FMA+F16C, AVX-512 F/BW/VL/VNNI/BF16); cpu.c picks one at start-up by
 * cpuid (or config / PORTA_CPU) and fills each NULL entry from the scalar table, so a SIMD
 * table may implement only what it speeds up. Every entry computes exactly what the scalar
 * reference in core/quant.c computes (up to float rounding). */
#ifndef PORTA_CPU_KERNELS_H
#define PORTA_CPU_KERNELS_H

#include "quant.h"

struct porta_cpu_kernels {
    const char *name;                                 /* "scalar" | "avx2" | "avx512" */
    /* indexed by weight type: dot of a weight row with an activation row in the weight type's
     * vec_dot_type (see porta_type_traits()) */
    porta_vec_dot_fn vec_dot[PORTA_DTYPE_COUNT];
    /* indexed by activation type (Q8_0, Q8_1, Q8_K): quantize a float row */
    porta_from_float_fn quantize[PORTA_DTYPE_COUNT];
    /* indexed by weight type: dequantize a row (embedding lookups) */
    porta_to_float_fn to_float[PORTA_DTYPE_COUNT];
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
