#!/usr/bin/env bash
# Peak memory of the 100B preset's rank shards (docs/SCALING.md): for each rank of a
# T x P layout, one at a time, writes its shard with `bitrack synth --rank`, loads it and
# runs one decode step (`bitrack bench scale`, loopback collectives) under /usr/bin/time,
# compares the peak RSS with shard size + KV cache (CTX positions) + 1 GiB, and deletes
# the shard. Prints one table row per rank; exits 1 if any rank is over.
#   bench/scripts/scale_mem100b.sh [T] [P] [OUT_DIR]      (default 8 x 1)
# Env: RANKS (default: every rank), CTX (4096).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
T=${1:-8}
P=${2:-1}
OUT=${3:-build/scale-mem100b}
CTX=${CTX:-4096}
mkdir -p "$OUT"
over=0
echo "| rank | shard GiB | KV GiB ($CTX positions) | limit GiB | peak RSS GiB | write s | load + step s |" | tee "$OUT/mem.md"
echo "|---|---|---|---|---|---|---|" | tee -a "$OUT/mem.md"
for r in ${RANKS:-$(seq 0 $((T * P - 1)))}; do
    d="$OUT/shard"
    rm -rf "$d"
    t0=$(date +%s.%N)
    "$BIN" synth --preset 100b --tp "$T" --pp "$P" --rank "$r" -o "$d" > /dev/null
    t1=$(date +%s.%N)
    /usr/bin/time -v "$BIN" bench scale -m "$d" --tp "$T" --pp "$P" --rank "$r" --batch 1 --reps 1 \
        --ctx "$CTX" -t 2 --json "$OUT/rank-$r.json" > "$OUT/rank-$r.txt" 2> "$OUT/time-$r.txt"
    t2=$(date +%s.%N)
    rm -rf "$d"
    /usr/bin/python3 - "$OUT/rank-$r.json" "$OUT/time-$r.txt" "$r" "$t0" "$t1" "$t2" <<'PYEOF' | tee -a "$OUT/mem.md"
import json, re, sys
m = json.load(open(sys.argv[1]))["measured"][0]
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[2]).read()).group(1)) * 1024
t0, t1, t2 = map(float, sys.argv[4:7])
G = float(1 << 30)
limit = m["file_bytes"] + m["kv_bytes"] + (1 << 30)
print(f"| {sys.argv[3]} | {m['file_bytes']/G:.3f} | {m['kv_bytes']/G:.3f} | {limit/G:.3f} | "
      f"{rss/G:.3f}{' OVER' if rss >= limit else ''} | {t1-t0:.1f} | {t2-t1:.1f} |")
sys.exit(1 if rss >= limit else 0)
PYEOF
    [ "${PIPESTATUS[0]}" -eq 0 ] || over=1
done
exit $over
