/* norm.cl - RMS normalization of rows: y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i] (w optional,
 * has_w = 0 means no weight). In place (y == x) is fine.
 * Launch: global (lsz, n_rows), local (lsz, 1), lsz a power of two <= NORM_MAX_LSZ.
 * One work-group per row; the sum of squares meets in a local-memory tree.
 * Tuning: the local size (host). */

#define NORM_MAX_LSZ 256

KERNEL rmsnorm(GLOBAL float *y, u64 y_off, GLOBAL const float *x, u64 x_off,
               GLOBAL const float *w, u64 w_off, int has_w, int n, float eps)
{
    LOCAL_ARRAY(float, red, NORM_MAX_LSZ);
    int lid = LOCAL_ID(0), lsz = LOCAL_SIZE(0), row = GROUP_ID(1);
    GLOBAL const float *xr = x + x_off + (u64)row * n;
    GLOBAL float *yr = y + y_off + (u64)row * n;
    float ss = 0.0f;
    for (int i = lid; i < n; i += lsz)
        ss = MAD(xr[i], xr[i], ss);
    red[lid] = ss;
    BARRIER();
    for (int k = lsz / 2; k > 0; k >>= 1) {
        if (lid < k)
            red[lid] += red[lid + k];
        BARRIER();
    }
    float scale = 1.0f / SQRTF(red[0] / (float)n + eps);
    for (int i = lid; i < n; i += lsz)
        yr[i] = xr[i] * scale * (has_w ? w[w_off + i] : 1.0f);
}
