#!/usr/bin/env bash
# I2_S tensors whose rows are not whole 128-weight blocks (bitnet_b1_58-3B's ffn_down,
# 8640 wide): the file packs the tensor as one flat run of blocks across row ends
# (docs/FORMATS.md §2). A model whose FFN is 576 wide (ffn_down rows of 4.5 blocks),
# written as I2_S and as F16-stored ternary weights (the same weights), gives the same
# logits bit for bit in one process, and under mpirun at TP 2 and 3 (slices of 512 + 64
# and 256 + 256 + 64 columns, which start inside the file's blocks).
set -euo pipefail
BIN=${BR_BIN:?}
TMP=${BR_TMP:-/tmp}/i2sflat.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
for t in i2_s f16; do
    "$BIN" synth --preset tiny --ff 576 --heads 8 --kv-heads 4 --vocab 1030 --type "$t" -o "$TMP/$t.gguf" > /dev/null
done
fails=0
run() { # NAME MODEL [mpirun -np N ... --tp N]
    local name=$1 model=$2; shift 2
    "$@" "$BIN" run -m "$model" ${TP:+--tp $TP} --tokens 1,2,3 -n 6 --ids --ignore-eos \
        --dump-logits "$TMP/$name.f32" > "$TMP/$name.txt" 2> "$TMP/err.txt" ||
        { echo "FAIL $name: run failed"; cat "$TMP/err.txt"; fails=$((fails + 1)); }
}
run f16 "$TMP/f16.gguf"
run i2s "$TMP/i2_s.gguf"
TP=2 run i2s-tp2 "$TMP/i2_s.gguf" mpirun --oversubscribe --bind-to none -np 2
TP=3 run i2s-tp3 "$TMP/i2_s.gguf" mpirun --oversubscribe --bind-to none -np 3
for name in i2s i2s-tp2 i2s-tp3; do
    if [ -s "$TMP/$name.f32" ] && cmp -s "$TMP/f16.f32" "$TMP/$name.f32"; then
        echo "ok   $name: logits identical to the F16-stored model ($(stat -c %s "$TMP/$name.f32") bytes), tokens $(cat "$TMP/$name.txt")"
    else
        echo "FAIL $name: logits differ from the F16-stored model"; fails=$((fails + 1))
    fi
done
exit $((fails > 0))
