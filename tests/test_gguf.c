/* test_gguf.c - GGUF reader and writer: round trips, the shared reference models, and hostile
 * files built here byte by byte (truncated, overflowing, misaligned, mistyped) plus a byte-flip
 * fuzz loop; every bad file must fail with a message naming the field, never crash. */
#include "gguf.h"
#include "testutil.h"

#include <glob.h>
#include <stdint.h>
#include <unistd.h>

/* ---- captured log messages ---- */
static char g_msg[2048];
static int g_nerr;

static void sink(enum porta_log_level level, const char *msg, void *user)
{
    (void)user;
    if (level >= PORTA_LOG_ERROR) {
        snprintf(g_msg, sizeof g_msg, "%s", msg);
        g_nerr++;
    }
}

static void setup(void)
{
    g_msg[0] = 0;
    g_nerr = 0;
    porta_log_set_sink(sink, NULL);
}

static void teardown(void) { porta_log_set_sink(NULL, NULL); }

/* Opens a copy of buf in an exactly sized heap block, so ASan sees any read past its end. */
static int open_copy(const void *buf, size_t n, struct porta_gguf **g)
{
    void *c = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(c);
    if (n)
        memcpy(c, buf, n);
    int rc = porta_gguf_open_mem(c, n, "t.gguf", g);
    if (rc) {
        ck_assert_ptr_null(*g);
        free(c);
    }
    return rc;   /* on success the caller frees (*g)->base after closing */
}

static void close_copy(struct porta_gguf *g)
{
    if (!g)
        return;
    void *b = (void *)g->base;
    porta_gguf_close(g);
    free(b);
}

/* ---- a byte builder for hand-made files ---- */
struct bb {
    uint8_t *p;
    size_t n, cap;
};

static void bb_bytes(struct bb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void bb_u8(struct bb *b, uint8_t v) { bb_bytes(b, &v, 1); }
static void bb_u32(struct bb *b, uint32_t v) { bb_bytes(b, &v, 4); }
static void bb_u64(struct bb *b, uint64_t v) { bb_bytes(b, &v, 8); }
static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_bytes(b, s, strlen(s));
}
static void bb_zeros(struct bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}
/* key and value type of a key/value entry; the value follows */
static void bb_key(struct bb *b, const char *key, uint32_t type)
{
    bb_str(b, key);
    bb_u32(b, type);
}

/* A small valid file, described field by field so each test can break one field. */
struct tinfo {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t offset;
};

struct spec {
    char magic[4];
    uint32_t version;
    int64_t n_tensors, n_kv;   /* -1: the real counts; other values are written as u64 */
    struct bb kvs;             /* encoded key/values */
    int kv_count;
    int n_t;
    struct tinfo t[4];
    uint32_t pad_align;        /* padding before the data section */
    size_t data_len;
};

static void default_spec(struct spec *s)
{
    memset(s, 0, sizeof *s);
    memcpy(s->magic, "GGUF", 4);
    s->version = 3;
    s->n_tensors = s->n_kv = -1;
    bb_key(&s->kvs, "general.architecture", PORTA_GGUF_STRING);
    bb_str(&s->kvs, "test");
    bb_key(&s->kvs, "test.block_count", PORTA_GGUF_UINT32);
    bb_u32(&s->kvs, 7);
    s->kv_count = 2;
    s->n_t = 2;
    s->t[0] = (struct tinfo){ "a", 2, { 8, 2 }, PORTA_F32, 0 };      /* 64 bytes */
    s->t[1] = (struct tinfo){ "b", 2, { 32, 2 }, PORTA_Q4_0, 64 };   /* 36 bytes */
    s->pad_align = 32;
    s->data_len = 128;
}

static uint8_t *build(struct spec *s, size_t *size)
{
    struct bb b = { 0 };
    bb_bytes(&b, s->magic, 4);
    bb_u32(&b, s->version);
    bb_u64(&b, s->n_tensors != -1 ? (uint64_t)s->n_tensors : (uint64_t)s->n_t);
    bb_u64(&b, s->n_kv != -1 ? (uint64_t)s->n_kv : (uint64_t)s->kv_count);
    bb_bytes(&b, s->kvs.p, s->kvs.n);
    for (int i = 0; i < s->n_t; i++) {
        const struct tinfo *t = &s->t[i];
        bb_str(&b, t->name);
        bb_u32(&b, t->n_dims);
        for (uint32_t j = 0; j < t->n_dims && j < 5; j++)
            bb_u64(&b, t->ne[j]);
        bb_u32(&b, t->type);
        bb_u64(&b, t->offset);
    }
    if (s->pad_align)
        bb_zeros(&b, (s->pad_align - b.n % s->pad_align) % s->pad_align);
    bb_zeros(&b, s->data_len);
    free(s->kvs.p);
    s->kvs.p = NULL;
    *size = b.n;
    return b.p;
}

/* Builds s and opens it: returns the status (closing the file on success). */
static int try_spec(struct spec *s)
{
    size_t n;
    uint8_t *buf = build(s, &n);
    struct porta_gguf *g = NULL;
    g_msg[0] = 0;
    int rc = open_copy(buf, n, &g);
    close_copy(g);
    free(buf);
    return rc;
}

START_TEST(test_default_spec_is_valid)
{
    struct spec s;
    default_spec(&s);
    size_t n;
    uint8_t *buf = build(&s, &n);
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(buf, n, &g), 0);
    ck_assert_int_eq(g->version, 3);
    ck_assert_int_eq(g->n_kv, 2);
    ck_assert_int_eq(g->n_tensors, 2);
    ck_assert_uint_eq(g->alignment, 32);
    ck_assert_uint_eq(g->data_offset % 32, 0);
    ck_assert_uint_eq(g->data_offset + 128, n);
    const struct porta_gguf_tensor *b = porta_gguf_tensor(g, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(b->type, PORTA_Q4_0);
    ck_assert_uint_eq(b->nbytes, 36);
    ck_assert_ptr_eq(b->data, g->base + g->data_offset + 64);
    uint32_t bc = 0;
    ck_assert_int_eq(porta_gguf_get_u32(g, "test.block_count", &bc), 0);
    ck_assert_uint_eq(bc, 7);
    ck_assert_int_eq(g_nerr, 0);
    close_copy(g);
    free(buf);
}
END_TEST

/* ---- hostile files: one broken field each ---- */
typedef void (*mutate_fn)(struct spec *s);

static void m_magic(struct spec *s) { memcpy(s->magic, "GGUG", 4); }
static void m_v0(struct spec *s) { s->version = 0; }
static void m_v1(struct spec *s) { s->version = 1; }
static void m_v4(struct spec *s) { s->version = 4; }
static void m_vbig(struct spec *s) { s->version = 0x03000000; }
static void m_nt_huge(struct spec *s) { s->n_tensors = INT64_C(1) << 62; }
static void m_nt_max(struct spec *s) { s->n_tensors = -2; /* 2^64 - 2 */ }
static void m_nkv_huge(struct spec *s) { s->n_kv = INT64_C(1) << 61; }
static void m_nkv_max(struct spec *s) { s->n_kv = -2; }
static void m_nkv_plus(struct spec *s) { s->n_kv = s->kv_count + 3; }
static void m_nt_plus(struct spec *s) { s->n_tensors = 3; }
static void m_key_len_huge(struct spec *s) { bb_u64(&s->kvs, UINT64_C(0xFFFFFFFF)); s->kv_count++; }
static void m_key_len_zero(struct spec *s) { bb_key(&s->kvs, "", PORTA_GGUF_UINT8); bb_u8(&s->kvs, 1); s->kv_count++; }
static void m_key_past_end(struct spec *s)
{
    bb_u64(&s->kvs, 60000);   /* a legal length, but the file is shorter */
    bb_bytes(&s->kvs, "abc", 3);
    s->kv_count++;
    s->n_t = 0;
    s->data_len = 0;
    s->pad_align = 0;
}
static void m_str_len(struct spec *s)
{
    bb_key(&s->kvs, "x.s", PORTA_GGUF_STRING);
    bb_u64(&s->kvs, UINT64_C(1) << 40);
    s->kv_count++;
}
static void m_str_len_max(struct spec *s)
{
    bb_key(&s->kvs, "x.s", PORTA_GGUF_STRING);
    bb_u64(&s->kvs, UINT64_MAX);
    s->kv_count++;
}
static void m_arr_len(struct spec *s)
{
    bb_key(&s->kvs, "x.arr", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, PORTA_GGUF_UINT32);
    bb_u64(&s->kvs, UINT64_C(1) << 61);   /* x 4 bytes overflows 64 bits */
    s->kv_count++;
}
static void m_arr_len_max(struct spec *s)
{
    bb_key(&s->kvs, "x.arr", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, PORTA_GGUF_FLOAT64);
    bb_u64(&s->kvs, UINT64_MAX);
    s->kv_count++;
}
static void m_strarr_len(struct spec *s)
{
    bb_key(&s->kvs, "x.strs", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, PORTA_GGUF_STRING);
    bb_u64(&s->kvs, UINT64_C(1) << 60);
    s->kv_count++;
}
static void m_strarr_short(struct spec *s)
{
    /* 4 strings announced, bytes for 4 length fields, but the third length runs past the end */
    bb_key(&s->kvs, "x.strs", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, PORTA_GGUF_STRING);
    bb_u64(&s->kvs, 4);
    bb_str(&s->kvs, "ab");
    bb_str(&s->kvs, "cd");
    for (int i = 0; i < 12; i++)
        bb_u8(&s->kvs, 0xff);
    s->kv_count++;
    s->n_t = 0;
    s->data_len = 0;
    s->pad_align = 0;
}
static void m_strarr_elem(struct spec *s)
{
    bb_key(&s->kvs, "x.strs", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, PORTA_GGUF_STRING);
    bb_u64(&s->kvs, 1);
    bb_u64(&s->kvs, UINT64_C(1) << 50);
    s->kv_count++;
}
static void m_vtype(struct spec *s) { bb_key(&s->kvs, "x.t", 13); bb_u32(&s->kvs, 0); s->kv_count++; }
static void m_vtype_max(struct spec *s) { bb_key(&s->kvs, "x.t", UINT32_MAX); bb_u32(&s->kvs, 0); s->kv_count++; }
static void m_etype(struct spec *s)
{
    bb_key(&s->kvs, "x.arr", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, 99);
    bb_u64(&s->kvs, 1);
    bb_u32(&s->kvs, 0);
    s->kv_count++;
}
static void m_nested(struct spec *s)
{
    bb_key(&s->kvs, "x.arr", PORTA_GGUF_ARRAY);
    bb_u32(&s->kvs, PORTA_GGUF_ARRAY);
    bb_u64(&s->kvs, 1);
    bb_u32(&s->kvs, PORTA_GGUF_UINT8);
    bb_u64(&s->kvs, 1);
    bb_u8(&s->kvs, 5);
    s->kv_count++;
}
static void m_dup_key(struct spec *s) { bb_key(&s->kvs, "test.block_count", PORTA_GGUF_UINT32); bb_u32(&s->kvs, 8); s->kv_count++; }
static void m_ndims0(struct spec *s) { s->t[1].n_dims = 0; }
static void m_ndims5(struct spec *s) { s->t[1].n_dims = 5; s->t[1].ne[2] = s->t[1].ne[3] = s->t[1].ne[4] = 1; }
static void m_ndims_max(struct spec *s) { s->t[1].n_dims = UINT32_MAX; }
static void m_dim0(struct spec *s) { s->t[1].ne[1] = 0; }
static void m_dim_neg(struct spec *s) { s->t[0].ne[0] = UINT64_C(1) << 63; }
static void m_dim_overflow(struct spec *s) { s->t[0].ne[0] = s->t[0].ne[1] = UINT64_C(1) << 32; }
static void m_dim_overflow4(struct spec *s)
{
    s->t[0].n_dims = 4;
    s->t[0].ne[0] = s->t[0].ne[1] = s->t[0].ne[2] = s->t[0].ne[3] = UINT64_C(1) << 16;
}
static void m_row_overflow(struct spec *s) { s->t[0].ne[0] = UINT64_C(1) << 62; s->t[0].ne[1] = 1; }
static void m_block(struct spec *s) { s->t[1].ne[0] = 33; }
static void m_type99(struct spec *s) { s->t[1].type = 99; }
static void m_type_max(struct spec *s) { s->t[1].type = UINT32_MAX; }
static void m_type_iq(struct spec *s) { s->t[1].type = 16; }
static void m_type_gap(struct spec *s) { s->t[1].type = 4; }
static void m_off_far(struct spec *s) { s->t[1].offset = UINT64_C(1) << 40; }
static void m_off_max(struct spec *s) { s->t[1].offset = UINT64_MAX - 31; }
static void m_off_straddle(struct spec *s) { s->t[1].offset = 96; }   /* [96, 132) > 128 */
static void m_off_misaligned(struct spec *s) { s->t[1].offset = 65; }
static void m_overlap(struct spec *s) { s->t[1].offset = 32; }
static void m_overlap_same(struct spec *s) { s->t[1].offset = 0; }
static void m_align0(struct spec *s) { bb_key(&s->kvs, "general.alignment", PORTA_GGUF_UINT32); bb_u32(&s->kvs, 0); s->kv_count++; }
static void m_align3(struct spec *s) { bb_key(&s->kvs, "general.alignment", PORTA_GGUF_UINT32); bb_u32(&s->kvs, 3); s->kv_count++; }
static void m_align_type(struct spec *s) { bb_key(&s->kvs, "general.alignment", PORTA_GGUF_UINT64); bb_u64(&s->kvs, 32); s->kv_count++; }
static void m_dup_tensor(struct spec *s) { s->t[1].name = "a"; }
static void m_name_long(struct spec *s)
{
    static char name[129];
    memset(name, 'n', 128);
    s->t[1].name = name;
}
static void m_name_empty(struct spec *s) { s->t[1].name = ""; }
static void m_data_short(struct spec *s) { s->data_len = 90; }
static void m_no_data(struct spec *s) { s->data_len = 0; s->pad_align = 0; }

struct hcase {
    const char *what;
    mutate_fn mut;
    int rc;
    const char *msg1, *msg2;   /* substrings the error message must hold (NULL: any) */
};

static const struct hcase hcases[] = {
    { "bad magic", m_magic, PORTA_E_FORMAT, "magic", "t.gguf" },
    { "version 0", m_v0, PORTA_E_FORMAT, "version 0", NULL },
    { "version 1", m_v1, PORTA_E_UNSUPPORTED, "version 1", NULL },
    { "version 4", m_v4, PORTA_E_UNSUPPORTED, "version 4", NULL },
    { "big-endian", m_vbig, PORTA_E_UNSUPPORTED, "big-endian", NULL },
    { "n_tensors 2^62", m_nt_huge, PORTA_E_FORMAT, "n_tensors", NULL },
    { "n_tensors ~0", m_nt_max, PORTA_E_FORMAT, "n_tensors", NULL },
    { "n_kv 2^61", m_nkv_huge, PORTA_E_FORMAT, "n_kv", NULL },
    { "n_kv ~0", m_nkv_max, PORTA_E_FORMAT, "n_kv", NULL },
    { "n_kv +3", m_nkv_plus, PORTA_E_FORMAT, NULL, NULL },
    { "n_tensors +1", m_nt_plus, PORTA_E_FORMAT, NULL, NULL },
    { "key length huge", m_key_len_huge, PORTA_E_FORMAT, "key length 4294967295", "#2" },
    { "key length 0", m_key_len_zero, PORTA_E_FORMAT, "key length 0", NULL },
    { "key past end", m_key_past_end, PORTA_E_FORMAT, "key", "past end" },
    { "string length 2^40", m_str_len, PORTA_E_FORMAT, "key 'x.s'", "string" },
    { "string length ~0", m_str_len_max, PORTA_E_FORMAT, "key 'x.s'", "past end" },
    { "array length 2^61", m_arr_len, PORTA_E_FORMAT, "key 'x.arr'", "uint32" },
    { "array length ~0", m_arr_len_max, PORTA_E_FORMAT, "key 'x.arr'", "float64" },
    { "string array 2^60", m_strarr_len, PORTA_E_FORMAT, "key 'x.strs'", "strings" },
    { "string array short", m_strarr_short, PORTA_E_FORMAT, "key 'x.strs'", "string 2 of 4" },
    { "string array elem", m_strarr_elem, PORTA_E_FORMAT, "key 'x.strs'", "string 0 of 1" },
    { "value type 13", m_vtype, PORTA_E_FORMAT, "key 'x.t'", "value type 13" },
    { "value type ~0", m_vtype_max, PORTA_E_FORMAT, "key 'x.t'", "value type 4294967295" },
    { "element type 99", m_etype, PORTA_E_FORMAT, "key 'x.arr'", "element type 99" },
    { "nested array", m_nested, PORTA_E_UNSUPPORTED, "key 'x.arr'", "arrays of arrays" },
    { "duplicate key", m_dup_key, PORTA_E_FORMAT, "duplicate key 'test.block_count'", NULL },
    { "n_dims 0", m_ndims0, PORTA_E_FORMAT, "tensor 'b'", "n_dims = 0" },
    { "n_dims 5", m_ndims5, PORTA_E_FORMAT, "tensor 'b'", "n_dims = 5" },
    { "n_dims ~0", m_ndims_max, PORTA_E_FORMAT, "tensor 'b'", "n_dims = 4294967295" },
    { "dim 0", m_dim0, PORTA_E_FORMAT, "tensor 'b'", "ne[1] = 0" },
    { "dim 2^63", m_dim_neg, PORTA_E_FORMAT, "tensor 'a'", "ne[0]" },
    { "dims overflow", m_dim_overflow, PORTA_E_FORMAT, "tensor 'a'", "overflows" },
    { "4 dims overflow", m_dim_overflow4, PORTA_E_FORMAT, "tensor 'a'", "overflows" },
    { "row bytes overflow", m_row_overflow, PORTA_E_FORMAT, "tensor 'a'", "overflows" },
    { "ne[0] % block", m_block, PORTA_E_FORMAT, "tensor 'b'", "block size 32" },
    { "type 99", m_type99, PORTA_E_FORMAT, "tensor 'b'", "type id 99" },
    { "type ~0", m_type_max, PORTA_E_FORMAT, "tensor 'b'", "type id 4294967295" },
    { "type IQ2_XXS", m_type_iq, PORTA_E_UNSUPPORTED, "tensor 'b'", "type id 16 (IQ2_XXS)" },
    { "type 4", m_type_gap, PORTA_E_UNSUPPORTED, "tensor 'b'", "type id 4" },
    { "offset 2^40", m_off_far, PORTA_E_FORMAT, "tensor 'b': data [", "past end of file (size" },
    { "offset ~0", m_off_max, PORTA_E_FORMAT, "tensor 'b'", "past end of file" },
    { "offset straddles end", m_off_straddle, PORTA_E_FORMAT, "tensor 'b'", "past end of file" },
    { "offset misaligned", m_off_misaligned, PORTA_E_FORMAT, "tensor 'b'", "alignment" },
    { "overlap", m_overlap, PORTA_E_FORMAT, "overlaps", "'b'" },
    { "overlap same offset", m_overlap_same, PORTA_E_FORMAT, "overlaps", NULL },
    { "alignment 0", m_align0, PORTA_E_FORMAT, "general.alignment = 0", NULL },
    { "alignment 3", m_align3, PORTA_E_FORMAT, "general.alignment = 3", NULL },
    { "alignment uint64", m_align_type, PORTA_E_FORMAT, "general.alignment", "uint32" },
    { "duplicate tensor", m_dup_tensor, PORTA_E_FORMAT, "duplicate tensor name 'a'", NULL },
    { "name length 128", m_name_long, PORTA_E_FORMAT, "tensor #1", "name length 128" },
    { "name length 0", m_name_empty, PORTA_E_FORMAT, "tensor #1", "name length 0" },
    { "data short", m_data_short, PORTA_E_FORMAT, "tensor 'b'", "past end of file" },
    { "no data", m_no_data, PORTA_E_FORMAT, NULL, NULL },
};
#define N_HCASES ((int)(sizeof hcases / sizeof hcases[0]))

START_TEST(test_hostile)
{
    const struct hcase *c = &hcases[_i];
    struct spec s;
    default_spec(&s);
    c->mut(&s);
    int rc = try_spec(&s);
    ck_assert_msg(rc == c->rc, "%s: got %d (%s), want %d; message: %s", c->what, rc,
                  porta_strerror(rc), c->rc, g_msg);
    ck_assert_msg(g_msg[0], "%s: no message", c->what);
    ck_assert_msg(strstr(g_msg, "t.gguf"), "%s: message does not name the file: %s", c->what, g_msg);
    ck_assert_msg(!c->msg1 || strstr(g_msg, c->msg1), "%s: '%s' not in: %s", c->what, c->msg1, g_msg);
    ck_assert_msg(!c->msg2 || strstr(g_msg, c->msg2), "%s: '%s' not in: %s", c->what, c->msg2, g_msg);
}
END_TEST

START_TEST(test_tiny_inputs)
{
    struct porta_gguf *g = (struct porta_gguf *)1;
    ck_assert_int_eq(porta_gguf_open_mem("", 0, "t.gguf", &g), PORTA_E_FORMAT);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(porta_gguf_open_mem("GGU", 3, "t.gguf", &g), PORTA_E_FORMAT);
    ck_assert_int_eq(open_copy("GGUF\3\0\0", 7, &g), PORTA_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(g_msg, "version"));
    ck_assert_int_eq(porta_gguf_open_mem(NULL, 10, "x", &g), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_open_mem("GGUF", 4, "x", NULL), PORTA_E_INVAL);
    /* a header with no key/values and no tensors is a valid (empty) file */
    struct bb b = { 0 };
    bb_bytes(&b, "GGUF", 4);
    bb_u32(&b, 2);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    ck_assert_int_eq(open_copy(b.p, b.n, &g), 0);
    ck_assert_int_eq(g->n_kv, 0);
    ck_assert_int_eq(g->n_tensors, 0);
    ck_assert_ptr_null(porta_gguf_find(g, "general.architecture"));
    ck_assert_ptr_null(porta_gguf_tensor(g, "a"));
    close_copy(g);
    free(b.p);
    porta_gguf_close(NULL);
}
END_TEST

START_TEST(test_open_errors)
{
    struct porta_gguf *g = (struct porta_gguf *)1;
    ck_assert_int_eq(porta_gguf_open("/nonexistent/dir/x.gguf", &g), PORTA_E_IO);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(g_msg, "/nonexistent/dir/x.gguf"));
    ck_assert_int_eq(porta_gguf_open("/tmp", &g), PORTA_E_IO);
    char path[] = "/tmp/porta_gguf_empty_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(porta_gguf_open(path, &g), PORTA_E_FORMAT);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(g_msg, path));
    unlink(path);
}
END_TEST

/* ---- getters over hand-made values ---- */
static struct porta_gguf *getter_file(uint8_t **buf)
{
    struct spec s;
    default_spec(&s);
    s.n_t = 0;
    s.data_len = 0;
    struct bb *k = &s.kvs;
    bb_key(k, "v.i64neg", PORTA_GGUF_INT64); bb_u64(k, UINT64_MAX);            /* -1 */
    bb_key(k, "v.u64big", PORTA_GGUF_UINT64); bb_u64(k, UINT64_C(1) << 32);
    bb_key(k, "v.u64top", PORTA_GGUF_UINT64); bb_u64(k, UINT64_C(1) << 63);
    bb_key(k, "v.i8", PORTA_GGUF_INT8); bb_u8(k, (uint8_t)-5);
    bb_key(k, "v.u16", PORTA_GGUF_UINT16); bb_u8(k, 0x34); bb_u8(k, 0x12);
    bb_key(k, "v.i32max", PORTA_GGUF_INT32); bb_u32(k, INT32_MAX);
    double big = 1e300, half = 0.5;
    bb_key(k, "v.f64big", PORTA_GGUF_FLOAT64); bb_bytes(k, &big, 8);
    bb_key(k, "v.f64", PORTA_GGUF_FLOAT64); bb_bytes(k, &half, 8);
    bb_key(k, "v.bool2", PORTA_GGUF_BOOL); bb_u8(k, 2);
    bb_key(k, "v.bool1", PORTA_GGUF_BOOL); bb_u8(k, 1);
    bb_key(k, "v.i16arr", PORTA_GGUF_ARRAY); bb_u32(k, PORTA_GGUF_INT16); bb_u64(k, 3);
    int16_t a16[3] = { -300, 0, 300 };
    bb_bytes(k, a16, sizeof a16);
    bb_key(k, "v.strarr", PORTA_GGUF_ARRAY); bb_u32(k, PORTA_GGUF_STRING); bb_u64(k, 2);
    bb_str(k, "x");
    bb_str(k, "");
    bb_key(k, "v.emptyarr", PORTA_GGUF_ARRAY); bb_u32(k, PORTA_GGUF_FLOAT32); bb_u64(k, 0);
    s.kv_count += 13;
    size_t n;
    *buf = build(&s, &n);
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(*buf, n, &g), 0);
    return g;
}

START_TEST(test_getters_int)
{
    uint8_t *buf;
    struct porta_gguf *g = getter_file(&buf);
    uint32_t u;
    int64_t i;

    ck_assert_int_eq(porta_gguf_get_u32(g, "v.i64neg", &u), PORTA_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(g_msg, "v.i64neg"));
    ck_assert_ptr_nonnull(strstr(g_msg, "-1"));
    ck_assert_int_eq(porta_gguf_get_i64(g, "v.i64neg", &i), 0);
    ck_assert_int_eq(i, -1);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.u64big", &u), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_i64(g, "v.u64big", &i), 0);
    ck_assert_int_eq(i, INT64_C(1) << 32);
    ck_assert_int_eq(porta_gguf_get_i64(g, "v.u64top", &i), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_i64(g, "v.i8", &i), 0);
    ck_assert_int_eq(i, -5);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.i8", &u), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.u16", &u), 0);
    ck_assert_uint_eq(u, 0x1234);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.i32max", &u), 0);
    ck_assert_uint_eq(u, INT32_MAX);
    ck_assert_int_eq(porta_gguf_get_u32(g, "test.block_count", &u), 0);
    ck_assert_uint_eq(u, 7);
    close_copy(g);
    free(buf);
}
END_TEST

START_TEST(test_getters_other)
{
    uint8_t *buf;
    struct porta_gguf *g = getter_file(&buf);
    uint32_t u;
    int64_t i;
    float f;
    bool b;
    struct porta_str s;

    /* floats: from ints and float64; out-of-range float64 is an error; ints reject floats */
    ck_assert_int_eq(porta_gguf_get_f32(g, "test.block_count", &f), 0);
    ck_assert_float_eq(f, 7.0f);
    ck_assert_int_eq(porta_gguf_get_f32(g, "v.f64", &f), 0);
    ck_assert_float_eq(f, 0.5f);
    ck_assert_int_eq(porta_gguf_get_f32(g, "v.f64big", &f), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.f64", &u), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_f32(g, "general.architecture", &f), PORTA_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(g_msg, "general.architecture"));
    /* bools */
    ck_assert_int_eq(porta_gguf_get_bool(g, "v.bool1", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(porta_gguf_get_bool(g, "v.bool2", &b), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_bool(g, "test.block_count", &b), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.bool1", &u), PORTA_E_FORMAT);
    /* strings */
    ck_assert_int_eq(porta_gguf_get_str(g, "general.architecture", &s), 0);
    ck_assert(porta_str_eq(s, "test"));
    ck_assert(!porta_str_eq(s, "tes"));
    ck_assert(!porta_str_eq(s, "tests"));
    ck_assert_int_eq(porta_gguf_get_str(g, "test.block_count", &s), PORTA_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(g_msg, "test.block_count"));
    /* absent keys: NOTFOUND, not logged */
    g_nerr = 0;
    ck_assert_int_eq(porta_gguf_get_u32(g, "nope", &u), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_i64(g, "nope", &i), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_f32(g, "nope", &f), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_bool(g, "nope", &b), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_str(g, "nope", &s), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_arr(g, "nope", NULL, NULL, NULL), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.i8x", &u), PORTA_E_NOTFOUND);
    ck_assert_int_eq(porta_gguf_get_u32(g, "v.i", &u), PORTA_E_NOTFOUND);
    ck_assert_int_eq(g_nerr, 0);
    close_copy(g);
    free(buf);
}
END_TEST

START_TEST(test_getters_arr)
{
    uint8_t *buf;
    struct porta_gguf *g = getter_file(&buf);
    enum porta_gguf_type t;
    uint64_t n;
    const void *d;
    double x;
    ck_assert_int_eq(porta_gguf_get_arr(g, "v.i16arr", &t, &n, &d), 0);
    ck_assert_int_eq(t, PORTA_GGUF_INT16);
    ck_assert_uint_eq(n, 3);
    const struct porta_gguf_kv *kv = porta_gguf_find(g, "v.i16arr");
    ck_assert_ptr_nonnull(kv);
    ck_assert_int_eq(porta_gguf_arr_num(kv, 0, &x), 0);
    ck_assert(x == -300.0);
    ck_assert_int_eq(porta_gguf_arr_num(kv, 2, &x), 0);
    ck_assert(x == 300.0);
    ck_assert_int_eq(porta_gguf_arr_num(kv, 3, &x), PORTA_E_RANGE);
    ck_assert_int_eq(porta_gguf_arr_num(NULL, 0, &x), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_get_arr(g, "v.strarr", &t, &n, &d), 0);
    ck_assert_int_eq(t, PORTA_GGUF_STRING);
    ck_assert_uint_eq(n, 2);
    const struct porta_str *ss = d;
    ck_assert(porta_str_eq(ss[0], "x"));
    ck_assert(porta_str_eq(ss[1], ""));
    kv = porta_gguf_find(g, "v.strarr");
    ck_assert_ptr_eq(kv->strs, ss);
    ck_assert_int_eq(porta_gguf_arr_num(kv, 0, &x), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_arr_num(porta_gguf_find(g, "v.i8"), 0, &x), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_arr(g, "v.emptyarr", &t, &n, &d), 0);
    ck_assert_int_eq(t, PORTA_GGUF_FLOAT32);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(porta_gguf_get_arr(g, "v.i8", &t, &n, &d), PORTA_E_FORMAT);
    close_copy(g);
    free(buf);
}
END_TEST

/* ---- writer round trip ---- */
static const uint64_t rt_ne[][4] = {
    { 4, 3, 1, 1 }, { 8, 1, 1, 1 }, { 64, 2, 1, 1 }, { 32, 1, 2, 1 }, { 256, 1, 1, 2 }, { 5, 1, 1, 1 },
    { 256, 3, 1, 1 }, { 7, 2, 1, 1 },
};
static const enum porta_dtype rt_type[] = { PORTA_F32, PORTA_F16, PORTA_Q4_0, PORTA_Q8_0,
                                            PORTA_Q6_K, PORTA_I8, PORTA_Q4_K, PORTA_BF16 };
static const int rt_ndims[] = { 2, 1, 2, 3, 4, 1, 2, 2 };
static const size_t rt_bytes[] = { 48, 16, 72, 68, 420, 5, 432, 28 };
static const char *const rt_names[] = { "t.f32", "t.f16", "blk.0.q4_0", "t.q8_0", "t.q6_k",
                                        "t.i8", "t.q4_k", "t.bf16" };
#define RT_NT 8

static uint8_t rt_data[RT_NT][512];

/* Writes every kind of value and RT_NT tensors; returns the file in memory. */
static void *rt_build(size_t *size, uint32_t alignment)
{
    struct porta_gguf_writer *w = NULL;
    ck_assert_int_eq(porta_gguf_writer_create(&w), 0);
    if (alignment)
        ck_assert_int_eq(porta_gguf_w_u32(w, "general.alignment", alignment), 0);
    ck_assert_int_eq(porta_gguf_w_str(w, "general.architecture", "llama"), 0);
    ck_assert_int_eq(porta_gguf_w_str(w, "general.name", "r\xc3\xa9sum\xc3\xa9 \xe2\x9c\x93"), 0);
    ck_assert_int_eq(porta_gguf_w_str(w, "x.empty", ""), 0);
    ck_assert_int_eq(porta_gguf_w_u32(w, "x.u32", 4000000000u), 0);
    ck_assert_int_eq(porta_gguf_w_i32(w, "x.i32", -123456), 0);
    ck_assert_int_eq(porta_gguf_w_f32(w, "x.f32", 1e-5f), 0);
    ck_assert_int_eq(porta_gguf_w_bool(w, "x.true", true), 0);
    ck_assert_int_eq(porta_gguf_w_bool(w, "x.false", false), 0);
    uint8_t au8[] = { 0, 1, 255 };
    int8_t ai8[] = { -128, 0, 127 };
    uint16_t au16[] = { 0, 65535 };
    int16_t ai16[] = { -32768, 32767 };
    uint32_t au32[] = { 1, 4294967295u, 7 };
    int32_t ai32[] = { -1, 2, -3, 4 };
    float af32[] = { 0.25f, -1.5f };
    uint8_t abool[] = { 1, 0, 1 };
    uint64_t au64[] = { UINT64_MAX, 0 };
    int64_t ai64[] = { INT64_MIN, INT64_MAX };
    double af64[] = { 3.25, -1e100 };
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.u8", PORTA_GGUF_UINT8, au8, 3), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.i8", PORTA_GGUF_INT8, ai8, 3), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.u16", PORTA_GGUF_UINT16, au16, 2), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.i16", PORTA_GGUF_INT16, ai16, 2), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.u32", PORTA_GGUF_UINT32, au32, 3), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.i32", PORTA_GGUF_INT32, ai32, 4), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.f32", PORTA_GGUF_FLOAT32, af32, 2), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.bool", PORTA_GGUF_BOOL, abool, 3), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.u64", PORTA_GGUF_UINT64, au64, 2), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.i64", PORTA_GGUF_INT64, ai64, 2), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.f64", PORTA_GGUF_FLOAT64, af64, 2), 0);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a.empty", PORTA_GGUF_INT32, NULL, 0), 0);
    const char *strs[] = { "<|bos|>", "", "\xc4\xa0the" };
    ck_assert_int_eq(porta_gguf_w_arr_str(w, "a.str", strs, 3), 0);
    ck_assert_int_eq(porta_gguf_w_arr_str(w, "a.str0", NULL, 0), 0);
    for (int i = 0; i < RT_NT; i++) {
        for (size_t j = 0; j < sizeof rt_data[i]; j++)
            rt_data[i][j] = (uint8_t)(i * 37 + j * 11 + 1);
        ck_assert_int_eq(porta_gguf_w_tensor(w, rt_names[i], rt_type[i], rt_ndims[i], rt_ne[i],
                                             rt_data[i], rt_bytes[i]), 0);
    }
    void *buf = NULL;
    ck_assert_int_eq(porta_gguf_w_to_mem(w, &buf, size), 0);
    porta_gguf_writer_destroy(w);
    return buf;
}

static void num_arr_is(const struct porta_gguf *g, const char *key, enum porta_gguf_type t,
                       const double *want, uint64_t n)
{
    const struct porta_gguf_kv *kv = porta_gguf_find(g, key);
    ck_assert_msg(kv != NULL, "%s missing", key);
    ck_assert_int_eq(kv->type, PORTA_GGUF_ARRAY);
    ck_assert_int_eq(kv->arr_type, t);
    ck_assert_uint_eq(kv->arr_n, n);
    for (uint64_t i = 0; i < n; i++) {
        double x;
        ck_assert_int_eq(porta_gguf_arr_num(kv, i, &x), 0);
        ck_assert_msg(x == want[i], "%s[%d] = %g, want %g", key, (int)i, x, want[i]);
    }
}

static void rt_check(const struct porta_gguf *g, uint32_t alignment)
{
    struct porta_str s;
    uint32_t u;
    int64_t i;
    float f;
    bool b;
    ck_assert_int_eq(g->version, 3);
    ck_assert_int_eq(g->n_kv, 22 + (alignment ? 1 : 0));
    ck_assert_int_eq(g->n_tensors, RT_NT);
    ck_assert_uint_eq(g->alignment, alignment ? alignment : 32);
    ck_assert_int_eq(porta_gguf_get_str(g, "general.architecture", &s), 0);
    ck_assert(porta_str_eq(s, "llama"));
    ck_assert_int_eq(porta_gguf_get_str(g, "general.name", &s), 0);
    ck_assert(porta_str_eq(s, "r\xc3\xa9sum\xc3\xa9 \xe2\x9c\x93"));
    ck_assert_int_eq(porta_gguf_get_str(g, "x.empty", &s), 0);
    ck_assert_uint_eq(s.len, 0);
    ck_assert_int_eq(porta_gguf_get_u32(g, "x.u32", &u), 0);
    ck_assert_uint_eq(u, 4000000000u);
    ck_assert_int_eq(porta_gguf_get_i64(g, "x.i32", &i), 0);
    ck_assert_int_eq(i, -123456);
    ck_assert_int_eq(porta_gguf_get_u32(g, "x.i32", &u), PORTA_E_FORMAT);
    ck_assert_int_eq(porta_gguf_get_f32(g, "x.f32", &f), 0);
    ck_assert_float_eq(f, 1e-5f);
    ck_assert_int_eq(porta_gguf_get_bool(g, "x.true", &b), 0);
    ck_assert(b);
    ck_assert_int_eq(porta_gguf_get_bool(g, "x.false", &b), 0);
    ck_assert(!b);
    num_arr_is(g, "a.u8", PORTA_GGUF_UINT8, (double[]){ 0, 1, 255 }, 3);
    num_arr_is(g, "a.i8", PORTA_GGUF_INT8, (double[]){ -128, 0, 127 }, 3);
    num_arr_is(g, "a.u16", PORTA_GGUF_UINT16, (double[]){ 0, 65535 }, 2);
    num_arr_is(g, "a.i16", PORTA_GGUF_INT16, (double[]){ -32768, 32767 }, 2);
    num_arr_is(g, "a.u32", PORTA_GGUF_UINT32, (double[]){ 1, 4294967295.0, 7 }, 3);
    num_arr_is(g, "a.i32", PORTA_GGUF_INT32, (double[]){ -1, 2, -3, 4 }, 4);
    num_arr_is(g, "a.f32", PORTA_GGUF_FLOAT32, (double[]){ 0.25, -1.5 }, 2);
    num_arr_is(g, "a.bool", PORTA_GGUF_BOOL, (double[]){ 1, 0, 1 }, 3);
    num_arr_is(g, "a.u64", PORTA_GGUF_UINT64, (double[]){ (double)UINT64_MAX, 0 }, 2);
    num_arr_is(g, "a.i64", PORTA_GGUF_INT64, (double[]){ (double)INT64_MIN, (double)INT64_MAX }, 2);
    num_arr_is(g, "a.f64", PORTA_GGUF_FLOAT64, (double[]){ 3.25, -1e100 }, 2);
    num_arr_is(g, "a.empty", PORTA_GGUF_INT32, NULL, 0);
    /* raw element access agrees with arr_num */
    enum porta_gguf_type t;
    uint64_t n;
    const void *d;
    ck_assert_int_eq(porta_gguf_get_arr(g, "a.i64", &t, &n, &d), 0);
    int64_t i64s[2];
    memcpy(i64s, d, sizeof i64s);
    ck_assert(i64s[0] == INT64_MIN && i64s[1] == INT64_MAX);
    ck_assert_int_eq(porta_gguf_get_arr(g, "a.str", &t, &n, &d), 0);
    ck_assert_int_eq(t, PORTA_GGUF_STRING);
    ck_assert_uint_eq(n, 3);
    const struct porta_str *ss = d;
    ck_assert(porta_str_eq(ss[0], "<|bos|>"));
    ck_assert(porta_str_eq(ss[1], ""));
    ck_assert(porta_str_eq(ss[2], "\xc4\xa0the"));
    ck_assert_int_eq(porta_gguf_get_arr(g, "a.str0", &t, &n, &d), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(g->data_offset % g->alignment, 0);
    for (int k = 0; k < RT_NT; k++) {
        const struct porta_gguf_tensor *tt = porta_gguf_tensor(g, rt_names[k]);
        ck_assert_msg(tt != NULL, "%s missing", rt_names[k]);
        ck_assert_str_eq(tt->name, rt_names[k]);
        ck_assert_int_eq(tt->type, rt_type[k]);
        ck_assert_int_eq(tt->n_dims, rt_ndims[k]);
        for (int j = 0; j < 4; j++)
            ck_assert_uint_eq(tt->ne[j], rt_ne[k][j]);
        ck_assert_uint_eq(tt->nbytes, rt_bytes[k]);
        ck_assert_uint_eq(tt->offset % g->alignment, 0);
        ck_assert_ptr_eq(tt->data, g->base + g->data_offset + tt->offset);
        ck_assert_int_eq(memcmp(tt->data, rt_data[k], rt_bytes[k]), 0);
        ck_assert_ptr_eq(&g->tensors[k], tt);   /* file order is the writer's order */
    }
    ck_assert_ptr_null(porta_gguf_tensor(g, "t.f3"));
    ck_assert_ptr_null(porta_gguf_tensor(g, "t.f322"));
}

START_TEST(test_roundtrip_mem)
{
    size_t n;
    void *buf = rt_build(&n, 0);
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(buf, n, &g), 0);
    ck_assert_str_eq(g->path, "t.gguf");
    ck_assert(!g->mapped);
    rt_check(g, 0);
    close_copy(g);
    free(buf);
    ck_assert_int_eq(g_nerr, 1);   /* the one expected: x.i32 read as uint32 */
}
END_TEST

START_TEST(test_roundtrip_file)
{
    struct porta_gguf_writer *w = NULL;
    size_t n;
    void *mem = rt_build(&n, 64);   /* alignment 64 too */
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(mem, n, &g), 0);
    rt_check(g, 64);
    close_copy(g);

    /* the file writer gives the same bytes as the memory writer */
    char path[] = "/tmp/porta_gguf_rt_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    size_t n2;
    ck_assert_int_eq(porta_gguf_writer_create(&w), 0);
    ck_assert_int_eq(porta_gguf_w_str(w, "general.architecture", "llama"), 0);
    ck_assert_int_eq(porta_gguf_w_u32(w, "general.alignment", 64), 0);
    for (int i = 0; i < RT_NT; i++)
        ck_assert_int_eq(porta_gguf_w_tensor(w, rt_names[i], rt_type[i], rt_ndims[i], rt_ne[i],
                                             rt_data[i], rt_bytes[i]), 0);
    void *m2;
    ck_assert_int_eq(porta_gguf_w_to_mem(w, &m2, &n2), 0);
    ck_assert_int_eq(porta_gguf_w_to_file(w, path), 0);
    porta_gguf_writer_destroy(w);
    size_t fn;
    void *fb = tu_read_file(path, &fn);
    ck_assert_ptr_nonnull(fb);
    ck_assert_uint_eq(fn, n2);
    ck_assert_int_eq(memcmp(fb, m2, n2), 0);
    ck_assert_int_eq(porta_gguf_open(path, &g), 0);
    ck_assert(g->mapped);
    ck_assert_uint_eq(g->alignment, 64);
    ck_assert_int_eq(g->n_tensors, RT_NT);
    for (int k = 0; k < RT_NT; k++) {
        const struct porta_gguf_tensor *tt = porta_gguf_tensor(g, rt_names[k]);
        ck_assert_ptr_nonnull(tt);
        ck_assert_uint_eq((uintptr_t)tt->data % 64, 0);   /* mmap is page aligned */
        ck_assert_int_eq(memcmp(tt->data, rt_data[k], rt_bytes[k]), 0);
    }
    porta_gguf_close(g);
    unlink(path);
    ck_assert_int_eq(porta_gguf_w_to_file(NULL, path), PORTA_E_INVAL);
    free(fb);
    free(m2);
    free(mem);
}
END_TEST

START_TEST(test_writer_rejects)
{
    struct porta_gguf_writer *w = NULL;
    float x[64] = { 0 };
    uint64_t ne[4] = { 32, 2, 1, 1 };
    ck_assert_int_eq(porta_gguf_writer_create(&w), 0);
    ck_assert_int_eq(porta_gguf_w_u32(w, "k", 1), 0);
    ck_assert_int_eq(porta_gguf_w_u32(w, "k", 2), PORTA_E_INVAL);
    ck_assert_ptr_nonnull(strstr(g_msg, "duplicate key 'k'"));
    ck_assert_int_eq(porta_gguf_w_str(w, "k", "v"), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_u32(w, "", 1), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_u32(w, NULL, 1), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_str(w, "s", NULL), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_u32(w, "general.alignment", 0), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_u32(w, "general.alignment", 48), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_i32(w, "general.alignment", 32), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a", PORTA_GGUF_STRING, x, 1), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a", PORTA_GGUF_ARRAY, x, 1), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a", (enum porta_gguf_type)77, x, 1), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_arr(w, "a", PORTA_GGUF_UINT8, NULL, 1), PORTA_E_INVAL);
    const char *bad[] = { "a", NULL };
    ck_assert_int_eq(porta_gguf_w_arr_str(w, "a", bad, 2), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_tensor(w, "t", PORTA_F32, 2, ne, x, 256), 0);
    ck_assert_int_eq(porta_gguf_w_tensor(w, "t", PORTA_F32, 2, ne, x, 256), PORTA_E_INVAL);
    ck_assert_ptr_nonnull(strstr(g_msg, "duplicate tensor name 't'"));
    ck_assert_int_eq(porta_gguf_w_tensor(w, "u", PORTA_F32, 2, ne, x, 255), PORTA_E_INVAL);
    ck_assert_ptr_nonnull(strstr(g_msg, "needs 256"));
    ck_assert_int_eq(porta_gguf_w_tensor(w, "u", PORTA_Q4_K, 2, ne, x, 144), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_tensor(w, "u", (enum porta_dtype)16, 2, ne, x, 36), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_tensor(w, "u", PORTA_F32, 0, ne, x, 4), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_tensor(w, "u", PORTA_F32, 5, ne, x, 256), PORTA_E_INVAL);
    ck_assert_int_eq(porta_gguf_w_tensor(w, "", PORTA_F32, 2, ne, x, 256), PORTA_E_INVAL);
    uint64_t ne0[2] = { 32, 0 };
    ck_assert_int_eq(porta_gguf_w_tensor(w, "u", PORTA_F32, 2, ne0, x, 0), PORTA_E_INVAL);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[199] = 0;
    ck_assert_int_eq(porta_gguf_w_tensor(w, longname, PORTA_F32, 2, ne, x, 256), PORTA_E_INVAL);
    /* the rejected calls left nothing behind: the file holds k and t only */
    void *buf;
    size_t n;
    ck_assert_int_eq(porta_gguf_w_to_mem(w, &buf, &n), 0);
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(buf, n, &g), 0);
    ck_assert_int_eq(g->n_kv, 1);
    ck_assert_int_eq(g->n_tensors, 1);
    close_copy(g);
    free(buf);
    porta_gguf_writer_destroy(w);
    porta_gguf_writer_destroy(NULL);
}
END_TEST

/* ---- truncation at every offset ---- */
START_TEST(test_truncated_everywhere)
{
    size_t n;
    uint8_t *buf = rt_build(&n, 0);
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(buf, n, &g), 0);
    size_t end = 0;   /* end of the last tensor's data: the file is complete from there on */
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (g->data_offset + g->tensors[i].offset + g->tensors[i].nbytes > end)
            end = g->data_offset + g->tensors[i].offset + g->tensors[i].nbytes;
    close_copy(g);
    ck_assert_uint_lt(end, n);
    ck_assert_uint_gt(end + 32, n);
    int fails = 0;
    for (size_t cut = 0; cut < n; cut++) {
        int rc = open_copy(buf, cut, &g);
        if (cut < end) {
            ck_assert_msg(rc == PORTA_E_FORMAT, "cut at %zu of %zu: rc %d", cut, n, rc);
            ck_assert_msg(strstr(g_msg, "t.gguf"), "cut at %zu: message %s", cut, g_msg);
            fails++;
        } else {
            ck_assert_msg(rc == 0, "cut at %zu (after the last tensor): rc %d: %s", cut, rc, g_msg);
            close_copy(g);
        }
    }
    ck_assert_int_eq(fails, (int)end);
    free(buf);
}
END_TEST

/* ---- byte-flip fuzzing ---- */
static void walk(const struct porta_gguf *g)
{
    volatile uint8_t sinkb = 0;
    for (int64_t i = 0; i < g->n_kv; i++) {
        const struct porta_gguf_kv *kv = &g->kv[i];
        char key[300];
        size_t kl = kv->key.len < sizeof key - 1 ? (size_t)kv->key.len : sizeof key - 1;
        memcpy(key, kv->key.ptr, kl);
        key[kl] = 0;
        uint32_t u;
        int64_t v;
        float f;
        bool b;
        struct porta_str s;
        enum porta_gguf_type t;
        uint64_t n;
        const void *d;
        double x;
        porta_gguf_get_u32(g, key, &u);
        porta_gguf_get_i64(g, key, &v);
        porta_gguf_get_f32(g, key, &f);
        porta_gguf_get_bool(g, key, &b);
        if (porta_gguf_get_str(g, key, &s) == 0 && s.len)
            sinkb ^= (uint8_t)s.ptr[s.len - 1];
        if (porta_gguf_get_arr(g, key, &t, &n, &d) == 0 && n) {
            if (t == PORTA_GGUF_STRING) {
                const struct porta_str *ss = d;
                for (uint64_t j = 0; j < n; j++)
                    if (ss[j].len)
                        sinkb ^= (uint8_t)ss[j].ptr[ss[j].len - 1];
            } else {
                porta_gguf_arr_num(kv, 0, &x);
                porta_gguf_arr_num(kv, n - 1, &x);
            }
        }
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const struct porta_gguf_tensor *t = &g->tensors[i];
        ck_assert((const uint8_t *)t->data >= g->base);
        ck_assert((const uint8_t *)t->data + t->nbytes <= g->base + g->size);
        sinkb ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        ck_assert_ptr_eq(porta_gguf_tensor(g, t->name), t);
    }
    (void)sinkb;
}

START_TEST(test_fuzz_flips)
{
    size_t n;
    uint8_t *buf = rt_build(&n, 0);
    struct porta_gguf *g = NULL;
    ck_assert_int_eq(open_copy(buf, n, &g), 0);
    size_t head = g->data_offset;
    close_copy(g);
    uint8_t *m = malloc(n);
    unsigned long long st = 12345;
    int ok = 0, bad = 0;
    for (int it = 0; it < 4000; it++) {
        memcpy(m, buf, n);
        int flips = 1 + (int)(tu_rng_next(&st) % 4);
        for (int k = 0; k < flips; k++) {
            uint64_t r = tu_rng_next(&st);
            size_t pos = (r & 3) ? (size_t)((r >> 8) % head) : (size_t)((r >> 8) % n);
            switch ((r >> 2) & 3) {
            case 0: m[pos] ^= (uint8_t)(1u << ((r >> 40) & 7)); break;
            case 1: m[pos] = (uint8_t)(r >> 48); break;
            case 2: m[pos] = 0xff; break;
            default: m[pos] = 0; break;
            }
        }
        size_t len = (it % 5 == 0) ? (size_t)(tu_rng_next(&st) % (n + 1)) : n;
        if (open_copy(m, len, &g) == 0) {
            walk(g);
            close_copy(g);
            ok++;
        } else {
            bad++;
        }
    }
    ck_assert_int_gt(ok, 100);
    ck_assert_int_gt(bad, 100);
    free(m);
    free(buf);
}
END_TEST

/* ---- the shared reference models ---- */
START_TEST(test_llama_f32)
{
    struct porta_gguf *g = NULL;
    const char *path = tu_path("arch/llama/model-f32.gguf");
    ck_assert_msg(porta_gguf_open(path, &g) == 0, "%s: %s", path, g_msg);
    ck_assert(g->mapped);
    ck_assert_int_eq(g->version, 3);
    ck_assert_int_eq(g->n_kv, 22);
    ck_assert_int_eq(g->n_tensors, 30);
    ck_assert_uint_eq(g->alignment, 32);
    struct porta_str s;
    ck_assert_int_eq(porta_gguf_get_str(g, "general.architecture", &s), 0);
    ck_assert(porta_str_eq(s, "llama"));
    ck_assert_int_eq(porta_gguf_get_str(g, "general.name", &s), 0);
    ck_assert(porta_str_eq(s, "porta-ref-llama"));
    uint32_t u;
    ck_assert_int_eq(porta_gguf_get_u32(g, "llama.block_count", &u), 0);
    ck_assert_uint_eq(u, 3);
    ck_assert_int_eq(porta_gguf_get_u32(g, "llama.embedding_length", &u), 0);
    ck_assert_uint_eq(u, 64);
    ck_assert_int_eq(porta_gguf_get_u32(g, "llama.attention.head_count_kv", &u), 0);
    ck_assert_uint_eq(u, 2);
    ck_assert_int_eq(porta_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u), 0);
    ck_assert_uint_eq(u, 318);
    float f;
    ck_assert_int_eq(porta_gguf_get_f32(g, "llama.rope.freq_base", &f), 0);
    ck_assert_float_eq(f, 500000.0f);
    ck_assert_int_eq(porta_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f), 0);
    ck_assert_float_eq_tol(f, 1e-5f, 1e-10f);
    bool b = true;
    ck_assert_int_eq(porta_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    ck_assert(!b);
    enum porta_gguf_type t;
    uint64_t n;
    const void *d;
    ck_assert_int_eq(porta_gguf_get_arr(g, "tokenizer.ggml.tokens", &t, &n, &d), 0);
    ck_assert_int_eq(t, PORTA_GGUF_STRING);
    ck_assert_uint_eq(n, 320);
    ck_assert(porta_str_eq(((const struct porta_str *)d)[318], "<|bos|>"));
    ck_assert(porta_str_eq(((const struct porta_str *)d)[65], "A"));
    ck_assert_int_eq(porta_gguf_get_arr(g, "tokenizer.ggml.merges", &t, &n, &d), 0);
    ck_assert_uint_eq(n, 62);
    const struct porta_gguf_tensor *te = porta_gguf_tensor(g, "token_embd.weight");
    ck_assert_ptr_nonnull(te);
    ck_assert_int_eq(te->type, PORTA_F32);
    ck_assert_int_eq(te->n_dims, 2);
    ck_assert_uint_eq(te->ne[0], 64);
    ck_assert_uint_eq(te->ne[1], 320);
    ck_assert_uint_eq(te->nbytes, 64 * 320 * 4);
    const struct porta_gguf_tensor *fd = porta_gguf_tensor(g, "blk.2.ffn_down.weight");
    ck_assert_ptr_nonnull(fd);
    ck_assert_uint_eq(fd->ne[0], 160);
    ck_assert_uint_eq(fd->ne[1], 64);
    const struct porta_gguf_tensor *on = porta_gguf_tensor(g, "output_norm.weight");
    ck_assert_ptr_nonnull(on);
    ck_assert_int_eq(on->n_dims, 1);
    ck_assert_uint_eq(on->ne[0], 64);
    ck_assert_uint_eq(on->ne[1], 1);
    /* norm weights are 1 + N(0, 0.15): a sanity check that the data pointer is right */
    float w0;
    memcpy(&w0, on->data, 4);
    ck_assert_float_gt(w0, 0.2f);
    ck_assert_float_lt(w0, 1.8f);
    ck_assert_ptr_null(porta_gguf_tensor(g, "blk.3.ffn_down.weight"));

    /* the same file from memory: same answers */
    size_t sz;
    void *mem = tu_read_file(path, &sz);
    ck_assert_ptr_nonnull(mem);
    struct porta_gguf *g2 = NULL;
    ck_assert_int_eq(porta_gguf_open_mem(mem, sz, NULL, &g2), 0);
    ck_assert_str_eq(g2->path, "<memory>");
    ck_assert_int_eq(g2->n_tensors, g->n_tensors);
    ck_assert_uint_eq(g2->data_offset, g->data_offset);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        ck_assert_str_eq(g2->tensors[i].name, g->tensors[i].name);
        ck_assert_uint_eq(g2->tensors[i].offset, g->tensors[i].offset);
        ck_assert_int_eq(memcmp(g2->tensors[i].data, g->tensors[i].data, g->tensors[i].nbytes), 0);
    }
    porta_gguf_close(g2);
    free(mem);
    porta_gguf_close(g);
}
END_TEST

START_TEST(test_llama_q4_k_m)
{
    struct porta_gguf *g = NULL;
    const char *path = tu_path("quant/llama-Q4_K_M.gguf");
    ck_assert_msg(porta_gguf_open(path, &g) == 0, "%s: %s", path, g_msg);
    struct porta_str s;
    ck_assert_int_eq(porta_gguf_get_str(g, "general.architecture", &s), 0);
    ck_assert(porta_str_eq(s, "llama"));
    uint32_t u;
    ck_assert_int_eq(porta_gguf_get_u32(g, "general.file_type", &u), 0);
    ck_assert_uint_eq(u, 15);
    ck_assert_int_eq(porta_gguf_get_u32(g, "llama.embedding_length", &u), 0);
    ck_assert_uint_eq(u, 256);
    ck_assert_int_eq(g->n_tensors, 21);
    static const struct { const char *name; enum porta_dtype type; uint64_t ne0, ne1; size_t nbytes; } want[] = {
        { "token_embd.weight", PORTA_Q4_K, 256, 512, 512 * 144 },
        { "output.weight", PORTA_Q6_K, 256, 512, 512 * 210 },
        { "blk.1.attn_v.weight", PORTA_Q6_K, 256, 128, 128 * 210 },
        { "blk.0.attn_v.weight", PORTA_Q4_K, 256, 128, 128 * 144 },
        { "blk.1.ffn_down.weight", PORTA_Q6_K, 512, 256, 256 * 2 * 210 },
        { "blk.0.ffn_up.weight", PORTA_Q4_K, 256, 512, 512 * 144 },
        { "output_norm.weight", PORTA_F32, 256, 1, 256 * 4 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct porta_gguf_tensor *t = porta_gguf_tensor(g, want[i].name);
        ck_assert_msg(t != NULL, "%s missing", want[i].name);
        ck_assert_int_eq(t->type, want[i].type);
        ck_assert_uint_eq(t->ne[0], want[i].ne0);
        ck_assert_uint_eq(t->ne[1], want[i].ne1);
        ck_assert_uint_eq(t->nbytes, want[i].nbytes);
        ck_assert_uint_eq(((uintptr_t)t->data) % 32, 0);
    }
    porta_gguf_close(g);
}
END_TEST

/* Every GGUF file in the shared data opens (vocab-only files have no tensors and no padding). */
START_TEST(test_all_shared_files)
{
    static const char *const pats[] = { "arch/*/*.gguf", "quant/*.gguf", "tokenizer/*.gguf" };
    int count = 0;
    for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++) {
        glob_t gl;
        if (glob(tu_path(pats[p]), 0, NULL, &gl) != 0)
            continue;
        for (size_t i = 0; i < gl.gl_pathc; i++) {
            struct porta_gguf *g = NULL;
            int rc = porta_gguf_open(gl.gl_pathv[i], &g);
            ck_assert_msg(rc == 0, "%s: %s", gl.gl_pathv[i], g_msg);
            struct porta_str s;
            ck_assert_msg(porta_gguf_get_str(g, "general.architecture", &s) == 0 ||
                          porta_gguf_find(g, "tokenizer.ggml.model"), "%s: no architecture", gl.gl_pathv[i]);
            porta_gguf_close(g);
            count++;
        }
        globfree(&gl);
    }
    ck_assert_int_ge(count, 30);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("reader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_default_spec_is_valid);
    tcase_add_loop_test(tc, test_hostile, 0, N_HCASES);
    tcase_add_test(tc, test_tiny_inputs);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_getters_int);
    tcase_add_test(tc, test_getters_other);
    tcase_add_test(tc, test_getters_arr);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_roundtrip_mem);
    tcase_add_test(tc, test_roundtrip_file);
    tcase_add_test(tc, test_writer_rejects);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_truncated_everywhere);
    tcase_add_test(tc, test_fuzz_flips);
    suite_add_tcase(s, tc);

    tc = tcase_create("shared");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_llama_f32);
    tcase_add_test(tc, test_llama_q4_k_m);
    tcase_add_test(tc, test_all_shared_files);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
