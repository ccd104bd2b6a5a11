#!/usr/bin/env bash
# Overload and slow clients (tests/e2e/serve_overload.py): a one-rank `bitrack serve` with
# small bounds (8 sequences, --max-queue 16, --max-per-client 4, --client-queue 200,
# --max-prompt-tokens 512) under a blast at 10x its measured sustainable rate, a client
# over its per-client bound, oversized messages, and a client that never reads. Every
# command runs under `timeout`; a sanitizer report in the server's log fails the test.
set -euo pipefail
BIN=${BR_BIN:?}
PY=/usr/bin/python3
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init serve_overload
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
br_serve_start "$TMP/serve.log" timeout 600 "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
    --max-seqs 8 --max-queue 16 --max-per-client 4 --client-queue 200 --max-prompt-tokens 512 \
    --client-timeout 30
SERVER_PID=$(pgrep -P "$SPID" -f "bitrack serve" || echo "$SPID")
rc=0
timeout 400 "$PY" "$(dirname "$0")/serve_overload.py" "$ADDR" "$BIN" "$SERVER_PID" "$TMP" \
    "$TMP/serve.log" || rc=1
br_serve_stop
br_serve_check "$TMP/serve.log" || true
[ $rc = 0 ] || cat "$TMP/serve.log"
exit $rc
