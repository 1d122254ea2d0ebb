#!/usr/bin/env bash
# make bench: every benchmark; JSON results and a table in build/bench/.
# BENCH_QUICK=1 runs shorter versions.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$repo/build/bench"
quick=()
[ -n "${BENCH_QUICK:-}" ] && quick=(--quick)
cd "$repo/bench"
/usr/bin/python3 driver_bench.py "${quick[@]}" "$@" | tee "$repo/build/bench/driver.txt"
