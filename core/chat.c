/* chat.c - chat templates rendered in C: each known tokenizer.chat_template is recognized by
 * substrings and re-implemented line for line (no Jinja is ever executed); plus the
 * streaming <think> splitter for reasoning models. */
#include "chat.h"
#include "porta.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- growable string ------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1)
            c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_add(struct sbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

/* ---- Python's str.strip() (Jinja's trim): Unicode whitespace at both ends -------------- */

/* Decodes one UTF-8 code point at s (n bytes left); *len = bytes used (1 on bad input). */
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t *len)
{
    *len = 1;
    if (s[0] < 0x80)
        return s[0];
    int k = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (k == 0 || (size_t)k > n)
        return 0xFFFD;
    uint32_t c = s[0] & (0x7F >> k);
    for (int i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0xFFFD;
        c = c << 6 | (s[i] & 0x3F);
    }
    *len = (size_t)k;
    return c;
}

static bool py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

static void sb_add_stripped(struct sbuf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), a = 0, e = n, len;
    while (a < n && py_space(utf8_at(u + a, n - a, &len)))
        a += len;
    /* from the end: find the start of the last code point, test it, repeat */
    while (e > a) {
        size_t st = e - 1;
        while (st > a && (u[st] & 0xC0) == 0x80 && e - st < 4)
            st--;
        uint32_t c = utf8_at(u + st, e - st, &len);
        if (st + len != e || !py_space(c))
            break;
        e = st;
    }
    sb_addn(b, s + a, e - a);
}

/* json.dumps(s, ensure_ascii=False), which HF's tojson filter uses. */
static void sb_add_json(struct sbuf *b, const char *s)
{
    sb_add(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        switch (c) {
        case '"': sb_add(b, "\\\""); break;
        case '\\': sb_add(b, "\\\\"); break;
        case '\n': sb_add(b, "\\n"); break;
        case '\r': sb_add(b, "\\r"); break;
        case '\t': sb_add(b, "\\t"); break;
        case '\b': sb_add(b, "\\b"); break;
        case '\f': sb_add(b, "\\f"); break;
        default:
            if (c < 0x20) {
                static const char hex[] = "0123456789abcdef";
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                sb_addn(b, esc, 6);
            } else {
                sb_addn(b, s, 1);
            }
        }
    }
    sb_add(b, "\"");
}

/* ---- names and detection ---------------------------------------------------------- */

static const char *const tmpl_names[PORTA_CHAT_COUNT] = {
    [PORTA_CHAT_CHATML] = "chatml",
    [PORTA_CHAT_QWEN2] = "qwen2",
    [PORTA_CHAT_QWEN25] = "qwen2.5",
    [PORTA_CHAT_SMOLLM] = "smollm2",
    [PORTA_CHAT_LLAMA3] = "llama3",
    [PORTA_CHAT_LLAMA31] = "llama3.1",
    [PORTA_CHAT_DEEPSEEK_R1] = "deepseek-r1",
    [PORTA_CHAT_DEEPSEEK_R1_THINK] = "deepseek-r1-think",
    [PORTA_CHAT_LLAMA2] = "llama2",
};

const char *porta_chat_tmpl_name(enum porta_chat_tmpl t)
{
    return (int)t >= 0 && t < PORTA_CHAT_COUNT ? tmpl_names[t] : "unknown";
}

int porta_chat_tmpl_from_name(const char *name, enum porta_chat_tmpl *out)
{
    static const struct { const char *alias; enum porta_chat_tmpl t; } aliases[] = {
        { "qwen", PORTA_CHAT_QWEN25 },
        { "smollm", PORTA_CHAT_SMOLLM },
    };
    if (!name || !out)
        return PORTA_E_INVAL;
    for (int i = 0; i < PORTA_CHAT_COUNT; i++)
        if (strcmp(name, tmpl_names[i]) == 0) {
            *out = (enum porta_chat_tmpl)i;
            return 0;
        }
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) {
            *out = aliases[i].t;
            return 0;
        }
    porta_err("chat template \"%s\" is not one of chatml, qwen2, qwen2.5 (qwen), smollm2 "
              "(smollm), llama3, llama3.1, deepseek-r1, deepseek-r1-think, llama2", name);
    return PORTA_E_NOTFOUND;
}

bool porta_chat_tmpl_starts_reasoning(enum porta_chat_tmpl t)
{
    return t == PORTA_CHAT_DEEPSEEK_R1_THINK;
}

int porta_chat_detect(const char *s, enum porta_chat_tmpl *out)
{
    if (!out)
        return PORTA_E_INVAL;
    *out = PORTA_CHAT_CHATML;
    if (!s || !*s) {
        porta_warn("chat template: the model has none; using chatml");
        return 0;
    }
    if (strstr(s, "<｜Assistant｜>") || strstr(s, "<｜User｜>")) {
        *out = strstr(s, "<｜Assistant｜><think>") ? PORTA_CHAT_DEEPSEEK_R1_THINK
                                                     : PORTA_CHAT_DEEPSEEK_R1;
    } else if (strstr(s, "<|start_header_id|>")) {
        *out = strstr(s, "Cutting Knowledge Date") ? PORTA_CHAT_LLAMA31 : PORTA_CHAT_LLAMA3;
    } else if (strstr(s, "[INST]") && strstr(s, "<<SYS>>")) {
        *out = PORTA_CHAT_LLAMA2;
    } else if (strstr(s, "<|im_start|>")) {
        if (strstr(s, "You are Qwen, created by Alibaba Cloud"))
            *out = PORTA_CHAT_QWEN25;
        else if (strstr(s, "named SmolLM"))
            *out = PORTA_CHAT_SMOLLM;
        else if (strstr(s, "You are a helpful assistant.<|im_end|>"))
            *out = PORTA_CHAT_QWEN2;
        else if (strstr(s, "</think>"))
            porta_warn("chat template: a ChatML template with reasoning rules porta does not "
                       "know; rendering plain chatml (earlier <think> parts are kept)");
    } else {
        porta_warn("chat template: not recognized; using chatml");
    }
    return 0;
}

/* ---- renderers: one per template, each following its Jinja source ----------------- */

static const char *str_or_empty(const char *s) { return s ? s : ""; }
static bool is_role(const struct porta_chat_msg *m, const char *r) { return strcmp(m->role, r) == 0; }

static void chatml_turn(struct sbuf *b, const char *role, const char *content)
{
    sb_add(b, "<|im_start|>");
    sb_add(b, role);
    sb_add(b, "\n");
    sb_add(b, content);
    sb_add(b, "<|im_end|>\n");
}

/* chatml, qwen2, smollm2: an optional default system turn when the first message is not a
 * system message, then every message as a ChatML turn. */
static void render_chatml(struct sbuf *b, const struct porta_chat_msg *m, int n, bool gen,
                          const char *default_system)
{
    if (default_system && !is_role(&m[0], "system"))
        chatml_turn(b, "system", default_system);
    for (int i = 0; i < n; i++)
        chatml_turn(b, m[i].role, str_or_empty(m[i].content));
    if (gen)
        sb_add(b, "<|im_start|>assistant\n");
}

/* Qwen2.5 (no tools): the first system message or the default; later system, user and
 * assistant messages as ChatML; runs of tool messages as one user turn of
 * <tool_response> blocks; other roles are not shown. */
static void render_qwen25(struct sbuf *b, const struct porta_chat_msg *m, int n, bool gen)
{
    if (is_role(&m[0], "system"))
        chatml_turn(b, "system", str_or_empty(m[0].content));
    else
        chatml_turn(b, "system",
                    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    for (int i = 0; i < n; i++) {
        if (is_role(&m[i], "user") || (is_role(&m[i], "system") && i > 0) ||
            is_role(&m[i], "assistant")) {
            chatml_turn(b, m[i].role, str_or_empty(m[i].content));
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool"))
                sb_add(b, "<|im_start|>user");
            sb_add(b, "\n<tool_response>\n");
            sb_add(b, str_or_empty(m[i].content));
            sb_add(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool"))
                sb_add(b, "<|im_end|>\n");
        }
    }
    if (gen)
        sb_add(b, "<|im_start|>assistant\n");
}

static void llama3_turn(struct sbuf *b, const char *role, const char *content)
{
    sb_add(b, "<|start_header_id|>");
    sb_add(b, role);
    sb_add(b, "<|end_header_id|>\n\n");
    sb_add_stripped(b, content);
    sb_add(b, "<|eot_id|>");
}

/* LLaMA-3: bos before the first turn; content trimmed. */
static void render_llama3(struct sbuf *b, const struct porta_chat_msg *m, int n, bool gen,
                          const char *bos)
{
    for (int i = 0; i < n; i++) {
        if (i == 0)
            sb_add(b, bos);
        llama3_turn(b, m[i].role, str_or_empty(m[i].content));
    }
    if (gen)
        sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* LLaMA-3.1 (no tools, no date given): a system block with the knowledge-cutoff lines and
 * the first system message (trimmed); tool/ipython messages as JSON strings. */
static void render_llama31(struct sbuf *b, const struct porta_chat_msg *m, int n, bool gen,
                           const char *bos)
{
    int i = 0;
    sb_add(b, bos);
    sb_add(b, "<|start_header_id|>system<|end_header_id|>\n\n"
              "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
    if (is_role(&m[0], "system"))
        sb_add_stripped(b, str_or_empty(m[i++].content));
    sb_add(b, "<|eot_id|>");
    for (; i < n; i++) {
        if (is_role(&m[i], "tool") || is_role(&m[i], "ipython")) {
            /* a string "is iterable" in Jinja, so the template takes its tojson branch */
            sb_add(b, "<|start_header_id|>ipython<|end_header_id|>\n\n");
            sb_add_json(b, str_or_empty(m[i].content));
            sb_add(b, "<|eot_id|>");
        } else {
            llama3_turn(b, m[i].role, str_or_empty(m[i].content));
        }
    }
    if (gen)
        sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* DeepSeek-R1: bos, then the LAST system message's text as is, then the turns; an
 * assistant answer keeps only what follows its last </think>; tool outputs are grouped as
 * the template's namespace flags say (is_output_first is never reset, as in the source). */
static void render_r1(struct sbuf *b, const struct porta_chat_msg *m, int n, bool gen,
                      const char *bos, bool think)
{
    const char *sys = "";
    bool is_tool = false, output_first = true;
    for (int i = 0; i < n; i++)
        if (is_role(&m[i], "system"))
            sys = str_or_empty(m[i].content);
    sb_add(b, bos);
    sb_add(b, sys);
    for (int i = 0; i < n; i++) {
        const char *c = str_or_empty(m[i].content);
        if (is_role(&m[i], "user")) {
            is_tool = false;
            sb_add(b, "<｜User｜>");
            sb_add(b, c);
        } else if (is_role(&m[i], "assistant")) {
            if (is_tool) {
                sb_add(b, "<｜tool▁outputs▁end｜>");
                sb_add(b, c);
                sb_add(b, "<｜end▁of▁sentence｜>");
                is_tool = false;
            } else {
                for (const char *t; (t = strstr(c, "</think>"));)
                    c = t + strlen("</think>");
                sb_add(b, "<｜Assistant｜>");
                sb_add(b, c);
                sb_add(b, "<｜end▁of▁sentence｜>");
            }
        } else if (is_role(&m[i], "tool")) {
            is_tool = true;
            sb_add(b, output_first ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>"
                                   : "\n<｜tool▁output▁begin｜>");
            sb_add(b, c);
            sb_add(b, "<｜tool▁output▁end｜>");
            output_first = false;
        }
    }
    if (is_tool)
        sb_add(b, "<｜tool▁outputs▁end｜>");
    if (gen && !is_tool)
        sb_add(b, think ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>");
}

/* LLaMA-2 chat: a first system message goes into the first user turn; the rest must
 * alternate user/assistant, as the template's raise_exception demands. */
static int render_llama2(struct sbuf *b, const struct porta_chat_msg *m, int n,
                         const char *bos, const char *eos)
{
    const char *sys = NULL;
    if (is_role(&m[0], "system")) {
        sys = str_or_empty(m[0].content);
        m++;
        n--;
    }
    for (int i = 0; i < n; i++) {
        if (is_role(&m[i], "user") != (i % 2 == 0)) {
            porta_err("chat template llama2: conversation roles must alternate "
                      "user/assistant/user/assistant/... (message %d is \"%s\")",
                      i + (sys ? 1 : 0), m[i].role);
            return PORTA_E_INVAL;
        }
        struct sbuf c = { 0 };
        if (i == 0 && sys) {
            sb_add(&c, "<<SYS>>\n");
            sb_add(&c, sys);
            sb_add(&c, "\n<</SYS>>\n\n");
        }
        sb_add(&c, str_or_empty(m[i].content));
        if (c.oom) {
            free(c.p);
            return PORTA_E_NOMEM;
        }
        if (is_role(&m[i], "user")) {
            sb_add(b, bos);
            sb_add(b, "[INST] ");
            sb_add_stripped(b, c.p);
            sb_add(b, " [/INST]");
        } else if (is_role(&m[i], "assistant")) {
            sb_add(b, " ");
            sb_add_stripped(b, c.p);
            sb_add(b, " ");
            sb_add(b, eos);
        }
        free(c.p);
    }
    return 0;
}

int porta_chat_render(enum porta_chat_tmpl t, const struct porta_chat_msg *msgs, int n,
                      bool add_generation_prompt, const char *bos_text, const char *eos_text,
                      char **out)
{
    struct sbuf b = { 0 };
    int rc = PORTA_E_INVAL;
    if (!out)
        return PORTA_E_INVAL;
    *out = NULL;
    if (!msgs || n < 1 || (int)t < 0 || t >= PORTA_CHAT_COUNT) {
        porta_err("chat render: %s", n < 1 || !msgs ? "no messages" : "unknown template id");
        return PORTA_E_INVAL;
    }
    for (int i = 0; i < n; i++)
        if (!msgs[i].role) {
            porta_err("chat render: message %d has no role", i);
            return PORTA_E_INVAL;
        }
    const char *bos = str_or_empty(bos_text), *eos = str_or_empty(eos_text);
    bool gen = add_generation_prompt;
    sb_add(&b, ""); /* an empty conversation still gives a string */
    switch (t) {
    case PORTA_CHAT_CHATML: render_chatml(&b, msgs, n, gen, NULL); break;
    case PORTA_CHAT_QWEN2: render_chatml(&b, msgs, n, gen, "You are a helpful assistant."); break;
    case PORTA_CHAT_SMOLLM:
        render_chatml(&b, msgs, n, gen,
                      "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
        break;
    case PORTA_CHAT_QWEN25: render_qwen25(&b, msgs, n, gen); break;
    case PORTA_CHAT_LLAMA3: render_llama3(&b, msgs, n, gen, bos); break;
    case PORTA_CHAT_LLAMA31: render_llama31(&b, msgs, n, gen, bos); break;
    case PORTA_CHAT_DEEPSEEK_R1: render_r1(&b, msgs, n, gen, bos, false); break;
    case PORTA_CHAT_DEEPSEEK_R1_THINK: render_r1(&b, msgs, n, gen, bos, true); break;
    case PORTA_CHAT_LLAMA2:
        rc = render_llama2(&b, msgs, n, bos, eos);
        if (rc)
            goto fail;
        break;
    default: goto fail;
    }
    rc = PORTA_E_NOMEM;
    if (b.oom)
        goto fail;
    *out = b.p;
    return 0;
fail:
    free(b.p);
    return rc;
}

/* ---- reasoning splitter ------------------------------------------------------------- */

enum think_state {
    TS_START,      /* nothing decided yet: a <think> may open the text */
    TS_R_LEAD,     /* in reasoning, dropping leading whitespace */
    TS_REASONING,
    TS_C_LEAD,     /* after </think>, dropping leading whitespace */
    TS_CONTENT,
};

struct porta_think {
    bool start_in_reasoning;
    enum think_state st;
    struct sbuf held;      /* undecided text */
    struct sbuf r, c;      /* this call's reasoning and content deltas */
};

int porta_think_create(bool start_in_reasoning, struct porta_think **out)
{
    if (!out)
        return PORTA_E_INVAL;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return PORTA_E_NOMEM;
    (*out)->start_in_reasoning = start_in_reasoning;
    (*out)->st = TS_START;
    return 0;
}

void porta_think_destroy(struct porta_think *t)
{
    if (!t)
        return;
    free(t->held.p);
    free(t->r.p);
    free(t->c.p);
    free(t);
}

bool porta_think_in_reasoning(const struct porta_think *t)
{
    return t && (t->st == TS_R_LEAD || t->st == TS_REASONING ||
                 (t->st == TS_START && t->start_in_reasoning));
}

static bool ascii_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Length of the longest tail of s[0..n) that begins tag without completing it. */
static size_t partial_tag_tail(const char *s, size_t n, const char *tag)
{
    size_t tl = strlen(tag);
    for (size_t k = tl - 1 < n ? tl - 1 : n; k > 0; k--)
        if (memcmp(s + n - k, tag, k) == 0)
            return k;
    return 0;
}

/* Consumes as much of the held text as can be decided. */
static void think_run(struct porta_think *t)
{
    const char *s = t->held.p ? t->held.p : "";
    size_t n = t->held.n, i = 0;
    static const char open[] = "<think>", close[] = "</think>";
    for (;;) {
        if (t->st == TS_START) {
            size_t j = i;
            while (j < n && ascii_space(s[j]))
                j++;
            size_t left = n - j, ol = sizeof open - 1;
            if (left < ol && memcmp(s + j, open, left) == 0)
                break; /* whitespace or a partial "<think>": wait */
            if (left >= ol && memcmp(s + j, open, ol) == 0) {
                i = j + ol;
                t->st = TS_R_LEAD;
            } else {
                t->st = t->start_in_reasoning ? TS_R_LEAD : TS_CONTENT;
            }
        } else if (t->st == TS_R_LEAD || t->st == TS_C_LEAD) {
            while (i < n && ascii_space(s[i]))
                i++;
            if (i == n)
                break;
            t->st = t->st == TS_R_LEAD ? TS_REASONING : TS_CONTENT;
        } else if (t->st == TS_REASONING) {
            const char *e = NULL;
            for (size_t k = i; k + sizeof close - 1 <= n && !e; k++)
                if (s[k] == '<' && memcmp(s + k, close, sizeof close - 1) == 0)
                    e = s + k;
            if (e) {
                sb_addn(&t->r, s + i, (size_t)(e - (s + i)));
                i = (size_t)(e - s) + sizeof close - 1;
                t->st = TS_C_LEAD;
                continue;
            }
            size_t hold = partial_tag_tail(s + i, n - i, close);
            sb_addn(&t->r, s + i, n - i - hold);
            i = n - hold;
            break;
        } else { /* TS_CONTENT */
            sb_addn(&t->c, s + i, n - i);
            i = n;
            break;
        }
    }
    if (t->held.p) {
        memmove(t->held.p, s + i, n - i);
        t->held.n = n - i;
        t->held.p[t->held.n] = 0;
    }
}

static int think_out(struct porta_think *t, struct porta_think_delta *d)
{
    if (t->held.oom || t->r.oom || t->c.oom)
        return PORTA_E_NOMEM;
    d->reasoning = t->r.p ? t->r.p : "";
    d->n_reasoning = t->r.n;
    d->content = t->c.p ? t->c.p : "";
    d->n_content = t->c.n;
    return 0;
}

int porta_think_feed(struct porta_think *t, const char *piece, size_t n,
                     struct porta_think_delta *d)
{
    if (!t || !d || (!piece && n))
        return PORTA_E_INVAL;
    t->r.n = t->c.n = 0;
    sb_addn(&t->held, piece ? piece : "", n);
    if (t->held.oom)
        return PORTA_E_NOMEM;
    think_run(t);
    return think_out(t, d);
}

int porta_think_flush(struct porta_think *t, struct porta_think_delta *d)
{
    if (!t || !d)
        return PORTA_E_INVAL;
    t->r.n = t->c.n = 0;
    if (t->held.n) {
        bool to_r = porta_think_in_reasoning(t);
        if (!(t->st == TS_R_LEAD || t->st == TS_C_LEAD)) /* leading whitespace is dropped */
            sb_addn(to_r ? &t->r : &t->c, t->held.p, t->held.n);
        t->held.n = 0;
    }
    return think_out(t, d);
}
