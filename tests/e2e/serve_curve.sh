#!/usr/bin/env bash
# CurveZMQ serving: `bitrack keygen` key pairs; `bitrack serve --curve-secret
# --curve-clients` admits only the listed client keys. An authorized C client and Python
# client get the same stream as `bitrack run`; a client with an unlisted key and a
# plaintext client are refused quickly with a message saying why, and the server logs
# each refusal. Bad key files are refused with an error. Skipped (with the reason) when
# libzmq has no CURVE.
set -euo pipefail
. "$(dirname "$0")/../lib/skip.sh"
BIN=${BR_BIN:?}
PY=/usr/bin/python3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init serve_curve
mkdir -p "$TMP/clients"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
if ! "$BIN" keygen -o "$TMP/server" > /dev/null 2> "$TMP/keygen.err"; then
    if grep -q "without CurveZMQ" "$TMP/keygen.err"; then br_skip "libzmq has no CURVE"; fi
    cat "$TMP/keygen.err"; exit 1
fi
rc=0
fail() { echo "FAIL $*"; rc=1; }
ok() { echo "ok   $*"; }

# keygen: two 40-character z85 keys, the secret one private, no silent overwrite
pub=$(grep -v '^#' "$TMP/server.pub"); sec=$(grep -v '^#' "$TMP/server.key")
[ ${#pub} -eq 40 ] && [ ${#sec} -eq 40 ] && [ "$pub" != "$sec" ] || fail "keygen wrote '$pub' / '$sec'"
[ "$(stat -c %a "$TMP/server.key")" = 600 ] || fail "secret key mode $(stat -c %a "$TMP/server.key")"
if "$BIN" keygen -o "$TMP/server" 2> /dev/null; then fail "keygen overwrote a key"; fi
[ "$(grep -v '^#' "$TMP/server.pub")" = "$pub" ] || fail "keygen changed an existing key"
"$BIN" keygen -o "$TMP/alice" > /dev/null 2>&1
"$BIN" keygen -o "$TMP/mallory" > /dev/null 2>&1
cp "$TMP/alice.pub" "$TMP/clients/"
# neither a secret key nor a stray file in the directory counts as a client key, nor a
# secret key named like a public one (its content says what it is)
cp "$TMP/mallory.key" "$TMP/clients/"
cp "$TMP/mallory.key" "$TMP/clients/eve.pub"
printf '# notes\n%s\n' "$(grep -v '^#' "$TMP/mallory.pub")" > "$TMP/clients/mallory.txt"
ok "keygen"

timeout 60 "$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 \
    --ctx 256 -o "$TMP/m.gguf" > /dev/null 2>&1

# a bad secret key file is an error at start, not a plaintext server
echo "not a key" > "$TMP/bad.key"
if timeout 20 "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" --curve-secret "$TMP/bad.key" \
    --curve-any-client > "$TMP/bad.log" 2>&1; then fail "serve started with a bad secret key"; fi
grep -q "curve-secret: .*bad.key: 'not a key' is not a 40-character z85 key" "$TMP/bad.log" && ok "bad secret key refused" \
    || { fail "bad secret key message"; cat "$TMP/bad.log"; }

# an incomplete or inconsistent Curve set, or a key of the wrong kind, is an error at
# start naming the flag: never a server that runs open while believed locked
mkdir -p "$TMP/empty"
cp "$TMP/server.pub" "$TMP/server-copy.key" # a public key, whatever its name says
misconfig() { # name expected-message serve-args...
    local name=$1 msg=$2; shift 2
    if timeout 10 "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" "$@" > "$TMP/mis.log" 2>&1; then
        fail "$name: serve exited 0"; return
    fi
    if grep -q "ready on" "$TMP/mis.log" || ! grep -q -- "$msg" "$TMP/mis.log"; then
        fail "$name: $(head -c 600 "$TMP/mis.log")"; return
    fi
    ok "$name refused at start: $(grep -a -- "$msg" "$TMP/mis.log" | head -1)"
}
misconfig "--curve-clients without --curve-secret" "--curve-clients $TMP/clients needs --curve-secret" \
    --curve-clients "$TMP/clients"
misconfig "--curve-secret alone" "--curve-secret needs --curve-clients DIR" \
    --curve-secret "$TMP/server.key"
misconfig "--curve-any-client without --curve-secret" "--curve-any-client needs --curve-secret" \
    --curve-any-client
misconfig "--curve-any-client with --curve-clients" "contradict each other" \
    --curve-secret "$TMP/server.key" --curve-clients "$TMP/clients" --curve-any-client
misconfig "a public key as --curve-secret" \
    "server-copy.key: holds a public key, but a secret key is needed" \
    --curve-secret "$TMP/server-copy.key" --curve-clients "$TMP/clients"
misconfig "an empty clients directory" "--curve-clients $TMP/empty holds no client public key" \
    --curve-secret "$TMP/server.key" --curve-clients "$TMP/empty"

br_serve_start "$TMP/serve.log" timeout 120 "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
    --curve-secret "$TMP/server.key" --curve-clients "$TMP/clients"
grep -q "1 authorized client key" "$TMP/serve.log" || fail "server did not load the client key"
grep -q "skipping $TMP/clients/mallory.key (not a .pub file)" "$TMP/serve.log" &&
    grep -q "skipping $TMP/clients/mallory.txt (not a .pub file)" "$TMP/serve.log" &&
    ok "a secret key and a stray file in the clients directory are skipped and named" ||
    fail "clients directory: other files not skipped"
grep -q "skipping $TMP/clients/eve.pub: holds a secret key, but a public key is needed" \
    "$TMP/serve.log" && ok "a secret key named .pub is skipped and named" ||
    fail "a secret key named .pub was not refused"

want=$("$BIN" run -m "$TMP/m.gguf" --ids -n 12 --temp 0.9 --seed 3 -p "Hello, ternary world" 2>/dev/null)
got=$(timeout 30 "$BIN" generate --server "$ADDR" --ids -n 12 --temp 0.9 --seed 3 --timeout 10000 \
    --curve-server-key "$TMP/server.pub" --curve-key "$TMP/alice.key" "Hello, ternary world") \
    || fail "authorized C client failed"
[ -n "$want" ] && [ "$got" = "$want" ] && ok "authorized C client equals bitrack run: $got" \
    || fail "authorized C client '$got' vs run '$want'"

# refused: a key not in the directory, no CurveZMQ at all, the wrong server key
refused() { # name expected-message args...
    local name=$1 msg=$2; shift 2
    local t0 t1 out
    t0=$(date +%s%N)
    if out=$(timeout 30 "$BIN" generate --server "$ADDR" --ids -n 4 --timeout 10000 "$@" hi 2>&1); then
        fail "$name: was served: $out"; return
    fi
    t1=$(date +%s%N)
    if ! grep -q "$msg" <<< "$out"; then fail "$name: message '$out'"; return; fi
    # refused at the handshake, well before the 10 s call timeout
    [ $(((t1 - t0) / 1000000)) -lt 5000 ] || { fail "$name: took $(((t1 - t0) / 1000000)) ms"; return; }
    ok "$name refused in $(((t1 - t0) / 1000000)) ms: ${out##*: }"
}
refused "unauthorized key" "refused this client's CurveZMQ key" \
    --curve-server-key "$TMP/server.pub" --curve-key "$TMP/mallory.key"
refused "plaintext client" "require[s]* CurveZMQ"
refused "wrong server key" "CurveZMQ handshake failed" \
    --curve-server-key "$TMP/alice.pub" --curve-key "$TMP/alice.key"
# chat with a refused key says why and fails, instead of waiting for the next line
if out=$(printf 'hi\nagain\n' | timeout 30 "$BIN" chat --server "$ADDR" --curve-server-key \
    "$TMP/server.pub" --curve-key "$TMP/mallory.key" 2>&1); then
    fail "chat with a refused key exited 0: $out"
elif grep -q "refused this client's CurveZMQ key" <<< "$out"; then
    ok "chat with a refused key fails: ${out##*: }"
else
    fail "chat with a refused key: '$out'"
fi
if "$BIN" generate --server "$ADDR" --curve-key "$TMP/alice.key" hi 2> /dev/null; then
    fail "--curve-key without --curve-server-key accepted"
fi
if "$BIN" generate --server "$ADDR" --curve-server-key "$TMP/server.pub" --curve-key "$TMP/bad.key" hi \
    2> "$TMP/badc.err"; then fail "a bad client key accepted"; fi
grep -q "bad.key" "$TMP/badc.err" && ok "bad client key refused: $(cat "$TMP/badc.err")" || fail "bad client key message"
# a key of the wrong kind is refused at load, naming the file, by every client command
wrongkind() { # name args...
    local name=$1; shift
    if timeout 20 "$BIN" "$@" > "$TMP/wk.out" 2>&1; then fail "$name: accepted"; return; fi
    grep -q "holds a .* key, but a .* key is needed" "$TMP/wk.out" &&
        ok "$name refused: $(head -1 "$TMP/wk.out")" || fail "$name: $(head -c 400 "$TMP/wk.out")"
}
wrongkind "generate with a secret key as the server's key" generate --server "$ADDR" \
    --curve-server-key "$TMP/server.key" --curve-key "$TMP/alice.key" hi
wrongkind "generate with a public key as the client's key" generate --server "$ADDR" \
    --curve-server-key "$TMP/server.pub" --curve-key "$TMP/alice.pub" hi
wrongkind "chat with a public key as the client's key" chat --server "$ADDR" \
    --curve-server-key "$TMP/server.pub" --curve-key "$TMP/alice.pub"
wrongkind "bench with a secret key as the server's key" bench --server "$ADDR" --requests 1 \
    --curve-server-key "$TMP/server.key" --curve-key "$TMP/alice.key"

# the Python client, authorized and not
PYTHONPATH="$ROOT/clients/python" PYTHONDONTWRITEBYTECODE=1 "$PY" - "$ADDR" "$TMP" "$want" <<'PYEOF' || rc=1
import sys, time
from bitrack_client import BitrackError, Client
addr, tmp, want = sys.argv[1], sys.argv[2], sys.argv[3]
with Client(addr, timeout=10, curve_server_key=tmp + "/server.pub", curve_key=tmp + "/alice.key") as c:
    toks = [e["token"] for e in c.generate(prompt="Hello, ternary world", max_tokens=12,
                                            temperature=0.9, seed=3)
            if e["type"] == "token" and e["token"] >= 0]
    assert " ".join(map(str, toks)) == want, (toks, want)
    assert c.health() == "ready"
print("ok   authorized Python client equals bitrack run")
for kw in (dict(curve_server_key=tmp + "/server.key", curve_key=tmp + "/alice.key"),
           dict(curve_server_key=tmp + "/server.pub", curve_key=tmp + "/alice.pub")):
    try:
        Client(addr, timeout=10, **kw).close()
        sys.exit("FAIL Python client accepted a key of the wrong kind: %r" % kw)
    except ValueError as e:
        assert "key, but a" in str(e), e
        print("ok   Python client refused a key of the wrong kind: %s" % e)
for kw, why in ((dict(curve_server_key=tmp + "/server.pub", curve_key=tmp + "/mallory.key"),
                 "not authorized"), ({}, "CurveZMQ")):
    t0 = time.monotonic()
    try:
        with Client(addr, timeout=10, **kw) as c:
            c.health()
        sys.exit("FAIL Python client %r was served" % kw)
    except BitrackError as e:
        assert e.code == "unavailable" and why in str(e), e
        assert time.monotonic() - t0 < 5, time.monotonic() - t0
        print("ok   Python client refused: %s" % e)
PYEOF

br_serve_stop
grep -q "refused a client: CurveZMQ key $(grep -v '^#' "$TMP/mallory.pub" | sed 's/[][\.*^$]/\\&/g') is not authorized" \
    "$TMP/serve.log" && ok "server logged the unauthorized key" || fail "no log of the unauthorized key"
# the plaintext client is refused at the handshake: a mechanism mismatch, or the client
# broke off first (it saw the mismatch); either way the server says so
grep -Eq "refused a connection on .*CurveZMQ handshake failed \((the client does not use CurveZMQ|the client broke off)" \
    "$TMP/serve.log" \
    && ok "server logged the plaintext client" || fail "no log of the plaintext client"
grep -q stopped "$TMP/serve.log" || fail "no clean stop"
if grep -q "Sanitizer" "$TMP/serve.log"; then fail "sanitizer report"; fi
[ $rc = 0 ] || cat "$TMP/serve.log"
exit $rc
