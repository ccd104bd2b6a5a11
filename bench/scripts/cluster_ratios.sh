#!/usr/bin/env bash
# Throughput ratios on this machine, each measured against its baseline in the same run
# (docs/PERFORMANCE.md): decode with TP=2 (2 ranks x 1 thread) vs 1 rank x 2 threads;
# aggregate decode with PP=2 and 4 concurrent sequences vs 1 rank x 2 threads; and
# continuous batching, 32 concurrent streams vs 1, on one rank x 2 threads.
#   bench/scripts/cluster_ratios.sh [MODEL.gguf] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
MODEL=${1:-build/bench-2b4t.gguf}
OUT=${2:-build/bench-results}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$MODEL" ] || "$BIN" synth --preset 2b-4t -o "$MODEL"
MPI=(mpirun --oversubscribe --bind-to none -np)
N=${BR_BENCH_TOKENS:-48}

decode_rate() { # prints tokens/s after the first, best of 3
    local best=0
    for _ in 1 2 3; do
        r=$("$@" 2>&1 >/dev/null | sed -n 's/.*generated [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s after the first).*/\1/p')
        best=$(/usr/bin/python3 -c "print(max($best, ${r:-0}))")
    done
    echo "$best"
}

one2=$(decode_rate "$BIN" run -m "$MODEL" --tokens 128000,791 -n "$N" --ids --ignore-eos -t 2)
tp2=$(decode_rate "${MPI[@]}" 2 "$BIN" run -m "$MODEL" --tokens 128000,791 -n "$N" --ids --ignore-eos -t 1 --tp 2)
pp2=$(decode_rate "${MPI[@]}" 2 "$BIN" run -m "$MODEL" --tokens 128000,791 -n "$N" --ids --ignore-eos -t 1 --pp 2)
echo "decode, single stream: 1 rank x 2 threads $one2 tok/s; TP=2 x 1 thread $tp2 tok/s (ratio $(/usr/bin/python3 -c "print(round($tp2/$one2,3))")); PP=2 $pp2 tok/s" | tee "$OUT/decode.txt"

serve_bench() { # $1 label, $2 concurrency, $3 requests, $4 ranks (1 = no mpirun), rest: serve args
    local label=$1 conc=$2 reqs=$3 ranks=$4; shift 4
    local port=$((30000 + RANDOM % 20000)) launcher=()
    [ "$ranks" -gt 1 ] && launcher=("${MPI[@]}" "$ranks")
    "${launcher[@]}" "$BIN" serve -m "$MODEL" --listen "tcp://127.0.0.1:$port" --max-seqs 40 \
        --batch-tokens 64 "$@" > "$OUT/serve-$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do grep -q "ready on" "$OUT/serve-$label.log" && break; sleep 0.2; done
    "$BIN" bench --server "tcp://127.0.0.1:$port" --concurrency "$conc" --requests "$reqs" \
        --warmup "$conc" --input-len 16 --output-len 32 --len-spread 0 --ban-tokens 128001,128008,128009 \
        --vocab 128000 --no-progress --json "$OUT/bench-$label.json" > "$OUT/bench-$label.txt" 2>&1 || true
    kill -TERM $pid; wait $pid 2>/dev/null || true
    /usr/bin/python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['output_throughput'],2))" \
        "$OUT/bench-$label.json" 2>/dev/null || echo 0
}
s1=$(serve_bench c1 1 4 1 -t 2)
s32=$(serve_bench c32 32 64 1 -t 2)
echo "serving, 1 rank x 2 threads: 1 stream $s1 out tok/s; 32 streams $s32 out tok/s (ratio $(/usr/bin/python3 -c "print(round($s32/max($s1,1e-9),2))"))" | tee -a "$OUT/decode.txt"
p4=$(serve_bench pp2-c4 4 16 2 -t 1 --pp 2)
o4=$(serve_bench one-c4 4 16 1 -t 2)
echo "serving 4 streams: PP=2 (2 ranks x 1 thread) $p4 out tok/s; 1 rank x 2 threads $o4 out tok/s (ratio $(/usr/bin/python3 -c "print(round($p4/max($o4,1e-9),3))"))" | tee -a "$OUT/decode.txt"
