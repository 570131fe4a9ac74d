/* sched.c - the scheduler: one thread owns the model context and its n_seq slots. Each step
 * runs every decoding slot's next token and a chunk of a waiting prompt through ONE
 * porta_forward call (so a decode step reads the weights once for all slots), then samples,
 * detokenizes, applies stop strings and the <think> split, and hands the text to the
 * request. Requests wait in a bounded FIFO; a slot keeps its tokens after a request so that
 * the next request with the same prefix (a chat's next turn) skips that part of the prefill.
 * Beam search (num_beams > 1) takes num_beams slots and copies K/V between them. */
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define SHARED_PREFILL 32 /* prompt tokens per step while other slots are decoding */

enum slot_state { SLOT_FREE, SLOT_PREFILL, SLOT_DECODE };

struct beam_group;

struct slot {
    int seq;
    enum slot_state st;
    struct srv_req *req;            /* NULL when free */
    int choice;
    struct beam_group *bg;          /* beam search member, else NULL */
    int32_t *tok;                   /* [n_ctx + 1]: prompt + generated */
    int n_tok;                      /* tokens known */
    int n_cached;                   /* of which in the K/V cache */
    int n_prompt, n_gen, max_gen;
    unsigned long long order;       /* admission order: older prompts prefill first */
    struct porta_sampler *smp;
    struct porta_stop *stop;
    struct porta_think *think;
    struct porta_detok dt;
    bool first;                     /* the first token is still to come */
};

struct beam_group {
    struct srv_req *req;
    int k;                          /* num_beams */
    struct slot *sl[8];             /* the slots the group owns */
    struct slot *live[8];           /* live beam i runs in live[i] */
    int n_live;
    struct porta_beam *bs;
    const float *lg[8];             /* this step's logits of live beam i */
    int n_lg;
};

struct task {
    struct srv_req *r;
    int choice;                     /* -1: a beam search over the whole request */
};

struct srv_sched {
    struct srv_engine *e;
    struct srv_metrics *mt;
    int queue_max, timeout_s;
    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct task *q;                 /* pending tasks, FIFO */
    int q_len, q_cap, q_slots;      /* q_slots: slots the pending tasks need */
    int n_free;                     /* free slots, as last published by the thread */
    struct slot *slots;
    int n_slots;
    unsigned long long order;
    /* step buffers */
    int32_t *ids, *pos, *seq;
    bool *want;
    struct slot **row_slot;         /* flagged row -> slot */
    float *logits;                  /* [n_slots][n_vocab] */
    void *kv_tmp;
    size_t kv_tmp_cap;
};

/* ---- text out ---- */

/* appends generated text (already through the stop matcher) to the slot's choice */
static int emit_text(struct slot *s, const char *t, size_t n)
{
    struct srv_req *r = s->req;
    struct srv_choice *c = &r->ch[s->choice];
    struct porta_think_delta d = { 0 };
    int rc = 0;
    if (r->think) {
        if ((rc = porta_think_feed(s->think, t, n, &d)))
            return rc;
    } else {
        d.content = t;
        d.n_content = n;
    }
    pthread_mutex_lock(&r->mu);
    if (d.n_reasoning)
        rc = srv_buf_add(&c->reasoning, d.reasoning, d.n_reasoning);
    if (!rc && d.n_content)
        rc = srv_buf_add(&c->content, d.content, d.n_content);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int emit_think_flush(struct slot *s)
{
    struct srv_req *r = s->req;
    if (!r->think)
        return 0;
    struct porta_think_delta d;
    int rc = porta_think_flush(s->think, &d);
    if (rc)
        return rc;
    struct srv_choice *c = &r->ch[s->choice];
    pthread_mutex_lock(&r->mu);
    if (d.n_reasoning)
        rc = srv_buf_add(&c->reasoning, d.reasoning, d.n_reasoning);
    if (!rc && d.n_content)
        rc = srv_buf_add(&c->content, d.content, d.n_content);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void choice_finish(struct srv_req *r, int i, const char *why)
{
    pthread_mutex_lock(&r->mu);
    if (!r->ch[i].finish) {
        r->ch[i].finish = why;
        r->n_finished++;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void req_fail(struct srv_req *r, const char *msg)
{
    pthread_mutex_lock(&r->mu);
    if (!r->failed) {
        r->failed = true;
        snprintf(r->err, sizeof r->err, "%s", msg);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- slots ---- */

static void slot_clear(struct srv_sched *sc, struct slot *s)
{
    porta_sampler_destroy(s->smp);
    porta_stop_destroy(s->stop);
    porta_think_destroy(s->think);
    s->smp = NULL;
    s->stop = NULL;
    s->think = NULL;
    s->n_tok = s->n_cached;         /* the cache stays valid for prefix reuse */
    s->req = NULL;
    s->bg = NULL;
    s->st = SLOT_FREE;
    pthread_mutex_lock(&sc->mu);
    sc->n_free++;
    pthread_mutex_unlock(&sc->mu);
}

/* ends a plain slot: releases held text, marks the choice, frees the slot */
static void slot_finish(struct srv_sched *sc, struct slot *s, const char *why, bool stopped)
{
    struct srv_req *r = s->req;
    if (!stopped && !atomic_load(&r->cancel)) {
        const char *txt, *out;
        size_t n, n_out;
        bool hit = false;
        porta_detok_flush(&s->dt, &txt, &n);
        if (!porta_stop_feed(s->stop, txt, n, &out, &n_out, &hit))
            emit_text(s, out, n_out);
        if (!hit && !porta_stop_flush(s->stop, &out, &n_out))
            emit_text(s, out, n_out);
    }
    emit_think_flush(s);
    choice_finish(r, s->choice, why);
    slot_clear(sc, s);
    srv_req_unref(r);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* the free slot whose cache shares the longest prefix with r's prompt */
static struct slot *best_free(struct srv_sched *sc, const struct srv_req *r)
{
    struct slot *best = NULL;
    int best_l = -1;
    for (int i = 0; i < sc->n_slots; i++) {
        struct slot *s = &sc->slots[i];
        if (s->st != SLOT_FREE)
            continue;
        int l = common_prefix(s->tok, s->n_cached, r->prompt, r->n_prompt);
        if (l > best_l) {
            best = s;
            best_l = l;
        }
    }
    return best;
}

static int slot_start(struct srv_sched *sc, struct slot *s, struct srv_req *r, int choice,
                      struct beam_group *bg)
{
    pthread_mutex_lock(&sc->mu);
    sc->n_free--;                   /* slot_clear() gives it back, also on failure */
    pthread_mutex_unlock(&sc->mu);
    int l = common_prefix(s->tok, s->n_cached, r->prompt, r->n_prompt);
    if (l > r->n_prompt - 1)
        l = r->n_prompt - 1;        /* the last prompt token is always run for its logits */
    memcpy(s->tok, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    s->n_tok = s->n_prompt = r->n_prompt;
    s->n_cached = l;
    s->req = r;
    s->choice = choice;
    s->bg = bg;
    s->n_gen = 0;
    s->max_gen = r->max_tokens;
    s->order = ++sc->order;
    s->first = true;
    s->st = SLOT_PREFILL;
    int rc = 0;
    if (!bg) {
        struct porta_sampler_params sp = r->sp;
        sp.seed += (uint64_t)choice;
        if ((rc = porta_sampler_create(&sp, sc->e->n_vocab, &s->smp)) ||
            (rc = porta_stop_create((const char *const *)r->stops, r->n_stops, &s->stop)) ||
            (r->think && (rc = porta_think_create(r->think_start, &s->think))))
            return rc;
        porta_detok_init(&s->dt, sc->e->tok, false, false);
    }
    return 0;
}

/* ---- beam search ---- */

static int beam_start(struct srv_sched *sc, struct srv_req *r)
{
    struct beam_group *bg = calloc(1, sizeof *bg);
    if (!bg)
        return PORTA_E_NOMEM;
    bg->req = r;
    bg->k = r->num_beams;
    struct porta_beam_params bp;
    porta_beam_params_default(&bp);
    bp.num_beams = r->num_beams;
    bp.length_penalty = r->length_penalty;
    bp.max_new_tokens = r->max_tokens;
    bp.min_new_tokens = r->sp.min_new_tokens;
    bp.eog_ids = r->ignore_eos ? NULL : sc->e->eog;
    bp.n_eog = r->ignore_eos ? 0 : sc->e->n_eog;
    int rc = porta_beam_create(&bp, sc->e->n_vocab, &bg->bs);
    if (rc) {
        free(bg);
        return rc;
    }
    /* slot_start() cannot fail for a beam member: it creates no sampler */
    for (int i = 0; i < bg->k; i++) {
        bg->sl[i] = best_free(sc, r);
        slot_start(sc, bg->sl[i], r, 0, bg);
        if (i > 0) {
            bg->sl[i]->st = SLOT_DECODE; /* parked until the prompt is done; not run */
            bg->sl[i]->n_cached = 0;
        }
    }
    bg->live[0] = bg->sl[0];
    bg->n_live = 1;
    return 0;
}

static bool beam_parked(const struct slot *s)
{
    const struct beam_group *bg = s->bg;
    if (!bg)
        return false;
    for (int i = 0; i < bg->n_live; i++)
        if (bg->live[i] == s)
            return false;
    return true;
}

/* copies the first n positions of src's K/V to dst (through host memory: any backend) */
static int kv_copy(struct srv_sched *sc, int dst, int src, int n)
{
    return porta_ctx_kv_copy(sc->e->c, dst, src, n, &sc->kv_tmp, &sc->kv_tmp_cap);
}

/* hypotheses -> choices (text through the stop strings and the <think> split), slots freed */
static void beam_end(struct srv_sched *sc, struct beam_group *bg)
{
    struct srv_req *r = bg->req;
    int nh = porta_beam_n_hyps(bg->bs);
    for (int i = 0; i < r->n && !atomic_load(&r->cancel); i++) {
        const int32_t *t = NULL;
        int nt = 0;
        int32_t eog = -1;
        const char *why = "length";
        if (i < nh)
            porta_beam_hyp(bg->bs, i, &t, &nt, &eog, NULL, NULL);
        if (eog >= 0)
            why = "stop";
        char *text = NULL;
        size_t len = 0;
        struct porta_stop *st = NULL;
        struct slot tmp = { .req = r, .choice = i };
        if (nt > 0 && porta_detokenize(sc->e->tok, t, nt, false, false, &text, &len) == 0 &&
            porta_stop_create((const char *const *)r->stops, r->n_stops, &st) == 0 &&
            (!r->think || porta_think_create(r->think_start, &tmp.think) == 0)) {
            const char *out;
            size_t n_out;
            bool hit = false;
            if (!porta_stop_feed(st, text, len, &out, &n_out, &hit))
                emit_text(&tmp, out, n_out);
            if (hit)
                why = "stop";
            else if (!porta_stop_flush(st, &out, &n_out))
                emit_text(&tmp, out, n_out);
            emit_think_flush(&tmp);
        }
        porta_think_destroy(tmp.think);
        porta_stop_destroy(st);
        free(text);
        pthread_mutex_lock(&r->mu);
        r->ch[i].n_gen = nt + (eog >= 0);
        pthread_mutex_unlock(&r->mu);
        choice_finish(r, i, why);
    }
    if (atomic_load(&r->cancel))
        for (int i = 0; i < r->n; i++)
            choice_finish(r, i, "stop");
    for (int i = 0; i < bg->k; i++)
        if (bg->sl[i])
            slot_clear(sc, bg->sl[i]);
    porta_beam_destroy(bg->bs);
    free(bg);
    srv_req_unref(r);
}

/* one beam step over the logits gathered for the group this step */
static int beam_advance(struct srv_sched *sc, struct beam_group *bg)
{
    int32_t parent[8], token[8];
    int n_live = 0;
    bool done = false;
    int rc = porta_beam_step(bg->bs, bg->lg, parent, token, &n_live, &done);
    bg->n_lg = 0;
    if (rc)
        return rc;
    int n_pos = bg->live[0]->n_cached;
    if (!done && n_pos + 1 >= sc->e->n_ctx) {
        porta_beam_finish(bg->bs);
        done = true;
    }
    if (done) {
        beam_end(sc, bg);
        return 0;
    }
    /* new beam i continues parent[i] in slot bg->sl[at[i]] (porta_beam_place) */
    int cur[8], at[8], from[8];
    for (int i = 0; i < bg->n_live; i++)
        for (int j = 0; j < bg->k; j++)
            if (bg->sl[j] == bg->live[i])
                cur[i] = j;
    porta_beam_place(bg->k, cur, parent, n_live, at, from);
    struct slot *next[8];
    for (int i = 0; i < n_live; i++) {
        next[i] = bg->sl[at[i]];
        if (from[i] < 0)
            continue;
        struct slot *p = bg->sl[from[i]];
        if ((rc = kv_copy(sc, next[i]->seq, p->seq, n_pos)))
            return rc;
        memcpy(next[i]->tok, p->tok, sizeof(int32_t) * (size_t)p->n_tok);
        next[i]->n_tok = p->n_tok;
        next[i]->n_cached = n_pos;
    }
    /* appending happens after all copies: a parent's tokens must not change before */
    for (int i = 0; i < n_live; i++) {
        struct slot *s = next[i];
        s->tok[s->n_tok] = token[i];  /* == n_pos + 1 tokens; run next step */
        s->n_tok = n_pos + 1;
        s->st = SLOT_DECODE;
        bg->live[i] = s;
    }
    bg->n_live = n_live;
    return 0;
}

/* ---- sampling one plain slot ---- */

static int slot_sample(struct srv_sched *sc, struct slot *s, float *logits)
{
    struct srv_req *r = s->req;
    const struct srv_engine *e = sc->e;
    struct porta_sample_result res;
    int rc = porta_sampler_sample(s->smp, logits, s->tok, s->n_tok, s->n_prompt, &res);
    if (rc)
        return rc;
    if (s->first) {
        double now = porta_time_s();
        srv_metrics_ttft(sc->mt, now - r->t_arrive);
        pthread_mutex_lock(&r->mu);
        if (!r->t_first)
            r->t_first = now;
        pthread_mutex_unlock(&r->mu);
        s->first = false;
    }
    if (!r->ignore_eos && porta_tokenizer_is_eog(e->tok, res.id)) {
        slot_finish(sc, s, "stop", false);
        return 0;
    }
    s->tok[s->n_tok++] = res.id;
    s->n_gen++;
    srv_metrics_gen(sc->mt, 1);
    const char *txt, *out;
    size_t n, n_out;
    bool hit = false;
    if ((rc = porta_detok_push(&s->dt, res.id, &txt, &n)) ||
        (rc = porta_stop_feed(s->stop, txt, n, &out, &n_out, &hit)) ||
        (rc = emit_text(s, out, n_out)))
        return rc;
    struct srv_choice *c = &r->ch[s->choice];
    pthread_mutex_lock(&r->mu);
    c->n_gen = s->n_gen;
    if (r->logprobs && c->n_lp == c->cap_lp) {
        int cap = c->cap_lp ? c->cap_lp * 2 : 32;
        struct srv_logprob *p = realloc(c->lp, sizeof *p * (size_t)cap);
        if (p) {
            c->lp = p;
            c->cap_lp = cap;
        }
    }
    if (r->logprobs && c->n_lp < c->cap_lp) {
        struct srv_logprob *lp = &c->lp[c->n_lp++];
        lp->id = res.id;
        lp->lp = res.logprob;
        lp->n_top = res.n_top;
        memcpy(lp->top_ids, res.top_ids, sizeof lp->top_ids);
        memcpy(lp->top_lps, res.top_logprobs, sizeof lp->top_lps);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (hit)
        slot_finish(sc, s, "stop", true);
    else if (s->n_gen >= s->max_gen || s->n_tok >= e->n_ctx)
        slot_finish(sc, s, "length", false);
    else
        s->st = SLOT_DECODE;        /* the new token is run next step */
    return 0;
}

/* ---- the loop ---- */

/* moves queued tasks into free slots, FIFO; drops cancelled ones */
static void admit(struct srv_sched *sc)
{
    pthread_mutex_lock(&sc->mu);
    while (sc->q_len > 0) {
        struct task t = sc->q[0];
        int need = t.choice < 0 ? t.r->num_beams : 1;
        bool cancelled = atomic_load(&t.r->cancel);
        if (!cancelled && sc->n_free < need)
            break;
        memmove(sc->q, sc->q + 1, sizeof *sc->q * (size_t)--sc->q_len);
        sc->q_slots -= need;
        pthread_mutex_unlock(&sc->mu);
        int rc = 0;
        if (cancelled) {
            srv_req_unref(t.r);
        } else if (t.choice < 0) {
            rc = beam_start(sc, t.r);
        } else {
            struct slot *s = best_free(sc, t.r);
            if ((rc = slot_start(sc, s, t.r, t.choice, NULL)))
                slot_clear(sc, s);
        }
        if (rc) {
            req_fail(t.r, "cannot start the request (out of memory)");
            srv_req_unref(t.r);
        }
        pthread_mutex_lock(&sc->mu);
    }
    pthread_mutex_unlock(&sc->mu);
}

/* ends slots whose client left or whose time ran out */
static void reap(struct srv_sched *sc)
{
    double now = porta_time_s();
    for (int i = 0; i < sc->n_slots; i++) {
        struct slot *s = &sc->slots[i];
        if (s->st == SLOT_FREE)
            continue;
        struct srv_req *r = s->req;
        bool late = sc->timeout_s > 0 && now - r->t_arrive > sc->timeout_s;
        if (!atomic_load(&r->cancel) && !late)
            continue;
        if (late && !atomic_load(&r->cancel))
            porta_warn("serve: request %s ran past timeout_s (%d s); ending it", r->id,
                       sc->timeout_s);
        if (s->bg) {
            porta_beam_finish(s->bg->bs);
            beam_end(sc, s->bg);
        } else {
            slot_finish(sc, s, "length", false);
        }
    }
}

/* every active request fails (the engine returned an error) */
static void fail_all(struct srv_sched *sc, int rc)
{
    char msg[128];
    snprintf(msg, sizeof msg, "the engine failed (%s)", porta_strerror(rc));
    porta_err("serve: %s; ending every active request", msg);
    for (int i = 0; i < sc->n_slots; i++) {
        struct slot *s = &sc->slots[i];
        if (s->st == SLOT_FREE)
            continue;
        req_fail(s->req, msg);
        s->n_cached = 0;            /* the cache may be half written */
        if (s->bg) {
            struct beam_group *bg = s->bg;
            for (int j = 0; j < bg->k; j++) {
                bg->sl[j]->n_cached = 0;
                if (bg->sl[j]->st != SLOT_FREE)
                    slot_clear(sc, bg->sl[j]);
            }
            porta_beam_destroy(bg->bs);
            srv_req_unref(bg->req);
            free(bg);
        } else {
            struct srv_req *r = s->req;
            slot_clear(sc, s);
            srv_req_unref(r);
        }
    }
}

/* appends prompt chunks to the step's batch, oldest request first, up to budget tokens; a
 * slot whose prompt is complete gets its last token's logits and moves to decoding.
 * Returns the number of prompt tokens added. */
static int add_prefill(struct srv_sched *sc, int budget, int *n_tok, int *n_rows)
{
    int n = *n_tok, n_prefill = 0;
    while (budget > 0) {
        struct slot *p = NULL;
        for (int i = 0; i < sc->n_slots; i++) {
            struct slot *s = &sc->slots[i];
            if (s->st == SLOT_PREFILL && s->n_cached < s->n_tok && (!p || s->order < p->order))
                p = s;
        }
        if (!p)
            break;
        int m = p->n_tok - p->n_cached;
        if (m > budget)
            m = budget;
        for (int j = 0; j < m; j++) {
            sc->ids[n] = p->tok[p->n_cached + j];
            sc->pos[n] = p->n_cached + j;
            sc->seq[n] = p->seq;
            sc->want[n++] = false;
        }
        p->n_cached += m;
        budget -= m;
        n_prefill += m;
        if (p->n_cached == p->n_tok) {
            sc->want[n - 1] = true;
            sc->row_slot[(*n_rows)++] = p;
            p->st = SLOT_DECODE;    /* sampled below; the sample is the pending token */
        }
    }
    *n_tok = n;
    return n_prefill;
}

static int step(struct srv_sched *sc)
{
    const struct srv_engine *e = sc->e;
    int n = 0, n_rows = 0, n_decode = 0, n_prefill = 0, rc;
    /* decode tokens: one per running slot */
    for (int i = 0; i < sc->n_slots; i++) {
        struct slot *s = &sc->slots[i];
        if (s->st != SLOT_DECODE || beam_parked(s))
            continue;
        sc->ids[n] = s->tok[s->n_tok - 1];
        sc->pos[n] = s->n_cached;
        sc->seq[n] = s->seq;
        sc->want[n++] = true;
        sc->row_slot[n_rows++] = s;
        n_decode++;
    }
    /* prompt chunks, oldest request first, within what is left of the batch */
    int budget = n_decode ? SHARED_PREFILL : e->n_batch;
    if (n_decode && budget > e->n_batch - n_decode)
        budget = e->n_batch - n_decode > 8 ? e->n_batch - n_decode : 8;
    n_prefill = add_prefill(sc, budget, &n, &n_rows);
    if (n == 0)
        goto publish;
    struct porta_batch b = { .n_tok = n, .ids = sc->ids, .pos = sc->pos, .seq = sc->seq,
                             .logits = sc->want };
    if ((rc = porta_forward(e->c, &b, sc->logits)))
        return rc;
    for (int i = 0; i < n_rows; i++) {
        struct slot *s = sc->row_slot[i];
        float *lg = sc->logits + (size_t)i * e->n_vocab;
        if (s->n_cached < s->n_tok)
            s->n_cached++;          /* a decode slot's pending token went in */
        if (s->bg) {
            for (int j = 0; j < s->bg->n_live; j++)
                if (s->bg->live[j] == s)
                    s->bg->lg[j] = lg;
            s->bg->n_lg++;
            continue;
        }
        if ((rc = slot_sample(sc, s, lg)))
            return rc;
    }
    /* beam groups whose every live beam has its logits */
    for (int i = 0; i < sc->n_slots; i++) {
        struct slot *s = &sc->slots[i];
        if (s->bg && s->bg->n_lg == s->bg->n_live && s->bg->n_lg > 0) {
            srv_metrics_gen(sc->mt, s->bg->n_live);
            if ((rc = beam_advance(sc, s->bg)))
                return rc;
        }
    }
publish:;
    int active = 0;
    for (int i = 0; i < sc->n_slots; i++)
        active += sc->slots[i].st != SLOT_FREE;
    pthread_mutex_lock(&sc->mu);
    int q = sc->q_len;
    pthread_mutex_unlock(&sc->mu);
    srv_metrics_step(sc->mt, n_prefill, q, active);
    return 0;
}

static bool busy(struct srv_sched *sc)
{
    for (int i = 0; i < sc->n_slots; i++)
        if (sc->slots[i].st != SLOT_FREE)
            return true;
    return false;
}

static void *sched_main(void *arg)
{
    struct srv_sched *sc = arg;
    for (;;) {
        pthread_mutex_lock(&sc->mu);
        while (!sc->stop && sc->q_len == 0 && !busy(sc))
            pthread_cond_wait(&sc->cv, &sc->mu);
        bool stop = sc->stop;
        pthread_mutex_unlock(&sc->mu);
        if (stop)
            break;
        admit(sc);
        reap(sc);
        int rc = step(sc);
        if (rc)
            fail_all(sc, rc);
    }
    /* shutting down: every request in a slot or in the queue ends */
    for (int i = 0; i < sc->n_slots; i++)
        if (sc->slots[i].st != SLOT_FREE) {
            atomic_store(&sc->slots[i].req->cancel, true);
            reap(sc);
        }
    pthread_mutex_lock(&sc->mu);
    for (int i = 0; i < sc->q_len; i++) {
        req_fail(sc->q[i].r, "the server is shutting down");
        srv_req_unref(sc->q[i].r);
    }
    sc->q_len = 0;
    pthread_mutex_unlock(&sc->mu);
    return NULL;
}

/* ---- public ---- */

int srv_sched_create(struct srv_engine *e, const struct porta_config *cfg,
                     struct srv_metrics *mt, struct srv_sched **out)
{
    *out = NULL;
    struct srv_sched *sc = calloc(1, sizeof *sc);
    if (!sc)
        return PORTA_E_NOMEM;
    sc->e = e;
    sc->mt = mt;
    sc->queue_max = cfg->server.queue;
    sc->timeout_s = cfg->server.timeout_s;
    sc->n_slots = e->n_slots;
    sc->n_free = e->n_slots;
    pthread_mutex_init(&sc->mu, NULL);
    pthread_cond_init(&sc->cv, NULL);
    int cap = e->n_batch + e->n_slots + SHARED_PREFILL;
    sc->slots = calloc((size_t)sc->n_slots, sizeof *sc->slots);
    sc->ids = malloc(sizeof(int32_t) * (size_t)cap * 3);
    sc->want = malloc(sizeof(bool) * (size_t)cap);
    sc->row_slot = malloc(sizeof(struct slot *) * (size_t)sc->n_slots);
    sc->logits = malloc(sizeof(float) * (size_t)e->n_vocab * (size_t)sc->n_slots);
    if (!sc->slots || !sc->ids || !sc->want || !sc->row_slot || !sc->logits)
        goto fail;
    sc->pos = sc->ids + cap;
    sc->seq = sc->pos + cap;
    for (int i = 0; i < sc->n_slots; i++) {
        sc->slots[i].seq = i;
        if (!(sc->slots[i].tok = malloc(sizeof(int32_t) * ((size_t)e->n_ctx + 1))))
            goto fail;
    }
    if (pthread_create(&sc->th, NULL, sched_main, sc) != 0)
        goto fail;
    sc->started = true;
    *out = sc;
    return 0;
fail:
    srv_sched_destroy(sc);
    return PORTA_E_NOMEM;
}

void srv_sched_destroy(struct srv_sched *sc)
{
    if (!sc)
        return;
    if (sc->started) {
        pthread_mutex_lock(&sc->mu);
        sc->stop = true;
        pthread_cond_broadcast(&sc->cv);
        pthread_mutex_unlock(&sc->mu);
        pthread_join(sc->th, NULL);
    }
    for (int i = 0; sc->slots && i < sc->n_slots; i++)
        free(sc->slots[i].tok);
    free(sc->slots);
    free(sc->ids);
    free(sc->want);
    free(sc->row_slot);
    free(sc->logits);
    free(sc->kv_tmp);
    free(sc->q);
    pthread_cond_destroy(&sc->cv);
    pthread_mutex_destroy(&sc->mu);
    free(sc);
}

int srv_sched_submit(struct srv_sched *sc, struct srv_req *r)
{
    int need = r->num_beams > 1 ? r->num_beams : r->n;
    int n_tasks = r->num_beams > 1 ? 1 : r->n;
    pthread_mutex_lock(&sc->mu);
    int rc = 0;
    if (sc->stop || sc->q_slots + need > sc->queue_max + sc->n_free) {
        rc = PORTA_E_RANGE;
        goto out;
    }
    if (sc->q_len + n_tasks > sc->q_cap) {
        int cap = sc->q_cap ? sc->q_cap * 2 : 16;
        while (cap < sc->q_len + n_tasks)
            cap *= 2;
        struct task *q = realloc(sc->q, sizeof *q * (size_t)cap);
        if (!q) {
            rc = PORTA_E_NOMEM;
            goto out;
        }
        sc->q = q;
        sc->q_cap = cap;
    }
    for (int i = 0; i < n_tasks; i++) {
        srv_req_ref(r);
        sc->q[sc->q_len++] = (struct task){ r, r->num_beams > 1 ? -1 : i };
    }
    sc->q_slots += need;
    pthread_cond_broadcast(&sc->cv);
out:
    pthread_mutex_unlock(&sc->mu);
    return rc;
}

void srv_sched_wake(struct srv_sched *sc)
{
    pthread_mutex_lock(&sc->mu);
    pthread_cond_broadcast(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
}
