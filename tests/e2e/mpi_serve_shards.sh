#!/usr/bin/env bash
# Serving from shard files: `bitrack shard` cuts a model for TP=2 x PP=2, `mpirun -np 4
# bitrack serve -m DIR --tp 2 --pp 2` serves it, and tests/e2e/serve_check.py checks the
# server against `bitrack run` on the original file (streams equal for the same prompt,
# seed and sampling, 32 concurrent clients dealt into pipeline micro-batches, cancel,
# malformed messages); tests/e2e/sample_check.py checks that sampling on the last stage's
# vocabulary slices (candidates only) equals sampling the full logits, for greedy,
# temperature, top-k/top-p/min-p, logit bias and logprobs. `bitrack info` describes each
# rank file. A sanitizer report fails the test.
set -euo pipefail
BIN=${BR_BIN:?}
. "$(dirname "$0")/../lib/serve.sh"
br_serve_init mpiserveshards
. "$(dirname "$0")/../lib/skip.sh"
br_need_python_zmq
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
"$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 --ctx 256 \
    --layers 4 -o "$TMP/m.gguf"
"$BIN" shard -m "$TMP/m.gguf" --tp 2 --pp 2 -o "$TMP/shards" 2> /dev/null
rc=0
# info describes the shards: rank, layout, part and the source checksum
sum=$("$BIN" info -m "$TMP/shards/rank-0.gguf" | sed -n 's/^source: *checksum \([0-9a-f]*\),.*/\1/p')
for r in 0 1 2 3; do
    out=$("$BIN" info -m "$TMP/shards/rank-$r.gguf")
    if grep -q "^shard: *rank $r of a 2x2 (tp x pp) layout: stage $((r / 2)), tp rank $((r % 2))" <<< "$out" &&
       grep -q "^source: *checksum $sum," <<< "$out" && [ -n "$sum" ] &&
       grep -q "^plan: *matches" <<< "$out"; then
        echo "ok   info describes rank-$r.gguf: $(grep '^part:' <<< "$out")"
    else
        echo "FAIL info on rank-$r.gguf:"; echo "$out"; rc=1
    fi
done
"$BIN" info -m "$TMP/shards/rank-3.gguf" | grep "^head rows: *vocabulary 768-1029" > /dev/null ||
    { echo "FAIL info: rank 3 is not described as holding head rows 768-1029"; rc=1; }

br_serve_start "$TMP/serve.log" mpirun --oversubscribe --bind-to none -np 4 "$BIN" serve \
    -m "$TMP/shards" --listen "$ADDR" --max-seqs 40 --client-timeout 2 --tp 2 --pp 2
/usr/bin/python3 "$(dirname "$0")/serve_check.py" "$ADDR" "$BIN" "$TMP/m.gguf" 256 || rc=1
/usr/bin/python3 "$(dirname "$0")/sample_check.py" "$ADDR" "$BIN" "$TMP/m.gguf" || rc=1
a=$("$BIN" generate --server "$ADDR" --ids -n 12 --temp 0.9 --seed 3 "Hello, ternary world")
b=$("$BIN" run -m "$TMP/m.gguf" --ids -n 12 --temp 0.9 --seed 3 -p "Hello, ternary world" 2>/dev/null)
if [ "$a" = "$b" ]; then echo "ok   generate from the shards equals run on the file: $a"; else echo "FAIL generate '$a' vs run '$b'"; rc=1; fi
br_serve_stop
br_serve_check "$TMP/serve.log" || true
exit $rc
