#!/usr/bin/env bash
# The HTTP front end under ThreadSanitizer, one rank: `bitrack serve --http` (its polling
# threads and transport thread beside the gateway, ZeroMQ front-end, main and pool threads)
# built with -fsanitize=thread, driven at once by:
#   * Python threads on both endpoints, streamed and not, with and without top_logprobs,
#     while others read /health, /metrics and /v1/models; a fixed seed must give the same
#     text streamed and not, and the same as over ZeroMQ;
#   * a client that vanishes mid-stream, a slow reader, a malformed body, a silent
#     connection the server times out (--http-timeout);
#   * `bitrack bench --openai` (the load generator's client threads, also under TSan) and a
#     `bitrack generate` client over ZeroMQ;
# then a SIGTERM while streams run: each must end (an error event or [DONE]) and the server
# stop cleanly. Passes when every check holds and no TSan report appears. The model is
# serve.sh's small one (instrumented kernels are slow); HTTP correctness in full is
# tests/e2e/serve_http.sh's. Needs BR_BIN (the tsan build's bitrack); run by
# tests/tsan/run.sh.
set -euo pipefail
BIN=${BR_BIN:?}
PY=${PY:-/usr/bin/python3}
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init tsan-serve-http
HPORT=$(br_free_port)
"$BIN" synth --preset tiny --layers 2 --embd 256 --heads 4 --kv-heads 2 --ff 256 --vocab 512 \
    --ctx 256 -o "$TMP/m.gguf" >/dev/null
BR_SERVE_WAIT=600 br_serve_start "$TMP/serve.log" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
    --http "127.0.0.1:$HPORT" -t 2 --max-seqs 8 --http-timeout 2 --http-threads 2 --model-name m
rc=0
# a ZeroMQ client and the load generator beside the HTTP traffic
"$BIN" generate --server "$ADDR" -n 8 --temp 0.8 --seed 7 --timeout 120000 --no-stream \
    --tokens "5,6,7" >"$TMP/zmq.out" 2>"$TMP/zmq.err" &
GPID=$!
"$BIN" bench --openai "http://127.0.0.1:$HPORT" --model m --concurrency 3 --requests 6 \
    --input-len 4 --output-len 4 --no-progress --json "$TMP/bench.json" >"$TMP/bench.txt" 2>&1 &
BPID=$!
"$PY" - "http://127.0.0.1:$HPORT" "$SPID" <<'PY' || rc=1
import http.client, json, os, signal, socket, sys, threading, time
base, spid = sys.argv[1], int(sys.argv[2])
host, port = base.split("//")[1].split(":")
port = int(port)
failures = []
lock = threading.Lock()

def check(ok, what):
    with lock:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

def post(path, obj, timeout=120):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    body = obj if isinstance(obj, bytes) else json.dumps(obj)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()

def get(path):
    c = http.client.HTTPConnection(host, port, timeout=60)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()

def sse(path, obj):
    st, body = post(path, dict(obj, stream=True))
    lines = [l for l in body.decode().split("\n") if l]
    assert st == 200 and lines[-1] == "data: [DONE]", (st, lines[-1:])
    return [json.loads(l[6:]) for l in lines[:-1]]

def text_of(kind, chunks):
    key = (lambda c: c["delta"].get("content", "")) if kind == "chat" else (lambda c: c["text"])
    return "".join(key(ch["choices"][0]) for ch in chunks if ch["choices"])

results = {}
def gen(name, kind, stream, extra):
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    q = {"max_tokens": 8, "temperature": 0.8, "seed": 7}
    q.update({"messages": [{"role": "user", "content": "hi"}]} if kind == "chat"
             else {"prompt": [5, 6, 7]})
    q.update(extra)
    try:
        if stream:
            results[name] = text_of(kind, sse(path, q))
        else:
            st, body = post(path, q)
            ch = json.loads(body)["choices"][0]
            results[name] = ch["message"]["content"] if kind == "chat" else ch["text"]
    except Exception as e:
        results[name] = "error: %r" % (e,)

def probes():
    for _ in range(6):
        for p in ("/health", "/metrics", "/v1/models"):
            st, _ = get(p)
            if st != 200:
                results["probe " + p] = st
        time.sleep(0.05)

def vanish():
    s = socket.create_connection((host, port))
    body = json.dumps({"prompt": [1, 2], "max_tokens": 200, "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    s.recv(200)
    s.close()

def slow_reader():
    c = http.client.HTTPConnection(host, port, timeout=120)
    c.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": [3, 4], "max_tokens": 12, "stream": True, "logprobs": 2}),
        headers={"Content-Type": "application/json"})
    r = c.getresponse()
    got = b""
    while True:
        b = r.read(7)
        if not b:
            break
        got += b
        time.sleep(0.01)
    results["slow"] = got.endswith(b"data: [DONE]\n\n")

def silent():
    s = socket.create_connection((host, port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(30)
    t0 = time.time()
    try:
        while s.recv(100):
            pass
    except OSError:
        pass
    results["silent"] = time.time() - t0

top = {"logprobs": True, "top_logprobs": 3}
work = [threading.Thread(target=gen, args=a) for a in [
    ("c-whole", "completions", False, {}), ("c-stream", "completions", True, {}),
    ("c-top", "completions", True, {"logprobs": 3}),
    ("h-whole", "chat", False, {}), ("h-stream", "chat", True, {}),
    ("h-top", "chat", False, top), ("h-top-stream", "chat", True, top)]]
work += [threading.Thread(target=f) for f in (probes, vanish, slow_reader, silent)]
for t in work:
    t.start()
st, body = post("/v1/completions", b"{\"prompt\": ")  # malformed, meanwhile
check(st == 400, "a malformed body: 400 beside the traffic")
for t in work:
    t.join()
check(all(not str(v).startswith("error") for v in results.values()) and
      not any(k.startswith("probe") for k in results),
      "every request answered: %s" % sorted(results.items()))
check(results["c-whole"] == results["c-stream"] == results["c-top"],
      "completions, seed 7: the same text streamed, not streamed and with alternatives")
check(results["h-whole"] == results["h-stream"] == results["h-top"] == results["h-top-stream"],
      "chat, seed 7: the same text streamed, not streamed and with alternatives")
check(results["slow"] is True, "a slow reader gets the whole stream")
check(results["silent"] < 20, "a silent connection is closed (%.1f s)" % results["silent"])

# a stop while streams run: each ends, and the server stops cleanly (checked by the shell)
ended, started = {}, [threading.Event() for _ in range(3)]
def long_stream(i):
    c = http.client.HTTPConnection(host, port, timeout=120)
    c.request("POST", "/v1/chat/completions" if i % 2 else "/v1/completions",
              body=json.dumps({"prompt": [1, 2, 3 + i], "messages": [{"role": "user",
                               "content": "x" * (i + 1)}], "max_tokens": 240, "stream": True,
                               "logprobs": True if i % 2 else 1, "temperature": 0}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    body = b""
    try:
        body = r.readline()  # the first chunk: the stream runs
        started[i].set()
        body += r.read()
    except (http.client.IncompleteRead, OSError) as e:
        body += getattr(e, "partial", b"")
    started[i].set()
    ended[i] = body
streams = [threading.Thread(target=long_stream, args=(i,)) for i in range(3)]
for t in streams:
    t.start()
for e in started:
    e.wait(60)
os.kill(spid, signal.SIGTERM)
for t in streams:
    t.join(60)
cut = sum(b"data: [DONE]" not in b for b in ended.values())
check(len(ended) == 3 and all(b"data: [DONE]" in b or b"\"error\"" in b for b in ended.values()),
      "3 streams running at the stop each end with [DONE] or an error event (%d cut by the "
      "stop)" % cut)
sys.exit(1 if failures else 0)
PY
bst=0
wait "$BPID" || bst=$?
if [ $bst = 0 ] && "$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 6 and r["failed"] == 0, r' "$TMP/bench.json" 2>/dev/null; then
    echo "ok   bench --openai: 6 requests, none failed"
else
    echo "FAIL bench --openai"; cat "$TMP/bench.txt"; rc=1
fi
if wait "$GPID"; then echo "ok   a ZeroMQ client beside the HTTP traffic"; else
    echo "FAIL the ZeroMQ client"; cat "$TMP/zmq.err"; rc=1
fi
src=0
wait "$SPID" || src=$?
SPID=
if [ "$src" -ne 0 ] || ! grep -q "bitrack serve: stopped" "$TMP/serve.log" ||
    grep -q Sanitizer "$TMP/serve.log"; then
    echo "FAIL: server exit $src"; cat "$TMP/serve.log"; rc=1
fi
[ $rc = 0 ] && echo "ok   tsan serve --http: both endpoints, concurrent clients, a stop mid-stream, no report"
exit $rc
