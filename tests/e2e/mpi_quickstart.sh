#!/usr/bin/env bash
# The README's first command, launch/quickstart.sh: exit status 0 when the prompt was
# answered, non-zero with a "quickstart:" line saying why when it was not (a taken port, a
# missing model), and no file left behind either way (its temporary directory is checked
# empty, and nothing is written into the source tree).
set -uo pipefail
BIN=${BR_BIN:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=${BR_TMP:-/tmp}/quickstart.$$
mkdir -p "$TMP/tmpdir"
PORT=$((20000 + ($$ + 4099) % 20000))
HOLDER=
cleanup() { [ -n "$HOLDER" ] && kill "$HOLDER" 2> /dev/null; wait 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
fails=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
left() { find "$TMP/tmpdir" -mindepth 1 | head -5; }
qs() { TMPDIR=$TMP/tmpdir BITRACK_BIN=$BIN BITRACK_PORT=$PORT timeout 300 "$ROOT/launch/quickstart.sh" "$@"; }

touch "$TMP/marker"
qs -n 8 "Ternary weights are" > "$TMP/out" 2> "$TMP/err"
rc=$?
new=$(find "$ROOT" -newer "$TMP/marker" -type f -not -path "$ROOT/build*" -not -path "*/.git/*" | head -5)
if [ $rc -eq 0 ] && [ -s "$TMP/out" ] && [ -z "$(left)" ] && [ -z "$new" ]; then
    ok "success: exit 0, answered, nothing left behind"
else
    fail "success run: exit $rc, stdout '$(head -c 200 "$TMP/out")', left: $(left) $new; $(tail -5 "$TMP/err")"
fi

# a taken port: the server cannot start
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(600)' "$PORT" &
HOLDER=$!
sleep 0.5
qs -n 8 "x" > /dev/null 2> "$TMP/err"
rc=$?
kill "$HOLDER" 2> /dev/null
wait "$HOLDER" 2> /dev/null
HOLDER=
if [ $rc -ne 0 ] && grep -q "^quickstart: .*port $PORT" "$TMP/err" && [ -z "$(left)" ]; then
    ok "taken port: exit $rc, $(grep '^quickstart:' "$TMP/err")"
else
    fail "taken port: exit $rc, left: $(left); $(tail -3 "$TMP/err")"
fi

qs -m "$TMP/no-such.gguf" "x" > /dev/null 2> "$TMP/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "^quickstart: no model at" "$TMP/err" && [ -z "$(left)" ]; then
    ok "missing model: exit $rc, $(cat "$TMP/err")"
else
    fail "missing model: exit $rc, left: $(left); $(cat "$TMP/err")"
fi
[ $fails -eq 0 ] || exit 1
