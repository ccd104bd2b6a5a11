#!/usr/bin/env bash
# `bitrack serve` on a synthetic model, one rank and then a 2x2 cluster under mpirun,
# each checked by tests/e2e/serve_check.py (stream equality with `bitrack run`, 32
# concurrent clients, cancel, a vanished client, malformed messages, too_long), and
# `bitrack generate` (the C client) against `run`. BR_SERVE_LAYOUTS (default "1x1 2x2")
# picks the layouts. A sanitizer report in the server's log fails the test.
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init serve
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
"$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 --ctx 256 \
    -o "$TMP/m.gguf"
rc=0
for layout in ${BR_SERVE_LAYOUTS:-1x1 2x2}; do
    echo "=== server $layout"
    tp=${layout%x*}; pp=${layout#*x}
    if [ "$layout" = 1x1 ]; then
        launcher=()
    else
        launcher=(mpirun --oversubscribe --bind-to none -np $((tp * pp)))
    fi
    br_serve_start "$TMP/serve.log" "${launcher[@]}" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
        --max-seqs 40 --client-timeout 2 --tp "$tp" --pp "$pp"
    /usr/bin/python3 "$(dirname "$0")/serve_check.py" "$ADDR" "$BIN" "$TMP/m.gguf" 256 || rc=1
    # the C client streams what run prints
    a=$("$BIN" generate --server "$ADDR" --ids -n 12 --temp 0.9 --seed 3 "Hello, ternary world")
    b=$("$BIN" run -m "$TMP/m.gguf" --ids -n 12 --temp 0.9 --seed 3 -p "Hello, ternary world" 2>/dev/null)
    if [ "$a" = "$b" ]; then echo "ok   bitrack generate equals bitrack run: $a"; else echo "FAIL generate '$a' vs run '$b'"; rc=1; fi
    br_serve_stop
    br_serve_check "$TMP/serve.log" || true
done
exit $rc
