/* hip_cuda.h - the thin hip-to-cuda layer: the HIP runtime calls that backends/hip uses,
 * written over the CUDA runtime API, so that the same host code (built with
 * -DPORTA_HIP_ON_CUDA) runs on NVIDIA GPUs. Plain C; needs only cuda_runtime_api.h (CUDA 12
 * or newer: modules are cudaLibrary_t, kernels cudaKernel_t launched by cudaLaunchKernel). */
#ifndef PORTA_HIP_CUDA_H
#define PORTA_HIP_CUDA_H

#include <cuda_runtime_api.h>
#include <stdio.h>

typedef cudaError_t hipError_t;
typedef cudaStream_t hipStream_t;
typedef cudaEvent_t hipEvent_t;
typedef cudaLibrary_t hipModule_t;
typedef cudaKernel_t hipFunction_t;
typedef struct cudaDeviceProp hipDeviceProp_t;
typedef enum cudaMemcpyKind hipMemcpyKind;

#define hipSuccess cudaSuccess
#define hipErrorNoDevice cudaErrorNoDevice
#define hipErrorInsufficientDriver cudaErrorInsufficientDriver
#define hipErrorOutOfMemory cudaErrorMemoryAllocation
#define hipErrorNoBinaryForGpu cudaErrorNoKernelImageForDevice
#define hipStreamNonBlocking cudaStreamNonBlocking
#define hipEventDisableTiming cudaEventDisableTiming
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipHostMallocDefault cudaHostAllocDefault

/* Real functions rather than macros: the backend keeps their addresses in its call table. */
static inline hipError_t hipGetDeviceCount(int *n) { return cudaGetDeviceCount(n); }
static inline hipError_t hipSetDevice(int d) { return cudaSetDevice(d); }
static inline hipError_t hipGetDeviceProperties(hipDeviceProp_t *p, int d)
{
    return cudaGetDeviceProperties(p, d);
}
static inline hipError_t hipMemGetInfo(size_t *free_b, size_t *total_b)
{
    return cudaMemGetInfo(free_b, total_b);
}
static inline hipError_t hipRuntimeGetVersion(int *v) { return cudaRuntimeGetVersion(v); }
static inline hipError_t hipDriverGetVersion(int *v) { return cudaDriverGetVersion(v); }
static inline const char *hipGetErrorName(hipError_t e) { return cudaGetErrorName(e); }
static inline const char *hipGetErrorString(hipError_t e) { return cudaGetErrorString(e); }

static inline hipError_t hipStreamCreateWithFlags(hipStream_t *s, unsigned flags)
{
    return cudaStreamCreateWithFlags(s, flags);
}
static inline hipError_t hipStreamDestroy(hipStream_t s) { return cudaStreamDestroy(s); }
static inline hipError_t hipStreamSynchronize(hipStream_t s) { return cudaStreamSynchronize(s); }
static inline hipError_t hipStreamWaitEvent(hipStream_t s, hipEvent_t e, unsigned flags)
{
    return cudaStreamWaitEvent(s, e, flags);
}
static inline hipError_t hipEventCreateWithFlags(hipEvent_t *e, unsigned flags)
{
    return cudaEventCreateWithFlags(e, flags);
}
static inline hipError_t hipEventRecord(hipEvent_t e, hipStream_t s)
{
    return cudaEventRecord(e, s);
}
static inline hipError_t hipEventSynchronize(hipEvent_t e) { return cudaEventSynchronize(e); }
static inline hipError_t hipEventDestroy(hipEvent_t e) { return cudaEventDestroy(e); }

static inline hipError_t hipMalloc(void **p, size_t n) { return cudaMalloc(p, n); }
static inline hipError_t hipFree(void *p) { return cudaFree(p); }
static inline hipError_t hipHostMalloc(void **p, size_t n, unsigned flags)
{
    return cudaHostAlloc(p, n, flags);
}
static inline hipError_t hipHostFree(void *p) { return cudaFreeHost(p); }
static inline hipError_t hipMemcpyAsync(void *dst, const void *src, size_t n, hipMemcpyKind kind,
                                        hipStream_t s)
{
    return cudaMemcpyAsync(dst, src, n, kind, s);
}

/* image: a fatbin or cubin made by nvcc */
static inline hipError_t hipModuleLoadData(hipModule_t *m, const void *image)
{
    return cudaLibraryLoadData(m, image, NULL, NULL, 0, NULL, NULL, 0);
}
static inline hipError_t hipModuleGetFunction(hipFunction_t *f, hipModule_t m, const char *name)
{
    return cudaLibraryGetKernel(f, m, name);
}
static inline hipError_t hipModuleUnload(hipModule_t m) { return cudaLibraryUnload(m); }
static inline hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned gx, unsigned gy,
                                               unsigned gz, unsigned bx, unsigned by,
                                               unsigned bz, unsigned shared, hipStream_t s,
                                               void **args, void **extra)
{
    dim3 grid = { gx, gy, gz }, block = { bx, by, bz };
    (void)extra;
    return cudaLaunchKernel((const void *)f, grid, block, args, shared, s);
}

/* "sm_80": the architecture name that nvcc's -arch and porta's target lists use */
static inline void porta_hip_arch_name(const hipDeviceProp_t *p, char *buf, size_t n)
{
    snprintf(buf, n, "sm_%d%d", p->major, p->minor);
}

#endif /* PORTA_HIP_CUDA_H */
