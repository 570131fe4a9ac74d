/* rope.c - the rotary-embedding angles as numbers (see rope.h): one definition of the
 * frequencies, YaRN's ramp and magnitude scale for the reference, the CPU kernels and the
 * tables the device backends upload. */
#include "rope.h"

#include <math.h>
#include <stdlib.h>

static float corr_dim(int n_rot, int n_ctx_orig, float base, float beta)
{
    return n_rot * logf((float)n_ctx_orig / (beta * 2.0f * (float)M_PI)) / (2.0f * logf(base));
}

void porta_rope_corr_dims(const struct porta_rope_params *p, float dims[2])
{
    float start = floorf(corr_dim(p->n_rot, p->n_ctx_orig, p->freq_base, p->beta_fast));
    float end = ceilf(corr_dim(p->n_rot, p->n_ctx_orig, p->freq_base, p->beta_slow));
    dims[0] = fmaxf(0.0f, start);
    dims[1] = fminf((float)(p->n_rot - 1), end);
}

float porta_rope_mscale(const struct porta_rope_params *p)
{
    float m = p->attn_factor;
    if (p->ext_factor != 0.0f)
        m *= 1.0f + 0.1f * logf(1.0f / p->freq_scale);
    return m;
}

/* YaRN's blend weight of the extrapolated angle for pair i0 / 2 */
static float yarn_ramp(const struct porta_rope_params *p, const float dims[2], int i0)
{
    float y = ((float)i0 / 2 - dims[0]) / fmaxf(0.001f, dims[1] - dims[0]);
    return (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * p->ext_factor;
}

void porta_rope_cos_sin(const struct porta_rope_params *p, const float dims[2], int32_t pos,
                        int i0, float *c, float *s)
{
    float theta_extrap = (float)pos * powf(p->freq_base, -(float)i0 / (float)p->n_rot);
    if (p->freq_factors)
        theta_extrap /= p->freq_factors[i0 / 2];
    float theta_interp = p->freq_scale * theta_extrap;
    float theta = theta_interp;
    float mscale = porta_rope_mscale(p);
    if (p->ext_factor != 0.0f) {
        float ramp = yarn_ramp(p, dims, i0);
        theta = theta_interp * (1.0f - ramp) + theta_extrap * ramp;
    }
    *c = cosf(theta) * mscale;
    *s = sinf(theta) * mscale;
}

int porta_rope_table(const struct porta_rope_params *p, float **out)
{
    int half = p->n_rot / 2;
    float *t = malloc(sizeof(float) * 3 * (size_t)(half > 0 ? half : 1)), dims[2] = { 0, 0 };
    *out = NULL;
    if (!t)
        return PORTA_E_NOMEM;
    if (p->ext_factor != 0.0f)
        porta_rope_corr_dims(p, dims);
    for (int i = 0; i < half; i++) {
        int i0 = 2 * i;
        t[i] = powf(p->freq_base, -(float)i0 / (float)p->n_rot);
        t[half + i] = p->freq_factors ? p->freq_factors[i] : 1.0f;
        t[2 * half + i] = p->ext_factor != 0.0f ? yarn_ramp(p, dims, i0) : 0.0f;
    }
    *out = t;
    return 0;
}
