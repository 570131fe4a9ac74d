/* test_weight_chunks.c - models larger than one backend buffer: with be->max_buf set below the
 * GGUF data section, the loader splits the weights into chunks of whole tensors; the logits must
 * be the same as with one buffer (bit for bit on the same backend), and a tensor larger than the
 * limit must be a clear error. */
#include "backend.h"
#include "model.h"
#include "testutil.h"

#define MODEL "arch/llama/model-f32.gguf"
#define NTOK 8

/* Prefill of the reference ids with weights split at `max_buf` (0: one buffer); logits of the
 * last token into out. Returns the load/forward status; *n_bufs receives the chunk count. */
static int run_llama(const char *backend, int device, size_t max_buf, float *out, int *n_bufs)
{
    struct porta_backend_cfg cfg = { .threads = 2, .platform = -1, .device = device };
    struct porta_backend *be;
    if (porta_backend_open(backend, &cfg, &be))
        return PORTA_E_NOTFOUND;
    be->max_buf = max_buf;
    struct porta_model *m;
    int rc = porta_model_load(tu_path(MODEL), be, &m);
    if (rc) {
        porta_backend_close(be);
        return rc;
    }
    *n_bufs = m->n_wbufs;
    struct porta_ctx *c;
    struct porta_ctx_params cp = { .n_ctx = 16, .n_seq = 1, .n_batch = 16, .kv_type = PORTA_F32 };
    rc = porta_ctx_create(m, &cp, &c);
    if (!rc) {
        int32_t ids[NTOK];
        for (int i = 0; i < NTOK; i++)
            ids[i] = (i * 37 + 5) % m->hp.n_vocab;
        struct porta_batch b = { .n_tok = NTOK, .ids = ids };
        rc = porta_forward(c, &b, out);
        porta_ctx_destroy(c);
    }
    porta_model_destroy(m);
    porta_backend_close(be);
    return rc;
}

/* the data section size and the largest tensor of the test model */
static void model_sizes(size_t *data, size_t *largest)
{
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open(tu_path(MODEL), &g), 0);
    *data = g->size - g->data_offset;
    *largest = 0;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].nbytes > *largest)
            *largest = g->tensors[i].nbytes;
    porta_gguf_close(g);
}

static void check_backend(const char *backend, int device)
{
    size_t data, largest;
    model_sizes(&data, &largest);
    ck_assert(largest < data / 3);
    float *a = malloc(sizeof(float) * 65536), *b = malloc(sizeof(float) * 65536);
    int na, nb;
    int rc = run_llama(backend, device, 0, a, &na);
    if (rc == PORTA_E_NOTFOUND) {
        free(a);
        free(b);
        return; /* backend not present on this machine */
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(na, 1);
    ck_assert_int_eq(run_llama(backend, device, largest + largest / 2, b, &nb), 0);
    ck_assert_msg(nb >= 3, "%s: %d chunks for %zu bytes at %zu per buffer", backend, nb, data,
                  largest + largest / 2);
    struct porta_gguf *g;
    ck_assert_int_eq(porta_gguf_open(tu_path(MODEL), &g), 0);
    const struct porta_gguf_tensor *te = porta_gguf_tensor(g, "token_embd.weight");
    int nv = (int)te->ne[1];
    porta_gguf_close(g);
    ck_assert_msg(memcmp(a, b, sizeof(float) * (size_t)nv) == 0,
                  "%s: chunked weights changed the logits", backend);
    /* a limit below the largest tensor: an error, not a crash or a silent fallback */
    ck_assert_int_eq(run_llama(backend, device, largest - 1, b, &nb), PORTA_E_UNSUPPORTED);
    free(a);
    free(b);
}

START_TEST(chunks_cpu)
{
    check_backend("cpu", 0);
}
END_TEST

START_TEST(chunks_opencl)
{
    check_backend("opencl", 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("weight_chunks");
    TCase *tc = tcase_create("chunks");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, chunks_cpu);
    tcase_add_test(tc, chunks_opencl);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    porta_log_set_level(PORTA_LOG_WARN);
    return tu_run(suite());
}
