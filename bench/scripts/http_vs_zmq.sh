#!/usr/bin/env bash
# HTTP against ZeroMQ on one server, same run: a 2-rank `bitrack serve --http` (tensor
# parallel, on this machine) is load-tested alternately through its ZeroMQ endpoint
# (`bench --server`) and its OpenAI-compatible API (`bench --openai`), ROUNDS times each,
# at the same concurrency and workload; prints each round and the medians, and the HTTP /
# ZeroMQ ratios of output throughput and TTFT p50 (docs/BENCH.md, "HTTP and ZeroMQ").
#
#   bench/scripts/http_vs_zmq.sh [MODEL.gguf]   (env: CONC=32 ROUNDS=3 REQUESTS=128 IN=64 OUT=64)
# Without a model it synthesizes the quick start's small model. Needs mpirun.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
CONC=${CONC:-32} ROUNDS=${ROUNDS:-3} REQUESTS=${REQUESTS:-128} IN=${IN:-64} OUT=${OUT:-64}
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
common=(--concurrency "$CONC" --requests "$REQUESTS" --warmup "$CONC" --input-len "$IN"
        --output-len "$OUT" --ban-tokens 1024,1025,1026,1027,1028,1029 --no-progress)
for r in $(seq "$ROUNDS"); do
    "$BIN" bench --server "$zaddr" "${common[@]}" --seed "$r" --json "$TMP/zmq.$r.json" > /dev/null
    "$BIN" bench --openai "http://$haddr" "${common[@]}" --seed "$r" --json "$TMP/http.$r.json" > /dev/null
done
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
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
print("median  zmq: %.1f tok/s, TTFT p50 %.2f ms;  http: %.1f tok/s, TTFT p50 %.2f ms" %
      (med["zmq"][0], med["zmq"][1], med["http"][0], med["http"][1]))
print("http / zmq output throughput %.3f;  TTFT p50 http - zmq %+.2f ms" %
      (med["http"][0] / med["zmq"][0], med["http"][1] - med["zmq"][1]))
PY
