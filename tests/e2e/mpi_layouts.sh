#!/usr/bin/env bash
# The cluster is exact: `mpirun bitrack run --tp T --pp P --dump-logits` writes the same
# bytes as one process, for layouts 1x1 2x1 1x2 2x2 3x1 4x1 1x3, each TP layout with the
# residual replicated and sharded (--layout), on models of each
# architecture and ternary type (one with 5 KV heads, split unevenly), and with 1 or 2
# threads per rank; a model whose tied head is Q8_0 (the vocabulary split over the TP ranks,
# each running the Q8_0 kernels on its rows), also from a shard directory; the llama model's
# untied head is Q6_K (read in place by each rank's vocabulary slice). Any difference
# fails.
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/mpi.sh"
br_mpi_init mpilayouts

"$BIN" synth --preset tiny --arch bitnet-b1.58 --embd 1280 --heads 10 --kv-heads 5 --ff 1536 \
    --layers 3 --vocab 1100 --type i2_s --seed 21 -o "$TMP/kv5.gguf"
"$BIN" synth --preset tiny --arch bitnet --embd 1024 --heads 8 --kv-heads 4 --ff 1024 \
    --layers 3 --vocab 1030 --type tq2_0 --seed 22 -o "$TMP/bitnet.gguf"
"$BIN" synth --preset tiny --arch llama --embd 1024 --heads 8 --kv-heads 4 --ff 1024 \
    --layers 3 --vocab 1030 --type tq1_0 --untied --head-type q6_k --seed 23 -o "$TMP/llama.gguf"
"$BIN" synth --preset tiny --arch bitnet-b1.58 --embd 1280 --heads 10 --kv-heads 5 --ff 1536 \
    --layers 3 --vocab 1100 --type i2_s --head-type q8_0 --seed 24 -o "$TMP/q8head.gguf"

# 70 prompt tokens: more than one 64-token batch
prompt=$(seq -s, 3 72)
fails=0; runs=0
models="kv5 bitnet llama q8head"
layouts="1x1 2x1 1x2 2x2 3x1 4x1 1x3"
if [ -n "${BR_QUICK:-}" ]; then
    # sanitizer builds: a short form (the release build runs everything)
    models="kv5 q8head"; layouts="2x2 1x3"
    echo "BR_QUICK: layouts $layouts on $models only"
fi
for model in $models; do
    f="$TMP/$model.gguf"
    "$BIN" run -m "$f" --tokens "$prompt" -n 5 --ids --ignore-eos --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"
    model_layouts=$layouts
    [ "$model" = q8head ] && [ -z "${BR_QUICK:-}" ] && model_layouts="2x1 2x2 3x1"
    for layout in $model_layouts; do
        tp=${layout%x*}; pp=${layout#*x}
        for res in replicated sharded; do
        [ "$res" = sharded ] && [ "$tp" = 1 ] && continue
        for threads in 1 2; do
            [ "$threads" = 2 ] && [ "$layout" != 2x2 ] && [ "$layout" != 1x1 ] && continue
            [ "$threads" = 2 ] && [ "$res" = sharded ] && continue
            rm -f "$TMP/out.f32"
            if ! timeout 120 "${MPIRUN[@]}" $((tp * pp)) "$BIN" run -m "$f" --tokens "$prompt" -n 5 \
                    --tp "$tp" --pp "$pp" -t "$threads" --layout "$res" --ids --ignore-eos --dump-logits "$TMP/out.f32" \
                    > "$TMP/out.txt" 2> "$TMP/err.txt"; then
                echo "FAIL $model $layout $res t$threads: run failed"; cat "$TMP/err.txt"; fails=$((fails + 1)); continue
            fi
            runs=$((runs + 1))
            if cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
                echo "ok   $model $layout $res threads=$threads: logits identical ($(stat -c %s "$TMP/out.f32") bytes), tokens $(cat "$TMP/out.txt")"
            else
                echo "FAIL $model $layout $res threads=$threads: output differs"; fails=$((fails + 1))
            fi
        done
        done
    done
done
# the Q8_0 head from shard files (each rank's head rows stored as Q8_0)
"$BIN" shard -m "$TMP/q8head.gguf" --tp 2 --pp 2 -o "$TMP/q8shards" 2> /dev/null
"$BIN" run -m "$TMP/q8head.gguf" --tokens "$prompt" -n 5 --ids --ignore-eos --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"
if timeout 120 "${MPIRUN[@]}" 4 "$BIN" run -m "$TMP/q8shards" --tokens "$prompt" -n 5 --tp 2 --pp 2 \
        --ids --ignore-eos --dump-logits "$TMP/out.f32" > "$TMP/out.txt" 2> "$TMP/err.txt" &&
        cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
    echo "ok   q8head shards 2x2: logits identical"; runs=$((runs + 1))
else
    echo "FAIL q8head shards 2x2"; cat "$TMP/err.txt"; fails=$((fails + 1))
fi
# an F16 head re-encoded by `shard --head-type TYPE` equals the head re-encoded at load:
# Q8_0 with the vocabulary split over TP ranks, Q6_K on a pipeline's second stage
shard_head_equals_load() { # type tp pp
    local type=$1 tp=$2 pp=$3 dir="$TMP/kv5-$1"
    "$BIN" shard -m "$TMP/kv5.gguf" --tp "$tp" --pp "$pp" --head-type "$type" -o "$dir" 2> /dev/null
    "$BIN" run -m "$TMP/kv5.gguf" --head "$type" --tokens "$prompt" -n 5 --ids --ignore-eos \
        --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"
    if timeout 120 "${MPIRUN[@]}" $((tp * pp)) "$BIN" run -m "$dir" --tokens "$prompt" -n 5 \
            --tp "$tp" --pp "$pp" --ids --ignore-eos --dump-logits "$TMP/out.f32" > "$TMP/out.txt" \
            2> "$TMP/err.txt" &&
            cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
        echo "ok   kv5 shard --head-type $type ${tp}x$pp = run --head $type: logits identical"
        runs=$((runs + 1))
    else
        echo "FAIL kv5 shard --head-type $type ${tp}x$pp vs run --head $type"; cat "$TMP/err.txt"
        fails=$((fails + 1))
    fi
}
shard_head_equals_load q8_0 2 1
shard_head_equals_load q6_k 1 2
# communication accounting: every rank's measured bytes and messages equal the plan's
stats_layouts="2x2 3x1 1x3"
[ -n "${BR_QUICK:-}" ] && stats_layouts="2x2"
for layout in $stats_layouts; do
    tp=${layout%x*}; pp=${layout#*x}
    for res in replicated sharded; do
    [ "$res" = sharded ] && [ "$tp" = 1 ] && continue
    timeout 120 "${MPIRUN[@]}" $((tp * pp)) "$BIN" run -m "$TMP/kv5.gguf" --tokens "$prompt" -n 4 \
        --tp "$tp" --pp "$pp" --layout "$res" --stats > /dev/null 2> "$TMP/stats.txt" || true
    n_match=$(grep -c '(match)' "$TMP/stats.txt" || true)
    want=4; [ "$res" = sharded ] && want=8
    n_colls=$(grep -c "$res residual, $want collectives per layer" "$TMP/stats.txt" || true)
    if [ "$n_match" -ne $((tp * pp)) ] || { [ "$tp" -gt 1 ] && [ "$n_colls" -ne $((tp * pp)) ]; }; then
        echo "FAIL stats $layout $res: $n_match of $((tp * pp)) ranks match the plan"; cat "$TMP/stats.txt"; fails=$((fails + 1))
    else
        echo "ok   stats $layout $res: measured traffic equals the plan on all $((tp * pp)) ranks"
        grep 'stats' "$TMP/stats.txt" | sort
    fi
    done
done
echo "$runs layouts compared, $fails failures"
[ "$fails" -eq 0 ]
