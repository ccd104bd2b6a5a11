#!/usr/bin/env bash
# Malformed GGUF files through the command line: gguf_test writes its corpus (one file per
# broken field, and truncations of a valid file at every header offset) and `bitrack info`
# must refuse each one the way a user should see it: a non-zero exit that is not a signal,
# exactly one line on stderr, and no sanitizer report.
#
# Env: BR_BIN (the bitrack executable), BR_TMP (scratch), BR_TEST_DATA (tests/data).
set -u

: "${BR_BIN:?BR_BIN must name the bitrack executable}"
: "${BR_TMP:?BR_TMP must name a scratch directory}"

gen="$(dirname "$BR_BIN")/tests/gguf_test"
if [ ! -x "$gen" ]; then
    echo "SKIP: $gen is not built (configure with BR_BUILD_TESTS=ON)"
    exit 0
fi

# `bitrack info` may not exist yet; then there is nothing to check.
probe=$("$BR_BIN" info 2>&1 </dev/null)
if grep -qi "unknown command" <<<"$probe"; then
    echo "SKIP: '$BR_BIN info' is not implemented yet ($(head -n 1 <<<"$probe"))"
    exit 0
fi

dir="$BR_TMP/malformed"
rm -rf "$dir"
mkdir -p "$dir"
if ! BR_CORPUS_DIR="$dir" "$gen"; then
    echo "FAIL: $gen could not write the corpus to $dir"
    exit 1
fi

out="$BR_TMP/gguf_corpus.out"
err="$BR_TMP/gguf_corpus.err"
n=0
bad=0
for f in "$dir"/*.gguf; do
    n=$((n + 1))
    "$BR_BIN" info -m "$f" >"$out" 2>"$err"
    rc=$?
    # awk counts a last line without a newline too
    lines=$(awk 'END { print NR }' "$err")
    why=""
    if [ "$rc" -eq 0 ]; then
        why="exit status 0"
    elif [ "$rc" -ge 128 ]; then
        why="killed by signal $((rc - 128))"
    elif grep -qE "AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error" "$err"; then
        why="sanitizer report"
    elif [ "$lines" -ne 1 ]; then
        why="$lines lines on stderr"
    fi
    if [ -n "$why" ]; then
        bad=$((bad + 1))
        echo "FAIL: $(basename "$f"): $why (exit $rc)"
        head -n 5 "$err" | sed 's/^/    /'
    fi
done

# A valid model must still be accepted, or every refusal above proves nothing.
model="${BR_TEST_DATA:?BR_TEST_DATA must name tests/data}/bitnet-cpp/gqa-i2_s.gguf"
if [ ! -f "$model" ]; then
    bad=$((bad + 1))
    echo "FAIL: missing test data file $model (tests/data/README.md lists it)"
else
    if ! "$BR_BIN" info -m "$model" >"$out" 2>"$err"; then
        bad=$((bad + 1))
        echo "FAIL: $model (valid) was refused:"
        head -n 5 "$err" | sed 's/^/    /'
    fi
fi

echo "gguf_corpus: $n malformed files, $bad failures"
[ "$bad" -eq 0 ]
