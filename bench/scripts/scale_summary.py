#!/usr/bin/env python3
"""Markdown tables of docs/SCALING.md from `bitrack bench scale --json` output: per node
count, network and residual layout, the best T x P for one stream (batch 1, one step at a
time) and for aggregate throughput at each larger batch (P steps in flight), then the
replicated layout's gain over the sharded one, then every row.
    bench/scripts/scale_summary.py scale-100b.json"""
import json
import sys
from collections import defaultdict

j = json.load(open(sys.argv[1]))
proj = j["projection"]
batches = sorted({p["batch"] for p in proj if p["batch"] > 1})
by = defaultdict(list)
for p in proj:
    by[(p["tp"] * p["pp"], p["gbit"], p["alpha_us"], p.get("residual", "sharded"))].append(p)
if j.get("node_cores"):
    print(f"node: {j['node_cores']} cores, {j['node_gbs']:g} GB/s; compute measured here x "
          f"{j['compute_factor']:.4f}\n")
head = "| nodes | network | residual | one stream: best T x P | tok/s | comm share |"
for b in batches:
    head += f" batch {b}: best T x P | tok/s |"
print(head)
print("|" + "---|" * (6 + 2 * len(batches)))
best = {}
for (n, g, a, res), ps in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1], kv[0][3])):
    one = max((p for p in ps if p["batch"] == 1), key=lambda p: p["tokens_per_s"])
    best[(n, g, a, res)] = one["tokens_per_s"]
    row = (f"| {n} | {g:g} Gbit/s, {a:g} us | {res} | {one['tp']}x{one['pp']} | "
           f"{one['tokens_per_s']:.2f} | {one['comm_s'] / one['latency_s'] * 100:.0f}% |")
    for b in batches:
        agg = max((p for p in ps if p["batch"] == b), key=lambda p: p["tokens_per_s_pipelined"])
        best[(n, g, a, res, b)] = agg["tokens_per_s_pipelined"]
        row += f" {agg['tp']}x{agg['pp']} | {agg['tokens_per_s_pipelined']:.1f} |"
    print(row)
print()
print("replicated / sharded, best layout each:")
print("| nodes | network | one stream |" + "".join(f" batch {b} |" for b in batches))
print("|" + "---|" * (3 + len(batches)))
for (n, g, a, res) in sorted({k[:4] for k in best if len(k) == 4}, key=lambda k: (k[0], k[2], k[1])):
    if res != "replicated" or (n, g, a, "sharded") not in best:
        continue
    row = f"| {n} | {g:g} Gbit/s, {a:g} us | {best[(n, g, a, 'replicated')] / best[(n, g, a, 'sharded')]:.2f} |"
    for b in batches:
        row += f" {best[(n, g, a, 'replicated', b)] / best[(n, g, a, 'sharded', b)]:.2f} |"
    print(row)
if "--all" in sys.argv:
    print()
    print("| nodes | T x P | residual | network | batch | latency ms | compute ms | comm ms | "
          "tok/s | tok/s pipelined |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(proj, key=lambda p: (p["tp"] * p["pp"], -p["tp"], p.get("residual", ""),
                                         p["gbit"], p["alpha_us"], p["batch"])):
        print(f"| {p['tp'] * p['pp']} | {p['tp']}x{p['pp']} | {p.get('residual', '-')} | "
              f"{p['gbit']:g}, {p['alpha_us']:g} us | {p['batch']} | {p['latency_s'] * 1e3:.1f} | "
              f"{p['compute_s'] * 1e3:.1f} | {p['comm_s'] * 1e3:.1f} | {p['tokens_per_s']:.2f} | "
              f"{p['tokens_per_s_pipelined']:.2f} |")
