#!/usr/bin/env bash
# Checks the scale model (bitrack bench scale, docs/SCALING.md) against a real multi-rank
# run on this machine: one stream of greedy decode on a TP x P layout of MODEL, all ranks
# on this machine's cores.
#   1. compute: `bench scale` measures a first-stage and a last-stage rank alone
#      (loopback collectives), 1 thread;
#   2. network: `bench scale net` times the collectives in a TP group of T ranks and the
#      stage-to-stage send, with T x P ranks started as in the real run and, between
#      operations, as much work as the engine does between two collectives (on a shared
#      machine a peer is then often descheduled: that wait is part of the cost);
#   3. projection with those (k = T threads / cores: one stage computes at a time, and
#      the waiting ranks yield their cores: Open MPI's waits yield when ranks outnumber
#      cores, mpi_yield_when_idle, set explicitly below);
#   4. the real run, `bitrack run --tp T --pp P -t 1`, REPS times (its tokens/s after the
#      first token).
#   bench/scripts/scale_validate.sh MODEL.gguf [T] [P] [OUT_DIR]
# Env: REPS (real runs, 3), BR_SCALE_TOKENS (24), CORES (nproc), CLOCK (wall|cpu for the
#      compute), NET (GBIT:US: skip step 2 and use this network).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BITRACK_BIN:-build/release/bitrack}
MODEL=$1
T=${2:-2}
P=${3:-2}
OUT=${4:-build/scale-validate}
REPS=${REPS:-3}
N=${BR_SCALE_TOKENS:-24}
CORES=${CORES:-$(nproc)}
mkdir -p "$OUT"
if [ "$T" = 1 ] && [ -z "${NET:-}" ]; then
    echo "scale_validate: with T = 1 there are no collectives to time; give the network as NET=GBIT:US" >&2
    exit 2
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI=(mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np $((T * P)))
PY=/usr/bin/python3

last=$(((P - 1) * T))
scale() { # $1: network GBIT:US
    "$BIN" bench scale -m "$MODEL" --tp "$T" --pp "$P" --rank 0 --shard "$T:$P:$last:$MODEL" \
        --batch 1 --reps 7 -t 1 --cores "$CORES" --net "$1" --clock "${CLOCK:-wall}" \
        --json "$OUT/scale.json" > "$OUT/scale.txt"
}
scale 10:10
# compute between two collectives: a layer's compute (times the sharing factor) / its collectives
work=$($PY -c "
import json,sys; j=json.load(open(sys.argv[1])); m=j['measured'][0]
k=max(1.0, $T/float($CORES)); print(round(m['layer_s']*1e6*k/max(1, m['allgathers_per_layer']+m['reduce_scatters_per_layer']+m['allreduces_per_layer']+m['max_allreduces_per_layer'])))" "$OUT/scale.json")
if [ -n "${NET:-}" ]; then
    net=$NET
else
    "${MPI[@]}" "$BIN" bench scale net --group "$T" --reps 200 --sizes 64,2048,8192 --work "$work" \
        --json "$OUT/net.json" > "$OUT/net.txt"
    net=$($PY -c "import json,sys; j=json.load(open(sys.argv[1])); print('%g:%g' % (min(j['fit_bw_gbit'], 1e5), j['fit_alpha_us']))" "$OUT/net.json")
fi
scale "$net"
pred=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['projection'][0]['tokens_per_s'])" "$OUT/scale.json")
rates=()
for _ in $(seq "$REPS"); do
    r=$("${MPI[@]}" "$BIN" run -m "$MODEL" --tp "$T" --pp "$P" -t 1 --tokens 128000,791 -n "$N" \
        --ids --ignore-eos 2>&1 >/dev/null |
        sed -n 's/.*generated [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s after the first).*/\1/p')
    rates+=("${r:-0}")
done
$PY - "$pred" "$net" "${rates[@]}" <<'PYEOF' | tee "$OUT/validate.txt"
import statistics, sys
pred, net, rates = float(sys.argv[1]), sys.argv[2], [float(x) for x in sys.argv[3:]]
med = statistics.median(rates)
print(f"network fit (Gbit/s:us) {net} with the engine's work between collectives; measured tok/s {rates}, median {med:.3f}; "
      f"predicted {pred:.3f}; predicted/measured {pred / med:.3f}")
PYEOF
