/* tokenizer.c - byte-level BPE (GPT-2 family, pre-tokenizer regexes run by PCRE2 in UTF+UCP
 * mode) and SentencePiece BPE (scores, U+2581 for space, byte fallback), special tokens, and
 * the detokenizer. Loaded from untrusted GGUF metadata: every count, id and length is checked. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer.h"
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REGEX 6
#define MAX_EOG 16
#define SPM_SPACE "\xe2\x96\x81"   /* U+2581 LOWER ONE EIGHTH BLOCK stands for a space */

struct merge_slot {
    uint64_t key;                   /* left id << 32 | right id; UINT64_MAX = empty */
    int32_t rank;                   /* position in tokenizer.ggml.merges: lower merges first */
    int32_t res;                    /* id of the merged token */
};

/* Byte trie over special-token texts: matched in the text before BPE. */
struct trie_node {
    int32_t child, sibling;         /* -1 = none */
    int32_t tok;                    /* token ending here, -1 = none */
    uint8_t byte;
};

struct porta_tokenizer {
    enum porta_tok_kind kind;
    int32_t n_vocab;
    char *blob;                     /* all token texts back to back */
    uint32_t *off;                  /* (n_vocab + 1) offsets of each text in blob */
    uint8_t *type;                  /* (n_vocab) enum porta_tok_type */
    float *score;                   /* (n_vocab) SPM merge priority (higher first); NULL for BPE */
    int32_t *idx;                   /* open-addressed text -> id table, -1 = empty */
    uint32_t idx_mask;
    struct merge_slot *merges;      /* BPE: (left, right) -> rank, result */
    uint32_t merge_mask;
    int32_t byte_tok[256];          /* BPE: token of each byte's mapped char; SPM: <0xNN> or unk */
    uint16_t byte_cp[256];          /* GPT-2 byte -> code point */
    int16_t cp_byte[324];           /* and back; -1 = not a mapped code point */
    pcre2_code *re[MAX_REGEX];
    int n_re;
    const char *pre_name;
    bool ignore_merges;             /* LLaMA-3: a word that is a token is taken whole */
    bool add_bos, add_eos, add_space_prefix;
    int32_t bos, eos, eot, eom, unk;
    int32_t eog[MAX_EOG];
    int n_eog;
    struct trie_node *trie;
    int32_t n_trie, cap_trie;
    int32_t trie_root[256];
};

/* ------------------------------------------------------------------------------------------
 * Pre-tokenizers: the split regexes of each family, applied in sequence, each one splitting
 * every piece of the previous one into its matches and the gaps between them. Where llama.cpp
 * rewrote a Hugging Face regex for std::regex, the original is used: PCRE2 takes it as is. */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|" \
                  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" \
                 " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK_HANGUL "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* DeepSeek LLM's cased letters (the Unicode L& ranges its tokenizer.json lists). */
#define RE_DS_LETTERS \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}" \
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}" \
    "\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}" \
    "\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}" \
    "\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}" \
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}" \
    "\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}" \
    "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}" \
    "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}" \
    "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}" \
    "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}" \
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}" \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}" \
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}" \
    "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}" \
    "\\x{1E900}-\\x{1E943}"
#define RE_PORO " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"
#define RE_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_CONTR "(?i:'s|'t|'re|'ve|'m|'ll|'d)"

struct pre_family {
    const char *name;
    const char *re[MAX_REGEX];
    bool ignore_merges, add_bos;
};

static const struct pre_family g_families[] = {
    { "default", { "[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]" }, false, false },
    { "gpt-2", { RE_GPT2 }, false, false },
    { "llama-bpe", { RE_LLAMA3 }, true, true },
    { "dbrx", { RE_LLAMA3 }, false, false },
    { "deepseek-llm", { "[\\r\\n]", "\\s?[" RE_DS_LETTERS "]+",
        "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
        "\\s+$", RE_CJK_HANGUL, "\\p{N}+" }, false, false },
    { "deepseek-coder", { "[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK_HANGUL, "\\p{N}" },
      false, false },
    { "deepseek-v3", { "\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?"
        "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, false, false },
    { "falcon", { "[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]" }, false, false },
    { "starcoder", { "\\p{N}", RE_GPT2 }, false, false },
    { "qwen2", { RE_QWEN2 }, false, false },
    { "poro-chat", { RE_PORO }, false, false },
    { "viking", { RE_PORO, "\\p{N}" }, false, false },
    { "tekken", { "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "*" RE_LOWER "+|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER
        "+" RE_LOWER "*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
      true, true },
    { "gpt-4o", { "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER "*" RE_LOWER "+" RE_CONTR "?|[^\\r\\n\\p{L}\\p{N}]?"
        RE_UPPER "+" RE_LOWER "*" RE_CONTR "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"
        "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, false, false },
    { "seed-coder", { RE_CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|"
        "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, false, false },
    { "bailingmoe", { "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}|"
        " ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+" }, false, false },
    { "chameleon", { "<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
        "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2 }, false, true },
};

/* tokenizer.ggml.pre names -> family (names llama.cpp's converter writes). */
static const struct { const char *pre, *family; } g_pre_names[] = {
    { "default", "default" },
    { "gpt-2", "gpt-2" }, { "phi-2", "gpt-2" }, { "jina-es", "gpt-2" }, { "jina-de", "gpt-2" },
    { "gigachat", "gpt-2" }, { "jina-v1-en", "gpt-2" }, { "jina-v2-es", "gpt-2" },
    { "jina-v2-de", "gpt-2" }, { "jina-v2-code", "gpt-2" }, { "roberta-bpe", "gpt-2" },
    { "mpt", "gpt-2" }, { "olmo", "gpt-2" }, { "jais", "gpt-2" }, { "trillion", "gpt-2" },
    { "exaone4", "gpt-2" }, { "a.x-4.0", "gpt-2" }, { "mellum", "gpt-2" },
    { "granite-docling", "gpt-2" },
    { "llama3", "llama-bpe" }, { "llama-v3", "llama-bpe" }, { "llama-bpe", "llama-bpe" },
    { "falcon3", "llama-bpe" }, { "falcon-h1", "llama-bpe" }, { "pixtral", "llama-bpe" },
    { "midm-2.0", "llama-bpe" }, { "lfm2", "llama-bpe" },
    { "dbrx", "dbrx" }, { "smaug-bpe", "dbrx" }, { "chatglm-bpe", "dbrx" }, { "glm4", "dbrx" },
    { "deepseek-llm", "deepseek-llm" }, { "deepseek-coder", "deepseek-coder" },
    { "deepseek-v3", "deepseek-v3" }, { "hunyuan-dense", "deepseek-v3" },
    { "falcon", "falcon" },
    { "starcoder", "starcoder" }, { "refact", "starcoder" }, { "command-r", "starcoder" },
    { "smollm", "starcoder" }, { "codeshell", "starcoder" }, { "exaone", "starcoder" },
    { "minerva-7b", "starcoder" },
    { "qwen2", "qwen2" }, { "qwen2.5", "qwen2" }, { "qwen-2.5", "qwen2" },
    { "deepseek-r1-qwen", "qwen2" }, { "kormo", "qwen2" }, { "stablelm2", "qwen2" },
    { "megrez", "qwen2" }, { "hunyuan", "qwen2" }, { "grok-2", "qwen2" },
    { "poro-chat", "poro-chat" }, { "bloom", "poro-chat" }, { "gpt3-finnish", "poro-chat" },
    { "viking", "viking" }, { "tekken", "tekken" },
    { "gpt-4o", "gpt-4o" }, { "llama4", "gpt-4o" }, { "minimax-m2", "gpt-4o" },
    { "seed-coder", "seed-coder" },
    { "bailingmoe", "bailingmoe" }, { "bailingmoe2", "bailingmoe" }, { "llada-moe", "bailingmoe" },
    { "chameleon", "chameleon" },
};

/* Texts that end a turn although the metadata may not say so. */
static const char *const g_eog_texts[] = {
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",   /* DeepSeek */
    "<|endoftext|>", "<end_of_turn>", "<|end_of_text|>", "<EOT>",
};

/* ------------------------------------------------------------------------------------------
 * Small helpers */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;             /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 32);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline const char *tok_text(const struct porta_tokenizer *t, int32_t id, size_t *n)
{
    *n = t->off[id + 1] - t->off[id];
    return t->blob + t->off[id];
}

/* Id of the token whose text is s[0..n), or -1. */
static int32_t lookup(const struct porta_tokenizer *t, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->idx_mask;
    for (;;) {
        int32_t id = t->idx[i];
        if (id < 0)
            return -1;
        size_t tn;
        const char *ts = tok_text(t, id, &tn);
        if (tn == n && memcmp(ts, s, n) == 0)
            return id;
        i = (i + 1) & t->idx_mask;
    }
}

static const struct merge_slot *merge_find(const struct porta_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = (uint32_t)mix64(key) & t->merge_mask;
    for (;;) {
        const struct merge_slot *s = &t->merges[i];
        if (s->key == UINT64_MAX)
            return NULL;
        if (s->key == key)
            return s;
        i = (i + 1) & t->merge_mask;
    }
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one well-formed UTF-8 character; returns its length, or 0 if s does not start with
 * one (bad lead, bad or missing continuation, overlong, surrogate, > U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t l;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { l = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { l = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { l = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < l)
        return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return l;
}

/* Bytes in the well-formed character at s[0], or 1 where none starts (an invalid byte is a
 * character of its own, so escaped spaces next to it stay intact). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    uint32_t cp;
    size_t l = utf8_decode(s, n, &cp);
    return l ? l : 1;
}

/* GPT-2's reversible byte -> printable code point map: printable Latin-1 bytes map to
 * themselves, the other 68 bytes to U+0100.. in byte order. */
static void init_byte_map(struct porta_tokenizer *t)
{
    int n = 0;
    for (int i = 0; i < 324; i++)
        t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        t->byte_cp[b] = (uint16_t)(keep ? b : 256 + n++);
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

/* Growable array of ids. */
struct ivec {
    int32_t *v;
    int n, cap;
};

static int ivec_push(struct ivec *a, int32_t x)
{
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v)
            return PORTA_E_NOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

/* Resizes *p to hold at least n elements of size sz (grows geometrically). */
static int grow(void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n)
        c *= 2;
    void *q = realloc(*p, c * sz);
    if (!q)
        return PORTA_E_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Loading */

static int read_id(const struct porta_gguf *g, const char *key, int32_t n_vocab, int32_t *id)
{
    int64_t v;
    int rc = porta_gguf_get_i64(g, key, &v);
    if (rc == PORTA_E_NOTFOUND)
        return 0;                                   /* keep the default */
    if (rc)
        return rc;
    if (v < 0 || v >= n_vocab) {
        porta_err("%s: %s = %lld is out of range (vocab has %d tokens)", g->path, key,
                  (long long)v, n_vocab);
        return PORTA_E_FORMAT;
    }
    *id = (int32_t)v;
    return 0;
}

static int read_bool(const struct porta_gguf *g, const char *key, bool *v)
{
    int rc = porta_gguf_get_bool(g, key, v);
    return rc == PORTA_E_NOTFOUND ? 0 : rc;
}

/* Numeric array key that must have exactly n elements; *out = NULL when absent. */
static int numeric_array(const struct porta_gguf *g, const char *key, int32_t n,
                         const struct porta_gguf_kv **out)
{
    *out = NULL;
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    if (!kv)
        return 0;
    if (kv->type != PORTA_GGUF_ARRAY || kv->arr_type == PORTA_GGUF_STRING ||
        kv->arr_type == PORTA_GGUF_ARRAY || kv->arr_type == PORTA_GGUF_BOOL) {
        porta_err("%s: %s is not a numeric array", g->path, key);
        return PORTA_E_FORMAT;
    }
    if (kv->arr_n != (uint64_t)n) {
        porta_err("%s: %s has %llu entries but tokenizer.ggml.tokens has %d", g->path, key,
                  (unsigned long long)kv->arr_n, n);
        return PORTA_E_FORMAT;
    }
    *out = kv;
    return 0;
}

static const struct porta_gguf_kv *string_array(const struct porta_gguf *g, const char *key)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    if (!kv)
        return NULL;
    if (kv->type != PORTA_GGUF_ARRAY || kv->arr_type != PORTA_GGUF_STRING || !kv->strs) {
        porta_err("%s: %s is not an array of strings", g->path, key);
        return NULL;
    }
    return kv;
}

static int load_tokens(struct porta_tokenizer *t, const struct porta_gguf *g)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, "tokenizer.ggml.tokens");
    if (!kv) {
        porta_err("%s: tokenizer.ggml.tokens is missing", g->path);
        return PORTA_E_FORMAT;
    }
    if (!(kv = string_array(g, "tokenizer.ggml.tokens")))
        return PORTA_E_FORMAT;
    if (kv->arr_n == 0 || kv->arr_n > (1u << 30)) {
        porta_err("%s: tokenizer.ggml.tokens has %llu entries", g->path,
                  (unsigned long long)kv->arr_n);
        return PORTA_E_FORMAT;
    }
    int32_t n = (int32_t)kv->arr_n;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (kv->strs[i].len > PORTA_TOKEN_MAX_LEN) {
            porta_err("%s: tokenizer.ggml.tokens[%d] is %llu bytes long (limit %d)", g->path, i,
                      (unsigned long long)kv->strs[i].len, PORTA_TOKEN_MAX_LEN);
            return PORTA_E_FORMAT;
        }
        total += kv->strs[i].len;
    }
    if (total >= UINT32_MAX) {
        porta_err("%s: tokenizer.ggml.tokens holds %zu bytes of text", g->path, total);
        return PORTA_E_FORMAT;
    }
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)n)
        cap <<= 1;
    t->n_vocab = n;
    t->blob = malloc(total + 1);
    t->off = malloc(((size_t)n + 1) * sizeof *t->off);
    t->type = malloc((size_t)n);
    t->idx = malloc((size_t)cap * sizeof *t->idx);
    if (!t->blob || !t->off || !t->type || !t->idx)
        return PORTA_E_NOMEM;
    t->idx_mask = cap - 1;
    memset(t->idx, 0xff, (size_t)cap * sizeof *t->idx);
    uint32_t o = 0;
    for (int32_t i = 0; i < n; i++) {
        t->off[i] = o;
        if (kv->strs[i].len)
            memcpy(t->blob + o, kv->strs[i].ptr, (size_t)kv->strs[i].len);
        o += (uint32_t)kv->strs[i].len;
        t->type[i] = PORTA_TOKT_NORMAL;
    }
    t->off[n] = o;

    /* text -> id; an empty text can never be matched, so it stays out of the table */
    int n_dup = 0, n_empty = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        const char *s = tok_text(t, i, &len);
        if (len == 0) {
            n_empty++;
            continue;
        }
        uint32_t h = (uint32_t)hash_bytes(s, len) & t->idx_mask;
        int32_t prev = -1;
        for (;;) {
            int32_t id = t->idx[h];
            if (id < 0)
                break;
            size_t ln;
            const char *ls = tok_text(t, id, &ln);
            if (ln == len && memcmp(ls, s, len) == 0) {
                prev = id;
                break;
            }
            h = (h + 1) & t->idx_mask;
        }
        if (prev >= 0) {
            if (t->kind == PORTA_TOK_BPE) {
                porta_err("%s: tokenizer.ggml.tokens[%d] duplicates token %d (\"%.*s\")", g->path,
                          i, prev, (int)(len < 64 ? len : 64), s);
                return PORTA_E_FORMAT;
            }
            n_dup++;                                /* SPM: the first one wins */
            continue;
        }
        t->idx[h] = i;
    }
    if (n_dup)
        porta_warn("%s: %d duplicate tokens in tokenizer.ggml.tokens (first ones kept)", g->path,
                   n_dup);
    if (n_empty)
        porta_warn("%s: %d empty tokens in tokenizer.ggml.tokens", g->path, n_empty);
    return 0;
}

static int load_types_scores(struct porta_tokenizer *t, const struct porta_gguf *g)
{
    const struct porta_gguf_kv *kv;
    int rc = numeric_array(g, "tokenizer.ggml.token_type", t->n_vocab, &kv);
    if (rc)
        return rc;
    for (int32_t i = 0; kv && i < t->n_vocab; i++) {
        double v;
        if ((rc = porta_gguf_arr_num(kv, (uint64_t)i, &v)))
            return rc;
        if (!(v >= 0 && v <= PORTA_TOKT_BYTE) || v != floor(v)) {
            porta_err("%s: tokenizer.ggml.token_type[%d] = %g is not a token type (0..6)",
                      g->path, i, v);
            return PORTA_E_FORMAT;
        }
        t->type[i] = (uint8_t)v;
    }
    if ((rc = numeric_array(g, "tokenizer.ggml.scores", t->n_vocab, &kv)))
        return rc;
    if (t->kind != PORTA_TOK_SPM)
        return 0;
    t->score = calloc((size_t)t->n_vocab, sizeof *t->score);
    if (!t->score)
        return PORTA_E_NOMEM;
    for (int32_t i = 0; kv && i < t->n_vocab; i++) {
        double v;
        if ((rc = porta_gguf_arr_num(kv, (uint64_t)i, &v)))
            return rc;
        if (isnan(v)) {
            porta_err("%s: tokenizer.ggml.scores[%d] is NaN", g->path, i);
            return PORTA_E_FORMAT;
        }
        t->score[i] = (float)v;
    }
    return 0;
}

static int load_merges(struct porta_tokenizer *t, const struct porta_gguf *g)
{
    if (!porta_gguf_find(g, "tokenizer.ggml.merges")) {
        porta_err("%s: tokenizer.ggml.merges is missing (required by a \"gpt2\" tokenizer)",
                  g->path);
        return PORTA_E_FORMAT;
    }
    const struct porta_gguf_kv *kv = string_array(g, "tokenizer.ggml.merges");
    if (!kv)
        return PORTA_E_FORMAT;
    if (kv->arr_n > (1u << 30)) {
        porta_err("%s: tokenizer.ggml.merges has %llu entries", g->path,
                  (unsigned long long)kv->arr_n);
        return PORTA_E_FORMAT;
    }
    uint32_t cap = 2;
    while (cap < 2 * (uint32_t)kv->arr_n)
        cap <<= 1;
    t->merges = malloc((size_t)cap * sizeof *t->merges);
    if (!t->merges)
        return PORTA_E_NOMEM;
    t->merge_mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++)
        t->merges[i].key = UINT64_MAX;

    char cat[2 * PORTA_TOKEN_MAX_LEN + 2];
    for (uint64_t r = 0; r < kv->arr_n; r++) {
        const char *s = kv->strs[r].ptr;
        size_t n = (size_t)kv->strs[r].len;
        /* "left right": split at the first space after the first byte (a token may be " ") */
        const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp) {
            porta_err("%s: tokenizer.ggml.merges[%llu] \"%.*s\" is not two tokens separated by "
                      "a space", g->path, (unsigned long long)r, (int)(n < 64 ? n : 64), s);
            return PORTA_E_FORMAT;
        }
        size_t ln = (size_t)(sp - s), rn = n - ln - 1;
        int32_t a = lookup(t, s, ln), b = lookup(t, sp + 1, rn), c = -1;
        if (a >= 0 && b >= 0 && ln + rn <= PORTA_TOKEN_MAX_LEN) {
            memcpy(cat, s, ln);
            memcpy(cat + ln, sp + 1, rn);
            c = lookup(t, cat, ln + rn);
        }
        if (c < 0) {
            const char *what = a < 0 ? "its left token" : b < 0 ? "its right token" :
                                                          "the merged token";
            porta_err("%s: tokenizer.ggml.merges[%llu] \"%.*s\": %s is not in the vocabulary",
                      g->path, (unsigned long long)r, (int)(n < 64 ? n : 64), s, what);
            return PORTA_E_FORMAT;
        }
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint32_t h = (uint32_t)mix64(key) & t->merge_mask;
        while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key)
            h = (h + 1) & t->merge_mask;
        if (t->merges[h].key == key)
            continue;                               /* a repeated pair keeps its first rank */
        t->merges[h].key = key;
        t->merges[h].rank = (int32_t)r;
        t->merges[h].res = c;
    }
    return 0;
}

static int select_pre(struct porta_tokenizer *t, const struct porta_gguf *g)
{
    struct porta_str pre = { 0 };
    int rc = porta_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (rc && rc != PORTA_E_NOTFOUND)
        return rc;
    const char *family = NULL;
    for (size_t i = 0; !rc && i < sizeof g_pre_names / sizeof g_pre_names[0]; i++)
        if (porta_str_eq(pre, g_pre_names[i].pre))
            family = g_pre_names[i].family;
    if (!family) {
        if (rc)
            porta_warn("%s: tokenizer.ggml.pre is missing; using the default pre-tokenizer",
                       g->path);
        else
            porta_warn("%s: tokenizer.ggml.pre \"%.*s\" is not known; using the default "
                       "pre-tokenizer", g->path, (int)(pre.len < 64 ? pre.len : 64), pre.ptr);
        family = "default";
    }
    const struct pre_family *f = NULL;
    for (size_t i = 0; i < sizeof g_families / sizeof g_families[0]; i++)
        if (strcmp(g_families[i].name, family) == 0)
            f = &g_families[i];
    t->pre_name = f->name;
    t->ignore_merges = f->ignore_merges;
    t->add_bos = f->add_bos;
    for (int i = 0; i < MAX_REGEX && f->re[i]; i++) {
        int err;
        PCRE2_SIZE eoff;
        /* MATCH_INVALID_UTF: invalid UTF-8 in the text simply never matches, so arbitrary
         * bytes pass through the split (and byte-level BPE) unchanged */
        t->re[i] = pcre2_compile((PCRE2_SPTR)f->re[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF |
                                 PCRE2_DOLLAR_ENDONLY, &err, &eoff, NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            porta_err("tokenizer: pre-tokenizer %s regex %d: %s at offset %zu", f->name, i,
                      (const char *)msg, (size_t)eoff);
            return PORTA_E_UNSUPPORTED;             /* a PCRE2 build without Unicode support */
        }
        pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE);   /* optional: falls back if absent */
        t->n_re = i + 1;
    }
    return 0;
}

static void init_byte_tokens(struct porta_tokenizer *t, const struct porta_gguf *g)
{
    int missing = 0;
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n;
        if (t->kind == PORTA_TOK_BPE) {
            n = utf8_put(t->byte_cp[b], s);
        } else {
            snprintf(s, sizeof s, "<0x%02X>", b);
            n = 6;
        }
        /* only a token that decodes back to this byte will do */
        int32_t id = lookup(t, s, n);
        int ty = id >= 0 ? t->type[id] : -1;
        bool ok = t->kind == PORTA_TOK_BPE ? ty == PORTA_TOKT_NORMAL || ty == PORTA_TOKT_UNDEFINED
                                           : ty == PORTA_TOKT_BYTE;
        t->byte_tok[b] = ok ? id : -1;
        if (!ok) {
            t->byte_tok[b] = t->kind == PORTA_TOK_SPM ? t->unk : -1;
            missing++;
        }
    }
    if (missing)      /* common: bytes that never occur in UTF-8 are often left out */
        porta_dbg("%s: %d of the 256 byte tokens are missing; text with those bytes will not "
                   "round-trip", g->path, missing);
}

static void add_eog(struct porta_tokenizer *t, int32_t id)
{
    if (id < 0 || t->n_eog == MAX_EOG)
        return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return;
    t->eog[t->n_eog++] = id;
}

static int trie_node_new(struct porta_tokenizer *t, uint8_t byte, int32_t *out)
{
    if (t->n_trie == t->cap_trie) {
        int32_t cap = t->cap_trie ? t->cap_trie * 2 : 256;
        struct trie_node *n = realloc(t->trie, (size_t)cap * sizeof *n);
        if (!n)
            return PORTA_E_NOMEM;
        t->trie = n;
        t->cap_trie = cap;
    }
    struct trie_node *nd = &t->trie[t->n_trie];
    nd->child = nd->sibling = nd->tok = -1;
    nd->byte = byte;
    *out = t->n_trie++;
    return 0;
}

/* Special tokens (control, user-defined, unknown) go into a byte trie for the matcher. */
static int build_trie(struct porta_tokenizer *t)
{
    for (int i = 0; i < 256; i++)
        t->trie_root[i] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int ty = t->type[id];
        size_t n;
        const unsigned char *s = (const unsigned char *)tok_text(t, id, &n);
        if ((ty != PORTA_TOKT_CONTROL && ty != PORTA_TOKT_USER && ty != PORTA_TOKT_UNKNOWN) || !n)
            continue;
        int32_t cur = t->trie_root[s[0]];
        if (cur < 0) {
            if (trie_node_new(t, s[0], &cur))
                return PORTA_E_NOMEM;
            t->trie_root[s[0]] = cur;
        }
        for (size_t k = 1; k < n; k++) {
            int32_t c = t->trie[cur].child;
            while (c >= 0 && t->trie[c].byte != s[k])
                c = t->trie[c].sibling;
            if (c < 0) {
                if (trie_node_new(t, s[k], &c))
                    return PORTA_E_NOMEM;
                t->trie[c].sibling = t->trie[cur].child;
                t->trie[cur].child = c;
            }
            cur = c;
        }
        if (t->trie[cur].tok < 0)
            t->trie[cur].tok = id;
    }
    return 0;
}

static int load_special(struct porta_tokenizer *t, const struct porta_gguf *g)
{
    int rc;
    t->bos = t->eos = t->eot = t->eom = t->unk = -1;
    if (t->kind == PORTA_TOK_SPM) {                 /* LLaMA's conventions when keys are absent */
        t->unk = 0;
        t->bos = t->n_vocab > 1 ? 1 : -1;
        t->eos = t->n_vocab > 2 ? 2 : -1;
        t->add_bos = true;
        t->add_space_prefix = true;
    }
    if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos)) ||
        (rc = read_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos)) ||
        (rc = read_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot)) ||
        (rc = read_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom)) ||
        (rc = read_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk)) ||
        (rc = read_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos)) ||
        (rc = read_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos)) ||
        (rc = read_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix)))
        return rc;
    if (t->add_bos && t->bos < 0) {
        porta_warn("%s: add_bos_token is set but there is no BOS token", g->path);
        t->add_bos = false;
    }
    if (t->add_eos && t->eos < 0) {
        porta_warn("%s: add_eos_token is set but there is no EOS token", g->path);
        t->add_eos = false;
    }
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    add_eog(t, t->eom);
    for (size_t i = 0; i < sizeof g_eog_texts / sizeof g_eog_texts[0]; i++) {
        add_eog(t, lookup(t, g_eog_texts[i], strlen(g_eog_texts[i])));
    }
    return build_trie(t);
}

int porta_tokenizer_load(const struct porta_gguf *g, struct porta_tokenizer **out)
{
    int rc = PORTA_E_NOMEM;
    if (!out)
        return PORTA_E_INVAL;
    *out = NULL;
    if (!g)
        return PORTA_E_INVAL;
    struct porta_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return PORTA_E_NOMEM;

    struct porta_str model;
    rc = porta_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc) {
        if (rc == PORTA_E_NOTFOUND) {
            porta_err("%s: tokenizer.ggml.model is missing", g->path);
            rc = PORTA_E_FORMAT;
        }
        goto fail;
    }
    if (porta_str_eq(model, "gpt2")) {
        t->kind = PORTA_TOK_BPE;
    } else if (porta_str_eq(model, "llama")) {
        t->kind = PORTA_TOK_SPM;
        t->pre_name = "spm";
    } else {
        porta_err("%s: tokenizer.ggml.model \"%.*s\" is not supported (gpt2, llama)", g->path,
                  (int)(model.len < 64 ? model.len : 64), model.ptr);
        rc = PORTA_E_UNSUPPORTED;
        goto fail;
    }
    init_byte_map(t);
    if ((rc = load_tokens(t, g)) || (rc = load_types_scores(t, g)))
        goto fail;
    if (t->kind == PORTA_TOK_BPE && ((rc = select_pre(t, g)) || (rc = load_merges(t, g))))
        goto fail;
    if ((rc = load_special(t, g)))
        goto fail;
    init_byte_tokens(t, g);
    *out = t;
    return 0;
fail:
    porta_tokenizer_destroy(t);
    return rc;
}

void porta_tokenizer_destroy(struct porta_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < MAX_REGEX; i++)
        pcre2_code_free(t->re[i]);
    free(t->blob);
    free(t->off);
    free(t->type);
    free(t->score);
    free(t->idx);
    free(t->merges);
    free(t->trie);
    free(t);
}

/* ------------------------------------------------------------------------------------------
 * Encoding. Both BPE flavours keep the symbols of one word in a linked list and their
 * candidate merges in a binary heap: O(n log n) even for a 100 KB word without spaces. */

struct cand {
    double key;                     /* lower merges first: BPE rank, SPM -score */
    int32_t left, right;
    int32_t a, b;                   /* validity check: BPE ids of left/right; SPM merged size */
};

struct work {
    int32_t *sym, *prev, *next;     /* per symbol: BPE id / SPM length, and list links */
    int32_t *start;                 /* SPM: byte offset of each symbol */
    size_t cap_sym;
    struct cand *heap;
    size_t n_heap, cap_heap;
    char *buf;                      /* escaped / byte-mapped text */
    size_t cap_buf;
    size_t *spans, *spans2;         /* pre-tokenizer pieces: (offset, length) pairs */
    size_t cap_spans, cap_spans2;
    pcre2_match_data *md;
    bool warned;
};

static bool cand_less(const struct cand *x, const struct cand *y)
{
    return x->key < y->key || (x->key == y->key && x->left < y->left);
}

static int heap_push(struct work *w, struct cand c)
{
    if (grow((void **)&w->heap, &w->cap_heap, w->n_heap + 1, sizeof c))
        return PORTA_E_NOMEM;
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p]))
            break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
    return 0;
}

static struct cand heap_pop(struct work *w)
{
    struct cand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!cand_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = last;
    return top;
}

static int work_symbols(struct work *w, size_t n)
{
    if (n <= w->cap_sym)
        return 0;
    size_t c = n < 256 ? 256 : n * 2;
    int32_t *p[4];
    int32_t **dst[4] = { &w->sym, &w->prev, &w->next, &w->start };
    for (int i = 0; i < 4; i++) {
        p[i] = realloc(*dst[i], c * sizeof(int32_t));
        if (!p[i])
            return PORTA_E_NOMEM;
        *dst[i] = p[i];
    }
    w->cap_sym = c;
    return 0;
}

static int bpe_try(const struct porta_tokenizer *t, struct work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || w->sym[l] < 0 || w->sym[r] < 0)
        return 0;
    const struct merge_slot *m = merge_find(t, w->sym[l], w->sym[r]);
    if (!m)
        return 0;
    return heap_push(w, (struct cand){ (double)m->rank, l, r, w->sym[l], w->sym[r] });
}

/* Byte-level BPE of one pre-tokenized word (raw bytes). */
static int bpe_word(const struct porta_tokenizer *t, struct work *w, const unsigned char *s,
                    size_t n, struct ivec *out)
{
    int rc;
    if (n == 0)
        return 0;
    if (t->ignore_merges) {
        if ((rc = grow((void **)&w->buf, &w->cap_buf, 2 * n, 1)))
            return rc;
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            m += utf8_put(t->byte_cp[s[i]], w->buf + m);
        int32_t id = lookup(t, w->buf, m);
        if (id >= 0)
            return ivec_push(out, id);
    }
    if (n > INT32_MAX / 4)
        return PORTA_E_INVAL;
    if ((rc = work_symbols(w, n)))
        return rc;
    w->n_heap = 0;
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = t->byte_tok[s[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++)
        if ((rc = bpe_try(t, w, (int32_t)i, (int32_t)i + 1)))
            return rc;
    while (w->n_heap) {
        struct cand c = heap_pop(w);
        if (w->sym[c.left] != c.a || w->next[c.left] != c.right || w->sym[c.right] != c.b)
            continue;                               /* stale: a side was merged meanwhile */
        w->sym[c.left] = merge_find(t, c.a, c.b)->res;
        w->sym[c.right] = -2;
        w->next[c.left] = w->next[c.right];
        if (w->next[c.right] >= 0)
            w->prev[w->next[c.right]] = c.left;
        if ((rc = bpe_try(t, w, w->prev[c.left], c.left)) ||
            (rc = bpe_try(t, w, c.left, w->next[c.left])))
            return rc;
    }
    for (int32_t i = 0; i >= 0; i = w->next[i])
        if (w->sym[i] >= 0 && (rc = ivec_push(out, w->sym[i])))
            return rc;
    return 0;
}

/* Splits frag into pre-tokenizer words and BPE-encodes each. */
static int bpe_fragment(const struct porta_tokenizer *t, struct work *w, const char *frag,
                        size_t n, struct ivec *out)
{
    int rc;
    size_t ns = 1;
    if ((rc = grow((void **)&w->spans, &w->cap_spans, 2, sizeof(size_t))))
        return rc;
    w->spans[0] = 0;
    w->spans[1] = n;
    for (int r = 0; r < t->n_re; r++) {
        size_t ns2 = 0;
        for (size_t k = 0; k < ns; k++) {
            size_t o = w->spans[2 * k], l = w->spans[2 * k + 1], last = 0, p = 0;
            while (p < l) {
                int m = pcre2_match(t->re[r], (PCRE2_SPTR)(frag + o), l, p, 0, w->md, NULL);
                if (m == PCRE2_ERROR_NOMATCH)
                    break;
                if (m < 0) {                        /* match/JIT limit: keep the rest whole */
                    if (!w->warned)
                        porta_warn("tokenizer: pre-tokenizer regex failed (PCRE2 error %d); "
                                   "text kept unsplit", m);
                    w->warned = true;
                    break;
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) {                     /* empty match: step one character */
                    p = ms + utf8_len((const unsigned char *)frag + o + ms, l - ms);
                    continue;
                }
                if ((rc = grow((void **)&w->spans2, &w->cap_spans2, 2 * ns2 + 4, sizeof(size_t))))
                    return rc;
                if (ms > last) {
                    w->spans2[2 * ns2] = o + last;
                    w->spans2[2 * ns2++ + 1] = ms - last;
                }
                w->spans2[2 * ns2] = o + ms;
                w->spans2[2 * ns2++ + 1] = me - ms;
                last = p = me;
            }
            if (last < l) {
                if ((rc = grow((void **)&w->spans2, &w->cap_spans2, 2 * ns2 + 2, sizeof(size_t))))
                    return rc;
                w->spans2[2 * ns2] = o + last;
                w->spans2[2 * ns2++ + 1] = l - last;
            }
        }
        size_t *tmp = w->spans;
        size_t tcap = w->cap_spans;
        w->spans = w->spans2;
        w->cap_spans = w->cap_spans2;
        w->spans2 = tmp;
        w->cap_spans2 = tcap;
        ns = ns2;
    }
    for (size_t k = 0; k < ns; k++)
        if ((rc = bpe_word(t, w, (const unsigned char *)frag + w->spans[2 * k],
                           w->spans[2 * k + 1], out)))
            return rc;
    return 0;
}

/* SentencePiece merges only pieces a text can produce: not control/unknown/byte/unused. */
static int32_t spm_lookup(const struct porta_tokenizer *t, const char *s, size_t n)
{
    int32_t id = lookup(t, s, n);
    if (id < 0)
        return -1;
    int ty = t->type[id];
    return ty == PORTA_TOKT_NORMAL || ty == PORTA_TOKT_USER || ty == PORTA_TOKT_UNDEFINED ? id : -1;
}

static int spm_try(const struct porta_tokenizer *t, struct work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 0;
    int32_t size = w->sym[l] + w->sym[r];
    int32_t id = spm_lookup(t, w->buf + w->start[l], (size_t)size);
    if (id < 0)
        return 0;
    return heap_push(w, (struct cand){ -(double)t->score[id], l, r, size, 0 });
}

/* SentencePiece BPE over w->buf[0..n) (spaces already escaped): start from UTF-8
 * characters, repeatedly merge the adjacent pair whose union has the highest score. */
static int spm_encode(const struct porta_tokenizer *t, struct work *w, size_t n, struct ivec *out)
{
    int rc;
    if (n == 0)
        return 0;
    if (n > INT32_MAX / 4)
        return PORTA_E_INVAL;
    if ((rc = work_symbols(w, n)))
        return rc;
    const unsigned char *s = (const unsigned char *)w->buf;
    int32_t k = 0;
    for (size_t i = 0; i < n; k++) {
        size_t l = utf8_len(s + i, n - i);
        w->start[k] = (int32_t)i;
        w->sym[k] = (int32_t)l;
        w->prev[k] = k - 1;
        w->next[k] = k + 1;
        i += l;
    }
    w->next[k - 1] = -1;
    w->n_heap = 0;
    for (int32_t i = 0; i + 1 < k; i++)
        if ((rc = spm_try(t, w, i, i + 1)))
            return rc;
    while (w->n_heap) {
        struct cand c = heap_pop(w);
        int32_t l = c.left, r = c.right;
        if (w->sym[l] == 0 || w->sym[r] == 0 || w->next[l] != r || w->sym[l] + w->sym[r] != c.a)
            continue;
        w->sym[l] += w->sym[r];
        w->sym[r] = 0;
        w->next[l] = w->next[r];
        if (w->next[r] >= 0)
            w->prev[w->next[r]] = l;
        if ((rc = spm_try(t, w, w->prev[l], l)) || (rc = spm_try(t, w, l, w->next[l])))
            return rc;
    }
    for (int32_t i = 0; i >= 0; i = w->next[i]) {
        int32_t id = spm_lookup(t, w->buf + w->start[i], (size_t)w->sym[i]);
        if (id >= 0) {
            if ((rc = ivec_push(out, id)))
                return rc;
            continue;
        }
        for (int32_t j = 0; j < w->sym[i]; j++) {   /* byte fallback */
            int32_t b = t->byte_tok[s[w->start[i] + j]];
            if (b >= 0 && (rc = ivec_push(out, b)))
                return rc;
        }
    }
    return 0;
}

static int spm_fragment(const struct porta_tokenizer *t, struct work *w, const char *frag,
                        size_t n, bool prefix, struct ivec *out)
{
    int rc = grow((void **)&w->buf, &w->cap_buf, 3 * n + 3, 1);
    if (rc)
        return rc;
    size_t m = 0;
    if (prefix) {
        memcpy(w->buf, SPM_SPACE, 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (frag[i] == ' ') {
            memcpy(w->buf + m, SPM_SPACE, 3);
            m += 3;
        } else {
            w->buf[m++] = frag[i];
        }
    }
    return spm_encode(t, w, m, out);
}

/* Finds the leftmost, then longest, special token in s[from..n) that may be matched:
 * user-defined always, control/unknown only with parse_special. Returns its start or n. */
static size_t find_special(const struct porta_tokenizer *t, const unsigned char *s, size_t from,
                           size_t n, bool parse_special, size_t *end, int32_t *tok)
{
    for (size_t i = from; i < n; i++) {
        int32_t cur = t->trie_root[s[i]];
        int32_t best = -1;
        size_t best_end = 0;
        for (size_t j = i; cur >= 0;) {
            int32_t id = t->trie[cur].tok;
            if (id >= 0 && (parse_special || t->type[id] == PORTA_TOKT_USER)) {
                best = id;
                best_end = j + 1;
            }
            if (++j >= n)
                break;
            int32_t c = t->trie[cur].child;
            while (c >= 0 && t->trie[c].byte != s[j])
                c = t->trie[c].sibling;
            cur = c;
        }
        if (best >= 0) {
            *end = best_end;
            *tok = best;
            return i;
        }
    }
    return n;
}

int porta_tokenize(const struct porta_tokenizer *t, const char *text, size_t len,
                   bool add_special, bool parse_special, int32_t **ids, int *n_ids)
{
    if (!ids || !n_ids)
        return PORTA_E_INVAL;
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len) || len > INT32_MAX)
        return PORTA_E_INVAL;
    struct ivec out = { 0 };
    struct work w = { 0 };
    int rc = 0;
    if (t->kind == PORTA_TOK_BPE && !(w.md = pcre2_match_data_create(32, NULL))) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    if (add_special && t->add_bos && (rc = ivec_push(&out, t->bos)))
        goto fail;
    bool prev_special = true;          /* SPM: a text fragment at the start or after a special
                                        * token gets the space prefix */
    const unsigned char *s = (const unsigned char *)text;
    for (size_t pos = 0; pos < len;) {
        size_t end = 0;
        int32_t tok = -1;
        size_t at = find_special(t, s, pos, len, parse_special, &end, &tok);
        if (at > pos) {
            if (t->kind == PORTA_TOK_BPE)
                rc = bpe_fragment(t, &w, text + pos, at - pos, &out);
            else
                rc = spm_fragment(t, &w, text + pos, at - pos,
                                  t->add_space_prefix && prev_special, &out);
            if (rc)
                goto fail;
            prev_special = false;
        }
        if (at == len)
            break;
        if ((rc = ivec_push(&out, tok)))
            goto fail;
        prev_special = true;
        pos = end;
    }
    if (add_special && t->add_eos && (rc = ivec_push(&out, t->eos)))
        goto fail;
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
fail:
    free(out.v);
    free(w.sym);
    free(w.prev);
    free(w.next);
    free(w.start);
    free(w.heap);
    free(w.buf);
    free(w.spans);
    free(w.spans2);
    pcre2_match_data_free(w.md);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Decoding */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 :
           c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int porta_token_piece(const struct porta_tokenizer *t, int32_t id, bool special, char *buf,
                      size_t cap, size_t *len)
{
    if (!t || !len || id < 0 || id >= t->n_vocab)
        return PORTA_E_INVAL;
    size_t n, m = 0;
    const char *s = tok_text(t, id, &n);
    char tmp[4];
#define PUT(p, k) do { if (m + (k) <= cap) memcpy(buf + m, (p), (k)); m += (k); } while (0)
    switch (t->type[id]) {
    case PORTA_TOKT_CONTROL:
    case PORTA_TOKT_UNKNOWN:
        if (special)
            PUT(s, n);
        break;
    case PORTA_TOKT_USER:
        PUT(s, n);
        break;
    case PORTA_TOKT_UNUSED:
        break;
    case PORTA_TOKT_BYTE:
        if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && hexval(s[3]) >= 0 &&
            hexval(s[4]) >= 0) {
            tmp[0] = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            PUT(tmp, 1);
            break;
        }
        /* not a <0xNN> text: decoded like a normal token */
        /* fall through */
    default:
        if (t->kind == PORTA_TOK_SPM) {
            for (size_t i = 0; i < n;) {
                if (n - i >= 3 && memcmp(s + i, SPM_SPACE, 3) == 0) {
                    PUT(" ", 1);
                    i += 3;
                } else {
                    PUT(s + i, 1);
                    i++;
                }
            }
        } else {
            for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
                if (l && cp < 324 && t->cp_byte[cp] >= 0) {
                    tmp[0] = (char)t->cp_byte[cp];
                    PUT(tmp, 1);
                } else {                            /* not a mapped byte: keep as written */
                    l = l ? l : 1;
                    PUT(s + i, l);
                }
                i += l;
            }
        }
    }
#undef PUT
    *len = m;
    return m <= cap ? 0 : PORTA_E_RANGE;
}

int porta_detokenize(const struct porta_tokenizer *t, const int32_t *ids, int n, bool special,
                     bool strip_space, char **text, size_t *len)
{
    if (!text || !len)
        return PORTA_E_INVAL;
    *text = NULL;
    *len = 0;
    if (!t || (!ids && n > 0) || n < 0)
        return PORTA_E_INVAL;
    size_t cap = 256, m = 0;
    char *out = malloc(cap);
    if (!out)
        return PORTA_E_NOMEM;
    bool strip = strip_space && t->kind == PORTA_TOK_SPM && t->add_space_prefix;
    for (int i = 0; i < n; i++) {
        size_t l;
        int rc;
        for (;;) {
            rc = porta_token_piece(t, ids[i], special, out + m, cap - m - 1, &l);
            if (rc != PORTA_E_RANGE)
                break;
            char *o = realloc(out, cap * 2 + l);
            if (!o) {
                free(out);
                return PORTA_E_NOMEM;
            }
            out = o;
            cap = cap * 2 + l;
        }
        if (rc) {
            free(out);
            return rc;
        }
        if (strip && l) {
            if (out[m] == ' ')
                memmove(out + m, out + m + 1, --l);
            strip = false;
        }
        m += l;
    }
    out[m] = 0;
    *text = out;
    *len = m;
    return 0;
}

void porta_detok_init(struct porta_detok *d, const struct porta_tokenizer *t, bool special,
                      bool strip_space)
{
    d->t = t;
    d->special = special;
    d->strip_space = strip_space && t && t->kind == PORTA_TOK_SPM && t->add_space_prefix;
    d->started = false;
    d->n_held = 0;
}

/* Moves the complete characters of in[0..n) to out as valid UTF-8 (U+FFFD for each maximal
 * invalid subpart); an incomplete but so far valid tail is returned in *tail. */
static size_t utf8_repair(const unsigned char *in, size_t n, char *out, size_t *tail)
{
    size_t m = 0, i = 0;
    *tail = n;
    while (i < n) {
        uint32_t cp;
        size_t l = utf8_decode(in + i, n - i, &cp);
        if (l) {
            memcpy(out + m, in + i, l);
            m += l;
            i += l;
            continue;
        }
        /* how many bytes form a valid prefix of some character? */
        unsigned c = in[i];
        size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 :
                      c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        size_t k = 1;
        while (need && k < need && i + k < n && (in[i + k] & 0xC0) == 0x80) {
            unsigned c1 = in[i + 1];
            if (k == 1 && ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
                           (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)))
                break;
            k++;
        }
        if (need && i + k == n && k < need) {       /* incomplete: wait for more bytes */
            *tail = i;
            return m;
        }
        m += utf8_put(0xFFFD, out + m);
        i += k;
    }
    return m;
}

int porta_detok_push(struct porta_detok *d, int32_t id, const char **out, size_t *len)
{
    unsigned char in[PORTA_TOKEN_MAX_LEN + 8];
    size_t l;
    *out = d->out;
    *len = 0;
    memcpy(in, d->held, (size_t)d->n_held);
    int rc = porta_token_piece(d->t, id, d->special, (char *)in + d->n_held,
                               sizeof in - (size_t)d->n_held, &l);
    if (rc)
        return rc == PORTA_E_RANGE ? PORTA_E_INVAL : rc;
    unsigned char *p = in + d->n_held;
    if (!d->started && l) {
        d->started = true;
        if (d->strip_space && p[0] == ' ')
            memmove(p, p + 1, --l);
    }
    size_t n = (size_t)d->n_held + l, tail;
    *len = utf8_repair(in, n, d->out, &tail);
    d->n_held = (int)(n - tail);
    memcpy(d->held, in + tail, (size_t)d->n_held);
    return 0;
}

void porta_detok_flush(struct porta_detok *d, const char **out, size_t *len)
{
    *out = d->out;
    *len = d->n_held ? utf8_put(0xFFFD, d->out) : 0;
    d->n_held = 0;
    d->started = false;
}

/* ------------------------------------------------------------------------------------------
 * Accessors */

enum porta_tok_kind porta_tokenizer_kind(const struct porta_tokenizer *t) { return t->kind; }
const char *porta_tokenizer_pre(const struct porta_tokenizer *t) { return t->pre_name; }
int32_t porta_tokenizer_n_vocab(const struct porta_tokenizer *t) { return t->n_vocab; }
int32_t porta_tokenizer_bos(const struct porta_tokenizer *t) { return t->bos; }
int32_t porta_tokenizer_eos(const struct porta_tokenizer *t) { return t->eos; }
bool porta_tokenizer_adds_bos(const struct porta_tokenizer *t) { return t->add_bos; }
bool porta_tokenizer_adds_eos(const struct porta_tokenizer *t) { return t->add_eos; }

bool porta_tokenizer_is_eog(const struct porta_tokenizer *t, int32_t id)
{
    for (int i = 0; id >= 0 && i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

int porta_tokenizer_type(const struct porta_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->type[id] : -1;
}

int32_t porta_tokenizer_find(const struct porta_tokenizer *t, const char *s)
{
    return s ? lookup(t, s, strlen(s)) : -1;
}

const char *porta_tokenizer_text(const struct porta_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    return tok_text(t, id, len);
}
