#!/usr/bin/env bash
# A real multi-host run on one machine: launch/netns-cluster builds 2 hosts (network
# namespaces on a private bridge, 10.77.0.0/24, small delay where netem exists), and
# bitrack runs 2 hosts x 2 ranks as --tp 2 --pp 2 and --tp 4 --pp 1, and once more via
# bitrack-launch --hostfile. Every run's logits must be byte-identical to one process's.
# The test proves the ranks sat in different namespaces (each rank reports its namespace
# and address) and that bitrack's traffic crossed the veth links (interface counters).
# Skips (exit 0, "SKIP: reason") where namespaces cannot be made (not root, no ip netns).
set -euo pipefail
BIN=${BR_BIN:?}
HERE=$(cd "$(dirname "$0")" && pwd)
NETNS=$HERE/../../launch/netns-cluster
LAUNCH=$HERE/../../launch/bitrack-launch
TMP=${BR_TMP:-/tmp}/mpinetns.$$
# A prefix of our own, so a cluster someone left up (br-*) is neither used nor removed.
export BR_NETNS_PREFIX="brt$$-"
export BR_NETNS_STATE="$TMP/state"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"

skip() { echo "SKIP: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (uid $(id -u))"
command -v ip > /dev/null || skip "'ip' (iproute2) is not installed"
command -v mpirun > /dev/null || { echo "FAIL: mpirun not found"; exit 1; }
probe="${BR_NETNS_PREFIX}probe"
if ! err=$(ip netns add "$probe" 2>&1); then skip "cannot create a network namespace: $err"; fi
# veth pairs and bridges are kernel modules a minimal kernel may lack
if ! err=$(ip -n "$probe" link add probe0 type veth peer name probe1 2>&1 &&
        ip -n "$probe" link add probebr type bridge 2>&1); then
    ip netns del "$probe"
    skip "no veth/bridge support in this kernel: $err"
fi
ip netns del "$probe"

mkdir -p "$TMP"
cleanup() {
    "$NETNS" down || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT # so that a killed test still tears down
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
tx() { ip netns exec "${BR_NETNS_PREFIX}h$1" cat /sys/class/net/eth0/statistics/tx_bytes; }

start=$(now)
"$NETNS" up 2 --delay 100us --rate 10gbit > "$TMP/up.txt" 2>&1 || { cat "$TMP/up.txt"; exit 1; }
echo "cluster up in $(elapsed "$start") s:"; sed 's/^/    /' "$TMP/up.txt"
"$NETNS" hostfile 2 > "$TMP/hosts"

# Where do the ranks run? Rank r must be in host r/2's namespace, with its address.
# shellcheck disable=SC2016 # expanded by each rank's shell
"$NETNS" mpirun --hostfile "$TMP/hosts" -np 4 --map-by slot sh -c \
    'echo "$OMPI_COMM_WORLD_RANK $(ip netns identify $$) $(ip -4 -o addr show dev eth0 | awk "{print \$4}")"' \
    2> "$TMP/err.txt" | sort -n > "$TMP/where.txt" || { fail "placement probe failed"; cat "$TMP/err.txt"; }
sed 's/^/    rank /' "$TMP/where.txt"
for r in 0 1 2 3; do
    h=$((r / 2))
    grep -qx "$r ${BR_NETNS_PREFIX}h$h 10.77.0.1$h/24" "$TMP/where.txt" ||
        fail "rank $r is not in namespace ${BR_NETNS_PREFIX}h$h (10.77.0.1$h)"
done
[ "$fails" -eq 0 ] && echo "ok   ranks 0,1 in ${BR_NETNS_PREFIX}h0 (10.77.0.10), ranks 2,3 in ${BR_NETNS_PREFIX}h1 (10.77.0.11)"

"$BIN" synth --preset tiny --arch bitnet --embd 1024 --heads 8 --kv-heads 4 --ff 1024 \
    --layers 3 --vocab 1030 --type tq2_0 --seed 41 -o "$TMP/m.gguf" > /dev/null
prompt=$(seq -s, 3 20)
"$BIN" run -m "$TMP/m.gguf" --tokens "$prompt" -n 5 --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"

# Runs one layout on the cluster, started by the namespace mpirun directly ("direct") or
# through bitrack-launch --hostfile with the namespace mpirun as its mpirun ("launch"),
# and checks the logits, the traffic accounting and that the traffic crossed namespaces.
check() {
    local name=$1 tp=$2 pp=$3 how=$4 before0 before1 d0 d1 t0 secs n_match cmd
    local bargs=(-m "$TMP/m.gguf" --tokens "$prompt" -n 5 --dump-logits "$TMP/out.f32" --stats)
    if [ "$how" = direct ]; then
        cmd=("$NETNS" mpirun --hostfile "$TMP/hosts" -np $((tp * pp)) --map-by slot
            "$BIN" run --tp "$tp" --pp "$pp" "${bargs[@]}")
    else
        cmd=(env BITRACK_BIN="$BIN" "$LAUNCH" --mpirun "$NETNS mpirun" --hostfile "$TMP/hosts"
            --iface 10.77.0.0/24 --bind none --tp "$tp" --pp "$pp" -- run "${bargs[@]}")
    fi
    rm -f "$TMP/out.f32"
    before0=$(tx 0) before1=$(tx 1) t0=$(now)
    if ! timeout 60 "${cmd[@]}" > "$TMP/out.txt" 2> "$TMP/err.txt"; then
        fail "$name: job failed"; cat "$TMP/err.txt"; return
    fi
    secs=$(elapsed "$t0")
    d0=$(($(tx 0) - before0)) d1=$(($(tx 1) - before1))
    if cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
        echo "ok   $name: logits identical to one process ($(stat -c %s "$TMP/out.f32") bytes), $secs s"
    else
        fail "$name: output differs from one process"
    fi
    n_match=$(grep -c '(match)' "$TMP/err.txt" || true)
    [ "$n_match" -eq $((tp * pp)) ] || fail "$name: $n_match of $((tp * pp)) ranks report traffic matching the plan"
    grep '^rank .* stats:' "$TMP/err.txt" | sort | sed 's/^/    /'
    # Both hosts' links carried the job's messages (each way at least a few KB).
    if [ "$d0" -gt 4096 ] && [ "$d1" -gt 4096 ]; then
        echo "ok   $name: crossed the namespaces: h0 eth0 sent $d0 bytes, h1 eth0 sent $d1 bytes"
    else
        fail "$name: too little traffic between namespaces (h0 sent $d0, h1 sent $d1 bytes)"
    fi
}
check "2 hosts x 2 ranks, tp 2 pp 2" 2 2 direct
check "2 hosts x 2 ranks, tp 4 pp 1" 4 1 direct
check "bitrack-launch --hostfile, tp 2 pp 2" 2 2 launch

# The shaped link: one rank per host, TP 2, both residual layouts. Where the kernel has no
# netem, the 100 us delay is emulated by the ranks' communicator (netns-cluster passes
# BITRACK_EMULATED_DELAY_US): every rank must report it, and each decoded token then costs
# at least its 4 collectives per layer x 3 layers + 1 result message x 100 us.
"$NETNS" hostfile 1 > "$TMP/hosts1"
shaping=$("$NETNS" status | sed -n 's/^shaping: //p')
for res in replicated sharded; do
    if ! timeout 60 "$NETNS" mpirun --hostfile "$TMP/hosts1" -np 2 --map-by slot "$BIN" run \
            -m "$TMP/m.gguf" --tp 2 --pp 1 --layout "$res" --tokens "$prompt" -n 5 \
            --dump-logits "$TMP/out.f32" --stats > "$TMP/out.txt" 2> "$TMP/err.txt"; then
        fail "shaped link $res: job failed"; cat "$TMP/err.txt"; continue
    fi
    cmp -s "$TMP/ref.f32" "$TMP/out.f32" || fail "shaped link $res: logits differ from one process"
    case $shaping in
        *"emulated by the ranks"*)
            n=$(grep -c "emulated link delay 100 us" "$TMP/err.txt" || true)
            [ "$n" -eq 2 ] || { fail "shaped link $res: $n of 2 ranks emulate the 100 us delay"; cat "$TMP/err.txt"; } ;;
        *netem*) ;;
        *) fail "shaped link: the delay is neither shaped nor emulated ($shaping)" ;;
    esac
    tps=$(sed -n 's/.*(\([0-9.]*\) tok\/s after the first).*/\1/p' "$TMP/err.txt")
    if awk -v t="${tps:-1e9}" 'BEGIN { exit !(t > 1e6 / (13 * 100)) }'; then
        fail "shaped link $res: $tps tok/s is faster than 13 x 100 us per token allows"
    else
        echo "ok   shaped link ($shaping), TP 2 one rank per host, $res residual: logits identical, $tps tok/s"
    fi
done

echo "$fails failures (total $(elapsed "$start") s)"
[ "$fails" -eq 0 ]
