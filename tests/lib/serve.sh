# Sourced by the tests that start `bitrack serve` (after `set -euo pipefail`), for the
# start-up and shut-down every such test repeats:
#   br_serve_init NAME      TMP=${BR_TMP:-/tmp}/NAME.$$ (created), PORT (a free TCP port,
#                           port.sh) and ADDR=tcp://127.0.0.1:PORT, and an EXIT trap that
#                           ends the server still running (SPID) and removes TMP
#   br_serve_start LOG CMD...
#                           runs CMD (a launcher such as mpirun or timeout may come first)
#                           in the background, output to LOG, its pid in SPID, and waits
#                           for "ready on" in LOG (BR_SERVE_WAIT tenths of a second, default
#                           300); prints LOG and exits 1 when it never comes. A server that
#                           exits because its port was taken in the meantime ("Address
#                           already in use") is started again on a new PORT/ADDR (every
#                           argument holding the old ADDR rewritten), up to three times
#   br_serve_stop           SIGTERM to SPID and waits for it (its status is not checked)
#   br_serve_check LOG      the server stopped cleanly ("bitrack serve: stopped" in LOG) and no sanitizer
#                           reported; otherwise prints FAIL and LOG, sets rc=1, returns 1
. "$(dirname "${BASH_SOURCE[0]}")/port.sh"

br_serve_init() {
    TMP=${BR_TMP:-/tmp}/$1.$$
    mkdir -p "$TMP"
    PORT=$(br_free_port)
    ADDR="tcp://127.0.0.1:$PORT"
    trap br_serve_cleanup EXIT
}

br_serve_cleanup() {
    [ -n "${SPID:-}" ] && kill "$SPID" 2> /dev/null
    wait 2> /dev/null
    rm -rf "$TMP"
}

br_serve_start() {
    local log=$1 try a old
    shift
    for try in 1 2 3; do
        "$@" > "$log" 2>&1 &
        SPID=$!
        for _ in $(seq "${BR_SERVE_WAIT:-300}"); do
            grep -q "ready on" "$log" && return 0
            kill -0 "$SPID" 2> /dev/null || break
            sleep 0.1
        done
        grep -q "ready on" "$log" && return 0
        # the port was free when br_serve_init picked it, but something (Open MPI's own
        # connections take ports from the same range) bound it since: another free port
        if [ "$try" -lt 3 ] && grep -q "Address already in use" "$log" &&
           ! kill -0 "$SPID" 2> /dev/null; then
            wait "$SPID" 2> /dev/null || true
            old=$ADDR
            PORT=$(br_free_port)
            ADDR="tcp://127.0.0.1:$PORT"
            local args=()
            for a in "$@"; do args+=("${a//"$old"/"$ADDR"}"); done
            set -- "${args[@]}"
            echo "port of $old taken before the server bound it; again on $ADDR"
            continue
        fi
        cat "$log"
        exit 1
    done
}

br_serve_stop() {
    kill -TERM "$SPID"
    wait "$SPID" || true
    SPID=
}

br_serve_check() {
    local ok=0
    grep -q "bitrack serve: stopped" "$1" || { echo "FAIL: no clean stop"; ok=1; }
    if grep -q "Sanitizer" "$1"; then echo "FAIL: sanitizer report"; ok=1; fi
    if [ $ok != 0 ]; then
        cat "$1"
        rc=1
    fi
    return $ok
}
