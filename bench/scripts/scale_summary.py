#!/usr/bin/env python3
"""Markdown tables of docs/SCALING.md from `bitrack bench scale --json` output: per node
count and network, the best layout for one stream (batch 1) and for aggregate throughput
(largest batch, P steps in flight), with every layout's figures listed below.
    bench/scripts/scale_summary.py scale-100b.json"""
import json
import sys
from collections import defaultdict

j = json.load(open(sys.argv[1]))
proj = j["projection"]
bmax = max(p["batch"] for p in proj)
by = defaultdict(list)
for p in proj:
    by[(p["tp"] * p["pp"], p["gbit"], p["alpha_us"])].append(p)
print(f"| nodes | network | one stream: best T x P | tok/s | ms/token | comm share | "
      f"aggregate (batch {bmax}): best T x P | tok/s |")
print("|---|---|---|---|---|---|---|---|")
for (n, g, a), ps in sorted(by.items()):
    one = max((p for p in ps if p["batch"] == 1), key=lambda p: p["tokens_per_s"])
    agg = max((p for p in ps if p["batch"] == bmax), key=lambda p: p["tokens_per_s_pipelined"])
    print(f"| {n} | {g:g} Gbit/s, {a:g} us | {one['tp']}x{one['pp']} | {one['tokens_per_s']:.2f} | "
          f"{one['latency_s'] * 1e3:.0f} | {one['comm_s'] / one['latency_s'] * 100:.0f}% | "
          f"{agg['tp']}x{agg['pp']} | {agg['tokens_per_s_pipelined']:.2f} |")
print()
print("| nodes | T x P | network | batch | latency ms | compute ms | comm ms | tok/s | "
      "tok/s pipelined |")
print("|---|---|---|---|---|---|---|---|---|")
for p in sorted(proj, key=lambda p: (p["tp"] * p["pp"], -p["tp"], p["gbit"], p["batch"])):
    print(f"| {p['tp'] * p['pp']} | {p['tp']}x{p['pp']} | {p['gbit']:g} | {p['batch']} | "
          f"{p['latency_s'] * 1e3:.1f} | {p['compute_s'] * 1e3:.1f} | {p['comm_s'] * 1e3:.1f} | "
          f"{p['tokens_per_s']:.2f} | {p['tokens_per_s_pipelined']:.2f} |")
