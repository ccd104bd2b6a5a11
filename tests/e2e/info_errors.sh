#!/usr/bin/env bash
# `bitrack info` on files that are not valid models: a non-zero exit and exactly one line
# on stderr naming the problem, never a crash or sanitizer report.
set -euo pipefail
BIN=${BR_BIN:?}
TMP=${BR_TMP:-/tmp}/infoerr.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
"$BIN" synth --preset tiny -o "$TMP/ok.gguf"
"$BIN" info -m "$TMP/ok.gguf" > /dev/null
size=$(stat -c %s "$TMP/ok.gguf")
: > "$TMP/empty.gguf"
printf 'GGUF' > "$TMP/magic-only.gguf"
head -c 1000 "$TMP/ok.gguf" > "$TMP/trunc-header.gguf"
head -c $((size - 100)) "$TMP/ok.gguf" > "$TMP/trunc-data.gguf"
printf 'not a model at all, just text\n' > "$TMP/text.gguf"
# an architecture nobody knows: patch the arch string in place (same length)
sed 's/bitnet-b1.58/bitnet-zz.99/' "$TMP/ok.gguf" > "$TMP/arch.gguf"
fails=0
for f in "$TMP"/empty.gguf "$TMP"/magic-only.gguf "$TMP"/trunc-header.gguf \
         "$TMP"/trunc-data.gguf "$TMP"/text.gguf "$TMP"/arch.gguf "$TMP"/missing.gguf; do
    set +e
    "$BIN" info -m "$f" > /dev/null 2> "$TMP/err.txt"
    rc=$?
    set -e
    lines=$(wc -l < "$TMP/err.txt")
    if [ $rc -eq 0 ] || [ $rc -ge 128 ] || [ "$lines" -ne 1 ] || grep -qE 'Sanitizer|runtime error' "$TMP/err.txt"; then
        echo "FAIL: $(basename "$f"): exit $rc, $lines stderr lines:"; cat "$TMP/err.txt"; fails=$((fails + 1))
    else
        echo "ok: $(basename "$f"): $(cat "$TMP/err.txt")"
    fi
done
[ $fails -eq 0 ]
