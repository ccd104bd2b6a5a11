#!/usr/bin/env bash
# Starts a local multi-rank bitrack cluster, asks it one prompt through the client, and
# shuts it down: the README's first command.
#   launch/quickstart.sh [-m MODEL.gguf] [--tp T] [--pp P] [-n N] "prompt"
# Without -m it synthesizes a small model with the built-in byte-level vocabulary. The
# server listens on loopback only (port $BITRACK_PORT, default 5599).
#
# Exit status: 0 when the prompt was answered; otherwise non-zero after a line saying
# why. Everything it writes (the synthetic model, the server's log) lives in one temporary
# directory that is removed on every exit, success or not.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BITRACK_BIN:-build/release/bitrack}
model= tp=2 pp=1 n=32 port=${BITRACK_PORT:-5599} hport=${BITRACK_HTTP_PORT:-8099}
die() { echo "quickstart: $*" >&2; exit 1; }
while [ $# -gt 1 ]; do
    case "$1" in
        -m) model=$2; shift 2 ;;
        --tp) tp=$2; shift 2 ;;
        --pp) pp=$2; shift 2 ;;
        -n) n=$2; shift 2 ;;
        *) echo "usage: $0 [-m MODEL] [--tp T] [--pp P] [-n N] \"prompt\"" >&2; exit 2 ;;
    esac
done
prompt=${1:-"Ternary weights are"}
[ -x "$BIN" ] || die "no $BIN: build first (cmake --preset release && cmake --build --preset release)"
[ -z "$model" ] || [ -e "$model" ] || die "no model at $model"

work=$(mktemp -d "${TMPDIR:-/tmp}/bitrack-quickstart.XXXXXX")
pid=
# The script's own status is kept: cleanup must neither change it nor stop half-way
# (a failing kill or wait under set -e would skip the removal).
cleanup() {
    local rc=$?
    set +e
    if [ -n "$pid" ]; then
        # the launcher, mpirun and the ranks share one process group: stop them all
        kill -TERM -- "-$pid" 2> /dev/null
        wait "$pid" 2> /dev/null
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "$model" ]; then
    model=$work/quickstart.gguf
    "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 4 --ff 1024 --layers 4 \
        --vocab 2048 --ctx 1024 -o "$model" > /dev/null 2> "$work/synth.log" \
        || { cat "$work/synth.log" >&2; die "could not write the synthetic model"; }
fi
log=$work/server.log
addr="127.0.0.1:$port"
echo "starting $((tp * pp)) ranks (tp $tp x pp $pp) serving $model on $addr" >&2
# TMPDIR: Open MPI's session directory goes into $work too, and is removed with it
TMPDIR=$work setsid launch/bitrack-launch --local $((tp * pp)) --tp "$tp" --pp "$pp" -- serve -m "$model" \
    --listen "$addr" --http "127.0.0.1:$hport" > "$log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    grep -q "ready on" "$log" && break
    if ! kill -0 "$pid" 2> /dev/null; then
        cat "$log" >&2
        die "the server exited before it was ready (log above; is port $port taken? set BITRACK_PORT)"
    fi
    sleep 0.1
done
grep "ready on" "$log" >&2 || { cat "$log" >&2; die "the server was not ready within 60 s (log above)"; }
"$BIN" generate --server "$addr" -n "$n" -v "$prompt" || die "the request failed (see above)"
echo "--- the same cluster through its OpenAI-compatible HTTP API (curl, streamed):" >&2
curl -sSN "http://127.0.0.1:$hport/v1/completions" -H 'Content-Type: application/json' -d "{\"max_tokens\": $n, \
\"stream\": true, \"prompt\": \"$(printf '%s' "$prompt" | sed 's/[\\"]/\\&/g')\"}" || die "the HTTP request failed"
