/* rope.h - the rotary-embedding angles as numbers: YaRN correction dims, one rotation's cos/sin
 * (the definition the reference and the CPU kernels use) and the per-pair tables the device
 * kernels (kernels/cl/rope.cl) take, all from the same float operations. */
#ifndef PORTA_ROPE_H
#define PORTA_ROPE_H

#include "backend.h"

/* YaRN's correction range [dims[0], dims[1]] of rotated dims (only used when ext_factor != 0) */
void porta_rope_corr_dims(const struct porta_rope_params *p, float dims[2]);

/* cos and sin (times the YaRN magnitude scale) of rotation pair i0 / 2 at position pos */
void porta_rope_cos_sin(const struct porta_rope_params *p, const float dims[2], int32_t pos,
                        int i0, float *c, float *s);

/* The magnitude scale applied to cos and sin: attn_factor, times YaRN's 1 + 0.1 ln(1/scale). */
float porta_rope_mscale(const struct porta_rope_params *p);

/* The device kernels' table for the n_rot / 2 rotation pairs, 3 runs of n_rot / 2 floats:
 * inverse frequency freq_base^(-2i / n_rot), frequency factor (1 without), YaRN ramp (0
 * without). *out is malloc'd, the caller frees it. Returns 0 or PORTA_E_NOMEM. */
int porta_rope_table(const struct porta_rope_params *p, float **out);

#endif /* PORTA_ROPE_H */
