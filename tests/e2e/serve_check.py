#!/usr/bin/python3
"""Drives a running `bitrack serve` over its wire protocol (raw ZeroMQ + msgpack, no
bitrack code) and checks the serving promises:

  * streamed tokens equal `bitrack run` for the same prompt, seed and sampling;
  * 32 concurrent clients each get their own correct stream;
  * cancel ends a stream with finish_reason "cancelled" and frees its sequence;
  * a client that vanishes mid-stream does not disturb the others, and its request is
    freed after the heartbeat timeout;
  * 20 kinds of malformed message each get `bad_request`, and the server keeps serving;
    so do a message of two frames and a map with a key twice;
  * top_logprobs: each token message lists the alternatives, sorted, with the sampled
    token's exact logprob, and the tokens still equal `bitrack run`;
  * a generate reusing the id of one in flight gets `duplicate_id`, the first goes on;
  * a prompt longer than the context gets `too_long`; past the queue bound, `busy`.

usage: serve_check.py ADDR BITRACK MODEL CTX
"""
import os
import subprocess
import sys
import time

import msgpack
import zmq

ADDR, BIN, MODEL, CTX = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = zmq.Context()
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def sock():
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ADDR)
    return s


def send(s, msg):
    s.send(msgpack.packb(msg, use_bin_type=True) if isinstance(msg, dict) else msg)


def recv(s, timeout=10.0):
    if s.poll(int(timeout * 1000)) == 0:
        return None
    return msgpack.unpackb(s.recv(), raw=False)


def gen(i, **kw):
    m = {"v": 1, "type": "generate", "id": "r%d" % i, "stream": True, "max_tokens": 12,
         "temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 0}
    m.update(kw)
    return m


def collect(s, rid, timeout=30.0):
    """tokens of a stream, and its final message. Sends heartbeats while it waits, as a
    real client does (a slow stream outlives --client-timeout), and takes their answers
    before returning, so no pong is left for the next reader."""
    toks, end, pings = [], None, 0
    deadline = time.time() + timeout
    last_ping = time.time()
    while time.time() < deadline:
        if end is None and time.time() - last_ping > 0.5:
            send(s, {"v": 1, "type": "ping", "id": rid})
            pings += 1
            last_ping = time.time()
        r = recv(s, max(0.0, min(0.5, deadline - time.time())))
        if r is None or r.get("id") != rid:
            continue
        if r["type"] == "pong":
            pings -= 1
        elif r["type"] == "token":
            if r.get("token", -1) >= 0:
                toks.append(r["token"])
        else:
            end = r
        if end is not None and pings <= 0:
            break
    return toks, end


def reference(prompt_tokens, n, seed, temp):
    out = subprocess.run([BIN, "run", "-m", MODEL, "--tokens", ",".join(map(str, prompt_tokens)),
                          "-n", str(n), "--seed", str(seed), "--temp", str(temp), "--ids",
                          "--top-k", "0", "--top-p", "1", "--min-p", "0"],
                         capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


# --- health
s = sock()
send(s, {"v": 1, "type": "health", "id": "h"})
r = recv(s)
check(r is not None and r.get("state") == "ready", "health answers ready")

# --- one stream equals bitrack run (greedy, and seeded temperature)
for temp, seed in ((0.0, 0), (0.8, 7)):
    prompt = [5, 17, 300, 42, 9]
    send(s, gen(100 + seed, tokens=prompt, temperature=temp, seed=seed, max_tokens=16))
    toks, end = collect(s, "r%d" % (100 + seed))
    want = reference(prompt, 16, seed, temp)
    check(toks == want and end and end["type"] == "done",
          "stream equals bitrack run (temp %.1f seed %d): %s" % (temp, seed, toks[:8]))

# --- top_logprobs: alternatives per token, the sampled token's logprob among them exactly
def collect_top(s, rid, timeout=60.0):
    msgs, deadline = [], time.time() + timeout
    while time.time() < deadline:
        r = recv(s, 0.5)
        if r is None or r.get("id") != rid:
            continue
        if r["type"] != "token":
            return msgs, r
        if r["token"] >= 0:
            msgs.append(r)
    return msgs, None


prompt = [5, 17, 300, 42, 9]
for temp, seed in ((0.0, 0), (0.8, 7)):
    send(s, gen(300 + seed, tokens=prompt, temperature=temp, seed=seed, max_tokens=16,
                logprobs=True, top_logprobs=4))
    msgs, end = collect_top(s, "r%d" % (300 + seed))
    tops = [m.get("top_logprobs", []) for m in msgs]
    ok = end is not None and end["type"] == "done" and len(msgs) > 0
    ok &= [m["token"] for m in msgs] == reference(prompt, 16, seed, temp)
    ok &= all(len(t) == 4 and len({a["token"] for a in t}) == 4 and
              all(set(a) == {"token", "logprob", "text"} and a["logprob"] <= 0 for a in t) and
              all(t[i]["logprob"] >= t[i + 1]["logprob"] for i in range(3)) for t in tops)
    listed = [[a["logprob"] == m["logprob"] for a in t if a["token"] == m["token"]]
              for m, t in zip(msgs, tops)]
    ok &= all(all(x) for x in listed)
    if temp == 0.0:
        ok &= all(t[0]["token"] == m["token"] for m, t in zip(msgs, tops))
    check(ok, "top_logprobs 4 (temp %.1f): the tokens of bitrack run, 4 sorted alternatives "
          "each, the sampled token's logprob exact where listed (%d of %d)" %
          (temp, sum(map(len, listed)), len(msgs)))
send(s, gen(399, tokens=prompt, logprobs=True, top_logprobs=21))
msgs, end = collect_top(s, "r399")
check(end is not None and end.get("code") == "bad_request" and "top_logprobs" in end["message"],
      "top_logprobs 21: bad_request naming it")

# --- 32 concurrent clients, each its own prompt and seed
clients = []
for i in range(32):
    c = sock()
    prompt = [(7 * i + k) % 250 + 3 for k in range(3 + i % 5)]
    send(c, gen(i, tokens=prompt, temperature=0.7, seed=1000 + i, max_tokens=10))
    clients.append((c, i, prompt))
results = {}
deadline = time.time() + 120
pending = {i: (c, []) for c, i, _ in clients}
last_ping = time.time()
while pending and time.time() < deadline:
    if time.time() - last_ping > 0.5:  # heartbeats, as a real client sends them
        for i in pending:
            send(pending[i][0], {"v": 1, "type": "ping", "id": "r%d" % i})
        last_ping = time.time()
    for i in list(pending):
        c, toks = pending[i]
        while c.poll(0):
            r = msgpack.unpackb(c.recv(), raw=False)
            if r["type"] == "token" and r.get("token", -1) >= 0:
                toks.append(r["token"])
            elif r["type"] == "pong":
                continue
            elif r["type"] in ("done", "error"):
                results[i] = (toks, r)
                del pending[i]
                break
    time.sleep(0.005)
good = 0
for c, i, prompt in clients:
    toks, end = results.get(i, ([], None))
    want = reference(prompt, 10, 1000 + i, 0.7)
    ok = toks == want and end is not None and end["type"] == "done"
    good += ok
    if not ok:
        print("     client %d: got %s end %s, want %s" % (i, toks, end, want))
check(good == 32, "32 concurrent streams each equal their single-run output (%d/32)" % good)

# --- cancel frees the sequence
send(s, gen(200, tokens=[1, 2, 3], max_tokens=400, ignore=1))
seen = 0
end = None
while True:
    r = recv(s)
    if r is None:
        break
    if r.get("id") == "r200" and r["type"] == "token":
        seen += 1
        if seen == 3:
            send(s, {"v": 1, "type": "cancel", "id": "r200"})
    elif r.get("id") == "r200":
        end = r
        break
check(end is not None and end.get("finish_reason") == "cancelled" and seen < 400,
      "cancel ends the stream with finish_reason cancelled after %d tokens" % seen)

# --- a client that vanishes mid-stream: the others are unaffected
victim = subprocess.Popen([sys.executable, "-c", """
import zmq, msgpack, sys, os
c = zmq.Context().socket(zmq.DEALER); c.connect(sys.argv[1])
c.send(msgpack.packb({"v":1,"type":"generate","id":"v","stream":True,"max_tokens":3000,"tokens":[4,5,6]}))
c.recv(); os._exit(9)
""", ADDR])
victim.wait()
prompt = [11, 12, 13]
send(s, gen(300, tokens=prompt, max_tokens=16))
toks, end = collect(s, "r300")
check(toks == reference(prompt, 16, 0, 0.0) and end and end["type"] == "done",
      "a vanished client does not disturb another stream")

# --- malformed messages
cases = [
    b"not msgpack at all \xff\xfe",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"v": 1, "id": "m"}),
    msgpack.packb({"v": 1, "type": "launch_missiles", "id": "m"}),
    msgpack.packb({"v": 99, "type": "generate", "id": "m", "prompt": "x"}),
    msgpack.packb({"v": 1, "type": "generate", "id": 12, "prompt": "x"}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": 5}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "max_tokens": -1}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "max_tokens": "ten"}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "tokens": [1, -5]}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "tokens": [1, "a"]}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "tokens": [1]}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m"}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "temperature": -1.0}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "top_p": 2.0}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "stop": "eos"}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x" * (2 << 20)}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "logit_bias": "no"}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "messages": [{"content": "hi"}]}),
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "prompt": "x", "seed": "seven"}),
    b"\x91" * 5000 + b"\x00",
    msgpack.packb({"v": 1, "type": "generate", "id": "m", "tokens": [1, 100000000]}),
]
bad = 0
for i, raw in enumerate(cases):
    send(s, raw)
    r = recv(s)
    ok = r is not None and r.get("type") == "error" and r.get("code") == "bad_request"
    bad += ok
    if not ok:
        print("     case %d answered %r" % (i, r))
check(bad == len(cases), "%d of %d malformed messages answered bad_request" % (bad, len(cases)))

# --- strict decoding: one frame per message, each key once per map
ping = msgpack.packb({"v": 1, "type": "ping", "id": "f1"})
s.send_multipart([ping, ping])
r = recv(s)
check(r is not None and r.get("code") == "bad_request" and "frames" in r.get("message", ""),
      "a message of two frames is refused naming the frames: %r" % (r,))
raw = (b"\x84" + msgpack.packb("v") + msgpack.packb(1) + msgpack.packb("type") +
       msgpack.packb("ping") + msgpack.packb("id") + msgpack.packb("d1") +
       msgpack.packb("type") + msgpack.packb("shutdown"))
send(s, raw)
r = recv(s)
check(r is not None and r.get("code") == "bad_request" and "'type' appears more than once"
      in r.get("message", ""), "a duplicated map key is refused naming the key: %r" % (r,))

# --- the same id twice in flight: the second is refused with duplicate_id, the first
# streams on and ends with exactly one done
# (the duplicate goes once the first has streamed a token, and the first is long enough
# (200 tokens) that a fast server cannot finish it before the duplicate arrives; sent back
# to back, the front end could be scheduled out between the two and read the second only
# after the first had ended, when the id was free again)
DUP_N = 200
# (heartbeats as in collect(): a slow build's 200 tokens outlive --client-timeout)
send(s, gen(500, tokens=[3, 4, 5], max_tokens=DUP_N))
msgs, sent_dup, done, pings, last_ping = [], False, False, 0, time.time()
deadline = time.time() + 120
while time.time() < deadline and not (done and pings <= 0):
    if not done and time.time() - last_ping > 0.5:
        send(s, {"v": 1, "type": "ping", "id": "r500"})
        pings, last_ping = pings + 1, time.time()
    r = recv(s, 0.5)
    if r is None:
        continue
    if r.get("type") == "pong":
        pings -= 1
        continue
    msgs.append(r)
    if not sent_dup and r.get("id") == "r500" and r.get("type") == "token":
        send(s, gen(500, tokens=[3, 4, 5], max_tokens=DUP_N))
        sent_dup = True
    done = done or (r.get("id") == "r500" and r.get("type") == "done")
mine = [m for m in msgs if m and m.get("id") == "r500"]
errs = [m for m in mine if m["type"] == "error"]
dones = [m for m in mine if m["type"] == "done"]
toks = [m["token"] for m in mine if m["type"] == "token" and m["token"] >= 0]
check(len(errs) == 1 and errs[0]["code"] == "duplicate_id" and len(dones) == 1 and
      toks == reference([3, 4, 5], DUP_N, 0, 0.0),
      "a duplicate id in flight gets duplicate_id and the first ends once, intact "
      "(errors %r, %d done, %d tokens)" % ([e.get("code") for e in errs], len(dones), len(toks)))

# --- too long, then still serving
send(s, gen(400, tokens=[1] * (CTX + 5)))
r = recv(s)
check(r is not None and r.get("code") == "too_long", "a prompt longer than the context gets too_long")
send(s, gen(401, tokens=[7, 8, 9], max_tokens=4))
toks, end = collect(s, "r401")
check(len(toks) == 4 and end and end["type"] == "done", "still serving after bad input")

# --- the vanished client's request was freed (heartbeat timeout)
time.sleep(3.5)
send(s, {"v": 1, "type": "metrics", "id": "x"})
r = recv(s)
live = dict(r.get("metrics", {})).get("live") if r else None
if live is None and r:
    live = r.get("live")
check(live == 0, "no request left alive after the client timeout (live=%s)" % live)

print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
