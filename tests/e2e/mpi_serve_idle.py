#!/usr/bin/python3
"""An idle cluster sleeps: the CPU time of each serving rank over IDLE_S seconds of
idleness, and the time to the first token of a request after idleness (that one, and
ROUNDS more after 1 s each: a rank sleeps after 50 ms) against requests back to back on a
busy server. Medians, since on a shared machine a process waking from sleep may wait for
a core.

usage: mpi_serve_idle.py ADDR IDLE_S ROUNDS PID...
"""
import os
import statistics
import sys
import time

import msgpack
import zmq

ADDR, IDLE_S, ROUNDS = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
PIDS = [int(p) for p in sys.argv[4:]]
DEBUG = bool(os.environ.get("BR_IDLE_DEBUG"))
TICK = 100.0  # clock ticks per second (USER_HZ)
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(ADDR)
n = 0


def ttft():
    """Client-side time from sending a greedy request to its first token, in ms."""
    global n
    n += 1
    rid = "t%d" % n
    t0 = time.perf_counter()
    s.send(msgpack.packb({"v": 1, "type": "generate", "id": rid, "tokens": [5, 6, 7],
                          "max_tokens": 2, "stream": True, "temperature": 0.0}))
    first = None
    while True:
        if not s.poll(30000):
            sys.exit("FAIL no answer to %s" % rid)
        r = msgpack.unpackb(s.recv(), raw=False)
        if r.get("id") != rid:
            continue
        if r["type"] == "token" and first is None:
            first = (time.perf_counter() - t0) * 1e3
        if r["type"] in ("done", "error"):
            if DEBUG:
                print("  client %.3f ms, server %s" % (first, r.get("timings")))
            return first


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / TICK


for _ in range(20):  # warm up
    ttft()
busy = [ttft() for _ in range(40)]
c0 = [cpu(p) for p in PIDS]
t0 = time.monotonic()
time.sleep(IDLE_S)
c1 = [cpu(p) for p in PIDS]
dt = time.monotonic() - t0
shares = [100.0 * (b - a) / dt for a, b in zip(c0, c1)]
idle = [ttft()]
for _ in range(ROUNDS):
    time.sleep(1.0)
    idle.append(ttft())
print("idle CPU per rank over %.0f s: %s" % (
    IDLE_S, ", ".join("rank %d %.2f%%" % (k, w) for k, w in enumerate(shares))))
print("time to first token: busy median %.3f ms (min %.3f), after idleness median %.3f ms "
      "(after %.0f s: %.3f; after 1 s: %s)" % (
          statistics.median(busy), min(busy), statistics.median(idle), IDLE_S, idle[0],
          ", ".join("%.3f" % x for x in idle[1:])))
worst = shares
fails = 0
if max(worst) >= 2.0:
    print("FAIL an idle rank used %.2f%% of a core (limit 2%%)" % max(worst))
    fails += 1
slower = statistics.median(idle) - statistics.median(busy)
# Printed, not asserted tightly: the design adds one datagram and a wake from poll() (well
# under 1 ms on an idle machine), but on a shared, loaded machine a process waking from
# sleep waits for a core, and the medians move by tens of ms from run to run (single
# requests up to 0.8 s under a load average of 6 on 2 cores). The bound on the median
# (300 ms) only guards against gross regressions; docs/RELIABILITY.md has the figures.
print("%s the first token after idleness is %.3f ms slower than on a busy server" % (
    "ok  " if slower < 300 else "FAIL", slower))
fails += slower >= 300
sys.exit(1 if fails else 0)
