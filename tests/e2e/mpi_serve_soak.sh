#!/usr/bin/env bash
# Soak (tests/e2e/serve_soak.py): 5,000 short requests from 64 concurrent clients against
# a 2x2 cluster (`mpirun -np 4 bitrack serve --tp 2 --pp 2 --micro-batches 2`: two steps in
# flight, which one machine does not do by default). Expected streams for 64
# distinct (prompt, seed) pairs come from a one-rank server, whose answers are first
# spot-checked against `bitrack run`. Every soak request must get exactly one final
# event and its pair's tokens, and rank 0's RSS must return to its post-warm-up value.
# BR_QUICK=1 (the asan run) sends 500 requests; BR_SOAK_REQUESTS overrides the count.
set -euo pipefail
BIN=${BR_BIN:?}
PY=/usr/bin/python3
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init serve_soak
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
command -v mpirun > /dev/null || br_skip "no mpirun"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export RSS_SLACK_MIB=8
if grep -q __asan_init "$BIN"; then
    # ASan keeps freed memory in quarantine (256 MiB by default): cap it, and allow for it
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=16:thread_local_quarantine_size_kb=64"
    export RSS_SLACK_MIB=40
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
N=${BR_SOAK_REQUESTS:-$([ "${BR_QUICK:-0}" = 1 ] && echo 500 || echo 5000)}
timeout 60 "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 \
    --ctx 256 -o "$TMP/m.gguf" > /dev/null 2>&1

start_server() { # log tp pp, launcher args...
    local log=$1 tp=$2 pp=$3; shift 3
    BR_SERVE_WAIT=600 br_serve_start "$log" "$@" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
        --max-seqs 64 --max-queue 256 --max-per-client 64 --tp "$tp" --pp "$pp" --micro-batches "$pp"
}
stop_server() { # log
    br_serve_stop
    br_serve_check "$1" || exit 1
}

echo "=== expected streams from one rank"
start_server "$TMP/one.log" 1 1
timeout 300 "$PY" - "$ADDR" "$TMP/expected.json" <<'PYEOF'
import json, sys
import msgpack, zmq
addr, out = sys.argv[1], sys.argv[2]
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(addr)
words = "ternary weights pack into two bits and the cluster shares the layers".split()
pairs = []
for k in range(64):
    e = {"prompt": "%d: %s" % (k, " ".join(words[: 2 + k % 9])), "seed": 1000 + 7 * k,
         "max_tokens": 4 + k % 5, "temperature": 0.9, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    s.send(msgpack.packb({"v": 1, "type": "generate", "id": "e%d" % k, "stream": True,
                          **e}, use_bin_type=True))
    toks = []
    while True:
        assert s.poll(30000), "no reply"
        r = msgpack.unpackb(s.recv(), raw=False)
        if r["type"] == "token" and r["token"] >= 0:
            toks.append(r["token"])
        elif r["type"] == "done":
            break
        elif r["type"] == "error":
            sys.exit("error: %r" % r)
    e["tokens"] = toks
    pairs.append(e)
assert len({json.dumps(p["tokens"]) for p in pairs}) > 48, "streams are not distinct"
json.dump(pairs, open(out, "w"))
PYEOF
stop_server "$TMP/one.log"
rc=0
for k in 0 13 38 63; do # the one-rank server agrees with `bitrack run`
    IFS=$'\t' read -r prompt seed n want < <("$PY" -c "import json,sys; e=json.load(open(sys.argv[1]))[int(sys.argv[2])]; print('\t'.join([e['prompt'], str(e['seed']), str(e['max_tokens']), ','.join(map(str, e['tokens']))]))" "$TMP/expected.json" "$k")
    got=$("$BIN" run -m "$TMP/m.gguf" --ids -n "$n" --temp 0.9 --top-k 0 --top-p 1 --min-p 0 --seed "$seed" -p "$prompt" 2>/dev/null | tr ' ' ',')
    if [ "$got" = "$want" ]; then echo "ok   pair $k: one-rank server equals bitrack run ($got)"
    else echo "FAIL pair $k: server $want, run $got"; rc=1; fi
done

echo "=== soak: $N requests, 64 clients, 2x2 cluster"
start_server "$TMP/soak.log" 2 2 mpirun --oversubscribe --bind-to none -np 4
RANK0=
for pid in $(pgrep -f "serve -m $TMP/m.gguf"); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -x "OMPI_COMM_WORLD_RANK=0" > /dev/null; then RANK0=$pid; fi
done
[ -n "$RANK0" ] || {
    echo "FAIL: cannot find rank 0 among: $(pgrep -af "serve -m $TMP/m.gguf" || true)"
    cat "$TMP/soak.log"
    exit 1
}
timeout 900 "$PY" "$(dirname "$0")/serve_soak.py" "$ADDR" "$TMP/expected.json" "$RANK0" "$N" 64 || rc=1
stop_server "$TMP/soak.log"
exit $rc
