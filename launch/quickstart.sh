#!/usr/bin/env bash
# Starts a local multi-rank bitrack cluster, asks it one prompt through the client, and
# shuts it down: the README's first command.
#   launch/quickstart.sh [-m MODEL.gguf] [--tp T] [--pp P] [-n N] "prompt"
# Without -m it synthesizes a small model (build/quickstart.gguf) with the built-in
# byte-level vocabulary. The server listens on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BITRACK_BIN:-build/release/bitrack}
model= tp=2 pp=1 n=32 port=${BITRACK_PORT:-5599}
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
[ -x "$BIN" ] || { echo "build first: cmake --preset release && cmake --build --preset release" >&2; exit 1; }
if [ -z "$model" ]; then
    model=build/quickstart.gguf
    [ -f "$model" ] || "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 4 --ff 1024 \
        --layers 4 --vocab 2048 --ctx 1024 -o "$model"
fi
# Everything temporary (the server's log, Open MPI's session folder) goes in one folder
# that is removed on the way out, whatever happens.
work=$(mktemp -d "${TMPDIR:-/tmp}/bitrack-quickstart.XXXXXX")
log=$work/serve.log
addr="tcp://127.0.0.1:$port"
echo "starting $((tp * pp)) ranks (tp $tp x pp $pp) serving $model on $addr" >&2
TMPDIR=$work setsid launch/bitrack-launch --local $((tp * pp)) --tp "$tp" --pp "$pp" -- \
    serve -m "$model" --listen "$addr" > "$log" 2>&1 &
pid=$!
# The launcher, mpirun and the ranks share one process group: stop them all. The script's
# own status is kept: 0 when the client got its answer, the failure's otherwise.
cleanup() {
    local rc=$?
    set +e
    kill -TERM -- -$pid 2> /dev/null
    wait $pid 2> /dev/null
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
fail() {
    echo "quickstart: $*" >&2
    sed 's/^/    /' "$log" >&2
    exit 1
}
for _ in $(seq 600); do
    grep -q "ready on" "$log" && break
    kill -0 $pid 2> /dev/null || fail "the server ended before it was ready; its log:"
    sleep 0.1
done
grep "ready on" "$log" >&2 || fail "the server was not ready within 60 s; its log:"
"$BIN" generate --server "$addr" -n "$n" -v "$prompt"
