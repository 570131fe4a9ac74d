/* synth.c - random-weight GGUF models of real shapes (see synth.h): shape table, llama.cpp's
 * per-tensor type mixes, a seeded weight generator quantized by core/quant.c on worker threads,
 * and a streaming GGUF v3 writer (header first, then each tensor as it is made). */
#include "synth.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant.h"

#define ALIGNMENT 32
#define MAX_TENSORS 4096
#define CHUNK_BYTES (32u << 20)     /* tensor data made and written this much at a time */

/* ---- shapes ---- */

static const struct porta_synth_shape g_shapes[] = {
    /* name, arch, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, tied, rope, eps, ctx */
    { "qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, true, 1000000.0f, 1e-6f, 32768 },
    { "r1-distill-qwen-1.5b", "qwen2", 1536, 28, 12, 2, 8960, 151936, false, 10000.0f, 1e-6f,
      131072 },
    { "r1-distill-qwen-7b", "qwen2", 3584, 28, 28, 4, 18944, 152064, false, 10000.0f, 1e-6f,
      131072 },
    /* the shape of models/smollm2-135m-instruct-q4_1.gguf: a real file to compare with */
    { "smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, true, 100000.0f, 1e-5f, 8192 },
    /* small enough for tests; every row a multiple of 256 so every K type applies */
    { "tiny", "qwen2", 256, 2, 4, 2, 512, 512, false, 10000.0f, 1e-6f, 4096 },
};

const struct porta_synth_shape *porta_synth_shapes(int *n)
{
    *n = (int)(sizeof g_shapes / sizeof g_shapes[0]);
    return g_shapes;
}

const struct porta_synth_shape *porta_synth_shape_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof g_shapes / sizeof g_shapes[0]; i++)
        if (strcmp(g_shapes[i].name, name) == 0)
            return &g_shapes[i];
    return NULL;
}

/* ---- file types and llama.cpp's mixes ---- */

static const struct {
    const char *name;
    enum porta_dtype base;          /* the type of most matrices */
    uint32_t llama_ftype;           /* general.file_type as llama.cpp numbers it */
    bool pure;                      /* output matrix in the base type too */
} g_ftypes[PORTA_SYNTH_FTYPE_COUNT] = {
    [PORTA_SYNTH_F32] = { "F32", PORTA_F32, 0, true },
    [PORTA_SYNTH_F16] = { "F16", PORTA_F16, 1, true },
    [PORTA_SYNTH_BF16] = { "BF16", PORTA_BF16, 32, true },
    [PORTA_SYNTH_Q8_0] = { "Q8_0", PORTA_Q8_0, 7, true },
    [PORTA_SYNTH_Q4_0] = { "Q4_0", PORTA_Q4_0, 2, false },
    [PORTA_SYNTH_Q4_1] = { "Q4_1", PORTA_Q4_1, 3, false },
    [PORTA_SYNTH_Q5_0] = { "Q5_0", PORTA_Q5_0, 8, false },
    [PORTA_SYNTH_Q4_K_M] = { "Q4_K_M", PORTA_Q4_K, 15, false },
    [PORTA_SYNTH_Q4_K] = { "Q4_K", PORTA_Q4_K, 14, true },
    [PORTA_SYNTH_Q6_K] = { "Q6_K", PORTA_Q6_K, 18, true },
};

int porta_synth_ftype_parse(const char *name, enum porta_synth_ftype *out)
{
    for (int i = 0; name && i < PORTA_SYNTH_FTYPE_COUNT; i++)
        if (strcasecmp(name, g_ftypes[i].name) == 0) {
            *out = (enum porta_synth_ftype)i;
            return 0;
        }
    porta_err("synth: type '%s' is not one of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K_M, "
              "Q4_K, Q6_K", name ? name : "(null)");
    return PORTA_E_INVAL;
}

const char *porta_synth_ftype_name(enum porta_synth_ftype ft)
{
    return ft >= 0 && ft < PORTA_SYNTH_FTYPE_COUNT ? g_ftypes[ft].name : "?";
}

/* llama.cpp's use_more_bits(): the first and last eighth of the layers and every third one
 * between them */
static bool more_bits(int il, int n)
{
    return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2;
}

static enum porta_dtype k_fallback(enum porta_dtype t, int64_t n_cols)
{
    if (n_cols % PORTA_QK_K == 0)
        return t;
    if (t == PORTA_Q4_K)
        return PORTA_Q5_0;
    if (t == PORTA_Q6_K)
        return PORTA_Q8_0;
    return t;
}

enum porta_dtype porta_synth_tensor_type(const struct porta_synth_shape *s,
                                         enum porta_synth_ftype ft, const char *role, int il,
                                         int64_t n_cols)
{
    enum porta_dtype t = g_ftypes[ft].base;
    bool is_output = strcmp(role, "output") == 0 || (s->tied && strcmp(role, "token_embd") == 0);
    if (is_output && !g_ftypes[ft].pure)
        t = PORTA_Q6_K;
    else if (ft == PORTA_SYNTH_Q4_K_M &&
             (strcmp(role, "attn_v") == 0 || strcmp(role, "ffn_down") == 0) &&
             more_bits(il, s->n_layer))
        t = PORTA_Q6_K;
    return k_fallback(t, n_cols);
}

/* ---- random numbers: one stream per (seed, tensor, row), so threads change nothing ---- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* n values of roughly normal distribution (sum of 4 uniforms, unit variance) times std, plus mean */
static void fill_row(float *x, int64_t n, uint64_t seed, float mean, float std)
{
    uint64_t s = seed;
    const float k = std * (float)(1.7320508 / 2147483648.0); /* sqrt(3) / 2^31 */
    for (int64_t i = 0; i < n; i++) {
        uint64_t a = splitmix(&s), b = splitmix(&s);
        int64_t sum = (int64_t)(a >> 33) + (int64_t)(a & 0x7FFFFFFF) + (int64_t)(b >> 33) +
                      (int64_t)(b & 0x7FFFFFFF) - 2 * 2147483648ll;
        x[i] = mean + k * (float)sum;
    }
}

/* ---- the tensor list ---- */

struct stensor {
    char name[64];
    enum porta_dtype type;
    int n_dims;
    uint64_t ne[2];                 /* ne[0]: row length */
    float mean, std;
    uint64_t offset;                /* in the data section */
    size_t nbytes, row_bytes;
};

struct plan {
    struct stensor *t;
    int n;
    uint64_t data_bytes;
};

static int add_tensor(struct plan *p, const char *name, enum porta_dtype type, int64_t ne0,
                      int64_t ne1, float mean, float std)
{
    if (p->n >= MAX_TENSORS)
        return PORTA_E_INVAL;
    struct stensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = (uint64_t)ne0;
    t->ne[1] = (uint64_t)(ne1 ? ne1 : 1);
    t->mean = mean;
    t->std = std;
    t->row_bytes = porta_row_size(type, ne0);
    if (!t->row_bytes || !porta_mul_ok(t->row_bytes, t->ne[1], &t->nbytes)) {
        porta_err("synth: tensor %s: %s rows of %lld elements are not possible", name,
                  porta_dtype_name(type), (long long)ne0);
        return PORTA_E_INVAL;
    }
    t->offset = p->data_bytes;
    p->data_bytes += t->nbytes + (ALIGNMENT - t->nbytes % ALIGNMENT) % ALIGNMENT;
    p->n++;
    return 0;
}

static int make_plan(const struct porta_synth_shape *s, enum porta_synth_ftype ft, int n_layer,
                     struct plan *p)
{
    int64_t E = s->n_embd, F = s->n_ff, hd = s->n_embd / s->n_head;
    int64_t Q = hd * s->n_head, KV = hd * s->n_head_kv;
    bool bias = strcmp(s->arch, "qwen2") == 0;
    const float wstd = 0.02f;
    char name[64];
    int rc;
    p->t = calloc(MAX_TENSORS, sizeof *p->t);
    if (!p->t)
        return PORTA_E_NOMEM;
    rc = add_tensor(p, "token_embd.weight", porta_synth_tensor_type(s, ft, "token_embd", 0, E), E,
                    s->n_vocab, 0.0f, wstd);
    for (int il = 0; !rc && il < n_layer; il++) {
        static const char *const roles[] = { "attn_q", "attn_k", "attn_v", "attn_output",
                                             "ffn_gate", "ffn_up", "ffn_down" };
        const int64_t ne0[] = { E, E, E, Q, E, E, F }, ne1[] = { Q, KV, KV, E, F, F, E };
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", il);
        rc = add_tensor(p, name, PORTA_F32, E, 0, 1.0f, 0.05f);
        for (int r = 0; !rc && r < 7; r++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, roles[r]);
            rc = add_tensor(p, name, porta_synth_tensor_type(s, ft, roles[r], il, ne0[r]), ne0[r],
                            ne1[r], 0.0f, wstd);
            if (!rc && bias && r < 3) {
                snprintf(name, sizeof name, "blk.%d.%s.bias", il, roles[r]);
                rc = add_tensor(p, name, PORTA_F32, ne1[r], 0, 0.0f, 0.1f);
            }
            if (!rc && r == 3) {
                snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", il);
                rc = add_tensor(p, name, PORTA_F32, E, 0, 1.0f, 0.05f);
            }
        }
    }
    if (!rc)
        rc = add_tensor(p, "output_norm.weight", PORTA_F32, E, 0, 1.0f, 0.05f);
    if (!rc && !s->tied)
        rc = add_tensor(p, "output.weight", porta_synth_tensor_type(s, ft, "output", 0, E), E,
                        s->n_vocab, 0.0f, wstd);
    return rc;
}

/* ---- GGUF header encoding ---- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    uint64_t n_kv;                  /* key/values written */
    bool oom;
};

static void put(struct wbuf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(struct wbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct wbuf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

/* GGUF value type ids */
enum { G_U32 = 4, G_I32 = 5, G_F32 = 6, G_BOOL = 7, G_STR = 8, G_ARR = 9 };

static void kv_key(struct wbuf *b, const char *arch, const char *key, uint32_t type)
{
    char k[128];
    snprintf(k, sizeof k, "%s%s%s", arch ? arch : "", arch ? "." : "", key);
    put_str(b, k);
    b->n_kv++;
    put_u32(b, type);
}
static void kv_u32(struct wbuf *b, const char *arch, const char *key, uint32_t v)
{
    kv_key(b, arch, key, G_U32);
    put_u32(b, v);
}
static void kv_f32(struct wbuf *b, const char *arch, const char *key, float v)
{
    kv_key(b, arch, key, G_F32);
    put(b, &v, 4);
}
static void kv_bool(struct wbuf *b, const char *key, bool v)
{
    uint8_t x = v;
    kv_key(b, NULL, key, G_BOOL);
    put(b, &x, 1);
}
static void kv_str(struct wbuf *b, const char *key, const char *v)
{
    kv_key(b, NULL, key, G_STR);
    put_str(b, v);
}

/* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others for 256 + k */
static int byte_char(int byte, char out[4])
{
    int cp;
    if ((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174) {
        cp = byte;
    } else {
        int k = 0;
        for (int b = 0; b < byte; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174))
                k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* A byte-level vocabulary: the 256 bytes, a few merges, ChatML specials, padding to n_vocab. */
static const char *const g_merges[][2] = {
    { "\xc4\xa0", "t" }, { "h", "e" }, { "i", "n" }, { "\xc4\xa0", "a" }, { "e", "r" },
    { "\xc4\xa0t", "he" },
};
static const char *const g_specials[] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>" };
#define N_MERGES (int)(sizeof g_merges / sizeof g_merges[0])
#define N_SPECIALS (int)(sizeof g_specials / sizeof g_specials[0])

static void put_vocab(struct wbuf *b, int n_vocab)
{
    char t[32];
    kv_key(b, NULL, "tokenizer.ggml.tokens", G_ARR);
    put_u32(b, G_STR);
    put_u64(b, (uint64_t)n_vocab);
    for (int i = 0; i < n_vocab; i++) {
        if (i < 256) {
            int n = byte_char(i, t);
            t[n] = 0;
        } else if (i < 256 + N_MERGES) {
            snprintf(t, sizeof t, "%s%s", g_merges[i - 256][0], g_merges[i - 256][1]);
        } else if (i < 256 + N_MERGES + N_SPECIALS) {
            snprintf(t, sizeof t, "%s", g_specials[i - 256 - N_MERGES]);
        } else {
            snprintf(t, sizeof t, "[PAD%d]", i);
        }
        put_str(b, t);
    }
    kv_key(b, NULL, "tokenizer.ggml.token_type", G_ARR);
    put_u32(b, G_I32);
    put_u64(b, (uint64_t)n_vocab);
    for (int i = 0; i < n_vocab; i++)
        put_u32(b, i < 256 + N_MERGES ? 1u : i < 256 + N_MERGES + N_SPECIALS ? 3u : 5u);
    kv_key(b, NULL, "tokenizer.ggml.merges", G_ARR);
    put_u32(b, G_STR);
    put_u64(b, N_MERGES);
    for (int i = 0; i < N_MERGES; i++) {
        snprintf(t, sizeof t, "%s %s", g_merges[i][0], g_merges[i][1]);
        put_str(b, t);
    }
}

/* The file up to the tensor data: header, key/values, tensor infos, padding. */
static int make_header(const struct porta_synth_shape *s, enum porta_synth_ftype ft, int n_layer,
                       const struct plan *p, struct wbuf *b)
{
    const char *a = s->arch;
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, (uint64_t)p->n);
    put_u64(b, 0);                  /* key/value count, patched below */
    kv_str(b, "general.architecture", a);
    char nm[160];
    snprintf(nm, sizeof nm, "porta synth %s %s", s->name, g_ftypes[ft].name);
    kv_str(b, "general.name", nm);
    kv_u32(b, NULL, "general.file_type", g_ftypes[ft].llama_ftype);
    kv_u32(b, NULL, "general.alignment", ALIGNMENT);
    kv_u32(b, a, "context_length", (uint32_t)s->n_ctx_train);
    kv_u32(b, a, "embedding_length", (uint32_t)s->n_embd);
    kv_u32(b, a, "block_count", (uint32_t)n_layer);
    kv_u32(b, a, "feed_forward_length", (uint32_t)s->n_ff);
    kv_u32(b, a, "attention.head_count", (uint32_t)s->n_head);
    kv_u32(b, a, "attention.head_count_kv", (uint32_t)s->n_head_kv);
    kv_f32(b, a, "rope.freq_base", s->rope_base);
    kv_f32(b, a, "attention.layer_norm_rms_epsilon", s->rms_eps);
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_str(b, "tokenizer.ggml.pre", strcmp(a, "qwen2") == 0 ? "qwen2" : "smollm");
    put_vocab(b, s->n_vocab);                                   /* 3 keys */
    uint32_t eos = 256 + N_MERGES + 2;                           /* <|im_end|> */
    kv_u32(b, NULL, "tokenizer.ggml.bos_token_id", 256 + N_MERGES);
    kv_u32(b, NULL, "tokenizer.ggml.eos_token_id", eos);
    kv_bool(b, "tokenizer.ggml.add_bos_token", false);
    kv_str(b, "tokenizer.chat_template",
           "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
           "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
           "%}{{ '<|im_start|>assistant\\n' }}{% endif %}");
    for (int i = 0; i < p->n; i++) {
        const struct stensor *t = &p->t[i];
        put_str(b, t->name);
        put_u32(b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put_u64(b, t->ne[d]);
        put_u32(b, (uint32_t)t->type);
        put_u64(b, t->offset);
    }
    if (!b->oom)
        memcpy(b->p + 16, &b->n_kv, 8);
    static const uint8_t zeros[ALIGNMENT];
    put(b, zeros, (ALIGNMENT - b->len % ALIGNMENT) % ALIGNMENT);
    return b->oom ? PORTA_E_NOMEM : 0;
}

/* ---- tensor data, made on worker threads ---- */

struct job {
    const struct stensor *t;
    uint64_t seed;                  /* of this tensor */
    uint8_t *out;                   /* rows [r0, r0 + n) of the tensor */
    int64_t r0, n;
    const uint8_t *pool;            /* NULL: independent rows */
    int64_t n_pool;
    int rc;
};

struct worker {
    pthread_t th;
    struct job *j;
    int ith, nth;
    float *row;                     /* ne[0] floats */
};

static uint64_t row_seed(uint64_t tseed, int64_t r)
{
    uint64_t s = tseed ^ ((uint64_t)r * 0xD1B54A32D192ED03ull);
    return splitmix(&s);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct job *j = w->j;
    const struct stensor *t = j->t;
    int64_t per = (j->n + w->nth - 1) / w->nth, lo = w->ith * per;
    int64_t hi = lo + per < j->n ? lo + per : j->n;
    for (int64_t i = lo; i < hi; i++) {
        int64_t r = j->r0 + i;
        uint8_t *dst = j->out + (size_t)i * t->row_bytes;
        if (j->pool) {
            uint64_t s = j->seed ^ (uint64_t)r;
            memcpy(dst, j->pool + (splitmix(&s) % (uint64_t)j->n_pool) * t->row_bytes,
                   t->row_bytes);
            continue;
        }
        fill_row(w->row, (int64_t)t->ne[0], row_seed(j->seed, r), t->mean, t->std);
        if (porta_quantize_row(t->type, w->row, dst, (int64_t)t->ne[0]))
            j->rc = PORTA_E_INVAL;
    }
    return NULL;
}

/* Runs the job on nth threads (the caller is one of them). */
static int run_job(struct worker *ws, int nth, struct job *j)
{
    int started = 1;
    for (int i = 0; i < nth; i++) {
        ws[i].j = j;
        ws[i].ith = i;
        ws[i].nth = nth;
    }
    for (int i = 1; i < nth; i++, started++)
        if (pthread_create(&ws[i].th, NULL, work, &ws[i]))
            break;
    for (int i = started; i < nth; i++) {   /* threads that did not start: done here */
        ws[i].j = j;
        work(&ws[i]);
    }
    work(&ws[0]);
    for (int i = 1; i < started; i++)
        pthread_join(ws[i].th, NULL);
    return j->rc;
}

static int write_all(FILE *f, const void *p, size_t n, const char *path)
{
    if (fwrite(p, 1, n, f) != n) {
        porta_err("%s: write failed: %s", path, strerror(errno));
        return PORTA_E_IO;
    }
    return 0;
}

static int check_shape(const struct porta_synth_shape *s, int n_layer)
{
    if (s->n_embd <= 0 || s->n_head <= 0 || s->n_head_kv <= 0 || s->n_ff <= 0 || n_layer <= 0 ||
        s->n_vocab < 256 + N_MERGES + N_SPECIALS || s->n_embd % s->n_head ||
        s->n_head % s->n_head_kv || (s->n_embd / s->n_head) % 2) {
        porta_err("synth: shape %s is not a valid model (n_embd %d, n_head %d, n_head_kv %d, "
                  "n_ff %d, n_vocab %d >= %d, n_layer %d)", s->name, s->n_embd, s->n_head,
                  s->n_head_kv, s->n_ff, s->n_vocab, 256 + N_MERGES + N_SPECIALS, n_layer);
        return PORTA_E_INVAL;
    }
    return 0;
}

int porta_synth_write(const char *path, const struct porta_synth_shape *s,
                      enum porta_synth_ftype ft, const struct porta_synth_opts *opts)
{
    struct porta_synth_opts o = opts ? *opts : (struct porta_synth_opts){ 0 };
    struct plan p = { 0 };
    struct wbuf hdr = { 0 };
    struct worker *ws = NULL;
    uint8_t *chunk = NULL, *pool = NULL;
    FILE *f = NULL;
    char tmp[4096] = "";
    int rc, nth = 0;
    if (!path || !s || ft < 0 || ft >= PORTA_SYNTH_FTYPE_COUNT)
        return PORTA_E_INVAL;
    int n_layer = o.n_layer > 0 ? o.n_layer : s->n_layer;
    if ((rc = check_shape(s, n_layer)) || (rc = make_plan(s, ft, n_layer, &p)) ||
        (rc = make_header(s, ft, n_layer, &p, &hdr)))
        goto done;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    nth = o.threads > 0 ? o.threads : (ncpu > 0 ? (int)ncpu : 1);
    size_t max_row = 0;
    for (int i = 0; i < p.n; i++)
        max_row = p.t[i].ne[0] > max_row ? (size_t)p.t[i].ne[0] : max_row;
    rc = PORTA_E_NOMEM;
    ws = calloc((size_t)nth, sizeof *ws);
    chunk = malloc(CHUNK_BYTES);
    if (!ws || !chunk)
        goto done;
    for (int i = 0; i < nth; i++)
        if (!(ws[i].row = malloc(max_row * sizeof(float))))
            goto done;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!(f = fopen(tmp, "wb"))) {
        porta_err("%s: cannot create: %s", tmp, strerror(errno));
        rc = PORTA_E_IO;
        goto done;
    }
    if ((rc = write_all(f, hdr.p, hdr.len, tmp)))
        goto done;
    uint64_t written = 0;
    for (int i = 0; i < p.n; i++) {
        const struct stensor *t = &p.t[i];
        uint64_t tseed = o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xC2B2AE3D27D4EB4Full + 1;
        int64_t rows = (int64_t)t->ne[1];
        int64_t per_chunk = (int64_t)(CHUNK_BYTES / t->row_bytes);
        struct job pj = { .t = t, .seed = tseed };
        if (o.pool_rows > 0 && rows > o.pool_rows) {
            /* the pool: o.pool_rows independent rows, quantized once */
            free(pool);
            rc = PORTA_E_NOMEM;
            if (!(pool = malloc(t->row_bytes * (size_t)o.pool_rows)))
                goto done;
            struct job jp = { .t = t, .seed = tseed, .out = pool, .r0 = 0, .n = o.pool_rows };
            if ((rc = run_job(ws, nth, &jp)))
                goto done;
            pj.pool = pool;
            pj.n_pool = o.pool_rows;
        }
        for (int64_t r0 = 0; r0 < rows; r0 += per_chunk) {
            pj.out = chunk;
            pj.r0 = r0;
            pj.n = rows - r0 < per_chunk ? rows - r0 : per_chunk;
            if ((rc = run_job(ws, nth, &pj)) ||
                (rc = write_all(f, chunk, (size_t)pj.n * t->row_bytes, tmp)))
                goto done;
            written += (uint64_t)pj.n * t->row_bytes;
            if (o.progress)
                o.progress(o.user, (double)written / (double)p.data_bytes);
        }
        static const uint8_t zeros[ALIGNMENT];
        size_t pad = (ALIGNMENT - t->nbytes % ALIGNMENT) % ALIGNMENT;
        if ((rc = write_all(f, zeros, pad, tmp)))
            goto done;
        written += pad;
    }
    rc = fclose(f) ? PORTA_E_IO : 0;
    f = NULL;
    if (rc) {
        porta_err("%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path)) {
        porta_err("%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        rc = PORTA_E_IO;
    }
done:
    if (f)
        fclose(f);
    if (rc && tmp[0])
        unlink(tmp);
    for (int i = 0; ws && i < nth; i++)
        free(ws[i].row);
    free(ws);
    free(chunk);
    free(pool);
    free(hdr.p);
    free(p.t);
    return rc;
}
