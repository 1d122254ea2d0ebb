#!/usr/bin/env bash
# QEMU's scripts/checkpatch.pl over the project's QEMU-side files: the
# driver and schema as whole files, the glue patches as patches.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
qsrc=$repo/build/src/qemu
[ -x "$qsrc/scripts/checkpatch.pl" ] || { echo "checkpatch: run make first" >&2; exit 1; }
rc=0
cd "$qsrc"
for f in block/shadow*.[ch] qapi/block-shadow.json; do
    out=$(perl scripts/checkpatch.pl --no-tree --terse -f "$repo/$f" 2>&1) || rc=1
    echo "$out" | grep -v '^total: 0 errors, 0 warnings' | sed "s#^#$f: #" | grep -v ': $' || true
done
for p in "$repo"/patches/*.patch; do
    out=$(perl scripts/checkpatch.pl --no-tree --no-signoff --terse "$p" 2>&1) || rc=1
    echo "$out" | grep -v '^total: 0 errors, 0 warnings' | sed "s#^#$(basename "$p"): #" | grep -v ': $' || true
done
[ $rc -eq 0 ] && echo "checkpatch: clean"
exit $rc
