#!/usr/bin/env bash
# `bitrack synth --preset 2b-4t` writes the tensor table of the official
# BitNet-b1.58-2B-4T GGUF (docs/FORMATS.md §6): 332 tensors, names, shapes, types, and I2_S
# byte sizes n/4 + 32; `bitrack run` on it generates tokens.
set -euo pipefail
BIN=${BR_BIN:?}
if [ -n "${BR_QUICK:-}" ]; then
    # generating 2.4 G weights under a sanitizer takes minutes; the release build runs it
    echo "SKIP: BR_QUICK (sanitizer build): the 2B-4T table is checked by the release build"
    exit 0
fi
TMP=${BR_TMP:-/tmp}/synth2b.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
"$BIN" synth --preset 2b-4t -o "$TMP/m.gguf"
"$BIN" info -m "$TMP/m.gguf" --tensors > "$TMP/info.txt"
grep -q "architecture:  bitnet-b1.58" "$TMP/info.txt"
grep -q "shape:         d 2560, layers 30, ffn 6912, heads 20 / 5 kv, head dim 128, vocab 128256, context 4096" "$TMP/info.txt"
# expected table
{
    echo "token_embd.weight F16 {2560, 128256} $((2560 * 128256 * 2))"
    for l in $(seq 0 29); do
        i2s() { echo "blk.$l.$1 I2_S {$2, $3} $(($2 * $3 / 4 + 32))"; }
        echo "blk.$l.attn_norm.weight F32 {2560} 10240"
        i2s attn_q.weight 2560 2560
        i2s attn_k.weight 2560 640
        i2s attn_v.weight 2560 640
        echo "blk.$l.attn_sub_norm.weight F32 {2560} 10240"
        i2s attn_output.weight 2560 2560
        echo "blk.$l.ffn_norm.weight F32 {2560} 10240"
        i2s ffn_gate.weight 2560 6912
        i2s ffn_up.weight 2560 6912
        echo "blk.$l.ffn_sub_norm.weight F32 {6912} 27648"
        i2s ffn_down.weight 6912 2560
    done
    echo "output_norm.weight F32 {2560} 10240"
} > "$TMP/want.txt"
grep '^  ' "$TMP/info.txt" | sed -E 's/^ +//; s/ +/ /g; s/ bytes$//' > "$TMP/got.txt"
test "$(wc -l < "$TMP/want.txt")" -eq 332
if ! diff -u "$TMP/want.txt" "$TMP/got.txt" > "$TMP/diff.txt"; then
    head -20 "$TMP/diff.txt"
    echo "FAIL: tensor table differs from the official layout"
    exit 1
fi
out=$("$BIN" run -m "$TMP/m.gguf" --tokens 128000,791 -n 2 -t 2 --ids --ignore-eos)
echo "generated: $out"
test "$(echo "$out" | wc -w)" -eq 2
echo "PASS: 332 tensors match the official 2B-4T layout; run generated 2 tokens"
