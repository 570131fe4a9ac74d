/* sampler.c - next-token choice from logits (HF generate() processor order), a streaming
 * stop-string matcher and a beam-search state machine. The vocabulary is never sorted:
 * top-k is a heap, top-p a quickselect on probability mass, the rest vectorizable passes. */
#include "sampler.h"
#include "config.h"
#include "porta.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- candidates: (logit, id), ordered by logit descending, then id ascending ---------- */

struct cand {
    float logit;
    int32_t id;
};

/* NaN counts as -inf and +inf as the largest float, so softmax never sees inf - inf. */
static inline float clean(float x)
{
    if (x != x)
        return -INFINITY;
    return x == INFINITY ? FLT_MAX : x;
}

static inline bool better(struct cand a, struct cand b)
{
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    struct cand a = *(const struct cand *)pa, b = *(const struct cand *)pb;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/* Min-heap on "better": the root is the worst of the kept k. */
static void heap_down(struct cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(h[w], h[l]))
            w = l;
        if (r < n && better(h[w], h[r]))
            w = r;
        if (w == i)
            return;
        struct cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_up(struct cand *h, int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!better(h[p], h[i]))
            return;
        struct cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* The k best finite logits into h[0..ret), sorted best first. One pass, O(n log k) worst
 * case but O(n) in practice: once the heap is full, most logits fail one compare with the
 * root (a later id loses a tie, and NaN loses every compare). */
static int heap_topk(const float *logits, int n, int k, struct cand *h)
{
    int m = 0, i = 0;
    for (; i < n && m < k; i++) {
        float l = clean(logits[i]);
        if (l == -INFINITY)
            continue;
        h[m].logit = l;
        h[m].id = i;
        heap_up(h, m++);
    }
    float root = m ? h[0].logit : INFINITY;
    for (; i < n; i++) {
        if (!(logits[i] > root))
            continue;
        struct cand c = { clean(logits[i]), i };
        if (better(c, h[0])) { /* false only for a second +inf */
            h[0] = c;
            heap_down(h, m, 0);
            root = h[0].logit;
        }
    }
    qsort(h, (size_t)m, sizeof *h, cand_cmp);
    return m;
}

/* ---- RNG: xoshiro256** seeded through splitmix64 ----------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1). */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* ---- the sampler ------------------------------------------------------------------- */

struct porta_sampler {
    struct porta_sampler_params p; /* arrays point at the copies below */
    int n_vocab;
    int32_t *bias_ids;
    float *bias_vals;
    int32_t *eog_ids;
    struct cand *cand; /* n_vocab: the candidate list of one step */
    float *w;          /* n_vocab: softmax weights when there is no top-k */
    uint32_t *seen;    /* n_vocab: seen[id] == stamp marks ids already penalized */
    uint32_t stamp;
    int32_t *count;    /* n_vocab: generated-token counts, all zero between calls */
    uint64_t rng[4];
};

void porta_sampler_params_default(struct porta_sampler_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

void porta_sampler_params_from_config(struct porta_sampler_params *p,
                                      const struct porta_config *cfg)
{
    porta_sampler_params_default(p);
    p->temperature = cfg->sampling.temperature;
    p->top_p = cfg->sampling.top_p;
    p->top_k = cfg->sampling.top_k;
    p->min_p = cfg->sampling.min_p;
    p->repetition_penalty = cfg->sampling.repetition_penalty;
    p->presence_penalty = cfg->sampling.presence_penalty;
    p->frequency_penalty = cfg->sampling.frequency_penalty;
}

static int range_err(const char *field, double v, const char *want)
{
    porta_err("sampler: %s = %g is out of range (%s)", field, v, want);
    return PORTA_E_RANGE;
}

static int check_params(const struct porta_sampler_params *p, int n_vocab)
{
    if (n_vocab <= 0)
        return range_err("n_vocab", n_vocab, "must be > 0");
    if (!(p->temperature >= 0 && isfinite(p->temperature)))
        return range_err("temperature", p->temperature, ">= 0");
    if (p->top_k < 0)
        return range_err("top_k", p->top_k, ">= 0, 0 = off");
    if (!(p->top_p > 0 && p->top_p <= 1))
        return range_err("top_p", p->top_p, "(0, 1], 1 = off");
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return range_err("min_p", p->min_p, "[0, 1], 0 = off");
    if (!(p->repetition_penalty > 0 && isfinite(p->repetition_penalty)))
        return range_err("repetition_penalty", p->repetition_penalty, "> 0, 1 = off");
    if (!isfinite(p->presence_penalty))
        return range_err("presence_penalty", p->presence_penalty, "finite");
    if (!isfinite(p->frequency_penalty))
        return range_err("frequency_penalty", p->frequency_penalty, "finite");
    if (p->no_repeat_ngram_size < 0)
        return range_err("no_repeat_ngram_size", p->no_repeat_ngram_size, ">= 0, 0 = off");
    if (p->min_new_tokens < 0)
        return range_err("min_new_tokens", p->min_new_tokens, ">= 0");
    if (p->top_logprobs < 0 || p->top_logprobs > PORTA_SAMPLER_MAX_TOP_LOGPROBS)
        return range_err("top_logprobs", p->top_logprobs, "0..20");
    if (p->n_bias < 0 || p->n_eog < 0)
        return range_err(p->n_bias < 0 ? "n_bias" : "n_eog", p->n_bias < 0 ? p->n_bias : p->n_eog,
                         ">= 0");
    if ((p->n_bias > 0 && (!p->bias_ids || !p->bias_vals)) || (p->n_eog > 0 && !p->eog_ids)) {
        porta_err("sampler: %s is NULL but its count is > 0", p->n_eog > 0 && !p->eog_ids
                                                                   ? "eog_ids" : "bias_ids/bias_vals");
        return PORTA_E_INVAL;
    }
    for (int i = 0; i < p->n_bias; i++) {
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= n_vocab) {
            porta_err("sampler: logit_bias token id %d is outside the vocabulary (0..%d)",
                      (int)p->bias_ids[i], n_vocab - 1);
            return PORTA_E_RANGE;
        }
        float v = p->bias_vals[i];
        if (v != v || v == INFINITY) {
            porta_err("sampler: logit_bias value for token %d is %g (finite or -inf wanted)",
                      (int)p->bias_ids[i], v);
            return PORTA_E_RANGE;
        }
    }
    for (int i = 0; i < p->n_eog; i++)
        if (p->eog_ids[i] < 0 || p->eog_ids[i] >= n_vocab) {
            porta_err("sampler: end-of-generation id %d is outside the vocabulary (0..%d)",
                      (int)p->eog_ids[i], n_vocab - 1);
            return PORTA_E_RANGE;
        }
    return 0;
}

static void *dup_array(const void *src, size_t n, size_t size)
{
    if (n == 0)
        return NULL;
    void *d = malloc(n * size);
    if (d)
        memcpy(d, src, n * size);
    return d;
}

int porta_sampler_create(const struct porta_sampler_params *p, int n_vocab,
                         struct porta_sampler **out)
{
    int rc = PORTA_E_NOMEM;
    struct porta_sampler *s = NULL;
    if (!p || !out)
        return PORTA_E_INVAL;
    *out = NULL;
    rc = check_params(p, n_vocab);
    if (rc)
        return rc;
    rc = PORTA_E_NOMEM;
    s = calloc(1, sizeof *s);
    if (!s)
        goto fail;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->bias_ids = dup_array(p->bias_ids, (size_t)p->n_bias, sizeof(int32_t));
    s->bias_vals = dup_array(p->bias_vals, (size_t)p->n_bias, sizeof(float));
    s->eog_ids = dup_array(p->eog_ids, (size_t)p->n_eog, sizeof(int32_t));
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->w = malloc((size_t)n_vocab * sizeof *s->w);
    s->seen = calloc((size_t)n_vocab, sizeof *s->seen);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    if ((p->n_bias && (!s->bias_ids || !s->bias_vals)) || (p->n_eog && !s->eog_ids) ||
        !s->cand || !s->w || !s->seen || !s->count)
        goto fail;
    s->p.bias_ids = s->bias_ids;
    s->p.bias_vals = s->bias_vals;
    s->p.eog_ids = s->eog_ids;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
fail:
    porta_sampler_destroy(s);
    return rc;
}

void porta_sampler_destroy(struct porta_sampler *s)
{
    if (!s)
        return;
    free(s->bias_ids);
    free(s->bias_vals);
    free(s->eog_ids);
    free(s->cand);
    free(s->w);
    free(s->seen);
    free(s->count);
    free(s);
}

/* HF NoRepeatNGram: the last n-1 tokens are a prefix; every earlier n-gram starting with
 * that prefix bans its last token. */
static void ban_ngrams(float *logits, int n_vocab, const int32_t *ctx, int n_ctx, int n)
{
    if (n_ctx + 1 < n)
        return;
    const int32_t *prefix = ctx + n_ctx - (n - 1);
    for (int i = 0; i + n <= n_ctx; i++) {
        if (memcmp(ctx + i, prefix, (size_t)(n - 1) * sizeof *ctx) != 0)
            continue;
        int32_t t = ctx[i + n - 1];
        if (t >= 0 && t < n_vocab)
            logits[t] = -INFINITY;
    }
}

int porta_sampler_process(struct porta_sampler *s, float *logits, const int32_t *ctx,
                          int n_ctx, int n_prompt)
{
    if (!s || !logits || n_ctx < 0 || (n_ctx > 0 && !ctx) || n_prompt < 0 || n_prompt > n_ctx)
        return PORTA_E_INVAL;
    const struct porta_sampler_params *p = &s->p;
    int nv = s->n_vocab;

    for (int i = 0; i < p->n_bias; i++) {
        float v = p->bias_vals[i];
        logits[p->bias_ids[i]] = v <= -100.0f ? -INFINITY : logits[p->bias_ids[i]] + v;
    }
    if (p->repetition_penalty != 1.0f) {
        float rp = p->repetition_penalty;
        if (++s->stamp == 0) { /* wrapped: old marks could collide */
            memset(s->seen, 0, (size_t)nv * sizeof *s->seen);
            s->stamp = 1;
        }
        for (int i = 0; i < n_ctx; i++) {
            int32_t t = ctx[i];
            if (t < 0 || t >= nv || s->seen[t] == s->stamp)
                continue;
            s->seen[t] = s->stamp;
            logits[t] = logits[t] > 0 ? logits[t] / rp : logits[t] * rp;
        }
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (int i = n_prompt; i < n_ctx; i++)
            if (ctx[i] >= 0 && ctx[i] < nv)
                s->count[ctx[i]]++;
        for (int i = n_prompt; i < n_ctx; i++) {
            int32_t t = ctx[i];
            if (t < 0 || t >= nv || s->count[t] == 0)
                continue;
            logits[t] -= p->presence_penalty + p->frequency_penalty * (float)s->count[t];
            s->count[t] = 0;
        }
    }
    if (p->no_repeat_ngram_size > 0)
        ban_ngrams(logits, nv, ctx, n_ctx, p->no_repeat_ngram_size);
    if (n_ctx - n_prompt < p->min_new_tokens)
        for (int i = 0; i < p->n_eog; i++)
            logits[p->eog_ids[i]] = -INFINITY;
    return 0;
}

/* ---- dense passes over the vocabulary, written so that gcc -O2 vectorizes them ------- */

/* Bit casts (memcpy folds to a register move). */
static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(y) for y <= 0 (0 below -87, for y > 0 and for NaN): Cody-Waite reduction with
 * Cephes' expf constants and polynomial, relative error ~2e-7; exp_neg(0) is exactly 1.
 * The range test is done on the bits (for y <= 0 they grow as y falls; NaN is above -87's
 * pattern) because gcc will not if-convert a float compare without -fno-trapping-math. */
static inline float exp_neg(float y)
{
    const uint32_t lim = 0xC2AE0000u; /* -87.0f */
    uint32_t b = f2u(y);
    uint32_t mask = 0u - (uint32_t)((b >= 0x80000000u && b <= lim) || b == 0); /* -87 <= y <= 0 */
    float x = u2f((b & mask) | (lim & ~mask));
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.0f + r + r * r * (5.0000001201e-1f + r * (1.6666665459e-1f +
              r * (4.1665795894e-2f + r * (8.3334519073e-3f + r * (1.3981999507e-3f +
              r * 1.9875691500e-4f)))));
    return u2f(f2u(p * u2f((uint32_t)((int32_t)n + 127) << 23)) & mask);
}

/* w[i] = exp((logits[i] - max) * inv_t); 0 for -inf and NaN. Fixed-size inner blocks let
 * gcc -O2 vectorize the loop (its cheap cost model refuses loops that need an epilogue). */
static void weights_dense(const float *restrict logits, int n, float max, float inv_t,
                          float *restrict w)
{
    enum { B = 16 };
    int i = 0;
    for (; i + B <= n; i += B)
        for (int k = 0; k < B; k++) {
            uint32_t b = f2u(logits[i + k]);
            b -= b == 0x7F800000u; /* +inf -> FLT_MAX, as clean() does */
            w[i + k] = exp_neg((u2f(b) - max) * inv_t);
        }
    for (; i < n; i++)
        w[i] = exp_neg((clean(logits[i]) - max) * inv_t);
}

/* The largest of n logits (-inf if all are -inf or NaN): 16 running maxima, which gcc
 * turns into maxps; "x > m ? x : m" is exactly that instruction's NaN rule. */
static float max_dense(const float *restrict x, int n)
{
    enum { B = 16 };
    float part[B];
    for (int k = 0; k < B; k++)
        part[k] = -INFINITY;
    int i = 0;
    for (; i + B <= n; i += B)
        for (int k = 0; k < B; k++)
            part[k] = x[i + k] > part[k] ? x[i + k] : part[k];
    float m = -INFINITY;
    for (int k = 0; k < B; k++)
        m = part[k] > m ? part[k] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Sum of n weights, 16 partial sums at a time (vectorizable, and no long add chain). */
static double sum_dense(const float *w, int n)
{
    enum { B = 16 };
    float part[B] = { 0 };
    int i = 0;
    for (; i + B <= n; i += B)
        for (int k = 0; k < B; k++)
            part[k] += w[i + k];
    double total = 0;
    for (int k = 0; k < B; k++)
        total += part[k];
    for (; i < n; i++)
        total += w[i];
    return total;
}

/* Candidates from here on carry their softmax weight exp((l - max) * inv_t) in .logit:
 * a monotone map, so "better" still orders them, and the best has weight exactly 1. */
static void to_weights(struct cand *c, int n, float max, float inv_t)
{
    for (int i = 0; i < n; i++)
        c[i].logit = exp_neg((c[i].logit - max) * inv_t);
}

/* top-p on weights: keeps token j (in best-first order) iff the mass of the tokens better
 * than j is < top_p * total. Sorted input: a walk. Unsorted: a quickselect that splits on
 * mass instead of count, so the nucleus is found in O(n) and left unsorted (the order
 * does not change the distribution drawn from). */
static void top_p_weights(struct cand *c, int *nc, bool sorted, float top_p)
{
    int n = *nc, lo = 0, hi = n;
    double total = 0;
    for (int i = 0; i < n; i++)
        total += c[i].logit;
    double want = (double)top_p * total, acc = 0; /* acc: mass of c[0..lo), always < want */
    while (!sorted && hi - lo > 16) {
        int mid = lo + (hi - lo) / 2;
        /* median of three to c[hi-1] as the pivot, then Lomuto: better ones to the front */
        if (better(c[mid], c[lo])) { struct cand t = c[mid]; c[mid] = c[lo]; c[lo] = t; }
        if (better(c[hi - 1], c[lo])) { struct cand t = c[hi - 1]; c[hi - 1] = c[lo]; c[lo] = t; }
        if (better(c[mid], c[hi - 1])) { struct cand t = c[mid]; c[mid] = c[hi - 1]; c[hi - 1] = t; }
        struct cand piv = c[hi - 1];
        int m = lo;
        double mass = 0;
        for (int i = lo; i < hi - 1; i++)
            if (better(c[i], piv)) {
                mass += c[i].logit;
                struct cand t = c[i];
                c[i] = c[m];
                c[m++] = t;
            }
        c[hi - 1] = c[m];
        c[m] = piv;
        if (acc + mass >= want) {
            hi = m; /* the cut is inside the better part (or right at its end) */
        } else if (acc + mass + piv.logit >= want) {
            *nc = m + 1;
            return;
        } else {
            acc += mass + piv.logit;
            lo = m + 1;
        }
    }
    if (!sorted)
        qsort(c + lo, (size_t)(hi - lo), sizeof *c, cand_cmp);
    for (int i = lo; i < hi; i++) {
        if (acc >= want && i > 0) {
            *nc = i;
            return;
        }
        acc += c[i].logit;
    }
    *nc = hi;
}

/* Draws from candidates by weight. */
static int32_t draw(struct porta_sampler *s, const struct cand *c, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += c[i].logit;
    double u = rng_uniform(s->rng) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].logit;
        if (acc > u)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left u just above the last sum */
}

/* Draws from a dense weight vector (zeros are never drawn). Sums go 16 at a time, so the
 * walk is not one long chain of dependent adds. */
static int32_t draw_dense(struct porta_sampler *s, const float *w, int n)
{
    enum { B = 16 };
    int i;
    double u = rng_uniform(s->rng) * sum_dense(w, n), acc = 0;
    int32_t last = -1;
    for (i = 0; i < n; i += B) {
        int e = n - i < B ? n : i + B;
        float blk = 0;
        for (int j = i; j < e; j++)
            blk += w[j];
        if (acc + blk <= u && e < n) {
            acc += blk;
            continue;
        }
        for (int j = i; j < e; j++) {
            if (w[j] <= 0)
                continue;
            acc += w[j];
            last = j;
            if (acc > u)
                return j;
        }
    }
    return last; /* rounding left u above the walked sum: the last positive weight */
}

/* Chooses a token; returns its id or -1 if every logit is -inf or NaN. *gmax: the largest
 * logit of the whole vocabulary (cleaned). */
static int32_t choose(struct porta_sampler *s, const float *logits, float *gmax)
{
    const struct porta_sampler_params *p = &s->p;
    int nv = s->n_vocab, nc = 0;
    struct cand *c = s->cand;
    float max = -INFINITY;

    if (p->temperature == 0.0f) { /* the first logit equal to the maximum */
        max = max_dense(logits, nv);
        *gmax = clean(max);
        if (max == -INFINITY)
            return -1;
        int32_t best = 0;
        while (logits[best] != max)
            best++;
        return best;
    }
    float inv_t = 1.0f / p->temperature;
    if (p->top_k > 0 && p->top_k < nv) {
        nc = heap_topk(logits, nv, p->top_k, c);
        *gmax = nc ? c[0].logit : -INFINITY; /* the best candidate is the global max */
        if (nc == 0)
            return -1;
        to_weights(c, nc, c[0].logit, inv_t);
        if (p->top_p < 1.0f)
            top_p_weights(c, &nc, true, p->top_p);
    } else {
        *gmax = max = clean(max_dense(logits, nv));
        if (max == -INFINITY)
            return -1;
        weights_dense(logits, nv, max, inv_t, s->w);
        float *w = s->w;
        if (p->top_p >= 1.0f) {
            if (p->min_p > 0.0f) /* p_i >= min_p * p_max, and p_max has weight 1 */
                for (int i = 0; i < nv; i++)
                    w[i] = w[i] >= p->min_p ? w[i] : 0.0f;
            return draw_dense(s, w, nv);
        }
        for (int i = 0; i < nv; i++)
            if (w[i] > 0) {
                c[nc].logit = w[i];
                c[nc++].id = i;
            }
        top_p_weights(c, &nc, false, p->top_p);
    }
    if (p->min_p > 0.0f) {
        int k = 0;
        for (int i = 0; i < nc; i++)
            if (c[i].logit >= p->min_p)
                c[k++] = c[i];
        nc = k;
    }
    return draw(s, c, nc);
}

int porta_sampler_sample(struct porta_sampler *s, float *logits, const int32_t *ctx, int n_ctx,
                         int n_prompt, struct porta_sample_result *out)
{
    if (!out)
        return PORTA_E_INVAL;
    int rc = porta_sampler_process(s, logits, ctx, n_ctx, n_prompt);
    if (rc)
        return rc;
    float gmax;
    int32_t id = choose(s, logits, &gmax);
    if (id < 0) {
        porta_err("sampler: every token is banned (all logits are -inf after processing)");
        return PORTA_E_RANGE;
    }
    out->id = id;
    out->logprob = NAN;
    out->n_top = 0;
    if (!s->p.logprobs && s->p.top_logprobs == 0)
        return 0;
    float inv_t = s->p.temperature > 0 ? 1.0f / s->p.temperature : 1.0f;
    weights_dense(logits, s->n_vocab, gmax, inv_t, s->w);
    double lse = log(sum_dense(s->w, s->n_vocab));
    if (s->p.logprobs)
        out->logprob = (float)((clean(logits[id]) - gmax) * inv_t - lse);
    if (s->p.top_logprobs > 0) {
        struct cand top[PORTA_SAMPLER_MAX_TOP_LOGPROBS];
        int n = heap_topk(logits, s->n_vocab, s->p.top_logprobs, top);
        for (int i = 0; i < n; i++) {
            out->top_ids[i] = top[i].id;
            out->top_logprobs[i] = (float)((top[i].logit - gmax) * inv_t - lse);
        }
        out->n_top = n;
    }
    return 0;
}

/* ---- stop strings ------------------------------------------------------------------ */

struct porta_stop {
    char **stops;
    size_t *lens;
    int n;
    char *buf; /* held text followed by the newest piece */
    size_t len, cap;
    char *out; /* what the last call released */
    size_t out_cap;
    bool stopped;
};

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    char *q = realloc(*p, c);
    if (!q)
        return PORTA_E_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

int porta_stop_create(const char *const *stops, int n, struct porta_stop **out)
{
    if (!out || n < 0 || (n > 0 && !stops))
        return PORTA_E_INVAL;
    *out = NULL;
    struct porta_stop *st = calloc(1, sizeof *st);
    if (!st)
        return PORTA_E_NOMEM;
    if (n > 0) {
        st->stops = calloc((size_t)n, sizeof *st->stops);
        st->lens = calloc((size_t)n, sizeof *st->lens);
        if (!st->stops || !st->lens)
            goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (!stops[i] || !stops[i][0])
            continue;
        size_t l = strlen(stops[i]);
        st->stops[st->n] = malloc(l + 1);
        if (!st->stops[st->n])
            goto fail;
        memcpy(st->stops[st->n], stops[i], l + 1);
        st->lens[st->n++] = l;
    }
    *out = st;
    return 0;
fail:
    porta_stop_destroy(st);
    return PORTA_E_NOMEM;
}

void porta_stop_destroy(struct porta_stop *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n; i++)
        free(st->stops[i]);
    free(st->stops);
    free(st->lens);
    free(st->buf);
    free(st->out);
    free(st);
}

void porta_stop_reset(struct porta_stop *st)
{
    if (!st)
        return;
    st->len = 0;
    st->stopped = false;
}

/* Bytes at the end of s[0..n) that start a UTF-8 sequence without finishing it. */
static size_t utf8_incomplete_tail(const char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char b = (unsigned char)s[n - k];
        if ((b & 0xC0) == 0x80)
            continue; /* continuation byte: look further back */
        size_t want = b >= 0xF0 && b <= 0xF7 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        return want > k && b >= 0xC0 && b <= 0xF7 ? k : 0;
    }
    return 0;
}

/* Moves the first n bytes of buf to out and the rest to the front of buf. */
static int release(struct porta_stop *st, size_t n, size_t drop, const char **emit,
                   size_t *n_emit)
{
    if (grow(&st->out, &st->out_cap, n + 1))
        return PORTA_E_NOMEM;
    memcpy(st->out, st->buf, n);
    st->out[n] = 0;
    memmove(st->buf, st->buf + n + drop, st->len - n - drop);
    st->len -= n + drop;
    *emit = st->out;
    *n_emit = n;
    return 0;
}

int porta_stop_feed(struct porta_stop *st, const char *piece, size_t n, const char **emit,
                    size_t *n_emit, bool *hit)
{
    if (!st || (!piece && n) || !emit || !n_emit || !hit)
        return PORTA_E_INVAL;
    *emit = "";
    *n_emit = 0;
    *hit = st->stopped;
    if (st->stopped)
        return 0;
    if (grow(&st->buf, &st->cap, st->len + n + 1))
        return PORTA_E_NOMEM;
    if (n)
        memcpy(st->buf + st->len, piece, n);
    st->len += n;

    /* the earliest complete stop string wins */
    size_t first = SIZE_MAX, first_len = 0;
    for (int i = 0; i < st->n; i++) {
        size_t l = st->lens[i];
        for (size_t at = 0; at + l <= st->len && at < first; at++)
            if (st->buf[at] == st->stops[i][0] && memcmp(st->buf + at, st->stops[i], l) == 0) {
                first = at;
                first_len = l;
                break;
            }
    }
    if (first != SIZE_MAX) {
        st->stopped = true;
        *hit = true;
        int rc = release(st, first, first_len, emit, n_emit);
        st->len = 0;
        return rc;
    }
    /* hold the longest tail that a stop string starts with */
    size_t hold = 0;
    for (int i = 0; i < st->n; i++)
        for (size_t k = st->lens[i] - 1; k > hold; k--)
            if (k <= st->len && memcmp(st->buf + st->len - k, st->stops[i], k) == 0) {
                hold = k;
                break;
            }
    if (hold == 0)
        hold = utf8_incomplete_tail(st->buf, st->len);
    return release(st, st->len - hold, 0, emit, n_emit);
}

int porta_stop_flush(struct porta_stop *st, const char **emit, size_t *n_emit)
{
    if (!st || !emit || !n_emit)
        return PORTA_E_INVAL;
    *emit = "";
    *n_emit = 0;
    if (st->stopped || st->len == 0)
        return 0;
    return release(st, st->len, 0, emit, n_emit);
}

/* ---- beam search ------------------------------------------------------------------- */

struct beam_hyp {
    float score, sum_logprobs;
    int32_t eog;
    int n_tokens;
    int32_t *tokens; /* max_new_tokens slots */
};

struct porta_beam {
    struct porta_beam_params p;
    int32_t *eog_ids;
    int n_vocab;
    int n_live, len;   /* live beams; tokens generated so far by each */
    bool done;
    float *score;      /* num_beams: sum of log-probs of each live beam */
    int32_t *seq, *seq2; /* num_beams x max_new_tokens: tokens of the live beams */
    float *score2;
    struct cand *top;  /* 2 * num_beams: this step's best continuations (logit = score) */
    int32_t *from;     /* 2 * num_beams: their parent beams */
    bool *is_eog;      /* n_vocab */
    float *w;          /* n_vocab: one beam's softmax weights */
    struct beam_hyp *hyps; /* num_beams, best first */
    int n_hyps;
};

void porta_beam_params_default(struct porta_beam_params *p)
{
    memset(p, 0, sizeof *p);
    p->num_beams = 4;
    p->length_penalty = 1.0f;
    p->early_stopping = PORTA_BEAM_EARLY_HEURISTIC;
    p->max_new_tokens = 256;
}

int porta_beam_create(const struct porta_beam_params *p, int n_vocab, struct porta_beam **out)
{
    if (!p || !out)
        return PORTA_E_INVAL;
    *out = NULL;
    if (n_vocab <= 0)
        return range_err("beam n_vocab", n_vocab, "> 0");
    if (p->num_beams < 1 || p->num_beams > 1024)
        return range_err("num_beams", p->num_beams, "1..1024");
    if ((int64_t)p->num_beams * n_vocab > INT32_MAX) /* candidates are numbered beam*n_vocab+id */
        return range_err("num_beams * n_vocab", (double)p->num_beams * n_vocab, "< 2^31");
    if (!isfinite(p->length_penalty))
        return range_err("length_penalty", p->length_penalty, "finite");
    if (p->early_stopping < PORTA_BEAM_EARLY_HEURISTIC || p->early_stopping > PORTA_BEAM_EARLY_NEVER)
        return range_err("early_stopping", p->early_stopping, "0 heuristic, 1 true, 2 never");
    if (p->max_new_tokens < 1)
        return range_err("max_new_tokens", p->max_new_tokens, ">= 1");
    if (p->min_new_tokens < 0)
        return range_err("min_new_tokens", p->min_new_tokens, ">= 0");
    if (p->n_eog < 0 || (p->n_eog > 0 && !p->eog_ids))
        return range_err("n_eog", p->n_eog, ">= 0 with eog_ids set");
    for (int i = 0; i < p->n_eog; i++)
        if (p->eog_ids[i] < 0 || p->eog_ids[i] >= n_vocab)
            return range_err("eog_ids[i]", p->eog_ids[i], "inside the vocabulary");

    int nb = p->num_beams;
    size_t seq_n = (size_t)nb * (size_t)p->max_new_tokens;
    struct porta_beam *b = calloc(1, sizeof *b);
    if (!b)
        return PORTA_E_NOMEM;
    b->p = *p;
    b->n_vocab = n_vocab;
    b->eog_ids = dup_array(p->eog_ids, (size_t)p->n_eog, sizeof(int32_t));
    b->p.eog_ids = b->eog_ids;
    b->score = calloc((size_t)nb, sizeof *b->score);
    b->score2 = calloc((size_t)nb, sizeof *b->score2);
    b->seq = calloc(seq_n, sizeof *b->seq);
    b->seq2 = calloc(seq_n, sizeof *b->seq2);
    b->top = calloc(2 * (size_t)nb, sizeof *b->top);
    b->from = calloc(2 * (size_t)nb, sizeof *b->from);
    b->is_eog = calloc((size_t)n_vocab, sizeof *b->is_eog);
    b->w = malloc((size_t)n_vocab * sizeof *b->w);
    b->hyps = calloc((size_t)nb, sizeof *b->hyps);
    if ((p->n_eog && !b->eog_ids) || !b->score || !b->score2 || !b->seq || !b->seq2 || !b->top ||
        !b->from || !b->is_eog || !b->w || !b->hyps)
        goto fail;
    for (int i = 0; i < nb; i++)
        if (!(b->hyps[i].tokens = malloc((size_t)p->max_new_tokens * sizeof(int32_t))))
            goto fail;
    for (int i = 0; i < p->n_eog; i++)
        b->is_eog[p->eog_ids[i]] = true;
    b->n_live = 1; /* the prompt */
    *out = b;
    return 0;
fail:
    porta_beam_destroy(b);
    return PORTA_E_NOMEM;
}

void porta_beam_destroy(struct porta_beam *b)
{
    if (!b)
        return;
    if (b->hyps)
        for (int i = 0; i < b->p.num_beams; i++)
            free(b->hyps[i].tokens);
    free(b->hyps);
    free(b->eog_ids);
    free(b->score);
    free(b->score2);
    free(b->seq);
    free(b->seq2);
    free(b->top);
    free(b->from);
    free(b->is_eog);
    free(b->w);
    free(b);
}

int porta_beam_n_live(const struct porta_beam *b) { return b && !b->done ? b->n_live : 0; }
int porta_beam_n_hyps(const struct porta_beam *b) { return b ? b->n_hyps : 0; }

/* HF BeamHypotheses.add: keep the num_beams best by sum_logprobs / len^length_penalty. */
static void hyp_add(struct porta_beam *b, const int32_t *tokens, int n_tokens, int32_t eog,
                    float sum_logprobs, int len)
{
    float score = (float)(sum_logprobs / pow((double)len, b->p.length_penalty));
    int nb = b->p.num_beams;
    if (b->n_hyps == nb && !(score > b->hyps[nb - 1].score))
        return;
    int at = b->n_hyps < nb ? b->n_hyps++ : nb - 1; /* the worst goes if full */
    struct beam_hyp h = b->hyps[at];
    while (at > 0 && b->hyps[at - 1].score < score) { /* ties: the older stays ahead */
        b->hyps[at] = b->hyps[at - 1];
        at--;
    }
    h.score = score;
    h.sum_logprobs = sum_logprobs;
    h.eog = eog;
    h.n_tokens = n_tokens;
    memcpy(h.tokens, tokens, (size_t)n_tokens * sizeof *tokens);
    b->hyps[at] = h;
}

/* HF BeamHypotheses.is_done; best: the best candidate score of this step, cur_len: the
 * generated length that score belongs to. */
static bool hyps_done(const struct porta_beam *b, float best, int cur_len)
{
    if (b->n_hyps < b->p.num_beams)
        return false;
    if (b->p.early_stopping == PORTA_BEAM_EARLY_TRUE)
        return true;
    int len = b->p.early_stopping == PORTA_BEAM_EARLY_NEVER && b->p.length_penalty > 0
                  ? b->p.max_new_tokens : cur_len;
    double highest = best / pow((double)len, b->p.length_penalty);
    return b->hyps[b->p.num_beams - 1].score >= highest;
}

int porta_beam_finish(struct porta_beam *b)
{
    if (!b)
        return PORTA_E_INVAL;
    if (b->done)
        return 0;
    for (int i = 0; i < b->n_live && b->len > 0; i++)
        hyp_add(b, b->seq + (size_t)i * b->p.max_new_tokens, b->len, -1, b->score[i], b->len);
    b->done = true;
    b->n_live = 0;
    return 0;
}

int porta_beam_step(struct porta_beam *b, const float *const *logits, int32_t *parent,
                    int32_t *token, int *n_live, bool *done)
{
    if (!b || !logits || !parent || !token || !n_live || !done || b->done)
        return PORTA_E_INVAL;
    int nb = b->p.num_beams, k = 2 * nb, nv = b->n_vocab, m = 0;
    bool ban_eog = b->len < b->p.min_new_tokens;
    *n_live = 0;
    *done = false;

    /* the k best (beam score + log-prob) over all live beams, by a min-heap */
    for (int bi = 0; bi < b->n_live; bi++) {
        const float *l = logits[bi];
        if (!l)
            return PORTA_E_INVAL;
        /* log-softmax over the allowed tokens, shifted by the largest allowed logit */
        float max = clean(max_dense(l, nv));
        if (ban_eog) { /* an end token may be the largest: skip them */
            max = -INFINITY;
            for (int v = 0; v < nv; v++)
                if (!b->is_eog[v] && clean(l[v]) > max)
                    max = clean(l[v]);
        }
        if (max == -INFINITY) {
            porta_err("beam: live beam %d has no finite logit", bi);
            return PORTA_E_RANGE;
        }
        weights_dense(l, nv, max, 1.0f, b->w);
        for (int i = 0; ban_eog && i < b->p.n_eog; i++)
            b->w[b->p.eog_ids[i]] = 0;
        float base = b->score[bi] - max - (float)log(sum_dense(b->w, nv));
        for (int v = 0; v < nv; v++) {
            if (!(l[v] > -INFINITY) || (ban_eog && b->is_eog[v])) /* -inf, NaN, banned */
                continue;
            float lv = clean(l[v]);
            /* candidate id = flat index, so ties prefer the lower beam, then the lower token */
            struct cand c = { base + lv, (int32_t)(bi * nv + v) };
            if (m < k) {
                b->top[m] = c;
                heap_up(b->top, m++);
            } else if (better(c, b->top[0])) {
                b->top[0] = c;
                heap_down(b->top, m, 0);
            }
        }
    }
    qsort(b->top, (size_t)m, sizeof *b->top, cand_cmp);

    /* first num_beams ranks: end tokens finish hypotheses, others become live beams */
    int nl = 0, T = b->p.max_new_tokens;
    for (int r = 0; r < m && nl < nb; r++) {
        int pb = b->top[r].id / nv;
        int32_t v = b->top[r].id % nv;
        const int32_t *pseq = b->seq + (size_t)pb * T;
        if (b->is_eog[v]) {
            if (r < nb)
                hyp_add(b, pseq, b->len, v, b->top[r].logit, b->len + 1);
            continue;
        }
        memcpy(b->seq2 + (size_t)nl * T, pseq, (size_t)b->len * sizeof *pseq);
        b->seq2[(size_t)nl * T + b->len] = v;
        b->score2[nl] = b->top[r].logit;
        parent[nl] = pb;
        token[nl] = v;
        nl++;
    }
    int32_t *ts = b->seq;
    b->seq = b->seq2;
    b->seq2 = ts;
    float *tf = b->score;
    b->score = b->score2;
    b->score2 = tf;
    b->n_live = nl;
    b->len++;

    bool fin = m > 0 && hyps_done(b, b->top[0].logit, b->len);
    if (fin || nl == 0) {
        b->done = true;
        b->n_live = 0;
    } else if (b->len >= T) {
        porta_beam_finish(b);
    }
    *done = b->done;
    *n_live = b->n_live;
    return 0;
}

int porta_beam_hyp(const struct porta_beam *b, int i, const int32_t **tokens, int *n_tokens,
                   int32_t *eog, float *score, float *sum_logprobs)
{
    if (!b || i < 0 || i >= b->n_hyps)
        return PORTA_E_RANGE;
    const struct beam_hyp *h = &b->hyps[i];
    if (tokens)
        *tokens = h->tokens;
    if (n_tokens)
        *n_tokens = h->n_tokens;
    if (eog)
        *eog = h->eog;
    if (score)
        *score = h->score;
    if (sum_logprobs)
        *sum_logprobs = h->sum_logprobs;
    return 0;
}

void porta_beam_place(int k, const int *cur, const int32_t *parent, int n_live, int *next,
                      int *copy_from)
{
    bool held[16] = { false };
    for (int i = 0; i < n_live; i++) {
        int p = cur[parent[i]];
        next[i] = held[p] ? -1 : p;
        copy_from[i] = -1;
        held[p] = true;
    }
    for (int i = 0, j = 0; i < n_live; i++) {
        if (next[i] >= 0)
            continue;
        while (j < k && held[j])
            j++;
        held[j] = true;
        next[i] = j;
        copy_from[i] = cur[parent[i]];
    }
}
