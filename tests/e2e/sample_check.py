#!/usr/bin/python3
"""Sampling on the last pipeline stage equals sampling over the full logits.

Drives a running `bitrack serve` (raw ZeroMQ + msgpack). For each sampling setting
(greedy or temperature; top-k, top-p, min-p; logit bias including bans; logprobs) it asks
the same prompt twice, one request at a time:
  * as is: the server samples it where the logits are and gets back candidates;
  * with frequency_penalty 0.5 over an empty window (repeat_last_n 0): a penalty that
    changes no logit but needs the token history, so the server fetches the full logits
    and samples them itself (br_sample_full);
and checks that tokens and logprobs are equal, bit for bit. Settings without bias or
logprobs are also checked against `bitrack run` on the model file. Then 12 concurrent
requests of mixed settings (sharing steps and micro-batches) must each equal their alone
answers.

usage: sample_check.py ADDR BITRACK MODEL
"""
import subprocess
import sys
import time

import msgpack
import zmq

ADDR, BIN, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]
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


def request(rid, prompt, settings):
    m = {"v": 1, "type": "generate", "id": rid, "stream": True, "max_tokens": 10,
         "tokens": prompt, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
         "repeat_penalty": 1.0, "seed": 0}
    m.update(settings)
    return m


def run_streams(reqs, timeout=120.0):
    """sends every request on its own socket at once; returns {id: (tokens, logprobs, end)}"""
    socks = {}
    for m in reqs:
        s = sock()
        s.send(msgpack.packb(m, use_bin_type=True))
        socks[m["id"]] = s
    out = {rid: ([], [], None) for rid in socks}
    deadline = time.time() + timeout
    last_ping = time.time()
    while any(v[2] is None for v in out.values()) and time.time() < deadline:
        if time.time() - last_ping > 0.5:  # heartbeats, as a real client sends them
            for rid, s in socks.items():
                if out[rid][2] is None:
                    s.send(msgpack.packb({"v": 1, "type": "ping", "id": rid}))
            last_ping = time.time()
        for rid, s in socks.items():
            while s.poll(10):
                r = msgpack.unpackb(s.recv(), raw=False)
                if r.get("id") != rid:
                    continue
                if r["type"] == "pong":
                    continue
                if r["type"] == "token":
                    if r.get("token", -1) >= 0:
                        out[rid][0].append(r["token"])
                        out[rid][1].append(r.get("logprob"))
                else:
                    out[rid] = (out[rid][0], out[rid][1], r)
    for s in socks.values():
        s.close()
    return out


def reference(prompt, n, st):
    args = [BIN, "run", "-m", MODEL, "--tokens", ",".join(map(str, prompt)), "-n", str(n),
            "--seed", str(st.get("seed", 0)), "--temp", str(st.get("temperature", 0.0)),
            "--top-k", str(st.get("top_k", 0)), "--top-p", str(st.get("top_p", 1.0)),
            "--min-p", str(st.get("min_p", 0.0)), "--ids", "--ignore-eos"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


INF = float("inf")
SETTINGS = [
    {"temperature": 0.0},
    {"temperature": 0.9, "seed": 11},
    {"temperature": 0.8, "top_k": 5, "seed": 12},
    {"temperature": 1.2, "top_p": 0.9, "seed": 13},
    {"temperature": 1.0, "min_p": 0.05, "top_k": 40, "seed": 14},
    {"temperature": 0.0, "logit_bias": [[3, 2.5], [7, -INF], [400, 1.0]]},
    {"temperature": 0.7, "top_p": 0.95, "seed": 15, "logprobs": True},
    {"temperature": 0.0, "logprobs": True, "logit_bias": {"10": 3.0, "11": -INF}},
    {"temperature": 1.1, "top_k": 8, "seed": 16, "logprobs": True,
     "logit_bias": [[20, 4.0], [21, 4.0], [22, -1.5]]},
]

alone = {}
for k, st in enumerate(SETTINGS):
    prompt = [(11 * k + j) % 300 + 5 for j in range(4 + k % 3)]
    a = run_streams([request("a%d" % k, prompt, st)])["a%d" % k]
    full = dict(st, frequency_penalty=0.5, repeat_last_n=0)
    b = run_streams([request("b%d" % k, prompt, full)])["b%d" % k]
    ok = all(x[2] is not None and x[2]["type"] == "done" and
             x[2].get("finish_reason") in ("length", "stop") for x in (a, b)) and len(a[0]) > 0
    check(ok and a[0] == b[0] and a[1] == b[1],
          "setting %d %s: last-stage sampling equals full logits: %s%s" %
          (k, st, a[0][:6], " logprobs %s" % [round(x, 4) for x in a[1][:3]]
           if st.get("logprobs") else ""))
    if "logit_bias" not in st:
        want = reference(prompt, len(a[0]) or 10, st)
        check(a[0] == want, "setting %d equals bitrack run: %s" % (k, want[:6]))
    if st.get("logprobs"):
        check(all(isinstance(x, float) and x <= 0 for x in a[1]), "setting %d has logprobs" % k)
    alone[k] = (prompt, a)

# mixed settings in the same steps
reqs = [request("m%d" % k, alone[k][0], SETTINGS[k]) for k in range(len(SETTINGS))]
reqs += [request("m%d" % (k + 100), alone[k][0], SETTINGS[k]) for k in (1, 5, 8)]
mixed = run_streams(reqs)
same = sum(1 for m in reqs
           if mixed[m["id"]][:2] == alone[int(m["id"][1:]) % 100][1][:2] and
           mixed[m["id"]][2] and mixed[m["id"]][2].get("finish_reason") in ("length", "stop"))
for m in reqs:
    got, want = mixed[m["id"]], alone[int(m["id"][1:]) % 100][1]
    if got[:2] != want[:2]:
        print("  %s: got %s (end %s), alone %s" % (m["id"], got[0], got[2], want[0]))
check(same == len(reqs), "%d concurrent mixed requests equal their alone answers (%d/%d)" %
      (len(reqs), same, len(reqs)))

if failures:
    print("%d failures" % len(failures))
    sys.exit(1)
