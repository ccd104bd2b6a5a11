#!/usr/bin/env bash
# Text commands on a synthetic model: tokenize prints a JSON array (and ids that
# detokenize back to the text through the server path are covered in serve.sh), run -p
# streams text, chat answers turn after turn, and generate fails cleanly without a server.
set -euo pipefail
BIN=${BR_BIN:?}
TMP=${BR_TMP:-/tmp}/clitext.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
"$BIN" synth --preset tiny -o "$TMP/m.gguf" 2>/dev/null
ids=$("$BIN" tokenize -m "$TMP/m.gguf" "Hello world")
/usr/bin/python3 -c 'import json,sys; v=json.loads(sys.argv[1]); assert isinstance(v,list) and len(v)>0 and all(isinstance(x,int) for x in v)' "$ids"
echo "ok   tokenize: $ids"
bos=$("$BIN" tokenize -m "$TMP/m.gguf" --bos "Hello world")
[ "${bos%%,*}" != "${ids%%,*}" ] || { echo "FAIL --bos did not add BOS"; exit 1; }
echo "Hello world" | "$BIN" tokenize -m "$TMP/m.gguf" - > /dev/null
out=$("$BIN" run -m "$TMP/m.gguf" -p "Hello world" -n 8 2>/dev/null)
[ -n "$out" ] || { echo "FAIL run -p printed nothing"; exit 1; }
echo "ok   run -p"
lines=$(printf 'hi\nagain\n/quit\n' | "$BIN" chat -m "$TMP/m.gguf" -n 6 2>/dev/null | wc -l)
[ "$lines" -ge 2 ] || { echo "FAIL chat answered $lines lines"; exit 1; }
echo "ok   chat: two replies"
set +e
"$BIN" generate --server tcp://127.0.0.1:9 --timeout 1500 "x" > /dev/null 2> "$TMP/err.txt"
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -lt 128 ] || { echo "FAIL generate without a server: exit $rc"; exit 1; }
echo "ok   generate without a server: $(cat "$TMP/err.txt")"
