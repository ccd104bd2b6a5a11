#!/usr/bin/env python3
"""Clients of a multi-rank `bitrack serve` while one of its ranks is lost
(tests/e2e/mpi_lost_rank*.sh).

usage: lost_rank_client.py ADDR --clients N (--kill PID | --lose CMD) [--retry S]

N clients (threads, each its own connection) stream long generations, one after another,
until an error ends them; the server is started with fewer sequence slots than clients,
so some requests are running and some are queued. Once tokens flow, the rank is lost:
--kill sends SIGKILL to PID, --lose runs the shell command CMD (a link going down). Every
client must then get an `unavailable` error within 5 s of the loss; the delay of each
is printed. With --retry S, a client then repeats a greedy reference request (made
before the loss) until the restarted server serves it, for at most S seconds, and the
tokens must be the same as before.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python")
)
from bitrack_client import BitrackError, BitrackTimeout, Client  # noqa: E402

PROMPT = [5, 9, 14, 3, 27, 8]
LIMIT_S = 5.0


def reference(addr, timeout):
    """The tokens of a greedy request, streamed."""
    with Client(addr, timeout=timeout) as c:
        return [
            ev["token"]
            for ev in c.generate(tokens=PROMPT, max_tokens=24, temperature=0.0, seed=1)
            if ev["type"] == "token" and ev["token"] >= 0
        ]


class Streamer(threading.Thread):
    def __init__(self, addr, k, long_tokens):
        super().__init__(daemon=True)
        self.addr, self.k, self.long_tokens = addr, k, long_tokens
        self.tokens = 0
        self.code = None
        self.message = ""
        self.t_error = None
        self.requests = 0

    def run(self):
        with Client(self.addr, timeout=20.0, ping_interval=0.5) as c:
            try:
                while True:
                    self.requests += 1
                    prompt = PROMPT + [100 + self.k]
                    for ev in c.generate(tokens=prompt, max_tokens=self.long_tokens, seed=self.k):
                        if ev["type"] == "token":
                            self.tokens += 1
            except BitrackTimeout as e:
                self.code, self.message = "timeout", str(e)
            except BitrackError as e:
                self.code, self.message = e.code, str(e)
            self.t_error = time.monotonic()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--kill", type=int)
    ap.add_argument("--lose")
    ap.add_argument("--retry", type=float, default=0)
    ap.add_argument("--long", type=int, default=200)
    a = ap.parse_args()
    fails = 0

    ref = reference(a.addr, 20.0)
    print("reference request: %d tokens %s" % (len(ref), ref[:8]))
    streams = [Streamer(a.addr, k, a.long) for k in range(a.clients)]
    for s in streams:
        s.start()
    deadline = time.monotonic() + 20
    while sum(s.tokens for s in streams) < 10 * a.clients and time.monotonic() < deadline:
        if any(s.t_error for s in streams):
            break
        time.sleep(0.05)
    early = [s for s in streams if s.t_error]
    if early:
        for s in early:
            print("FAIL client %d ended before the loss: %s" % (s.k, s.message))
        return 1
    running = sum(1 for s in streams if s.tokens > 0)
    print(
        "%d clients streaming (%d with tokens, %d tokens so far); losing the rank"
        % (len(streams), running, sum(s.tokens for s in streams))
    )
    t_loss = time.monotonic()
    print("loss at epoch %.3f" % time.time())
    if a.kill:
        os.kill(a.kill, signal.SIGKILL)
    else:
        subprocess.run(a.lose, shell=True, check=True)
    for s in streams:
        s.join(timeout=max(0.1, t_loss + 10 - time.monotonic()))
    worst = 0.0
    for s in streams:
        if s.t_error is None:
            print("FAIL client %d: no answer within 10 s of the loss (hang)" % s.k)
            fails += 1
            continue
        dt = s.t_error - t_loss
        worst = max(worst, dt)
        ok = s.code == "unavailable" and dt < LIMIT_S
        # unless the connection itself went (rank 0 died with the job), the message names
        # the lost rank: never just "stopped by a signal"
        if ok and "connection" not in (s.message or "") and not re.search(
            r"rank \d+ \(pid \d+ on ", s.message or ""
        ):
            ok = False
            print("     (the message does not name the lost rank and its host)")
        print(
            "%s client %d: %s after %.2f s (%d tokens, %d requests): %s"
            % ("ok  " if ok else "FAIL", s.k, s.code, dt, s.tokens, s.requests, s.message)
        )
        fails += not ok
    print("time from loss to the last client's error: %.2f s (limit %.0f s)" % (worst, LIMIT_S))

    if a.retry > 0:
        t0 = time.monotonic()
        attempts, got, last = 0, None, ""
        while time.monotonic() - t0 < a.retry:
            attempts += 1
            try:
                got = reference(a.addr, 3.0)
                break
            except (BitrackError, BitrackTimeout) as e:
                last = "%s: %s" % (e.code, e)
                time.sleep(0.5)
        if got is None:
            print("FAIL no retry served within %.0f s (%d attempts; last: %s)" % (a.retry, attempts, last))
            fails += 1
        elif got != ref:
            print("FAIL the retried request after the restart gave %s, before %s" % (got, ref))
            fails += 1
        else:
            print(
                "ok   retried request served again %.1f s after the loss (%d attempts), "
                "same %d tokens" % (time.monotonic() - t_loss, attempts, len(got))
            )
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
