/* test_sampler.c - each sampling parameter on small synthetic logits with known answers,
 * seeded determinism, empirical frequencies against softmax, log-probabilities, the
 * stop-string matcher across piece boundaries, and beam search against brute force. */
#include "sampler.h"
#include "config.h"
#include "porta.h"
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static void quiet(enum porta_log_level lv, const char *msg, void *user)
{
    (void)lv;
    (void)msg;
    (void)user;
}

static struct porta_sampler *make(const struct porta_sampler_params *p, int n_vocab)
{
    struct porta_sampler *s = NULL;
    ck_assert_int_eq(porta_sampler_create(p, n_vocab, &s), 0);
    return s;
}

/* Draws n tokens from the same logits (copied each time) and counts them. */
static void histogram(struct porta_sampler *s, const float *logits, int nv, int n, int *count)
{
    float *l = malloc((size_t)nv * sizeof *l);
    struct porta_sample_result r;
    memset(count, 0, (size_t)nv * sizeof *count);
    for (int i = 0; i < n; i++) {
        memcpy(l, logits, (size_t)nv * sizeof *l);
        ck_assert_int_eq(porta_sampler_sample(s, l, NULL, 0, 0, &r), 0);
        ck_assert(r.id >= 0 && r.id < nv);
        count[r.id]++;
    }
    free(l);
}

/* |freq - p| within 5 standard deviations for every token (and 0 where p == 0). */
static void check_freq(const int *count, const double *p, int nv, int n)
{
    for (int i = 0; i < nv; i++) {
        double f = (double)count[i] / n, sd = sqrt(p[i] * (1 - p[i]) / n);
        if (p[i] == 0)
            ck_assert_msg(count[i] == 0, "token %d drawn %d times, p = 0", i, count[i]);
        else
            ck_assert_msg(fabs(f - p[i]) <= 5 * sd + 1e-9, "token %d: freq %.4f vs p %.4f", i, f,
                          p[i]);
    }
}

static void softmax(const float *l, int n, double t, double *p)
{
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; i++)
        m = l[i] > m ? l[i] : m;
    for (int i = 0; i < n; i++)
        s += (p[i] = isinf(l[i]) ? 0 : exp((l[i] - m) / t));
    for (int i = 0; i < n; i++)
        p[i] /= s;
}

START_TEST(test_validation)
{
    struct porta_sampler_params p;
    struct porta_sampler *s = NULL;
    int32_t bad_id = 7;
    float val = 1;
    static const struct { const char *field; int what; } cases[] = {
        { "temperature", 0 }, { "top_k", 1 }, { "top_p", 2 }, { "top_p", 3 }, { "min_p", 4 },
        { "repetition_penalty", 5 }, { "presence_penalty", 6 }, { "no_repeat_ngram_size", 7 },
        { "min_new_tokens", 8 }, { "top_logprobs", 9 }, { "logit_bias", 10 }, { "temperature", 11 },
        { "end-of-generation", 12 },
    };
    porta_log_set_sink(quiet, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        porta_sampler_params_default(&p);
        switch (cases[i].what) {
        case 0: p.temperature = -0.5f; break;
        case 1: p.top_k = -1; break;
        case 2: p.top_p = 0; break;
        case 3: p.top_p = 1.5f; break;
        case 4: p.min_p = 2; break;
        case 5: p.repetition_penalty = 0; break;
        case 6: p.presence_penalty = NAN; break;
        case 7: p.no_repeat_ngram_size = -2; break;
        case 8: p.min_new_tokens = -1; break;
        case 9: p.top_logprobs = 21; break;
        case 10: p.bias_ids = &bad_id; p.bias_vals = &val; p.n_bias = 1; break;
        case 11: p.temperature = INFINITY; break;
        case 12: p.eog_ids = &bad_id; p.n_eog = 1; break;
        }
        s = (struct porta_sampler *)1;
        ck_assert_int_eq(porta_sampler_create(&p, 5, &s), PORTA_E_RANGE);
        ck_assert_ptr_null(s);
        ck_assert_msg(strstr(porta_log_last_error(), cases[i].field), "case %zu: message \"%s\"",
                      i, porta_log_last_error());
    }
    porta_sampler_params_default(&p);
    ck_assert_int_eq(porta_sampler_create(&p, 0, &s), PORTA_E_RANGE);
    p.n_bias = 1; /* arrays missing */
    ck_assert_int_eq(porta_sampler_create(&p, 5, &s), PORTA_E_INVAL);
    ck_assert_int_eq(porta_sampler_create(NULL, 5, &s), PORTA_E_INVAL);
    porta_log_set_sink(NULL, NULL);
    porta_sampler_destroy(NULL);

    /* bad sample arguments */
    porta_sampler_params_default(&p);
    s = make(&p, 4);
    float l[4] = { 0 };
    int32_t ctx[2] = { 0, 1 };
    struct porta_sample_result r;
    ck_assert_int_eq(porta_sampler_sample(s, l, ctx, 2, 3, &r), PORTA_E_INVAL);
    ck_assert_int_eq(porta_sampler_sample(s, l, NULL, 2, 0, &r), PORTA_E_INVAL);
    ck_assert_int_eq(porta_sampler_sample(s, NULL, ctx, 2, 0, &r), PORTA_E_INVAL);
    ck_assert_int_eq(porta_sampler_sample(s, l, ctx, 2, 0, NULL), PORTA_E_INVAL);
    porta_sampler_destroy(s);
}
END_TEST

START_TEST(test_greedy)
{
    struct porta_sampler_params p;
    porta_sampler_params_default(&p);
    p.temperature = 0;
    p.logprobs = true;
    p.top_logprobs = 3;
    struct porta_sampler *s = make(&p, 6);
    float l[6] = { 0.5f, 3.0f, NAN, 3.0f, -INFINITY, 1.0f };
    struct porta_sample_result r;
    ck_assert_int_eq(porta_sampler_sample(s, l, NULL, 0, 0, &r), 0);
    ck_assert_int_eq(r.id, 1); /* tie with 3: lowest id */
    double lse = log(exp(0.5) + 2 * exp(3.0) + exp(1.0));
    ck_assert_double_eq_tol(r.logprob, 3.0 - lse, 1e-5);
    ck_assert_int_eq(r.n_top, 3);
    ck_assert_int_eq(r.top_ids[0], 1);
    ck_assert_int_eq(r.top_ids[1], 3);
    ck_assert_int_eq(r.top_ids[2], 5);
    ck_assert_double_eq_tol(r.top_logprobs[2], 1.0 - lse, 1e-5);

    porta_sampler_destroy(s);

    /* +inf counts as the largest finite value: it wins every path */
    const int topks[3] = { 0, 0, 3 };
    const float temps[3] = { 0.0f, 1.0f, 1.0f };
    for (int k = 0; k < 3; k++) {
        p.temperature = temps[k];
        p.top_k = topks[k];
        s = make(&p, 6);
        float inf[6] = { 1, 2, NAN, INFINITY, 3, -INFINITY };
        ck_assert_int_eq(porta_sampler_sample(s, inf, NULL, 0, 0, &r), 0);
        ck_assert_int_eq(r.id, 3);
        ck_assert(r.logprob == 0.0f && r.top_ids[0] == 3);
        porta_sampler_destroy(s);
    }
    p.temperature = 0;
    p.top_k = 0;
    s = make(&p, 6);

    /* everything banned */
    float dead[6] = { -INFINITY, -INFINITY, NAN, -INFINITY, -INFINITY, -INFINITY };
    porta_log_set_sink(quiet, NULL);
    ck_assert_int_eq(porta_sampler_sample(s, dead, NULL, 0, 0, &r), PORTA_E_RANGE);
    porta_log_set_sink(NULL, NULL);
    porta_sampler_destroy(s);
}
END_TEST

START_TEST(test_temperature_frequencies)
{
    enum { NV = 5, N = 40000 };
    const float l[NV] = { 1.0f, 0.0f, -1.0f, 2.0f, 0.5f };
    const float temps[] = { 1.0f, 0.7f, 2.5f };
    int count[NV];
    double p[NV];
    for (int t = 0; t < 3; t++) {
        struct porta_sampler_params sp;
        porta_sampler_params_default(&sp);
        sp.temperature = temps[t];
        sp.seed = 1234 + (uint64_t)t;
        struct porta_sampler *s = make(&sp, NV);
        histogram(s, l, NV, N, count);
        softmax(l, NV, temps[t], p);
        check_freq(count, p, NV, N);
        porta_sampler_destroy(s);
    }
}
END_TEST

START_TEST(test_top_k)
{
    enum { NV = 6, N = 20000 };
    const float l[NV] = { 0.1f, 2.0f, -1.0f, 1.5f, 0.3f, 1.0f };
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    sp.top_k = 2;
    sp.seed = 7;
    struct porta_sampler *s = make(&sp, NV);
    int count[NV];
    histogram(s, l, NV, N, count);
    float kept[NV];
    for (int i = 0; i < NV; i++)
        kept[i] = i == 1 || i == 3 ? l[i] : -INFINITY;
    double p[NV];
    softmax(kept, NV, 1.0, p);
    check_freq(count, p, NV, N); /* exactly tokens 1 and 3, in softmax proportion */
    ck_assert(count[1] > 0 && count[3] > 0);
    porta_sampler_destroy(s);

    /* top_k = 1 is greedy; top_k >= n_vocab is off */
    sp.top_k = 1;
    s = make(&sp, NV);
    histogram(s, l, NV, 200, count);
    ck_assert_int_eq(count[1], 200);
    porta_sampler_destroy(s);
    sp.top_k = 100;
    s = make(&sp, NV);
    histogram(s, l, NV, N, count);
    softmax(l, NV, 1.0, p);
    check_freq(count, p, NV, N);
    porta_sampler_destroy(s);
}
END_TEST

/* probabilities 0.5, 0.3, 0.15, 0.05 (in shuffled positions) */
static const float l4[4] = { -1.897120f, -0.693147f, -2.995732f, -1.203973f };
/* ids by probability: 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05) */

static void support(const struct porta_sampler_params *sp, const bool *want)
{
    int count[4];
    struct porta_sampler *s = make(sp, 4);
    histogram(s, l4, 4, 4000, count);
    for (int i = 0; i < 4; i++)
        ck_assert_msg((count[i] > 0) == want[i], "token %d drawn %d times", i, count[i]);
    porta_sampler_destroy(s);
}

START_TEST(test_top_p_min_p)
{
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    sp.seed = 99;
    for (int k = 0; k <= 3; k += 3) { /* unsorted path (no top-k) and after top-k */
        sp.top_k = k;
        sp.top_p = 0.4f;
        support(&sp, (bool[]){ false, true, false, false });
        sp.top_p = 0.75f;
        support(&sp, (bool[]){ false, true, false, true });
        sp.top_p = 0.85f;
        support(&sp, (bool[]){ true, true, false, true });
        sp.top_p = 1.0f;
        support(&sp, (bool[]){ true, true, k == 0, true });
    }
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.2f; /* threshold 0.1 */
    support(&sp, (bool[]){ true, true, false, true });
    sp.min_p = 0.5f; /* threshold 0.25 */
    support(&sp, (bool[]){ false, true, false, true });
    sp.min_p = 1.0f;
    support(&sp, (bool[]){ false, true, false, false });
    /* min_p is relative to the temperature-scaled distribution: at T = 0.5 the
     * probabilities are ~ 0.69, 0.25, 0.06, 0.007, so min_p 0.2 keeps only 1 and 3 */
    sp.temperature = 0.5f;
    sp.min_p = 0.2f;
    support(&sp, (bool[]){ false, true, false, true });
}
END_TEST

START_TEST(test_top_p_large_vocab)
{
    /* 1000 equal logits: top_p = 0.5005 keeps ids 0..500 (ties go to the lower id), which
     * forces the partial sort to extend several times past its first block */
    enum { NV = 1000, N = 30000 };
    float l[NV];
    for (int i = 0; i < NV; i++)
        l[i] = 0.25f;
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    sp.top_p = 0.5005f;
    sp.seed = 5;
    struct porta_sampler *s = make(&sp, NV);
    int *count = malloc(NV * sizeof *count);
    histogram(s, l, NV, N, count);
    for (int i = 0; i < NV; i++)
        ck_assert_msg((count[i] > 0) == (i <= 500), "token %d drawn %d times", i, count[i]);
    porta_sampler_destroy(s);

    /* random logits: the nucleus found without sorting (no top-k) and after top-k over
     * every finite logit (sorted) are both the HF set, drawn in softmax proportion */
    tu_fill(l, NV, 42, 6.0f);
    l[NV - 1] = -INFINITY;
    double p[NV];
    softmax(l, NV, 1.0, p);
    int order[NV];
    for (int i = 0; i < NV; i++)
        order[i] = i;
    for (int i = 1; i < NV; i++) /* insertion sort by probability, descending */
        for (int j = i; j > 0 && p[order[j]] > p[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double kept[NV] = { 0 }, before = 0, mass = 0;
    int n_kept = 0;
    for (int i = 0; i < NV && before < 0.9; i++) {
        kept[order[i]] = p[order[i]];
        before += p[order[i]];
        n_kept++;
    }
    for (int i = 0; i < NV; i++)
        mass += kept[i];
    for (int i = 0; i < NV; i++)
        kept[i] /= mass;
    ck_assert(n_kept > 64 && n_kept < 400); /* spans several partition rounds */
    struct porta_sampler_params a = sp, b = sp;
    a.top_p = b.top_p = 0.9f;
    b.top_k = NV - 1;
    struct porta_sampler *sa = make(&a, NV), *sb = make(&b, NV);
    for (int k = 0; k < 2; k++) {
        histogram(k ? sb : sa, l, NV, 10000, count);
        check_freq(count, kept, NV, 10000);
    }
    porta_sampler_destroy(sa);
    porta_sampler_destroy(sb);
    free(count);
}
END_TEST

START_TEST(test_penalties)
{
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    sp.repetition_penalty = 2.0f;
    struct porta_sampler *s = make(&sp, 5);
    float l[5] = { 2.0f, -2.0f, 1.0f, 0.5f, 0.0f };
    const int32_t ctx[] = { 0, 1, 1, 99, -3, 4 }; /* out-of-vocabulary ids are ignored */
    ck_assert_int_eq(porta_sampler_process(s, l, ctx, 6, 2), 0);
    const float want[5] = { 1.0f, -4.0f, 1.0f, 0.5f, 0.0f }; /* each id once, prompt included */
    for (int i = 0; i < 5; i++)
        ck_assert_float_eq(l[i], want[i]);
    /* a second call penalizes again (the dedupe marks are per call) */
    ck_assert_int_eq(porta_sampler_process(s, l, ctx, 6, 2), 0);
    ck_assert_float_eq(l[0], 0.5f);
    ck_assert_float_eq(l[1], -8.0f);
    porta_sampler_destroy(s);

    /* presence / frequency: generated tokens only */
    porta_sampler_params_default(&sp);
    sp.presence_penalty = 0.5f;
    sp.frequency_penalty = 0.25f;
    s = make(&sp, 5);
    float m[5] = { 1, 1, 1, 1, 1 };
    const int32_t c2[] = { 3, 3, 0, 2, 0, 0 }; /* prompt: 3, 3 */
    ck_assert_int_eq(porta_sampler_process(s, m, c2, 6, 2), 0);
    ck_assert_float_eq_tol(m[0], 1 - 0.5f - 3 * 0.25f, 1e-6);
    ck_assert_float_eq_tol(m[2], 1 - 0.5f - 0.25f, 1e-6);
    ck_assert_float_eq(m[3], 1.0f);
    ck_assert_float_eq(m[1], 1.0f);
    /* counts are cleared between calls */
    float m2[5] = { 1, 1, 1, 1, 1 };
    ck_assert_int_eq(porta_sampler_process(s, m2, c2, 6, 2), 0);
    ck_assert_float_eq_tol(m2[0], 1 - 0.5f - 3 * 0.25f, 1e-6);
    porta_sampler_destroy(s);
}
END_TEST

START_TEST(test_no_repeat_ngram)
{
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    const int32_t ctx[] = { 5, 1, 2, 3, 1, 2, 4, 1, 2 };
    static const struct { int n; bool banned[8]; } cases[] = {
        { 3, { [3] = true, [4] = true } },  /* "1 2" was followed by 3 and by 4 */
        { 2, { [3] = true, [4] = true } },  /* "2" was followed by 3 and by 4 */
        { 1, { [1] = true, [2] = true, [3] = true, [4] = true, [5] = true } }, /* all seen */
        { 4, { false } },                   /* "4 1 2" occurs only at the end */
        { 10, { false } },                  /* longer than the context */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sp.no_repeat_ngram_size = cases[c].n;
        struct porta_sampler *s = make(&sp, 8);
        float l[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
        ck_assert_int_eq(porta_sampler_process(s, l, ctx, 9, 0), 0);
        for (int i = 0; i < 8; i++)
            ck_assert_msg((l[i] == -INFINITY) == cases[c].banned[i], "n=%d token %d: %g",
                          cases[c].n, i, l[i]);
        porta_sampler_destroy(s);
    }
    /* a 4-gram "1 2 3 7" seen before, context ending in "1 2 3": 7 is banned */
    sp.no_repeat_ngram_size = 4;
    struct porta_sampler *s = make(&sp, 8);
    const int32_t c2[] = { 1, 2, 3, 7, 0, 1, 2, 3 };
    float l[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
    ck_assert_int_eq(porta_sampler_process(s, l, c2, 8, 0), 0);
    for (int i = 0; i < 8; i++)
        ck_assert((l[i] == -INFINITY) == (i == 7));
    porta_sampler_destroy(s);
}
END_TEST

START_TEST(test_min_new_tokens_and_bias)
{
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    const int32_t eog[] = { 0, 3 };
    sp.eog_ids = eog;
    sp.n_eog = 2;
    sp.min_new_tokens = 2;
    sp.temperature = 0;
    struct porta_sampler *s = make(&sp, 4);
    const int32_t ctx[] = { 1, 2, 2, 1 }; /* prompt of 2 */
    struct porta_sample_result r;
    float l[4];
    for (int gen = 0; gen <= 2; gen++) {
        float init[4] = { 5, 1, 2, 4 };
        memcpy(l, init, sizeof l);
        ck_assert_int_eq(porta_sampler_sample(s, l, ctx, 2 + gen, 2, &r), 0);
        ck_assert_int_eq(r.id, gen < 2 ? 2 : 0);
        ck_assert((l[0] == -INFINITY) == (gen < 2) && (l[3] == -INFINITY) == (gen < 2));
    }
    porta_sampler_destroy(s);

    /* bias: added; <= -100 or -inf bans */
    porta_sampler_params_default(&sp);
    sp.temperature = 0;
    const int32_t ids[] = { 2, 0, 1 };
    const float vals[] = { 3.5f, -100.0f, -INFINITY };
    sp.bias_ids = ids;
    sp.bias_vals = vals;
    sp.n_bias = 3;
    s = make(&sp, 4);
    float b[4] = { 10, 9, 0, 3 };
    ck_assert_int_eq(porta_sampler_sample(s, b, NULL, 0, 0, &r), 0);
    ck_assert_int_eq(r.id, 2);
    ck_assert_float_eq(b[2], 3.5f);
    ck_assert(b[0] == -INFINITY && b[1] == -INFINITY);
    porta_sampler_destroy(s);
}
END_TEST

START_TEST(test_seed)
{
    enum { NV = 50, N = 300 };
    float l[NV], w[NV];
    tu_fill(l, NV, 3, 2.0f);
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    sp.temperature = 0.9f;
    sp.top_k = 20;
    sp.top_p = 0.95f;
    int32_t seq[3][N];
    const uint64_t seeds[3] = { 17, 17, 18 };
    for (int k = 0; k < 3; k++) {
        sp.seed = seeds[k];
        struct porta_sampler *s = make(&sp, NV);
        struct porta_sample_result r;
        for (int i = 0; i < N; i++) {
            memcpy(w, l, sizeof w);
            ck_assert_int_eq(porta_sampler_sample(s, w, NULL, 0, 0, &r), 0);
            seq[k][i] = r.id;
        }
        porta_sampler_destroy(s);
    }
    int same01 = 0, same02 = 0;
    for (int i = 0; i < N; i++) {
        same01 += seq[0][i] == seq[1][i];
        same02 += seq[0][i] == seq[2][i];
    }
    ck_assert_int_eq(same01, N);
    ck_assert_int_lt(same02, N * 3 / 4);
}
END_TEST

START_TEST(test_logprobs)
{
    enum { NV = 300 };
    float l[NV], w[NV];
    tu_fill(l, NV, 11, 3.0f);
    struct porta_sampler_params sp;
    porta_sampler_params_default(&sp);
    sp.temperature = 0.8f;
    sp.top_k = 10;
    sp.logprobs = true;
    sp.top_logprobs = 5;
    sp.seed = 3;
    struct porta_sampler *s = make(&sp, NV);
    double p[NV];
    softmax(l, NV, 0.8, p);
    for (int it = 0; it < 50; it++) {
        struct porta_sample_result r;
        memcpy(w, l, sizeof w);
        ck_assert_int_eq(porta_sampler_sample(s, w, NULL, 0, 0, &r), 0);
        /* log-softmax at the temperature, over the whole vocabulary (before top-k) */
        ck_assert_double_eq_tol(r.logprob, log(p[r.id]), 1e-4);
        ck_assert_int_eq(r.n_top, 5);
        for (int i = 0; i < 5; i++) {
            ck_assert_double_eq_tol(r.top_logprobs[i], log(p[r.top_ids[i]]), 1e-4);
            if (i > 0)
                ck_assert(r.top_logprobs[i] <= r.top_logprobs[i - 1]);
        }
        int above = 0; /* nothing outside the list beats its last entry */
        for (int i = 0; i < NV; i++)
            above += p[i] > p[r.top_ids[4]];
        ck_assert_int_eq(above, 4);
    }
    porta_sampler_destroy(s);
    /* off: NAN and no list */
    sp.logprobs = false;
    sp.top_logprobs = 0;
    s = make(&sp, NV);
    struct porta_sample_result r;
    memcpy(w, l, sizeof w);
    ck_assert_int_eq(porta_sampler_sample(s, w, NULL, 0, 0, &r), 0);
    ck_assert(isnan(r.logprob) && r.n_top == 0);
    porta_sampler_destroy(s);
}
END_TEST

/* ---- stop strings ---- */

static void feed_all(struct porta_stop *st, const char *const *pieces, int n, char *out,
                     bool *hit_out)
{
    size_t len = 0;
    bool hit = false;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *e;
        size_t ne;
        ck_assert_int_eq(porta_stop_feed(st, pieces[i], strlen(pieces[i]), &e, &ne, &hit), 0);
        memcpy(out + len, e, ne);
        len += ne;
    }
    if (!hit) {
        const char *e;
        size_t ne;
        ck_assert_int_eq(porta_stop_flush(st, &e, &ne), 0);
        memcpy(out + len, e, ne);
        len += ne;
    }
    out[len] = 0;
    *hit_out = hit;
}

START_TEST(test_stop_strings)
{
    const char *stops[] = { "world", "\n\nUser:", "", NULL, "<|end|>" };
    struct porta_stop *st = NULL;
    ck_assert_int_eq(porta_stop_create(stops, 5, &st), 0);
    const char *e;
    size_t ne;
    bool hit;

    /* step by step: what is held and released */
    ck_assert_int_eq(porta_stop_feed(st, "Hello", 5, &e, &ne, &hit), 0);
    ck_assert(ne == 5 && memcmp(e, "Hello", 5) == 0 && !hit);
    ck_assert_int_eq(porta_stop_feed(st, " wor", 4, &e, &ne, &hit), 0);
    ck_assert(ne == 1 && e[0] == ' ' && !hit); /* "wor" held */
    ck_assert_int_eq(porta_stop_feed(st, "ld! more", 8, &e, &ne, &hit), 0);
    ck_assert(ne == 0 && hit);
    ck_assert_int_eq(porta_stop_feed(st, "after", 5, &e, &ne, &hit), 0);
    ck_assert(ne == 0 && hit); /* stays stopped */
    porta_stop_reset(st);

    /* a held prefix that turns out not to be a stop is released */
    ck_assert_int_eq(porta_stop_feed(st, "wo", 2, &e, &ne, &hit), 0);
    ck_assert_uint_eq(ne, 0);
    ck_assert_int_eq(porta_stop_feed(st, "w!", 2, &e, &ne, &hit), 0);
    ck_assert(ne == 4 && memcmp(e, "wow!", 4) == 0 && !hit);
    porta_stop_reset(st);

    char out[256];
    const char *p1[] = { "Sure.\n", "\nUs", "er: hi" };
    feed_all(st, p1, 3, out, &hit);
    ck_assert(hit);
    ck_assert_str_eq(out, "Sure."); /* the stop string began with the "\n\n" */
    porta_stop_reset(st);
    const char *p2[] = { "a\n\nUse", "d it", "<|en", "d" };
    feed_all(st, p2, 4, out, &hit);
    ck_assert(!hit);
    ck_assert_str_eq(out, "a\n\nUsed it<|end"); /* flushed at the end */
    porta_stop_reset(st);
    const char *p3[] = { "x<|e", "nd|>y" };
    feed_all(st, p3, 2, out, &hit);
    ck_assert(hit);
    ck_assert_str_eq(out, "x");
    porta_stop_reset(st);

    /* incomplete UTF-8 is held: "é" split over two pieces */
    ck_assert_int_eq(porta_stop_feed(st, "caf\xC3", 4, &e, &ne, &hit), 0);
    ck_assert(ne == 3 && memcmp(e, "caf", 3) == 0);
    ck_assert_int_eq(porta_stop_feed(st, "\xA9!", 2, &e, &ne, &hit), 0);
    ck_assert(ne == 3 && memcmp(e, "\xC3\xA9!", 3) == 0);
    ck_assert_int_eq(porta_stop_feed(st, "\xE6\xBC", 2, &e, &ne, &hit), 0); /* 3-byte char */
    ck_assert_uint_eq(ne, 0);
    ck_assert_int_eq(porta_stop_flush(st, &e, &ne), 0);
    ck_assert_uint_eq(ne, 2); /* the end releases even an incomplete tail */
    porta_stop_destroy(st);
    porta_stop_destroy(NULL);
}
END_TEST

START_TEST(test_stop_random_splits)
{
    /* the output equals the text before the first stop, however the text is cut */
    const char *stops[] = { "STOP", "ST", "<eos>" };
    const char *texts[] = { "abc S T xyz ST<eos>", "no stop in here at all, S T O P", "<eo<eos>",
                            "SSSTOP", "xS" };
    const char *want[] = { "abc S T xyz ", "no stop in here at all, S T O P", "<eo", "SS", "xS" };
    unsigned long long rng = 77;
    struct porta_stop *st = NULL;
    ck_assert_int_eq(porta_stop_create(stops, 3, &st), 0);
    for (int t = 0; t < 5; t++)
        for (int trial = 0; trial < 200; trial++) {
            const char *s = texts[t];
            size_t n = strlen(s), at = 0, len = 0;
            char out[128];
            bool hit = false;
            porta_stop_reset(st);
            while (at < n) {
                size_t k = 1 + tu_rng_next(&rng) % 4;
                k = k > n - at ? n - at : k;
                const char *e;
                size_t ne;
                ck_assert_int_eq(porta_stop_feed(st, s + at, k, &e, &ne, &hit), 0);
                memcpy(out + len, e, ne);
                len += ne;
                at += k;
            }
            const char *e;
            size_t ne;
            ck_assert_int_eq(porta_stop_flush(st, &e, &ne), 0);
            memcpy(out + len, e, ne);
            len += ne;
            out[len] = 0;
            ck_assert_str_eq(out, want[t]);
        }
    porta_stop_destroy(st);
}
END_TEST

/* ---- beam search ---- */

enum { BV = 4, BEOS = 0, BMAX = 4 };

/* A fake model: logits as a fixed pseudo-random function of the sequence. */
static void fake_logits(const int32_t *seq, int n, float *out)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++)
        h = (h ^ (uint64_t)(seq[i] + 1)) * 1099511628211ULL;
    for (int v = 0; v < BV; v++) {
        unsigned long long x = h ^ ((uint64_t)(v + 1) * 0x9E3779B97F4A7C15ULL);
        tu_rng_next(&x);
        out[v] = (float)((tu_rng_next(&x) >> 40) * (1.0 / (1 << 24)) * 6.0 - 3.0);
    }
}

struct bf_hyp {
    int32_t tok[BMAX];
    int n;
    bool eos;
    double score;
};

/* Every finished sequence of the fake model, scored as HF does. */
static void brute(int32_t *seq, int n, double sum, double lp, struct bf_hyp *h, int *nh)
{
    if (n == BMAX) {
        struct bf_hyp x = { .n = n, .eos = false, .score = sum / pow(n, lp) };
        memcpy(x.tok, seq, sizeof(int32_t) * (size_t)n);
        h[(*nh)++] = x;
        return;
    }
    float l[BV];
    fake_logits(seq, n, l);
    double m = -INFINITY, z = 0;
    for (int v = 0; v < BV; v++)
        m = l[v] > m ? l[v] : m;
    for (int v = 0; v < BV; v++)
        z += exp(l[v] - m);
    for (int v = 0; v < BV; v++) {
        double lpv = l[v] - m - log(z);
        if (v == BEOS) {
            struct bf_hyp x = { .n = n, .eos = true, .score = (sum + lpv) / pow(n + 1, lp) };
            memcpy(x.tok, seq, sizeof(int32_t) * (size_t)n);
            h[(*nh)++] = x;
        } else {
            seq[n] = v;
            brute(seq, n + 1, sum + lpv, lp, h, nh);
        }
    }
}

static int bf_cmp(const void *a, const void *b)
{
    double x = ((const struct bf_hyp *)a)->score, y = ((const struct bf_hyp *)b)->score;
    return x > y ? -1 : x < y;
}

/* Drives a beam search like an engine: one model call per live beam, sequences (the "KV
 * cache") rearranged by parent after each step. Returns the number of steps. */
static int drive(struct porta_beam *b, int nb)
{
    int32_t seqs[256][BMAX], next[256][BMAX], parent[256], token[256];
    float logit_store[256][BV];
    const float *lp[256];
    int n_live = porta_beam_n_live(b), len = 0, steps = 0;
    bool done = false;
    ck_assert_int_eq(n_live, 1);
    while (!done) {
        for (int i = 0; i < n_live; i++) {
            fake_logits(seqs[i], len, logit_store[i]);
            lp[i] = logit_store[i];
        }
        ck_assert_int_eq(porta_beam_step(b, lp, parent, token, &n_live, &done), 0);
        ck_assert_int_le(n_live, nb);
        for (int i = 0; i < n_live; i++) {
            ck_assert(parent[i] >= 0 && parent[i] < 256 && token[i] != BEOS);
            memcpy(next[i], seqs[parent[i]], sizeof(int32_t) * (size_t)len);
            next[i][len] = token[i];
        }
        memcpy(seqs, next, sizeof seqs);
        len++;
        steps++;
        ck_assert_int_le(steps, BMAX);
    }
    ck_assert_int_eq(porta_beam_n_live(b), 0);
    return steps;
}

/* porta_beam_place: first children keep their parent's sequence, the others take sequences
 * of beams that ended and are told to copy */
/* the config's sampling section becomes a request's starting parameters; what the config
 * does not name keeps porta_sampler_params_default's value */
START_TEST(test_params_from_config)
{
    struct porta_config cfg;
    porta_config_defaults(&cfg);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.temperature", "0.25"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.top_k", "7"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.top_p", "0.5"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.min_p", "0.125"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.repetition_penalty", "1.5"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.presence_penalty", "-1"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.frequency_penalty", "0.75"), 0);
    ck_assert_int_eq(porta_config_set(&cfg, "sampling.seed", "99"), 0);
    struct porta_sampler_params p;
    memset(&p, 0xAB, sizeof p);
    porta_sampler_params_from_config(&p, &cfg);
    ck_assert_float_eq(p.temperature, 0.25f);
    ck_assert_int_eq(p.top_k, 7);
    ck_assert_float_eq(p.top_p, 0.5f);
    ck_assert_float_eq(p.min_p, 0.125f);
    ck_assert_float_eq(p.repetition_penalty, 1.5f);
    ck_assert_float_eq(p.presence_penalty, -1.0f);
    ck_assert_float_eq(p.frequency_penalty, 0.75f);
    ck_assert_uint_eq(p.seed, 0);              /* the caller draws or copies the seed */
    ck_assert_int_eq(p.no_repeat_ngram_size, 0);
    ck_assert_int_eq(p.logprobs, 0);
}
END_TEST

START_TEST(test_beam_place)
{
    /* old beams 0, 1, 2 in sequences 2, 0, 1; new beams continue old 1, 1, 2 */
    int cur[3] = { 2, 0, 1 }, next[3], from[3];
    int32_t parent[3] = { 1, 1, 2 };
    porta_beam_place(3, cur, parent, 3, next, from);
    ck_assert_int_eq(next[0], 0);
    ck_assert_int_eq(from[0], -1);
    ck_assert_int_eq(next[1], 2);              /* old beam 0's sequence: it ended */
    ck_assert_int_eq(from[1], 0);
    ck_assert_int_eq(next[2], 1);
    ck_assert_int_eq(from[2], -1);
    /* the first step: one live beam in sequence 0, three children */
    int cur1[1] = { 0 };
    int32_t p1[3] = { 0, 0, 0 };
    porta_beam_place(3, cur1, p1, 3, next, from);
    ck_assert(next[0] == 0 && from[0] == -1 && next[1] == 1 && from[1] == 0 && next[2] == 2 &&
              from[2] == 0);
}
END_TEST

START_TEST(test_beam_exhaustive)
{
    /* with more beams than sequences, beam search is exhaustive: every hypothesis and its
     * score must equal the brute-force enumeration, in order */
    const double lps[] = { 1.0, 0.0, 2.0, -0.5 };
    for (int k = 0; k < 4; k++) {
        struct bf_hyp h[200];
        int nh = 0;
        int32_t seq[BMAX];
        brute(seq, 0, 0, lps[k], h, &nh);
        ck_assert_int_eq(nh, 1 + 3 + 9 + 27 + 81);
        qsort(h, (size_t)nh, sizeof h[0], bf_cmp);

        struct porta_beam_params bp;
        porta_beam_params_default(&bp);
        bp.num_beams = 128;
        bp.length_penalty = (float)lps[k];
        bp.max_new_tokens = BMAX;
        const int32_t eog = BEOS;
        bp.eog_ids = &eog;
        bp.n_eog = 1;
        struct porta_beam *b = NULL;
        ck_assert_int_eq(porta_beam_create(&bp, BV, &b), 0);
        ck_assert_int_eq(drive(b, 128), BMAX);
        ck_assert_int_eq(porta_beam_n_hyps(b), nh);
        for (int i = 0; i < nh; i++) {
            const int32_t *tok;
            int n;
            int32_t e;
            float score;
            ck_assert_int_eq(porta_beam_hyp(b, i, &tok, &n, &e, &score, NULL), 0);
            ck_assert_msg(fabs(score - h[i].score) < 1e-4, "lp %g hyp %d: %g vs %g", lps[k], i,
                          score, h[i].score);
            if (i + 1 < nh && h[i].score - h[i + 1].score < 1e-3)
                continue; /* a near tie: the order may differ */
            if (i > 0 && h[i - 1].score - h[i].score < 1e-3)
                continue;
            ck_assert_int_eq(n, h[i].n);
            ck_assert_int_eq(e, h[i].eos ? BEOS : -1);
            ck_assert(memcmp(tok, h[i].tok, sizeof(int32_t) * (size_t)n) == 0);
        }
        ck_assert_int_eq(porta_beam_hyp(b, nh, NULL, NULL, NULL, NULL, NULL), PORTA_E_RANGE);
        porta_beam_destroy(b);
    }
}
END_TEST

/* Hand-made model where greedy fails: P(A)=.5, P(B)=.4, then after A everything is flat
 * (0.3) while after B token 1 has 0.9. */
static void trap_logits(const int32_t *seq, int n, float *l)
{
    static const float first[4] = { 0.05f, 0.5f, 0.4f, 0.05f };
    static const float after_a[4] = { 0.1f, 0.3f, 0.3f, 0.3f };
    static const float after_b[4] = { 0.05f, 0.9f, 0.025f, 0.025f };
    const float *p = n == 0 ? first : seq[0] == 1 ? after_a : after_b;
    for (int v = 0; v < 4; v++)
        l[v] = logf(p[v]) + 1.5f; /* an offset: log-softmax must remove it */
}

START_TEST(test_beam_small)
{
    struct porta_beam_params bp;
    porta_beam_params_default(&bp);
    bp.num_beams = 2;
    bp.max_new_tokens = 2;
    const int32_t eog = 0;
    bp.eog_ids = &eog;
    bp.n_eog = 1;
    struct porta_beam *b = NULL;
    ck_assert_int_eq(porta_beam_create(&bp, 4, &b), 0);
    float l[2][4];
    const float *lp[2] = { l[0], l[1] };
    int32_t parent[2], token[2], seq[2][2];
    int n_live;
    bool done;

    trap_logits(NULL, 0, l[0]);
    ck_assert_int_eq(porta_beam_step(b, lp, parent, token, &n_live, &done), 0);
    ck_assert(!done && n_live == 2);
    ck_assert(parent[0] == 0 && token[0] == 1 && parent[1] == 0 && token[1] == 2);
    seq[0][0] = 1;
    seq[1][0] = 2;
    trap_logits(seq[0], 1, l[0]);
    trap_logits(seq[1], 1, l[1]);
    ck_assert_int_eq(porta_beam_step(b, lp, parent, token, &n_live, &done), 0);
    ck_assert(done && n_live == 0); /* max_new_tokens */
    /* step 2 ranks: B1 (.36) first, then A1 (.15); live beams became hypotheses */
    ck_assert(parent[0] == 1 && token[0] == 1 && parent[1] == 0 && token[1] == 1);
    ck_assert_int_eq(porta_beam_n_hyps(b), 2);
    const int32_t *tok;
    int n;
    int32_t e;
    float score, sum;
    ck_assert_int_eq(porta_beam_hyp(b, 0, &tok, &n, &e, &score, &sum), 0);
    ck_assert(n == 2 && tok[0] == 2 && tok[1] == 1 && e == -1);
    ck_assert_double_eq_tol(sum, log(0.36), 1e-5);
    ck_assert_double_eq_tol(score, log(0.36) / 2, 1e-5);
    ck_assert_int_eq(porta_beam_hyp(b, 1, &tok, &n, &e, &score, &sum), 0);
    ck_assert(n == 2 && tok[0] == 1 && tok[1] == 1);
    ck_assert_int_eq(porta_beam_step(b, lp, parent, token, &n_live, &done), PORTA_E_INVAL);
    porta_beam_destroy(b);
}
END_TEST

static void eos_first_logits(float *l)
{
    static const float p[4] = { 0.6f, 0.2f, 0.15f, 0.05f };
    for (int v = 0; v < 4; v++)
        l[v] = logf(p[v]);
}

START_TEST(test_beam_early_stopping)
{
    const int32_t eog = 0;
    struct porta_beam_params bp;
    porta_beam_params_default(&bp);
    bp.num_beams = 1;
    bp.max_new_tokens = 4;
    bp.eog_ids = &eog;
    bp.n_eog = 1;
    float l[4];
    const float *lp[1] = { l };
    int32_t parent[1], token[1];
    int n_live;
    bool done;
    eos_first_logits(l);
    const int modes[3] = { PORTA_BEAM_EARLY_TRUE, PORTA_BEAM_EARLY_HEURISTIC,
                           PORTA_BEAM_EARLY_NEVER };
    const bool done_at_1[3] = { true, true, false };
    for (int m = 0; m < 3; m++) {
        bp.early_stopping = modes[m];
        struct porta_beam *b = NULL;
        ck_assert_int_eq(porta_beam_create(&bp, 4, &b), 0);
        ck_assert_int_eq(porta_beam_step(b, lp, parent, token, &n_live, &done), 0);
        ck_assert_int_eq(porta_beam_n_hyps(b), 1); /* the end token at rank 0 finished one */
        ck_assert_msg(done == done_at_1[m], "mode %d", modes[m]);
        /* the next live beam is the best non-end token anyway */
        if (!done)
            ck_assert(n_live == 1 && parent[0] == 0 && token[0] == 1);
        ck_assert_int_eq(porta_beam_finish(b), 0);
        ck_assert_int_eq(porta_beam_n_live(b), 0);
        int32_t e;
        int n;
        ck_assert_int_eq(porta_beam_hyp(b, 0, NULL, &n, &e, NULL, NULL), 0);
        ck_assert(n == 0 && e == 0);
        porta_beam_destroy(b);
    }
    /* min_new_tokens: the end token cannot finish the first step */
    bp.early_stopping = PORTA_BEAM_EARLY_TRUE;
    bp.min_new_tokens = 1;
    struct porta_beam *b = NULL;
    ck_assert_int_eq(porta_beam_create(&bp, 4, &b), 0);
    ck_assert_int_eq(porta_beam_step(b, lp, parent, token, &n_live, &done), 0);
    ck_assert(!done && porta_beam_n_hyps(b) == 0 && token[0] == 1);
    porta_beam_destroy(b);

    /* HF's rank rule: an end token ranked num_beams or lower finishes nothing. Two end ids,
     * num_beams 2: ranks are end0 (.4, kept), 1 (.3, live), end3 (.2, rank 2: dropped), 2 */
    const int32_t eogs[2] = { 0, 3 };
    static const float p2[4] = { 0.4f, 0.3f, 0.1f, 0.2f };
    for (int v = 0; v < 4; v++)
        l[v] = logf(p2[v]);
    porta_beam_params_default(&bp);
    bp.num_beams = 2;
    bp.eog_ids = eogs;
    bp.n_eog = 2;
    int32_t par2[2], tok2[2];
    ck_assert_int_eq(porta_beam_create(&bp, 4, &b), 0);
    ck_assert_int_eq(porta_beam_step(b, lp, par2, tok2, &n_live, &done), 0);
    ck_assert(!done && n_live == 2 && tok2[0] == 1 && tok2[1] == 2);
    ck_assert_int_eq(porta_beam_n_hyps(b), 1);
    int32_t e0;
    ck_assert_int_eq(porta_beam_hyp(b, 0, NULL, NULL, &e0, NULL, NULL), 0);
    ck_assert_int_eq(e0, 0);
    porta_beam_destroy(b);

    /* parameter checks */
    porta_log_set_sink(quiet, NULL);
    bp.num_beams = 0;
    ck_assert_int_eq(porta_beam_create(&bp, 4, &b), PORTA_E_RANGE);
    ck_assert(strstr(porta_log_last_error(), "num_beams"));
    bp.num_beams = 2;
    bp.max_new_tokens = 0;
    ck_assert_int_eq(porta_beam_create(&bp, 4, &b), PORTA_E_RANGE);
    bp.max_new_tokens = 4;
    bp.early_stopping = 7;
    ck_assert_int_eq(porta_beam_create(&bp, 4, &b), PORTA_E_RANGE);
    porta_log_set_sink(NULL, NULL);
    porta_beam_destroy(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_validation);
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_temperature_frequencies);
    tcase_add_test(tc, test_top_k);
    tcase_add_test(tc, test_top_p_min_p);
    tcase_add_test(tc, test_top_p_large_vocab);
    tcase_add_test(tc, test_penalties);
    tcase_add_test(tc, test_no_repeat_ngram);
    tcase_add_test(tc, test_min_new_tokens_and_bias);
    tcase_add_test(tc, test_seed);
    tcase_add_test(tc, test_logprobs);
    tcase_add_test(tc, test_stop_strings);
    tcase_add_test(tc, test_stop_random_splits);
    tcase_add_test(tc, test_beam_exhaustive);
    tcase_add_test(tc, test_beam_small);
    tcase_add_test(tc, test_beam_early_stopping);
    tcase_add_test(tc, test_beam_place);
    tcase_add_test(tc, test_params_from_config);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
