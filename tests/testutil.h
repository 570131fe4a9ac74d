/* testutil.h - helpers shared by the Check suites: reference-data paths, file reading,
 * deterministic random numbers, error metrics. Header-only so each suite stays one file. */
#ifndef PORTA_TESTUTIL_H
#define PORTA_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ../shared/data, or $PORTA_SHARED (the Makefile exports an absolute path). */
static inline const char *tu_shared(void)
{
    const char *s = getenv("PORTA_SHARED");
    return s && *s ? s : "../shared/data";
}

/* Path under the shared data folder, in a rotating static buffer (4 live at once). */
static inline const char *tu_path(const char *rel)
{
    static char buf[4][1024];
    static int i;
    i = (i + 1) & 3;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tu_shared(), rel);
    return buf[i];
}

/* Whole file into a malloc'd buffer (NUL-terminated); NULL if unreadable. */
static inline void *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[sz] = 0;
        if (n)
            *n = (size_t)sz;
    }
    return b;
}

/* Parses a JSON array of integers ("[1, 2, 3]") into ids; returns the count (<= cap). */
static inline int tu_parse_ids(const char *s, int *ids, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        while (*s && (*s < '0' || *s > '9') && *s != '-')
            s++;
        if (!*s)
            break;
        ids[n++] = (int)strtol(s, (char **)&s, 10);
    }
    return n;
}

/* xorshift64*: deterministic across platforms. */
static inline unsigned long long tu_rng_next(unsigned long long *st)
{
    unsigned long long x = *st;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *st = x;
    return x * 0x2545F4914F6CDD1DULL;
}
/* Uniform in [-1, 1). */
static inline float tu_randf(unsigned long long *st)
{
    return (float)((tu_rng_next(st) >> 40) * (1.0 / (1ULL << 24)) * 2.0 - 1.0);
}
static inline void tu_fill(float *x, size_t n, unsigned long long seed, float scale)
{
    unsigned long long st = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++)
        x[i] = scale * tu_randf(&st);
}

/* Normalized mean squared error: sum((a-ref)^2) / sum(ref^2). */
static inline double tu_nmse(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static inline double tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || d != d)
            m = d != d ? INFINITY : d;
    }
    return m;
}

/* Runs a suite and returns the process exit status. */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf == 0 ? 0 : 1;
}

#endif /* PORTA_TESTUTIL_H */
