#!/usr/bin/env bash
# What a newcomer gets: clones this repository's committed HEAD into an empty temporary
# folder (nothing beside the clone) and runs README.md's two commands there, as written:
# the first ```sh block of "Quick start" (install, build, a local cluster answering a
# prompt) and the next one (the tests). Both must exit 0, and the quick start must leave
# no file behind in its temporary folder (TMPDIR).
#   tools/fresh-clone-check.sh           the README's test command as written (everything)
#   tools/fresh-clone-check.sh --quick   `tests/run quick` instead (what CI runs)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The README's fenced sh blocks under "## Quick start", in order.
blocks=$(awk '/^## /{in_qs = ($0 ~ /^## Quick start/)} in_qs && /^```sh$/{b++; inb = 1; next}
              /^```/{inb = 0; next} in_qs && inb {print b "\t" $0}' "$src/README.md")
first=$(printf '%s\n' "$blocks" | awk -F'\t' '$1 == 1 {print $2}')
tests=$(printf '%s\n' "$blocks" | awk -F'\t' '$1 == 2 {print $2}')
[ -n "$first" ] && [ -n "$tests" ] || { echo "fresh-clone: README.md's Quick start lacks its two sh blocks" >&2; exit 1; }
if [ "$quick" = 1 ]; then
    [ "$tests" = "tests/run" ] || { echo "fresh-clone: the README's test command changed ($tests); update --quick" >&2; exit 1; }
    tests="tests/run quick"
fi
mkdir "$tmp/empty"
git clone -q "$src" "$tmp/empty/bitrack"
cd "$tmp/empty/bitrack"
echo "=== fresh clone of $(git rev-parse --short HEAD) in $tmp/empty (nothing beside it)"
echo "=== README command 1: $first"
# Its own temporary folder: whatever the quick start leaves there was left behind.
mkdir "$tmp/t"
TMPDIR="$tmp/t" BITRACK_PORT=${BITRACK_PORT:-$((30000 + $$ % 20000))} bash -c "$first" < /dev/null
left=$(find "$tmp/t" -mindepth 1 -maxdepth 1)
if [ -n "$left" ]; then
    echo "fresh-clone: the quick start left files behind:" >&2
    echo "$left" >&2
    exit 1
fi
echo "=== README command 2: $tests"
bash -c "$tests" < /dev/null
echo "=== fresh clone: both README commands exit 0"
