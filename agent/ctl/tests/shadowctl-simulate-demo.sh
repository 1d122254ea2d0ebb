#!/bin/sh
# shadowctl simulate on make demo's trace and tier model (a daily spike of
# a few seconds in days of 48 s; two past days as history; the live part
# starting at a day's first second): shadowtier meets every spike, costs
# less than always-fast and releases fast after each spike.
# Usage: shadowctl-simulate-demo.sh PATH/TO/shadowctl
. "$(dirname "$0")/common.sh"

"$ctl" simulate "$data/demo-trace.csv" --column ops --interval-s 1 \
  --config "$data/demo-simulate.conf" --history-rows 96 --json > "$tmp/out.json" \
  || fail "simulate exited $?"
python3 - "$tmp/out.json" <<'PY' || fail "shadowtier on make demo's trace"
import json, sys
by = {p["name"]: p for p in json.load(open(sys.argv[1]))["policies"]}
st, fast = by["shadowtier"], by["always-fast"]
print("shadowtier: %s s over, cost %.3g (always-fast %.3g), %d switches, %d releases"
      % (st["violation-s"], st["cost"], fast["cost"], st["switches"], st["releases"]))
assert st["violation-s"] == 0, st
assert st["cost"] < 0.95 * fast["cost"], (st["cost"], fast["cost"])
assert st["switches"] >= 4 and st["releases"] >= 2, st
PY
