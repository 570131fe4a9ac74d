/* eltwise.cl - element-wise ops on float32 arrays of n elements (op ids = enum porta_elt):
 * 0 ADD y = a + b[i % nb], 1 MUL y = a * b[i % nb], 2 SWIGLU y = a / (1 + exp(-a)) * b,
 * 3 SCALE y = a * s, 4 COPY y = a. In place (y == a) is fine.
 * Launch: global (ceil(n / lsz) * lsz), any local size. No tuning macros. */

KERNEL eltwise(int op, GLOBAL float *y, u64 y_off, GLOBAL const float *a, u64 a_off,
               GLOBAL const float *b, u64 b_off, int n, int nb, float s)
{
    int i = GLOBAL_ID(0);
    if (i >= n)
        return;
    float av = a[a_off + i], r;
    if (op == 0)
        r = av + b[b_off + i % nb];
    else if (op == 1)
        r = av * b[b_off + i % nb];
    else if (op == 2)
        r = av / (1.0f + EXPF(-av)) * b[b_off + i];
    else if (op == 3)
        r = av * s;
    else
        r = av;
    y[y_off + i] = r;
}
