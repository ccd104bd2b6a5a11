#!/usr/bin/env bash
# The fixtures in tests/data are complete and unchanged: every file SHA256SUMS names is
# present with its recorded hash (tests/data/README.md says where each came from).
set -euo pipefail
dir="${BR_TEST_DATA:?BR_TEST_DATA must name tests/data}"
cd "$dir"
if ! out=$(sha256sum --strict -c SHA256SUMS 2>&1); then
    echo "$out" | grep -v ': OK$' >&2
    echo "test_data: tests/data is incomplete or changed (see tests/data/README.md)" >&2
    exit 1
fi
n=$(wc -l < SHA256SUMS)
echo "test_data: $n files match SHA256SUMS"
