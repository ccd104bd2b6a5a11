#!/usr/bin/env bash
# The emulated rack: decode of each MODEL at TP 2 across two hosts of launch/netns-cluster
# (one rank per host, 1 thread), the link delayed by each of DELAYS us one way, with the
# residual replicated and sharded, printed beside the scale model's prediction for the
# same link (docs/SCALING.md, "The emulated rack").
#   1. compute: `bench scale` measures rank 0 of the 2x1 layout alone (it holds every
#      layer, the embedding and the head), 1 thread, on this machine;
#   2. network, per delay: `bench scale net` on the cluster times the engine's collectives
#      through its communicator, a layer's work spread between each layout's collectives
#      (--layer-work), and fits a and bw;
#   3. projection: `bench scale --layouts 2x1 --residual replicated,sharded`, with the
#      layers' collectives as measured in 2 (--net-measured), and with the alpha-beta
#      fit of 2 alone (--net BW:A);
#   4. measured: `bitrack run --tp 2 -t 1 --layout L` on the cluster, REPS runs of each
#      layout, alternately: median and best of the tokens/s after the first token (on a
#      machine shared with other jobs the best run is the least disturbed one), and the
#      median of the replicated / sharded ratios of runs taken one after the other.
#   bench/scripts/rack_emulated.sh OUT_DIR MODEL.gguf...
# Env: DELAYS ("0 25 100"), REPS (3), N (tokens generated, 32), BR_NETNS_PREFIX (rack-),
#      RATE (a tc rate for every host, none by default: tbf shapes in timer ticks here).
# Needs root (network namespaces). Not a test: CI runs the shaped path in mpi_netns.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
NETNS=launch/netns-cluster
OUT=${1:?usage: rack_emulated.sh OUT_DIR MODEL.gguf...}
shift
[ $# -ge 1 ] || { echo "rack_emulated: give at least one model" >&2; exit 2; }
DELAYS=${DELAYS:-0 25 100}
REPS=${REPS:-3}
N=${N:-32}
export BR_NETNS_PREFIX=${BR_NETNS_PREFIX:-rack-}
export BR_NETNS_STATE="$OUT/netns-state"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PY=/usr/bin/python3
mkdir -p "$OUT"
"$NETNS" down > /dev/null 2>&1 || true
trap '"$NETNS" down > /dev/null 2>&1 || true' EXIT
CORES=$(nproc)

echo "| model | one-way delay us | residual | network fit (a us, Gbit/s) | predicted tok/s, measured collectives (alpha-beta fit) | measured tok/s median / best (runs) | measured / predicted: median / best |"
echo "|---|---|---|---|---|---|---|"
for model in "$@"; do
    name=$(basename "$model" .gguf)
    # 1. compute of rank 0 of 2x1 (the projection below adds the network)
    "$BIN" bench scale -m "$model" --tp 2 --pp 1 --rank 0 -t 1 --batch 1 --reps 7 \
        --net 10:10 --json "$OUT/$name-compute.json" > "$OUT/$name-compute.txt"
    work=$($PY -c "
import json,sys; m=json.load(open(sys.argv[1]))['measured'][0]
print(round(m['layer_s']*1e6))" "$OUT/$name-compute.json")
    for d in $DELAYS; do
        "$NETNS" down > /dev/null 2>&1 || true
        up=("$NETNS" up 2)
        [ "$d" != 0 ] && up+=(--delay "${d}us")
        [ -n "${RATE:-}" ] && up+=(--rate "$RATE")
        "${up[@]}" > "$OUT/up.txt" 2>&1 || { cat "$OUT/up.txt"; exit 1; }
        "$NETNS" hostfile 1 > "$OUT/hosts"
        MPI=("$NETNS" mpirun --hostfile "$OUT/hosts" -np 2 --map-by slot)
        # 2. the network as the engine sees it
        "${MPI[@]}" "$BIN" bench scale net -m "$model" --batch 1 --reps 100 --layer-work "$work" \
            --sizes 64,1024,8192,65536 --json "$OUT/$name-net-$d.json" > "$OUT/$name-net-$d.txt"
        net=$($PY -c "import json,sys; j=json.load(open(sys.argv[1])); print('%g:%g' % (min(j['fit_bw_gbit'], 1e5), j['fit_alpha_us']))" "$OUT/$name-net-$d.json")
        # 3. the projection (two ranks share this machine's cores: --cores)
        "$BIN" bench scale -m "$model" --tp 2 --pp 1 --rank 0 -t 1 --batch 1 --reps 7 \
            --cores "$CORES" --layouts 2x1 --residual replicated,sharded \
            --net-measured "$OUT/$name-net-$d.json" \
            --json "$OUT/$name-proj-$d.json" > "$OUT/$name-proj-$d.txt"
        "$BIN" bench scale -m "$model" --tp 2 --pp 1 --rank 0 -t 1 --batch 1 --reps 7 \
            --cores "$CORES" --layouts 2x1 --residual replicated,sharded --net "$net" \
            --json "$OUT/$name-projab-$d.json" > "$OUT/$name-projab-$d.txt"
        # the layouts run alternately, so that a change in the machine's load hits both
        runs=()
        for res in replicated sharded; do
            pred=$($PY -c "
import json,sys
for f in sys.argv[1:3]:
    p = [p for p in json.load(open(f))['projection'] if p['residual'] == sys.argv[3]]
    print(p[0]['tokens_per_s'] if p else 0, end=' ')" \
                "$OUT/$name-proj-$d.json" "$OUT/$name-projab-$d.json" "$res")
            [ "${pred%% *}" = 0 ] && continue # the layout cannot split this model
            runs+=("$res")
            echo "$pred" > "$OUT/pred-$res"
            : > "$OUT/rates-$res"
        done
        for _ in $(seq "$REPS"); do
            for res in "${runs[@]}"; do
                r=$("${MPI[@]}" "$BIN" run -m "$model" --tp 2 --pp 1 -t 1 --layout "$res" \
                    --tokens 1,2,3,4 -n "$N" --ids --ignore-eos 2>&1 > /dev/null |
                    sed -n 's/.*generated [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s after the first).*/\1/p')
                echo "${r:-0}" >> "$OUT/rates-$res"
            done
        done
        $PY - "$name" "$d" "$net" "$OUT" "${runs[@]}" << 'PYEOF' | tee -a "$OUT/rack.md"
import statistics, sys
name, d, net, out = sys.argv[1:5]
runs = sys.argv[5:]
bw, a = net.split(":")
rates = {}
for res in runs:
    pred, pred_ab = (float(x) for x in open(f"{out}/pred-{res}").read().split())
    r = rates[res] = [float(x) for x in open(f"{out}/rates-{res}").read().split()]
    med, best = statistics.median(r), max(r)
    print(f"| {name} | {d} | {res} | {float(a):.1f} us, {float(bw):.2f} | {pred:.2f} "
          f"({pred_ab:.2f}) | {med:.2f} / {best:.2f} ({', '.join(f'{x:.2f}' for x in r)}) | "
          f"{med / pred:.2f} / {best / pred:.2f} |")
if len(runs) == 2:
    pairs = [x / y for x, y in zip(rates[runs[0]], rates[runs[1]]) if y > 0]
    print(f"| {name} | {d} | {runs[0]} / {runs[1]}, run by run | | | "
          f"median {statistics.median(pairs):.2f} ({', '.join(f'{x:.2f}' for x in pairs)}) | |")
PYEOF
    done
done
