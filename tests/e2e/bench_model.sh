#!/usr/bin/env bash
# `bitrack bench model` (cli/cmd_bench_model.c) on a tiny synthetic model:
#  1. the JSON holds a tg and a pp row per thread count, with positive rates and a
#     roofline that is the read bandwidth over the bytes per token;
#  2. --depth D decodes after D positions of context, and the bytes per token grow by
#     exactly the f16 KV cache the decode reads (every layer's keys and values of the
#     D + (n + 1) / 2 positions a token sees on average), recomputed here from the model's
#     shape;
#  3. a depth beyond the model's context is refused with a message, not a crash.
set -euo pipefail
BIN=${BR_BIN:?}
TMP=${BR_TMP:-/tmp}/bench_model.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
PY=/usr/bin/python3

# 3 layers, 4 KV heads of 64 (embd 512 / 8 heads), context 256
"$BIN" synth --preset tiny --embd 512 --ff 768 --heads 8 --kv-heads 4 --layers 3 --vocab 600 \
    --ctx 256 -o "$TMP/m.gguf" > /dev/null
"$BIN" bench model -m "$TMP/m.gguf" -t 1,2 -p 8 -n 4 -r 1 --json "$TMP/d0.json" > "$TMP/d0.txt"
"$BIN" bench model -m "$TMP/m.gguf" -t 1 -p 8 -n 4 -r 1 -d 100 --json "$TMP/d100.json" \
    > "$TMP/d100.txt" 2> "$TMP/d100.err"
grep -q "decode at depth 100: the KV cache adds" "$TMP/d100.txt"
grep -q "filling 100 positions of context" "$TMP/d100.err"
$PY - "$TMP/d0.json" "$TMP/d100.json" <<'PYEOF'
import json, sys
d0 = json.load(open(sys.argv[1]))
d100 = json.load(open(sys.argv[2]))
def rows(j, test):
    return [r for r in j if r.get("test") == test]
assert sorted(r["threads"] for r in rows(d0, "tg")) == [1, 2], d0
assert sorted(r["threads"] for r in rows(d0, "pp")) == [1, 2], d0
for r in rows(d0, "tg") + rows(d0, "pp") + rows(d100, "tg"):
    assert r["tokens_per_s"] > 0 and r["bytes_per_token"] > 0, r
for r in rows(d0, "tg") + rows(d100, "tg"):
    roof = r["read_gbs"] * 1e9 / r["bytes_per_token"]
    assert abs(r["roofline_tokens_per_s"] - roof) <= 1e-3 * roof, r
a, = [r for r in rows(d0, "tg") if r["threads"] == 1]
b, = rows(d100, "tg")
assert a["depth"] == 0 and b["depth"] == 100, (a, b)
layers, kv_heads, head_dim, n = 3, 4, 64, 4
kv_pos = layers * kv_heads * (head_dim + head_dim) * 2
want = kv_pos * ((100 + (n + 1) / 2.0) - (0 + (n + 1) / 2.0))
got = b["bytes_per_token"] - a["bytes_per_token"]
assert abs(got - want) <= 1, (got, want)
PYEOF
# a depth the context cannot hold
if "$BIN" bench model -m "$TMP/m.gguf" -t 1 -p 8 -n 4 -r 1 -d 300 > "$TMP/bad.txt" 2>&1; then
    echo "depth 300 on a 256-position model was accepted"; cat "$TMP/bad.txt"; exit 1
fi
grep -qi "context\|position" "$TMP/bad.txt" || { cat "$TMP/bad.txt"; exit 1; }
echo "bench model: ok"
