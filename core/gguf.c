/* gguf.c - GGUF v2/v3 reader (over mmap or a caller's buffer) and an in-memory GGUF v3 writer.
 * The reader trusts nothing in the file: every count, length, type id and offset is checked
 * against the bytes left, with overflow-checked arithmetic, before it is allocated or read. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "porta reads GGUF tensor data in place and needs a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_KEY_LEN 65535
#define GGUF_HEADER_BYTES 24                        /* magic, version, n_tensors, n_kv */
#define GGUF_KV_MIN_BYTES (8 + 1 + 4 + 1)           /* key len, 1-byte key, type, u8 value */
#define GGUF_TENSOR_MIN_BYTES (8 + 1 + 4 + 8 + 4 + 8) /* name, n_dims, one ne, type, offset */
#define GGUF_NAME_MAX (sizeof(((struct porta_gguf_tensor *)0)->name) - 1)

/* ---- tensor block sizes: a private table so the container format does not depend on quant.c ---- */
struct blk_info {
    int64_t blck;       /* elements per block; 0 marks an id porta does not load */
    size_t size;        /* bytes per block */
    const char *name;
};

static const struct blk_info blk_table[PORTA_DTYPE_COUNT] = {
    [PORTA_F32] = { 1, 4, "F32" },        [PORTA_F16] = { 1, 2, "F16" },
    [PORTA_BF16] = { 1, 2, "BF16" },      [PORTA_Q4_0] = { 32, 18, "Q4_0" },
    [PORTA_Q4_1] = { 32, 20, "Q4_1" },    [PORTA_Q5_0] = { 32, 22, "Q5_0" },
    [PORTA_Q5_1] = { 32, 24, "Q5_1" },    [PORTA_Q8_0] = { 32, 34, "Q8_0" },
    [PORTA_Q8_1] = { 32, 36, "Q8_1" },    [PORTA_Q2_K] = { 256, 84, "Q2_K" },
    [PORTA_Q3_K] = { 256, 110, "Q3_K" },  [PORTA_Q4_K] = { 256, 144, "Q4_K" },
    [PORTA_Q5_K] = { 256, 176, "Q5_K" },  [PORTA_Q6_K] = { 256, 210, "Q6_K" },
    [PORTA_Q8_K] = { 256, 292, "Q8_K" },  [PORTA_I8] = { 1, 1, "I8" },
    [PORTA_I16] = { 1, 2, "I16" },        [PORTA_I32] = { 1, 4, "I32" },
    /* ggml ids porta does not load: named for the message only */
    [4] = { 0, 0, "Q4_2, removed" },     [5] = { 0, 0, "Q4_3 (removed)" },
    [16] = { 0, 0, "IQ2_XXS" },           [17] = { 0, 0, "IQ2_XS" },
    [18] = { 0, 0, "IQ3_XXS" },           [19] = { 0, 0, "IQ1_S" },
    [20] = { 0, 0, "IQ4_NL" },            [21] = { 0, 0, "IQ3_S" },
    [22] = { 0, 0, "IQ2_S" },             [23] = { 0, 0, "IQ4_XS" },
    [27] = { 0, 0, "I64" },               [28] = { 0, 0, "F64" },
    [29] = { 0, 0, "IQ1_M" },             [31] = { 0, 0, "Q4_0_4_4, removed" },
    [32] = { 0, 0, "Q4_0_4_8, removed" }, [33] = { 0, 0, "Q4_0_8_8 (removed)" },
    [34] = { 0, 0, "TQ1_0" },             [35] = { 0, 0, "TQ2_0" },
    [36] = { 0, 0, "IQ4_NL_4_4, removed" }, [37] = { 0, 0, "IQ4_NL_4_8 (removed)" },
    [38] = { 0, 0, "IQ4_NL_8_8, removed" }, [39] = { 0, 0, "MXFP4" },
};

static const struct blk_info *blk_of(uint64_t type)
{
    if (type >= PORTA_DTYPE_COUNT || blk_table[type].blck == 0)
        return NULL;
    return &blk_table[type];
}

/* Bytes of a tensor. Returns 0, 1 when ne[0] is not a multiple of the block, 2 on overflow. */
static int tensor_nbytes(const struct blk_info *bi, int n_dims, const uint64_t *ne, size_t *out)
{
    uint64_t n_elem = 1, rows = 1;
    if (ne[0] % (uint64_t)bi->blck)
        return 1;
    for (int j = 0; j < n_dims; j++) {
        if (__builtin_mul_overflow(n_elem, ne[j], &n_elem) || n_elem > INT64_MAX)
            return 2;
        if (j > 0)
            rows *= ne[j];  /* rows <= n_elem: cannot overflow */
    }
    uint64_t row = ne[0] / (uint64_t)bi->blck, bytes;
    if (__builtin_mul_overflow(row, (uint64_t)bi->size, &row) ||
        __builtin_mul_overflow(row, rows, &bytes) || bytes > SIZE_MAX)
        return 2;
    *out = (size_t)bytes;
    return 0;
}

/* ---- metadata value types ---- */
static const size_t val_size[PORTA_GGUF_TYPE_COUNT] = {
    [PORTA_GGUF_UINT8] = 1, [PORTA_GGUF_INT8] = 1, [PORTA_GGUF_UINT16] = 2,
    [PORTA_GGUF_INT16] = 2, [PORTA_GGUF_UINT32] = 4, [PORTA_GGUF_INT32] = 4,
    [PORTA_GGUF_FLOAT32] = 4, [PORTA_GGUF_BOOL] = 1, [PORTA_GGUF_UINT64] = 8,
    [PORTA_GGUF_INT64] = 8, [PORTA_GGUF_FLOAT64] = 8,
};

static const char *const val_name[PORTA_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
    "string", "array", "uint64", "int64", "float64",
};

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* A printable copy of a file string for messages: at most 80 bytes, odd bytes as '?'. */
static const char *shown(struct porta_str s, char *buf, size_t cap)
{
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    if (n > 80)
        n = 80;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    buf[n] = 0;
    if (n < s.len && n >= 3)
        memcpy(buf + n - 3, "...", 3);
    return buf;
}

bool porta_str_eq(struct porta_str s, const char *c)
{
    if (!c)
        return false;
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

static int str_cmp(const char *a, uint64_t an, const char *b, uint64_t bn)
{
    size_t n = (size_t)(an < bn ? an : bn);
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

/* ---- reader ---- */

/* The public object plus sorted indexes for lookups; `pub` first so close() can cast back. */
struct gguf_impl {
    struct porta_gguf pub;
    struct porta_gguf_kv **kv_sorted;          /* by key */
    struct porta_gguf_tensor **t_sorted;       /* by name */
};

struct parser {
    struct porta_gguf *g;
    size_t off;                                 /* cursor into g->base */
};

static size_t left(const struct parser *ps) { return ps->g->size - ps->off; }

/* Takes n bytes at the cursor; ctx/field name what they are in the message. */
static int rd_bytes(struct parser *ps, uint64_t n, const char *ctx, const char *field,
                    const uint8_t **out)
{
    if (n > left(ps)) {
        porta_err("%s: %s: %s (%llu bytes at offset %zu) runs past end of file (size %zu)",
                  ps->g->path, ctx, field, ull(n), ps->off, ps->g->size);
        return PORTA_E_FORMAT;
    }
    *out = ps->g->base + ps->off;
    ps->off += (size_t)n;
    return 0;
}

static int rd_u32(struct parser *ps, uint32_t *v, const char *ctx, const char *field)
{
    const uint8_t *p;
    int rc = rd_bytes(ps, 4, ctx, field, &p);
    if (rc == 0)
        *v = rd32(p);
    return rc;
}

static int rd_u64(struct parser *ps, uint64_t *v, const char *ctx, const char *field)
{
    const uint8_t *p;
    int rc = rd_bytes(ps, 8, ctx, field, &p);
    if (rc == 0)
        *v = rd64(p);
    return rc;
}

static int parse_header(struct parser *ps)
{
    struct porta_gguf *g = ps->g;
    const char *ctx = "header";
    uint64_t n_tensors, n_kv;
    int rc;

    if (g->size == 0) {
        porta_err("%s: empty file, not GGUF (bad magic)", g->path);
        return PORTA_E_FORMAT;
    }
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0) {
        porta_err("%s: bad magic: not a GGUF file (size %zu)", g->path, g->size);
        return PORTA_E_FORMAT;
    }
    ps->off = 4;
    if ((rc = rd_u32(ps, &g->version, ctx, "version")))
        return rc;
    if ((g->version & 0xffff) == 0 && g->version != 0) {
        porta_err("%s: version field %#x: a big-endian GGUF file, not supported", g->path,
                  g->version);
        return PORTA_E_UNSUPPORTED;
    }
    if (g->version != 2 && g->version != 3) {
        porta_err("%s: GGUF version %u is not supported (only 2 and 3)", g->path, g->version);
        return g->version == 0 ? PORTA_E_FORMAT : PORTA_E_UNSUPPORTED;
    }
    if ((rc = rd_u64(ps, &n_tensors, ctx, "n_tensors")) || (rc = rd_u64(ps, &n_kv, ctx, "n_kv")))
        return rc;
    /* the smallest encoding of each entry bounds the counts before anything is allocated */
    if (n_kv > left(ps) / GGUF_KV_MIN_BYTES) {
        porta_err("%s: n_kv = %llu: that many key/values cannot fit in the %zu bytes left",
                  g->path, ull(n_kv), left(ps));
        return PORTA_E_FORMAT;
    }
    if (n_tensors > (left(ps) - n_kv * GGUF_KV_MIN_BYTES) / GGUF_TENSOR_MIN_BYTES) {
        porta_err("%s: n_tensors = %llu: that many tensor infos cannot fit in the %zu bytes left",
                  g->path, ull(n_tensors), left(ps));
        return PORTA_E_FORMAT;
    }
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    return 0;
}

/* Array value: element type, count, then the elements; string arrays get kv->strs. */
static int parse_arr(struct parser *ps, struct porta_gguf_kv *kv, const char *ctx)
{
    const char *path = ps->g->path;
    uint32_t et;
    uint64_t n;
    int rc;

    if ((rc = rd_u32(ps, &et, ctx, "array element type")))
        return rc;
    if (et >= PORTA_GGUF_TYPE_COUNT) {
        porta_err("%s: %s: unknown array element type %u", path, ctx, et);
        return PORTA_E_FORMAT;
    }
    if (et == PORTA_GGUF_ARRAY) {
        porta_err("%s: %s: arrays of arrays (array element type %u) are not supported", path, ctx, et);
        return PORTA_E_UNSUPPORTED;
    }
    if ((rc = rd_u64(ps, &n, ctx, "array length")))
        return rc;
    kv->arr_type = (enum porta_gguf_type)et;
    kv->arr_n = n;
    kv->data = ps->g->base + ps->off;
    if (et != PORTA_GGUF_STRING) {
        if (n > left(ps) / val_size[et]) {
            porta_err("%s: %s: array of %llu %s needs more than the %zu bytes left", path, ctx,
                      ull(n), val_name[et], left(ps));
            return PORTA_E_FORMAT;
        }
        ps->off += (size_t)n * val_size[et];
        return 0;
    }
    if (n > left(ps) / 8) {
        porta_err("%s: %s: array of %llu strings cannot fit in the %zu bytes left", path, ctx,
                  ull(n), left(ps));
        return PORTA_E_FORMAT;
    }
    if (n == 0)
        return 0;
    kv->strs = calloc((size_t)n, sizeof *kv->strs);   /* n <= bytes left / 8: bounded */
    if (!kv->strs)
        return PORTA_E_NOMEM;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t len;
        if (left(ps) < 8 || (len = rd64(ps->g->base + ps->off)) > left(ps) - 8) {
            porta_err("%s: %s: string %llu of %llu runs past end of file (size %zu)", path, ctx,
                      ull(j), ull(n), ps->g->size);
            return PORTA_E_FORMAT;
        }
        kv->strs[j].ptr = (const char *)ps->g->base + ps->off + 8;
        kv->strs[j].len = len;
        ps->off += 8 + (size_t)len;
    }
    return 0;
}

static int parse_kv(struct parser *ps, int64_t i, struct porta_gguf_kv *kv)
{
    const char *path = ps->g->path;
    char ctx[128], kb[96];
    const uint8_t *p;
    uint64_t klen;
    uint32_t t;
    int rc;

    snprintf(ctx, sizeof ctx, "key/value #%lld", (long long)i);
    if ((rc = rd_u64(ps, &klen, ctx, "key length")))
        return rc;
    if (klen == 0 || klen > GGUF_MAX_KEY_LEN) {
        porta_err("%s: %s: key length %llu (must be 1..%d)", path, ctx, ull(klen), GGUF_MAX_KEY_LEN);
        return PORTA_E_FORMAT;
    }
    if ((rc = rd_bytes(ps, klen, ctx, "key", &p)))
        return rc;
    kv->key.ptr = (const char *)p;
    kv->key.len = klen;
    snprintf(ctx, sizeof ctx, "key '%s'", shown(kv->key, kb, sizeof kb));
    if ((rc = rd_u32(ps, &t, ctx, "value type")))
        return rc;
    if (t >= PORTA_GGUF_TYPE_COUNT) {
        porta_err("%s: %s: unknown value type %u", path, ctx, t);
        return PORTA_E_FORMAT;
    }
    kv->type = (enum porta_gguf_type)t;
    if (t == PORTA_GGUF_ARRAY)
        return parse_arr(ps, kv, ctx);
    kv->data = ps->g->base + ps->off;
    if (t == PORTA_GGUF_STRING) {
        uint64_t slen;
        if ((rc = rd_u64(ps, &slen, ctx, "string length")))
            return rc;
        return rd_bytes(ps, slen, ctx, "string", &p);
    }
    return rd_bytes(ps, val_size[t], ctx, "value", &p);
}

static int cmp_kv(const void *a, const void *b)
{
    const struct porta_gguf_kv *x = *(struct porta_gguf_kv *const *)a;
    const struct porta_gguf_kv *y = *(struct porta_gguf_kv *const *)b;
    return str_cmp(x->key.ptr, x->key.len, y->key.ptr, y->key.len);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const struct porta_gguf_tensor *x = *(struct porta_gguf_tensor *const *)a;
    const struct porta_gguf_tensor *y = *(struct porta_gguf_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_off(const void *a, const void *b)
{
    const struct porta_gguf_tensor *x = *(struct porta_gguf_tensor *const *)a;
    const struct porta_gguf_tensor *y = *(struct porta_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Key/values: parsed, sorted for lookup, duplicates rejected; then general.alignment. */
static int parse_kvs(struct parser *ps, struct gguf_impl *im)
{
    struct porta_gguf *g = &im->pub;
    char kb[96];
    int rc;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (g->n_kv == 0)
        return 0;
    g->kv = calloc((size_t)g->n_kv, sizeof *g->kv);
    im->kv_sorted = malloc((size_t)g->n_kv * sizeof *im->kv_sorted);
    if (!g->kv || !im->kv_sorted)
        return PORTA_E_NOMEM;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if ((rc = parse_kv(ps, i, &g->kv[i])))
            return rc;
        im->kv_sorted[i] = &g->kv[i];
    }
    qsort(im->kv_sorted, (size_t)g->n_kv, sizeof *im->kv_sorted, cmp_kv);
    for (int64_t i = 1; i < g->n_kv; i++) {
        if (cmp_kv(&im->kv_sorted[i - 1], &im->kv_sorted[i]) == 0) {
            porta_err("%s: duplicate key '%s'", g->path, shown(im->kv_sorted[i]->key, kb, sizeof kb));
            return PORTA_E_FORMAT;
        }
    }
    const struct porta_gguf_kv *a = porta_gguf_find(g, "general.alignment");
    if (a) {
        uint32_t v = a->type == PORTA_GGUF_UINT32 ? rd32(a->data) : 0;
        if (a->type != PORTA_GGUF_UINT32 || v == 0 || (v & (v - 1)) != 0) {
            if (a->type != PORTA_GGUF_UINT32)
                porta_err("%s: general.alignment is %s, must be uint32", g->path, val_name[a->type]);
            else
                porta_err("%s: general.alignment = %u is not a nonzero power of two", g->path, v);
            return PORTA_E_FORMAT;
        }
        g->alignment = v;
    }
    return 0;
}

/* Reads the 1..4 dims of a tensor and checks each. */
static int parse_dims(struct parser *ps, struct porta_gguf_tensor *t, const char *ctx)
{
    const char *path = ps->g->path;
    uint32_t nd;
    int rc;

    if ((rc = rd_u32(ps, &nd, ctx, "n_dims")))
        return rc;
    if (nd < 1 || nd > PORTA_GGUF_MAX_DIMS) {
        porta_err("%s: %s: n_dims = %u (must be 1..%d)", path, ctx, nd, PORTA_GGUF_MAX_DIMS);
        return PORTA_E_FORMAT;
    }
    t->n_dims = (int)nd;
    for (int j = 0; j < PORTA_GGUF_MAX_DIMS; j++)
        t->ne[j] = 1;
    for (uint32_t j = 0; j < nd; j++) {
        char field[16];
        snprintf(field, sizeof field, "ne[%u]", j);
        if ((rc = rd_u64(ps, &t->ne[j], ctx, field)))
            return rc;
        if (t->ne[j] == 0 || t->ne[j] > INT64_MAX) {
            porta_err("%s: %s: %s = %llu (must be 1..2^63-1)", path, ctx, field, ull(t->ne[j]));
            return PORTA_E_FORMAT;
        }
    }
    return 0;
}

static int parse_tensor_info(struct parser *ps, int64_t i, struct porta_gguf_tensor *t)
{
    const char *path = ps->g->path;
    char ctx[160];
    const uint8_t *p;
    uint64_t nlen;
    uint32_t type;
    int rc;

    snprintf(ctx, sizeof ctx, "tensor #%lld", (long long)i);
    if ((rc = rd_u64(ps, &nlen, ctx, "name length")))
        return rc;
    if (nlen == 0 || nlen > GGUF_NAME_MAX) {
        porta_err("%s: %s: name length %llu (must be 1..%zu)", path, ctx, ull(nlen), GGUF_NAME_MAX);
        return PORTA_E_FORMAT;
    }
    if ((rc = rd_bytes(ps, nlen, ctx, "name", &p)))
        return rc;
    if (memchr(p, 0, (size_t)nlen)) {
        porta_err("%s: %s: name contains a NUL byte", path, ctx);
        return PORTA_E_FORMAT;
    }
    memcpy(t->name, p, (size_t)nlen);
    t->name[nlen] = 0;
    char nb[96];
    snprintf(ctx, sizeof ctx, "tensor '%s'", shown((struct porta_str){ t->name, nlen }, nb, sizeof nb));
    if ((rc = parse_dims(ps, t, ctx)) || (rc = rd_u32(ps, &type, ctx, "type")) ||
        (rc = rd_u64(ps, &t->offset, ctx, "offset")))
        return rc;
    const struct blk_info *bi = blk_of(type);
    if (!bi) {
        bool known = type < PORTA_DTYPE_COUNT && blk_table[type].name;
        porta_err("%s: %s: tensor type id %u%s%s%s is not supported", path, ctx, type,
                  known ? " (" : "", known ? blk_table[type].name : "", known ? ")" : "");
        return known ? PORTA_E_UNSUPPORTED : PORTA_E_FORMAT;
    }
    t->type = (enum porta_dtype)type;
    rc = tensor_nbytes(bi, t->n_dims, t->ne, &t->nbytes);
    if (rc == 1)
        porta_err("%s: %s: ne[0] = %llu is not a multiple of the %s block size %lld", path, ctx,
                  ull(t->ne[0]), bi->name, (long long)bi->blck);
    else if (rc == 2)
        porta_err("%s: %s: the product of the dims (%llu x %llu x %llu x %llu) overflows", path,
                  ctx, ull(t->ne[0]), ull(t->ne[1]), ull(t->ne[2]), ull(t->ne[3]));
    return rc ? PORTA_E_FORMAT : 0;
}

/* Data section: aligned start; each tensor aligned, inside the file, not overlapping another. */
static int check_layout(struct gguf_impl *im, size_t info_end)
{
    struct porta_gguf *g = &im->pub;
    size_t a = (size_t)g->alignment, pad = (a - info_end % a) % a;
    struct porta_gguf_tensor **by_off = NULL;
    int rc = PORTA_E_FORMAT;

    if (g->n_tensors == 0) {            /* vocab-only files may end without the padding */
        g->data_offset = pad <= g->size - info_end ? info_end + pad : g->size;
        return 0;
    }
    if (pad > g->size - info_end) {
        porta_err("%s: data section (aligned to %zu) starts past end of file (size %zu)", g->path,
                  a, g->size);
        return PORTA_E_FORMAT;
    }
    g->data_offset = info_end + pad;
    size_t room = g->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct porta_gguf_tensor *t = &g->tensors[i];
        uint64_t start = sat_add(g->data_offset, t->offset);
        if (t->offset % a) {
            porta_err("%s: tensor '%s': offset %llu is not a multiple of general.alignment %zu",
                      g->path, t->name, ull(t->offset), a);
            return PORTA_E_FORMAT;
        }
        if (t->offset > room || t->nbytes > room - t->offset) {
            porta_err("%s: tensor '%s': data [%llu, %llu) past end of file (size %zu)", g->path,
                      t->name, ull(start), ull(sat_add(start, t->nbytes)), g->size);
            return PORTA_E_FORMAT;
        }
        t->data = g->base + g->data_offset + t->offset;
    }
    by_off = malloc((size_t)g->n_tensors * sizeof *by_off);
    if (!by_off)
        return PORTA_E_NOMEM;
    for (int64_t i = 0; i < g->n_tensors; i++)
        by_off[i] = &g->tensors[i];
    qsort(by_off, (size_t)g->n_tensors, sizeof *by_off, cmp_tensor_off);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        const struct porta_gguf_tensor *x = by_off[i - 1], *y = by_off[i];
        if (x->offset + x->nbytes > y->offset) {   /* both checked inside the file above */
            porta_err("%s: tensor '%s' data [%llu, %llu) overlaps tensor '%s' data [%llu, %llu)",
                      g->path, x->name, ull(x->offset), ull(x->offset + x->nbytes), y->name,
                      ull(y->offset), ull(y->offset + y->nbytes));
            goto fail;
        }
    }
    rc = 0;
fail:
    free(by_off);
    return rc;
}

static int parse_tensors(struct parser *ps, struct gguf_impl *im)
{
    struct porta_gguf *g = &im->pub;
    int rc;

    if (g->n_tensors > 0) {
        g->tensors = calloc((size_t)g->n_tensors, sizeof *g->tensors);
        im->t_sorted = malloc((size_t)g->n_tensors * sizeof *im->t_sorted);
        if (!g->tensors || !im->t_sorted)
            return PORTA_E_NOMEM;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if ((rc = parse_tensor_info(ps, i, &g->tensors[i])))
            return rc;
        im->t_sorted[i] = &g->tensors[i];
    }
    if (g->n_tensors > 1) {
        qsort(im->t_sorted, (size_t)g->n_tensors, sizeof *im->t_sorted, cmp_tensor_name);
        for (int64_t i = 1; i < g->n_tensors; i++) {
            if (strcmp(im->t_sorted[i - 1]->name, im->t_sorted[i]->name) == 0) {
                porta_err("%s: duplicate tensor name '%s'", g->path, im->t_sorted[i]->name);
                return PORTA_E_FORMAT;
            }
        }
    }
    return check_layout(im, ps->off);
}

static int parse(struct gguf_impl *im)
{
    struct parser ps = { &im->pub, 0 };
    int rc;
    if ((rc = parse_header(&ps)) || (rc = parse_kvs(&ps, im)) || (rc = parse_tensors(&ps, im)))
        return rc;
    return 0;
}

static struct gguf_impl *impl_new(const char *name)
{
    struct gguf_impl *im = calloc(1, sizeof *im);
    if (im)
        snprintf(im->pub.path, sizeof im->pub.path, "%s", name);
    return im;
}

int porta_gguf_open_mem(const void *buf, size_t size, const char *name, struct porta_gguf **out)
{
    if (!out)
        return PORTA_E_INVAL;
    *out = NULL;
    if (!buf && size)
        return PORTA_E_INVAL;
    struct gguf_impl *im = impl_new(name ? name : "<memory>");
    if (!im)
        return PORTA_E_NOMEM;
    im->pub.base = buf;
    im->pub.size = size;
    int rc = parse(im);
    if (rc) {
        if (rc == PORTA_E_NOMEM)
            porta_err("%s: out of memory while reading the GGUF header", im->pub.path);
        porta_gguf_close(&im->pub);
        return rc;
    }
    *out = &im->pub;
    return 0;
}

int porta_gguf_open(const char *path, struct porta_gguf **out)
{
    struct gguf_impl *im = NULL;
    struct stat st;
    int fd = -1, rc = PORTA_E_IO;

    if (!out || !path)
        return PORTA_E_INVAL;
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        porta_err("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SIZE_MAX) {
        porta_err("%s: not a regular file", path);
        goto fail;
    }
    if (!(im = impl_new(path))) {
        rc = PORTA_E_NOMEM;
        goto fail;
    }
    im->pub.size = (size_t)st.st_size;
    if (im->pub.size > 0) {
        void *m = mmap(NULL, im->pub.size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            porta_err("%s: mmap of %zu bytes failed: %s", path, im->pub.size, strerror(errno));
            goto fail;
        }
        im->pub.base = m;
        im->pub.mapped = true;
    }
    close(fd);
    fd = -1;
    if ((rc = parse(im))) {
        if (rc == PORTA_E_NOMEM)
            porta_err("%s: out of memory while reading the GGUF header", path);
        goto fail;
    }
    *out = &im->pub;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    porta_gguf_close(im ? &im->pub : NULL);
    return rc;
}

void porta_gguf_close(struct porta_gguf *g)
{
    if (!g)
        return;
    struct gguf_impl *im = (struct gguf_impl *)g;
    for (int64_t i = 0; g->kv && i < g->n_kv; i++)
        free(g->kv[i].strs);
    free(g->kv);
    free(g->tensors);
    free(im->kv_sorted);
    free(im->t_sorted);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(im);
}

const struct porta_gguf_kv *porta_gguf_find(const struct porta_gguf *g, const char *key)
{
    if (!g || !key || !g->kv)
        return NULL;
    const struct gguf_impl *im = (const struct gguf_impl *)g;
    size_t kn = strlen(key), lo = 0, hi = (size_t)g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct porta_gguf_kv *kv = im->kv_sorted[mid];
        int c = str_cmp(kv->key.ptr, kv->key.len, key, kn);
        if (c == 0)
            return kv;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct porta_gguf_tensor *porta_gguf_tensor(const struct porta_gguf *g, const char *name)
{
    if (!g || !name || !g->tensors)
        return NULL;
    const struct gguf_impl *im = (const struct gguf_impl *)g;
    size_t lo = 0, hi = (size_t)g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(im->t_sorted[mid]->name, name);
        if (c == 0)
            return im->t_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- typed getters ---- */

/* A numeric value of any stored type, widened. */
struct num {
    enum { NUM_UINT, NUM_INT, NUM_FLOAT, NUM_BOOL } kind;
    uint64_t u;     /* NUM_UINT, NUM_BOOL */
    int64_t i;      /* NUM_INT */
    double f;       /* NUM_FLOAT */
};

/* Widens the value at p of type t; false for strings and arrays. */
static bool read_num(enum porta_gguf_type t, const uint8_t *p, struct num *n)
{
    memset(n, 0, sizeof *n);
    switch (t) {
    case PORTA_GGUF_UINT8: n->kind = NUM_UINT; n->u = p[0]; return true;
    case PORTA_GGUF_BOOL: n->kind = NUM_BOOL; n->u = p[0]; return true;
    case PORTA_GGUF_INT8: n->kind = NUM_INT; n->i = (int8_t)p[0]; return true;
    case PORTA_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); n->kind = NUM_UINT; n->u = v; return true; }
    case PORTA_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); n->kind = NUM_INT; n->i = v; return true; }
    case PORTA_GGUF_UINT32: n->kind = NUM_UINT; n->u = rd32(p); return true;
    case PORTA_GGUF_INT32: n->kind = NUM_INT; n->i = (int32_t)rd32(p); return true;
    case PORTA_GGUF_UINT64: n->kind = NUM_UINT; n->u = rd64(p); return true;
    case PORTA_GGUF_INT64: n->kind = NUM_INT; n->i = (int64_t)rd64(p); return true;
    case PORTA_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); n->kind = NUM_FLOAT; n->f = v; return true; }
    case PORTA_GGUF_FLOAT64: n->kind = NUM_FLOAT; memcpy(&n->f, p, 8); return true;
    default: return false;
    }
}

static const char *type_name(enum porta_gguf_type t)
{
    return (unsigned)t < PORTA_GGUF_TYPE_COUNT ? val_name[t] : "?";
}

/* Finds key and widens its scalar value; NOTFOUND silently, FORMAT (logged) for other types. */
static int get_num(const struct porta_gguf *g, const char *key, const char *want, struct num *n)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    if (!kv)
        return PORTA_E_NOTFOUND;
    if (!read_num(kv->type, kv->data, n) || n->kind == NUM_BOOL ||
        (n->kind == NUM_FLOAT && strcmp(want, "float32") != 0)) {
        porta_err("%s: key '%s' is %s, not %s", g->path, key, type_name(kv->type), want);
        return PORTA_E_FORMAT;
    }
    return 0;
}

static int out_of_range(const struct porta_gguf *g, const char *key, const struct num *n,
                        const char *want)
{
    if (n->kind == NUM_INT)
        porta_err("%s: key '%s': value %lld out of range for %s", g->path, key, (long long)n->i, want);
    else
        porta_err("%s: key '%s': value %llu out of range for %s", g->path, key, ull(n->u), want);
    return PORTA_E_FORMAT;
}

int porta_gguf_get_u32(const struct porta_gguf *g, const char *key, uint32_t *out)
{
    struct num n;
    int rc = get_num(g, key, "an integer", &n);
    if (rc)
        return rc;
    if (n.kind == NUM_INT ? n.i < 0 || n.i > (int64_t)UINT32_MAX : n.u > UINT32_MAX)
        return out_of_range(g, key, &n, "uint32");
    if (out)
        *out = n.kind == NUM_INT ? (uint32_t)n.i : (uint32_t)n.u;
    return 0;
}

int porta_gguf_get_i64(const struct porta_gguf *g, const char *key, int64_t *out)
{
    struct num n;
    int rc = get_num(g, key, "an integer", &n);
    if (rc)
        return rc;
    if (n.kind == NUM_UINT && n.u > INT64_MAX)
        return out_of_range(g, key, &n, "int64");
    if (out)
        *out = n.kind == NUM_INT ? n.i : (int64_t)n.u;
    return 0;
}

int porta_gguf_get_f32(const struct porta_gguf *g, const char *key, float *out)
{
    struct num n;
    int rc = get_num(g, key, "float32", &n);
    if (rc)
        return rc;
    double v = n.kind == NUM_FLOAT ? n.f : n.kind == NUM_INT ? (double)n.i : (double)n.u;
    if (isfinite(v) && fabs(v) > FLT_MAX) {
        porta_err("%s: key '%s': value %g out of range for float32", g->path, key, v);
        return PORTA_E_FORMAT;
    }
    if (out)
        *out = (float)v;
    return 0;
}

int porta_gguf_get_bool(const struct porta_gguf *g, const char *key, bool *out)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    if (!kv)
        return PORTA_E_NOTFOUND;
    if (kv->type != PORTA_GGUF_BOOL) {
        porta_err("%s: key '%s' is %s, not bool", g->path, key, type_name(kv->type));
        return PORTA_E_FORMAT;
    }
    uint8_t v = *(const uint8_t *)kv->data;
    if (v > 1) {
        porta_err("%s: key '%s': bool value %u is neither 0 nor 1", g->path, key, v);
        return PORTA_E_FORMAT;
    }
    if (out)
        *out = v;
    return 0;
}

/* kv->data of a STRING points at its encoding: u64 length, then the bytes (checked at open). */
int porta_gguf_get_str(const struct porta_gguf *g, const char *key, struct porta_str *out)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    if (!kv)
        return PORTA_E_NOTFOUND;
    if (kv->type != PORTA_GGUF_STRING) {
        porta_err("%s: key '%s' is %s, not string", g->path, key, type_name(kv->type));
        return PORTA_E_FORMAT;
    }
    if (out) {
        out->len = rd64(kv->data);
        out->ptr = (const char *)kv->data + 8;
    }
    return 0;
}

/* For STRING arrays *data is kv->strs (arr_n porta_str entries), not the raw encoding.
 * Numeric elements may be unaligned in the file: read them with memcpy or porta_gguf_arr_num. */
int porta_gguf_get_arr(const struct porta_gguf *g, const char *key, enum porta_gguf_type *type,
                       uint64_t *n, const void **data)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    if (!kv)
        return PORTA_E_NOTFOUND;
    if (kv->type != PORTA_GGUF_ARRAY) {
        porta_err("%s: key '%s' is %s, not array", g->path, key, type_name(kv->type));
        return PORTA_E_FORMAT;
    }
    if (type)
        *type = kv->arr_type;
    if (n)
        *n = kv->arr_n;
    if (data)
        *data = kv->arr_type == PORTA_GGUF_STRING ? (const void *)kv->strs : kv->data;
    return 0;
}

int porta_gguf_arr_num(const struct porta_gguf_kv *kv, uint64_t i, double *out)
{
    char kb[96];
    struct num n;
    if (!kv)
        return PORTA_E_INVAL;
    if (kv->type != PORTA_GGUF_ARRAY || kv->arr_type == PORTA_GGUF_STRING ||
        (unsigned)kv->arr_type >= PORTA_GGUF_TYPE_COUNT || kv->arr_type == PORTA_GGUF_ARRAY) {
        porta_err("key '%s' is not a numeric array", shown(kv->key, kb, sizeof kb));
        return PORTA_E_FORMAT;
    }
    if (i >= kv->arr_n)
        return PORTA_E_RANGE;
    read_num(kv->arr_type, (const uint8_t *)kv->data + i * val_size[kv->arr_type], &n);
    if (out)
        *out = n.kind == NUM_FLOAT ? n.f : n.kind == NUM_INT ? (double)n.i : (double)n.u;
    return 0;
}

/* ---- writer ---- */

struct wtensor {
    char name[GGUF_NAME_MAX + 1];
    enum porta_dtype type;
    int n_dims;
    uint64_t ne[PORTA_GGUF_MAX_DIMS];
    void *data;
    size_t nbytes;
    size_t offset;      /* in the data section, set by layout() */
};

struct porta_gguf_writer {
    uint8_t *kv;        /* encoded key/values, in order */
    size_t kv_len, kv_cap;
    char **keys;        /* for the duplicate check */
    size_t n_kv, keys_cap;
    struct wtensor *t;
    size_t n_t, t_cap;
    uint32_t alignment;
};

int porta_gguf_writer_create(struct porta_gguf_writer **out)
{
    if (!out)
        return PORTA_E_INVAL;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return PORTA_E_NOMEM;
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return 0;
}

void porta_gguf_writer_destroy(struct porta_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].data);
    free(w->keys);
    free(w->t);
    free(w->kv);
    free(w);
}

/* Grows *p (of *cap elements of size esz) to hold need elements. */
static int grow(void **p, size_t *cap, size_t need, size_t esz)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16, bytes;
    while (n < need)
        if (!porta_mul_ok(n, 2, &n))
            return PORTA_E_NOMEM;
    if (!porta_mul_ok(n, esz, &bytes))
        return PORTA_E_NOMEM;
    void *q = realloc(*p, bytes);
    if (!q)
        return PORTA_E_NOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static void put(struct porta_gguf_writer *w, const void *p, size_t n)
{
    if (n)
        memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}

static void put_u32(struct porta_gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(struct porta_gguf_writer *w, uint64_t v) { put(w, &v, 8); }

/* Validates key, reserves room for its entry (value_bytes after the type) and writes the key
 * and type; the caller then put()s exactly value_bytes, which cannot fail. */
static int w_begin(struct porta_gguf_writer *w, const char *key, enum porta_gguf_type type,
                   size_t value_bytes)
{
    if (!w || !key)
        return PORTA_E_INVAL;
    size_t kn = strlen(key), need;
    if (kn == 0 || kn > GGUF_MAX_KEY_LEN) {
        porta_err("gguf writer: key '%.80s': length %zu (must be 1..%d)", key, kn, GGUF_MAX_KEY_LEN);
        return PORTA_E_INVAL;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->keys[i], key) == 0) {
            porta_err("gguf writer: duplicate key '%.80s'", key);
            return PORTA_E_INVAL;
        }
    }
    if (strcmp(key, "general.alignment") == 0 && type != PORTA_GGUF_UINT32) {
        porta_err("gguf writer: general.alignment must be uint32, not %s", val_name[type]);
        return PORTA_E_INVAL;
    }
    if (!porta_add_ok(8 + 4 + kn, value_bytes, &need) || !porta_add_ok(need, w->kv_len, &need))
        return PORTA_E_NOMEM;
    char *dup = strdup(key);
    if (!dup || grow((void **)&w->kv, &w->kv_cap, need, 1) ||
        grow((void **)&w->keys, &w->keys_cap, w->n_kv + 1, sizeof *w->keys)) {
        free(dup);
        return PORTA_E_NOMEM;
    }
    w->keys[w->n_kv++] = dup;
    put_u64(w, kn);
    put(w, key, kn);
    put_u32(w, type);
    return 0;
}

int porta_gguf_w_u32(struct porta_gguf_writer *w, const char *key, uint32_t v)
{
    if (key && strcmp(key, "general.alignment") == 0 && (v == 0 || (v & (v - 1)))) {
        porta_err("gguf writer: general.alignment = %u is not a nonzero power of two", v);
        return PORTA_E_INVAL;
    }
    int rc = w_begin(w, key, PORTA_GGUF_UINT32, 4);
    if (rc)
        return rc;
    put_u32(w, v);
    if (strcmp(key, "general.alignment") == 0)
        w->alignment = v;
    return 0;
}

int porta_gguf_w_i32(struct porta_gguf_writer *w, const char *key, int32_t v)
{
    int rc = w_begin(w, key, PORTA_GGUF_INT32, 4);
    if (rc == 0)
        put(w, &v, 4);
    return rc;
}

int porta_gguf_w_f32(struct porta_gguf_writer *w, const char *key, float v)
{
    int rc = w_begin(w, key, PORTA_GGUF_FLOAT32, 4);
    if (rc == 0)
        put(w, &v, 4);
    return rc;
}

int porta_gguf_w_bool(struct porta_gguf_writer *w, const char *key, bool v)
{
    int rc = w_begin(w, key, PORTA_GGUF_BOOL, 1);
    if (rc == 0) {
        uint8_t b = v ? 1 : 0;
        put(w, &b, 1);
    }
    return rc;
}

int porta_gguf_w_str(struct porta_gguf_writer *w, const char *key, const char *v)
{
    if (!v)
        return PORTA_E_INVAL;
    size_t n = strlen(v);
    int rc = w_begin(w, key, PORTA_GGUF_STRING, 8 + n);   /* n < SIZE_MAX - 8: it is in memory */
    if (rc == 0) {
        put_u64(w, n);
        put(w, v, n);
    }
    return rc;
}

int porta_gguf_w_arr(struct porta_gguf_writer *w, const char *key, enum porta_gguf_type elem,
                     const void *data, uint64_t n)
{
    size_t bytes, total;
    if ((unsigned)elem >= PORTA_GGUF_TYPE_COUNT || elem == PORTA_GGUF_STRING ||
        elem == PORTA_GGUF_ARRAY || (!data && n)) {
        porta_err("gguf writer: key '%.80s': bad numeric array (element type %d)", key ? key : "",
                  (int)elem);
        return PORTA_E_INVAL;
    }
    if (n > SIZE_MAX || !porta_mul_ok((size_t)n, val_size[elem], &bytes) ||
        !porta_add_ok(bytes, 4 + 8, &total))
        return PORTA_E_NOMEM;
    int rc = w_begin(w, key, PORTA_GGUF_ARRAY, total);
    if (rc)
        return rc;
    put_u32(w, elem);
    put_u64(w, n);
    put(w, data, bytes);
    return 0;
}

int porta_gguf_w_arr_str(struct porta_gguf_writer *w, const char *key, const char *const *v,
                         uint64_t n)
{
    size_t total = 4 + 8;
    if (!v && n)
        return PORTA_E_INVAL;
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) {
            porta_err("gguf writer: key '%.80s': string %llu is NULL", key ? key : "", ull(i));
            return PORTA_E_INVAL;
        }
        if (!porta_add_ok(total, 8 + strlen(v[i]), &total))
            return PORTA_E_NOMEM;
    }
    int rc = w_begin(w, key, PORTA_GGUF_ARRAY, total);
    if (rc)
        return rc;
    put_u32(w, PORTA_GGUF_STRING);
    put_u64(w, n);
    for (uint64_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        put_u64(w, len);
        put(w, v[i], len);
    }
    return 0;
}

int porta_gguf_w_tensor(struct porta_gguf_writer *w, const char *name, enum porta_dtype type,
                        int n_dims, const uint64_t *ne, const void *data, size_t nbytes)
{
    const struct blk_info *bi = blk_of((uint64_t)(unsigned)type);
    struct wtensor t = { .type = type, .n_dims = n_dims };
    size_t expect = 0;

    if (!w || !name || !ne || !data)
        return PORTA_E_INVAL;
    size_t nl = strlen(name);
    if (nl == 0 || nl > GGUF_NAME_MAX || !bi || n_dims < 1 || n_dims > PORTA_GGUF_MAX_DIMS) {
        porta_err("gguf writer: tensor '%.80s': bad name length, type %d or n_dims %d", name,
                  (int)type, n_dims);
        return PORTA_E_INVAL;
    }
    for (int j = 0; j < PORTA_GGUF_MAX_DIMS; j++)
        t.ne[j] = j < n_dims ? ne[j] : 1;
    for (int j = 0; j < n_dims; j++) {
        if (ne[j] == 0 || ne[j] > INT64_MAX) {
            porta_err("gguf writer: tensor '%s': ne[%d] = %llu", name, j, ull(ne[j]));
            return PORTA_E_INVAL;
        }
    }
    if (tensor_nbytes(bi, n_dims, t.ne, &expect) || expect != nbytes) {
        porta_err("gguf writer: tensor '%s': %zu bytes given, a %s tensor of these dims needs %zu",
                  name, nbytes, bi->name, expect);
        return PORTA_E_INVAL;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            porta_err("gguf writer: duplicate tensor name '%s'", name);
            return PORTA_E_INVAL;
        }
    }
    if (grow((void **)&w->t, &w->t_cap, w->n_t + 1, sizeof *w->t) || !(t.data = malloc(nbytes)))
        return PORTA_E_NOMEM;
    memcpy(t.data, data, nbytes);
    memcpy(t.name, name, nl + 1);
    t.nbytes = nbytes;
    w->t[w->n_t++] = t;
    return 0;
}

static size_t pad_to(size_t n, size_t a) { return (a - n % a) % a; }

/* Places the tensors; *head = header + key/values + tensor infos + padding, *total = file size. */
static int layout(struct porta_gguf_writer *w, size_t *head, size_t *total)
{
    size_t h = GGUF_HEADER_BYTES + w->kv_len, d = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        size_t info = 8 + strlen(w->t[i].name) + 4 + 8 * (size_t)w->t[i].n_dims + 4 + 8;
        if (!porta_add_ok(h, info, &h))
            return PORTA_E_NOMEM;
        w->t[i].offset = d;
        if (!porta_add_ok(d, w->t[i].nbytes, &d) || !porta_add_ok(d, pad_to(d, w->alignment), &d))
            return PORTA_E_NOMEM;
    }
    if (!porta_add_ok(h, pad_to(h, w->alignment), &h) || !porta_add_ok(h, d, total))
        return PORTA_E_NOMEM;
    *head = h;
    return 0;
}

static uint8_t *emit(uint8_t *p, const void *src, size_t n)
{
    if (n)
        memcpy(p, src, n);
    return p + n;
}

/* Writes the first `head` bytes of the file (everything before the tensor data) to dst. */
static void emit_head(const struct porta_gguf_writer *w, uint8_t *dst, size_t head)
{
    uint32_t ver = 3;
    uint64_t nt = w->n_t, nkv = w->n_kv;
    uint8_t *p = emit(dst, "GGUF", 4);
    p = emit(p, &ver, 4);
    p = emit(p, &nt, 8);
    p = emit(p, &nkv, 8);
    p = emit(p, w->kv, w->kv_len);
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name), off = t->offset;
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        p = emit(p, &nl, 8);
        p = emit(p, t->name, nl);
        p = emit(p, &nd, 4);
        p = emit(p, t->ne, 8 * (size_t)nd);
        p = emit(p, &ty, 4);
        p = emit(p, &off, 8);
    }
    memset(p, 0, head - (size_t)(p - dst));
}

int porta_gguf_w_to_mem(struct porta_gguf_writer *w, void **buf, size_t *size)
{
    size_t head, total;
    if (!w || !buf || !size)
        return PORTA_E_INVAL;
    *buf = NULL;
    *size = 0;
    if (layout(w, &head, &total))
        return PORTA_E_NOMEM;
    uint8_t *b = calloc(1, total);     /* zeroed: the padding between tensors */
    if (!b)
        return PORTA_E_NOMEM;
    emit_head(w, b, head);
    for (size_t i = 0; i < w->n_t; i++)
        memcpy(b + head + w->t[i].offset, w->t[i].data, w->t[i].nbytes);
    *buf = b;
    *size = total;
    return 0;
}

int porta_gguf_w_to_file(struct porta_gguf_writer *w, const char *path)
{
    static const uint8_t zeros[256];
    size_t head, total;
    uint8_t *h = NULL;
    FILE *f = NULL;
    int rc = PORTA_E_NOMEM;

    if (!w || !path)
        return PORTA_E_INVAL;
    if (layout(w, &head, &total) || !(h = malloc(head)))
        goto fail;
    emit_head(w, h, head);
    rc = PORTA_E_IO;
    if (!(f = fopen(path, "wb")) || fwrite(h, 1, head, f) != head)
        goto io_fail;
    for (size_t i = 0; i < w->n_t; i++) {
        size_t pad = pad_to(w->t[i].nbytes, w->alignment);   /* offsets are aligned */
        if (fwrite(w->t[i].data, 1, w->t[i].nbytes, f) != w->t[i].nbytes)
            goto io_fail;
        for (size_t k; pad; pad -= k) {
            k = pad < sizeof zeros ? pad : sizeof zeros;
            if (fwrite(zeros, 1, k, f) != k)
                goto io_fail;
        }
    }
    rc = fclose(f) == 0 ? 0 : PORTA_E_IO;
    f = NULL;
    if (rc)
        goto io_fail;
    free(h);
    return 0;
io_fail:
    porta_err("%s: cannot write: %s", path, strerror(errno));
    if (f)
        fclose(f);
fail:
    free(h);
    return rc;
}
