#!/usr/bin/env bash
# Overload and slow clients (tests/e2e/serve_overload.py): a one-rank `bitrack serve` with
# small bounds (8 sequences, --max-queue 16, --max-per-client 4, --client-queue 200,
# --max-prompt-tokens 512) under a blast at 10x its measured sustainable rate, a client
# over its per-client bound, oversized messages, and a client that never reads. Every
# command runs under `timeout`; a sanitizer report in the server's log fails the test.
set -euo pipefail
BIN=${BR_BIN:?}
PY=/usr/bin/python3
TMP=${BR_TMP:-/tmp}/serve_overload.$$
mkdir -p "$TMP"
. "$(dirname "$0")/../lib/port.sh"
PORT=$(br_free_port)
ADDR="tcp://127.0.0.1:$PORT"
cleanup() { [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
export RSS_BOUND_MIB=32
if grep -q __asan_init "$BIN"; then
    # ASan keeps freed memory in quarantine: bound it so that RSS still means something
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=16:thread_local_quarantine_size_kb=64"
    export RSS_BOUND_MIB=96
elif grep -q __tsan_init "$BIN"; then
    export RSS_BOUND_MIB=256 # ThreadSanitizer's shadow memory grows with what was touched
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
timeout 60 "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 \
    --ctx 4096 -o "$TMP/m.gguf" > /dev/null 2>&1
timeout 600 "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" --max-seqs 8 --max-queue 16 \
    --max-per-client 4 --client-queue 200 --max-prompt-tokens 512 --client-timeout 30 \
    > "$TMP/serve.log" 2>&1 &
SPID=$!
for _ in $(seq 300); do grep -q "ready on" "$TMP/serve.log" && break; sleep 0.1; done
grep -q "ready on" "$TMP/serve.log" || { cat "$TMP/serve.log"; exit 1; }
SERVER_PID=$(pgrep -P "$SPID" -f "bitrack serve" || echo "$SPID")
rc=0
timeout 400 "$PY" "$(dirname "$0")/serve_overload.py" "$ADDR" "$BIN" "$SERVER_PID" "$TMP" \
    "$TMP/serve.log" || rc=1
kill -TERM "$SPID"; wait "$SPID" || true; SPID=
grep -q stopped "$TMP/serve.log" || { echo "FAIL: no clean stop"; rc=1; }
if grep -q "Sanitizer" "$TMP/serve.log"; then echo "FAIL: sanitizer report"; rc=1; fi
[ $rc = 0 ] || cat "$TMP/serve.log"
exit $rc
