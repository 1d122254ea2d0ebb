#!/usr/bin/env bash
# make demo: the main job, narrated in the terminal.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# DEMO=driver shows the driver on its own, without the agent
if [ "${DEMO:-agent}" = driver ]; then
    exec /usr/bin/python3 "$repo/scripts/demo-driver.py"
fi
exec /usr/bin/python3 "$repo/scripts/demo-agent.py"
