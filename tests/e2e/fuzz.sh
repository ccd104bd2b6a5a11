#!/usr/bin/env bash
# Runs every libFuzzer harness (tests/fuzz/run-fuzz.sh) for BR_FUZZ_SECONDS each (default
# 60). Fuzzing is slow and the suite runs in several build configurations, so it only
# runs when BR_FUZZ=1 (tests/run sets it for the release configuration); otherwise, or
# when clang or libFuzzer is missing, it prints SKIP and passes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if [ "${BR_FUZZ:-0}" != 1 ]; then
    echo "SKIP: fuzzing runs only with BR_FUZZ=1 (tests/run sets it for the release build)"
    exit 0
fi
cc="${CC_FUZZ:-clang}"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "SKIP: $cc not found (install clang and libclang-rt-14-dev)"
    exit 0
fi
# libFuzzer ships with compiler-rt; a clang without it fails to link -fsanitize=fuzzer.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
cat >"$probe/p.c" <<'C'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }
C
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
    echo "SKIP: $cc cannot link libFuzzer (install libclang-rt-14-dev): $(head -n 1 "$probe/err")"
    exit 0
fi
out="${BR_TMP:-$root/build}/fuzz"
BR_FUZZ_OUT="$out" bash "$root/tests/fuzz/run-fuzz.sh" "${BR_FUZZ_SECONDS:-60}"
