#!/usr/bin/env bash
# The serving stack under ThreadSanitizer, one rank: `bitrack serve` (front-end thread,
# main thread, a 2-thread pool) built with -fsanitize=thread, driven by concurrent
# `bitrack generate` clients (the C client, also under TSan) and a raw ZeroMQ client that
# sends health, info, metrics, tokenize, a malformed message, a cancel and a client that
# vanishes mid-stream. Passes when every client succeeds and the server stops cleanly
# with no TSan report. The model is smaller than serve.sh's: instrumented kernels run
# ~20x slower, and the stream-equals-run checks stay in serve.sh (release and asan).
# Needs BR_BIN (the tsan build's bitrack); run by tests/tsan/run.sh.
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init tsan-serve
"$BIN" synth --preset tiny --layers 2 --embd 256 --heads 4 --kv-heads 2 --ff 256 --vocab 512 \
    --ctx 128 -o "$TMP/m.gguf" >/dev/null
BR_SERVE_WAIT=600 br_serve_start "$TMP/serve.log" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" -t 2 \
    --max-seqs 8 --client-timeout 3
rc=0
# four concurrent C clients, streaming and not
pids=()
for i in 1 2 3 4; do
    extra=()
    if [ $((i % 2)) = 0 ]; then extra=(--no-stream); fi
    "$BIN" generate --server "$ADDR" --ids -n 6 --temp 0.8 --seed "$i" --timeout 60000 "${extra[@]}" \
        --tokens "$i,20,30" >"$TMP/gen$i.out" 2>"$TMP/gen$i.err" &
    pids+=($!)
done
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import zmq, msgpack' 2>/dev/null; then
    /usr/bin/python3 - "$ADDR" <<'PY' || rc=1
import os, sys, time
import msgpack, zmq
addr = sys.argv[1]
ctx = zmq.Context()
def sock():
    s = ctx.socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0); s.connect(addr); return s
def ask(s, m, rid):
    s.send(msgpack.packb(m) if isinstance(m, dict) else m)
    end = time.time() + 60
    while time.time() < end:
        if s.poll(int((end - time.time()) * 1000)) == 0: break
        r = msgpack.unpackb(s.recv(), raw=False)
        if r.get("id") == rid or rid is None: return r
    return None
s = sock()
bad = 0
def check(ok, what, r):
    global bad
    if not ok:
        bad += 1
        print("FAIL %s: %r" % (what, r))
for t in ("health", "info", "metrics", "ping"):
    r = ask(s, {"v": 1, "type": t, "id": t}, t)
    check(r is not None and r.get("type") != "error", t, r)
r = ask(s, {"v": 1, "type": "tokenize", "id": "tk", "text": "hello"}, "tk")
check(r is not None and r.get("type") == "tokenize", "tokenize", r)
r = ask(s, b"\x81\xa1v\x01", None)  # a map without type/id
check(r is not None and r.get("code") == "bad_request", "malformed", r)
# cancel a running stream
# (cancel right after the first token: a fast server could otherwise finish first). The
# sampler may pick an end-of-generation token before the cancel arrives: such a stream
# ends "stop" on its own, and the next attempt is made; none may run on to "length".
def next_of(cid):  # the next message about request cid (an earlier attempt's are skipped)
    end = time.time() + 60
    while time.time() < end and s.poll(int((end - time.time()) * 1000)):
        r = msgpack.unpackb(s.recv(), raw=False)
        if r.get("id") == cid:
            return r
    return None
outcomes = []
for k in range(5):
    cid = "c%d" % k
    s.send(msgpack.packb({"v": 1, "type": "generate", "id": cid, "stream": True, "max_tokens": 400,
                          "tokens": [1, 2, 3 + k]}))
    r = next_of(cid)
    if r is not None and r.get("type") == "token":
        s.send(msgpack.packb({"v": 1, "type": "cancel", "id": cid}))
        while r is not None and r.get("type") == "token":
            r = next_of(cid)
    outcomes.append(r.get("finish_reason") if r else None)
    if outcomes[-1] != "stop":
        break
check(outcomes[-1] == "cancelled", "cancel", outcomes)
# a client that vanishes mid-stream; the server frees its request after the timeout
v = sock()
v.send(msgpack.packb({"v": 1, "type": "generate", "id": "v", "stream": True, "max_tokens": 100, "tokens": [4, 5]}))
time.sleep(0.3)
v.close()
time.sleep(4.5)
r = ask(s, {"v": 1, "type": "health", "id": "h2"}, "h2")
check(r is not None and r.get("state") == "ready", "health after a vanished client", r)
print("tsan serve: raw client %s" % ("ok" if bad == 0 else "FAILED (%d checks)" % bad))
sys.exit(1 if bad else 0)
PY
fi
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then echo "FAIL: client $((i + 1))"; cat "$TMP/gen$((i + 1)).err"; rc=1; fi
    # the streaming ones print ids (--no-stream prints the text, which may be blank)
    n=$(wc -w <"$TMP/gen$((i + 1)).out")
    if [ $(((i + 1) % 2)) = 1 ] && [ "$n" -ne 6 ]; then
        echo "FAIL: client $((i + 1)) got $n ids, want 6"; rc=1
    fi
done
kill -TERM "$SPID"
src=0; wait "$SPID" || src=$?
SPID=
if [ "$src" -ne 0 ] || ! grep -q stopped "$TMP/serve.log" || grep -q Sanitizer "$TMP/serve.log"; then
    echo "FAIL: server exit $src"; cat "$TMP/serve.log"; rc=1
fi
[ $rc = 0 ] && echo "ok   tsan serve: 4 C clients, raw client, clean stop, no report"
exit $rc
