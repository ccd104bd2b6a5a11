#!/usr/bin/env bash
# Runs the kernel and pool tests of an x86-64 build on emulated CPUs that lack the host's
# features (qemu-x86_64 user mode): Haswell (AVX2 and F16C, no AVX-512: the CI's case) and
# Nehalem (no AVX: the scalar reference). Checks that dispatch picks a variant the CPU
# can run, that nothing executes an instruction the CPU lacks, and that the skipped
# variants say why.
# Usage: kernels/test-isa-qemu.sh [build-dir]   (default build/k)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/k}"
command -v qemu-x86_64 >/dev/null || { echo "skip: qemu-x86_64 not installed (qemu-user)"; exit 77; }
for cpu in Haswell-v4 Nehalem; do
    echo "== emulated $cpu"
    qemu-x86_64 -cpu "$cpu" "$build/tests/kernels_test" 2>&1 | grep -E "active kernels|PASSED|FAILED|SKIP  \]" | sort | uniq -c
    qemu-x86_64 -cpu "$cpu" "$build/tests/kernels_test" >/dev/null 2>&1
    qemu-x86_64 -cpu "$cpu" "$build/tests/pool_test" >/dev/null 2>&1
    qemu-x86_64 -cpu "$cpu" "$build/tests/q8_test" >/dev/null 2>&1
    qemu-x86_64 -cpu "$cpu" "$build/tests/q6k_test" >/dev/null 2>&1
    qemu-x86_64 -cpu "$cpu" "$build/tests/fhead_test" >/dev/null 2>&1
done
echo PASSED
