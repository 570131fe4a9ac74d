/* cpuid.c - which SIMD kernel tables the running CPU and OS can execute: CPUID feature bits
 * plus XGETBV, since the OS must save the YMM / ZMM registers for AVX / AVX-512 to be usable. */
#include "kernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* XCR0 state-component bits: SSE (1), AVX upper halves (2), opmask (5), ZMM0-15 upper
 * halves (6), ZMM16-31 (7). */
#define XCR0_YMM 0x06u
#define XCR0_ZMM 0xE6u

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

struct cpu_bits {
    bool avx2;     /* AVX2 + FMA + F16C, YMM state enabled */
    bool avx512;   /* the above plus AVX-512 F/BW/VL/DQ/VNNI/BF16, ZMM state enabled */
};

static struct cpu_bits cpu_probe(void)
{
    struct cpu_bits r = { false, false };
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7 || !__get_cpuid(1, &a, &b, &c, &d))
        return r;
    bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    bool fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave || !avx)
        return r;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & XCR0_YMM) != XCR0_YMM)
        return r;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return r;
    unsigned max7 = a;
    r.avx2 = fma && f16c && (b & (1u << 5));
    bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    bool vnni = c & (1u << 11), bf16 = false;
    if (max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
        bf16 = a & (1u << 5);
    r.avx512 = r.avx2 && f && dq && bw && vl && vnni && bf16 && (xcr0 & XCR0_ZMM) == XCR0_ZMM;
    return r;
}

/* True when the running CPU and OS support the kernel set `set`: "scalar" always; "avx2"
 * (AVX2, FMA, F16C); "avx512" (those plus AVX-512 F, BW, VL, DQ, VNNI, BF16). False for any
 * other name or NULL. Cheap enough to call at start-up; not meant for inner loops. */
bool porta_cpu_has(const char *set)
{
    if (!set)
        return false;
    if (strcmp(set, "scalar") == 0)
        return true;
    struct cpu_bits r = cpu_probe();
    if (strcmp(set, "avx2") == 0)
        return r.avx2;
    if (strcmp(set, "avx512") == 0)
        return r.avx512;
    return false;
}

#else /* not x86: only the scalar table */

bool porta_cpu_has(const char *set)
{
    return set && strcmp(set, "scalar") == 0;
}

#endif
