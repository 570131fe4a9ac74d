/* program.c - the kernel program of one device: sources joined into one translation unit,
 * compiled with the build log shown on failure, and cached on disk as a device binary keyed by
 * device, driver, build options and a hash of the source. A cache entry is checked (magic,
 * key, length, checksum) and must still build; otherwise it is rebuilt, never trusted. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cl_priv.h"

#define CACHE_MAGIC "PORTACL1"

/* ---- hashing (FNV-1a 64) ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return fnv(h, s, strlen(s) + 1); }

/* ---- sources ---- */

struct src {
    char *name;
    char *text;
};

static int src_order(const void *a, const void *b)
{
    const struct src *x = a, *y = b;
    /* prelude.h, then the other headers, then the .cl files; by name within each group */
    int gx = strcmp(x->name, "prelude.h") == 0 ? 0 : strstr(x->name, ".h") ? 1 : 2;
    int gy = strcmp(y->name, "prelude.h") == 0 ? 0 : strstr(y->name, ".h") ? 1 : 2;
    return gx != gy ? gx - gy : strcmp(x->name, y->name);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long n;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = 0;
        }
    }
    fclose(f);
    return buf;
}

static void srcs_free(struct src *s, int n)
{
    for (int i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].text);
    }
    free(s);
}

/* The .h/.cl files of dir (or the embedded table when dir is NULL), sorted for joining. */
static int srcs_load(const char *dir, struct src **out, int *n_out)
{
    struct src *s = NULL;
    int n = 0, cap = 0, rc = 0;
    DIR *d = NULL;
    if (dir) {
        d = opendir(dir);
        if (!d) {
            porta_err("opencl: kernel_dir '%s': %s", dir, strerror(errno));
            return PORTA_E_IO;
        }
    }
    for (int i = 0;; i++) {
        const char *name, *text = NULL;
        char path[4096];
        if (d) {
            struct dirent *e = readdir(d);
            if (!e)
                break;
            name = e->d_name;
            if (!ends_with(name, ".cl") && !ends_with(name, ".h"))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, name);
        } else {
            if (!porta_cl_sources[i].name)
                break;
            name = porta_cl_sources[i].name;
            text = porta_cl_sources[i].text;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            struct src *ns = realloc(s, (size_t)cap * sizeof *s);
            if (!ns) {
                rc = PORTA_E_NOMEM;
                goto fail;
            }
            s = ns;
        }
        s[n].name = strdup(name);
        s[n].text = d ? read_text(path) : strdup(text);
        n++;
        if (!s[n - 1].name || !s[n - 1].text) {
            if (d && s[n - 1].name && !s[n - 1].text) {
                porta_err("opencl: cannot read kernel source %s: %s", path, strerror(errno));
                rc = PORTA_E_IO;
            } else {
                rc = PORTA_E_NOMEM;
            }
            goto fail;
        }
    }
    if (d)
        closedir(d);
    d = NULL;
    qsort(s, (size_t)n, sizeof *s, src_order);
    if (n == 0 || strcmp(s[0].name, "prelude.h") != 0) {
        porta_err("opencl: kernel sources%s%s have no prelude.h", dir ? " in " : "",
                  dir ? dir : "");
        rc = dir ? PORTA_E_CONFIG : PORTA_E_DEVICE;
        goto fail;
    }
    *out = s;
    *n_out = n;
    return 0;
fail:
    if (d)
        closedir(d);
    srcs_free(s, n);
    return rc;
}

/* One translation unit, each file preceded by a #line so compiler messages name it. */
static char *srcs_join(const struct src *s, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(s[i].text) + strlen(s[i].name) + 32;
    char *all = malloc(len), *p = all;
    if (!all)
        return NULL;
    for (int i = 0; i < n; i++)
        p += sprintf(p, "#line 1 \"%s\"\n%s\n", s[i].name, s[i].text);
    *p = 0;
    return all;
}

/* ---- cache ---- */

static uint64_t cache_key(const struct cl_devinfo *d, const char *options, const char *source)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv_str(h, d->platform_name);
    h = fnv_str(h, d->platform_version);
    h = fnv_str(h, d->name);
    h = fnv_str(h, d->version);
    h = fnv_str(h, d->driver);
    h = fnv_str(h, options);
    return fnv_str(h, source);
}

static void cache_dir_of(const char *cache_dir, char *buf, size_t n)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (cache_dir)
        snprintf(buf, n, "%s", cache_dir);
    else if (xdg && *xdg)
        snprintf(buf, n, "%s/porta", xdg);
    else if (home && *home)
        snprintf(buf, n, "%s/.cache/porta", home);
    else
        buf[0] = 0;
}

static void path_for(const char *dir, uint64_t key, char *buf, size_t n)
{
    if (!*dir)
        buf[0] = 0;
    else
        snprintf(buf, n, "%s/opencl-%016llx.bin", dir, (unsigned long long)key);
}

void cl_program_cache_path(const struct cl_devinfo *d, const char *kernel_dir,
                           const char *cache_dir, const char *options, char *buf, size_t n)
{
    struct src *s = NULL;
    int ns = 0;
    char dir[4096];
    buf[0] = 0;
    cache_dir_of(cache_dir, dir, sizeof dir);
    if (!*dir || srcs_load(kernel_dir, &s, &ns))
        return;
    char *all = srcs_join(s, ns);
    if (all)
        path_for(dir, cache_key(d, options, all), buf, n);
    free(all);
    srcs_free(s, ns);
}

/* mkdir -p; returns 0 or -1 */
static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

/* The binary stored for key at path, or NULL (missing or invalid: logged when invalid). */
static unsigned char *cache_read(const char *path, uint64_t key, size_t *n_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char hdr[32], *bin = NULL;
    uint64_t k, n, sum;
    const char *why = "truncated header";
    if (fread(hdr, 1, sizeof hdr, f) != sizeof hdr)
        goto bad;
    memcpy(&k, hdr + 8, 8);
    memcpy(&n, hdr + 16, 8);
    memcpy(&sum, hdr + 24, 8);
    why = "wrong magic or key";
    if (memcmp(hdr, CACHE_MAGIC, 8) != 0 || k != key)
        goto bad;
    why = "implausible size";
    if (n == 0 || n > ((uint64_t)1 << 31))
        goto bad;
    why = "truncated binary";
    bin = malloc((size_t)n);
    if (!bin || fread(bin, 1, (size_t)n, f) != (size_t)n || fgetc(f) != EOF)
        goto bad;
    why = "checksum mismatch";
    if (fnv(0xcbf29ce484222325ULL, bin, (size_t)n) != sum)
        goto bad;
    fclose(f);
    *n_out = (size_t)n;
    return bin;
bad:
    porta_warn("opencl: kernel cache %s is unusable (%s); rebuilding it", path, why);
    free(bin);
    fclose(f);
    return NULL;
}

static void cache_write(const char *dir, const char *path, uint64_t key, const unsigned char *bin,
                        size_t n)
{
    char tmp[4300];
    if (mkdirs(dir)) {
        porta_warn("opencl: cannot create kernel cache folder %s: %s", dir, strerror(errno));
        return;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        porta_warn("opencl: cannot write kernel cache %s: %s", tmp, strerror(errno));
        return;
    }
    uint64_t len = n, sum = fnv(0xcbf29ce484222325ULL, bin, n);
    bool ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&key, 8, 1, f) == 1 &&
              fwrite(&len, 8, 1, f) == 1 && fwrite(&sum, 8, 1, f) == 1 &&
              fwrite(bin, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        porta_warn("opencl: cannot write kernel cache %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

/* ---- build ---- */

static void log_build(cl_program prog, cl_device_id dev, const char *what)
{
    size_t n = 0;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) != CL_SUCCESS)
        return;
    char *log = malloc(n + 1);
    if (!log)
        return;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, n, log, NULL) == CL_SUCCESS) {
        log[n] = 0;
        /* porta_log lines are bounded: print the log in pieces */
        porta_err("opencl: %s failed; build log (%zu bytes):", what, n);
        for (size_t i = 0; i < n && log[i]; i += 900)
            porta_err("%.900s", log + i);
    }
    free(log);
}

static int build_from_binary(cl_context ctx, cl_device_id dev, const unsigned char *bin, size_t n,
                             const char *options, cl_program *out)
{
    cl_int e, st = CL_SUCCESS;
    cl_program p = clCreateProgramWithBinary(ctx, 1, &dev, &n, &bin, &st, &e);
    if (e != CL_SUCCESS || st != CL_SUCCESS) {
        if (p)
            clReleaseProgram(p);
        return -1;
    }
    if (clBuildProgram(p, 1, &dev, options, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(p);
        return -1;
    }
    *out = p;
    return 0;
}

static unsigned char *program_binary(cl_program p, size_t *n_out)
{
    size_t n = 0;
    if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) != CL_SUCCESS || !n)
        return NULL;
    unsigned char *bin = malloc(n);
    if (bin && clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) {
        free(bin);
        return NULL;
    }
    *n_out = n;
    return bin;
}

int cl_program_build(cl_context ctx, const struct cl_devinfo *d, const char *kernel_dir,
                     const char *cache_dir, const char *options, cl_program *out,
                     bool *out_cached)
{
    struct src *s = NULL;
    int ns = 0, rc;
    char *all = NULL;
    unsigned char *bin = NULL;
    cl_program p = NULL;
    char dir[4096], path[4200];
    *out = NULL;
    *out_cached = false;
    if ((rc = srcs_load(kernel_dir, &s, &ns)))
        return rc;
    rc = PORTA_E_NOMEM;
    if (!(all = srcs_join(s, ns)))
        goto fail;
    uint64_t key = cache_key(d, options, all);
    cache_dir_of(cache_dir, dir, sizeof dir);
    path_for(dir, key, path, sizeof path);

    size_t n = 0;
    if (*path && (bin = cache_read(path, key, &n))) {
        if (build_from_binary(ctx, d->device, bin, n, options, &p) == 0) {
            *out_cached = true;
            goto done;
        }
        porta_warn("opencl: kernel cache %s does not load on this device; rebuilding it", path);
        free(bin);
        bin = NULL;
    }

    cl_int e;
    const char *text = all;
    p = clCreateProgramWithSource(ctx, 1, &text, NULL, &e);
    CL_TRYF_E(e, "clCreateProgramWithSource");
    double t0 = porta_time_s();
    e = clBuildProgram(p, 1, &d->device, options, NULL, NULL);
    if (e != CL_SUCCESS) {
        log_build(p, d->device, "compiling the kernels");
        CL_TRYF_E(e, "clBuildProgram");
    }
    porta_dbg("opencl: kernels compiled in %.2f s", porta_time_s() - t0);
    if (*path) {
        if ((bin = program_binary(p, &n)))
            cache_write(dir, path, key, bin, n);
        else
            porta_warn("opencl: the driver gave no program binary; kernels are not cached");
    }
done:
    *out = p;
    p = NULL;
    rc = 0;
fail:
    if (p)
        clReleaseProgram(p);
    free(bin);
    free(all);
    srcs_free(s, ns);
    return rc;
}
