#!/usr/bin/env bash
# Shard files run exactly like the whole file: `bitrack shard` cuts a model into per-rank
# files, `mpirun -np T*P bitrack run -m DIR --tp T --pp P --dump-logits` writes the same
# logits and tokens as one process on the original, for 2x2 (and 2x1, 1x2, 1x1) on a tied
# I2_S model with 5 KV heads and an untied TQ1_0 llama model. Rank files generated one by
# one with `synth --rank` are byte-identical to the cut ones, and a directory with a rank
# file from another model is refused.
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/mpi.sh"
br_mpi_init mpishards

KV5=(--preset tiny --arch bitnet-b1.58 --embd 1280 --heads 10 --kv-heads 5 --ff 1536 --layers 3
     --vocab 700 --type i2_s --seed 21)
LLAMA=(--preset tiny --arch llama --embd 1024 --heads 8 --kv-heads 4 --ff 1024 --layers 3
       --vocab 600 --type tq1_0 --untied --seed 23)
"$BIN" synth "${KV5[@]}" -o "$TMP/kv5.gguf"
"$BIN" synth "${LLAMA[@]}" -o "$TMP/llama.gguf"

prompt=$(seq -s, 3 72)
fails=0; runs=0
for model in kv5 llama; do
    f="$TMP/$model.gguf"
    "$BIN" run -m "$f" --tokens "$prompt" -n 5 --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"
    for layout in 2x2 2x1 1x2 1x1; do
        tp=${layout%x*}; pp=${layout#*x}
        d="$TMP/$model-$layout"
        "$BIN" shard -m "$f" --tp "$tp" --pp "$pp" -o "$d" 2> /dev/null
        rm -f "$TMP/out.f32"
        if ! timeout 120 "${MPIRUN[@]}" $((tp * pp)) "$BIN" run -m "$d" --tokens "$prompt" -n 5 \
                --tp "$tp" --pp "$pp" --dump-logits "$TMP/out.f32" > "$TMP/out.txt" 2> "$TMP/err.txt"; then
            echo "FAIL $model $layout: run failed"; cat "$TMP/err.txt"; fails=$((fails + 1)); continue
        fi
        runs=$((runs + 1))
        if cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
            echo "ok   $model $layout: shards give identical logits ($(stat -c %s "$TMP/out.f32") bytes), tokens $(cat "$TMP/out.txt")"
        else
            echo "FAIL $model $layout: output differs from the whole file"; fails=$((fails + 1))
        fi
    done
done

# synth --rank: each rank's file generated alone equals the one cut from the whole file
for r in 0 1 2 3; do
    "$BIN" synth "${KV5[@]}" --tp 2 --pp 2 --rank "$r" -o "$TMP/gen" 2> /dev/null
    if cmp -s "$TMP/gen/rank-$r.gguf" "$TMP/kv5-2x2/rank-$r.gguf"; then
        echo "ok   synth --rank $r: identical to the cut file"
    else
        echo "FAIL synth --rank $r differs from the cut file"; fails=$((fails + 1))
    fi
done
# the generated directory runs too
if timeout 120 "${MPIRUN[@]}" 4 "$BIN" run -m "$TMP/gen" --tokens "$prompt" -n 5 --tp 2 --pp 2 \
        --dump-logits "$TMP/out.f32" > /dev/null 2> "$TMP/err.txt" &&
        "$BIN" run -m "$TMP/kv5.gguf" --tokens "$prompt" -n 5 --dump-logits "$TMP/ref.f32" > /dev/null &&
        cmp -s "$TMP/ref.f32" "$TMP/out.f32"; then
    echo "ok   synth --rank directory runs with identical logits"
else
    echo "FAIL synth --rank directory"; cat "$TMP/err.txt"; fails=$((fails + 1))
fi

# a rank file of another model in the directory is refused, naming the files
"$BIN" synth "${KV5[@]}" --seed 99 --tp 2 --pp 2 --rank 3 -o "$TMP/other" 2> /dev/null
cp "$TMP/other/rank-3.gguf" "$TMP/gen/rank-3.gguf"
if timeout 120 "${MPIRUN[@]}" 4 "$BIN" run -m "$TMP/gen" --tokens "$prompt" -n 2 --tp 2 --pp 2 \
        > /dev/null 2> "$TMP/err.txt"; then
    echo "FAIL a mixed directory was accepted"; fails=$((fails + 1))
elif grep -q "different models" "$TMP/err.txt"; then
    echo "ok   mixed directory refused: $(grep -m1 'different models' "$TMP/err.txt")"
else
    echo "FAIL mixed directory refused without the reason"; cat "$TMP/err.txt"; fails=$((fails + 1))
fi
# a layout the files were not cut for is refused
if timeout 120 "${MPIRUN[@]}" 2 "$BIN" run -m "$TMP/kv5-2x2" --tokens "$prompt" -n 2 --tp 2 --pp 1 \
        > /dev/null 2> "$TMP/err.txt"; then
    echo "FAIL a 2x2 directory ran as 2x1"; fails=$((fails + 1))
elif grep -q "of a 2x2" "$TMP/err.txt"; then
    echo "ok   wrong layout refused: $(grep -m1 'of a 2x2' "$TMP/err.txt")"
else
    echo "FAIL wrong layout refused without the reason"; cat "$TMP/err.txt"; fails=$((fails + 1))
fi
echo "$runs sharded runs compared, $fails failures"
[ "$fails" -eq 0 ]
