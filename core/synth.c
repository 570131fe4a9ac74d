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

/* a dense shape: name, arch, n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, tied, rope,
 * eps, ctx */
#define DENSE(nm, ar, e, l, h, hk, f, v, ti, rb, eps, ctx)                                       \
    { .name = nm, .arch = ar, .n_embd = e, .n_layer = l, .n_head = h, .n_head_kv = hk,           \
      .n_ff = f, .n_vocab = v, .tied = ti, .rope_base = rb, .rms_eps = eps, .n_ctx_train = ctx }

static const struct porta_synth_shape g_shapes[] = {
    DENSE("qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, true, 1000000.0f, 1e-6f, 32768),
    DENSE("r1-distill-qwen-1.5b", "qwen2", 1536, 28, 12, 2, 8960, 151936, false, 10000.0f, 1e-6f,
      131072),
    DENSE("r1-distill-qwen-7b", "qwen2", 3584, 28, 28, 4, 18944, 152064, false, 10000.0f, 1e-6f,
      131072),
    /* the shape of models/smollm2-135m-instruct-q4_1.gguf: a real file to compare with */
    DENSE("smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, true, 100000.0f, 1e-5f, 8192),
    /* small enough for tests; every row a multiple of 256 so every K type applies */
    DENSE("tiny", "qwen2", 256, 2, 4, 2, 512, 512, false, 10000.0f, 1e-6f, 4096),
    /* DeepSeek-V2-Lite: MLA without q compression, 1 dense + 26 MoE layers of 64 routed experts
     * (top 6) + 2 shared, YaRN x40 */
    { .name = "deepseek-v2-lite", .arch = "deepseek2", .n_embd = 2048, .n_layer = 27,
      .n_head = 16, .n_head_kv = 16, .n_ff = 10944, .n_vocab = 102400, .rope_base = 10000.0f,
      .rms_eps = 1e-6f, .n_ctx_train = 163840, .n_expert = 64, .n_expert_used = 6,
      .n_ff_exp = 1408, .n_ff_shexp = 2 * 1408, .n_expert_shared = 2, .n_layer_dense_lead = 1,
      .kv_lora_rank = 512, .n_nope = 128, .n_rope = 64, .head_dim_v = 128, .yarn_factor = 40.0f,
      .yarn_orig_ctx = 4096, .yarn_log_mul = 0.0707f },
    /* Qwen1.5-MoE-A2.7B: 60 experts (top 4) + one sigmoid-gated shared expert */
    { .name = "qwen1.5-moe-a2.7b", .arch = "qwen2moe", .n_embd = 2048, .n_layer = 24,
      .n_head = 16, .n_head_kv = 16, .n_ff = 5632, .n_vocab = 151936, .rope_base = 1000000.0f,
      .rms_eps = 1e-6f, .n_ctx_train = 8192, .n_expert = 60, .n_expert_used = 4,
      .n_ff_exp = 1408, .n_ff_shexp = 5632 },
    /* test-sized MoE shapes (rows multiples of 256 where the real ones are) */
    { .name = "tiny-moe", .arch = "qwen2moe", .n_embd = 256, .n_layer = 2, .n_head = 4,
      .n_head_kv = 2, .n_ff = 512, .n_vocab = 512, .rope_base = 10000.0f, .rms_eps = 1e-6f,
      .n_ctx_train = 4096, .n_expert = 16, .n_expert_used = 4, .n_ff_exp = 256,
      .n_ff_shexp = 512 },
    { .name = "tiny-deepseek2", .arch = "deepseek2", .n_embd = 256, .n_layer = 2, .n_head = 4,
      .n_head_kv = 4, .n_ff = 512, .n_vocab = 512, .rope_base = 10000.0f, .rms_eps = 1e-6f,
      .n_ctx_train = 16384, .n_expert = 16, .n_expert_used = 4, .n_ff_exp = 256,
      .n_ff_shexp = 2 * 256, .n_expert_shared = 2, .n_layer_dense_lead = 1, .kv_lora_rank = 256,
      .n_nope = 64, .n_rope = 32, .head_dim_v = 64, .yarn_factor = 4.0f, .yarn_orig_ctx = 4096,
      .yarn_log_mul = 0.0707f },
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
    /* llama.cpp's attn_v-like category; its ffn_down counter runs over n_layer, the layer of an
     * expert or shared tensor taken from its name */
    bool v_like = strcmp(role, "attn_v") == 0 || strcmp(role, "attn_kv_b") == 0;
    bool down = strncmp(role, "ffn_down", 8) == 0;
    if (strcmp(role, "ffn_gate_inp") == 0)
        return PORTA_F32;
    if (is_output && !g_ftypes[ft].pure)
        t = PORTA_Q6_K;
    else if (ft == PORTA_SYNTH_Q4_K_M && (v_like || down) && more_bits(il, s->n_layer))
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
    uint64_t ne[3];                 /* ne[0]: row length; ne[2]: experts of a stack */
    float mean, std;
    uint64_t offset;                /* in the data section */
    size_t nbytes, row_bytes;
};

struct plan {
    struct stensor *t;
    int n;
    uint64_t data_bytes;
};

/* A tensor of shape [ne0] (ne1 0), [ne0, ne1] (ne2 0) or the expert stack [ne0, ne1, ne2]. */
static int add_tensor(struct plan *p, const char *name, enum porta_dtype type, int64_t ne0,
                      int64_t ne1, int64_t ne2, float mean, float std)
{
    if (p->n >= MAX_TENSORS)
        return PORTA_E_INVAL;
    struct stensor *t = &p->t[p->n];
    size_t rows;
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = ne2 ? 3 : ne1 ? 2 : 1;
    t->ne[0] = (uint64_t)ne0;
    t->ne[1] = (uint64_t)(ne1 ? ne1 : 1);
    t->ne[2] = (uint64_t)(ne2 ? ne2 : 1);
    t->mean = mean;
    t->std = std;
    t->row_bytes = porta_row_size(type, ne0);
    if (!t->row_bytes || !porta_mul_ok(t->ne[1], t->ne[2], &rows) ||
        !porta_mul_ok(t->row_bytes, rows, &t->nbytes)) {
        porta_err("synth: tensor %s: %s rows of %lld elements are not possible", name,
                  porta_dtype_name(type), (long long)ne0);
        return PORTA_E_INVAL;
    }
    t->offset = p->data_bytes;
    p->data_bytes += t->nbytes + (ALIGNMENT - t->nbytes % ALIGNMENT) % ALIGNMENT;
    p->n++;
    return 0;
}

/* One layer tensor "blk.<il>.<role>.weight" (or .bias), typed by the mix when it is a matrix */
struct ltensor {
    const char *role, *suffix;      /* suffix: "weight" | "bias" */
    int64_t ne0, ne1, ne2;
    float mean, std;
};

static int add_layer_tensors(struct plan *p, const struct porta_synth_shape *s,
                             enum porta_synth_ftype ft, int il, const struct ltensor *lt, int n)
{
    char name[64];
    int rc = 0;
    for (int i = 0; !rc && i < n; i++) {
        if (!lt[i].role)
            continue;
        enum porta_dtype type = PORTA_F32;
        if (lt[i].ne1 && strcmp(lt[i].suffix, "weight") == 0)
            type = porta_synth_tensor_type(s, ft, lt[i].role, il, lt[i].ne0);
        snprintf(name, sizeof name, "blk.%d.%s.%s", il, lt[i].role, lt[i].suffix);
        rc = add_tensor(p, name, type, lt[i].ne0, lt[i].ne1, lt[i].ne2, lt[i].mean, lt[i].std);
    }
    return rc;
}

#define W_STD 0.02f
#define NORM(role, n) { role, "weight", n, 0, 0, 1.0f, 0.05f }
#define MAT(role, ne0, ne1) { role, "weight", ne0, ne1, 0, 0.0f, W_STD }

/* llama / qwen2 / qwen2moe attention: q, k, v (+ qwen biases), output */
static int add_attn(struct plan *p, const struct porta_synth_shape *s, enum porta_synth_ftype ft,
                    int il)
{
    int64_t E = s->n_embd, hd = s->n_embd / s->n_head;
    int64_t Q = hd * s->n_head, KV = hd * s->n_head_kv;
    bool bias = strcmp(s->arch, "qwen2") == 0 || strcmp(s->arch, "qwen2moe") == 0;
    const struct ltensor lt[] = {
        NORM("attn_norm", E), MAT("attn_q", E, Q),
        { bias ? "attn_q" : NULL, "bias", Q, 0, 0, 0.0f, 0.1f }, MAT("attn_k", E, KV),
        { bias ? "attn_k" : NULL, "bias", KV, 0, 0, 0.0f, 0.1f }, MAT("attn_v", E, KV),
        { bias ? "attn_v" : NULL, "bias", KV, 0, 0, 0.0f, 0.1f }, MAT("attn_output", Q, E),
    };
    return add_layer_tensors(p, s, ft, il, lt, (int)(sizeof lt / sizeof lt[0]));
}

/* deepseek2 multi-head latent attention, as llama.cpp's converter writes it (attn_kv_b whole) */
static int add_mla(struct plan *p, const struct porta_synth_shape *s, enum porta_synth_ftype ft,
                   int il)
{
    int64_t E = s->n_embd, H = s->n_head, D = s->n_nope + s->n_rope, QL = s->q_lora_rank,
            lat = s->kv_lora_rank;
    const struct ltensor lt[] = {
        NORM("attn_norm", E),
        { QL ? NULL : "attn_q", "weight", E, H * D, 0, 0.0f, W_STD },
        { QL ? "attn_q_a" : NULL, "weight", E, QL, 0, 0.0f, W_STD },
        { QL ? "attn_q_a_norm" : NULL, "weight", QL, 0, 0, 1.0f, 0.05f },
        { QL ? "attn_q_b" : NULL, "weight", QL, H * D, 0, 0.0f, W_STD },
        MAT("attn_kv_a_mqa", E, lat + s->n_rope), NORM("attn_kv_a_norm", lat),
        MAT("attn_kv_b", lat, H * (s->n_nope + s->head_dim_v)),
        MAT("attn_output", H * s->head_dim_v, E),
    };
    return add_layer_tensors(p, s, ft, il, lt, (int)(sizeof lt / sizeof lt[0]));
}

/* the FFN: dense SwiGLU, or router + expert stacks + shared expert(s) */
static int add_ffn(struct plan *p, const struct porta_synth_shape *s, enum porta_synth_ftype ft,
                   int il)
{
    int64_t E = s->n_embd, F = s->n_ff, X = s->n_expert, FE = s->n_ff_exp, FS = s->n_ff_shexp;
    if (X == 0 || il < s->n_layer_dense_lead) {
        const struct ltensor lt[] = { NORM("ffn_norm", E), MAT("ffn_gate", E, F),
                                      MAT("ffn_up", E, F), MAT("ffn_down", F, E) };
        return add_layer_tensors(p, s, ft, il, lt, 4);
    }
    bool gated = strcmp(s->arch, "qwen2moe") == 0;
    const struct ltensor lt[] = {
        /* router logits of std ~4: a trained router's decisive top-k (and no near-ties that
         * float rounding could flip between kernel sets) */
        NORM("ffn_norm", E), { "ffn_gate_inp", "weight", E, X, 0, 0.0f, 4.0f / sqrtf((float)E) },
        { "ffn_gate_exps", "weight", E, FE, X, 0.0f, W_STD },
        { "ffn_up_exps", "weight", E, FE, X, 0.0f, W_STD },
        { "ffn_down_exps", "weight", FE, E, X, 0.0f, W_STD },
        /* Qwen2-MoE's shared-expert gate is a vector: 1-D, F32 */
        { FS && gated ? "ffn_gate_inp_shexp" : NULL, "weight", E, 0, 0, 0.0f, W_STD },
        { FS ? "ffn_gate_shexp" : NULL, "weight", E, FS, 0, 0.0f, W_STD },
        { FS ? "ffn_up_shexp" : NULL, "weight", E, FS, 0, 0.0f, W_STD },
        { FS ? "ffn_down_shexp" : NULL, "weight", FS, E, 0, 0.0f, W_STD },
    };
    return add_layer_tensors(p, s, ft, il, lt, (int)(sizeof lt / sizeof lt[0]));
}

static int make_plan(const struct porta_synth_shape *s, enum porta_synth_ftype ft, int n_layer,
                     struct plan *p)
{
    int64_t E = s->n_embd;
    bool mla = strcmp(s->arch, "deepseek2") == 0;
    int rc;
    p->t = calloc(MAX_TENSORS, sizeof *p->t);
    if (!p->t)
        return PORTA_E_NOMEM;
    rc = add_tensor(p, "token_embd.weight", porta_synth_tensor_type(s, ft, "token_embd", 0, E), E,
                    s->n_vocab, 0, 0.0f, W_STD);
    for (int il = 0; !rc && il < n_layer; il++)
        if (!(rc = mla ? add_mla(p, s, ft, il) : add_attn(p, s, ft, il)))
            rc = add_ffn(p, s, ft, il);
    if (!rc)
        rc = add_tensor(p, "output_norm.weight", PORTA_F32, E, 0, 0, 1.0f, 0.05f);
    if (!rc && !s->tied)
        rc = add_tensor(p, "output.weight", porta_synth_tensor_type(s, ft, "output", 0, E), E,
                        s->n_vocab, 0, 0.0f, W_STD);
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
static void kv_bool(struct wbuf *b, const char *arch, const char *key, bool v)
{
    uint8_t x = v;
    kv_key(b, arch, key, G_BOOL);
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

/* The mixture-of-experts, MLA and YaRN keys, with llama.cpp's names (as core/model.c reads
 * them). */
static void put_moe_mla(struct wbuf *b, const struct porta_synth_shape *s, int n_layer)
{
    const char *a = s->arch;
    char key[96];
    if (s->n_expert) {
        kv_u32(b, a, "expert_count", (uint32_t)s->n_expert);
        kv_u32(b, a, "expert_used_count", (uint32_t)s->n_expert_used);
        kv_u32(b, a, "expert_feed_forward_length", (uint32_t)s->n_ff_exp);
    }
    if (s->n_expert && strcmp(a, "qwen2moe") == 0)
        kv_u32(b, a, "expert_shared_feed_forward_length", (uint32_t)s->n_ff_shexp);
    if (strcmp(a, "deepseek2") == 0) {
        int lead = s->n_layer_dense_lead < n_layer ? s->n_layer_dense_lead : n_layer;
        kv_u32(b, a, "leading_dense_block_count", (uint32_t)lead);
        kv_u32(b, a, "expert_shared_count", (uint32_t)s->n_expert_shared);
        kv_f32(b, a, "expert_weights_scale", 1.0f);
        kv_bool(b, a, "expert_weights_norm", false);
        kv_u32(b, a, "expert_gating_func", 1);                  /* softmax */
        if (s->q_lora_rank)
            kv_u32(b, a, "attention.q_lora_rank", (uint32_t)s->q_lora_rank);
        kv_u32(b, a, "attention.kv_lora_rank", (uint32_t)s->kv_lora_rank);
        kv_u32(b, a, "attention.key_length", (uint32_t)(s->n_nope + s->n_rope));
        kv_u32(b, a, "attention.value_length", (uint32_t)s->head_dim_v);
        kv_u32(b, a, "rope.dimension_count", (uint32_t)s->n_rope);
    }
    if (s->yarn_factor > 0) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        kv_str(b, key, "yarn");
        kv_f32(b, a, "rope.scaling.factor", s->yarn_factor);
        kv_u32(b, a, "rope.scaling.original_context_length", (uint32_t)s->yarn_orig_ctx);
        kv_f32(b, a, "rope.scaling.yarn_log_multiplier", s->yarn_log_mul);
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
    put_moe_mla(b, s, n_layer);
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_str(b, "tokenizer.ggml.pre", strncmp(a, "qwen2", 5) == 0 ? "qwen2"
                                    : strcmp(a, "deepseek2") == 0 ? "deepseek-llm" : "smollm");
    put_vocab(b, s->n_vocab);                                   /* 3 keys */
    uint32_t eos = 256 + N_MERGES + 2;                           /* <|im_end|> */
    kv_u32(b, NULL, "tokenizer.ggml.bos_token_id", 256 + N_MERGES);
    kv_u32(b, NULL, "tokenizer.ggml.eos_token_id", eos);
    kv_bool(b, NULL, "tokenizer.ggml.add_bos_token", false);
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
    bool moe_arch = strcmp(s->arch, "qwen2moe") == 0 || strcmp(s->arch, "deepseek2") == 0;
    bool mla = strcmp(s->arch, "deepseek2") == 0;
    if ((moe_arch && (s->n_expert <= 0 || s->n_ff_exp <= 0)) || s->n_expert < 0 ||
        (s->n_expert && (s->n_expert_used < 1 || s->n_expert_used > s->n_expert ||
                         s->n_ff_exp <= 0 || s->n_ff_shexp < 0)) ||
        s->n_layer_dense_lead < 0 ||
        (mla && (s->kv_lora_rank <= 0 || s->n_nope <= 0 || s->n_rope <= 0 || s->n_rope % 2 ||
                 s->head_dim_v <= 0 || s->q_lora_rank < 0 ||
                 s->n_expert_shared * s->n_ff_exp != s->n_ff_shexp)) ||
        (s->yarn_factor > 0 && (s->yarn_factor < 1 || s->yarn_orig_ctx <= 0))) {
        porta_err("synth: shape %s: expert or latent-attention sizes do not fit together "
                  "(n_expert %d, n_expert_used %d, n_ff_exp %d, n_ff_shexp %d, kv_lora_rank %d)",
                  s->name, s->n_expert, s->n_expert_used, s->n_ff_exp, s->n_ff_shexp,
                  s->kv_lora_rank);
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
        int64_t rows = (int64_t)(t->ne[1] * t->ne[2]);
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
