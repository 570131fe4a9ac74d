/* respond.c - the JSON the server writes: OpenAI's error object, the models list, complete
 * chat / text completions with usage and log-probabilities, and the SSE chunks of a stream
 * (role, reasoning_content, content, finish, usage, [DONE]). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server.h"

static char *print_del(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

/* a string item from bytes that may not be valid UTF-8 */
static cJSON *utf8_string(const char *s, size_t n)
{
    struct srv_buf b = { 0 };
    if (srv_buf_add_utf8(&b, s, n) || srv_buf_add(&b, "", 0)) {
        srv_buf_free(&b);
        return NULL;
    }
    cJSON *o = cJSON_CreateString(b.p);
    srv_buf_free(&b);
    return o;
}

char *srv_json_error(const struct srv_error *e)
{
    cJSON *o = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0])
        cJSON_AddStringToObject(err, "param", e->param);
    else
        cJSON_AddNullToObject(err, "param");
    if (e->code)
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    return print_del(o);
}

static cJSON *model_obj(const char *alias, long long created)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", alias);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "porta");
    return m;
}

char *srv_json_models(const char *alias, long long created)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON_AddItemToArray(data, model_obj(alias, created));
    return print_del(o);
}

char *srv_json_model(const char *alias, long long created)
{
    return print_del(model_obj(alias, created));
}

/* ---- log-probabilities ---- */

static cJSON *token_str(const struct srv_engine *e, int32_t id, cJSON **bytes)
{
    char piece[PORTA_TOKEN_MAX_LEN + 8];
    size_t len = 0;
    if (porta_token_piece(e->tok, id, true, piece, sizeof piece, &len) || len > sizeof piece)
        len = 0;
    if (bytes) {
        *bytes = cJSON_CreateArray();
        for (size_t i = 0; i < len; i++)
            cJSON_AddItemToArray(*bytes, cJSON_CreateNumber((unsigned char)piece[i]));
    }
    return utf8_string(piece, len);
}

/* chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal": null} */
static cJSON *chat_logprobs(const struct srv_engine *e, const struct srv_req *r,
                            const struct srv_logprob *lp, int n)
{
    cJSON *o = cJSON_CreateObject(), *content = cJSON_AddArrayToObject(o, "content");
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_CreateObject(), *bytes;
        cJSON_AddItemToObject(t, "token", token_str(e, lp[i].id, &bytes));
        cJSON_AddNumberToObject(t, "logprob", lp[i].lp);
        cJSON_AddItemToObject(t, "bytes", bytes);
        cJSON *top = cJSON_AddArrayToObject(t, "top_logprobs");
        for (int k = 0; k < lp[i].n_top && k < r->top_logprobs; k++) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddItemToObject(a, "token", token_str(e, lp[i].top_ids[k], &bytes));
            cJSON_AddNumberToObject(a, "logprob", lp[i].top_lps[k]);
            cJSON_AddItemToObject(a, "bytes", bytes);
            cJSON_AddItemToArray(top, a);
        }
        cJSON_AddItemToArray(content, t);
    }
    cJSON_AddNullToObject(o, "refusal");
    return o;
}

/* completions: {"tokens", "token_logprobs", "top_logprobs": [{token: lp}], "text_offset"} */
static cJSON *text_logprobs(const struct srv_engine *e, const struct srv_req *r,
                            const struct srv_logprob *lp, int n, size_t offset0)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
    size_t off = offset0;
    for (int i = 0; i < n; i++) {
        cJSON *s = token_str(e, lp[i].id, NULL);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += s && s->valuestring ? strlen(s->valuestring) : 0;
        cJSON_AddItemToArray(toks, s);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(lp[i].lp));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < lp[i].n_top && k < r->top_logprobs; k++) {
            cJSON *ts = token_str(e, lp[i].top_ids[k], NULL);
            if (ts && ts->valuestring && !cJSON_GetObjectItemCaseSensitive(top, ts->valuestring))
                cJSON_AddNumberToObject(top, ts->valuestring, lp[i].top_lps[k]);
            cJSON_Delete(ts);
        }
        cJSON_AddItemToArray(tops, top);
    }
    return o;
}

static cJSON *usage_obj(const struct srv_req *r)
{
    int gen = 0;
    for (int i = 0; i < r->n; i++)
        gen += r->ch[i].n_gen;
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", r->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", gen);
    cJSON_AddNumberToObject(u, "total_tokens", r->n_prompt + gen);
    return u;
}

static cJSON *envelope(const struct srv_req *r, const char *alias, bool chunk)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", r->kind == SRV_COMPLETION ? "text_completion"
                                         : chunk                  ? "chat.completion.chunk"
                                                                  : "chat.completion");
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", alias);
    cJSON_AddStringToObject(o, "system_fingerprint", "porta");
    return o;
}

char *srv_json_final(const struct srv_engine *e, struct srv_req *r, const char *alias)
{
    cJSON *o = envelope(r, alias, false), *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < r->n; i++) {
        struct srv_choice *c = &r->ch[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        if (r->kind == SRV_CHAT) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", c->content.p ? c->content.p : "");
            if (c->reasoning.n)
                cJSON_AddStringToObject(m, "reasoning_content", c->reasoning.p);
            else
                cJSON_AddNullToObject(m, "reasoning_content");
            if (r->logprobs)
                cJSON_AddItemToObject(ch, "logprobs", chat_logprobs(e, r, c->lp, c->n_lp));
            else
                cJSON_AddNullToObject(ch, "logprobs");
        } else {
            cJSON_AddStringToObject(ch, "text", c->content.p ? c->content.p : "");
            if (r->logprobs)
                cJSON_AddItemToObject(ch, "logprobs", text_logprobs(e, r, c->lp, c->n_lp, 0));
            else
                cJSON_AddNullToObject(ch, "logprobs");
        }
        cJSON_AddStringToObject(ch, "finish_reason", c->finish ? c->finish : "stop");
        cJSON_AddItemToArray(choices, ch);
    }
    cJSON_AddItemToObject(o, "usage", usage_obj(r));
    return print_del(o);
}

/* ---- streaming ---- */

static int sse_add(struct srv_buf *out, cJSON *o)
{
    char *s = print_del(o);
    if (!s)
        return PORTA_E_NOMEM;
    int rc = srv_buf_printf(out, "data: %s\n\n", s);
    free(s);
    return rc;
}

/* one chunk for choice i: text goes to "content" / "reasoning_content" (chat) or "text" */
static int chunk(const struct srv_engine *e, struct srv_req *r, const char *alias, int i,
                 bool role, const char *field, const char *text, size_t n,
                 const struct srv_logprob *lp, int n_lp, size_t off, const char *finish,
                 struct srv_buf *out)
{
    cJSON *o = envelope(r, alias, true), *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", i);
    if (r->kind == SRV_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (role)
            cJSON_AddStringToObject(d, "role", "assistant");
        if (field)
            cJSON_AddItemToObject(d, field, utf8_string(text, n));
        else if (role)
            cJSON_AddStringToObject(d, "content", "");
        if (n_lp)
            cJSON_AddItemToObject(ch, "logprobs", chat_logprobs(e, r, lp, n_lp));
        else
            cJSON_AddNullToObject(ch, "logprobs");
    } else {
        cJSON_AddItemToObject(ch, "text", utf8_string(text ? text : "", n));
        if (n_lp)
            cJSON_AddItemToObject(ch, "logprobs", text_logprobs(e, r, lp, n_lp, off));
        else
            cJSON_AddNullToObject(ch, "logprobs");
    }
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    return sse_add(out, o);
}

int srv_sse_next(const struct srv_engine *e, struct srv_req *r, const char *alias,
                 struct srv_buf *out, bool *end)
{
    *end = false;
    int rc = 0;
    if (r->failed) {
        struct srv_error er;
        srv_error_set(&er, 500, NULL, "%s", r->err[0] ? r->err : "generation failed");
        char *s = srv_json_error(&er);
        if (!s)
            return PORTA_E_NOMEM;
        rc = srv_buf_printf(out, "data: %s\n\ndata: [DONE]\n\n", s);
        free(s);
        *end = true;
        return rc;
    }
    bool all = true;
    for (int i = 0; i < r->n && !rc; i++) {
        struct srv_choice *c = &r->ch[i];
        if (r->kind == SRV_CHAT && !c->sent_role) {
            rc = chunk(e, r, alias, i, true, NULL, NULL, 0, NULL, 0, 0, NULL, out);
            c->sent_role = true;
        }
        if (!rc && c->reasoning.n > c->sent_reasoning) {
            rc = chunk(e, r, alias, i, false, "reasoning_content", c->reasoning.p + c->sent_reasoning,
                       c->reasoning.n - c->sent_reasoning, NULL, 0, 0, NULL, out);
            c->sent_reasoning = c->reasoning.n;
        }
        if (!rc && (c->content.n > c->sent_content || c->n_lp > c->sent_lp)) {
            rc = chunk(e, r, alias, i, false, "content", c->content.p + c->sent_content,
                       c->content.n - c->sent_content, c->lp + c->sent_lp, c->n_lp - c->sent_lp,
                       c->sent_content, NULL, out);
            c->sent_content = c->content.n;
            c->sent_lp = c->n_lp;
        }
        if (!rc && c->finish && !c->sent_finish) {
            rc = chunk(e, r, alias, i, false, NULL, NULL, 0, NULL, 0, 0, c->finish, out);
            c->sent_finish = true;
        }
        all = all && c->sent_finish;
    }
    if (rc || !all)
        return rc;
    if (r->include_usage) {
        cJSON *o = envelope(r, alias, true);
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", usage_obj(r));
        if ((rc = sse_add(out, o)))
            return rc;
    }
    *end = true;
    return srv_buf_puts(out, "data: [DONE]\n\n");
}
