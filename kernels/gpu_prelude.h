/* gpu_prelude.h - the HIP and CUDA side of porta's kernel dialect: the same macros as
 * kernels/cl/prelude.h, so hipcc (-x hip) and nvcc (-x cu) compile the kernels/cl sources
 * unchanged (this file first, then the other kernels/cl headers, then the .cl files, as one
 * translation unit). HIP's device API mirrors CUDA's, so only the headers and the target macro
 * differ. Nothing here assumes a warp size (32 or 64 lanes). */
#if defined(__HIP__) || defined(__HIPCC__)
#include <hip/hip_runtime.h>
#include <hip/hip_fp16.h>
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#endif
#include <stdint.h>

#define KERNEL extern "C" __global__ void
#define DEVFN static __device__ inline
#define GLOBAL
#define LOCAL
#define CONSTANT __constant__
#define LOCAL_ARRAY(type, name, n) __shared__ type name[n]

#define PORTA_DIM3(v, d) ((d) == 0 ? (int)(v).x : (d) == 1 ? (int)(v).y : (int)(v).z)
#define GLOBAL_ID(d) (PORTA_DIM3(blockIdx, d) * PORTA_DIM3(blockDim, d) + PORTA_DIM3(threadIdx, d))
#define LOCAL_ID(d) PORTA_DIM3(threadIdx, d)
#define GROUP_ID(d) PORTA_DIM3(blockIdx, d)
#define LOCAL_SIZE(d) PORTA_DIM3(blockDim, d)
#define NUM_GROUPS(d) PORTA_DIM3(gridDim, d)
#define BARRIER() __syncthreads()

typedef uint8_t u8;
typedef int8_t i8;
typedef uint16_t u16;
typedef int16_t i16;
typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;
typedef int64_t i64;

#define LOAD_HALF(p, i) __half2float(((const __half *)(p))[i])
#define STORE_HALF(v, p, i) (((__half *)(p))[i] = __float2half_rn(v))
#define AS_FLOAT(u) __uint_as_float((unsigned int)(u))
#define AS_UINT(f) __float_as_uint((float)(f))

#define EXPF(x) expf(x)
#define LOGF(x) logf(x)
#define SQRTF(x) sqrtf(x)
#define COSF(x) cosf(x)
#define SINF(x) sinf(x)
#define FMAXF(a, b) fmaxf((a), (b))
#define FMINF(a, b) fminf((a), (b))
#define FABSF(x) fabsf(x)
#define MAD(a, b, c) ((a) * (b) + (c))
/* before a loop with a compile-time trip count: unroll it fully (keeps arrays in registers) */
#define UNROLL _Pragma("unroll")

/* row vectors (see kernels/cl/prelude.h): RV_N lanes in an array, each operator a lane loop */
#define RV_N 16
struct rv_u {
    unsigned v[RV_N];
};
struct rv_f {
    float v[RV_N];
};
#define PORTA_RV_OP(T, S, op)                                                                 \
    __device__ inline T operator op(T a, T b)                                                 \
    {                                                                                         \
        T r;                                                                                  \
        for (int i = 0; i < RV_N; i++)                                                        \
            r.v[i] = a.v[i] op b.v[i];                                                        \
        return r;                                                                             \
    }                                                                                         \
    __device__ inline T operator op(T a, S b)                                                 \
    {                                                                                         \
        T r;                                                                                  \
        for (int i = 0; i < RV_N; i++)                                                        \
            r.v[i] = a.v[i] op b;                                                             \
        return r;                                                                             \
    }                                                                                         \
    __device__ inline T operator op(S a, T b)                                                 \
    {                                                                                         \
        T r;                                                                                  \
        for (int i = 0; i < RV_N; i++)                                                        \
            r.v[i] = a op b.v[i];                                                             \
        return r;                                                                             \
    }
PORTA_RV_OP(rv_u, unsigned, +)
PORTA_RV_OP(rv_u, unsigned, -)
PORTA_RV_OP(rv_u, unsigned, *)
PORTA_RV_OP(rv_u, unsigned, &)
PORTA_RV_OP(rv_u, unsigned, |)
PORTA_RV_OP(rv_u, unsigned, ^)
PORTA_RV_OP(rv_u, unsigned, <<)
PORTA_RV_OP(rv_u, unsigned, >>)
PORTA_RV_OP(rv_f, float, +)
PORTA_RV_OP(rv_f, float, -)
PORTA_RV_OP(rv_f, float, *)
/* a row vector whose lane i is expr (of the argument a and the lane i) */
#define PORTA_RV_FN(name, TR, TA, expr)                                                       \
    __device__ inline TR name(TA a)                                                           \
    {                                                                                         \
        TR r;                                                                                 \
        for (int i = 0; i < RV_N; i++)                                                        \
            r.v[i] = (expr);                                                                  \
        return r;                                                                             \
    }
PORTA_RV_FN(operator~, rv_u, rv_u, ~a.v[i])
PORTA_RV_FN(porta_rv_load_u16, rv_u, const uint16_t *, a[i])
PORTA_RV_FN(porta_rv_u, rv_u, unsigned, a)
PORTA_RV_FN(porta_rv_f, rv_f, float, a)
PORTA_RV_FN(porta_rv_as_f, rv_f, rv_u, __uint_as_float(a.v[i]))
PORTA_RV_FN(porta_rv_as_u, rv_u, rv_f, __float_as_uint(a.v[i]))
PORTA_RV_FN(porta_rv_cvt_f, rv_f, rv_u, (float)a.v[i])
__device__ inline rv_u porta_rv_ge(rv_u a, unsigned s)
{
    rv_u r;
    for (int i = 0; i < RV_N; i++)
        r.v[i] = a.v[i] >= s ? ~0u : 0u;
    return r;
}
__device__ inline void porta_rv_store(rv_f v, float *p)
{
    for (int i = 0; i < RV_N; i++)
        p[i] = v.v[i];
}
#define PREFETCH(p) ((void)0)     /* GPUs hide memory latency with other warps */
#define RV_LOAD_U16(p) porta_rv_load_u16((const uint16_t *)(p))
#define RV_U(s) porta_rv_u(s)
#define RV_F(s) porta_rv_f(s)
#define RV_AS_F(u) porta_rv_as_f(u)
#define RV_AS_U(f) porta_rv_as_u(f)
#define RV_CVT_F(u) porta_rv_cvt_f(u)
#define RV_GE(a, s) porta_rv_ge((a), (s))
#define RV_STORE(v, p) porta_rv_store((v), (p))

#if defined(__HIP__) || defined(__HIPCC__)
#define PORTA_TARGET_HIP 1
#else
#define PORTA_TARGET_CUDA 1
#endif
