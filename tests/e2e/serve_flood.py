#!/usr/bin/python3
"""No client can make another wait: a running stream's inter-token gaps, a ping, and a
small request of a third client, while one client floods 1 MiB prompts (each answered
too_long after tokenizing). Prints the numbers; fails when the stream's largest gap
during the flood exceeds LIMIT_MS, or the ping or the small request wait behind the flood.

usage: serve_flood.py ADDR N_FLOOD LIMIT_MS
"""
import subprocess
import sys
import threading
import time

import msgpack
import zmq

ADDR, N_FLOOD, LIMIT_MS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
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


def send(s, m):
    m.setdefault("v", 1)
    s.send(msgpack.packb(m, use_bin_type=True))


def recv(s, timeout=30.0):
    if s.poll(int(timeout * 1000)) == 0:
        return None
    return msgpack.unpackb(s.recv(), raw=False)


def stream_gaps(rid, n_tokens, started=None):
    """Streams n_tokens; returns the gaps between token events (ms), without the first."""
    s = sock()
    send(s, {"type": "generate", "id": rid, "tokens": [5, 6, 7], "max_tokens": n_tokens,
             "stream": True, "temperature": 0.0, "ignore_eos": True})
    gaps, last, n, end = [], None, 0, None
    while True:
        r = recv(s)
        if r is None:
            break
        now = time.monotonic()
        if r["type"] == "token":
            if last is not None:
                gaps.append((now - last) * 1e3)
            last = now
            n += 1
            if n == 20 and started is not None:
                started.set()
        else:
            end = r
            break
    s.close(0)
    return gaps, n, end


# the model's tiny context means every prompt here is a single sequence of a few tokens;
# a stream long enough to outlast the flood
N_TOK = 240

base, n, end = stream_gaps("base", N_TOK)
check(end is not None and end["type"] == "done", "baseline stream ran (%d tokens)" % n)
base = base or [0.0]
print("baseline: %d gaps, median %.2f ms, max %.2f ms" % (len(base), sorted(base)[len(base) // 2],
                                                           max(base)), flush=True)

# the flood runs in its own process: packing 1 MiB messages in this one would hold the
# interpreter lock and stall the measuring threads, not the server
FLOOD = r"""
import sys, msgpack, zmq
addr, n = sys.argv[1], int(sys.argv[2])
big = ("the quick brown fox jumps over the lazy dog " * 30000)[: 1 << 20]
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(addr)
msgs = [msgpack.packb({"v": 1, "type": "generate", "id": "f%d" % i, "prompt": big,
                       "max_tokens": 4}, use_bin_type=True) for i in range(n)]
for m in msgs:
    s.send(m)
print("sent", flush=True)
codes = []
while len(codes) < n and s.poll(120000):
    r = msgpack.unpackb(s.recv(), raw=False)
    codes.append(r.get("code") or r["type"])
print(" ".join(codes))
"""
flood_answers = []


flood_sent = threading.Event()


def flood():
    p = subprocess.Popen([sys.executable, "-c", FLOOD, ADDR, str(N_FLOOD)],
                         stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() == "sent":
        flood_sent.set()
    flood_answers.extend(p.stdout.read().split())
    p.wait(300)
    flood_sent.set()


started = threading.Event()
flood_done = threading.Event()
result = {"gaps": [], "n": 0, "streams": 0, "ends": []}


def streamer():
    """Streams until the flood has been answered: one stream after another, so that a
    stream runs through the whole flood whatever the speed of the model."""
    while True:
        gaps, n, end = stream_gaps("victim%d" % result["streams"], 400, started)
        result["gaps"] += gaps
        result["n"] += n
        result["streams"] += 1
        result["ends"].append(end)
        if flood_done.is_set():
            break


st = threading.Thread(target=streamer)
st.start()
started.wait(30)
t_flood = time.monotonic()


def flood_then_flag():
    flood()
    flood_done.set()


fl = threading.Thread(target=flood_then_flag)
fl.start()
flood_sent.wait(60)  # the flood is at the server (or on its way in)
# a ping and a small request of a third client, while the flood is being worked off
p = sock()
t0 = time.monotonic()
send(p, {"type": "ping", "id": "p"})
r = recv(p, 60)
ping_ms = (time.monotonic() - t0) * 1e3
t0 = time.monotonic()
send(p, {"type": "generate", "id": "small", "prompt": "hello there", "max_tokens": 4})
while True:
    r = recv(p, 120)
    if r is None or r["type"] in ("done", "error"):
        break
small_ms = (time.monotonic() - t0) * 1e3
p.close(0)
st.join()
fl.join()
flood_s = time.monotonic() - t_flood
gaps = result["gaps"] or [0]
print("flood: %d prompts of 1 MiB answered %s in %.1f s" % (
    N_FLOOD, sorted(set(flood_answers)), flood_s), flush=True)
print("during the flood: stream %d gaps, median %.2f ms, max %.2f ms; ping %.1f ms; "
      "a small request of another client %.1f ms" % (
          len(gaps), sorted(gaps)[len(gaps) // 2], max(gaps), ping_ms, small_ms), flush=True)
check(all(e is not None and e["type"] == "done" for e in result["ends"]),
      "%d streams (%d tokens) ran through the flood, each to its done" % (
          result["streams"], result["n"]))
check(len(flood_answers) == N_FLOOD, "every flood prompt was answered (%d)" % len(flood_answers))
check(max(gaps) < LIMIT_MS, "largest inter-token gap during the flood %.1f ms < %.0f ms" %
      (max(gaps), LIMIT_MS))
check(ping_ms < LIMIT_MS, "a ping during the flood answered in %.1f ms < %.0f ms" % (ping_ms, LIMIT_MS))
check(small_ms < 4 * LIMIT_MS, "another client's small request during the flood took %.1f ms < %.0f ms"
      % (small_ms, 4 * LIMIT_MS))
# client churn: 300 clients each start a stream and vanish; the server cancels their
# requests as their events find nobody, and logs that at most once a second (the shell
# script counts the lines)
N_CHURN = 300
churned = 0
for i in range(N_CHURN):
    c = sock()
    send(c, {"type": "generate", "id": "churn%d" % i, "tokens": [5, 6, 7], "max_tokens": 2000,
             "stream": True})
    churned += recv(c, 10) is not None  # its request is in (queued or running)
    c.close(0)
check(churned == N_CHURN, "%d clients started a stream and vanished" % churned)
time.sleep(1.5)
m = sock()
send(m, {"type": "metrics", "id": "m"})
deadline = time.monotonic() + 20
live = None
while time.monotonic() < deadline:
    r = recv(m, 5)
    live = dict(r.get("metrics", {})).get("live") if r else None
    if live == 0:
        break
    time.sleep(0.5)
    send(m, {"type": "metrics", "id": "m"})
check(live == 0, "%d vanished clients' requests all freed (live=%s)" % (N_CHURN, live))
sys.exit(1 if failures else 0)
