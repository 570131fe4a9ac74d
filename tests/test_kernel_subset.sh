#!/bin/sh
# test_kernel_subset.sh - proves that kernels/cl is written in the common subset: compiles the
# kernel sources as one translation unit (prelude, the other headers, every .cl, the order the
# backends use) through kernels/gpu_prelude.h with hipcc and with nvcc,
# when those compilers are present. Prints what it checked; exits non-zero on any failure.
# Usage: tests/test_kernel_subset.sh [kernel dir]   (HIPCC, NVCC override the compilers)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
kdir=${1:-$root/kernels/cl}
HIPCC=${HIPCC:-$(command -v hipcc || true)}
NVCC=${NVCC:-$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/porta-subset.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# one translation unit: $1 = prelude, then headers (prelude.h excluded), then .cl files
unit() {
    cat "$1"
    for f in "$kdir"/*.h; do [ "$(basename "$f")" = prelude.h ] || { printf '#line 1 "%s"\n' "$f"; cat "$f"; }; done
    for f in "$kdir"/*.cl; do printf '#line 1 "%s"\n' "$f"; cat "$f"; done
}

fail=0; checked=0
nkern=$(ls "$kdir"/*.cl 2>/dev/null | wc -l)
[ "$nkern" -gt 0 ] || { echo "check_kernel_subset: no .cl files in $kdir"; exit 1; }

if [ -n "$HIPCC" ] && [ -x "$HIPCC" ]; then
    unit "$root/kernels/gpu_prelude.h" > "$tmp/all.hip"
    if "$HIPCC" --genco --offload-arch=gfx906 --offload-arch=gfx1030 -O2 -Werror=implicit-function-declaration \
            -x hip "$tmp/all.hip" -o "$tmp/all.hsaco" 2> "$tmp/hip.log"; then
        cat "$tmp/hip.log"; echo "check_kernel_subset: hipcc (gfx906, gfx1030): $nkern kernel files OK"
    else
        cat "$tmp/hip.log"; echo "check_kernel_subset: hipcc FAILED"; fail=1
    fi
    checked=$((checked + 1))
else
    echo "check_kernel_subset: hipcc not found, HIP check skipped"
fi

if [ -n "$NVCC" ] && [ -x "$NVCC" ]; then
    unit "$root/kernels/gpu_prelude.h" > "$tmp/all.cu"
    if "$NVCC" -cubin -arch=sm_80 -O2 -x cu "$tmp/all.cu" -o "$tmp/all.cubin" 2> "$tmp/cuda.log"; then
        cat "$tmp/cuda.log"; echo "check_kernel_subset: nvcc (sm_80): $nkern kernel files OK"
    else
        cat "$tmp/cuda.log"; echo "check_kernel_subset: nvcc FAILED"; fail=1
    fi
    checked=$((checked + 1))
else
    echo "check_kernel_subset: nvcc not found, CUDA check skipped"
fi

echo "check_kernel_subset: $checked compiler(s) checked, $([ $fail -eq 0 ] && echo ok || echo FAILED)"
exit $fail
