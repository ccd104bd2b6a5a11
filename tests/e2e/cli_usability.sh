#!/usr/bin/env bash
# The command line explains itself and fails clearly: --version, `help CMD` equal to
# `CMD --help` with every option's default, bad numbers named by their flag, host:port
# addresses, fast failure without a server, stdin prompts, ids without streaming, valid
# JSON from tokenize/info/plan, the same sampling defaults in run, generate and the
# server, llama.cpp's spellings for run, and chat's local commands.
set -uo pipefail
BIN=${BR_BIN:?}
TMP=${BR_TMP:-/tmp}/cliuse.$$
mkdir -p "$TMP"
. "$(dirname "$0")/../lib/port.sh"
PORT=$(br_free_port)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2> /dev/null; wait 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
fails=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
json_ok() { /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)' 2> /dev/null; }

"$BIN" synth --preset tiny --embd 512 --heads 8 --kv-heads 4 --ff 1024 --layers 2 --vocab 1024 \
    --ctx 256 -o "$TMP/m.gguf" 2> /dev/null || { echo "FAIL synth"; exit 1; }
M=$TMP/m.gguf

# --- --version: version, git revision, compiler, kernels
v=$("$BIN" --version 2>&1) && grep -q '^bitrack [0-9]\+\.[0-9]\+\.[0-9]\+ (git [^)]\+)' <<< "$v" &&
    grep -q '^compiler: ' <<< "$v" && grep -q '^kernels: [a-z0-9-]\+ (this CPU' <<< "$v" &&
    ok "--version: $(tr '\n' ';' <<< "$v")" || fail "--version: $v"

# --- help CMD == CMD --help; every option listed with its default; exit 0
for cmd in info synth run plan serve generate chat tokenize keygen shard bench "bench model" "bench scale" \
    "bench scale net" "bench kernels"; do
    a=$("$BIN" help $cmd 2>&1); ra=$?
    b=$("$BIN" $cmd --help 2>&1); rb=$?
    if [ $ra -ne 0 ] || [ $rb -ne 0 ] || [ "$a" != "$b" ] || [ -z "$a" ]; then
        fail "help $cmd (exit $ra) vs $cmd --help (exit $rb) differ or fail"
        continue
    fi
    # every option line (starting with -) carries a default, except -h/--help itself
    nodef=$(grep -E '^  +-' <<< "$a" | grep -v -- '--help' | grep -cv 'default' || true)
    # a line may wrap: count the options and the "(default" texts instead
    nopt=$(grep -cE '^  +-' <<< "$a"); ndef=$(grep -o '(default' <<< "$a" | wc -l)
    if [ "$ndef" -ge $((nopt - 1)) ] && [ "$nopt" -ge 2 ]; then
        ok "help $cmd: $((nopt - 1)) options, each with a default"
    else
        fail "help $cmd: $nopt options but $ndef defaults ($nodef lines without)"
    fi
done
"$BIN" bench kernels --help > /dev/null && ok "bench kernels --help exits 0" ||
    fail "bench kernels --help exit $?"

# --- numbers are validated and the flag is named
bad() { # bad EXPECTED_TEXT ARGS...: exit 2 and one line naming the flag
    local want=$1
    shift
    out=$("$BIN" "$@" 2>&1 > /dev/null)
    rc=$?
    if [ $rc -eq 2 ] && grep -qF -- "$want" <<< "$out" && [ "$(wc -l <<< "$out")" -eq 1 ]; then
        ok "$* -> $out"
    else
        fail "$* -> exit $rc: $out (want '$want')"
    fi
}
bad "--temp: 'abc' is not a number" run -m "$M" -p x --temp abc
bad "--top-k: '1.5' is not a whole number" run -m "$M" -p x --top-k 1.5
bad "'-ngl'" run -m "$M" -p x -ngl 0
bad "--temp: 'abc'" generate --server 127.0.0.1:$PORT --temp abc x
bad "--top-p: 2 is out of range" chat -m "$M" --top-p 2
bad "--max-seqs: 'x'" serve -m "$M" --max-seqs x
bad "--mem-per-rank: '16X'" plan -m "$M" --mem-per-rank 16X
bad "--listen: address '127.0.0.1'" serve -m "$M" --listen 127.0.0.1
bad "unknown option '--nope'" run -m "$M" -p x --nope

# --- run: llama.cpp spellings, all cores by default
printf 'Once upon' > "$TMP/p.txt"
a=$("$BIN" run -m "$M" -p "Once upon" -n 6 --ids --temp 0.7 --seed 3 2> /dev/null)
b=$("$BIN" run -m "$M" -f "$TMP/p.txt" -n 6 --ids --temp 0.7 -s 3 -c 64 2> /dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && ok "run -f FILE -s S -c N equals -p TEXT --seed S: $a" ||
    fail "run -f/-s/-c: '$b' vs '$a'"
n=$("$BIN" run -m "$M" -p "Once upon" -n -1 -c 40 --ids --ignore-eos 2> /dev/null | wc -w)
np=$("$BIN" tokenize -m "$M" --bos "Once upon" | tr -cd ',' | wc -c)
[ "$n" -eq $((40 - np - 1)) ] && ok "run -n -1 -c 40: $n tokens fill the context" ||
    fail "run -n -1 -c 40 generated $n tokens (prompt $((np + 1)))"
cores=$(nproc)
"$BIN" run -m "$M" -p x -n 2 2> "$TMP/run.err" > /dev/null
grep -q " $cores threads x 1 ranks" "$TMP/run.err" && ok "run uses all $cores cores by default" ||
    fail "run's default threads: $(cat "$TMP/run.err")"

# --- no server: an error within the connect timeout, naming the address
t0=$(date +%s%N)
out=$("$BIN" generate --server 127.0.0.1:$PORT x 2>&1 > /dev/null)
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $rc -eq 1 ] && [ $ms -lt 8000 ] && grep -q "tcp://127.0.0.1:$PORT" <<< "$out" &&
    ok "generate without a server: exit 1 after $ms ms: $out" ||
    fail "generate without a server: exit $rc after $ms ms: $out"
t0=$(date +%s%N)
out=$("$BIN" generate --server 127.0.0.1:$PORT --connect-timeout 700 x 2>&1 > /dev/null)
ms=$((($(date +%s%N) - t0) / 1000000))
[ $ms -lt 3000 ] && grep -q "within 700 ms" <<< "$out" &&
    ok "--connect-timeout 700: failed after $ms ms" || fail "--connect-timeout 700: $ms ms: $out"

# --- a server on host:port (no tcp://)
"$BIN" serve -m "$M" --listen 127.0.0.1:$PORT -t 1 2> "$TMP/serve.log" &
SPID=$!
for _ in $(seq 100); do grep -q "ready on" "$TMP/serve.log" && break; sleep 0.1; done
grep -q "ready on tcp://127.0.0.1:$PORT" "$TMP/serve.log" && ok "serve --listen 127.0.0.1:$PORT" ||
    { fail "serve --listen host:port: $(cat "$TMP/serve.log")"; exit 1; }
S=127.0.0.1:$PORT

# the same defaults everywhere: run, generate (the protocol's) agree with no options given
r=$("$BIN" run -m "$M" -p "Once upon" -n 8 --ids 2> /dev/null)
g=$("$BIN" generate --server $S -n 8 --ids "Once upon" 2> /dev/null)
[ -n "$r" ] && [ "$r" = "$g" ] && ok "run and generate agree by default: $r" ||
    fail "default sampling: run '$r' vs generate '$g'"
# ... and the Python client, which sends no sampling fields (the server's defaults)
if /usr/bin/python3 -c 'import zmq, msgpack' 2> /dev/null; then
    py=$(PYTHONPATH="$(dirname "$0")/../../clients/python" /usr/bin/python3 -c '
import sys
from bitrack_client import Client
with Client(sys.argv[1]) as c:
    print(" ".join(str(e["token"]) for e in c.generate(prompt="Once upon", max_tokens=8)
                   if e["type"] == "token"))' "$S")
    [ "$py" = "$r" ] && ok "the Python client agrees by default: $py" ||
        fail "default sampling: Python client '$py' vs run '$r'"
fi
# --no-stream --ids prints the ids; "-" reads the prompt from stdin
ns=$("$BIN" generate --server $S -n 8 --ids --no-stream "Once upon" 2> /dev/null)
[ "$ns" = "$g" ] && ok "generate --no-stream --ids: $ns" || fail "--no-stream --ids: '$ns' vs '$g'"
si=$(printf 'Once upon' | "$BIN" generate --server $S -n 8 --ids - 2> /dev/null)
[ "$si" = "$g" ] && ok "generate - reads the prompt from stdin" || fail "generate -: '$si' vs '$g'"

# --- JSON outputs
printf 'caf\xc3\xa9 \xe2\x98\x83 \xff\xfe' > "$TMP/bytes.txt"
for src in "-m $M" "--server $S"; do
    out=$("$BIN" tokenize $src --verbose - < "$TMP/bytes.txt")
    json_ok <<< "$out" && ok "tokenize $src --verbose: valid JSON" ||
        fail "tokenize $src --verbose: not JSON: $out"
done
l=$("$BIN" tokenize -m "$M" "Once upon")
s=$("$BIN" tokenize --server $S "Once upon")
[ "$l" = "$s" ] && ok "tokenize --server equals local: $s" || fail "tokenize --server '$s' vs '$l'"
out=$("$BIN" info -m "$M" --json --tensors)
/usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["n_embd"]==512 and d["n_layer"]==2 and len(d["tensors"])>0' <<< "$out" &&
    ok "info --json" || fail "info --json: $out"
out=$("$BIN" plan -m "$M" --tp 2 --pp 2 --json)
/usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["ranks"]==4 and len(d["parts"])==4' <<< "$out" &&
    ok "plan --json" || fail "plan --json: $out"

# --- chat: /help, /reset, /exit handled locally (a pipe, not a terminal)
out=$(printf 'hi\n/help\n/reset\n/nope\n/exit\nnever sent\n' |
    "$BIN" chat --server $S -n 4 2> "$TMP/chat.err")
replies=$(wc -l <<< "$out")
[ "$replies" -eq 1 ] && grep -q "/reset start over" "$TMP/chat.err" &&
    grep -q "unknown command /nope" "$TMP/chat.err" &&
    ok "chat: one reply; /help, /reset, /nope, /exit stayed local" ||
    fail "chat: $replies replies; stderr: $(cat "$TMP/chat.err")"
for src in "-m $M" "--server $S"; do
    out=$("$BIN" chat $src --chat-template nosuch < /dev/null 2>&1)
    rc=$?
    [ $rc -eq 1 ] && grep -q "unknown chat template" <<< "$out" &&
        ! grep -q "type a message" <<< "$out" &&
        ok "chat $src: a bad template fails before the banner" ||
        fail "chat $src bad template: exit $rc: $out"
done
# on a terminal: libedit recalls the previous line with the up arrow
/usr/bin/python3 - "$BIN" "$M" << 'EOF' && ok "chat on a terminal: history recall" || fail "chat: no line history on a terminal"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "chat", "-m", sys.argv[2], "-n", "2"])
def read_for(t):
    out, end = b"", time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out
read_for(2)
os.write(fd, b"zebra\r")
read_for(2)
os.write(fd, b"\x1b[A")  # up arrow: the previous line comes back for editing
shown = read_for(1.5)
os.write(fd, b"\x15/exit\r")  # ^U clears the line
read_for(1)
os.kill(pid, 9)
os.waitpid(pid, 0)
sys.exit(0 if b"zebra" in shown and b"[A" not in shown else 1)
EOF

[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all CLI checks passed"
