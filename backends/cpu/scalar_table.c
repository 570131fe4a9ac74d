/* scalar_table.c - the CPU kernel table made of core/quant.c's scalar reference functions:
 * always available, the fallback for every entry a SIMD table leaves NULL. */
#include "kernels.h"

#include <pthread.h>

static struct porta_cpu_kernels scalar_kernels = { .name = "scalar" };
static pthread_once_t scalar_once = PTHREAD_ONCE_INIT;

static void scalar_fill(void)
{
    for (int t = 0; t < PORTA_DTYPE_COUNT; t++) {
        const struct porta_type_traits *tr = porta_type_traits(t);
        if (!tr)
            continue;
        scalar_kernels.vec_dot[t] = tr->vec_dot;
        scalar_kernels.to_float[t] = tr->to_float;
        /* the activation format of this weight type, when it has a quantizer (Q8_0, Q8_1,
         * Q8_K; F32 for the float weights, a copy) */
        const struct porta_type_traits *vt = porta_type_traits(tr->vec_dot_type);
        if (tr->vec_dot && vt && vt->from_float)
            scalar_kernels.quantize[tr->vec_dot_type] = vt->from_float;
    }
}

/* The scalar table, filled from porta_type_traits() on first use (thread-safe). Never NULL;
 * an entry is NULL only where quant.c has no function either. */
const struct porta_cpu_kernels *porta_cpu_kernels_scalar(void)
{
    pthread_once(&scalar_once, scalar_fill);
    return &scalar_kernels;
}
