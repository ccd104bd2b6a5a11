#!/usr/bin/env bash
# Cross-compiles the kernels and the stand-alone exactness check (kernels/tools/
# kernel_check.c) for aarch64 and runs it under qemu-aarch64: once on an emulated CPU
# with the dot-product extension (both NEON flavours are checked) and once on a CPU
# without it (the automatic choice must fall back to plain NEON).
# Needs: gcc-aarch64-linux-gnu, qemu-user (apt-get install -y gcc-aarch64-linux-gnu qemu-user).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/build/neon}"
mkdir -p "$out"
CC="${CC:-aarch64-linux-gnu-gcc}"
command -v "$CC" >/dev/null || { echo "skip: $CC not installed"; exit 77; }
command -v qemu-aarch64 >/dev/null || { echo "skip: qemu-aarch64 not installed"; exit 77; }
"$CC" -std=c11 -O2 -static -D_GNU_SOURCE -DBR_HAVE_NEON=1 \
    -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror \
    -I"$root" -I"$root/include" \
    "$here/tools/kernel_check.c" "$here/ternary.c" "$here/ternary_neon.c" "$here/ops.c" \
    "$here/dispatch.c" "$here/q8.c" "$here/q8_neon.c" "$here/fhead.c" "$here/fhead_neon.c" \
    "$here/q6k.c" "$here/q6k_neon.c" "$here/scratch.c" "$here/bigmem.c" \
    -lm -o "$out/kernel_check"
echo "== emulated CPU with SDOT (max)"
qemu-aarch64 -cpu max "$out/kernel_check" neon neon-nodot ref
echo "== emulated CPU without SDOT (cortex-a57)"
qemu-aarch64 -cpu cortex-a57 "$out/kernel_check" neon neon-nodot
