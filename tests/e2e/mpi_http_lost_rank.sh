#!/usr/bin/env bash
# A lost rank seen through the HTTP API (docs/HTTP.md, docs/RELIABILITY.md "Lost ranks"):
# `bitrack serve --http` runs as 3 ranks (--tp 1 --pp 3, through bitrack-launch --local),
# two clients stream long completions over HTTP, and rank 1 gets SIGKILL. Each stream must
# end within 5 s, with an SSE error event (code unavailable, naming the lost rank) or cut
# off without [DONE] where the launcher ended rank 0 first (at least one with the event),
# /health must stop answering 200, and the job must exit non-zero (http_check.py lost).
set -euo pipefail
BIN=${BR_BIN:?}
HERE=$(cd "$(dirname "$0")" && pwd)
LAUNCH=$HERE/../../launch/bitrack-launch
TMP=${BR_TMP:-/tmp}/httplost.$$
PY=${PY:-/usr/bin/python3}
export BITRACK_BIN=$BIN OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
export BR_LOSTRANK_TAG="hl$$"
. "$HERE/../lib/skip.sh"
command -v mpirun > /dev/null || { echo "FAIL: mpirun not found"; exit 1; }
mkdir -p "$TMP"
JOB=""
cleanup() {
    [ -n "$JOB" ] && kill -- "$JOB" 2> /dev/null
    wait 2> /dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ZPORT=$(free_port)
HPORT=$(free_port)
"$BIN" synth --preset tiny --embd 256 --heads 4 --kv-heads 2 --ff 512 --layers 3 --vocab 1030 \
    --ctx 2048 -o "$TMP/m.gguf" > /dev/null
"$LAUNCH" --local 3 --tp 1 --pp 3 --env BR_LOSTRANK_TAG -- serve -m "$TMP/m.gguf" \
    --listen "tcp://127.0.0.1:$ZPORT" --http "127.0.0.1:$HPORT" --step-timeout 3 \
    > "$TMP/job.out" 2> "$TMP/job.log" &
JOB=$!
for _ in $(seq 600); do grep -q "bitrack serve: ready" "$TMP/job.log" && break; sleep 0.1; done
grep -q "bitrack serve: ready" "$TMP/job.log" || { cat "$TMP/job.log"; exit 1; }
victim=""
for _ in $(seq 50); do
    for p in $(pgrep -f -- "$BIN serve" || true); do
        if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -x "BR_LOSTRANK_TAG=$BR_LOSTRANK_TAG" > /dev/null &&
            tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -x "OMPI_COMM_WORLD_RANK=1" > /dev/null; then
            victim=$p
        fi
    done
    [ -n "$victim" ] && break
    sleep 0.1
done
[ -n "$victim" ] || { echo "FAIL rank 1 not found"; exit 1; }
rc=0
"$PY" "$HERE/http_check.py" lost "http://127.0.0.1:$HPORT" "$victim" || rc=1
job_rc=0
for _ in $(seq 300); do kill -0 "$JOB" 2> /dev/null || break; sleep 0.1; done
wait "$JOB" || job_rc=$?
JOB=""
if [ "$job_rc" != 0 ]; then echo "ok   the job exited with status $job_rc"; else
    echo "FAIL the job exited 0 after losing a rank"
    rc=1
fi
if grep -q "Sanitizer" "$TMP/job.log"; then echo "FAIL: sanitizer report"; cat "$TMP/job.log"; rc=1; fi
exit $rc
