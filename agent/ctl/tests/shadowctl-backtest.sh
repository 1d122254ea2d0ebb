#!/bin/sh
# shadowctl backtest end to end: output, JSON shape and error messages.
# Usage: shadowctl-backtest.sh PATH/TO/shadowctl
. "$(dirname "$0")/common.sh"

printf 'ts,load\n' > "$tmp/s.csv"
i=0
while [ $i -lt 96 ]; do
  printf '%d,%d\n' $i $(( (i % 4) * 10 + 100 )) >> "$tmp/s.csv"
  i=$((i + 1))
done

"$ctl" backtest "$tmp/s.csv" --column load --period 4 --json > "$tmp/out.json" \
  || fail "backtest exited $?"
python3 - "$tmp/out.json" <<'PY' || fail "bad JSON"
import json, sys
d = json.load(open(sys.argv[1]))
names = [m["name"] for m in d["models"]]
assert names == ["naive", "snaive", "ewma", "holt", "hw", "ar", "level", "profile",
                 "median", "auto"], names
by = {m["name"]: m for m in d["models"]}
assert by["snaive"]["mase"] == 0, by["snaive"]
assert by["naive"]["mase"] > 0.9, by["naive"]
# every row on the same origins
assert len({m["forecasts"] for m in d["models"]}) == 1, d["models"]
assert d["period"] == 4 and d["chosen"] in ("profile", "hw", "median"), d
PY
"$ctl" backtest "$tmp/s.csv" --column load > "$tmp/out.txt" || fail "table exited $?"
# the calendar: 15-minute rows make a day 96 rows, more than this file has
"$ctl" backtest "$tmp/s.csv" --column load --interval-s 900 --json > "$tmp/cal.json" \
  || fail "backtest --interval-s exited $?"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["seasons"] == [], d' \
  "$tmp/cal.json" || fail "a season without a calendar period"
grep -q '^chosen: ' "$tmp/out.txt" || fail "no chosen line"

expect_error() {
  code=$1 pattern=$2
  shift 2
  "$ctl" "$@" > /dev/null 2> "$tmp/err"
  rc=$?
  [ $rc -eq "$code" ] || fail "'$*' exited $rc, expected $code"
  grep -q "$pattern" "$tmp/err" || fail "'$*' said: $(cat "$tmp/err")"
}
expect_error 1 'No such file' backtest "$tmp/missing.csv" --column load
expect_error 1 "no column 'nope'" backtest "$tmp/s.csv" --column nope
printf 'load\n1\n2\nabc\n' > "$tmp/bad.csv"
expect_error 1 "bad.csv:4: column 'load': 'abc' is not a number" \
  backtest "$tmp/bad.csv" --column load
expect_error 2 'usage' backtest "$tmp/s.csv"
expect_error 2 'unknown command' frobnicate

trace=${SHD_TRACE_DIR:-../shared/data/traces}/cp_w31_30min_features.csv
if [ -f "$trace" ]; then
  "$ctl" backtest "$trace" --column block_req_count --json > "$tmp/w31.json" \
    || fail "trace backtest exited $?"
  python3 - "$tmp/w31.json" <<'PY' || fail "trace: seasonal models do not beat naive"
import json, sys
d = json.load(open(sys.argv[1]))
by = {m["name"]: m["mase"] for m in d["models"]}
assert by["profile"] < by["naive"] and by["hw"] < by["naive"], by
assert by["auto"] < 0.8 * by["naive"], by
PY
fi
echo ok
