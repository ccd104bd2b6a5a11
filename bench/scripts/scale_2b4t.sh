#!/usr/bin/env bash
# Serving measurements of docs/SCALING.md on the synthetic 2B-4T model: `bitrack serve`
# on 1, 2 and 4 ranks of this machine, each loaded by `bitrack bench --server` with one
# stream (concurrency 1) and with CONC streams (aggregate); then 200 requests against a
# 2-rank server (zero errors expected) and a concurrency sweep with its plot.
#   bench/scripts/scale_2b4t.sh [MODEL.gguf] [OUT_DIR]
# Env: LAYOUTS (label:ranks:serve args, comma-separated), SWEEP (1,4,16), CONC (16), OUT_LEN (32), IN_LEN (16), N1 (requests, one stream: 4), NC (requests,
#      aggregate: 2 x CONC), NSWEEP (requests per sweep point: CONC), N200 (200), OUT200 (output tokens of the 200 requests: 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
MODEL=${1:-build/bench-2b4t.gguf}
OUT=${2:-build/scale-2b4t}
CONC=${CONC:-16}
OUT_LEN=${OUT_LEN:-32}
IN_LEN=${IN_LEN:-16}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$MODEL" ] || "$BIN" synth --preset 2b-4t -o "$MODEL"
PY=/usr/bin/python3
BAN=128001,128008,128009

start_server() { # $1 label, $2 ranks, rest: serve args; sets PID and PORT
    local label=$1 ranks=$2; shift 2
    PORT=$((30000 + RANDOM % 20000))
    local launcher=()
    [ "$ranks" -gt 1 ] && launcher=(mpirun --oversubscribe --bind-to none -np "$ranks")
    "${launcher[@]}" "$BIN" serve -m "$MODEL" --listen "tcp://127.0.0.1:$PORT" --max-seqs 40 \
        --batch-tokens 64 "$@" > "$OUT/serve-$label.log" 2>&1 &
    PID=$!
    for _ in $(seq 900); do grep -q "ready on" "$OUT/serve-$label.log" && return 0; sleep 0.2; done
    echo "server $label did not start"; cat "$OUT/serve-$label.log"; return 1
}
stop_server() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
trap stop_server EXIT
bench() { # $1 label, rest: bench args
    local label=$1; shift
    "$BIN" bench --server "tcp://127.0.0.1:$PORT" --input-len "$IN_LEN" --len-spread 0 \
        --ban-tokens "$BAN" --vocab 128000 --timeout "${TIMEOUT_MS:-600000}" --no-progress --json "$OUT/bench-$label.json" "$@" \
        > "$OUT/bench-$label.txt" 2>&1 || true
}
row() { # $1 label of the layout, $2 json one stream, $3 json aggregate
    $PY - "$@" <<'PYEOF'
import json, sys
one, agg = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(f"| {sys.argv[1]} | {one['output_throughput']:.2f} | {one['tpot_ms']['p50']:.1f} | "
      f"{agg['output_throughput']:.2f} | {agg['tpot_ms']['p50']:.1f} | "
      f"{agg['completed']}/{agg['completed'] + agg['failed']} |")
PYEOF
}

echo "| layout | one stream out tok/s | TPOT p50 ms | $CONC streams out tok/s | TPOT p50 ms | ok/sent |" | tee "$OUT/table.md"
echo "|---|---|---|---|---|---|" | tee -a "$OUT/table.md"
specs=("1x1:1:-t 2" "2x1:2:-t 1 --tp 2" "1x2:2:-t 1 --pp 2" "2x2:4:-t 1 --tp 2 --pp 2")
[ -n "${LAYOUTS:-}" ] && IFS=, read -r -a specs <<< "$LAYOUTS"
for spec in "${specs[@]}"; do
    IFS=: read -r label ranks args <<< "$spec"
    # shellcheck disable=SC2086
    start_server "$label" "$ranks" $args
    bench "$label-c1" --concurrency 1 --requests "${N1:-4}" --warmup 1 --output-len "$OUT_LEN"
    bench "$label-c$CONC" --concurrency "$CONC" --requests "${NC:-$((2 * CONC))}" --warmup "$CONC" \
        --output-len "$OUT_LEN"
    if [ "$label" = 2x1 ]; then
        bench "$label-200" --concurrency "$CONC" --requests "${N200:-200}" --output-len "${OUT200:-8}"
        bench "$label-sweep" --sweep "${SWEEP:-1,4,16}" --requests "${NSWEEP:-$CONC}" --output-len "$OUT_LEN" \
            --plot "$OUT/sweep-2x1.svg"
    fi
    stop_server
    row "$label ($ranks ranks: ${args})" "$OUT/bench-$label-c1.json" "$OUT/bench-$label-c$CONC.json" | tee -a "$OUT/table.md"
done
