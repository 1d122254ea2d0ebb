#!/usr/bin/env bash
# make fuzz: run each of the agent's libFuzzer targets for FUZZ_SECONDS
# (default 600) over its seed corpus; new inputs stay in build/agent-fuzz.
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
echo "fuzz: done, no crash"
