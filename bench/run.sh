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
# write-back: 4 KiB writes at queue depth 1 on the fast tier, async against
# the fast tier alone and sync (build/bench/writeback.json)
[ $# -eq 0 ] && /usr/bin/python3 writeback_bench.py "${quick[@]}" | tee "$repo/build/bench/writeback.txt"
# the verify of a permanent move: its rate against the source tier's, and
# the guest's throughput while it runs (build/bench/verify.json)
[ $# -eq 0 ] && /usr/bin/python3 verify_bench.py "${quick[@]}" | tee "$repo/build/bench/verify.txt"
if [ $# -eq 0 ]; then
    # RBD tiers on a throwaway Ceph cluster: pre-warm rate against rbd
    # bench on the same pool, reads through the node against the rbd node
    /usr/bin/python3 rbd_bench.py "${quick[@]}" | tee "$repo/build/bench/rbd.txt"
    # The agent's cost per disk, against simulated QMP peers
    meson test -C "$repo/build/agent-build" --suite bench -v > "$repo/build/bench/agent.txt" 2>&1 ||
        { tail -n 20 "$repo/build/bench/agent.txt"; exit 1; }
    cp "$repo/build/agent-build/bench-agent.json" "$repo/build/bench/agent.json"
    grep -iE 'per disk|disks per core' "$repo/build/bench/agent.txt" | head -n 5 || true
    echo "bench: agent results in build/bench/agent.json"
    # Forecasting and tiering over the real traces (skipped without them):
    # backtests and shadowctl simulate per series, the targets met or missed
    /usr/bin/python3 "$repo/bench/policy_bench.py" --out "$repo/build/bench/policy.json" |
        tee "$repo/build/bench/policy.txt"
fi
