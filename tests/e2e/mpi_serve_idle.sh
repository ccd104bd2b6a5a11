#!/usr/bin/env bash
# An idle cluster sleeps (docs/RELIABILITY.md, "Idle"): `bitrack serve` as 2 ranks (TP 2,
# then PP 2) on a tiny model; over BR_IDLE_S (default 10) seconds without requests each
# rank uses under 2% of a core, and the first token after that is not much slower than on
# a busy server (tests/e2e/mpi_serve_idle.py prints both).
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init serve_idle
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
"$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 --ctx 256 \
    -o "$TMP/m.gguf" > /dev/null 2>&1
rc=0
for layout in 2x1 1x2; do
    tp=${layout%x*}; pp=${layout#*x}
    echo "=== $layout"
    br_serve_start "$TMP/serve.log" mpirun --oversubscribe --bind-to none -np 2 "$BIN" serve \
        -m "$TMP/m.gguf" --listen "$ADDR" --tp "$tp" --pp "$pp"
    pids=$(pgrep -P "$SPID" -f "serve -m $TMP/m.gguf" | sort -n)
    [ "$(echo "$pids" | wc -w)" = 2 ] || { echo "FAIL ranks not found: $pids"; rc=1; }
    /usr/bin/python3 "$(dirname "$0")/mpi_serve_idle.py" "$ADDR" "${BR_IDLE_S:-10}" \
        "${BR_IDLE_ROUNDS:-9}" $pids || rc=1
    br_serve_stop
    grep -q stopped "$TMP/serve.log" || { echo "FAIL: no clean stop"; tail "$TMP/serve.log"; rc=1; }
done
exit $rc
