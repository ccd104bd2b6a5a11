#!/usr/bin/env bash
# The Python client (clients/python/bitrack_client.py) against a scripted fake server: a
# ROUTER thread on an ephemeral 127.0.0.1 port that streams tokens, returns errors, goes
# silent, and streams until cancelled. Skipped (exit 0, with the reason) when no python3
# with pyzmq and msgpack is installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=
for cand in python3 /usr/bin/python3; do
    if command -v "$cand" > /dev/null && "$cand" -c 'import zmq, msgpack' 2> /dev/null; then
        PY=$cand
        break
    fi
done
if [ -z "$PY" ]; then
    echo "SKIP: no python3 with zmq and msgpack (Debian: apt-get install python3-zmq python3-msgpack)"
    exit 0
fi
exec env PYTHONPATH="$ROOT/clients/python" PYTHONDONTWRITEBYTECODE=1 "$PY" - <<'EOF'
import threading
import time

import msgpack
import zmq

from bitrack_client import BitrackError, BitrackTimeout, Client

ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
port = router.bind_to_random_port("tcp://127.0.0.1")
ADDR = "tcp://127.0.0.1:%d" % port
stats = {"ping": 0, "cancel": 0, "last_generate": None}
stop = threading.Event()


def serve():
    silent = False
    endless = None  # (ident, id, next index)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while not stop.is_set():
        if endless is not None:
            ident, rid, i = endless
            send(ident, {"type": "token", "id": rid, "index": i, "token": 7, "text": "x"})
            endless = (ident, rid, i + 1)
        if not poller.poll(5):
            continue
        ident, raw = router.recv_multipart()
        m = msgpack.unpackb(raw, raw=False)
        assert m["v"] == 1 and isinstance(m["id"], str) and m["id"], m
        t, rid = m["type"], m["id"]
        if t not in ("ping", "cancel"):
            silent = False
        if t == "ping":
            stats["ping"] += 1
            if not silent:
                send(ident, {"type": "pong", "id": rid})
        elif t == "cancel":
            stats["cancel"] += 1
            if endless is not None and endless[1] == rid:
                send(ident, done(rid, "cancelled", endless[2]))
                endless = None
        elif t == "health":
            send(ident, {"type": "health", "id": rid, "state": "ready"})
        elif t == "info":
            send(ident, {"type": "info", "id": rid, "info": {"model": "fake", "n_ctx": 2048}})
        elif t == "metrics":
            send(ident, {"type": "metrics", "id": rid, "metrics": {"queue": 0}})
        elif t == "tokenize":
            toks = ([1] if m.get("add_bos", True) else []) + list(m["text"].encode())
            send(ident, {"type": "tokenize", "id": rid, "tokens": toks})
        elif t == "detokenize":
            send(ident, {"type": "detokenize", "id": rid, "text": bytes(m["tokens"]).decode()})
        elif t == "generate":
            stats["last_generate"] = m
            p = m.get("prompt")
            if p == "stream":
                pieces = ["Hel", "lo", ", ", "w\u00f6rld"]
                if m["stream"]:
                    for i, piece in enumerate(pieces):
                        ev = {"type": "token", "id": rid, "index": i, "token": 100 + i, "text": piece}
                        if m.get("logprobs"):
                            ev["logprob"] = -0.25 * i
                        send(ident, ev)
                d = done(rid, "stop", len(pieces))
                if not m["stream"]:
                    d["text"] = "".join(pieces)
                send(ident, d)
            elif p == "busy":
                send(ident, {"type": "error", "id": rid, "code": "busy", "message": "queue full"})
            elif p == "noid":
                send(ident, {"type": "error", "id": None, "code": "bad_request",
                             "message": "message: too large"})
            elif p == "silent":
                silent = True
            elif p == "endless":
                endless = (ident, rid, 0)
            else:
                send(ident, {"type": "error", "id": rid, "code": "bad_request",
                             "message": "prompt: unscripted"})


def done(rid, reason, n):
    return {"type": "done", "id": rid, "finish_reason": reason,
            "usage": {"prompt_tokens": 2, "completion_tokens": n},
            "timings": {"queue_ms": 0.1, "ttft_ms": 1.0, "total_ms": 2.0, "tokens_per_s": 2000.0}}


def send(ident, m):
    m["v"] = 1
    router.send_multipart([ident, msgpack.packb(m, use_bin_type=True)])


th = threading.Thread(target=serve, daemon=True)
th.start()
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit("FAIL: " + what)
    checks += 1
    print("ok:", what)


with Client(ADDR, timeout=5.0) as c:
    evs = list(c.generate(prompt="stream", max_tokens=8, logprobs=True, temperature=0.5,
                          stop=["\n"], logit_bias={"5": -1.0}, seed=42))
    check([e["type"] for e in evs] == ["token"] * 4 + ["done"], "stream: 4 tokens then done")
    check("".join(e["text"] for e in evs[:-1]) == "Hello, w\u00f6rld", "stream: pieces join to the text")
    check([e["index"] for e in evs[:-1]] == [0, 1, 2, 3], "stream: indexes in order")
    check("logprob" in evs[1], "stream: logprobs when asked")
    check(evs[-1]["finish_reason"] == "stop" and evs[-1]["usage"]["completion_tokens"] == 4,
          "done: finish_reason and usage")
    g = stats["last_generate"]
    check(g["temperature"] == 0.5 and g["stop"] == ["\n"] and g["seed"] == 42
          and g["max_tokens"] == 8 and g["logit_bias"] == {"5": -1.0}, "options reach the server")

    d = c.complete(prompt="stream")
    check(d["type"] == "done" and d["text"] == "Hello, w\u00f6rld", "complete: full text in done")

    try:
        list(c.generate(prompt="busy"))
        check(False, "busy raises")
    except BitrackError as e:
        check(e.code == "busy" and "queue full" in str(e), "busy: BitrackError(code=busy)")

    t0 = time.monotonic()
    try:
        list(c.generate(prompt="noid"))
        check(False, "id-less error raises")
    except BitrackError as e:
        check(e.code == "bad_request" and time.monotonic() - t0 < 1.0,
              "an error without an id ends the call at once")

    cancels = stats["cancel"]
    got = 0
    for ev in c.generate(prompt="endless"):
        got += 1
        if got == 3:
            break
    for _ in range(100):
        if stats["cancel"] > cancels:
            break
        time.sleep(0.01)
    check(stats["cancel"] > cancels, "closing the generator early sends cancel")

    check(c.tokenize("hi") == [1, 104, 105], "tokenize")
    check(c.tokenize("hi", add_bos=False) == [104, 105], "tokenize without BOS")
    check(c.detokenize([104, 105]) == "hi", "detokenize")
    check(c.health() == "ready", "health")
    check(c.info()["model"] == "fake", "info")
    check(c.metrics() == {"queue": 0}, "metrics")
    c.ping()
    check(True, "ping")
    c.cancel("nothing")
    check(True, "cancel of an unknown id")

    try:
        c.generate(prompt="x", tokens=[1])
        check(False, "two inputs refused")
    except ValueError:
        check(True, "two inputs refused")
    try:
        c.generate(prompt="x", temprature=1.0)
        check(False, "misspelled option refused")
    except TypeError:
        check(True, "misspelled option refused")

with Client(ADDR, timeout=0.3, ping_interval=0.05) as c:
    pings, cancels = stats["ping"], stats["cancel"]
    t0 = time.monotonic()
    try:
        list(c.generate(prompt="silent"))
        check(False, "silent server times out")
    except BitrackTimeout:
        took = time.monotonic() - t0
        check(0.28 <= took < 3.0, "silent server: BitrackTimeout after %.2f s" % took)
    time.sleep(0.1)
    check(stats["ping"] - pings >= 3, "pings sent while waiting (%d)" % (stats["ping"] - pings))
    check(stats["cancel"] > cancels, "cancel sent on timeout")
    check(c.health() == "ready", "client usable after a timeout")
    # the abandoned request may still run on the server: its id is not sent again
    try:
        list(c.generate(prompt="silent", id="mine"))
    except BitrackTimeout:
        pass
    try:
        list(c.generate(prompt="hi", id="mine"))
        check(False, "an id in flight is not reused")
    except BitrackError as e:
        check(e.code == "duplicate_id", "an id still in flight is not sent again: %s" % e)

# nothing listening: a closed port
dead = ctx.socket(zmq.ROUTER)
dport = dead.bind_to_random_port("tcp://127.0.0.1")
dead.close(0)
with Client("tcp://127.0.0.1:%d" % dport, timeout=0.2) as c:
    try:
        c.health()
        check(False, "no server: unavailable")
    except BitrackError as e:
        check(e.code == "unavailable", "no server: BitrackError(code=unavailable)")

stop.set()
th.join()
router.close(0)
ctx.term()
print("python client: %d checks passed" % checks)
EOF
