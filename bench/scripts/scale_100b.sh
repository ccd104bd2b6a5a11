#!/usr/bin/env bash
# The 100B-class projection of docs/SCALING.md. For each TP width T, writes one rank's
# shard of the synthetic 100b preset (the last stage's TP rank 0 of a T x P layout with P
# stages, so the shard holds a few layers and the head, and stays small), measures its
# decode step with `bitrack bench scale`, and projects 8, 16 and 32 nodes on 10, 25 and
# 100 Gbit/s networks. Shards are deleted afterwards.
#   bench/scripts/scale_100b.sh [OUT_DIR]
# Env: WIDTHS (default "1 2 4 8 16 32"), P (default 24), THREADS (1), CLOCK (cpu), REPS (3),
#      NETS (default 10:25,25:25,100:25: Gbit/s : one-way message time in us), BATCH,
#      NODE (CORES:GB/s: project onto such nodes, compute scaled as bench/scale.h says;
#      HERE_GBS: this machine's bandwidth for it, measured when not given). Both residual
#      layouts are projected.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
OUT=${1:-build/scale-100b}
WIDTHS=${WIDTHS:-"1 2 4 8 16 32"}
P=${P:-24}
mkdir -p "$OUT"
args=()
for t in $WIDTHS; do
    r=$(((P - 1) * t))
    d="$OUT/shard-t$t"
    [ -f "$d/rank-$r.gguf" ] || "$BIN" synth --preset 100b --tp "$t" --pp "$P" --rank "$r" -o "$d" >/dev/null
    args+=(--shard "$t:$P:$r:$d")
done
"$BIN" bench scale "${args[@]}" -t "${THREADS:-1}" --clock "${CLOCK:-cpu}" --reps "${REPS:-3}" --batch "${BATCH:-1,4,16,64}" \
    --nodes 8,16,32 --net "${NETS:-10:25,25:25,100:25}" --residual replicated,sharded \
    ${NODE:+--node "$NODE"} ${HERE_GBS:+--here-gbs "$HERE_GBS"} --json "$OUT/scale-100b.json" |
    tee "$OUT/scale-100b.txt"
[ -n "${KEEP:-}" ] || rm -rf "$OUT"/shard-t*
