#!/usr/bin/python3
"""Soak: N requests from C concurrent clients against a running `bitrack serve` (a 2x2
cluster in mpi_serve_soak.sh). Each request is one of K distinct (prompt, seed) pairs,
sampled at temperature 0.9, so every stream depends on its seed; the expected token
streams come from a file made beforehand by a one-rank server (and spot-checked there
against `bitrack run`). Checked for every request: exactly one final event (`done`, and
nothing after it), token indices 0, 1, 2, ... with no gap or repeat, and the tokens equal
the expected stream for its pair (all of it: a stream stops at max_tokens or an
end-of-generation token, like the reference). Rank 0's resident memory after the soak must return to
within RSS_SLACK_MIB of its value after a warm-up.

usage: serve_soak.py ADDR EXPECTED.json RANK0_PID N CLIENTS
"""
import json
import os
import sys
import threading
import time

import msgpack
import zmq

ADDR, EXPECTED, PID, N, CLIENTS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5])
RSS_SLACK_MIB = float(os.environ.get("RSS_SLACK_MIB", "8"))
with open(EXPECTED) as f:
    expected = json.load(f)  # [{"prompt":..., "seed":..., "max_tokens":..., "tokens":[...]}]
ctx = zmq.Context()
failures = []
lock = threading.Lock()


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def rss():
    d = {}
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                d[k] = int(v.split()[0]) / 1024.0
    return d


def metrics():
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ADDR)
    s.send(msgpack.packb({"v": 1, "type": "metrics", "id": "m"}))
    r = msgpack.unpackb(s.recv(), raw=False) if s.poll(10000) else {"metrics": {}}
    s.close()
    return r["metrics"]


def run(n, tag):
    """n requests from CLIENTS threads; returns (bad, per-request problems)."""
    next_i = [0]
    problems = []

    def client(t):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ADDR)
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n:
                break
            e = expected[i % len(expected)]
            rid = "%s-%d-%d" % (tag, t, i)
            req = {k: v for k, v in e.items() if k != "tokens"}  # prompt, seed, sampling
            req.update({"v": 1, "type": "generate", "id": rid, "stream": True})
            s.send(msgpack.packb(req, use_bin_type=True))
            toks, idx, finals, err = [], [], 0, None
            while finals == 0:
                if not s.poll(60000):
                    err = "no reply for 60 s"
                    break
                r = msgpack.unpackb(s.recv(), raw=False)
                if r.get("id") != rid:
                    err = "a message for another request: %r" % (r,)
                    break
                if r["type"] == "token":
                    if r["token"] >= 0:
                        toks.append(r["token"])
                        idx.append(r["index"])
                elif r["type"] == "done":
                    finals += 1
                    if r["finish_reason"] not in ("stop", "length"):
                        err = "finish %s" % r["finish_reason"]
                else:
                    finals += 1
                    err = "error %s: %s" % (r.get("code"), r.get("message"))
            if err is None and idx != list(range(len(idx))):
                err = "token indices %r" % idx
            if err is None and toks != e["tokens"]:
                err = "tokens %r, expected %r" % (toks, e["tokens"])
            if err:
                with lock:
                    problems.append("%s: %s" % (rid, err))
        # nothing may follow a request's final event
        if s.poll(300):
            with lock:
                problems.append("client %d: a message after the last final event: %r"
                                % (t, msgpack.unpackb(s.recv(), raw=False)))
        s.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return problems


def settle():
    for _ in range(100):
        m = metrics()
        if m.get("live") == 0 and m.get("running") == 0:
            return m
        time.sleep(0.1)
    return metrics()


warm_n = max(CLIENTS * 4, N // 10)
p = run(warm_n, "w")
check(not p, "warm-up: %d requests correct%s" % (warm_n, "" if not p else ": " + p[0]))
m0 = settle()
r0 = rss()
t0 = time.time()
p = run(N, "s")
dt = time.time() - t0
m1 = settle()
r1 = rss()
for line in p[:5]:
    print("     " + line)
check(not p, "soak: %d requests from %d clients, each exactly one final event and the "
      "expected tokens (%d wrong)" % (N, CLIENTS, len(p)))
d = {k: m1[k] - m0[k] for k in ("requests", "completed", "rejected_busy", "generated_tokens")}
check(d["requests"] == N and d["completed"] == N and d["rejected_busy"] == 0,
      "server metrics: %d accepted, %d completed, %d busy" % (d["requests"], d["completed"],
                                                              d["rejected_busy"]))
check(m1["live"] == 0 and m1["running"] == 0, "nothing live or running afterwards")
print("     soak: %d requests, %d generated tokens in %.1f s (%.1f req/s); rank 0 RSS %.1f MiB "
      "after warm-up, %.1f MiB after the soak, peak %.1f MiB"
      % (N, d["generated_tokens"], dt, N / dt, r0["VmRSS"], r1["VmRSS"], r1["VmHWM"]), flush=True)
check(r1["VmRSS"] - r0["VmRSS"] < RSS_SLACK_MIB,
      "rank 0 RSS returned to its baseline: %+.1f MiB (slack %.0f MiB)"
      % (r1["VmRSS"] - r0["VmRSS"], RSS_SLACK_MIB))
sys.exit(1 if failures else 0)
