# Sourced by the e2e tests. br_skip REASON: a test that cannot run on this machine says
# why and exits 0 (ctest counts it as passed). Where every dependency is known to be
# installed (BR_STRICT=1, which tests/run and so CI set), a missing one is a failure
# instead: a check that silently stopped running must not read as a pass.
br_skip() {
    if [ "${BR_STRICT:-0}" = 1 ]; then
        echo "FAIL cannot run (BR_STRICT=1): $*"
        exit 1
    fi
    echo "SKIP: $*"
    exit 0
}

# The Python clients' packages (Debian: python3-zmq, python3-msgpack).
br_need_python_zmq() {
    "${PY:-/usr/bin/python3}" -c 'import zmq, msgpack' 2> /dev/null ||
        br_skip "python3-zmq / python3-msgpack are not installed"
}
