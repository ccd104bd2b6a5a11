#!/usr/bin/env bash
# Throughput ratios on this machine, each measured against its baseline in the same run
# (docs/PERFORMANCE.md): decode with TP=2 (2 ranks x 1 thread) vs 1 rank x 2 threads;
# aggregate decode with PP=2 and 4 concurrent sequences vs 1 rank x 2 threads; and
# continuous batching, 32 concurrent streams vs 1, on one rank x 2 threads; and the bytes
# each rank sends per token, measured (`run --stats`) against the plan's prediction.
#   bench/scripts/cluster_ratios.sh [MODEL.gguf] [OUT_DIR]
# BR_RATIOS picks the parts (default "decode batch pp bytes"); BR_BENCH_REPS the runs per
# serving measurement (default 3, best kept; PP and its baseline alternate so that both
# see the same load); BR_BENCH_TOKENS the decode length; BR_OUT_LEN the output tokens per
# served request (default 32; the prompt is 16 tokens). The "batch" part prints two
# ratios: output tokens/s over the whole run (prefill included), and the decode rate,
# streams / mean time per output token (TPOT), which leaves out the time to first token.
# The "pp" part measures PP=2 with 2 threads per rank (4 threads on the 2 cores: the stage
# with work gets both, the waiting one naps), with 1 thread per rank, and with two
# micro-batches in flight.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
MODEL=${1:-build/bench-2b4t.gguf}
OUT=${2:-build/bench-results}
mkdir -p "$OUT"
: > "$OUT/decode.txt"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$MODEL" ] || "$BIN" synth --preset 2b-4t -o "$MODEL"
MPI=(mpirun --oversubscribe --bind-to none -np)
N=${BR_BENCH_TOKENS:-48}
PARTS=${BR_RATIOS:-decode batch pp bytes}
REPS=${BR_BENCH_REPS:-3}
want() { [[ " $PARTS " == *" $1 "* ]]; }
ratio() { /usr/bin/python3 -c "import sys; print(round(float(sys.argv[1]) / max(float(sys.argv[2]), 1e-9), 3))" "$1" "$2"; }
best() { /usr/bin/python3 -c "import sys; print(max(float(x) for x in sys.argv[1:]))" "$@"; }

decode_rate() { # prints tokens/s after the first, best of 3
    local best=0
    for _ in 1 2 3; do
        r=$("$@" 2>&1 >/dev/null | sed -n 's/.*generated [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s after the first).*/\1/p')
        best=$(/usr/bin/python3 -c "print(max($best, ${r:-0}))")
    done
    echo "$best"
}

if want decode; then
one2=$(decode_rate "$BIN" run -m "$MODEL" --tokens 128000,791 -n "$N" --ids --ignore-eos -t 2)
tp2=$(decode_rate "${MPI[@]}" 2 "$BIN" run -m "$MODEL" --tokens 128000,791 -n "$N" --ids --ignore-eos -t 1 --tp 2)
pp2=$(decode_rate "${MPI[@]}" 2 "$BIN" run -m "$MODEL" --tokens 128000,791 -n "$N" --ids --ignore-eos -t 1 --pp 2)
echo "decode, single stream: 1 rank x 2 threads $one2 tok/s; TP=2 x 1 thread $tp2 tok/s (ratio $(ratio "$tp2" "$one2")); PP=2 $pp2 tok/s (ratio $(ratio "$pp2" "$one2"))" | tee -a "$OUT/decode.txt"
fi

serve_bench() { # $1 label, $2 concurrency, $3 requests, $4 ranks (1 = no mpirun), rest: serve args
    local label=$1 conc=$2 reqs=$3 ranks=$4; shift 4
    local port=$((30000 + RANDOM % 20000)) launcher=()
    [ "$ranks" -gt 1 ] && launcher=("${MPI[@]}" "$ranks" ${MPI_EXTRA:-})
    "${launcher[@]}" "$BIN" serve -m "$MODEL" --listen "tcp://127.0.0.1:$port" --max-seqs 40 \
        --batch-tokens 64 "$@" > "$OUT/serve-$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do grep -q "ready on" "$OUT/serve-$label.log" && break; sleep 0.2; done
    "$BIN" bench --server "tcp://127.0.0.1:$port" --concurrency "$conc" --requests "$reqs" \
        --warmup "$conc" --input-len 16 --output-len "${BR_OUT_LEN:-32}" --len-spread 0 --ban-tokens 128001,128008,128009 \
        --vocab 128000 --no-progress --json "$OUT/bench-$label.json" > "$OUT/bench-$label.txt" 2>&1 || true
    kill -TERM $pid; wait $pid 2>/dev/null || true
    /usr/bin/python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['output_throughput'],2))" \
        "$OUT/bench-$label.json" 2>/dev/null || echo 0
}
decode_tps() { # $1 label, $2 streams: streams / mean TPOT, in tokens/s
    /usr/bin/python3 -c "import json,sys; print(round(int(sys.argv[2]) * 1000 / json.load(open(sys.argv[1]))['tpot_ms']['mean'], 2))" \
        "$OUT/bench-$1.json" "$2" 2>/dev/null || echo 0
}
if want batch; then
s1=$(serve_bench c1 1 4 1 -t 2)
s32=$(serve_bench c32 32 64 1 -t 2)
d1=$(decode_tps c1 1) d32=$(decode_tps c32 32)
echo "serving, 1 rank x 2 threads, ${BR_OUT_LEN:-32} output tokens: 1 stream $s1 out tok/s; 32 streams $s32 out tok/s (ratio $(ratio "$s32" "$s1")); decode rate (streams / TPOT) $d1 vs $d32 tok/s (ratio $(ratio "$d32" "$d1"))" | tee -a "$OUT/decode.txt"
fi
if want pp; then
    # PP=2 on this one machine: by default one step at a time (the stages share the cores
    # and the memory bandwidth); --micro-batches 2 keeps two steps in flight as on a rack
    o4=() p4=() t4=() m4=()
    for _ in $(seq "$REPS"); do
        o4+=("$(serve_bench one-c4 4 16 1 -t 2)")
        t4+=("$(serve_bench pp2t2-c4 4 16 2 -t 2 --pp 2)")
        p4+=("$(serve_bench pp2-c4 4 16 2 -t 1 --pp 2)")
        m4+=("$(serve_bench pp2mb2-c4 4 16 2 -t 1 --pp 2 --micro-batches 2)")
    done
    o=$(best "${o4[@]}") p=$(best "${p4[@]}") t=$(best "${t4[@]}") m=$(best "${m4[@]}")
    echo "serving 4 streams, best of $REPS: 1 rank x 2 threads $o out tok/s (runs: ${o4[*]})" | tee -a "$OUT/decode.txt"
    echo "  PP=2, 2 ranks x 2 threads: $t out tok/s, ratio $(ratio "$t" "$o") (runs: ${t4[*]})" | tee -a "$OUT/decode.txt"
    echo "  PP=2, 2 ranks x 1 thread:  $p out tok/s, ratio $(ratio "$p" "$o") (runs: ${p4[*]})" | tee -a "$OUT/decode.txt"
    echo "  PP=2, 2 ranks x 1 thread, 2 micro-batches: $m out tok/s, ratio $(ratio "$m" "$o") (runs: ${m4[*]})" | tee -a "$OUT/decode.txt"
fi
if want bytes; then
    for layout in "2 1" "1 2" "2 2"; do
        set -- $layout
        "${MPI[@]}" $(($1 * $2)) "$BIN" run -m "$MODEL" --tokens 128000,791 -n 16 --ids --ignore-eos \
            -t 1 --tp "$1" --pp "$2" --stats 2>&1 >/dev/null | grep "stats:" | sort |
            sed "s/^/bytes per token, TP=$1 x PP=$2: /" | tee -a "$OUT/decode.txt"
    done
fi
