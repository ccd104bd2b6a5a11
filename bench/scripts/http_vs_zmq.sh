#!/usr/bin/env bash
# HTTP against ZeroMQ on one server, same run: a 2-rank `bitrack serve --http` (tensor
# parallel, on this machine) is load-tested alternately through its ZeroMQ endpoint
# (`bench --server`) and its OpenAI-compatible API (`bench --openai`), ROUNDS times each,
# at the same concurrency and workload; prints each round and the medians, and the HTTP /
# ZeroMQ ratios of output throughput and TTFT p50 (docs/BENCH.md, "HTTP and ZeroMQ").
# With MIXED=1 each round runs both at once, CONC/2 streams each: the two halves share
# every batch and every moment of the machine's load, so their difference is the
# transports' alone even where other jobs make rounds differ from each other.
#
#   bench/scripts/http_vs_zmq.sh [MODEL.gguf]
#   (env: CONC=32 ROUNDS=3 REQUESTS=128 IN=64 OUT=64 MIXED=0)
# Without a model it synthesizes the quick start's small model. Needs mpirun.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
CONC=${CONC:-32} ROUNDS=${ROUNDS:-3} REQUESTS=${REQUESTS:-128} IN=${IN:-64} OUT=${OUT:-64}
MIXED=${MIXED:-0}
TMP=$(mktemp -d)
model=${1:-$TMP/m.gguf}
[ -f "$model" ] || "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 4 --ff 1024 \
    --layers 4 --vocab 1030 --ctx 1024 -o "$model" > /dev/null
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
zaddr="tcp://127.0.0.1:$(port)" haddr="127.0.0.1:$(port)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe --bind-to none -np 2 "$BIN" serve -m "$model" --tp 2 --pp 1 \
    --listen "$zaddr" --http "$haddr" --max-seqs 40 --step-timeout 30 --log-file "$TMP/requests.log" \
    > "$TMP/serve.log" 2>&1 &
spid=$!
trap 'kill -TERM $spid 2>/dev/null; wait $spid 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 300); do grep -q "serve: ready" "$TMP/serve.log" && break; sleep 0.1; done
grep "serve: ready" "$TMP/serve.log" >&2 || { cat "$TMP/serve.log" >&2; exit 1; }
# the synthetic vocabulary's special tokens are banned so every request makes OUT tokens
c=$CONC
[ "$MIXED" = 1 ] && c=$((CONC / 2))
common=(--concurrency "$c" --requests "$REQUESTS" --warmup "$c" --input-len "$IN"
        --output-len "$OUT" --ban-tokens 1024,1025,1026,1027,1028,1029 --no-progress)
for r in $(seq "$ROUNDS"); do
    "$BIN" bench --server "$zaddr" "${common[@]}" --seed "$r" --json "$TMP/zmq.$r.json" > /dev/null &
    zpid=$!
    [ "$MIXED" = 1 ] || wait $zpid
    "$BIN" bench --openai "http://$haddr" "${common[@]}" --seed "$r" --json "$TMP/http.$r.json" > /dev/null
    wait $zpid || true
done
python3 - "$TMP" "$ROUNDS" "$MIXED" "$CONC" <<'PY'
import json, statistics, sys
tmp, rounds, mixed, conc = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
rows = {}
for api in ("zmq", "http"):
    rows[api] = [json.load(open("%s/%s.%d.json" % (tmp, api, r))) for r in range(1, rounds + 1)]
print("%-6s %5s %14s %12s %12s %12s %8s" % ("api", "round", "output tok/s", "TTFT p50 ms",
                                            "TPOT p50 ms", "E2E p50 ms", "failed"))
for api in ("zmq", "http"):
    for i, j in enumerate(rows[api]):
        print("%-6s %5d %14.1f %12.2f %12.2f %12.2f %8d" % (api, i + 1, j["output_throughput"],
              j["ttft_ms"]["p50"], j["tpot_ms"]["p50"], j["e2e_ms"]["p50"], j["failed"]))
med = {api: (statistics.median(j["output_throughput"] for j in rows[api]),
             statistics.median(j["ttft_ms"]["p50"] for j in rows[api])) for api in rows}
ratios = [h["output_throughput"] / z["output_throughput"] for z, h in zip(rows["zmq"], rows["http"])]
dttft = [h["ttft_ms"]["p50"] - z["ttft_ms"]["p50"] for z, h in zip(rows["zmq"], rows["http"])]
print("median  zmq: %.1f tok/s, TTFT p50 %.2f ms;  http: %.1f tok/s, TTFT p50 %.2f ms" %
      (med["zmq"][0], med["zmq"][1], med["http"][0], med["http"][1]))
print("%s, %d streams in all" % ("both at once, half the streams each" if mixed
                                 else "one after the other", conc))
print("per round, http / zmq output throughput: %s (median %.3f)" %
      (" ".join("%.3f" % x for x in ratios), statistics.median(ratios)))
print("per round, TTFT p50 http - zmq (ms): %s (median %+.2f)" %
      (" ".join("%+.2f" % x for x in dttft), statistics.median(dttft)))
PY
