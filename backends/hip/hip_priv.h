/* hip_priv.h - what the HIP backend's files share: the HIP runtime calls (a table filled at
 * run time from libamdhip64, so a porta binary on a machine without ROCm still starts and
 * falls back; on NVIDIA the hip_cuda.h wrappers), HIP_TRY, and the device queries.
 * Internal to backends/hip; nothing outside includes it. */
#ifndef PORTA_HIP_PRIV_H
#define PORTA_HIP_PRIV_H

#include <stdio.h>

#ifdef PORTA_HIP_ON_CUDA
#include "hip_cuda.h"
#define HIP_API_NAME "HIP on CUDA"
#else
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__
#endif
#include <hip/hip_runtime_api.h>
#define HIP_API_NAME "HIP"
/* "gfx90a:sramecc+:xnack-": the target id the runtime matches code objects against */
static inline void porta_hip_arch_name(const hipDeviceProp_t *p, char *buf, size_t n)
{
    snprintf(buf, n, "%s", p->gcnArchName);
}
#endif

#include "backend.h"
#include "hip.h"

/* ---- the runtime (device.c) ---- */

#define HIP_FUNCS(X)                                                                           \
    X(hipGetDeviceCount) X(hipSetDevice) X(hipGetDeviceProperties) X(hipMemGetInfo)            \
    X(hipRuntimeGetVersion) X(hipDriverGetVersion) X(hipGetErrorName)                          \
    X(hipStreamCreateWithFlags) X(hipStreamDestroy) X(hipStreamSynchronize)                    \
    X(hipStreamWaitEvent) X(hipEventCreateWithFlags) X(hipEventRecord) X(hipEventSynchronize)  \
    X(hipEventDestroy) X(hipMalloc) X(hipFree) X(hipHostMalloc) X(hipHostFree)                 \
    X(hipMemcpyAsync) X(hipModuleLoadData) X(hipModuleGetFunction) X(hipModuleUnload)          \
    X(hipModuleLaunchKernel)

struct hip_api {
#define HIP_API_FIELD(f) __typeof__(f) *f;
    HIP_FUNCS(HIP_API_FIELD)
#undef HIP_API_FIELD
};

/* The runtime's entry points; valid after hip_api_load() returned 0. */
extern struct hip_api hip_rt;

/* Loads the HIP runtime (once; thread-safe): libamdhip64.so.5, .so.6 or .so, or the file that
 * $PORTA_HIP_LIB names. Returns 0, or PORTA_E_NOTFOUND (logged: which library, why, what to
 * install) when it is absent or lacks an entry point. Always 0 on CUDA (linked in). */
int hip_api_load(void);

/* Name of a HIP status ("hipErrorNoDevice"); never NULL. */
const char *hip_errname(hipError_t e);
/* porta status for a failed call: out of memory is PORTA_E_NOMEM, the rest PORTA_E_DEVICE. */
int hip_status(hipError_t e);
/* Logs "hip: <expr>: <hipErrorName> (<code>) at file:line" and returns the porta status. */
int hip_fail(const char *expr, hipError_t e, const char *file, int line);

/* Evaluates a HIP call; on failure logs it and returns from the enclosing function. */
#define HIP_TRY(expr)                                                                          \
    do {                                                                                       \
        hipError_t hip_e_ = (expr);                                                            \
        if (hip_e_ != hipSuccess)                                                              \
            return hip_fail(#expr, hip_e_, __FILE__, __LINE__);                                \
    } while (0)

/* Same, but sets rc and jumps to the function's fail: label (for cleanup). */
#define HIP_TRYF(expr)                                                                         \
    do {                                                                                       \
        hipError_t hip_e_ = (expr);                                                            \
        if (hip_e_ != hipSuccess) {                                                            \
            rc = hip_fail(#expr, hip_e_, __FILE__, __LINE__);                                  \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

/* ---- devices (device.c) ---- */

struct hip_devinfo {
    int index;
    hipDeviceProp_t prop;
    char arch[256];                             /* "gfx1030", "sm_80" */
    size_t free_mem, total_mem;
    const struct porta_embedded_bin *image;     /* the code object for it; NULL: none */
};

/* Fills *d for device i. 0, or PORTA_E_DEVICE (logged). */
int hip_devinfo_get(int i, struct hip_devinfo *d);
/* One line describing a device, for `porta devices` and the open log. */
void hip_devinfo_line(const struct hip_devinfo *d, char *buf, size_t n);
/* The vtable's devices(): a line with the runtime and the embedded targets, then one per
 * device. 0, or PORTA_E_NOTFOUND (logged with the reason: no runtime, no driver, no GPU). */
int hip_devices(porta_device_cb cb, void *user);
/* Chooses the device that cfg asks for (device index, device_name substring; -1 and NULL mean
 * the first one this binary has kernels for). 0, PORTA_E_NOTFOUND (no runtime or no GPU, the
 * reason logged), PORTA_E_CONFIG (index out of range, or no name matches), PORTA_E_UNSUPPORTED
 * (the device is not among the built targets: the message says how to rebuild). */
int hip_pick_device(const struct porta_backend_cfg *cfg, struct hip_devinfo *out);

#endif /* PORTA_HIP_PRIV_H */
