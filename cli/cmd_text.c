/* cmd_text.c - the text commands: `porta tokenize`, `porta detokenize`, `porta run` (one
 * prompt, streamed, or beam search with --beams) and `porta chat` (interactive, template
 * applied, KV cache kept across turns). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "cli.h"
#include "sampler.h"
#include "session.h"
#include "tokenizer.h"

static char *read_all(FILE *f, size_t *n)
{
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
        if (len + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
    }
    if (b)
        b[len] = 0;
    *n = len;
    return b;
}

/* Opens just the tokenizer of -m MODEL (a vocab-only GGUF is enough). */
static int open_tokenizer(const struct porta_config *cfg, struct porta_gguf **g,
                          struct porta_tokenizer **t)
{
    *g = NULL;
    *t = NULL;
    if (!cfg->model.path[0]) {
        porta_err("no model: pass -m FILE");
        return PORTA_E_INVAL;
    }
    int rc = porta_gguf_open(cfg->model.path, g);
    if (!rc && (rc = porta_tokenizer_load(*g, t))) {
        porta_gguf_close(*g);
        *g = NULL;
    }
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    bool special = false, bos = false, json = false;
    struct porta_gguf *g = NULL;
    struct porta_tokenizer *t = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        if (strcmp(rest[i], "--special") == 0)
            special = true;
        else if (strcmp(rest[i], "--bos") == 0)
            bos = true;
        else if (strcmp(rest[i], "--json") == 0)
            json = true;
        else {
            porta_err("tokenize: unknown argument '%s'", rest[i]);
            rc = PORTA_E_INVAL;
            goto done;
        }
    }
    if ((rc = open_tokenizer(&cfg, &g, &t)))
        goto done;
    size_t n;
    if (!(text = read_all(stdin, &n))) {
        rc = PORTA_E_NOMEM;
        goto done;
    }
    int n_ids;
    if ((rc = porta_tokenize(t, text, n, bos, special, &ids, &n_ids)))
        goto done;
    printf(json ? "[" : "");
    for (int i = 0; i < n_ids; i++)
        printf(json ? "%s%d" : "%s%d", i ? (json ? ", " : " ") : "", ids[i]);
    printf(json ? "]\n" : "\n");
done:
    free(ids);
    free(text);
    porta_tokenizer_destroy(t);
    porta_gguf_close(g);
    free(rest);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    struct porta_gguf *g = NULL;
    struct porta_tokenizer *t = NULL;
    int32_t *ids = NULL;
    char *text = NULL;
    bool special = false;
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        if (strcmp(rest[i], "--special") == 0)
            special = true;
        else {
            porta_err("detokenize: unknown argument '%s'", rest[i]);
            rc = PORTA_E_INVAL;
            goto done;
        }
    }
    if ((rc = open_tokenizer(&cfg, &g, &t)))
        goto done;
    int n;
    if ((rc = cli_read_ids("-", &ids, &n)))
        goto done;
    size_t len;
    if ((rc = porta_detokenize(t, ids, n, special, false, &text, &len)))
        goto done;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
done:
    free(text);
    free(ids);
    porta_tokenizer_destroy(t);
    porta_gguf_close(g);
    free(rest);
    return rc;
}

/* ---- generation shared by run and chat ---- */

struct gen_cli {
    struct cli_engine e;
    struct porta_tokenizer *tok;
    struct porta_session *sess;
    enum porta_chat_tmpl tmpl;
    struct porta_gen_params gp;
    struct porta_think *think;
    bool tty, hide_think, in_dim;
};

static void set_dim(struct gen_cli *g, bool dim)
{
    if (g->tty && dim != g->in_dim)
        fputs(dim ? "\033[2m" : "\033[0m", stdout);
    g->in_dim = dim;
}

/* streams reasoning (dimmed or hidden) and content */
static int on_text(void *user, const char *text, size_t n)
{
    struct gen_cli *g = user;
    struct porta_think_delta d;
    if (porta_think_feed(g->think, text, n, &d))
        return 1;
    if (d.n_reasoning && !g->hide_think) {
        set_dim(g, true);
        fwrite(d.reasoning, 1, d.n_reasoning, stdout);
    }
    if (d.n_content) {
        set_dim(g, false);
        fwrite(d.content, 1, d.n_content, stdout);
    }
    fflush(stdout);
    return 0;
}

static void flush_think(struct gen_cli *g)
{
    struct porta_think_delta d;
    if (porta_think_flush(g->think, &d) == 0) {
        if (d.n_reasoning && !g->hide_think) {
            set_dim(g, true);
            fwrite(d.reasoning, 1, d.n_reasoning, stdout);
        }
        set_dim(g, false);
        fwrite(d.content, 1, d.n_content, stdout);
    }
    set_dim(g, false);
    fflush(stdout);
}

static int gen_open(struct gen_cli *g, const struct porta_config *cfg, int max_tokens,
                    int n_seq)
{
    memset(g, 0, sizeof *g);
    g->tty = isatty(STDOUT_FILENO);
    int rc = cli_engine_open(cfg, n_seq, &g->e);
    if (rc)
        return rc;
    if ((rc = porta_tokenizer_load(g->e.model->gguf, &g->tok)) ||
        (rc = porta_session_create(g->e.ctx, g->tok, 0, &g->sess)))
        return rc;
    if (strcmp(cfg->model.chat_template, "auto") == 0) {
        struct porta_str s;
        char *txt = NULL;
        if (porta_gguf_get_str(g->e.model->gguf, "tokenizer.chat_template", &s) == 0 &&
            (txt = malloc(s.len + 1))) {
            memcpy(txt, s.ptr, s.len);
            txt[s.len] = 0;
        }
        porta_chat_detect(txt, &g->tmpl);
        free(txt);
    } else if ((rc = porta_chat_tmpl_from_name(cfg->model.chat_template, &g->tmpl))) {
        return rc;
    }
    struct porta_sampler_params *sp = &g->gp.sp;
    porta_sampler_params_from_config(sp, cfg);
    sp->seed = cfg->sampling.seed >= 0 ? (uint64_t)cfg->sampling.seed
                                       : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    g->gp.max_tokens = max_tokens > 0 ? max_tokens : cfg->sampling.max_tokens;
    return 0;
}

static void gen_close(struct gen_cli *g)
{
    porta_think_destroy(g->think);
    porta_session_destroy(g->sess);
    porta_tokenizer_destroy(g->tok);
    cli_engine_close(&g->e);
}

/* Generates from a rendered prompt text; prints the answer and the speed line. */
static int gen_text(struct gen_cli *g, const char *prompt, bool add_bos, bool reasoning_start)
{
    int32_t *ids = NULL;
    int n_ids, rc = porta_tokenize(g->tok, prompt, strlen(prompt), add_bos, true, &ids, &n_ids);
    if (rc)
        return rc;
    porta_think_destroy(g->think);
    g->think = NULL;
    if ((rc = porta_think_create(reasoning_start, &g->think))) {
        free(ids);
        return rc;
    }
    struct porta_gen_stats st;
    rc = porta_session_generate(g->sess, ids, n_ids, &g->gp, on_text, g, &st);
    flush_think(g);
    if (st.n_gen)
        fputc('\n', stdout);
    fflush(stdout);
    free(ids);
    if (rc)
        return rc;
    fprintf(stderr, "[prompt: %d tokens (%d cached), %.1f tok/s | generated: %d tokens, "
                    "%.1f tok/s | %s]\n",
            st.n_prompt, st.n_reused,
            st.t_prompt > 0 ? (st.n_prompt - st.n_reused) / st.t_prompt : 0.0, st.n_gen,
            st.t_gen > 0 ? st.n_gen / st.t_gen : 0.0, st.finish);
    return 0;
}

/* Beam search (run --beams N, the engine opened with N sequences): the prompt in sequence 0,
 * then each step decodes every live beam's last token in its own sequence, porta_beam_step
 * picks the next beams, and a beam continuing another's parent gets a copy of that
 * sequence's KV cache (the first child keeps the parent's sequence, the others take those
 * of beams that ended). Prints the best hypothesis. */
static int gen_beams(struct gen_cli *g, const char *prompt, bool add_bos, int beams)
{
    struct porta_ctx *c = g->e.ctx;
    int nv = g->e.model->hp.n_vocab, n_ids, n_eog = 0, rc;
    int32_t *ids = NULL, *eog = malloc(sizeof(int32_t) * (size_t)nv);
    float *logits = malloc(sizeof(float) * (size_t)nv * (size_t)beams);
    struct porta_beam *bs = NULL;
    void *tmp = NULL;
    size_t tmp_cap = 0;
    char *text = NULL;
    size_t len;
    if (!eog || !logits) {
        rc = PORTA_E_NOMEM;
        goto done;
    }
    for (int32_t t = 0; t < nv && !g->gp.ignore_eos; t++)
        if (porta_tokenizer_is_eog(g->tok, t))
            eog[n_eog++] = t;
    struct porta_beam_params bp;
    porta_beam_params_default(&bp);
    bp.num_beams = beams;
    bp.max_new_tokens = g->gp.max_tokens;
    bp.eog_ids = eog;
    bp.n_eog = n_eog;
    if ((rc = porta_tokenize(g->tok, prompt, strlen(prompt), add_bos, true, &ids, &n_ids)) ||
        (rc = porta_beam_create(&bp, nv, &bs)))
        goto done;
    if (n_ids < 1 || n_ids >= c->p.n_ctx) {
        porta_err("run: the prompt has %d tokens; the context holds %d", n_ids, c->p.n_ctx);
        rc = PORTA_E_RANGE;
        goto done;
    }
    double t0 = porta_time_s();
    struct porta_batch pb = { .n_tok = n_ids, .ids = ids };
    if ((rc = porta_forward(c, &pb, logits)))
        goto done;
    int seq_of[16] = { 0 }, n_live = 1, n_pos = n_ids, steps = 0;
    for (;;) {
        const float *lg[16];
        int32_t parent[16], token[16], pos[16], seqs[16];
        bool done = false, want[16];
        for (int i = 0; i < n_live; i++)
            lg[i] = logits + (size_t)i * nv;
        int live = 0;
        if ((rc = porta_beam_step(bs, lg, parent, token, &live, &done)))
            goto done;
        if (!done && n_pos + 1 >= c->p.n_ctx) {
            porta_beam_finish(bs);
            done = true;
        }
        if (done)
            break;
        int next[16], from[16];
        porta_beam_place(beams, seq_of, parent, live, next, from);
        for (int i = 0; i < live; i++)
            if (from[i] >= 0 &&
                (rc = porta_ctx_kv_copy(c, next[i], from[i], n_pos, &tmp, &tmp_cap)))
                goto done;
        for (int i = 0; i < live; i++) {
            seq_of[i] = seqs[i] = next[i];
            pos[i] = n_pos;
            want[i] = true;
        }
        struct porta_batch db = { .n_tok = live, .ids = token, .pos = pos, .seq = seqs,
                                  .logits = want };
        if ((rc = porta_forward(c, &db, logits)))
            goto done;
        n_live = live;
        n_pos++;
        steps++;
    }
    const int32_t *best;
    int n_best = 0;
    int32_t end = -1;
    if (porta_beam_n_hyps(bs) > 0 &&
        (rc = porta_beam_hyp(bs, 0, &best, &n_best, &end, NULL, NULL)) == 0 &&
        (rc = porta_detokenize(g->tok, best, n_best, false, false, &text, &len)) == 0) {
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (!rc)
        fprintf(stderr, "[prompt: %d tokens | beam search: %d beams, %d steps, %d tokens, "
                        "%.2f s | %s]\n",
                n_ids, beams, steps, n_best, porta_time_s() - t0,
                end >= 0 ? "stop" : "length");
done:
    free(text);
    free(tmp);
    porta_beam_destroy(bs);
    free(ids);
    free(eog);
    free(logits);
    return rc;
}

static const char *tok_text(const struct porta_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    size_t len = 0;
    const char *s = id >= 0 ? porta_tokenizer_text(t, id, &len) : NULL;
    if (!s || len >= cap)
        return "";
    memcpy(buf, s, len);
    buf[len] = 0;
    return buf;
}

static int render(struct gen_cli *g, const struct porta_chat_msg *msgs, int n, char **out)
{
    char bos[256], eos[256];
    return porta_chat_render(g->tmpl, msgs, n, true,
                             tok_text(g->tok, porta_tokenizer_bos(g->tok), bos, sizeof bos),
                             tok_text(g->tok, porta_tokenizer_eos(g->tok), eos, sizeof eos), out);
}

int cmd_run(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest), max_tokens = 0;
    const char *prompt = NULL, *system = NULL;
    char *prompt_buf = NULL;
    bool chat = false, hide = false, ignore_eos = false;
    int beams = 0;
    struct gen_cli g;
    memset(&g, 0, sizeof g);
    char *rendered = NULL;
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        char *end;
        if (strcmp(rest[i], "-p") == 0 && i + 1 < n_rest)
            prompt = rest[++i];
        else if (strcmp(rest[i], "-f") == 0 && i + 1 < n_rest) {
            FILE *f = fopen(rest[++i], "rb");
            size_t n;
            if (!f) {
                porta_err("run: cannot open prompt file %s", rest[i]);
                rc = PORTA_E_IO;
                goto done;
            }
            free(prompt_buf);
            prompt = prompt_buf = read_all(f, &n);
            fclose(f);
            if (!prompt_buf) {
                rc = PORTA_E_NOMEM;
                goto done;
            }
        } else if (strcmp(rest[i], "--system") == 0 && i + 1 < n_rest)
            system = rest[++i];
        else if (strcmp(rest[i], "-n") == 0 && i + 1 < n_rest) {
            max_tokens = (int)strtol(rest[++i], &end, 10);
            if (*end || max_tokens < 1) {
                porta_err("run: -n must be a positive number");
                rc = PORTA_E_INVAL;
                goto done;
            }
        } else if (strcmp(rest[i], "--beams") == 0 && i + 1 < n_rest) {
            beams = (int)strtol(rest[++i], &end, 10);
            if (*end || beams < 1 || beams > 16) {
                porta_err("run: --beams must be a number from 1 to 16");
                rc = PORTA_E_INVAL;
                goto done;
            }
        } else if (strcmp(rest[i], "--chat") == 0)
            chat = true;
        else if (strcmp(rest[i], "--hide-think") == 0)
            hide = true;
        else if (strcmp(rest[i], "--ignore-eos") == 0)
            ignore_eos = true;
        else {
            porta_err("run: unknown or incomplete argument '%s'", rest[i]);
            rc = PORTA_E_INVAL;
            goto done;
        }
    }
    if (!prompt) {
        porta_err("run: need -p \"prompt text\" or -f FILE");
        rc = PORTA_E_INVAL;
        goto done;
    }
    if ((rc = gen_open(&g, &cfg, max_tokens, beams > 1 ? beams : 1)))
        goto done;
    g.hide_think = hide;
    g.gp.ignore_eos = ignore_eos;
    if (chat) {
        struct porta_chat_msg msgs[2];
        int n = 0;
        if (system)
            msgs[n++] = (struct porta_chat_msg){ "system", system };
        msgs[n++] = (struct porta_chat_msg){ "user", prompt };
        if ((rc = render(&g, msgs, n, &rendered)))
            goto done;
        rc = beams > 1 ? gen_beams(&g, rendered, false, beams)
                       : gen_text(&g, rendered, false, porta_chat_tmpl_starts_reasoning(g.tmpl));
    } else {
        rc = beams > 1 ? gen_beams(&g, prompt, true, beams) : gen_text(&g, prompt, true, false);
    }
done:
    free(rendered);
    free(prompt_buf);
    gen_close(&g);
    free(rest);
    return rc;
}

int cmd_chat(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest), max_tokens = 0;
    const char *system = NULL;
    bool hide = false;
    struct gen_cli g;
    memset(&g, 0, sizeof g);
    struct porta_chat_msg *msgs = NULL;
    int n_msgs = 0, cap = 0;
    char line[8192];
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        if (strcmp(rest[i], "--system") == 0 && i + 1 < n_rest)
            system = rest[++i];
        else if (strcmp(rest[i], "-n") == 0 && i + 1 < n_rest)
            max_tokens = atoi(rest[++i]);
        else if (strcmp(rest[i], "--hide-think") == 0)
            hide = true;
        else {
            porta_err("chat: unknown or incomplete argument '%s'", rest[i]);
            rc = PORTA_E_INVAL;
            goto done;
        }
    }
    if ((rc = gen_open(&g, &cfg, max_tokens, 1)))
        goto done;
    g.hide_think = hide;
    bool tty_in = isatty(STDIN_FILENO);
    if (tty_in)
        fprintf(stderr, "porta chat (%s template) - /reset clears the conversation, /quit ends\n",
                porta_chat_tmpl_name(g.tmpl));
    for (;;) {
        if (tty_in) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        if (!fgets(line, sizeof line, stdin))
            break;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            continue;
        if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0)
            break;
        if (strcmp(line, "/reset") == 0) {
            for (int i = 0; i < n_msgs; i++)
                free((char *)msgs[i].content);
            n_msgs = 0;
            porta_session_reset(g.sess);
            fprintf(stderr, "[conversation cleared]\n");
            continue;
        }
        if (n_msgs + 3 > cap) {
            cap = cap ? cap * 2 : 16;
            struct porta_chat_msg *nm = realloc(msgs, sizeof *msgs * (size_t)cap);
            if (!nm) {
                rc = PORTA_E_NOMEM;
                goto done;
            }
            msgs = nm;
        }
        if (n_msgs == 0 && system)
            msgs[n_msgs++] = (struct porta_chat_msg){ "system", strdup(system) };
        msgs[n_msgs++] = (struct porta_chat_msg){ "user", strdup(line) };
        char *rendered;
        if ((rc = render(&g, msgs, n_msgs, &rendered)))
            goto done;
        rc = gen_text(&g, rendered, false, porta_chat_tmpl_starts_reasoning(g.tmpl));
        free(rendered);
        if (rc)
            goto done;
        /* the answer joins the history (the template decides how it is re-rendered) */
        int n_last;
        const int32_t *last = porta_session_last(g.sess, &n_last);
        char *answer = NULL;
        size_t alen;
        if ((rc = porta_detokenize(g.tok, last, n_last, false, false, &answer, &alen)))
            goto done;
        msgs[n_msgs++] = (struct porta_chat_msg){ "assistant", answer };
    }
done:
    for (int i = 0; i < n_msgs; i++)
        free((char *)msgs[i].content);
    free(msgs);
    gen_close(&g);
    free(rest);
    return rc;
}
