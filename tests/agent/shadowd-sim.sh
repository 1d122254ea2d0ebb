#!/usr/bin/env bash
# shadowd end to end against a simulated QMP peer (qmp-sim), no QEMU:
# configuration errors, the control socket commands through shadowctl
# (status contract, history, forecast, prewarm, switch, pause/resume),
# a second shadowd refused on the live control socket, a reconnect after
# the peer restarts, and a clean stop.
#
#   shadowd-sim.sh SHADOWD SHADOWCTL QMP-SIM
set -uo pipefail
shadowd=$1 ctl_bin=$2 sim=$3
dir=$(mktemp -d /tmp/shd-sim.XXXXXX)
sim_pid= agent_pid=
# the last lines, then the last ones that are not the policy's per-sample debug
fail() {
    echo "FAIL: $*"
    tail -30 "$dir/shadowd.log" 2> /dev/null
    echo "-- without debug lines:"
    grep -v " debug: " "$dir/shadowd.log" 2> /dev/null | tail -30
    exit 1
}
stop() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2> /dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
}
trap 'stop "$agent_pid"; stop "$sim_pid"; rm -rf "$dir"' EXIT
trap 'exit 1' INT TERM
command -v python3 > /dev/null || { echo "SKIP: no python3"; exit 77; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
ctl() { "$ctl_bin" --control "$dir/control.sock" "$@"; }

# a bad configuration names the line
printf '[shadowd]\ninterval = soon\n' > "$dir/bad.conf"
msg=$("$shadowd" --config "$dir/bad.conf" 2>&1); rc=$?
[ "$rc" -eq 2 ] || fail "bad config: exit $rc"
[ "$msg" = "shadowd: $dir/bad.conf:2: [shadowd] interval: 'soon' is not a number" ] ||
    fail "bad config message: $msg"

start_sim() {
    # the start of the load cycle, far from its spike (200-230 s): the
    # policy's own switches stay out of the operator's (SHD_SIM_START
    # picks another point of the cycle)
    "$sim" --dir "$dir" --disks 1 --start "${SHD_SIM_START:-0}" &
    sim_pid=$!
    for _ in $(seq 50); do [ -S "$dir/qmp-0.sock" ] && return 0; sleep 0.1; done
    fail "qmp-sim did not start"
}
start_sim
cat > "$dir/shadowd.conf" << EOF2
[shadowd]
interval = 0.2
control = $dir/control.sock
state = $dir/history.db
metrics-port = 0
min-dwell = 0

[tier:cheap]
cost-gib-month = 0.02

[tier:fast]
cost-gib-month = 0.12

[disk:sim]
qmp = $dir/qmp-0.sock
node = sh0
tier.cheap = tier-a
tier.fast = tier-b
slo-latency-ms = 5
chunk-size = 65536
EOF2
"$shadowd" --config "$dir/shadowd.conf" --check > /dev/null || fail "--check"
# systemd's readiness protocol: READY=1 on the notify socket
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(10)
open(sys.argv[2], "w").write(s.recv(256).decode())
' "$dir/notify.sock" "$dir/notified" &
notify_pid=$!
for _ in $(seq 50); do [ -S "$dir/notify.sock" ] && break; sleep 0.1; done
NOTIFY_SOCKET=$dir/notify.sock "$shadowd" --config "$dir/shadowd.conf" -v > "$dir/shadowd.log" 2>&1 &
agent_pid=$!
wait "$notify_pid"
[ "$(cat "$dir/notified" 2> /dev/null)" = READY=1 ] || fail "no READY=1 on NOTIFY_SOCKET"

wait_for() {    # SECONDS EXPR-ON-STATUS
    local i
    for i in $(seq $(($1 * 10))); do
        [ "$(ctl status --json 2> /dev/null | json "$2" 2> /dev/null)" = True ] && return 0
        sleep 0.1
    done
    return 1
}
wait_for 10 "d[0]['connected'] and d[0]['samples'] >= 5" || fail "no samples"

# the DESIGN contract of status --json
ctl status --json | json "sorted(k for k in ('name', 'active-tier', 'load', 'forecast', 'last-decision') if k in d[0]) == ['active-tier', 'forecast', 'last-decision', 'load', 'name'] and d[0]['name'] == 'sim' and 'reason' in d[0]['last-decision'] and d[0]['load']['iops'] > 0" |
    grep -qx True || fail "status --json contract"
ctl status | grep -q '^sim: on ' || fail "status text"

# a second shadowd on the same control socket (and nothing else shared):
# refused, the first untouched
sed 's#^state = .*#state =#' "$dir/shadowd.conf" > "$dir/second.conf"
msg=$(timeout 10 "$shadowd" --config "$dir/second.conf" 2>&1); rc=$?
[ "$rc" -eq 1 ] || fail "a second shadowd on a live control socket: exit $rc"
grep -q "control socket $dir/control.sock: another shadowd is listening on it" <<< "$msg" ||
    fail "a second shadowd: $msg"
ctl status sim > /dev/null || fail "the first shadowd lost its control socket"

# manual switch reaches the node, and the event comes back
before=$(ctl status --json | json "d[0]['active-tier']")
target=fast; [ "$before" = fast ] && target=cheap
ctl switch sim "$target" > /dev/null || fail "switch"
wait_for 5 "d[0]['active-tier'] == '$target'" || fail "switch to $target not done"
grep -q "switched tier-. -> tier-., guest I/O paused 0.100 ms" "$dir/shadowd.log" ||
    fail "SHADOW_SWITCHED not logged"
ctl history sim --decisions --json | json "any(e['kind'] == 'switch-manual' for e in d)" |
    grep -qx True || fail "manual switch not in history"
ctl switch sim nope 2> "$dir/err" && fail "switch to an unknown tier succeeded"
grep -q "disk sim has no tier 'nope'" "$dir/err" || fail "unknown tier message"
ctl status nope 2> "$dir/err" && fail "status of an unknown disk succeeded"

ctl prewarm sim cheap --json | json "d['state'] in ('synced', 'active') and d['eta-s'] == 0" |
    grep -qx True || fail "prewarm"
ctl forecast sim --steps 5 --json | json "len(d[0]['forecast']) == 5" | grep -qx True ||
    fail "forecast"
ctl history sim --since 1m --resolution full --json | json "len(d) >= 5" | grep -qx True ||
    fail "history samples"
ctl history --since 1h --resolution minute --json | json "len(d) >= 1" | grep -qx True ||
    fail "history minutes"
# the lifecycle and honest cost in status; the tiers' allocation in history
ctl status --json | json "all(k in t for t in d[0]['tiers'] for k in ('phase', 'allocated-bytes', 'gib-hours', 'cost')) and 'violation-s' in d[0]['cost'] and d[0]['forecast']['seasonal']['bucket-s'] == 300" |
    grep -qx True || fail "status: lifecycle, cost or seasonal forecast missing"
ctl history sim --tiers --since 1m --json | json "len(d) >= 2 and d[0]['tier'] in ('cheap', 'fast')" |
    grep -qx True || fail "history --tiers"
# past load for the seasonal forecast: 5-minute rows with a daily burst,
# yesterday first, then the two days before: buckets older than those
# learned already (as after any live bucket closed) are learned again in
# order, not dropped
days() {
    python3 -c "
print('ts,ops')
for r in range($1 * 288):
    print('%d,%d' % (r, 300 * (500 if 200 <= r % 288 < 220 else 20)))
"
}
days 1 > "$dir/yesterday.csv"
days 2 > "$dir/past.csv"
now_b=$(( $(date +%s) / 300 * 300 ))
ctl import sim "$dir/yesterday.csv" --column ops --interval-s 300 --end "$now_b" \
    --json | json "d['buckets'] == 288 and d['bucket-s'] == 300" |
    grep -qx True || fail "import: yesterday not learned"
ctl import sim "$dir/past.csv" --column ops --interval-s 300 --end $((now_b - 86400)) \
    --json | json "d['buckets'] == 576 and d['season-buckets'] == 288" |
    grep -qx True || fail "import: three days did not make a daily season"
grep -q "relearned with the history" "$dir/shadowd.log" ||
    fail "import of older buckets: not relearned"
ctl import nope "$dir/past.csv" --column ops --interval-s 300 2> "$dir/err" &&
    fail "import to an unknown disk succeeded"
ctl pause --json | json "d == ['sim']" | grep -qx True || fail "pause"
wait_for 2 "d[0]['paused']" || fail "not paused"
ctl resume sim > /dev/null || fail "resume"

# the peer restarts: shadowd reconnects and samples again
stop "$sim_pid"; sim_pid=
wait_for 5 "not d[0]['connected']" || fail "disconnect not noticed"
start_sim
wait_for 10 "d[0]['connected'] and d[0]['connections'] == 2 and d[0]['load']['valid']" ||
    fail "no reconnect"

# a clean stop removes the control socket
kill -TERM "$agent_pid"; wait "$agent_pid"; rc=$?; agent_pid=
[ "$rc" -eq 0 ] || fail "shadowd exited $rc"
[ ! -e "$dir/control.sock" ] || fail "control socket left behind"
echo "ok"
