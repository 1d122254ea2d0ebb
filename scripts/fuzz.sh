#!/usr/bin/env bash
# make fuzz: run each of the agent's libFuzzer targets for FUZZ_SECONDS
# (default 600) over its seed corpus; new inputs stay in build/agent-fuzz.
# Then the QMP fuzzer of the shadow driver for FUZZ_SECONDS, from a seed
# that changes with every run (QMP_FUZZ_SEED to choose it); its aborts and
# hangs are saved, minimized, in build/fuzz/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/build-agent.sh --fuzz
secs=${FUZZ_SECONDS:-600}
# each target lives beside its layer: LAYER/tests/fuzz-NAME.c, corpus-NAME/
for t in config/config qemu/qmp; do
    layer=${t%/*} f=${t#*/}
    out=build/agent-fuzz/agent/$layer/tests
    echo "fuzz: $f for $secs s"
    mkdir -p "$out/fuzz-corpus-$f"
    "$out/fuzz-$f" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$out/fuzz-$f-" \
        "$out/fuzz-corpus-$f" "agent/$layer/tests/corpus-$f" 2>&1 | tail -n 3
done
seed=${QMP_FUZZ_SEED:-$(( $(date +%s) % 100000 * 1000 ))}
echo "fuzz: shadow driver over QMP for $secs s, seeds from $seed"
mkdir -p build/fuzz
if ! /usr/bin/python3 tests/fuzz/shadow-qmp-fuzz.py --seconds "$secs" \
        --seed-base "$seed" --steps "${QMP_FUZZ_STEPS:-60}" --jobs 2 \
        --minimize-new > build/fuzz/fuzz.log 2>&1; then
    grep -E '^not ok|^# (NEW|QMP fuzz)' build/fuzz/fuzz.log | cut -c1-200
    echo "fuzz: QMP fuzz of the shadow driver found aborts or hangs, see build/fuzz/fuzz.log"
    exit 1
fi
tail -n 1 build/fuzz/fuzz.log
echo "fuzz: done, no crash"
