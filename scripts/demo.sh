#!/usr/bin/env bash
# make demo: the main job, narrated in the terminal.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
exec /usr/bin/python3 "$repo/scripts/demo-driver.py"
