#!/usr/bin/env bash
# Builds the GGUF reader's libFuzzer harness with clang (ASan + UBSan) and runs it for N
# seconds (default 60), starting from tests/fuzz/corpus/gguf. New inputs go to a scratch
# corpus, crashes to $BR_FUZZ_OUT (default build/fuzz). Prints executions and crashes;
# exits non-zero when a crash was found.
#
# Needs clang with libFuzzer; on Debian 12 that is package libclang-rt-14-dev.
set -eu

secs="${1:-60}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${BR_FUZZ_OUT:-$root/build/fuzz}"
cc="${CC_FUZZ:-clang}"
mkdir -p "$out/corpus" "$out/crashes"

"$cc" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
    -I"$root/include" -I"$root" \
    "$root/tests/fuzz/fuzz_gguf.c" "$root/sharding/gguf.c" "$root/sharding/types.c" \
    "$root/common/status.c" -lpthread -lm -o "$out/fuzz_gguf"

log="$out/fuzz.log"
set +e
# libFuzzer stops at the first crash and saves the input as crashes/crash-<sha1>.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
"$out/fuzz_gguf" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="$out/crashes/" -print_final_stats=1 \
    "$out/corpus" "$root/tests/fuzz/corpus/gguf" >"$log" 2>&1
rc=$?
set -e

execs=$(grep -E "^stat::number_of_executed_units:" "$log" | awk '{ s += $2 } END { print s + 0 }')
if [ "$execs" -eq 0 ]; then
    # no final stats (a crash ends the run early): take the last progress line, "#N ..."
    execs=$(grep -oE "^#[0-9]+" "$log" | tail -n 1 | tr -d '#')
    execs="${execs:-0}"
fi
crashes=$(find "$out/crashes" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
echo "fuzz_gguf: ${secs}s, $execs executions, $crashes crashes (exit $rc, log $log)"
if [ "$crashes" -gt 0 ] || [ "$rc" -ne 0 ]; then
    grep -m 20 -E "ERROR|runtime error|SUMMARY" "$log" || true
    exit 1
fi
