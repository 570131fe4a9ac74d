/* session.c - single-sequence generation (see session.h). */
#include "session.h"

#include <stdlib.h>
#include <string.h>

struct porta_session {
    struct porta_ctx *c;
    const struct porta_tokenizer *tok;
    int seq;
    int32_t *tokens;                /* what the cache holds for seq, in order */
    int n_tokens, cap;
    int gen_start;                  /* index in tokens of the last call's first generated id */
    float *logits;
};

int porta_session_create(struct porta_ctx *c, const struct porta_tokenizer *tok, int seq,
                         struct porta_session **out)
{
    *out = NULL;
    struct porta_session *s = calloc(1, sizeof *s);
    if (!s)
        return PORTA_E_NOMEM;
    s->c = c;
    s->tok = tok;
    s->seq = seq;
    s->cap = c->p.n_ctx;
    s->tokens = malloc(sizeof(int32_t) * (size_t)s->cap);
    s->logits = malloc(sizeof(float) * (size_t)c->m->hp.n_vocab);
    if (!s->tokens || !s->logits) {
        porta_session_destroy(s);
        return PORTA_E_NOMEM;
    }
    *out = s;
    return 0;
}

void porta_session_destroy(struct porta_session *s)
{
    if (!s)
        return;
    free(s->tokens);
    free(s->logits);
    free(s);
}

void porta_session_reset(struct porta_session *s)
{
    s->n_tokens = 0;
    s->gen_start = 0;
    porta_ctx_reset(s->c, s->seq);
}

const int32_t *porta_session_last(const struct porta_session *s, int *n)
{
    *n = s->n_tokens - s->gen_start;
    return s->tokens + s->gen_start;
}

/* runs ids at positions n_tokens.. and appends them; logits of the last into s->logits */
static int feed(struct porta_session *s, const int32_t *ids, int n)
{
    if (s->n_tokens + n > s->cap) {
        porta_err("context full: %d + %d tokens exceed n_ctx %d", s->n_tokens, n, s->cap);
        return PORTA_E_RANGE;
    }
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n * 2);
    if (!pos)
        return PORTA_E_NOMEM;
    int32_t *seq = pos + n;
    for (int i = 0; i < n; i++) {
        pos[i] = s->n_tokens + i;
        seq[i] = s->seq;
    }
    struct porta_batch b = { .n_tok = n, .ids = ids, .pos = pos, .seq = seq };
    int rc = porta_forward(s->c, &b, s->logits);
    free(pos);
    if (rc)
        return rc;
    memmove(s->tokens + s->n_tokens, ids, sizeof(int32_t) * (size_t)n);
    s->n_tokens += n;
    return 0;
}

static int emit(porta_text_cb cb, void *user, const char *t, size_t n)
{
    return n && cb ? cb(user, t, n) : 0;
}

int porta_session_generate(struct porta_session *s, const int32_t *prompt, int n_prompt,
                           const struct porta_gen_params *gp, porta_text_cb cb, void *user,
                           struct porta_gen_stats *st)
{
    memset(st, 0, sizeof *st);
    st->n_prompt = n_prompt;
    st->finish = "length";
    if (n_prompt <= 0 || gp->max_tokens <= 0) {
        porta_err("generate: empty prompt or max_tokens < 1");
        return PORTA_E_INVAL;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->c->m->hp.n_vocab) {
            porta_err("generate: prompt token %d is outside the vocabulary", prompt[i]);
            return PORTA_E_RANGE;
        }
    /* keep the longest cached prefix; at least the last prompt token is recomputed so that
     * its logits are fresh */
    int lcp = 0;
    while (lcp < s->n_tokens && lcp < n_prompt - 1 && s->tokens[lcp] == prompt[lcp])
        lcp++;
    s->n_tokens = lcp;
    s->c->n_past[s->seq] = lcp;
    st->n_reused = lcp;

    struct porta_sampler *smp = NULL;
    struct porta_stop *stop = NULL;
    int rc = porta_sampler_create(&gp->sp, s->c->m->hp.n_vocab, &smp);
    if (rc)
        return rc;
    if ((rc = porta_stop_create(gp->stops, gp->n_stops, &stop)))
        goto done;
    double t0 = porta_time_s();
    if ((rc = feed(s, prompt + lcp, n_prompt - lcp)))
        goto done;
    st->t_prompt = porta_time_s() - t0;
    s->gen_start = s->n_tokens;
    t0 = porta_time_s();

    struct porta_detok dt;
    porta_detok_init(&dt, s->tok, false, false);
    const char *txt;
    size_t n;
    bool hit = false;
    for (int i = 0; i < gp->max_tokens; i++) {
        struct porta_sample_result r;
        rc = porta_sampler_sample(smp, s->logits, s->tokens, s->n_tokens, s->gen_start, &r);
        if (rc)
            goto done;
        if (!gp->ignore_eos && porta_tokenizer_is_eog(s->tok, r.id)) {
            st->finish = "stop";
            break;
        }
        st->n_gen++;
        if ((rc = porta_detok_push(&dt, r.id, &txt, &n)))
            goto done;
        const char *out;
        size_t n_out;
        if ((rc = porta_stop_feed(stop, txt, n, &out, &n_out, &hit)))
            goto done;
        if (emit(cb, user, out, n_out)) {
            st->finish = "cancel";
            break;
        }
        if (hit) {
            st->finish = "stop";
            /* keep the token in the cache: the conversation contains it */
        }
        if (s->n_tokens >= s->cap) {
            st->finish = "length";
            break;
        }
        if ((rc = feed(s, &r.id, 1)))
            goto done;
        if (hit)
            break;
    }
    if (!hit && strcmp(st->finish, "cancel") != 0) {
        const char *out;
        size_t n_out;
        porta_detok_flush(&dt, &txt, &n);
        if (!(rc = porta_stop_feed(stop, txt, n, &out, &n_out, &hit)))
            emit(cb, user, out, n_out);
        if (!rc && !hit && !(rc = porta_stop_flush(stop, &out, &n_out)))
            emit(cb, user, out, n_out);
    }
    st->t_gen = porta_time_s() - t0;
done:
    porta_stop_destroy(stop);
    porta_sampler_destroy(smp);
    return rc;
}
