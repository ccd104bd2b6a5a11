#!/usr/bin/env bash
# The direct collectives of worker/comm_mpi.c (sharding/plan.h, br_coll_direct):
#  1. mpi_comm_check on 2, 3 and 4 ranks: int32 sum-all-reduces of 1, T-1, T, T+1 ... values
#     up to the largest that fits the direct path and one more, reduce-scatters and
#     all-gathers with uneven and empty blocks, max-all-reduces, each against a reference
#     sum on every rank; with BITRACK_COLL_DIRECT=1 every one that fits must have gone the
#     direct way (none at 2 ranks), with =0 none, by default the link model chooses;
#  2. the engine at 3x1 and 4x1, both residual layouts, with the direct paths forced on
#     and off: logits byte-identical to one process, and --stats' counted traffic equal to
#     the plan's on every rank.
set -euo pipefail
BIN=${BR_BIN:?}
CHECK=${BR_COMM_CHECK:?}
. "$(dirname "$0")/../lib/mpi.sh"
br_mpi_init mpicomm
fails=0

for np in 2 3 4; do
    for mode in 1 0 default; do
        want=(); env=()
        [ "$mode" = 1 ] && want=(--direct all) && env=(BITRACK_COLL_DIRECT=1)
        [ "$mode" = 0 ] && want=(--direct none) && env=(BITRACK_COLL_DIRECT=0)
        if timeout 300 env "${env[@]}" "${MPIRUN[@]}" "$np" "$CHECK" "${want[@]}" \
                > "$TMP/out.txt" 2> "$TMP/err.txt"; then
            echo "ok   $np ranks, BITRACK_COLL_DIRECT=$mode: $(cat "$TMP/out.txt")"
        else
            echo "FAIL $np ranks, BITRACK_COLL_DIRECT=$mode"; cat "$TMP/out.txt" "$TMP/err.txt"
            fails=$((fails + 1))
        fi
    done
done

"$BIN" synth --preset tiny --arch bitnet-b1.58 --embd 1280 --heads 10 --kv-heads 5 --ff 1536 \
    --layers 3 --vocab 1100 --type i2_s --seed 31 -o "$TMP/kv5.gguf"
# 70 prompt tokens: a 64-token step (all-reduces of 320 KiB) and small ones
prompt=$(seq -s, 3 72)
"$BIN" run -m "$TMP/kv5.gguf" --tokens "$prompt" -n 5 --ids --ignore-eos \
    --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"
for tp in 3 4; do
    for res in replicated sharded; do
        for mode in 1 0; do
            rm -f "$TMP/out.f32"
            if ! BITRACK_COLL_DIRECT=$mode timeout 120 "${MPIRUN[@]}" "$tp" "$BIN" run \
                    -m "$TMP/kv5.gguf" --tokens "$prompt" -n 5 --tp "$tp" --layout "$res" --ids \
                    --ignore-eos --dump-logits "$TMP/out.f32" > "$TMP/out.txt" 2> "$TMP/err.txt"; then
                echo "FAIL ${tp}x1 $res direct=$mode: run failed"; cat "$TMP/err.txt"
                fails=$((fails + 1)); continue
            fi
            if cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
                echo "ok   ${tp}x1 $res BITRACK_COLL_DIRECT=$mode: logits identical to one process"
            else
                echo "FAIL ${tp}x1 $res BITRACK_COLL_DIRECT=$mode: output differs"
                fails=$((fails + 1))
            fi
        done
        BITRACK_COLL_DIRECT=1 timeout 120 "${MPIRUN[@]}" "$tp" "$BIN" run -m "$TMP/kv5.gguf" \
            --tokens "$prompt" -n 4 --tp "$tp" --layout "$res" --stats > /dev/null \
            2> "$TMP/stats.txt" || true
        n_match=$(grep -c '(match)' "$TMP/stats.txt" || true)
        if [ "$n_match" -ne "$tp" ]; then
            echo "FAIL stats ${tp}x1 $res direct: $n_match of $tp ranks match the plan"
            cat "$TMP/stats.txt"; fails=$((fails + 1))
        else
            echo "ok   stats ${tp}x1 $res direct: counted traffic equals the plan on all $tp ranks"
        fi
    done
done
echo "$fails failures"
[ "$fails" -eq 0 ]
