#!/usr/bin/env bash
# Head-of-line blocking (docs/RELIABILITY.md, "Overload"): while one client floods 1 MiB
# prompts (BR_FLOOD_N, default 30), a running stream's largest inter-token gap, a ping
# and another client's small request stay under BR_FLOOD_LIMIT_MS (default 250 ms; the
# small request 4x that). tests/e2e/serve_flood.py prints the numbers. Then 300 clients
# start a stream and vanish: all their requests are freed, and the server's log says so in
# a few lines (at most one a second, with a count), not one line per client.
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init serve_flood
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
"$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 --ctx 2048 \
    -o "$TMP/m.gguf" > /dev/null 2>&1
br_serve_start "$TMP/serve.log" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" --max-seqs 8
rc=0
/usr/bin/python3 "$(dirname "$0")/serve_flood.py" "$ADDR" "${BR_FLOOD_N:-30}" \
    "${BR_FLOOD_LIMIT_MS:-250}" || rc=1
# client churn is logged at most once a second, with a count of the rest (the last count
# within a second)
sleep 1.5
n_churn=$(grep -ac "could not be sent to" "$TMP/serve.log" || true)
total=$(grep -a "could not be sent to" "$TMP/serve.log" | awk '{ n += $3 } END { print n + 0 }')
if [ "$n_churn" -le 15 ] && [ "$total" -ge 250 ]; then
    echo "ok   client churn ($total clients) logged in $n_churn lines: $(grep -a "could not be sent to" "$TMP/serve.log" | tail -1)"
else
    echo "FAIL client churn: $n_churn log lines for $total clients:"; grep -a "could not be sent" "$TMP/serve.log"; rc=1
fi
br_serve_stop
if grep -q "Sanitizer" "$TMP/serve.log"; then echo "FAIL: sanitizer report"; rc=1; fi
[ $rc = 0 ] || tail -20 "$TMP/serve.log"
exit $rc
