#!/usr/bin/env bash
# `bitrack serve --http` on a synthetic model, one rank and then two ranks under mpirun
# (BR_SERVE_HTTP_LAYOUTS, default "1x1 2x1"), driven by clients nobody here wrote:
#   * the official `openai` npm package (tests/e2e/node, installed by tools/install-deps.sh)
#     streams and non-streams both endpoints;
#   * `curl -N` streams Server-Sent Events;
#   * the Python standard library makes non-streaming calls (tests/e2e/http_check.py);
# each must get exactly the text `bitrack run` prints for the same prompt and sampling (for
# chat: what the ZeroMQ protocol answers for the same messages). /metrics is parsed with
# python3-prometheus-client; on the first layout, hostile input (http_check.py hostile) and
# an API key (--api-key-file, then --auth-probes), with leak detection on for the one-rank
# server in an ASan build. `bench --openai` runs through both
# endpoints. A request log line must exist for each transport, and a sanitizer report in
# the server's log fails the test.
set -euo pipefail
BIN=${BR_BIN:?}
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY=${PY:-/usr/bin/python3}
. "$HERE/../lib/serve.sh"
br_serve_init serve_http
HPORT=$(br_free_port)
BASE="http://127.0.0.1:$HPORT"
. "$HERE/../lib/skip.sh"
br_need_python_zmq
command -v curl > /dev/null || br_skip "curl is not installed"
command -v node > /dev/null || br_skip "node is not installed (tools/install-deps.sh)"
[ -d "$HERE/node/node_modules/openai" ] ||
    br_skip "the openai npm package is not installed (tools/install-deps.sh)"
"$PY" -c 'import prometheus_client' 2> /dev/null ||
    br_skip "python3-prometheus-client is not installed"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
"$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 2 --ff 512 --vocab 1030 --ctx 2048 \
    -o "$TMP/m.gguf" > /dev/null
PROMPT="Hello, ternary world"
GREEDY=$("$BIN" run -m "$TMP/m.gguf" -n 12 --temp 0 -p "$PROMPT" 2> /dev/null)
SEEDED=$("$BIN" run -m "$TMP/m.gguf" -n 12 --temp 0.9 --seed 3 -p "$PROMPT" 2> /dev/null)
# how many tokens run generated (it stops early at an end-of-generation token)
N_GREEDY=$("$BIN" run -m "$TMP/m.gguf" -n 12 --temp 0 --ids -p "$PROMPT" 2> /dev/null | wc -w)
export N_GREEDY
rc=0

server_pid() { # the rank-0 process (mpirun's child when launched under it)
    local p=$SPID
    if [ "$(ps -o comm= -p "$p")" != bitrack ]; then p=$(pgrep -P "$SPID" -x bitrack | head -1); fi
    echo "$p"
}

first=1
for layout in ${BR_SERVE_HTTP_LAYOUTS:-1x1 2x1}; do
    echo "=== server $layout"
    tp=${layout%x*}
    pp=${layout#*x}
    # one rank: the server runs under LeakSanitizer too (an ASan build), so whatever the
    # HTTP front end allocated for these requests must be freed by its clean stop
    launcher=(env "ASAN_OPTIONS=${ASAN_OPTIONS}:detect_leaks=1")
    [ "$layout" = 1x1 ] || launcher=(mpirun --oversubscribe --bind-to none -np $((tp * pp)))
    br_serve_start "$TMP/serve.log" "${launcher[@]}" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" \
        --http "127.0.0.1:$HPORT" --http-timeout 3 --max-seqs 40 --tp "$tp" --pp "$pp" \
        --log-format json --log-file "$TMP/requests.log"
    # chat's expected answer, over the ZeroMQ protocol (the template is rendered server-side)
    CHAT=$(PYTHONPATH="$ROOT/clients/python" "$PY" -c '
import sys, bitrack_client as b
c = b.Client(sys.argv[1])
print(c.complete(messages=[{"role": "user", "content": sys.argv[2]}], max_tokens=12,
                 temperature=0)["text"], end="")' "$ADDR" "$PROMPT")
    node "$HERE/node/openai_check.js" "$BASE" none m "$PROMPT" "$GREEDY" "$SEEDED" "$CHAT" || rc=1
    # curl -N: SSE as it comes, one JSON chunk per data line, then [DONE]
    curl -sN "$BASE/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"prompt\": \"$PROMPT\", \"max_tokens\": 12, \"temperature\": 0.9, \"seed\": 3, \"stream\": true}" \
        > "$TMP/sse.txt"
    got=$("$PY" -c '
import json, os, sys
lines = [l for l in open(sys.argv[1]).read().split("\n") if l]
assert all(l.startswith("data: ") for l in lines), lines
assert lines[-1] == "data: [DONE]", lines[-1]
text = "".join(json.loads(l[6:])["choices"][0]["text"] for l in lines[:-1])
want = os.fsencode(sys.argv[2]).decode("utf-8", "replace")  # U+FFFD for invalid bytes
print("same" if text == want else repr(text), end="")' "$TMP/sse.txt" "$SEEDED") || got="(bad SSE)"
    if [ "$got" = same ]; then echo "ok   curl -N streams what bitrack run prints: $got"; else
        echo "FAIL curl -N '$got' vs run '$SEEDED'"
        rc=1
    fi
    PID=$(server_pid)
    for mode in equal metrics; do
        "$PY" "$HERE/http_check.py" $mode "$BASE" m "$PROMPT" "$GREEDY" "$CHAT" "$PID" "$TMP/requests.log" || rc=1
    done
    if [ $first = 1 ]; then
        "$PY" "$HERE/http_check.py" hostile "$BASE" m "$PROMPT" "$GREEDY" "$CHAT" "$PID" "$TMP/requests.log" || rc=1
    fi
    # bench --openai: the load generator through this API, both endpoints, no failures
    for chat in "" --chat; do
        api=openai-completions
        [ -z "$chat" ] || api=openai-chat
        if "$BIN" bench --openai "$BASE" $chat --model m --concurrency 4 --requests 16 \
            --input-len 8 --output-len 8 --no-progress --json "$TMP/bench.json" > "$TMP/bench.txt" &&
            "$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["completed"] == 16 and r["failed"] == 0 and r["output_tokens"] > 0, r
assert r["config"]["api"] == sys.argv[2] and r["ttft_ms"]["n"] == 16, r["config"]
' "$TMP/bench.json" "$api"; then
            echo "ok   bench --openai $chat: 16 requests, none failed"
        else
            echo "FAIL bench --openai $chat"
            cat "$TMP/bench.txt"
            rc=1
        fi
    done
    "$BIN" generate --server "$ADDR" -n 3 --temp 0 "$PROMPT" > /dev/null
    br_serve_stop
    br_serve_check "$TMP/serve.log" || true
    for t in http zmq; do
        if grep -q "\"transport\":\"$t\"" "$TMP/requests.log"; then echo "ok   request log has $t lines"; else
            echo "FAIL no $t line in the request log"
            rc=1
        fi
    done
    "$PY" -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    assert {"ts", "id", "transport", "client", "prompt_tokens", "output_tokens", "result"} <= set(r), r
' "$TMP/requests.log" && echo "ok   every request log line is JSON with its fields" ||
        { echo "FAIL request log lines"; rc=1; }
    rm -f "$TMP/requests.log"
    if [ $first = 1 ]; then
        echo "=== API key"
        printf 'sk-test-%s\n' "$$" > "$TMP/key"
        br_serve_start "$TMP/auth.log" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" --http "127.0.0.1:$HPORT" \
            --api-key-file "$TMP/key"
        "$PY" "$HERE/http_check.py" auth "$BASE" "sk-test-$$" 0 || rc=1
        node "$HERE/node/openai_check.js" "$BASE" "sk-test-$$" m "$PROMPT" "$GREEDY" "$SEEDED" "$CHAT" || rc=1
        br_serve_stop
        br_serve_check "$TMP/auth.log" || true
        br_serve_start "$TMP/auth.log" "$BIN" serve -m "$TMP/m.gguf" --listen "$ADDR" --http "127.0.0.1:$HPORT" \
            --api-key "sk-test-$$" --auth-probes
        "$PY" "$HERE/http_check.py" auth "$BASE" "sk-test-$$" 1 || rc=1
        br_serve_stop
        br_serve_check "$TMP/auth.log" || true
    fi
    first=0
done
exit $rc
