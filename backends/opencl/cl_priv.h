/* cl_priv.h - what the OpenCL backend's files share: the backend state, CL_TRY (every OpenCL
 * call checked, its error named), device queries and the program builder/cache.
 * Internal to backends/opencl; nothing outside includes it. */
#ifndef PORTA_CL_PRIV_H
#define PORTA_CL_PRIV_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "backend.h"

/* The kernel sources, embedded at build time by ci/embed.sh (build/kernels_cl.c). */
struct porta_embedded_src {
    const char *name;
    const char *text;
};
extern const struct porta_embedded_src porta_cl_sources[];

/* Name of an OpenCL status ("CL_OUT_OF_RESOURCES"); never NULL. */
const char *cl_errname(cl_int e);
/* porta status for a failed OpenCL call: allocation failures are PORTA_E_NOMEM (so the caller
 * can fall back to a smaller plan or another backend), everything else PORTA_E_DEVICE. */
int cl_status(cl_int e);

/* Logs "opencl: <expr>: <ERROR_NAME> (<code>) at file:line" and returns the porta status. */
int cl_fail(const char *expr, cl_int e, const char *file, int line);

/* Evaluates an OpenCL call; on failure logs it and returns from the enclosing function. */
#define CL_TRY(expr)                                                                           \
    do {                                                                                       \
        cl_int cl_e_ = (expr);                                                                 \
        if (cl_e_ != CL_SUCCESS)                                                               \
            return cl_fail(#expr, cl_e_, __FILE__, __LINE__);                                  \
    } while (0)

/* An error code e returned through a pointer by the call named what: same as CL_TRYF. */
#define CL_TRYF_E(e, what)                                                                     \
    do {                                                                                       \
        if ((e) != CL_SUCCESS) {                                                               \
            rc = cl_fail(what, (e), __FILE__, __LINE__);                                       \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

/* Same, but sets rc and jumps to the function's fail: label (for cleanup). */
#define CL_TRYF(expr)                                                                          \
    do {                                                                                       \
        cl_int cl_e_ = (expr);                                                                 \
        if (cl_e_ != CL_SUCCESS) {                                                             \
            rc = cl_fail(#expr, cl_e_, __FILE__, __LINE__);                                    \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

/* ---- devices (device.c) ---- */

struct cl_devinfo {
    cl_platform_id platform;
    cl_device_id device;
    int platform_index, device_index;
    char name[256], vendor[128], version[128], c_version[128], driver[128], platform_name[128],
        platform_version[128];
    cl_device_type type;
    cl_uint compute_units;
    cl_ulong global_mem, max_alloc, local_mem;
    size_t max_wg;
    cl_bool available, compiler, unified;
    bool fp16, subgroups;
};

/* Fills *d for a device. Returns 0 or PORTA_E_DEVICE (logged). */
int cl_devinfo_get(cl_platform_id p, cl_device_id dev, int pi, int di, struct cl_devinfo *d);
/* One line describing a device, for `porta devices` and the open log. */
void cl_devinfo_line(const struct cl_devinfo *d, char *buf, size_t n);
/* The vtable's devices(): one line per device of every platform. 0, or PORTA_E_NOTFOUND when
 * there is no platform (no ICD installed), PORTA_E_DEVICE on a driver error. */
int cl_devices(porta_device_cb cb, void *user);
/* Chooses the device that cfg asks for (platform/device index, device_name substring; -1 and
 * NULL mean the first usable, a GPU or accelerator before a CPU). 0, PORTA_E_NOTFOUND (no
 * device, or none matches: the candidates are logged), PORTA_E_CONFIG (index out of range). */
int cl_pick_device(const struct porta_backend_cfg *cfg, struct cl_devinfo *out);

/* ---- programs (program.c) ---- */

/* Builds the kernel program for one device: sources from cfg->kernel_dir when set (prelude.h
 * first, then the other .h, then the .cl files, sorted by name), else the embedded ones.
 * A binary cached on disk under cache_dir (NULL: $XDG_CACHE_HOME/porta or ~/.cache/porta;
 * "" disables the cache) is used when its key (device, driver, options, source hash) matches
 * and it builds; otherwise the program is compiled from source and the cache entry rewritten.
 * On a compile error the build log is logged. *out_cached tells whether the cache served it.
 * Returns 0, PORTA_E_IO / PORTA_E_CONFIG (kernel_dir unreadable), PORTA_E_DEVICE. */
int cl_program_build(cl_context ctx, const struct cl_devinfo *d, const char *kernel_dir,
                     const char *cache_dir, const char *options, cl_program *out,
                     bool *out_cached);
/* The cache file path that cl_program_build() would use, or "" when caching is off. */
void cl_program_cache_path(const struct cl_devinfo *d, const char *kernel_dir,
                           const char *cache_dir, const char *options, char *buf, size_t n);

#endif /* PORTA_CL_PRIV_H */
