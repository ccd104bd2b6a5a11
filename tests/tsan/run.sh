#!/usr/bin/env bash
# The ThreadSanitizer run: builds the tsan preset (build/tsan) and runs, with every TSan
# report fatal (halt_on_error=1) and only the suppressions in tests/tsan/suppressions.txt
# (libzmq and Open MPI internals):
#   - the unit tests that start threads: engine_test (forward passes over the thread
#     pool), pool_test (kernels/pool.c alone), client_test (the C client, proto/client.c,
#     against an in-process fake server) and loadgen_test (the load generator's client
#     threads), sched_test (the serving gateway's thread and its outboxes) and
#     layout_test (TP x PP ranks as threads over worker/comm_local.c); the ones not in
#     the tree yet are simply not matched;
#     BR_TSAN_ALL=1 runs every unit test (single-threaded ones add minutes, find nothing);
#   - tests/tsan/serve.sh: one rank of `bitrack serve` (ZeroMQ front-end thread, gateway
#     thread, main thread, a 2-thread pool) under concurrent C clients and a raw ZeroMQ
#     client;
#   - tests/tsan/serve_http.sh: the same with the HTTP front end (its polling and
#     transport threads) under concurrent HTTP clients on both endpoints, the load
#     generator, a ZeroMQ client, and a stop while streams run.
# Called by tests/run; runnable alone from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs=$(nproc 2>/dev/null || echo 2)
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan/suppressions.txt"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "=== tsan: configure and build"
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs"
echo "=== tsan: unit tests"
filter=(-R '^(engine_test|pool_test|client_test|loadgen_test|sched_test|layout_test)$')
if [ "${BR_TSAN_ALL:-0}" = 1 ]; then filter=(); fi
ctest --test-dir build/tsan -L unit "${filter[@]}" -j "$jobs" --output-on-failure
echo "=== tsan: serving, one rank"
mkdir -p build/tsan/tmp
BR_BIN="$PWD/build/tsan/bitrack" BR_TMP="$PWD/build/tsan/tmp" bash tests/tsan/serve.sh
echo "=== tsan: serving over HTTP, one rank"
BR_BIN="$PWD/build/tsan/bitrack" BR_TMP="$PWD/build/tsan/tmp" bash tests/tsan/serve_http.sh
echo "=== tsan: serving with CurveZMQ (ZAP handler thread, handshake monitor)"
BR_BIN="$PWD/build/tsan/bitrack" BR_TMP="$PWD/build/tsan/tmp" bash tests/e2e/serve_curve.sh
