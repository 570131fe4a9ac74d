/* eltwise.cl - element-wise ops on float32 arrays of n elements (op ids = enum porta_elt):
 * 0 ADD y = a + b[i % nb], 1 MUL y = a * b[i % nb], 2 SWIGLU y = a / (1 + exp(-a)) * b,
 * 3 SCALE y = a * s, 4 COPY y = a. In place (y == a) is fine.
 * Launch: global (ceil(n / ELT_PER / lsz) * lsz), any local size.
 * Tuning: ELT_PER (elements per work-item, default 1; CPU devices: a run of ELT_PER
 * consecutive elements per work-item is a loop that vectorizes, and the broadcast index
 * needs no division per element). */

#ifndef ELT_PER
#define ELT_PER 1
#endif

DEVFN float elt_op(int op, float av, float bv, float s)
{
    if (op == 0)
        return av + bv;
    if (op == 1)
        return av * bv;
    if (op == 2)
        return av / (1.0f + EXPF(-av)) * bv;
    return op == 3 ? av * s : av;
}

KERNEL eltwise(int op, GLOBAL float *y, u64 y_off, GLOBAL const float *a, u64 a_off,
               GLOBAL const float *b, u64 b_off, int n, int nb, float s)
{
    int i0 = GLOBAL_ID(0) * ELT_PER;
    if (i0 >= n)
        return;
    int m = n - i0 < ELT_PER ? n - i0 : ELT_PER;
    GLOBAL float *yi = y + y_off + i0;
    GLOBAL const float *ai = a + a_off + i0;
    if (op >= 3) {                          /* b is not read */
        for (int k = 0; k < m; k++)
            yi[k] = elt_op(op, ai[k], 0.0f, s);
    } else if (op == 2 || nb >= n) {        /* b indexed like a */
        GLOBAL const float *bi = b + b_off + i0;
        for (int k = 0; k < m; k++)
            yi[k] = elt_op(op, ai[k], bi[k], s);
    } else {                                /* b repeats every nb elements */
        int j = i0 % nb;
        for (int k = 0; k < m; k++) {
            yi[k] = elt_op(op, ai[k], b[b_off + j], s);
            j = j + 1 == nb ? 0 : j + 1;
        }
    }
}
