/* prelude.h - the OpenCL C 1.2 side of porta's kernel dialect. Every kernel file in kernels/cl
 * is plain C plus these macros; kernels/gpu_prelude.h defines the same names for hipcc and
 * nvcc, so one kernel source runs on all three.
 * The backend puts this file first, then the other .h files, then the .cl files, into one
 * translation unit (no #include between kernel files). */

/* ---- declarations ---- */
#define KERNEL __kernel void            /* a kernel entry point (extern "C" under HIP/CUDA) */
/* a device helper function; always inlined, so that the compile-time type and size arguments
 * fold away and private arrays stay in registers (PoCL would otherwise call unit_op) */
#define DEVFN static inline __attribute__((always_inline))
#define GLOBAL __global
#define LOCAL __local
#define CONSTANT __constant
#define LOCAL_ARRAY(type, name, n) __local type name[n]   /* at kernel scope only */

/* ---- indexing (always int: porta never launches 2^31 work-items in one dimension) ---- */
#define GLOBAL_ID(d) ((int)get_global_id(d))
#define LOCAL_ID(d) ((int)get_local_id(d))
#define GROUP_ID(d) ((int)get_group_id(d))
#define LOCAL_SIZE(d) ((int)get_local_size(d))
#define NUM_GROUPS(d) ((int)get_num_groups(d))
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE)

/* ---- integer types ---- */
typedef uchar u8;
typedef char i8;
typedef ushort u16;
typedef short i16;
typedef uint u32;
typedef int i32;
typedef ulong u64;
typedef long i64;

/* ---- half / bfloat16 / bit casts ---- */
#define AS_FLOAT(u) as_float((uint)(u))
#define AS_UINT(f) as_uint((float)(f))
/* element i of a run of IEEE halfs at p (p 2-byte aligned, any global pointer type) */
#ifdef PORTA_SOFT_HALF
/* CPU devices: PoCL converts vload_half one element at a time; half_bits_to_float()
 * (dequant.h) is branch-free integer code that vectorizes. */
#define LOAD_HALF(p, i) half_bits_to_float(((GLOBAL const ushort *)(p))[i])
#else
#define LOAD_HALF(p, i) vload_half((i), (GLOBAL const half *)(p))
#endif
/* stores float v, rounded to nearest even, as element i of the halfs at p */
#define STORE_HALF(v, p, i) vstore_half_rte((v), (i), (GLOBAL half *)(p))

/* ---- float math (single precision on every target) ---- */
#define EXPF(x) exp(x)
#define LOGF(x) log(x)
#define SQRTF(x) sqrt(x)
#define COSF(x) cos(x)
#define SINF(x) sin(x)
#define FMAXF(a, b) fmax((a), (b))
#define FMINF(a, b) fmin((a), (b))
#define FABSF(x) fabs(x)
/* a*b+c; compilers may contract it to one fused operation */
#define MAD(a, b, c) ((a) * (b) + (c))
/* before a loop with a compile-time trip count: unroll it fully (keeps arrays in registers) */
#define UNROLL _Pragma("unroll")

/* ---- row vectors: one value for each of RV_N rows, operated on as one (matvec_rows.cl's row
 * packs, for CPU devices: a SIMD register each, so that the lanes are rows whatever the
 * compiler's vectorizer would pick). The usual operators apply (+ - * on rv_f, + - * & | ^ ~
 * << >> on rv_u, a scalar on either side); kernels/gpu_prelude.h defines them for HIP/CUDA. */
#define RV_N 16
typedef uint16 rv_u;
typedef float16 rv_f;
#define RV_LOAD_U16(p) convert_uint16(vload16(0, (GLOBAL const ushort *)(p))) /* RV_N at p */
#define RV_U(s) ((rv_u)(s))                             /* every lane s */
#define RV_F(s) ((rv_f)(s))
#define RV_AS_F(u) as_float16(u)
#define RV_AS_U(f) as_uint16(f)
#define RV_CVT_F(u) convert_float16(u)                  /* unsigned lanes to float */
#define RV_GE(a, s) as_uint16((a) >= (rv_u)(s))         /* all ones where a >= s, else 0 */
#define RV_STORE(v, p) vstore16((v), 0, (p))            /* the lanes to float p[RV_N] */

/* a hint that the line at global address p will be read soon (CPU devices, where a compiler
 * that knows __builtin_prefetch turns it into a prefetch instruction); never faults */
#if defined(__has_builtin)
#if __has_builtin(__builtin_prefetch)
#define PREFETCH(p) __builtin_prefetch((p), 0, 3)
#endif
#endif
#ifndef PREFETCH
#define PREFETCH(p) ((void)0)
#endif

/* ---- optional fast paths (none on the baseline) ---- */
#define PORTA_TARGET_OPENCL 1
