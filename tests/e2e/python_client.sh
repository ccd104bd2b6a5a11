#!/usr/bin/env bash
# The Python client package (clients/python: bitrack_client, sync and asyncio) installed
# with pip into a virtual environment made with --system-site-packages (pyzmq and msgpack
# from Debian), and run from that install against a scripted fake server: a ROUTER thread
# on an ephemeral 127.0.0.1 port that streams tokens, returns errors, goes silent, and
# streams until cancelled. Skipped (exit 0, with the reason) when no python3 with pyzmq,
# msgpack and venv is installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/lib/skip.sh"
PY=
for cand in python3 /usr/bin/python3; do
    if command -v "$cand" > /dev/null && "$cand" -c 'import zmq, msgpack, venv, ensurepip' 2> /dev/null; then
        PY=$cand
        break
    fi
done
[ -n "$PY" ] || br_skip "no python3 with zmq, msgpack and venv (Debian: python3-zmq python3-msgpack python3-venv)"
TMP=${BR_TMP:-/tmp}/pyclient.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
# a copy: pip builds in the directory it installs from, and the tree stays clean
cp -r "$ROOT/clients/python" "$TMP/src"
"$PY" -m venv --system-site-packages "$TMP/venv"
"$TMP/venv/bin/pip" install -q --no-build-isolation --no-index "$TMP/src" > "$TMP/pip.log" 2>&1 ||
    { cat "$TMP/pip.log"; echo "FAIL pip install ./clients/python"; exit 1; }
# run from the install: not from the source tree
cd "$TMP"
env PYTHONDONTWRITEBYTECODE=1 "$TMP/venv/bin/python" - <<'EOF'
import asyncio
import bitrack_client
assert "site-packages" in bitrack_client.__file__, bitrack_client.__file__
import importlib.resources
assert importlib.resources.files("bitrack_client").joinpath("py.typed").is_file()
assert bitrack_client.__version__ == "0.1.0", bitrack_client.__version__
from bitrack_client import (AsyncClient, BitrackBadRequest, BitrackBusy, BitrackTooLong,
                            BitrackUnavailable)
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
            elif p == "toolong":
                send(ident, {"type": "error", "id": rid, "code": "too_long",
                             "message": "the prompt's 2048 tokens leave no room in the "
                             "context of 2048"})
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
        check(e.code == "duplicate_id" and isinstance(e, ValueError),
              "an id still in flight is not sent again (BitrackDuplicateId): %s" % e)

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

# --- several generations on one client, iterated in any interleaving, each gets all
# of its events (responses are routed by request id, not dropped)
with Client("127.0.0.1:%d" % port, timeout=5.0) as c:  # host:port means tcp://
    gens = {k: c.generate(prompt="stream") for k in range(3)}
    got = {k: [] for k in gens}
    first = True
    while gens:
        for k in list(gens):
            try:
                got[k].append(next(gens[k]))
            except StopIteration:
                del gens[k]
        if first:  # a call in between: the streams' queued events survive it
            check(c.tokenize("hi") == [1, 104, 105], "tokenize while 3 streams are open")
            first = False
    check(all([e["type"] for e in got[k]] == ["token"] * 4 + ["done"] for k in got),
          "3 interleaved generators each got 4 tokens and done: %s"
          % [len(v) for v in got.values()])
    check(all("".join(e["text"] for e in got[k][:-1]) == "Hello, w\u00f6rld" for k in got),
          "interleaved generators: every text complete")

# --- errors are built-in exception types too
with Client(ADDR, timeout=5.0) as c:
    try:
        c.complete(prompt="toolong")
        check(False, "too_long raises")
    except ValueError as e:
        check(isinstance(e, BitrackTooLong) and e.code == "too_long",
              "too_long (no room left in the context): BitrackTooLong, a ValueError: %s" % e)
    try:
        list(c.generate(prompt="busy"))
        check(False, "busy raises")
    except RuntimeError as e:
        check(isinstance(e, BitrackBusy), "busy: BitrackBusy, a RuntimeError")
    try:
        list(c.generate(prompt="nothing scripted"))
        check(False, "bad_request raises")
    except ValueError as e:
        check(isinstance(e, BitrackBadRequest), "bad_request: BitrackBadRequest, a ValueError")
with Client(ADDR, timeout=0.3, ping_interval=0.05) as c:
    try:
        list(c.generate(prompt="silent"))
        check(False, "silent server times out")
    except TimeoutError as e:
        check(isinstance(e, BitrackTimeout), "timeout: BitrackTimeout, a TimeoutError")

# --- no server: a ConnectionError within the connect timeout, naming the address
dead = ctx.socket(zmq.ROUTER)
dport = dead.bind_to_random_port("tcp://127.0.0.1")
dead.close(0)
with Client("127.0.0.1:%d" % dport, timeout=30.0, connect_timeout=0.5) as c:
    t0 = time.monotonic()
    try:
        c.health()
        check(False, "no server raises")
    except ConnectionError as e:
        took = time.monotonic() - t0
        check(isinstance(e, BitrackUnavailable) and took < 2.5 and str(dport) in str(e),
              "no server: BitrackUnavailable after %.2f s (connect_timeout 0.5): %s" % (took, e))


# --- the asyncio client: concurrent generations, calls, errors, timeouts, cancel
async def async_checks():
    async with AsyncClient("127.0.0.1:%d" % port, timeout=5.0) as c:
        async def collect():
            return [ev async for ev in await c.generate(prompt="stream")]
        runs = await asyncio.gather(*(collect() for _ in range(4)), c.tokenize("hi"))
        check(all([e["type"] for e in r] == ["token"] * 4 + ["done"] for r in runs[:4])
              and runs[4] == [1, 104, 105],
              "async: 4 concurrent generations and a tokenize on one client")
        d = await c.complete(prompt="stream")
        check(d["text"] == "Hello, w\u00f6rld", "async: complete")
        check(await c.health() == "ready" and (await c.info())["model"] == "fake",
              "async: health, info")
        try:
            await c.complete(prompt="toolong")
            check(False, "async too_long raises")
        except ValueError as e:
            check(isinstance(e, BitrackTooLong), "async: BitrackTooLong")
        cancels = stats["cancel"]
        n = 0
        async for ev in await c.generate(prompt="endless"):
            n += 1
            if n == 3:
                break
        for _ in range(100):
            if stats["cancel"] > cancels:
                break
            await asyncio.sleep(0.01)
        check(stats["cancel"] > cancels, "async: leaving a generation early sends cancel")
    async with AsyncClient(ADDR, timeout=0.3, ping_interval=0.05) as c:
        try:
            await c.complete(prompt="silent")
            check(False, "async silent server times out")
        except TimeoutError as e:
            check(isinstance(e, BitrackTimeout), "async: BitrackTimeout, a TimeoutError")
    async with AsyncClient("127.0.0.1:%d" % dport, connect_timeout=0.5) as c:
        t0 = time.monotonic()
        try:
            await c.health()
            check(False, "async no server raises")
        except ConnectionError as e:
            check(time.monotonic() - t0 < 2.5, "async: no server, ConnectionError: %s" % e)


asyncio.run(async_checks())

stop.set()
th.join()
router.close(0)
ctx.term()
print("python client: %d checks passed" % checks)
EOF
