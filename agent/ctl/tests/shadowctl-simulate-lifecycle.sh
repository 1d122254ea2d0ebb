#!/bin/sh
# shadowctl simulate on the buckets of a run of tests/agent/integration.sh
# lifecycle that failed (four imported days of 50 s with a spike of 2000
# IOPS from second 22, then 164 live seconds: a day without the spike, as
# the test waits for one at least 20 s away, two with it, the first a
# second longer): the selector's misses blew up the seasonal forecast's
# interval, every quiet bucket's upper bound went over cheap's limit
# ("fast needed in 0 s (up to 205480 IOPS)") and fast was not released
# after the second spike.  After each switch back (three), fast must be
# released within 10 s.
# Usage: shadowctl-simulate-lifecycle.sh PATH/TO/shadowctl
. "$(dirname "$0")/common.sh"

"$ctl" simulate "$data/lifecycle-flake.csv" --column ops --interval-s 1 \
  --config "$data/lifecycle-simulate.conf" --history-rows 200 --trace --json > "$tmp/out.json" \
  || fail "simulate exited $?"
python3 - "$tmp/out.json" <<'PY' || fail "fast not released after a live spike"
import json, sys
by = {p["name"]: p for p in json.load(open(sys.argv[1]))["policies"]}
st = by["shadowtier"]
backs = [r["t"] for r in st["trace"] if r["decision"] == "switch-back"]
rels = [r["t"] for r in st["trace"] if r["decision"] == "release"]
print("shadowtier: %s s over, %d switches, switch-backs at %s, releases at %s"
      % (st["violation-s"], st["switches"], backs, rels))
assert st["violation-s"] == 0, st["violation-s"]
assert len(backs) >= 2, backs
for b in backs:
    assert any(b < r <= b + 10 for r in rels), (b, rels)
PY
