/* device.c - OpenCL platforms and devices: error names, what each device offers (for
 * `porta devices`), and the choice of the device the config asks for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_priv.h"

const char *cl_errname(cl_int e)
{
    switch (e) {
#define E(x) case x: return #x
    E(CL_SUCCESS); E(CL_DEVICE_NOT_FOUND); E(CL_DEVICE_NOT_AVAILABLE);
    E(CL_COMPILER_NOT_AVAILABLE); E(CL_MEM_OBJECT_ALLOCATION_FAILURE); E(CL_OUT_OF_RESOURCES);
    E(CL_OUT_OF_HOST_MEMORY); E(CL_PROFILING_INFO_NOT_AVAILABLE); E(CL_MEM_COPY_OVERLAP);
    E(CL_IMAGE_FORMAT_MISMATCH); E(CL_IMAGE_FORMAT_NOT_SUPPORTED); E(CL_BUILD_PROGRAM_FAILURE);
    E(CL_MAP_FAILURE); E(CL_MISALIGNED_SUB_BUFFER_OFFSET);
    E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST); E(CL_COMPILE_PROGRAM_FAILURE);
    E(CL_LINKER_NOT_AVAILABLE); E(CL_LINK_PROGRAM_FAILURE); E(CL_DEVICE_PARTITION_FAILED);
    E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE); E(CL_INVALID_VALUE); E(CL_INVALID_DEVICE_TYPE);
    E(CL_INVALID_PLATFORM); E(CL_INVALID_DEVICE); E(CL_INVALID_CONTEXT);
    E(CL_INVALID_QUEUE_PROPERTIES); E(CL_INVALID_COMMAND_QUEUE); E(CL_INVALID_HOST_PTR);
    E(CL_INVALID_MEM_OBJECT); E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR); E(CL_INVALID_IMAGE_SIZE);
    E(CL_INVALID_SAMPLER); E(CL_INVALID_BINARY); E(CL_INVALID_BUILD_OPTIONS);
    E(CL_INVALID_PROGRAM); E(CL_INVALID_PROGRAM_EXECUTABLE); E(CL_INVALID_KERNEL_NAME);
    E(CL_INVALID_KERNEL_DEFINITION); E(CL_INVALID_KERNEL); E(CL_INVALID_ARG_INDEX);
    E(CL_INVALID_ARG_VALUE); E(CL_INVALID_ARG_SIZE); E(CL_INVALID_KERNEL_ARGS);
    E(CL_INVALID_WORK_DIMENSION); E(CL_INVALID_WORK_GROUP_SIZE); E(CL_INVALID_WORK_ITEM_SIZE);
    E(CL_INVALID_GLOBAL_OFFSET); E(CL_INVALID_EVENT_WAIT_LIST); E(CL_INVALID_EVENT);
    E(CL_INVALID_OPERATION); E(CL_INVALID_GL_OBJECT); E(CL_INVALID_BUFFER_SIZE);
    E(CL_INVALID_MIP_LEVEL); E(CL_INVALID_GLOBAL_WORK_SIZE); E(CL_INVALID_PROPERTY);
    E(CL_INVALID_IMAGE_DESCRIPTOR); E(CL_INVALID_COMPILER_OPTIONS); E(CL_INVALID_LINKER_OPTIONS);
    E(CL_INVALID_DEVICE_PARTITION_COUNT);
#undef E
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "CL_UNKNOWN_ERROR";
    }
}

int cl_status(cl_int e)
{
    return e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_HOST_MEMORY ||
                   e == CL_OUT_OF_RESOURCES || e == CL_INVALID_BUFFER_SIZE
               ? PORTA_E_NOMEM
               : PORTA_E_DEVICE;
}

int cl_fail(const char *expr, cl_int e, const char *file, int line)
{
    porta_err("opencl: %s: %s (%d) at %s:%d", expr, cl_errname(e), (int)e, file, line);
    return cl_status(e);
}

static void str_info(cl_device_id dev, cl_device_info what, char *buf, size_t n)
{
    buf[0] = 0;
    if (clGetDeviceInfo(dev, what, n, buf, NULL) != CL_SUCCESS)
        snprintf(buf, n, "?");
    buf[n - 1] = 0;
}

/* Whether the space-separated extension list of dev names ext (whole word). */
static bool has_ext(cl_device_id dev, const char *ext)
{
    size_t n = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS || n == 0)
        return false;
    char *s = malloc(n + 1);
    if (!s)
        return false;
    bool found = false;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, s, NULL) == CL_SUCCESS) {
        s[n] = 0;
        size_t len = strlen(ext);
        for (char *p = strstr(s, ext); p && !found; p = strstr(p + 1, ext))
            found = (p == s || p[-1] == ' ') && (p[len] == ' ' || p[len] == 0);
    }
    free(s);
    return found;
}

int cl_devinfo_get(cl_platform_id p, cl_device_id dev, int pi, int di, struct cl_devinfo *d)
{
    memset(d, 0, sizeof *d);
    d->platform = p;
    d->device = dev;
    d->platform_index = pi;
    d->device_index = di;
    if (clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof d->platform_name, d->platform_name, NULL))
        snprintf(d->platform_name, sizeof d->platform_name, "?");
    if (clGetPlatformInfo(p, CL_PLATFORM_VERSION, sizeof d->platform_version,
                          d->platform_version, NULL))
        snprintf(d->platform_version, sizeof d->platform_version, "?");
    d->platform_name[sizeof d->platform_name - 1] = 0;
    d->platform_version[sizeof d->platform_version - 1] = 0;
    str_info(dev, CL_DEVICE_NAME, d->name, sizeof d->name);
    str_info(dev, CL_DEVICE_VENDOR, d->vendor, sizeof d->vendor);
    str_info(dev, CL_DEVICE_VERSION, d->version, sizeof d->version);
    str_info(dev, CL_DEVICE_OPENCL_C_VERSION, d->c_version, sizeof d->c_version);
    str_info(dev, CL_DRIVER_VERSION, d->driver, sizeof d->driver);
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof d->type, &d->type, NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof d->compute_units,
                           &d->compute_units, NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d->global_mem, &d->global_mem,
                           NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d->max_alloc, &d->max_alloc,
                           NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof d->local_mem, &d->local_mem,
                           NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof d->max_wg, &d->max_wg,
                           NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_AVAILABLE, sizeof d->available, &d->available, NULL));
    CL_TRY(clGetDeviceInfo(dev, CL_DEVICE_COMPILER_AVAILABLE, sizeof d->compiler, &d->compiler,
                           NULL));
    if (clGetDeviceInfo(dev, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof d->unified, &d->unified, NULL))
        d->unified = CL_FALSE;
    d->fp16 = has_ext(dev, "cl_khr_fp16");
    d->subgroups = has_ext(dev, "cl_khr_subgroups") || has_ext(dev, "cl_intel_subgroups");
    return 0;
}

static const char *type_name(cl_device_type t)
{
    return t & CL_DEVICE_TYPE_GPU           ? "GPU"
           : t & CL_DEVICE_TYPE_ACCELERATOR ? "accelerator"
           : t & CL_DEVICE_TYPE_CPU         ? "CPU"
                                            : "other";
}

void cl_devinfo_line(const struct cl_devinfo *d, char *buf, size_t n)
{
    snprintf(buf, n,
             "opencl: platform %d device %d: %s (%s; %s, %s) %s, %u compute units, "
             "%.1f GiB global, %.1f GiB max buffer, %llu KiB local; %s; fp16 %s, subgroups %s%s",
             d->platform_index, d->device_index, d->name, d->platform_name, d->vendor, d->driver,
             type_name(d->type), d->compute_units, d->global_mem / 1073741824.0,
             d->max_alloc / 1073741824.0, (unsigned long long)(d->local_mem / 1024), d->c_version,
             d->fp16 ? "yes" : "no", d->subgroups ? "yes" : "no",
             !d->available ? " [not available]" : !d->compiler ? " [no compiler]" : "");
}

/* Lists every device; calls fn for each (stops when fn returns non-zero). */
static int each_device(int (*fn)(void *user, const struct cl_devinfo *d), void *user)
{
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e == -1001 || (e == CL_SUCCESS && np == 0)) {
        porta_err("opencl: no OpenCL platform found (is an ICD such as pocl-opencl-icd or a GPU "
                  "driver installed?)");
        return PORTA_E_NOTFOUND;
    }
    if (e != CL_SUCCESS)
        return cl_fail("clGetPlatformIDs", e, __FILE__, __LINE__);
    cl_platform_id ps[16];
    if (np > 16)
        np = 16;
    CL_TRY(clGetPlatformIDs(np, ps, NULL));
    for (cl_uint pi = 0; pi < np; pi++) {
        cl_uint nd = 0;
        e = clGetDeviceIDs(ps[pi], CL_DEVICE_TYPE_ALL, 0, NULL, &nd);
        if (e == CL_DEVICE_NOT_FOUND)
            continue;
        if (e != CL_SUCCESS)
            return cl_fail("clGetDeviceIDs", e, __FILE__, __LINE__);
        if (nd == 0)
            continue;
        cl_device_id ds[64];
        if (nd > 64)
            nd = 64;
        CL_TRY(clGetDeviceIDs(ps[pi], CL_DEVICE_TYPE_ALL, nd, ds, NULL));
        for (cl_uint di = 0; di < nd; di++) {
            struct cl_devinfo d;
            int rc = cl_devinfo_get(ps[pi], ds[di], (int)pi, (int)di, &d);
            if (rc)
                return rc;
            if (fn(user, &d))
                return 0;
        }
    }
    return 0;
}

struct list_ctx {
    porta_device_cb cb;
    void *user;
    int n;
};

static int list_one(void *user, const struct cl_devinfo *d)
{
    struct list_ctx *l = user;
    char line[1024];
    cl_devinfo_line(d, line, sizeof line);
    l->cb(l->user, line);
    l->n++;
    return 0;
}

int cl_devices(porta_device_cb cb, void *user)
{
    struct list_ctx l = { cb, user, 0 };
    int rc = each_device(list_one, &l);
    if (rc == 0 && l.n == 0) {
        porta_err("opencl: the OpenCL platforms have no devices");
        return PORTA_E_NOTFOUND;
    }
    return rc;
}

struct pick_ctx {
    const struct porta_backend_cfg *cfg;
    struct cl_devinfo best;
    int score;                      /* of best; 0 = none */
    int n_platforms, n_seen;
    char seen[1024];                /* names of the candidates, for the error message */
};

static int pick_one(void *user, const struct cl_devinfo *d)
{
    struct pick_ctx *p = user;
    const struct porta_backend_cfg *cfg = p->cfg;
    if (d->platform_index + 1 > p->n_platforms)
        p->n_platforms = d->platform_index + 1;
    if (cfg->platform >= 0 && d->platform_index != cfg->platform)
        return 0;
    size_t len = strlen(p->seen);
    snprintf(p->seen + len, sizeof p->seen - len, "%s'%s' (%d.%d)", p->n_seen ? ", " : "",
             d->name, d->platform_index, d->device_index);
    p->n_seen++;
    if (cfg->device >= 0 && d->device_index != cfg->device)
        return 0;
    if (cfg->device_name && *cfg->device_name && !porta_device_name_matches(d->name, cfg->device_name))
        return 0;
    if (!d->available || !d->compiler)
        return 0;
    /* in fully automatic mode a CPU device (PoCL, Intel's CPU runtime) is not taken: the cpu
     * backend runs the same cores faster; choosing one by index or name still works */
    bool chosen = cfg->platform >= 0 || cfg->device >= 0 ||
                  (cfg->device_name && *cfg->device_name);
    int score = d->type & (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR) ? 2 : chosen ? 1 : 0;
    if (score > p->score) {
        p->best = *d;
        p->score = score;
    }
    return 0;
}

int cl_pick_device(const struct porta_backend_cfg *cfg, struct cl_devinfo *out)
{
    struct pick_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return PORTA_E_NOMEM;
    p->cfg = cfg;
    int rc = each_device(pick_one, p);
    if (rc)
        goto done;
    if (cfg->platform >= p->n_platforms) {
        porta_err("opencl: platform %d requested, but there %s only %d", cfg->platform,
                  p->n_platforms == 1 ? "is" : "are", p->n_platforms);
        rc = PORTA_E_CONFIG;
        goto done;
    }
    if (!p->score) {
        porta_err("opencl: no usable device matches platform %d, device %d%s%s%s (auto mode "
                  "takes GPUs and accelerators only); candidates: %s",
                  cfg->platform, cfg->device, cfg->device_name ? ", name '" : "",
                  cfg->device_name ? cfg->device_name : "", cfg->device_name ? "'" : "",
                  p->n_seen ? p->seen : "none");
        rc = PORTA_E_NOTFOUND;
        goto done;
    }
    *out = p->best;
done:
    free(p);
    return rc;
}
