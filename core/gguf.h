/* gguf.h - GGUF v2/v3 reader over mmap (or a caller's memory buffer) and a small writer.
 * The reader validates every count, size, type and offset against the bytes in the file
 * before it allocates or dereferences anything; a malformed file is PORTA_E_FORMAT with a
 * message naming the field, never a crash. */
#ifndef PORTA_GGUF_H
#define PORTA_GGUF_H

#include "porta.h"

#define PORTA_GGUF_MAX_DIMS 4

/* GGUF metadata value types (the file's ids). */
enum porta_gguf_type {
    PORTA_GGUF_UINT8 = 0, PORTA_GGUF_INT8 = 1, PORTA_GGUF_UINT16 = 2, PORTA_GGUF_INT16 = 3,
    PORTA_GGUF_UINT32 = 4, PORTA_GGUF_INT32 = 5, PORTA_GGUF_FLOAT32 = 6, PORTA_GGUF_BOOL = 7,
    PORTA_GGUF_STRING = 8, PORTA_GGUF_ARRAY = 9, PORTA_GGUF_UINT64 = 10, PORTA_GGUF_INT64 = 11,
    PORTA_GGUF_FLOAT64 = 12,
    PORTA_GGUF_TYPE_COUNT
};

/* A string inside the mapped file: NOT NUL-terminated. */
struct porta_str {
    const char *ptr;
    uint64_t len;
};

struct porta_gguf_kv {
    struct porta_str key;
    enum porta_gguf_type type;      /* for ARRAY: the container; arr_type is the element type */
    enum porta_gguf_type arr_type;
    uint64_t arr_n;                 /* element count for ARRAY */
    const void *data;               /* scalar value, or first array element, inside the file */
    struct porta_str *strs;         /* for STRING arrays: arr_n entries (owned by the reader) */
};

struct porta_gguf_tensor {
    char name[128];                 /* NUL-terminated copy; names longer than 127 are rejected */
    int n_dims;
    uint64_t ne[PORTA_GGUF_MAX_DIMS];   /* ne[0] is the contiguous (row) dimension; unused = 1 */
    enum porta_dtype type;
    uint64_t offset;                /* relative to the start of the data section */
    size_t nbytes;
    const void *data;               /* inside the mapping */
};

struct porta_gguf {
    uint32_t version;
    uint64_t alignment;
    int64_t n_kv;
    struct porta_gguf_kv *kv;
    int64_t n_tensors;
    struct porta_gguf_tensor *tensors;
    const uint8_t *base;            /* whole file */
    size_t size;
    size_t data_offset;             /* start of the tensor data section */
    char path[512];                 /* for messages; "<memory>" for buffers */
    bool mapped;                    /* base is an mmap that close() unmaps */
};

/* Opens and validates a GGUF file. On success *out owns the mapping; on error *out is NULL and
 * a message was logged. Returns 0, PORTA_E_IO, PORTA_E_FORMAT, PORTA_E_UNSUPPORTED or PORTA_E_NOMEM. */
int porta_gguf_open(const char *path, struct porta_gguf **out);
/* Same over a caller's buffer, which must outlive the returned object (not copied). */
int porta_gguf_open_mem(const void *buf, size_t size, const char *name, struct porta_gguf **out);
void porta_gguf_close(struct porta_gguf *g);                      /* NULL ok */

/* Lookups: NULL when absent. */
const struct porta_gguf_kv *porta_gguf_find(const struct porta_gguf *g, const char *key);
const struct porta_gguf_tensor *porta_gguf_tensor(const struct porta_gguf *g, const char *name);

/* Typed getters. Return 0, PORTA_E_NOTFOUND when the key is absent, PORTA_E_FORMAT (logged,
 * naming the key) when the stored type cannot represent the requested one or the value is out
 * of the target's range. Integer getters accept any integer type; get_f32 accepts floats and ints. */
int porta_gguf_get_u32(const struct porta_gguf *g, const char *key, uint32_t *out);
int porta_gguf_get_i64(const struct porta_gguf *g, const char *key, int64_t *out);
int porta_gguf_get_f32(const struct porta_gguf *g, const char *key, float *out);
int porta_gguf_get_bool(const struct porta_gguf *g, const char *key, bool *out);
int porta_gguf_get_str(const struct porta_gguf *g, const char *key, struct porta_str *out);
/* Array access: *n elements of element type *type starting at *data (for strings: use kv->strs). */
int porta_gguf_get_arr(const struct porta_gguf *g, const char *key, enum porta_gguf_type *type,
                       uint64_t *n, const void **data);
/* Reads element i of a numeric array as double; PORTA_E_FORMAT for non-numeric arrays. */
int porta_gguf_arr_num(const struct porta_gguf_kv *kv, uint64_t i, double *out);

/* Compares a porta_str with a C string. */
bool porta_str_eq(struct porta_str s, const char *c);

/* ---- writer: builds a GGUF v3 file in memory (for porta synth, the quantizer and tests) ---- */
struct porta_gguf_writer;
int porta_gguf_writer_create(struct porta_gguf_writer **out);
void porta_gguf_writer_destroy(struct porta_gguf_writer *w);        /* NULL ok */
int porta_gguf_w_u32(struct porta_gguf_writer *w, const char *key, uint32_t v);
int porta_gguf_w_i32(struct porta_gguf_writer *w, const char *key, int32_t v);
int porta_gguf_w_f32(struct porta_gguf_writer *w, const char *key, float v);
int porta_gguf_w_bool(struct porta_gguf_writer *w, const char *key, bool v);
int porta_gguf_w_str(struct porta_gguf_writer *w, const char *key, const char *v);
/* Arrays of numbers: elem type among the scalar types; data holds n packed elements. */
int porta_gguf_w_arr(struct porta_gguf_writer *w, const char *key, enum porta_gguf_type elem,
                     const void *data, uint64_t n);
int porta_gguf_w_arr_str(struct porta_gguf_writer *w, const char *key, const char *const *v,
                         uint64_t n);
/* Adds a tensor; data (nbytes = the type's row size x rows) is copied. ne[0] is the row length. */
int porta_gguf_w_tensor(struct porta_gguf_writer *w, const char *name, enum porta_dtype type,
                        int n_dims, const uint64_t *ne, const void *data, size_t nbytes);
/* Serializes to a malloc'd buffer (caller frees) or to a file. */
int porta_gguf_w_to_mem(struct porta_gguf_writer *w, void **buf, size_t *size);
int porta_gguf_w_to_file(struct porta_gguf_writer *w, const char *path);

#endif /* PORTA_GGUF_H */
