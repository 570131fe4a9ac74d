/* rope.cl - rotary position embedding, in place on x [n_tok][n_head][head_dim].
 * Pair i (0 <= i < n_rot/2) of every head rotates by theta = pos[t] * inv_freq[i] / ff[i],
 * mixed between interpolation (times freq_scale) and extrapolation by ramp[i] (YaRN; all
 * zeros without it), and cos/sin are scaled by mscale. The host computes inv_freq, ff and
 * ramp exactly as the CPU reference does (backends/cpu/ref.c), so only cos/sin may round
 * differently. NORM style rotates (x[2i], x[2i+1]); NEOX rotates (x[i], x[i + n_rot/2]).
 * tab holds inv_freq[n_rot/2], ff[n_rot/2], ramp[n_rot/2].
 * Launch: global (ceil(n_rot/2 / lsz) * lsz, n_head, n_tok), any local size; with
 * ROPE_ALL_HEADS global (ceil(n_rot/2 / lsz) * lsz, 1, n_tok).
 * Tuning: ROPE_ALL_HEADS (default 0; 1 on CPU devices: a work-item computes cos/sin once and
 * rotates that pair in every head, rather than once per head). */

#ifndef ROPE_ALL_HEADS
#define ROPE_ALL_HEADS 0
#endif

KERNEL rope(GLOBAL float *x, u64 x_off, int n_head, int head_dim, int n_rot, int neox,
            GLOBAL const i32 *pos, u64 pos_off, GLOBAL const float *tab, u64 tab_off,
            float freq_scale, float mscale)
{
    int i = GLOBAL_ID(0), h = GLOBAL_ID(1), t = GLOBAL_ID(2), np = n_rot / 2;
    if (i >= np)
        return;
    GLOBAL const float *inv_freq = tab + tab_off, *ff = inv_freq + np, *ramp = ff + np;
    float theta_extrap = (float)pos[pos_off + t] * inv_freq[i];
    theta_extrap = theta_extrap / ff[i];
    float theta_interp = freq_scale * theta_extrap;
    float theta = theta_interp * (1.0f - ramp[i]) + theta_extrap * ramp[i];
    float c = COSF(theta) * mscale, s = SINF(theta) * mscale;
    int a = neox ? i : 2 * i, b = neox ? i + np : 2 * i + 1;
#if ROPE_ALL_HEADS
    for (h = 0; h < n_head; h++)
#endif
    {
        GLOBAL float *v = x + x_off + ((u64)t * n_head + h) * head_dim;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}
