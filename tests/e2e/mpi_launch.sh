#!/usr/bin/env bash
# launch/bitrack-launch builds the expected mpirun command line (local and hostfile
# modes, checked with --dry-run), refuses a layout that does not match the ranks, and
# really runs 2x1 and 2x2 jobs on this machine whose dumped logits are byte-identical
# to one process's.
set -euo pipefail
BIN=${BR_BIN:?}
HERE=$(cd "$(dirname "$0")" && pwd)
LAUNCH=$HERE/../../launch/bitrack-launch
TMP=${BR_TMP:-/tmp}/mpilaunch.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
export BITRACK_BIN=$BIN OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# The command line must hold every WORD given (as whole words, in this order for pairs).
expect_words() {
    local what=$1 line=" $2 " w
    shift 2
    for w in "$@"; do
        case $line in *" $w "*) ;; *) fail "$what: missing '$w' in: $2"; return ;; esac
    done
    echo "ok   $what"
}

prompt=1,2,3,4,5,6,7,8
line=$("$LAUNCH" --local 4 --tp 2 --pp 2 --dry-run -- run -m "$TMP/m.gguf" --tokens "$prompt" -n 5)
echo "dry run: $line"
cores=$(nproc)
bind="--bind-to none"; [ "$cores" -ge 4 ] && bind="--bind-to core"
root=""; [ "$(id -u)" -eq 0 ] && root="--allow-run-as-root"
expect_words "local 2x2 command line" "$line" "mpirun -np 4" "--oversubscribe" \
    "--mca btl vader,tcp,self" "--map-by slot" "$bind" "$BIN run --tp 2 --pp 2 -m $TMP/m.gguf" \
    "--tokens $prompt -n 5" ${root:+"$root"}

printf '# rack\nnodeA slots=2\nnodeB slots=2   # second host\n' > "$TMP/hosts"
line=$("$LAUNCH" --hostfile "$TMP/hosts" --tp 2 --pp 2 --iface eth1 --dry-run -- run -m x.gguf -p hi)
echo "dry run: $line"
expect_words "hostfile 2x2 command line" "$line" "mpirun -np 4" "--hostfile $TMP/hosts" \
    "--mca btl tcp,self" "--map-by slot" "--bind-to core" "--mca btl_tcp_if_include eth1" \
    "--mca oob_tcp_if_include eth1" "$BIN run --tp 2 --pp 2 -m x.gguf -p hi"
case $line in *oversubscribe*) fail "hostfile mode must not oversubscribe: $line" ;; esac

if "$LAUNCH" --local 3 --tp 2 --pp 2 --dry-run -- run -m x.gguf > /dev/null 2> "$TMP/err.txt"; then
    fail "3 ranks for a 2x2 layout was accepted"
elif grep -q 'must be equal' "$TMP/err.txt"; then
    echo "ok   2x2 on 3 ranks refused: $(cat "$TMP/err.txt")"
else
    fail "2x2 on 3 ranks: unexpected message: $(cat "$TMP/err.txt")"
fi
printf 'nodeA slots=2\nnodeB\n' > "$TMP/noslots"
if "$LAUNCH" --hostfile "$TMP/noslots" --tp 2 --pp 1 --dry-run -- run > /dev/null 2> "$TMP/err.txt"; then
    fail "a hostfile line without slots= was accepted"
else
    echo "ok   hostfile line without slots= refused: $(cat "$TMP/err.txt")"
fi
printf 'nodeA slots=3\nnodeB slots=1\n' > "$TMP/uneven"
"$LAUNCH" --hostfile "$TMP/uneven" --tp 2 --pp 2 --dry-run -- run -m x.gguf > /dev/null 2> "$TMP/err.txt"
if grep -q 'splits a TP group' "$TMP/err.txt"; then
    echo "ok   TP group split across hosts is warned about"
else
    fail "no warning for a TP group split across hosts"
fi

"$BIN" synth --preset tiny --arch bitnet --embd 1024 --heads 8 --kv-heads 4 --ff 1024 \
    --layers 3 --vocab 1030 --type tq2_0 --seed 31 -o "$TMP/m.gguf" > /dev/null
"$BIN" run -m "$TMP/m.gguf" --tokens "$prompt" -n 5 --dump-logits "$TMP/ref.f32" > "$TMP/ref.txt"
for layout in 2x1 2x2; do
    tp=${layout%x*} pp=${layout#*x}
    rm -f "$TMP/out.f32"
    t0=$(now)
    if ! timeout 120 "$LAUNCH" --local $((tp * pp)) --tp "$tp" --pp "$pp" -- run -m "$TMP/m.gguf" \
            --tokens "$prompt" -n 5 --dump-logits "$TMP/out.f32" > "$TMP/out.txt" 2> "$TMP/err.txt"; then
        fail "local $layout: job failed"; cat "$TMP/err.txt"; continue
    fi
    if cmp -s "$TMP/ref.f32" "$TMP/out.f32" && cmp -s "$TMP/ref.txt" "$TMP/out.txt"; then
        echo "ok   local $layout: logits identical to one process ($(stat -c %s "$TMP/out.f32") bytes), $(elapsed "$t0") s"
    else
        fail "local $layout: output differs from one process"
    fi
done

# --restart re-runs a failing job and says why
if "$LAUNCH" --local 2 --tp 2 --pp 1 --restart 1 -- run -m "$TMP/missing.gguf" --tokens 1 \
        > /dev/null 2> "$TMP/err.txt"; then
    fail "a job on a missing model succeeded"
elif grep -q 'restart 1 of 1' "$TMP/err.txt" && grep -q 'all 1 restarts used' "$TMP/err.txt"; then
    echo "ok   --restart 1: failed job re-run once, then reported"
else
    fail "--restart: unexpected messages"; cat "$TMP/err.txt"
fi
echo "$fails failures"
[ "$fails" -eq 0 ]
