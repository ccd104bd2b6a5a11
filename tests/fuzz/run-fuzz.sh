#!/usr/bin/env bash
# Builds every libFuzzer harness in tests/fuzz with clang (ASan + UBSan) and runs each
# for N seconds (default 60), starting from its seed corpus tests/fuzz/corpus/<name>.
#
#   tests/fuzz/run-fuzz.sh [SECONDS] [HARNESS...]     (default: all harnesses)
#
# New inputs go to a scratch corpus, crashes to $BR_FUZZ_OUT/<name>/crashes (default
# build/fuzz). Prints executions and crashes per harness; exits non-zero when any harness
# crashed (or failed to build). CC_FUZZ picks the compiler (default clang).
#
# Needs clang with libFuzzer; on Debian 12 that is package libclang-rt-14-dev.
set -eu

secs="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${BR_FUZZ_OUT:-$root/build/fuzz}"
cc="${CC_FUZZ:-clang}"
all=(gguf decode request http_request tokenizer)
# The shard loader's harness, once the shard format (sharding/shard.c) is in the tree.
if [ -f "$root/sharding/shard.c" ]; then all+=(shard); fi
if [ $# -gt 0 ]; then harnesses=("$@"); else harnesses=("${all[@]}"); fi

# The library sources each harness needs (paths from the repository root).
sources() {
    case "$1" in
    gguf) echo sharding/gguf.c sharding/types.c common/status.c common/buf.c ;;
    decode) echo sharding/decode.c sharding/types.c kernels/ternary.c kernels/bigmem.c common/status.c ;;
    request) echo proto/proto.c common/status.c common/buf.c ;;
    http_request) echo coordinator/http_api.c proto/proto.c common/status.c common/buf.c ;;
    tokenizer)
        echo coordinator/tokenizer.c coordinator/tokenizer_gguf.c coordinator/tokenizer_pre.c \
            coordinator/unicode.c sharding/gguf.c sharding/types.c common/status.c common/buf.c
        ;;
    shard)
        echo worker/model.c sharding/shard.c sharding/gguf.c sharding/types.c sharding/config.c \
            sharding/plan.c sharding/decode.c kernels/ternary.c kernels/dispatch.c kernels/ops.c \
            kernels/q8.c kernels/kset.c kernels/attn.c kernels/q6k.c kernels/fhead.c kernels/scratch.c \
            kernels/bigmem.c \
            common/status.c common/progress.c common/buf.c
        ;;
    *) return 1 ;;
    esac
}
libs() {
    case "$1" in
    request) echo -lmsgpackc ;;
    http_request) echo -ljansson -lmsgpackc ;;
    esac
}
# Extra flags: the shard harness leaves out the ISA-specific kernel files (they need
# their own -m flags), so the dispatcher's CPU probe goes unused and the scalar
# reference kernels run.
cflags() {
    case "$1" in
    shard) echo -Wno-unused-function ;;
    esac
}
# Longest input per harness: whole files for the GGUF reader, short texts for the
# tokenizer (its cost grows with the input; bugs need no long ones).
max_len() {
    case "$1" in
    gguf) echo 65536 ;;
    decode) echo 16384 ;;
    request) echo 16384 ;;
    http_request) echo 16384 ;;
    tokenizer) echo 2048 ;;
    shard) echo 262144 ;;
    esac
}

build() {
    local name=$1 srcs=()
    read -r -a srcs <<<"$(sources "$name")"
    local paths=()
    for s in "${srcs[@]}"; do paths+=("$root/$s"); done
    # shellcheck disable=SC2046
    "$cc" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
        -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror \
        -DBR_FUZZ_REPO_ROOT="\"$root\"" $(cflags "$name") \
        -I"$root/include" -I"$root" \
        "$root/tests/fuzz/fuzz_$name.c" "${paths[@]}" $(libs "$name") -lpthread -lm \
        -o "$out/$name/fuzz_$name"
}

status=0
summary=()
for name in "${harnesses[@]}"; do
    if ! sources "$name" >/dev/null; then
        echo "unknown harness '$name' (have: ${all[*]})" >&2
        exit 2
    fi
    dir="$out/$name"
    rm -rf "$dir/crashes"
    mkdir -p "$dir/corpus" "$dir/crashes"
    if ! build "$name" 2>"$dir/build.log"; then
        cat "$dir/build.log" >&2
        summary+=("fuzz_$name: BUILD FAILED (log $dir/build.log)")
        status=1
        continue
    fi
    seeds="$root/tests/fuzz/corpus/$name"
    [ -d "$seeds" ] || seeds=
    log="$dir/fuzz.log"
    set +e
    # libFuzzer stops at the first crash and saves the input as crashes/crash-<sha1>.
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$dir/fuzz_$name" -max_total_time="$secs" -max_len="$(max_len "$name")" \
        -rss_limit_mb=2048 -timeout=25 -artifact_prefix="$dir/crashes/" -print_final_stats=1 \
        "$dir/corpus" ${seeds:+"$seeds"} >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -E "^stat::number_of_executed_units:" "$log" | awk '{ s += $2 } END { print s + 0 }')
    if [ "$execs" -eq 0 ]; then
        # no final stats (a crash ends the run early): take the last progress line, "#N ..."
        execs=$(grep -oE "^#[0-9]+" "$log" | tail -n 1 | tr -d '#')
        execs="${execs:-0}"
    fi
    crashes=$(find "$dir/crashes" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
        -o -name 'oom-*' \) | wc -l)
    line="fuzz_$name: ${secs}s, $execs executions, $crashes crashes (exit $rc, log $log)"
    echo "$line"
    summary+=("$line")
    if [ "$crashes" -gt 0 ] || [ "$rc" -ne 0 ]; then
        grep -m 20 -E "ERROR|runtime error|SUMMARY|Assertion|abort|disagrees|!= x|diverges" "$log" || true
        status=1
    fi
done
echo "=== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status
