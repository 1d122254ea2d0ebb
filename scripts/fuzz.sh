#!/usr/bin/env bash
# make fuzz: run each of the agent's libFuzzer targets for FUZZ_SECONDS
# (default 600) over its seed corpus; new inputs stay in build/agent-fuzz.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/build-agent.sh --fuzz
secs=${FUZZ_SECONDS:-600}
for f in config qmp; do
    echo "fuzz: $f for $secs s"
    mkdir -p "build/agent-fuzz/fuzz-corpus-$f"
    "build/agent-fuzz/agent/fuzz-$f" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="build/agent-fuzz/fuzz-$f-" \
        "build/agent-fuzz/fuzz-corpus-$f" "tests/agent/fuzz/corpus-$f" 2>&1 | tail -n 3
done
echo "fuzz: done, no crash"
