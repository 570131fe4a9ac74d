/* device.c - the HIP runtime and its devices: the runtime loaded at run time (a machine without
 * ROCm gets a message and a fallback, not a loader error), error names, what each GPU is and
 * whether this binary has kernels for it (`porta devices`), and the choice of the device. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hip_priv.h"

#ifdef PORTA_HIP_ON_CUDA
#define REBUILD_HINT "make cuda CUDA_TARGETS=\"... %.64s\""
#else
#define REBUILD_HINT "make HIP_TARGETS=\"... %.64s\" (with a ROCm that knows it)"
#endif

struct hip_api hip_rt;
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static bool loaded;

#ifdef PORTA_HIP_ON_CUDA
int hip_api_load(void)
{
    pthread_mutex_lock(&load_lock);
    if (!loaded) {
#define HIP_SET(f) hip_rt.f = f;
        HIP_FUNCS(HIP_SET)
#undef HIP_SET
        loaded = true;
    }
    pthread_mutex_unlock(&load_lock);
    return 0;
}
#else
int hip_api_load(void)
{
    static const char *const libs[] = { "libamdhip64.so.5", "libamdhip64.so.6", "libamdhip64.so" };
    int rc = 0;
    pthread_mutex_lock(&load_lock);
    if (loaded)
        goto done;
    const char *env = getenv("PORTA_HIP_LIB"), *lib = NULL;
    char why[512] = "";
    void *h = NULL;
    for (size_t i = 0; i < sizeof libs / sizeof libs[0] && !h; i++) {
        lib = env && *env ? env : libs[i];
        h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!h && !why[0]) {
            const char *e = dlerror();
            snprintf(why, sizeof why, "%s", e ? e : lib);
        }
        if (env && *env)
            break;
    }
    if (!h) {
        porta_err("hip: cannot load the HIP runtime: %s; install libamdhip64-5 (Debian, Ubuntu) "
                  "or ROCm, or point PORTA_HIP_LIB at libamdhip64.so", why);
        rc = PORTA_E_NOTFOUND;
        goto done;
    }
    struct hip_api api;
#define HIP_SYM(f)                                                                             \
    if (!(api.f = (__typeof__(api.f))dlsym(h, #f))) {                                         \
        porta_err("hip: %s has no %s: not a HIP runtime this build can use", lib, #f);         \
        dlclose(h);                                                                            \
        rc = PORTA_E_NOTFOUND;                                                                 \
        goto done;                                                                             \
    }
    HIP_FUNCS(HIP_SYM)
#undef HIP_SYM
    hip_rt = api;       /* the library stays loaded: runtimes do not survive dlclose */
    loaded = true;
done:
    pthread_mutex_unlock(&load_lock);
    return rc;
}
#endif

const char *hip_errname(hipError_t e)
{
    const char *s = loaded ? hip_rt.hipGetErrorName(e) : NULL;
    return s ? s : "hipErrorUnknown";
}

int hip_status(hipError_t e)
{
    return e == hipErrorOutOfMemory ? PORTA_E_NOMEM : PORTA_E_DEVICE;
}

int hip_fail(const char *expr, hipError_t e, const char *file, int line)
{
    porta_err("hip: %s: %s (%d) at %s:%d", expr, hip_errname(e), (int)e, file, line);
    return hip_status(e);
}

/* "5.2.21153" (HIP: major * 10^7 + minor * 10^5 + patch) or "13.0" (CUDA: 1000 * major + 10 *
 * minor); "none" for 0 (no driver) */
static void fmt_version(int v, char *buf, size_t n)
{
    if (v <= 0)
        snprintf(buf, n, "none");
#ifdef PORTA_HIP_ON_CUDA
    else
        snprintf(buf, n, "%d.%d", v / 1000, v % 1000 / 10);
#else
    else
        snprintf(buf, n, "%d.%d.%d", v / 10000000, v / 100000 % 100, v % 100000);
#endif
}

/* Logs why there is no GPU to use and returns PORTA_E_NOTFOUND. */
static int no_device(hipError_t e)
{
    char targets[256];
    if (porta_hip_targets(targets, sizeof targets) < 0)
        snprintf(targets, sizeof targets, "(unreadable)");
#ifdef PORTA_HIP_ON_CUDA
    const char *hint = e == hipErrorInsufficientDriver
                           ? "no NVIDIA driver is loaded, or it is older than this CUDA runtime"
                           : "the CUDA runtime sees no NVIDIA GPU (see nvidia-smi and "
                             "CUDA_VISIBLE_DEVICES)";
#else
    const char *hint = access("/dev/kfd", F_OK) != 0
                           ? "there is no /dev/kfd: the amdgpu kernel driver is not loaded, or "
                             "this machine has no AMD GPU"
                       : access("/dev/kfd", R_OK | W_OK) != 0
                           ? "/dev/kfd is not accessible to this user (add it to the render and "
                             "video groups)"
                           : "the HIP runtime sees no AMD GPU (see rocminfo and "
                             "HIP_VISIBLE_DEVICES)";
#endif
    porta_err("hip: no GPU: hipGetDeviceCount: %s (%d): %s; this binary has kernels for %s",
              e == hipSuccess ? "0 devices" : hip_errname(e), (int)e, hint, targets);
    return PORTA_E_NOTFOUND;
}

/* The number of devices, or why there are none (logged). */
static int device_count(int *n)
{
    *n = 0;
    int rc = hip_api_load();
    if (rc)
        return rc;
    hipError_t e = hip_rt.hipGetDeviceCount(n);
    if (e == hipErrorNoDevice || e == hipErrorInsufficientDriver || (e == hipSuccess && *n <= 0))
        return no_device(e);
    if (e != hipSuccess)
        return hip_fail("hipGetDeviceCount", e, __FILE__, __LINE__);
    return 0;
}

/* ---- which embedded code object runs on a device ---- */

struct match {
    const char *arch;
    bool ok;
};

static void match_one(void *user, const char *target)
{
    struct match *m = user;
#ifdef PORTA_HIP_ON_CUDA
    /* a cubin runs on its own major at an equal or later minor; PTX on any later device */
    int dev = 0, t = 0;
    if (sscanf(m->arch, "sm_%d", &dev) != 1)
        return;
    if ((sscanf(target, "sm_%d", &t) == 1 && t / 10 == dev / 10 && t <= dev) ||
        (sscanf(target, "compute_%d", &t) == 1 && t <= dev))
        m->ok = true;
#else
    /* same processor; the feature flags (":xnack-") are for the runtime's loader to match */
    size_t n = strcspn(target, ":");
    if (n == strcspn(m->arch, ":") && strncmp(target, m->arch, n) == 0)
        m->ok = true;
#endif
}

static const struct porta_embedded_bin *image_for(const char *arch)
{
    for (int i = 0; porta_hip_images[i].name; i++) {
        struct match m = { arch, false };
        if (porta_hip_image_targets(porta_hip_images[i].data, porta_hip_images[i].size,
                                    match_one, &m) > 0 && m.ok)
            return &porta_hip_images[i];
    }
    return NULL;
}

/* ---- devices ---- */

int hip_devinfo_get(int i, struct hip_devinfo *d)
{
    memset(d, 0, sizeof *d);
    d->index = i;
    HIP_TRY(hip_rt.hipGetDeviceProperties(&d->prop, i));
    d->prop.name[sizeof d->prop.name - 1] = 0;
    porta_hip_arch_name(&d->prop, d->arch, sizeof d->arch);
    d->total_mem = d->prop.totalGlobalMem;
    d->image = image_for(d->arch);
    return 0;
}

void hip_devinfo_line(const struct hip_devinfo *d, char *buf, size_t n)
{
    char targets[256], kern[768];
    if (d->image) {
        snprintf(kern, sizeof kern, "kernels: %s", d->image->name);
    } else {
        if (porta_hip_targets(targets, sizeof targets) < 0)
            targets[0] = 0;
        snprintf(kern, sizeof kern, "no kernels for %.64s in this binary (built for %s); rebuild: "
                 REBUILD_HINT, d->arch, targets, d->arch);
    }
    char mem[64];
    if (d->free_mem)
        snprintf(mem, sizeof mem, "%.1f GiB (%.1f free)", d->total_mem / 1073741824.0,
                 d->free_mem / 1073741824.0);
    else
        snprintf(mem, sizeof mem, "%.1f GiB", d->total_mem / 1073741824.0);
    snprintf(buf, n, "hip: device %d: %s (%s), %d compute units, wave%d, %s; %s", d->index,
             d->prop.name, d->arch, d->prop.multiProcessorCount, d->prop.warpSize, mem, kern);
}

int hip_devices(porta_device_cb cb, void *user)
{
    char line[1024], targets[256], rtv[32] = "?", drv[32] = "?";
    int nt = porta_hip_targets(targets, sizeof targets), n, rc = hip_api_load();
    if (rc == 0) {
        int v = 0;
        if (hip_rt.hipRuntimeGetVersion(&v) == hipSuccess)
            fmt_version(v, rtv, sizeof rtv);
        v = 0;
        if (hip_rt.hipDriverGetVersion(&v) == hipSuccess)
            fmt_version(v, drv, sizeof drv);
    }
    snprintf(line, sizeof line, "hip: %s runtime %s, driver %s; kernels for %s", HIP_API_NAME,
             rc ? "not loaded" : rtv, rc ? "-" : drv, nt > 0 ? targets : "(unreadable)");
    cb(user, line);
    if (rc || (rc = device_count(&n)))
        return rc;
    for (int i = 0; i < n; i++) {
        struct hip_devinfo d;
        if ((rc = hip_devinfo_get(i, &d)))
            return rc;
        hip_devinfo_line(&d, line, sizeof line);
        cb(user, line);
    }
    return 0;
}

int hip_pick_device(const struct porta_backend_cfg *cfg, struct hip_devinfo *out)
{
    int n, rc = device_count(&n);
    if (rc)
        return rc;
    if (cfg->device >= n) {
        porta_err("hip: device %d requested, but there %s only %d", cfg->device,
                  n == 1 ? "is" : "are", n);
        return PORTA_E_CONFIG;
    }
    bool by_name = cfg->device_name && *cfg->device_name, unbuilt = false;
    char seen[1024] = "";
    struct hip_devinfo *d = malloc(sizeof *d);
    if (!d)
        return PORTA_E_NOMEM;
    for (int i = 0; i < n; i++) {
        if (cfg->device >= 0 && i != cfg->device)
            continue;
        if ((rc = hip_devinfo_get(i, d)))
            goto done;
        size_t len = strlen(seen);
        snprintf(seen + len, sizeof seen - len, "%s%d '%s' (%s)", len ? ", " : "", i,
                 d->prop.name, d->arch);
        if (by_name && !porta_device_name_matches(d->prop.name, cfg->device_name) &&
            !porta_device_name_matches(d->arch, cfg->device_name))
            continue;
        if (!d->image) {                /* remember the first for the message */
            if (!unbuilt)
                *out = *d;
            unbuilt = true;
            continue;
        }
        *out = *d;
        goto done;
    }
    if (unbuilt) {
        char targets[256];
        if (porta_hip_targets(targets, sizeof targets) < 0)
            targets[0] = 0;
        porta_err("hip: device %d '%s' is %s, but this binary has kernels only for %s; rebuild "
                  "with " REBUILD_HINT, out->index, out->prop.name, out->arch, targets, out->arch);
        rc = PORTA_E_UNSUPPORTED;
    } else {
        porta_err("hip: no device matches the name '%s'; devices: %s", cfg->device_name, seen);
        rc = PORTA_E_CONFIG;
    }
done:
    free(d);
    return rc;
}
