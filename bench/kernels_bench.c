/* kernels_bench.c - single-threaded speed of the CPU backend's vec_dot kernels: GB/s of weight
 * bytes through a matrix-vector product (rows of 4096) from memory (64 MB matrix) and from
 * cache (256 KB matrix), for each kernel table this CPU runs. Not a test; numbers only.
 *
 * Build and run from the repository root (per-file ISA flags as in the Makefile):
 *   mkdir -p /tmp/kb
 *   gcc -O2 -I. -Icore -mavx2 -mfma -mf16c -c backends/cpu/avx2.c -o /tmp/kb/avx2.o
 *   gcc -O2 -I. -Icore -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq \
 *       -mavx512vnni -mavx512bf16 -c backends/cpu/avx512.c -o /tmp/kb/avx512.o
 *   gcc -O2 -I. -Icore -pthread bench/kernels_bench.c backends/cpu/scalar_table.c \
 *       backends/cpu/cpuid.c core/quant.c core/log.c /tmp/kb/avx2.o /tmp/kb/avx512.o \
 *       -lm -o /tmp/kb/kernels_bench
 *   /tmp/kb/kernels_bench [types...]      (default: Q4_0 Q8_0 Q4_K Q6_K)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "backends/cpu/kernels.h"

#define N_COLS 4096

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static enum porta_dtype type_by_name(const char *s)
{
    for (int t = 0; t < PORTA_DTYPE_COUNT; t++)
        if (porta_type_traits(t) && strcmp(porta_type_traits(t)->name, s) == 0)
            return (enum porta_dtype)t;
    return PORTA_DTYPE_COUNT;
}

/* Best-of-reps GB/s of one matvec over n_rows rows. */
static double run(porta_vec_dot_fn dot, const uint8_t *w, size_t row_bytes, int64_t n_rows,
                  const void *act, float *out, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int64_t i = 0; i < n_rows; i++)
            dot(N_COLS, &out[i], w + (size_t)i * row_bytes, act);
        double dt = now() - t0;
        if (dt < best)
            best = dt;
    }
    return (double)row_bytes * (double)n_rows / best / 1e9;
}

/* A plain read of the same bytes (64-bit adds), as a rough bandwidth ceiling. */
static double read_bw(const uint8_t *w, size_t bytes, int reps)
{
    double best = 1e30;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        const uint64_t *p = (const uint64_t *)w;
        for (size_t i = 0; i + 4 <= bytes / 8; i += 4) {
            s0 += p[i];
            s1 += p[i + 1];
            s2 += p[i + 2];
            s3 += p[i + 3];
        }
        sink += s0 + s1 + s2 + s3;
        double dt = now() - t0;
        if (dt < best)
            best = dt;
    }
    (void)sink;
    return (double)bytes / best / 1e9;
}

int main(int argc, char **argv)
{
    const char *defaults[] = { "Q4_0", "Q8_0", "Q4_K", "Q6_K" };
    int ntypes = argc > 1 ? argc - 1 : 4;
    const char **names = argc > 1 ? (const char **)(argv + 1) : defaults;
    const struct { const char *set; const struct porta_cpu_kernels *k; } tabs[3] = {
        { "scalar", porta_cpu_kernels_scalar() },
        { "avx2", porta_cpu_has("avx2") ? porta_cpu_kernels_avx2() : NULL },
        { "avx512", porta_cpu_has("avx512") ? porta_cpu_kernels_avx512() : NULL },
    };
    const size_t big = 64u << 20, small = 256u << 10;
    uint8_t *w = aligned_alloc(2u << 20, big + (2u << 20));
    float *x = malloc(N_COLS * sizeof(float)), *out = malloc((big / 64) * sizeof(float));
    uint8_t *act = malloc(porta_row_size(PORTA_Q8_K, N_COLS) + porta_row_size(PORTA_F32, N_COLS));
    if (!w || !x || !out || !act)
        return 1;
    for (int i = 0; i < N_COLS; i++)
        x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    if (getenv("KB_HUGE"))
        madvise(w, big + 4096, MADV_HUGEPAGE);
    memset(w, 1, big + 4096);         /* touch every page: untouched ones all read the zero page */
    printf("plain read: %.1f GB/s from memory, %.1f GB/s from cache\n",
           read_bw(w, big, 3), read_bw(w, small, 200));
    printf("%-6s %-7s %14s %14s\n", "type", "kernels", "memory GB/s", "cache GB/s");
    for (int ti = 0; ti < ntypes; ti++) {
        enum porta_dtype t = type_by_name(names[ti]);
        const struct porta_type_traits *tr = porta_type_traits(t);
        if (!tr || !tr->vec_dot) {
            fprintf(stderr, "unknown weight type %s\n", names[ti]);
            continue;
        }
        size_t row_bytes = porta_row_size(t, N_COLS);
        /* 16 quantized rows, copied over the whole matrix (quantizing 64 MB is slow) */
        for (int r = 0; r < 16; r++) {
            for (int i = 0; i < N_COLS; i++)
                x[i] = (float)(((i + 31 * r) * 7919) % 1000) / 500.0f - 1.0f;
            porta_quantize_row(t, x, w + (size_t)r * row_bytes, N_COLS);
        }
        int64_t n_rows = (int64_t)(big / row_bytes), n_small = (int64_t)(small / row_bytes);
        for (int64_t r = 16; r < n_rows; r++)
            memcpy(w + (size_t)r * row_bytes, w + (size_t)(r % 16) * row_bytes, row_bytes);
        porta_quantize_row(tr->vec_dot_type, x, act, N_COLS);
        for (int k = 0; k < 3; k++) {
            if (!tabs[k].k)
                continue;
            porta_vec_dot_fn dot = tabs[k].k->vec_dot[t] ? tabs[k].k->vec_dot[t]
                                                         : tabs[0].k->vec_dot[t];
            double gm = run(dot, w, row_bytes, n_rows, act, out, k == 0 ? 1 : 10);
            double gc = run(dot, w, row_bytes, n_small, act, out, k == 0 ? 5 : 200);
            printf("%-6s %-7s %14.2f %14.2f%s\n", tr->name, tabs[k].set, gm, gc,
                   tabs[k].k->vec_dot[t] ? "" : "  (scalar fallback)");
        }
    }
    free(w);
    free(x);
    free(out);
    free(act);
    return 0;
}
