#!/usr/bin/env bash
# `cmake --install` into a temporary prefix puts bitrack, bitrack-launch, the C client
# library with its headers and bitrack-client.pc, and the docs in the GNUInstallDirs
# places; a C program in a folder outside the tree builds against the installed client
# with `pkg-config --cflags --libs bitrack-client` alone and talks to the installed
# `bitrack serve`: its ids equal `bitrack run`'s, and a server that is not there is an
# error within the connect timeout.
set -uo pipefail
BIN=${BR_BIN:?}
BUILD=${BR_BUILD_DIR:?}
TMP=${BR_TMP:-/tmp}/install.$$
mkdir -p "$TMP/app"
. "$(dirname "$0")/../lib/port.sh"
PORT=$(br_free_port)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2> /dev/null; wait 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
fails=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
P=$TMP/prefix

cmake --install "$BUILD" --prefix "$P" > "$TMP/install.log" 2>&1 ||
    { cat "$TMP/install.log"; echo "FAIL cmake --install"; exit 1; }
pc=$(find "$P" -name bitrack-client.pc)
lib=$(find "$P" -name 'libbitrack-client.so' | head -1)
for f in "$P/bin/bitrack" "$P/bin/bitrack-launch" "$lib" "$pc" \
    "$P/include/bitrack-client/proto/client.h" "$P/include/bitrack-client/proto/proto.h" \
    "$P/include/bitrack-client/bitrack/status.h" "$P/share/doc/bitrack/README.md" \
    "$P/share/doc/bitrack/PROTOCOL.md"; do
    [ -n "$f" ] && [ -e "$f" ] && ok "installed ${f#$P/}" || fail "not installed: ${f#$P/}"
done
[ "$(dirname "$pc")" = "$(dirname "$lib")/pkgconfig" ] && ok "bitrack-client.pc beside the library" ||
    fail "pc file at $pc, library at $lib"

# the installed launcher finds the installed bitrack (not the build tree's)
out=$(env -u BITRACK_BIN PATH=/usr/bin:/bin "$P/bin/bitrack-launch" --dry-run --local 2 --tp 2 \
    --pp 1 -- run -m x.gguf --tokens 1 2>&1)
grep -qF "$P/bin/bitrack run" <<< "$out" && ok "bitrack-launch runs the bitrack beside it" ||
    fail "bitrack-launch --dry-run: $out"

cat > "$TMP/app/app.c" << 'CEOF'
/* A program outside the tree: health, then a generation, printing the token ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/client.h"

static int on_event(const struct br_resp *r, void *user)
{
    (void)user;
    if (r->type == BR_RESP_TOKEN && r->token >= 0) printf("%d ", r->token);
    return 0;
}

int main(int argc, char **argv)
{
    struct br_err err = {{0}};
    struct br_client *c = NULL;
    if (argc < 3) return 2;
    int rc = br_client_connect(argv[1], 10000, &c, &err);
    if (!rc) br_client_set_connect_timeout(c, 500);
    enum br_health_state st;
    if (!rc) rc = br_client_health(c, &st, &err);
    if (!rc) {
        struct br_req req;
        br_req_init(&req);
        req.type = BR_REQ_GENERATE;
        req.input = BR_INPUT_PROMPT;
        req.prompt = argv[2];
        req.prompt_len = strlen(argv[2]);
        req.max_tokens = 6;
        req.stream = true;
        rc = br_client_generate(c, &req, on_event, NULL, &err);
    }
    printf("\n");
    if (rc) fprintf(stderr, "app: %s (%s)\n", err.msg, br_strerror(rc));
    br_client_close(&c);
    return rc == BR_E_UNAVAILABLE ? 3 : rc ? 1 : 0;
}
CEOF
cd "$TMP/app"
# A sanitizer build installs an instrumented library: its users link the runtime too.
san=
# (ldd's output is read whole: with pipefail, grep -q quitting at the first match could
# end ldd with SIGPIPE and fail the pipeline)
if ldd "$lib" 2> /dev/null | grep libasan > /dev/null; then
    san="-fsanitize=address,undefined"
fi
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs bitrack-client) &&
    cc -std=c11 -Wall -Werror $san -o app app.c $flags 2> "$TMP/cc.log" &&
    ok "cc app.c \$(pkg-config --cflags --libs bitrack-client): $flags" ||
    { fail "building against the installed client: $(cat "$TMP/cc.log")"; exit 1; }
export LD_LIBRARY_PATH=$(dirname "$lib")

"$P/bin/bitrack" synth --preset tiny --layers 2 --ctx 128 -o "$TMP/m.gguf" 2> /dev/null
"$P/bin/bitrack" serve -m "$TMP/m.gguf" --listen "127.0.0.1:$PORT" -t 1 2> "$TMP/serve.log" &
SPID=$!
for _ in $(seq 100); do grep -q "ready on" "$TMP/serve.log" && break; sleep 0.1; done
got=$(./app "127.0.0.1:$PORT" "Hello" 2> "$TMP/app.err" | tr -s ' ' | sed 's/ $//')
want=$("$P/bin/bitrack" run -m "$TMP/m.gguf" -p "Hello" -n 6 --ids --ignore-eos 2> /dev/null)
[ -n "$got" ] && [ "$got" = "$want" ] && ok "the program's generation equals bitrack run: $got" ||
    fail "program got '$got' ($(cat "$TMP/app.err")), bitrack run '$want'"
kill "$SPID"
wait "$SPID" 2> /dev/null
SPID=
t0=$(date +%s%N)
./app "127.0.0.1:$PORT" "Hello" > /dev/null 2> "$TMP/app.err"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $rc -eq 3 ] && [ $ms -lt 3000 ] && grep -q "127.0.0.1:$PORT" "$TMP/app.err" &&
    ok "no server: unavailable after $ms ms: $(cat "$TMP/app.err")" ||
    fail "no server: exit $rc after $ms ms: $(cat "$TMP/app.err")"
[ $fails -eq 0 ] || exit 1
