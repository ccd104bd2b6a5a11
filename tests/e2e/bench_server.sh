#!/usr/bin/env bash
# `bitrack bench --server` against a real one-rank `bitrack serve` on a tiny synthetic
# model: a closed-loop run (zero errors, a JSON report with every metric), an open-loop
# run, and a concurrency sweep (a well-formed SVG plot and a JSON array). Every command
# runs under `timeout`, so a hang fails the test instead of stalling CI.
set -euo pipefail
BIN=${BR_BIN:?}
PY=/usr/bin/python3
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init bench_server
. "$(dirname "$0")/../lib/skip.sh"
"$PY" -c 'import json, xml.dom.minidom' 2> /dev/null || br_skip "$PY cannot import json and xml.dom.minidom"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
timeout 60 "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 \
    --ctx 256 -o "$TMP/m.gguf" > /dev/null
br_serve_start "$TMP/serve.log" timeout 120 "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
    --max-seqs 40 --client-timeout 5
rc=0

echo "=== closed loop, concurrency 4"
timeout 60 "$BIN" bench --server "$ADDR" --concurrency 4 --requests 40 --warmup 4 --input-len 16 \
    --output-len 8 --timeout 10000 --json "$TMP/out.json" || rc=1
"$PY" - "$TMP/out.json" <<'EOF' || rc=1
import json, sys
d = json.load(open(sys.argv[1]))
assert d["failed"] == 0 and d["completed"] == 40, (d["failed"], d["first_error"])
assert all(v == 0 for v in d["errors"].values()), d["errors"]
for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
    for k in ("n", "mean", "p50", "p90", "p99", "min", "max"):
        assert k in d[m], (m, k)
    assert 0 < d[m]["min"] <= d[m]["p50"] <= d[m]["p90"] <= d[m]["p99"] <= d[m]["max"], (m, d[m])
for k in ("duration_s", "request_throughput", "input_throughput", "output_throughput"):
    assert d[k] > 0, k
assert d["input_tokens"] == 40 * 16, d["input_tokens"]
assert len(d["requests"]) == 40
out = sum(r["output_tokens"] for r in d["requests"])
assert out == d["output_tokens"] and 40 <= out <= 40 * 8, out
for r in d["requests"]:
    assert r["code"] == "ok" and r["finish"] in ("stop", "length"), r
    assert len(r["itl_ms"]) == max(r["output_tokens"] - 1, 0)
assert d["config"]["concurrency"] == 4 and d["config"]["mode"] == "closed"
print("ok   closed loop: %d requests, %.1f out tok/s, TTFT p50 %.1f ms, TPOT p50 %.1f ms"
      % (d["completed"], d["output_throughput"], d["ttft_ms"]["p50"], d["tpot_ms"]["p50"]))
EOF

echo "=== open loop, Poisson 10 req/s"
timeout 60 "$BIN" bench --server "$ADDR" --rate 10 --max-concurrency 8 --requests 20 --input-len 16 \
    --output-len 8 --len-spread 0.5 --seed 3 --timeout 10000 --json "$TMP/open.json" || rc=1
"$PY" - "$TMP/open.json" <<'EOF' || rc=1
import json, sys
d = json.load(open(sys.argv[1]))
assert d["failed"] == 0 and d["completed"] == 20, d["first_error"]
assert d["config"]["mode"] == "open" and d["config"]["rate"] == 10 and d["config"]["slots"] == 8
s = [r["sched_ms"] for r in d["requests"]]
assert s == sorted(s) and s[0] > 0
print("ok   open loop: %d requests in %.2f s" % (d["completed"], d["duration_s"]))
EOF

echo "=== sweep 1,2,4"
timeout 60 "$BIN" bench --server "$ADDR" --sweep 1,2,4 --requests 12 --input-len 16 --output-len 8 \
    --timeout 10000 --plot "$TMP/p.svg" --json "$TMP/sweep.json" || rc=1
"$PY" -c "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])" "$TMP/p.svg" || rc=1
"$PY" - "$TMP/sweep.json" "$TMP/p.svg" <<'EOF' || rc=1
import json, sys
a = json.load(open(sys.argv[1]))
assert [r["config"]["concurrency"] for r in a] == [1, 2, 4]
assert all(r["failed"] == 0 and r["completed"] == 12 for r in a)
svg = open(sys.argv[2]).read()
assert svg.count("<polyline") == 2 and svg.count("<circle") == 6, svg
print("ok   sweep: " + ", ".join("c=%d %.1f tok/s" % (r["config"]["concurrency"], r["output_throughput"]) for r in a))
EOF

echo "=== usage errors and other benchmarks"
if timeout 10 "$BIN" bench --server "$ADDR" --plot x.svg > /dev/null 2>&1; then echo "FAIL --plot without a sweep"; rc=1; fi
if timeout 10 "$BIN" bench nosuch > /dev/null 2>&1; then echo "FAIL unknown benchmark accepted"; rc=1; fi
timeout 10 "$BIN" bench --help | grep -- --concurrency > /dev/null || { echo "FAIL bench --help"; rc=1; }

br_serve_stop
[ $rc = 0 ] && echo "ok   bench_server"
exit $rc
