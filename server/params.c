/* params.c - a request body (JSON) into a validated srv_req: every parameter is type- and
 * range-checked and a bad one names itself in OpenAI's error object; the chat template is
 * rendered and the prompt tokenized here, on the HTTP thread, so the scheduler gets only
 * requests it can run. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "server.h"

#define SRV_MAX_MESSAGES 1024
#define SRV_MAX_STOPS 16
#define SRV_MAX_STOP_LEN 256
#define SRV_MAX_N 16
#define SRV_MAX_BEAMS 8
#define SRV_MAX_BIAS 1024
#define SRV_MAX_SAFE_INT 9007199254740991.0 /* 2^53 - 1: integers a double holds exactly */

void srv_error_set(struct srv_error *e, int status, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->code = NULL;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* ---- typed getters: absent or null -> *set false; wrong type / range -> 400 ---- */

struct getter {
    const cJSON *obj;
    struct srv_error *err;
};

static const cJSON *item(struct getter *g, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(g->obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

static int bad(struct getter *g, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct getter *g, const char *key, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_error_set(g->err, 400, key, "'%s': %s", key, msg);
    return PORTA_E_INVAL;
}

static int get_num(struct getter *g, const char *key, double lo, double hi, bool lo_open,
                   double *out, bool *set)
{
    const cJSON *it = item(g, key);
    *set = it != NULL;
    if (!it)
        return 0;
    if (!cJSON_IsNumber(it))
        return bad(g, key, "must be a number");
    double v = it->valuedouble;
    if (!isfinite(v) || v > hi || v < lo || (lo_open && v == lo))
        return bad(g, key, "%g is out of range; expected a number in %s%g, %g]", v,
                   lo_open ? "(" : "[", lo, hi);
    *out = v;
    return 0;
}

static int get_int(struct getter *g, const char *key, double lo, double hi, long long *out,
                   bool *set)
{
    const cJSON *it = item(g, key);
    *set = it != NULL;
    if (!it)
        return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
        fabs(it->valuedouble) > SRV_MAX_SAFE_INT)
        return bad(g, key, "must be an integer");
    double v = it->valuedouble;
    if (v < lo || v > hi)
        return bad(g, key, "%.0f is out of range; expected an integer in [%.0f, %.0f]", v, lo, hi);
    *out = (long long)v;
    return 0;
}

static int get_bool(struct getter *g, const char *key, bool *out)
{
    const cJSON *it = item(g, key);
    if (!it)
        return 0;
    if (!cJSON_IsBool(it))
        return bad(g, key, "must be a boolean");
    *out = cJSON_IsTrue(it);
    return 0;
}

/* ---- which keys each endpoint knows ---- */

static const char *const common_keys[] = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "n",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "no_repeat_ngram_size",
    "min_tokens", "num_beams", "length_penalty", "logit_bias", "logprobs", "stream",
    "stream_options", "ignore_eos", "user",
    NULL,
};
static const char *const chat_keys[] = {
    "messages", "max_completion_tokens", "top_logprobs", "store", "metadata", "service_tier",
    "parallel_tool_calls", "reasoning_effort", "tools", "tool_choice", "functions",
    "function_call", "response_format", "modalities",
    NULL,
};
static const char *const completion_keys[] = { "prompt", "echo", "suffix", "best_of", NULL };

static bool in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (strcmp(*l, k) == 0)
            return true;
    return false;
}

static int check_keys(struct getter *g, enum srv_kind kind)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, g->obj)
    {
        const char *k = it->string ? it->string : "";
        if (!in_list(common_keys, k) && !in_list(kind == SRV_CHAT ? chat_keys : completion_keys, k)) {
            srv_error_set(g->err, 400, k, "Unrecognized request argument supplied: %s", k);
            return PORTA_E_INVAL;
        }
    }
    /* known keys for features porta does not have: fine when they ask for nothing */
    const cJSON *v;
    if ((v = item(g, "tools")) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
        return bad(g, "tools", "tool calling is not supported by this server");
    if ((v = item(g, "functions")) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
        return bad(g, "functions", "function calling is not supported by this server");
    if ((v = item(g, "tool_choice")) &&
        !(cJSON_IsString(v) && (!strcmp(v->valuestring, "none") || !strcmp(v->valuestring, "auto"))))
        return bad(g, "tool_choice", "only \"none\" or \"auto\" (with no tools) is supported");
    if ((v = item(g, "function_call")) &&
        !(cJSON_IsString(v) && (!strcmp(v->valuestring, "none") || !strcmp(v->valuestring, "auto"))))
        return bad(g, "function_call", "function calling is not supported by this server");
    if ((v = item(g, "response_format"))) {
        const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0)
            return bad(g, "response_format", "only {\"type\": \"text\"} is supported");
    }
    if ((v = item(g, "modalities"))) {
        const cJSON *m;
        if (!cJSON_IsArray(v))
            return bad(g, "modalities", "must be an array");
        cJSON_ArrayForEach(m, v) if (!cJSON_IsString(m) || strcmp(m->valuestring, "text") != 0)
            return bad(g, "modalities", "only \"text\" is supported");
    }
    if ((v = item(g, "echo")) && !cJSON_IsFalse(v))
        return bad(g, "echo", cJSON_IsBool(v) ? "echo is not supported" : "must be a boolean");
    if ((v = item(g, "suffix")) && !(cJSON_IsString(v) && v->valuestring[0] == 0))
        return bad(g, "suffix", "suffix is not supported");
    bool set;
    long long best_of = 1, n = 1;
    int rc;
    if ((rc = get_int(g, "best_of", 1, SRV_MAX_N, &best_of, &set)))
        return rc;
    get_int(g, "n", 1, SRV_MAX_N, &n, &set);
    if (best_of != 1 && best_of != n)
        return bad(g, "best_of", "only best_of equal to n is supported");
    if ((v = item(g, "user")) && !cJSON_IsString(v))
        return bad(g, "user", "must be a string");
    if ((v = item(g, "reasoning_effort")) && !cJSON_IsString(v))
        return bad(g, "reasoning_effort", "must be a string");
    if ((v = item(g, "store")) && !cJSON_IsBool(v))
        return bad(g, "store", "must be a boolean");
    if ((v = item(g, "metadata")) && !cJSON_IsObject(v))
        return bad(g, "metadata", "must be an object");
    return 0;
}

/* ---- prompt ---- */

static const char *role_name(const char *r)
{
    static const char *const roles[] = { "system", "user", "assistant", "tool", NULL };
    if (strcmp(r, "developer") == 0)
        return "system";
    for (int i = 0; roles[i]; i++)
        if (strcmp(r, roles[i]) == 0)
            return roles[i];
    return NULL;
}

/* one message's content: a string, null, or an array of {"type":"text","text":...} parts;
 * *text is malloc'd */
static int message_text(struct getter *g, const cJSON *c, int i, char **text)
{
    char key[64];
    snprintf(key, sizeof key, "messages[%d].content", i);
    *text = NULL;
    if (!c || cJSON_IsNull(c))
        return (*text = strdup("")) ? 0 : PORTA_E_NOMEM;
    if (cJSON_IsString(c))
        return (*text = strdup(c->valuestring)) ? 0 : PORTA_E_NOMEM;
    if (!cJSON_IsArray(c))
        return bad(g, key, "must be a string or an array of text parts");
    struct srv_buf b = { 0 };
    const cJSON *part;
    cJSON_ArrayForEach(part, c)
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0 ||
            !cJSON_IsString(x)) {
            srv_buf_free(&b);
            return bad(g, key, "only parts of type \"text\" with a string \"text\" are supported");
        }
        if (srv_buf_puts(&b, x->valuestring)) {
            srv_buf_free(&b);
            return PORTA_E_NOMEM;
        }
    }
    *text = b.p ? b.p : strdup("");
    return *text ? 0 : PORTA_E_NOMEM;
}

static int chat_prompt(const struct srv_engine *e, struct getter *g, char **out)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(g->obj, "messages");
    *out = NULL;
    if (!msgs || cJSON_IsNull(msgs))
        return bad(g, "messages", "is required");
    if (!cJSON_IsArray(msgs))
        return bad(g, "messages", "must be an array of messages");
    int n = cJSON_GetArraySize(msgs);
    if (n < 1 || n > SRV_MAX_MESSAGES)
        return bad(g, "messages", "must hold 1 to %d messages, not %d", SRV_MAX_MESSAGES, n);
    struct porta_chat_msg *m = calloc((size_t)n, sizeof *m);
    if (!m)
        return PORTA_E_NOMEM;
    int rc = 0, i = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, msgs)
    {
        char key[64];
        snprintf(key, sizeof key, "messages[%d]", i);
        if (!cJSON_IsObject(msg)) {
            rc = bad(g, key, "must be an object");
            goto done;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        snprintf(key, sizeof key, "messages[%d].role", i);
        if (!cJSON_IsString(role) || !(m[i].role = role_name(role->valuestring))) {
            rc = bad(g, key, "must be one of system, developer, user, assistant, tool");
            goto done;
        }
        char *text;
        if ((rc = message_text(g, cJSON_GetObjectItemCaseSensitive(msg, "content"), i, &text)))
            goto done;
        m[i++].content = text;
    }
    rc = porta_chat_render(e->tmpl, m, n, true, e->bos_text, e->eos_text, out);
    if (rc == PORTA_E_INVAL)
        rc = bad(g, "messages", "this conversation does not fit the model's chat template (%s)",
                 porta_chat_tmpl_name(e->tmpl));
done:
    for (int j = 0; j < n; j++)
        free((char *)m[j].content);
    free(m);
    return rc;
}

/* completions: a string, [string], or token ids ([int...] or [[int...]]) */
static int completion_prompt(const struct srv_engine *e, struct getter *g, struct srv_req *r)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(g->obj, "prompt");
    if (!p || cJSON_IsNull(p))
        return bad(g, "prompt", "is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        int rc = porta_tokenize(e->tok, p->valuestring, strlen(p->valuestring), true, true,
                                &r->prompt, &r->n_prompt);
        return rc;
    }
    if (!cJSON_IsArray(p))
        return bad(g, "prompt", "must be a string, an array of one string, or token ids");
    int n = cJSON_GetArraySize(p);
    if (n > e->n_ctx)
        return bad(g, "prompt", "%d token ids exceed the context of %d", n, e->n_ctx);
    if (n > 0 && !(r->prompt = malloc(sizeof(int32_t) * (size_t)n)))
        return PORTA_E_NOMEM;
    const cJSON *t;
    cJSON_ArrayForEach(t, p)
    {
        if (cJSON_IsString(t))
            return bad(g, "prompt", "a list of several prompts is not supported");
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 ||
            t->valuedouble >= e->n_vocab)
            return bad(g, "prompt", "token ids must be integers in [0, %d)", e->n_vocab);
        r->prompt[r->n_prompt++] = (int32_t)t->valuedouble;
    }
    return 0;
}

/* ---- sampling and the rest ---- */

static int get_stops(struct getter *g, struct srv_req *r)
{
    const cJSON *s = item(g, "stop");
    if (!s)
        return 0;
    int n = cJSON_IsString(s) ? 1 : cJSON_IsArray(s) ? cJSON_GetArraySize(s) : -1;
    if (n < 0)
        return bad(g, "stop", "must be a string or an array of strings");
    if (n > SRV_MAX_STOPS)
        return bad(g, "stop", "at most %d stop strings, not %d", SRV_MAX_STOPS, n);
    if (n == 0)
        return 0;
    if (!(r->stops = calloc((size_t)n, sizeof *r->stops)))
        return PORTA_E_NOMEM;
    const cJSON *x = cJSON_IsString(s) ? s : s->child;
    for (int i = 0; i < n; i++, x = x->next) {
        if (!cJSON_IsString(x))
            return bad(g, "stop", "must be a string or an array of strings");
        if (strlen(x->valuestring) > SRV_MAX_STOP_LEN)
            return bad(g, "stop", "a stop string is longer than %d bytes", SRV_MAX_STOP_LEN);
        if (!(r->stops[i] = strdup(x->valuestring)))
            return PORTA_E_NOMEM;
        r->n_stops++;
    }
    return 0;
}

static int get_bias(const struct srv_engine *e, struct getter *g, struct srv_req *r)
{
    const cJSON *b = item(g, "logit_bias");
    if (!b)
        return 0;
    if (!cJSON_IsObject(b))
        return bad(g, "logit_bias", "must be an object mapping token ids to numbers");
    int n = cJSON_GetArraySize(b);
    if (n > SRV_MAX_BIAS)
        return bad(g, "logit_bias", "at most %d entries, not %d", SRV_MAX_BIAS, n);
    if (n == 0)
        return 0;
    r->bias_ids = malloc(sizeof(int32_t) * (size_t)n);
    r->bias_vals = malloc(sizeof(float) * (size_t)n);
    if (!r->bias_ids || !r->bias_vals)
        return PORTA_E_NOMEM;
    const cJSON *x;
    int i = 0;
    cJSON_ArrayForEach(x, b)
    {
        char *end;
        const char *k = x->string ? x->string : "";
        long id = strtol(k, &end, 10);
        if (!*k || *end || id < 0 || id >= e->n_vocab)
            return bad(g, "logit_bias", "key \"%.40s\" is not a token id in [0, %d)", k,
                       e->n_vocab);
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < -100 ||
            x->valuedouble > 100)
            return bad(g, "logit_bias", "the bias of token %ld must be a number in [-100, 100]",
                       id);
        r->bias_ids[i] = (int32_t)id;
        r->bias_vals[i++] = (float)x->valuedouble;
    }
    r->sp.bias_ids = r->bias_ids;
    r->sp.bias_vals = r->bias_vals;
    r->sp.n_bias = n;
    return 0;
}

#define TRY(expr)                                                                              \
    do {                                                                                       \
        if ((rc = (expr)))                                                                     \
            goto fail;                                                                         \
    } while (0)

static int get_sampling(const struct srv_engine *e, const struct porta_config *cfg,
                        struct getter *g, struct srv_req *r)
{
    struct porta_sampler_params *sp = &r->sp;
    double d;
    long long v;
    bool set;
    int rc;
    porta_sampler_params_from_config(sp, cfg);
    TRY(get_num(g, "temperature", 0, 2, false, &d, &set));
    if (set)
        sp->temperature = (float)d;
    TRY(get_num(g, "top_p", 0, 1, true, &d, &set));
    if (set)
        sp->top_p = (float)d;
    TRY(get_int(g, "top_k", -1, e->n_vocab, &v, &set));
    if (set)
        sp->top_k = v < 0 ? 0 : (int)v;
    TRY(get_num(g, "min_p", 0, 1, false, &d, &set));
    if (set)
        sp->min_p = (float)d;
    TRY(get_num(g, "presence_penalty", -2, 2, false, &d, &set));
    if (set)
        sp->presence_penalty = (float)d;
    TRY(get_num(g, "frequency_penalty", -2, 2, false, &d, &set));
    if (set)
        sp->frequency_penalty = (float)d;
    TRY(get_num(g, "repetition_penalty", 0, 10, true, &d, &set));
    if (set)
        sp->repetition_penalty = (float)d;
    TRY(get_int(g, "no_repeat_ngram_size", 0, 1024, &v, &set));
    if (set)
        sp->no_repeat_ngram_size = (int)v;
    TRY(get_int(g, "seed", -SRV_MAX_SAFE_INT, SRV_MAX_SAFE_INT, &v, &set));
    if (set)
        sp->seed = (uint64_t)v;
    else if (cfg->sampling.seed >= 0)
        sp->seed = (uint64_t)cfg->sampling.seed;
    else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sp->seed = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)r;
    }
    TRY(get_bias(e, g, r));
    sp->eog_ids = e->eog;
    sp->n_eog = e->n_eog;
fail:
    return rc;
}

static int get_limits(const struct srv_engine *e, const struct porta_config *cfg,
                      struct getter *g, struct srv_req *r)
{
    long long v;
    bool set;
    int rc;
    r->max_tokens = cfg->sampling.max_tokens;
    const char *mkey = "max_tokens";
    if (r->kind == SRV_CHAT && item(g, "max_completion_tokens"))
        mkey = "max_completion_tokens";
    TRY(get_int(g, mkey, 1, cfg->server.max_tokens, &v, &set));
    if (set)
        r->max_tokens = (int)v;
    TRY(get_int(g, "min_tokens", 0, r->max_tokens, &v, &set));
    if (set)
        r->sp.min_new_tokens = (int)v;
    TRY(get_int(g, "n", 1, SRV_MAX_N, &v, &set));
    r->n = set ? (int)v : 1;
    int max_beams = e->n_slots < SRV_MAX_BEAMS ? e->n_slots : SRV_MAX_BEAMS;
    TRY(get_int(g, "num_beams", 1, max_beams, &v, &set));
    r->num_beams = set ? (int)v : 1;
    if (r->num_beams > 1 && r->n > r->num_beams) {
        rc = bad(g, "n", "n (%d) must not exceed num_beams (%d)", r->n, r->num_beams);
        goto fail;
    }
    /* n choices take n slots (waiting in the queue for them): more could never start */
    int max_n = e->n_slots + cfg->server.queue;
    if (r->num_beams == 1 && r->n > max_n) {
        rc = bad(g, "n", "at most %d choices on this server (slots + queue)", max_n);
        goto fail;
    }
    double d;
    r->length_penalty = 1.0f;
    TRY(get_num(g, "length_penalty", -10, 10, false, &d, &set));
    if (set)
        r->length_penalty = (float)d;
    TRY(get_bool(g, "ignore_eos", &r->ignore_eos));
fail:
    return rc;
}

static int get_output(struct getter *g, struct srv_req *r)
{
    int rc;
    long long v;
    bool set;
    const cJSON *lp = item(g, "logprobs");
    if (r->kind == SRV_CHAT) {
        TRY(get_bool(g, "logprobs", &r->logprobs));
        TRY(get_int(g, "top_logprobs", 0, PORTA_SAMPLER_MAX_TOP_LOGPROBS, &v, &set));
        if (set && !r->logprobs) {
            rc = bad(g, "top_logprobs", "requires logprobs to be true");
            goto fail;
        }
        r->top_logprobs = set ? (int)v : 0;
    } else if (lp) {
        if (cJSON_IsBool(lp)) {
            r->logprobs = cJSON_IsTrue(lp);
        } else {
            TRY(get_int(g, "logprobs", 0, PORTA_SAMPLER_MAX_TOP_LOGPROBS, &v, &set));
            r->logprobs = true;
            r->top_logprobs = (int)v;
        }
    }
    if (r->logprobs && r->num_beams > 1) {
        rc = bad(g, "logprobs", "log-probabilities are not reported with num_beams > 1");
        goto fail;
    }
    r->sp.logprobs = r->logprobs;
    r->sp.top_logprobs = r->top_logprobs;
    TRY(get_bool(g, "stream", &r->stream));
    const cJSON *so = item(g, "stream_options");
    if (so) {
        if (!r->stream) {
            rc = bad(g, "stream_options", "is only allowed when stream is true");
            goto fail;
        }
        if (!cJSON_IsObject(so)) {
            rc = bad(g, "stream_options", "must be an object");
            goto fail;
        }
        const cJSON *x;
        cJSON_ArrayForEach(x, so) if (strcmp(x->string, "include_usage") != 0 &&
                                      strcmp(x->string, "continuous_usage_stats") != 0)
        {
            rc = bad(g, "stream_options", "unknown option \"%.40s\"", x->string);
            goto fail;
        }
        struct getter g2 = { so, g->err };
        if ((rc = get_bool(&g2, "include_usage", &r->include_usage))) {
            snprintf(g->err->param, sizeof g->err->param, "stream_options.include_usage");
            goto fail;
        }
    }
fail:
    return rc;
}

static int get_model(struct getter *g, const char *alias)
{
    const cJSON *m = item(g, "model");
    if (!m)
        return 0;
    if (!cJSON_IsString(m))
        return bad(g, "model", "must be a string");
    if (strcmp(m->valuestring, alias) != 0) {
        srv_error_set(g->err, 404, "model", "The model `%.200s` does not exist.", m->valuestring);
        g->err->code = "model_not_found";
        return PORTA_E_NOTFOUND;
    }
    return 0;
}

static void make_id(struct srv_req *r)
{
    static atomic_uint_fast64_t counter;
    uint64_t c = atomic_fetch_add(&counter, 1) + 1;
    uint64_t x = r->sp.seed ^ (c * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)r->created;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    snprintf(r->id, sizeof r->id, "%s-%016llx%06llx", r->kind == SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)x, (unsigned long long)(c & 0xffffff));
}

int srv_parse(const struct srv_engine *e, const struct porta_config *cfg, const char *alias,
              enum srv_kind kind, const char *body, size_t len, struct srv_req **out,
              struct srv_error *err)
{
    *out = NULL;
    memset(err, 0, sizeof *err);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    char *text = NULL;
    int rc = 0;
    struct srv_req *r = NULL;
    if (root && end)
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
    if (!root || end != body + len) {
        srv_error_set(err, 400, NULL, "the request body is not valid JSON (at byte %zu)",
                      (end && end >= body ? (size_t)(end - body) : (size_t)0));
        rc = PORTA_E_FORMAT;
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        srv_error_set(err, 400, NULL, "the request body must be a JSON object");
        rc = PORTA_E_INVAL;
        goto fail;
    }
    struct getter g = { root, err };
    if (!(r = calloc(1, sizeof *r))) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    r->kind = kind;
    r->refs = 1;
    r->created = (long long)time(NULL);
    r->t_arrive = porta_time_s();
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->cancel, false);
    TRY(check_keys(&g, kind));
    TRY(get_model(&g, alias));
    TRY(get_sampling(e, cfg, &g, r));
    TRY(get_limits(e, cfg, &g, r));
    TRY(get_output(&g, r));
    TRY(get_stops(&g, r));
    const char *pkey = kind == SRV_CHAT ? "messages" : "prompt";
    if (kind == SRV_CHAT) {
        TRY(chat_prompt(e, &g, &text));
        TRY(porta_tokenize(e->tok, text, strlen(text), false, true, &r->prompt, &r->n_prompt));
        r->think = true;
        r->think_start = porta_chat_tmpl_starts_reasoning(e->tmpl);
    } else {
        TRY(completion_prompt(e, &g, r));
    }
    if (r->n_prompt < 1) {
        rc = bad(&g, pkey, "the prompt is empty");
        goto fail;
    }
    if (r->n_prompt >= e->n_ctx) {
        rc = bad(&g, pkey, "the prompt is %d tokens; this server's context holds %d", r->n_prompt,
                 e->n_ctx);
        goto fail;
    }
    if (r->max_tokens > e->n_ctx - r->n_prompt)
        r->max_tokens = e->n_ctx - r->n_prompt;
    if (r->sp.min_new_tokens > r->max_tokens)
        r->sp.min_new_tokens = r->max_tokens;
    /* the sampler checks its own ranges too; a mismatch here is caught before any slot */
    struct porta_sampler *probe;
    if (porta_sampler_create(&r->sp, e->n_vocab, &probe) != 0) {
        srv_error_set(err, 400, NULL, "invalid sampling parameters");
        rc = PORTA_E_RANGE;
        goto fail;
    }
    porta_sampler_destroy(probe);
    if (!(r->ch = calloc((size_t)r->n, sizeof *r->ch))) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    make_id(r);
    free(text);
    cJSON_Delete(root);
    *out = r;
    return 0;
fail:
    if (rc == PORTA_E_NOMEM && !err->status)
        srv_error_set(err, 500, NULL, "out of memory");
    else if (!err->status)
        srv_error_set(err, 400, NULL, "invalid request (%s)", porta_strerror(rc));
    free(text);
    cJSON_Delete(root);
    srv_req_unref(r);
    return rc ? rc : PORTA_E_INVAL;
}

void srv_req_ref(struct srv_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

void srv_req_unref(struct srv_req *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left > 0)
        return;
    for (int i = 0; r->ch && i < r->n; i++) {
        srv_buf_free(&r->ch[i].content);
        srv_buf_free(&r->ch[i].reasoning);
        free(r->ch[i].lp);
    }
    free(r->ch);
    for (int i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    free(r->prompt);
    free(r->bias_ids);
    free(r->bias_vals);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
