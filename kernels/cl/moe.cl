/* moe.cl - top-k expert routing, one work-item per token (the semantics of struct
 * porta_route_params in core/backend.h, in the order of the CPU reference so ties resolve
 * alike): scores s = softmax(logits[t]) or sigmoid(logits[t]); choice scores c = s + bias;
 * with n_group > 1 the groups of n_expert / n_group experts are ranked by the sum of their two
 * best c and all but the topk_group best are dropped (the worst first, ties: the higher group
 * first); then k times the eligible expert of largest c (ties: the lower index). weights are
 * the unbiased s of the chosen, renormalized to sum 1 when norm, times scale.
 * Scores are recomputed from the logits rather than stored, so no per-expert array is needed
 * beyond a bitmask: n_expert <= MOE_MAX_EXPERT.
 * Launch: global (ceil(n_tok / lsz) * lsz), any local size. No tuning macros. */

#define MOE_MAX_EXPERT 2048

DEVFN float moe_score(GLOBAL const float *l, int e, int softmax, float mx, float sum)
{
    return softmax ? EXPF(l[e] - mx) / sum : 1.0f / (1.0f + EXPF(-l[e]));
}

DEVFN float moe_choice(GLOBAL const float *l, GLOBAL const float *bias, int has_bias, int e,
                       int softmax, float mx, float sum)
{
    float s = moe_score(l, e, softmax, mx, sum);
    return has_bias ? s + bias[e] : s;
}

DEVFN bool moe_taken(const u32 *taken, int e) { return (taken[e >> 5] >> (e & 31)) & 1u; }

KERNEL moe_route(GLOBAL i32 *ids, u64 ids_off, GLOBAL float *wts, u64 wts_off,
                 GLOBAL const float *logits, u64 lg_off, GLOBAL const float *bias, u64 bias_off,
                 int has_bias, int n_tok, int n_expert, int k, int softmax, int norm, float scale,
                 int n_group, int topk_group)
{
    int t = GLOBAL_ID(0);
    if (t >= n_tok)
        return;
    GLOBAL const float *l = logits + lg_off + (u64)t * n_expert, *b = bias + bias_off;
    u32 taken[MOE_MAX_EXPERT / 32];
    float mx = l[0], sum = 0.0f, neg_inf = -AS_FLOAT(0x7f800000u);
    for (int w = 0; w < (n_expert + 31) / 32; w++)
        taken[w] = 0u;
    if (softmax) {
        for (int e = 1; e < n_expert; e++)
            mx = FMAXF(mx, l[e]);
        for (int e = 0; e < n_expert; e++)
            sum += EXPF(l[e] - mx);
    }
    if (n_group > 1) {
        int per = n_expert / n_group;
        for (int round = 0; round < n_group - topk_group; round++) {
            int worst = -1;
            float wscore = 0.0f;
            for (int g = 0; g < n_group; g++) {
                if (moe_taken(taken, g * per))
                    continue;
                float b1 = neg_inf, b2 = neg_inf;
                for (int i = 0; i < per; i++) {
                    float c = moe_choice(l, b, has_bias, g * per + i, softmax, mx, sum);
                    if (c > b1) {
                        b2 = b1;
                        b1 = c;
                    } else if (c > b2) {
                        b2 = c;
                    }
                }
                float score = per > 1 ? b1 + b2 : b1;
                if (worst < 0 || score <= wscore) {
                    worst = g;
                    wscore = score;
                }
            }
            for (int i = 0; i < per; i++)
                taken[(worst * per + i) >> 5] |= 1u << ((worst * per + i) & 31);
        }
    }
    float wsum = 0.0f;
    for (int j = 0; j < k; j++) {
        int best = -1;
        float cbest = 0.0f;
        for (int e = 0; e < n_expert; e++) {
            if (moe_taken(taken, e))
                continue;
            float c = moe_choice(l, b, has_bias, e, softmax, mx, sum);
            if (best < 0 || c > cbest) {
                best = e;
                cbest = c;
            }
        }
        if (best < 0)   /* cannot happen for valid parameters: k <= eligible experts */
            best = 0;
        taken[best >> 5] |= 1u << (best & 31);
        float s = moe_score(l, best, softmax, mx, sum);
        ids[ids_off + (u64)t * k + j] = best;
        wts[wts_off + (u64)t * k + j] = s;
        wsum += s;
    }
    for (int j = 0; j < k; j++) {
        float v = wts[wts_off + (u64)t * k + j];
        if (norm && wsum > 0.0f)
            v /= wsum;
        wts[wts_off + (u64)t * k + j] = v * scale;
    }
}
