#!/usr/bin/env bash
# A lost rank on the local cluster (docs/RELIABILITY.md, "Lost ranks"). `bitrack serve`
# runs as 3 ranks (--tp 1 --pp 3, through bitrack-launch --local) on a tiny model with
# fewer sequence slots than clients, and tests/e2e/lost_rank_client.py streams long
# generations from 4 clients (2 running, 2 queued) when rank 1 gets SIGKILL. Checked:
#  - every client gets `unavailable` within 5 s of the kill (the delays are printed);
#  - the job's exit status (bitrack-launch, i.e. mpirun) is non-zero;
#  - the job's stderr names the lost rank and its host;
# then again with bitrack-launch --restart 1: the job is restarted (shards reloaded) and a
# client retrying the same greedy request is served the same tokens as before the kill.
set -euo pipefail
BIN=${BR_BIN:?}
HERE=$(cd "$(dirname "$0")" && pwd)
LAUNCH=$HERE/../../launch/bitrack-launch
TMP=${BR_TMP:-/tmp}/lostrank.$$
. "$(dirname "$0")/../lib/port.sh"
PORT=$(br_free_port)
ADDR="tcp://127.0.0.1:$PORT"
export BITRACK_BIN=$BIN OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
# tells this test's ranks apart from anyone else's (forwarded to the ranks)
export BR_LOSTRANK_TAG="lr$$"
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
command -v mpirun > /dev/null || { echo "FAIL: mpirun not found"; exit 1; }
mkdir -p "$TMP"
JOB=""
cleanup() {
    [ -n "$JOB" ] && kill -- "$JOB" 2> /dev/null
    wait 2> /dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# The pid of world rank $1 of this test's job ("" while it is not there).
rank_pid() {
    local p
    for p in $(pgrep -f -- "$BIN serve" || true); do
        if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -x "BR_LOSTRANK_TAG=$BR_LOSTRANK_TAG" > /dev/null &&
            tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -x "OMPI_COMM_WORLD_RANK=$1" > /dev/null; then
            echo "$p"
            return
        fi
    done
}

# Waits for the log $1 to say "ready" $2 times.
wait_ready() {
    for _ in $(seq 600); do
        [ "$(grep -c 'bitrack serve: ready' "$1" || true)" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "server not ready:"
    cat "$1"
    return 1
}

"$BIN" synth --preset tiny --embd 256 --heads 4 --kv-heads 2 --ff 512 --layers 3 --vocab 1030 \
    --ctx 2048 -o "$TMP/m.gguf" > /dev/null
serve=(serve -m "$TMP/m.gguf" --listen "$ADDR" --max-seqs 2 --step-timeout 3)

# Runs the job (extra bitrack-launch options in $@) and the clients; kills rank 1.
# Leaves the job's exit status in $job_rc and its stderr in $TMP/job.log.
lose_rank() {
    local name=$1 retry=$2
    shift 2
    echo "=== $name"
    "$LAUNCH" --local 3 --tp 1 --pp 3 --env BR_LOSTRANK_TAG "$@" -- "${serve[@]}" \
        > "$TMP/job.out" 2> "$TMP/job.log" &
    JOB=$!
    wait_ready "$TMP/job.log" 1 || { fail "$name: no server"; return; }
    local victim
    for _ in $(seq 50); do
        victim=$(rank_pid 1)
        [ -n "$victim" ] && break
        sleep 0.1
    done
    [ -n "$victim" ] || { fail "$name: rank 1 not found"; return; }
    echo "rank 1 is pid $victim"
    local ranks
    ranks="$(rank_pid 0) $(rank_pid 2)"
    # the C client too: `bitrack generate` streaming a long generation
    (
        rc=0
        "$BIN" generate --server "$ADDR" --tokens 7,8,9 -n 1900 --timeout 20000 > /dev/null 2> "$TMP/gen.err" || rc=$?
        echo "$rc $(date +%s.%N)" > "$TMP/gen.end"
    ) &
    local gen=$!
    rm -f "$TMP/regen.end"
    # with a restart: `bitrack generate --retry`, started right after the kill, must be
    # served by the restarted job
    /usr/bin/python3 "$HERE/lost_rank_client.py" "$ADDR" --clients 4 --long 1500 \
        --kill "$victim" ${retry:+--retry "$retry"} | while IFS= read -r line; do
        echo "$line"
        case $line in
            "loss at epoch"*)
                [ -z "$retry" ] || (
                    rc=0
                    "$BIN" generate --server "$ADDR" --ids --tokens 5,9,14,3,27,8 -n 24 \
                        --timeout 2000 --retry 40 > "$TMP/regen.out" 2> "$TMP/regen.err" || rc=$?
                    echo "$rc" > "$TMP/regen.end"
                ) &
                ;;
        esac
    done | tee "$TMP/clients.txt" || fail "$name: clients"
    wait "$gen" || true
    if [ -n "$retry" ]; then
        for _ in $(seq 600); do [ -f "$TMP/regen.end" ] && break; sleep 0.1; done
        local want
        want=$("$BIN" run -m "$TMP/m.gguf" --ids --tokens 5,9,14,3,27,8 -n 24 2> /dev/null)
        if [ "$(cat "$TMP/regen.end" 2> /dev/null)" = 0 ] && [ "$(cat "$TMP/regen.out")" = "$want" ]; then
            echo "ok   bitrack generate --retry was served by the restarted job after $(grep -c '; retry' "$TMP/regen.err") retries: $want"
        else
            fail "$name: bitrack generate --retry: status $(cat "$TMP/regen.end" 2> /dev/null), got '$(cat "$TMP/regen.out")', want '$want'; $(cat "$TMP/regen.err")"
        fi
    fi
    local loss grc gend
    loss=$(sed -n 's/^loss at epoch //p' "$TMP/clients.txt")
    read -r grc gend < "$TMP/gen.end" || true
    local gdt
    gdt=$(awk -v a="$loss" -v b="$gend" 'BEGIN { printf "%.2f", b - a }')
    if [ "$grc" != 0 ] && grep -q 'unavailable\|connection to .* was lost' "$TMP/gen.err" &&
        awk -v d="$gdt" 'BEGIN { exit !(d < 5) }'; then
        echo "ok   bitrack generate: exit status $grc after $gdt s: $(cat "$TMP/gen.err")"
    else
        fail "$name: bitrack generate: exit status $grc after $gdt s: $(cat "$TMP/gen.err")"
    fi
    if [ -n "$retry" ]; then
        # the restarted job is serving: stop it as an operator would
        kill -TERM "$JOB" 2> /dev/null || fail "$name: the restarted job had already ended"
    fi
    job_rc=0
    local t=0
    while kill -0 "$JOB" 2> /dev/null && [ $t -lt 300 ]; do sleep 0.1; t=$((t + 1)); done
    if kill -0 "$JOB" 2> /dev/null; then
        fail "$name: the job is still running 30 s after the kill"
        kill -- "$JOB" 2> /dev/null || true
    fi
    wait "$JOB" || job_rc=$?
    JOB=""
    # no rank is left behind, running or as a zombie, once the job has ended
    local p st left=""
    for _ in $(seq 50); do
        left=""
        for p in $ranks; do
            st=$(ps -o stat= -p "$p" 2> /dev/null || true)
            [ -n "$st" ] && left="$left $p($st)"
        done
        [ -z "$left" ] && break
        sleep 0.1
    done
    if [ -n "$left" ]; then
        fail "$name: ranks left 5 s after the job ended:$left"
    else
        echo "ok   no rank left behind (pids $ranks), running or zombie"
    fi
    if grep -q "Sanitizer" "$TMP/job.log"; then
        fail "$name: sanitizer report"
        grep -A30 "Sanitizer" "$TMP/job.log" | head -60
    fi
    sed 's/^/    | /' "$TMP/job.log" | grep -v '^    | +' | head -40
}

lose_rank "kill -9 rank 1 of 3 (tp 1, pp 3)" ""
if [ "$job_rc" -ne 0 ]; then echo "ok   job exit status $job_rc"; else fail "job exit status 0 after a lost rank"; fi
host=$(hostname)
if grep -E "bitrack serve: rank [02]: .*rank 1 \(pid [0-9]+ on $host" "$TMP/job.log" > /dev/null; then
    echo "ok   a surviving rank named the lost rank and host:"
    grep -E "bitrack serve: rank [02]: .*rank 1 \(pid" "$TMP/job.log" | sed 's/^/    /'
else
    fail "no surviving rank named rank 1 on $host"
fi

lose_rank "kill -9 rank 1 under bitrack-launch --restart 1" 60 --restart 1
grep -q 'restart 1 of 1' "$TMP/job.log" && echo "ok   bitrack-launch restarted the job" ||
    fail "bitrack-launch did not restart the job"
if grep -q 'bitrack serve: stopped' "$TMP/job.log" && grep -q 'not restarting' "$TMP/job.log"; then
    echo "ok   SIGTERM to bitrack-launch stopped the restarted job cleanly, without a restart"
else
    fail "the restarted job did not stop cleanly on SIGTERM (exit status $job_rc)"
fi
[ "$(grep -c 'bitrack serve: ready' "$TMP/job.log" || true)" -ge 2 ] &&
    echo "ok   the restarted job reloaded the model and served" || fail "no second 'ready'"

echo "$fails failures"
[ "$fails" -eq 0 ]
