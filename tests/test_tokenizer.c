/* test_tokenizer.c - tokenizer against llama.cpp's reference vectors (made by the Hugging Face
 * tokenizers), the real SmolLM2 prompts, random and hostile input, streaming detokenization. */
#include "testutil.h"

#include "gguf.h"
#include "tokenizer.h"

#include <time.h>

#define SEP "\n__ggml_vocab_test__\n"

static struct porta_tokenizer *load_path(const char *path)
{
    struct porta_gguf *g = NULL;
    struct porta_tokenizer *t = NULL;
    int rc = porta_gguf_open(path, &g);
    ck_assert_msg(rc == 0, "cannot open %s: %s", path, porta_strerror(rc));
    rc = porta_tokenizer_load(g, &t);
    porta_gguf_close(g);                /* the tokenizer must not depend on the mapping */
    ck_assert_msg(rc == 0, "cannot load tokenizer of %s: %s", path, porta_strerror(rc));
    return t;
}

static struct porta_tokenizer *load_vocab(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", name);
    return load_path(tu_path(rel));
}

/* Test strings of a .inp file: as llama.cpp's test-tokenizer-0 reads them, every text before
 * a separator line (the text after the last separator is not a test). */
struct strs {
    char *buf;
    const char *s[256];
    size_t n[256];
    int count;
};

static void read_inp(const char *name, struct strs *v)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf.inp", name);
    size_t len;
    v->buf = tu_read_file(tu_path(rel), &len);
    ck_assert_msg(v->buf != NULL, "cannot read %s", tu_path(rel));
    v->count = 0;
    char *p = v->buf, *end = v->buf + len, *q;
    while ((q = strstr(p, SEP)) != NULL && v->count < 256) {
        v->s[v->count] = p;
        v->n[v->count++] = (size_t)(q - p);
        p = q + strlen(SEP);
    }
    ck_assert(p <= end);
}

/* Runs every vector of vectors.inp/.out through the tokenizer of vocab; returns the count. */
static int check_vectors(const char *vocab, const char *vectors)
{
    struct porta_tokenizer *t = load_vocab(vocab);
    struct strs in;
    read_inp(vectors, &in);
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf.out", vectors);
    char *out = tu_read_file(tu_path(rel), NULL);
    ck_assert_msg(out != NULL, "cannot read %s", rel);

    int bad_tok = 0, bad_rt = 0;
    char *line = out;
    for (int i = 0; i < in.count; i++) {
        ck_assert_msg(line != NULL, "%s: fewer lines than tests", rel);
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        static int want[4096];
        int n_want = tu_parse_ids(line, want, 4096);
        line = nl ? nl + 1 : NULL;

        int32_t *ids;
        int n;
        ck_assert_int_eq(porta_tokenize(t, in.s[i], in.n[i], false, false, &ids, &n), 0);
        bool same = n == n_want;
        for (int k = 0; same && k < n; k++)
            same = ids[k] == want[k];
        if (!same) {
            bad_tok++;
            fprintf(stderr, "%s/%s #%d \"%.*s\": got", vocab, vectors, i, (int)in.n[i], in.s[i]);
            for (int k = 0; k < n && k < 40; k++)
                fprintf(stderr, " %d", ids[k]);
            fprintf(stderr, "\n    want %s\n", line ? "(see .out)" : "");
        }
        char *text;
        size_t tl;
        ck_assert_int_eq(porta_detokenize(t, ids, n, false, true, &text, &tl), 0);
        if (tl != in.n[i] || memcmp(text, in.s[i], tl) != 0) {
            bad_rt++;
            fprintf(stderr, "%s #%d: round trip gave \"%s\"\n", vocab, i, text);
        }
        free(text);
        free(ids);
    }
    printf("tokenizer vectors %-16s with vocab %-16s: %d/%d tokenized exactly, %d/%d round trips\n",
           vectors, vocab, in.count - bad_tok, in.count, in.count - bad_rt, in.count);
    ck_assert_int_eq(bad_tok, 0);
    ck_assert_int_eq(bad_rt, 0);
    free(out);
    free(in.buf);
    int count = in.count;
    porta_tokenizer_destroy(t);
    return count;
}

START_TEST(vectors_gpt2)
{
    ck_assert_int_eq(check_vectors("gpt-2", "gpt-2"), 46);
}
END_TEST

START_TEST(vectors_deepseek_llm)
{
    ck_assert_int_eq(check_vectors("deepseek-llm", "deepseek-llm"), 46);
}
END_TEST

START_TEST(vectors_llama_spm)
{
    ck_assert_int_eq(check_vectors("llama-spm", "llama-spm"), 46);
}
END_TEST

START_TEST(vectors_deepseek_r1_qwen)
{
    ck_assert_int_eq(check_vectors("deepseek-r1-qwen", "deepseek-r1-qwen"), 46);
    ck_assert_int_eq(check_vectors("deepseek-r1-qwen", "qwen2"), 46);
}
END_TEST

START_TEST(vectors_llama_bpe_skipped)
{
    /* The LLaMA-3 vectors exist but no LLaMA-3 vocab file does: nothing to run them with. */
    FILE *f = fopen(tu_path("tokenizer/ggml-vocab-llama-bpe.gguf"), "rb");
    if (f) {
        fclose(f);
        check_vectors("llama-bpe", "llama-bpe");
        return;
    }
    printf("tokenizer vectors llama-bpe: SKIPPED (no LLaMA-3 vocab gguf in the shared data; "
           "only the .inp/.out vectors are there)\n");
}
END_TEST

/* ---- the real model's prompts ---- */

/* Parses the JSON string value of "key" in line into a malloc'd buffer. */
static char *json_str(const char *line, const char *key, size_t *len)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    char *out = malloc(strlen(p) + 1);
    size_t m = 0;
    while (*p && *p != '"') {
        if (*p != '\\') {
            out[m++] = *p++;
            continue;
        }
        p++;
        char c = *p++;
        switch (c) {
        case 'n': out[m++] = '\n'; break;
        case 't': out[m++] = '\t'; break;
        case 'r': out[m++] = '\r'; break;
        case 'b': out[m++] = '\b'; break;
        case 'f': out[m++] = '\f'; break;
        case 'u': {
            unsigned cp = (unsigned)strtoul((char[5]){ p[0], p[1], p[2], p[3], 0 }, NULL, 16);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = (unsigned)strtoul((char[5]){ p[2], p[3], p[4], p[5], 0 }, NULL, 16);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (cp < 0x80) {
                out[m++] = (char)cp;
            } else if (cp < 0x800) {
                out[m++] = (char)(0xC0 | cp >> 6);
                out[m++] = (char)(0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                out[m++] = (char)(0xE0 | cp >> 12);
                out[m++] = (char)(0x80 | ((cp >> 6) & 63));
                out[m++] = (char)(0x80 | (cp & 63));
            } else {
                out[m++] = (char)(0xF0 | cp >> 18);
                out[m++] = (char)(0x80 | ((cp >> 12) & 63));
                out[m++] = (char)(0x80 | ((cp >> 6) & 63));
                out[m++] = (char)(0x80 | (cp & 63));
            }
            break;
        }
        default: out[m++] = c; break;        /* \" \\ \/ */
        }
    }
    out[m] = 0;
    *len = m;
    return out;
}

START_TEST(smollm_prompts)
{
    const char *path = getenv("PORTA_MODEL");
    if (!path || !*path)
        path = "models/smollm2-135m-instruct-q4_1.gguf";
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("tokenizer smollm2 prompts: SKIPPED (%s not found; `make model` fetches it)\n",
               path);
        return;
    }
    fclose(f);
    struct porta_tokenizer *t = load_path(path);
    ck_assert_str_eq(porta_tokenizer_pre(t), "starcoder");        /* "smollm" family */
    ck_assert(!porta_tokenizer_adds_bos(t));
    ck_assert_int_eq(porta_tokenizer_find(t, "<|im_start|>"), 1);
    ck_assert(porta_tokenizer_is_eog(t, 2));                      /* <|im_end|> = eos */
    ck_assert(porta_tokenizer_is_eog(t, 0));                      /* <|endoftext|> */
    ck_assert(!porta_tokenizer_is_eog(t, 1));

    char *all = tu_read_file(tu_path("ref/smollm2-135m-instruct-q4_1.jsonl"), NULL);
    ck_assert(all != NULL);
    int n_prompts = 0, n_ok = 0;
    for (char *line = all; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        size_t plen;
        char *prompt = json_str(line, "prompt", &plen);
        ck_assert(prompt != NULL);
        const char *pi = strstr(line, "\"prompt_ids\":");
        ck_assert(pi != NULL);
        static int want[4096];
        const char *close = strchr(pi, ']');
        int n_want = 0;
        for (const char *q = pi + 13; q < close && n_want < 4096;) {
            while (q < close && (*q < '0' || *q > '9'))
                q++;
            if (q >= close)
                break;
            want[n_want++] = (int)strtol(q, (char **)&q, 10);
        }
        int32_t *ids;
        int n;
        ck_assert_int_eq(porta_tokenize(t, prompt, plen, true, true, &ids, &n), 0);
        bool same = n == n_want;
        for (int k = 0; same && k < n; k++)
            same = ids[k] == want[k];
        n_prompts++;
        n_ok += same;
        if (!same)
            fprintf(stderr, "smollm prompt %d \"%.60s\": %d ids, want %d\n", n_prompts, prompt, n,
                    n_want);
        /* with special tokens rendered, the prompt comes back byte for byte */
        char *text;
        size_t tl;
        ck_assert_int_eq(porta_detokenize(t, ids, n, true, false, &text, &tl), 0);
        ck_assert_msg(tl == plen && memcmp(text, prompt, plen) == 0, "round trip of prompt %d",
                      n_prompts);
        /* without parse_special the markers are plain text */
        free(ids);
        ck_assert_int_eq(porta_tokenize(t, prompt, plen, false, false, &ids, &n), 0);
        for (int k = 0; k < n; k++)
            ck_assert_int_ne(porta_tokenizer_type(t, ids[k]), PORTA_TOKT_CONTROL);
        free(ids);
        free(text);
        free(prompt);
        line = nl ? nl + 1 : NULL;
    }
    printf("tokenizer smollm2 prompts: %d/%d match prompt_ids\n", n_ok, n_prompts);
    ck_assert_int_eq(n_prompts, 9);
    ck_assert_int_eq(n_ok, n_prompts);
    free(all);
    porta_tokenizer_destroy(t);
}
END_TEST

/* ---- special tokens, BOS/EOS, EOG ---- */

START_TEST(special_tokens)
{
    struct porta_tokenizer *t = load_vocab("deepseek-r1-qwen");
    ck_assert_str_eq(porta_tokenizer_pre(t), "qwen2");
    ck_assert_int_eq(porta_tokenizer_n_vocab(t), 152064);
    ck_assert_int_eq(porta_tokenizer_bos(t), 151646);
    ck_assert_int_eq(porta_tokenizer_eos(t), 151643);
    ck_assert(porta_tokenizer_is_eog(t, 151643));       /* <｜end▁of▁sentence｜> */
    ck_assert(!porta_tokenizer_is_eog(t, 151646));
    int32_t user = porta_tokenizer_find(t, "<\xef\xbd\x9cUser\xef\xbd\x9c>");
    ck_assert_int_eq(user, 151644);

    const char *s = "<\xef\xbd\x9cUser\xef\xbd\x9c>hi";
    int32_t *ids;
    int n;
    ck_assert_int_eq(porta_tokenize(t, s, strlen(s), true, true, &ids, &n), 0);
    ck_assert_int_ge(n, 3);
    ck_assert_int_eq(ids[0], 151646);                   /* add_bos_token = true */
    ck_assert_int_eq(ids[1], user);
    free(ids);
    ck_assert_int_eq(porta_tokenize(t, s, strlen(s), false, false, &ids, &n), 0);
    ck_assert_int_gt(n, 2);
    for (int k = 0; k < n; k++)
        ck_assert_int_ne(ids[k], user);
    free(ids);

    /* control pieces: text only when asked */
    char buf[64];
    size_t len;
    ck_assert_int_eq(porta_token_piece(t, user, false, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(porta_token_piece(t, user, true, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, strlen("<\xef\xbd\x9cUser\xef\xbd\x9c>"));
    ck_assert_int_eq(porta_token_piece(t, user, true, buf, 3, &len), PORTA_E_RANGE);
    ck_assert_int_eq(porta_token_piece(t, -1, true, buf, sizeof buf, &len), PORTA_E_INVAL);
    ck_assert_int_eq(porta_token_piece(t, 152064, true, buf, sizeof buf, &len), PORTA_E_INVAL);
    porta_tokenizer_destroy(t);

    /* SPM: BOS by default, space prefix, byte fallback */
    t = load_vocab("llama-spm");
    ck_assert_int_eq(porta_tokenize(t, "Hello", 5, true, false, &ids, &n), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 15043);                    /* "▁Hello" */
    free(ids);
    ck_assert_int_eq(porta_tokenize(t, "<s>", 3, false, true, &ids, &n), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], 1);
    free(ids);
    ck_assert_int_eq(porta_tokenize(t, "", 0, true, false, &ids, &n), 0);
    ck_assert_int_eq(n, 1);
    free(ids);
    porta_tokenizer_destroy(t);
}
END_TEST

/* ---- streaming detokenizer ---- */

static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t l = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 :
                   (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!l || i + l > n)
            return false;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
            (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))
            return false;
        i += l;
    }
    return true;
}

/* Streams ids through a detok; returns the malloc'd concatenation; every chunk must be valid. */
static char *stream(const struct porta_tokenizer *t, const int32_t *ids, int n, bool strip,
                    size_t *len)
{
    struct porta_detok d;
    porta_detok_init(&d, t, false, strip);
    size_t cap = 64, m = 0;
    char *all = malloc(cap);
    for (int i = 0; i <= n; i++) {
        const char *o;
        size_t l;
        if (i < n)
            ck_assert_int_eq(porta_detok_push(&d, ids[i], &o, &l), 0);
        else
            porta_detok_flush(&d, &o, &l);
        ck_assert_msg(valid_utf8((const unsigned char *)o, l), "chunk %d is not valid UTF-8", i);
        if (m + l + 1 > cap) {
            cap = 2 * (m + l + 1);
            all = realloc(all, cap);
        }
        memcpy(all + m, o, l);
        m += l;
    }
    all[m] = 0;
    *len = m;
    return all;
}

START_TEST(detok_stream)
{
    struct porta_tokenizer *t = load_vocab("llama-spm");
    int32_t llama[] = { 0xF0 + 3, 0x9F + 3, 0xA6 + 3, 0x99 + 3 };  /* <0xF0><0x9F><0xA6><0x99> */
    struct porta_detok d;
    porta_detok_init(&d, t, false, false);
    const char *o;
    size_t l;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(porta_detok_push(&d, llama[i], &o, &l), 0);
        ck_assert_uint_eq(l, 0);                        /* held: incomplete character */
    }
    ck_assert_int_eq(porta_detok_push(&d, llama[3], &o, &l), 0);
    ck_assert_uint_eq(l, 4);
    ck_assert(memcmp(o, "\xf0\x9f\xa6\x99", 4) == 0);
    /* an incomplete character at the end becomes U+FFFD on flush */
    ck_assert_int_eq(porta_detok_push(&d, llama[0], &o, &l), 0);
    ck_assert_uint_eq(l, 0);
    porta_detok_flush(&d, &o, &l);
    ck_assert_uint_eq(l, 3);
    ck_assert(memcmp(o, "\xef\xbf\xbd", 3) == 0);
    /* a byte that can never start a character is replaced at once */
    ck_assert_int_eq(porta_detok_push(&d, 0xFF + 3, &o, &l), 0);
    ck_assert_uint_eq(l, 3);
    /* an interrupted sequence: the lead becomes U+FFFD, the next character survives */
    ck_assert_int_eq(porta_detok_push(&d, 0xE2 + 3, &o, &l), 0);
    ck_assert_uint_eq(l, 0);
    ck_assert_int_eq(porta_detok_push(&d, 'A' + 3, &o, &l), 0);
    ck_assert_uint_eq(l, 4);
    ck_assert(memcmp(o, "\xef\xbf\xbd" "A", 4) == 0);
    ck_assert_int_eq(porta_detok_push(&d, 32000, &o, &l), PORTA_E_INVAL);

    /* whole texts: the stream equals the text, leading space handling included */
    const char *texts[] = { "Hello world", "  two spaces", "\xf0\x9f\xa6\x99 llama \xe6\x97\xa5\xe6\x9c\xac",
                            "caf\xc3\xa9" };
    for (int k = 0; k < 4; k++) {
        int32_t *ids;
        int n;
        ck_assert_int_eq(porta_tokenize(t, texts[k], strlen(texts[k]), true, false, &ids, &n), 0);
        size_t len;
        char *s = stream(t, ids, n, true, &len);
        ck_assert_str_eq(s, texts[k]);
        free(s);
        free(ids);
    }
    porta_tokenizer_destroy(t);

    t = load_vocab("deepseek-r1-qwen");
    const char *s = "\xe6\xb7\xb1\xe5\xba\xa6\xe6\xb1\x82\xe7\xb4\xa2 \xf0\x9f\x98\xb6\xe2\x80\x8d"
                    "\xf0\x9f\x8c\xab\xef\xb8\x8f ok";
    int32_t *ids;
    int n;
    ck_assert_int_eq(porta_tokenize(t, s, strlen(s), false, false, &ids, &n), 0);
    size_t len;
    char *r = stream(t, ids, n, false, &len);
    ck_assert_str_eq(r, s);
    free(r);
    free(ids);
    porta_tokenizer_destroy(t);
}
END_TEST

/* ---- random input ---- */

static size_t rand_utf8(unsigned long long *st, char *out, size_t max_chars)
{
    static const unsigned ranges[][2] = {
        { 0x20, 0x7E }, { 0x20, 0x20 }, { 0x30, 0x39 }, { 0x09, 0x0D }, { 0xA0, 0x24F },
        { 0x370, 0x3FF }, { 0x400, 0x4FF }, { 0x300, 0x36F }, { 0x4E00, 0x9FFF },
        { 0xAC00, 0xD7A3 }, { 0x3040, 0x30FF }, { 0x1F300, 0x1FAFF }, { 0x2000, 0x206F },
        { 0xE000, 0xF8FF }, { 0x10000, 0x10FFFF },
    };
    size_t n = tu_rng_next(st) % (max_chars + 1), m = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned *r = ranges[tu_rng_next(st) % (sizeof ranges / sizeof ranges[0])];
        unsigned cp = r[0] + (unsigned)(tu_rng_next(st) % (r[1] - r[0] + 1));
        if (cp >= 0xD800 && cp <= 0xDFFF)
            cp = 'x';
        if (cp < 0x80) {
            out[m++] = (char)cp;
        } else if (cp < 0x800) {
            out[m++] = (char)(0xC0 | cp >> 6);
            out[m++] = (char)(0x80 | (cp & 63));
        } else if (cp < 0x10000) {
            out[m++] = (char)(0xE0 | cp >> 12);
            out[m++] = (char)(0x80 | ((cp >> 6) & 63));
            out[m++] = (char)(0x80 | (cp & 63));
        } else {
            out[m++] = (char)(0xF0 | cp >> 18);
            out[m++] = (char)(0x80 | ((cp >> 12) & 63));
            out[m++] = (char)(0x80 | ((cp >> 6) & 63));
            out[m++] = (char)(0x80 | (cp & 63));
        }
    }
    return m;
}

START_TEST(fuzz_round_trip)
{
    const char *vocabs[] = { "gpt-2", "llama-spm", "deepseek-llm", "deepseek-r1-qwen" };
    unsigned long long st = 0x1234567ULL + (unsigned long long)_i;
    static const int n_bytes[] = { 256, 256, 243, 256 };
    struct porta_tokenizer *t = load_vocab(vocabs[_i]);
    static char buf[4096], want[4096];
    int n_rand = 0, n_valid = 0;
    /* which bytes have a token of their own (DeepSeek LLM lacks the 13 that UTF-8 never uses) */
    bool has_byte[256];
    int count = 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *ids;
        int n;
        ck_assert_int_eq(porta_tokenize(t, &c, 1, false, false, &ids, &n), 0);
        has_byte[b] = n > 0;
        count += has_byte[b];
        free(ids);
    }
    ck_assert_int_eq(count, n_bytes[_i]);
    for (int iter = 0; iter < 300; iter++) {
        size_t len;
        bool valid = iter & 1;
        if (valid) {
            len = rand_utf8(&st, buf, 80);
        } else {                                        /* arbitrary bytes, mostly invalid */
            len = tu_rng_next(&st) % 200;
            for (size_t i = 0; i < len; i++)
                buf[i] = (char)(tu_rng_next(&st) >> 56);
        }
        int32_t *ids;
        int n;
        ck_assert_int_eq(porta_tokenize(t, buf, len, false, (iter & 2) != 0, &ids, &n), 0);
        for (int k = 0; k < n; k++)
            ck_assert(ids[k] >= 0 && ids[k] < porta_tokenizer_n_vocab(t));
        char *text;
        size_t tl;
        ck_assert_int_eq(porta_detokenize(t, ids, n, true, true, &text, &tl), 0);
        /* byte exact, even for invalid UTF-8, except for bytes without a token */
        size_t wl = 0;
        for (size_t i = 0; i < len; i++)
            if (has_byte[(unsigned char)buf[i]])
                want[wl++] = buf[i];
        ck_assert_msg(tl == wl && memcmp(text, want, wl) == 0, "%s: round trip %d failed",
                      vocabs[_i], iter);
        size_t sl;
        char *s = stream(t, ids, n, true, &sl);
        if (valid)
            ck_assert_msg(sl == len && memcmp(s, buf, len) == 0, "%s: stream %d", vocabs[_i], iter);
        n_valid += valid;
        n_rand += !valid;
        free(s);
        free(text);
        free(ids);
    }
    printf("tokenizer fuzz %-16s: %d random byte strings, %d random UTF-8 strings round-trip\n",
           vocabs[_i], n_rand, n_valid);
    porta_tokenizer_destroy(t);
}
END_TEST

/* A 100 KB word without spaces (and other long runs) must not blow up quadratically. */
START_TEST(long_words)
{
    const char *vocabs[] = { "gpt-2", "llama-spm", "deepseek-llm", "deepseek-r1-qwen" };
    struct porta_tokenizer *t = load_vocab(vocabs[_i]);
    size_t n = 100000;
    char *s = malloc(n + 1);
    unsigned long long st = 99;
    for (int kind = 0; kind < 4; kind++) {
        for (size_t i = 0; i < n; i++)
            s[i] = kind == 0 ? (char)('a' + tu_rng_next(&st) % 26) : kind == 1 ? 'a' :
                   kind == 2 ? ' ' : (char)('0' + tu_rng_next(&st) % 10);
        double t0 = porta_time_s();
        int32_t *ids;
        int nid;
        ck_assert_int_eq(porta_tokenize(t, s, n, false, false, &ids, &nid), 0);
        double dt = porta_time_s() - t0;
        ck_assert_int_gt(nid, 0);
        ck_assert_msg(dt < 3.0, "%s: 100 KB run %d took %.2f s", vocabs[_i], kind, dt);
        char *text;
        size_t tl;
        ck_assert_int_eq(porta_detokenize(t, ids, nid, false, true, &text, &tl), 0);
        ck_assert(tl == n && memcmp(text, s, n) == 0);
        free(text);
        free(ids);
    }
    free(s);
    porta_tokenizer_destroy(t);
}
END_TEST

START_TEST(load_time)
{
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open(tu_path("tokenizer/ggml-vocab-deepseek-r1-qwen.gguf"), &g), 0);
    struct porta_tokenizer *t;
    double t0 = porta_time_s();
    ck_assert_int_eq(porta_tokenizer_load(g, &t), 0);
    double dt = porta_time_s() - t0;
    printf("tokenizer: 152k-token vocab + 151k merges loaded in %.3f s\n", dt);
    ck_assert_msg(dt < 2.0, "load took %.2f s", dt);        /* generous: sanitizer builds */
    porta_tokenizer_destroy(t);
    porta_gguf_close(g);
}
END_TEST

/* ---- hostile metadata, built with the GGUF writer ---- */

enum { H_OK, H_UNKNOWN_MERGE, H_MISSING_RESULT, H_DUP, H_SHORT_SCORES, H_BOS_RANGE,
       H_TYPES_LEN, H_LONG_TOKEN, H_NO_SPACE, H_BAD_MODEL, H_NO_TOKENS, H_TOKENS_NOT_STR,
       H_BAD_TYPE, H_EOT_RANGE, H_NO_MERGES, H_UNKNOWN_PRE, H_SPM_OK, H_COUNT };

static int build_and_load(int which, struct porta_tokenizer **out)
{
    struct porta_gguf_writer *w;
    ck_assert_int_eq(porta_gguf_writer_create(&w), 0);
    bool spm = which == H_SHORT_SCORES || which == H_SPM_OK;
    static char longtok[PORTA_TOKEN_MAX_LEN + 2];
    memset(longtok, 'x', sizeof longtok - 1);
    const char *toks[] = { "a", "b", "ab", "<s>", "c", which == H_DUP ? "a" : "abab",
                           which == H_LONG_TOKEN ? longtok : " " };
    int32_t types[7] = { 1, 1, 1, 3, 1, 1, 1 };
    float scores[7] = { 0, 0, 1, 0, 0, 2, 0 };
    const char *merges[] = { "a b", which == H_UNKNOWN_MERGE ? "a z" :
                                    which == H_MISSING_RESULT ? "b a" :
                                    which == H_NO_SPACE ? "abab" : "ab ab" };
    const char *model = which == H_BAD_MODEL ? "bert" : spm ? "llama" : "gpt2";
    ck_assert_int_eq(porta_gguf_w_str(w, "tokenizer.ggml.model", model), 0);
    ck_assert_int_eq(porta_gguf_w_str(w, "tokenizer.ggml.pre",
                                      which == H_UNKNOWN_PRE ? "no-such-pre" : "gpt-2"), 0);
    if (which == H_TOKENS_NOT_STR)
        ck_assert_int_eq(porta_gguf_w_u32(w, "tokenizer.ggml.tokens", 7), 0);
    else if (which != H_NO_TOKENS)
        ck_assert_int_eq(porta_gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 7), 0);
    if (which == H_BAD_TYPE)
        types[2] = 9;
    ck_assert_int_eq(porta_gguf_w_arr(w, "tokenizer.ggml.token_type", PORTA_GGUF_INT32, types,
                                      which == H_TYPES_LEN ? 6 : 7), 0);
    if (spm)
        ck_assert_int_eq(porta_gguf_w_arr(w, "tokenizer.ggml.scores", PORTA_GGUF_FLOAT32, scores,
                                          which == H_SHORT_SCORES ? 5 : 7), 0);
    else if (which != H_NO_MERGES)
        ck_assert_int_eq(porta_gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, 2), 0);
    ck_assert_int_eq(porta_gguf_w_u32(w, "tokenizer.ggml.bos_token_id",
                                      which == H_BOS_RANGE ? 7 : 3), 0);
    ck_assert_int_eq(porta_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 3), 0);
    if (which == H_EOT_RANGE)
        ck_assert_int_eq(porta_gguf_w_u32(w, "tokenizer.ggml.eot_token_id", 1000000), 0);
    ck_assert_int_eq(porta_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true), 0);
    if (spm)
        ck_assert_int_eq(porta_gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", false), 0);
    void *buf;
    size_t size;
    ck_assert_int_eq(porta_gguf_w_to_mem(w, &buf, &size), 0);
    porta_gguf_writer_destroy(w);
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open_mem(buf, size, "hostile", &g), 0);
    int rc = porta_tokenizer_load(g, out);
    porta_gguf_close(g);
    free(buf);
    return rc;
}

static void quiet(enum porta_log_level level, const char *msg, void *user)
{
}

START_TEST(hostile_metadata)
{
    static const char *const want_msg[H_COUNT] = {
        [H_UNKNOWN_MERGE] = "merges[1]", [H_MISSING_RESULT] = "merged token",
        [H_DUP] = "duplicates", [H_SHORT_SCORES] = "scores", [H_BOS_RANGE] = "bos_token_id",
        [H_TYPES_LEN] = "token_type", [H_LONG_TOKEN] = "limit", [H_NO_SPACE] = "merges[1]",
        [H_BAD_MODEL] = "bert", [H_NO_TOKENS] = "tokens", [H_TOKENS_NOT_STR] = "tokens",
        [H_BAD_TYPE] = "token_type[2]", [H_EOT_RANGE] = "eot_token_id", [H_NO_MERGES] = "merges",
    };
    porta_log_set_sink(quiet, NULL);                    /* the errors are expected */
    for (int which = 0; which < H_COUNT; which++) {
        struct porta_tokenizer *t = NULL;
        int rc = build_and_load(which, &t);
        if (which == H_OK || which == H_UNKNOWN_PRE || which == H_SPM_OK) {
            ck_assert_msg(rc == 0, "case %d: %s", which, porta_strerror(rc));
            int32_t *ids;
            int n;
            ck_assert_int_eq(porta_tokenize(t, "abab", 4, true, false, &ids, &n), 0);
            ck_assert_msg(n == 2, "case %d: %d ids (%d %d %d)", which, n, ids[0], n > 1 ? ids[1] : -1,
                          n > 2 ? ids[2] : -1);
            ck_assert_int_eq(ids[0], 3);                /* BOS */
            ck_assert_int_eq(ids[1], 5);                /* "abab" through two merges */
            free(ids);
            if (which == H_UNKNOWN_PRE)
                ck_assert_str_eq(porta_tokenizer_pre(t), "default");
            porta_tokenizer_destroy(t);
            continue;
        }
        ck_assert_msg(rc == (which == H_BAD_MODEL ? PORTA_E_UNSUPPORTED : PORTA_E_FORMAT),
                      "case %d: got %s", which, porta_strerror(rc));
        ck_assert(t == NULL);
        ck_assert_msg(strstr(porta_log_last_error(), want_msg[which]) != NULL,
                      "case %d: message \"%s\" does not name \"%s\"", which,
                      porta_log_last_error(), want_msg[which]);
    }
    porta_log_set_sink(NULL, NULL);
}
END_TEST

/* Every pre-tokenizer family compiles and splits digits its own way: with only the merge
 * "3 4", "12345" is 4 tokens when the digits stay one word and 5 when they are split. */
START_TEST(pre_families)
{
    static const struct { const char *pre, *family; int n; } cases[] = {
        { "default", "default", 5 }, { "gpt-2", "gpt-2", 4 }, { "llama-bpe", "llama-bpe", 5 },
        { "dbrx", "dbrx", 5 }, { "deepseek-llm", "deepseek-llm", 4 },
        { "deepseek-coder", "deepseek-coder", 5 }, { "deepseek-v3", "deepseek-v3", 5 },
        { "falcon", "falcon", 5 }, { "smollm", "starcoder", 5 }, { "qwen2", "qwen2", 5 },
        { "poro-chat", "poro-chat", 4 }, { "viking", "viking", 5 }, { "tekken", "tekken", 5 },
        { "gpt-4o", "gpt-4o", 5 }, { "seed-coder", "seed-coder", 5 },
        { "bailingmoe", "bailingmoe", 5 }, { "chameleon", "chameleon", 5 },
        { "mpt", "gpt-2", 4 }, { "deepseek-r1-qwen", "qwen2", 5 },
    };
    /* the 256 byte tokens of GPT-2's byte-to-unicode map, plus "34" */
    static char tokbuf[257][4];
    const char *toks[257];
    int m = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        unsigned cp = keep ? (unsigned)b : 256u + (unsigned)m++;
        if (cp < 0x80) {
            tokbuf[b][0] = (char)cp;
        } else {
            tokbuf[b][0] = (char)(0xC0 | cp >> 6);
            tokbuf[b][1] = (char)(0x80 | (cp & 63));
        }
        toks[b] = tokbuf[b];
    }
    toks[256] = "34";
    const char *merges[] = { "3 4" };
    porta_log_set_sink(quiet, NULL);    /* LLaMA-3 etc. want a BOS this toy vocab lacks */
    const char *text = "Hello 12345 w\xc3\xb6rld!\n\n  \xe6\x97\xa5\xe6\x9c\xac'S \xf0\x9f\xa6\x99\xff";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct porta_gguf_writer *w;
        ck_assert_int_eq(porta_gguf_writer_create(&w), 0);
        ck_assert_int_eq(porta_gguf_w_str(w, "tokenizer.ggml.model", "gpt2"), 0);
        ck_assert_int_eq(porta_gguf_w_str(w, "tokenizer.ggml.pre", cases[i].pre), 0);
        ck_assert_int_eq(porta_gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 257), 0);
        ck_assert_int_eq(porta_gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, 1), 0);
        void *buf;
        size_t size;
        ck_assert_int_eq(porta_gguf_w_to_mem(w, &buf, &size), 0);
        porta_gguf_writer_destroy(w);
        struct porta_gguf *g;
        struct porta_tokenizer *t;
        ck_assert_int_eq(porta_gguf_open_mem(buf, size, cases[i].pre, &g), 0);
        ck_assert_int_eq(porta_tokenizer_load(g, &t), 0);
        porta_gguf_close(g);
        free(buf);
        ck_assert_str_eq(porta_tokenizer_pre(t), cases[i].family);
        int32_t *ids;
        int n;
        ck_assert_int_eq(porta_tokenize(t, "12345", 5, true, false, &ids, &n), 0);
        ck_assert_msg(n == cases[i].n, "%s: \"12345\" gave %d tokens, want %d", cases[i].pre, n,
                      cases[i].n);
        free(ids);
        ck_assert_int_eq(porta_tokenize(t, text, strlen(text), false, false, &ids, &n), 0);
        char *back;
        size_t bl;
        ck_assert_int_eq(porta_detokenize(t, ids, n, false, false, &back, &bl), 0);
        ck_assert_msg(bl == strlen(text) && memcmp(back, text, bl) == 0, "%s: round trip",
                      cases[i].pre);
        free(back);
        free(ids);
        porta_tokenizer_destroy(t);
    }
    porta_log_set_sink(NULL, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("vectors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, vectors_gpt2);
    tcase_add_test(tc, vectors_deepseek_llm);
    tcase_add_test(tc, vectors_llama_spm);
    tcase_add_test(tc, vectors_deepseek_r1_qwen);
    tcase_add_test(tc, vectors_llama_bpe_skipped);
    tcase_add_test(tc, smollm_prompts);
    suite_add_tcase(s, tc);
    tc = tcase_create("behaviour");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, special_tokens);
    tcase_add_test(tc, detok_stream);
    tcase_add_loop_test(tc, fuzz_round_trip, 0, 4);
    tcase_add_loop_test(tc, long_words, 0, 4);
    tcase_add_test(tc, load_time);
    tcase_add_test(tc, hostile_metadata);
    tcase_add_test(tc, pre_families);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
