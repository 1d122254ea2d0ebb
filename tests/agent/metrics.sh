#!/usr/bin/env bash
# The metrics endpoint of a running shadowd, scraped as Prometheus would
# and checked by Prometheus' own promtool (Debian's prometheus package):
# `promtool check metrics` must find nothing to say.  Two disks on a
# simulated QMP peer (qmp-sim), one of them with a name that needs
# escaping in a label value (quotes, a backslash, a space), as a libvirt
# domain's may.
#
#   metrics.sh SHADOWD QMP-SIM
#
# Exits 77 (skip) without promtool or python3.
set -uo pipefail
shadowd=$1 sim=$2
command -v promtool > /dev/null || { echo "SKIP: promtool (Debian: prometheus) is not installed"; exit 77; }
command -v python3 > /dev/null || { echo "SKIP: no python3"; exit 77; }
dir=$(mktemp -d /tmp/shd-metrics.XXXXXX)
sim_pid= agent_pid=
fail() { echo "FAIL: $*"; tail -20 "$dir/shadowd.log" 2> /dev/null; exit 1; }
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

"$sim" --dir "$dir" --disks 2 &
sim_pid=$!
for _ in $(seq 50); do [ -S "$dir/qmp-1.sock" ] && break; sleep 0.1; done
[ -S "$dir/qmp-1.sock" ] || fail "qmp-sim did not start"

# a free port for the endpoint (metrics-port = 0 means none)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
name='web "blue" \ 1.vda'
cat > "$dir/shadowd.conf" << EOF
[shadowd]
interval = 0.2
control = $dir/control.sock
state =
metrics-port = $port
metrics-address = 127.0.0.1

[tier:cheap]
cost-gib-month = 0.02

[tier:fast]
cost-gib-month = 0.12

[disk:plain]
qmp = $dir/qmp-0.sock
node = sh0
tier.cheap = tier-a
tier.fast = tier-b
slo-latency-ms = 5

[disk:$name]
qmp = $dir/qmp-1.sock
node = sh0
tier.cheap = tier-a
tier.fast = tier-b
slo-latency-ms = 5
EOF
"$shadowd" --config "$dir/shadowd.conf" > "$dir/shadowd.log" 2>&1 &
agent_pid=$!

scrape() {
    python3 -c '
import sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5) as r:
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
    sys.stdout.write(r.read().decode("utf-8"))' "$port"
}
# until both disks have rates (their iops samples are in)
for _ in $(seq 50); do
    scrape > "$dir/metrics.txt" 2> /dev/null &&
        [ "$(grep -c '^shadowd_disk_iops{' "$dir/metrics.txt")" -ge 4 ] && break
    sleep 0.2
done
[ "$(grep -c '^shadowd_disk_iops{' "$dir/metrics.txt")" -ge 4 ] || fail "no rates in the metrics"

out=$(promtool check metrics < "$dir/metrics.txt" 2>&1); rc=$?
echo "promtool check metrics: exit $rc, $(printf '%s' "$out" | wc -l) lines of output"
[ "$rc" -eq 0 ] && [ -z "$out" ] || { cat "$dir/metrics.txt"; fail "promtool: $out"; }

# the name comes back exactly, escaped in the text format
grep -qF 'shadowd_disk_connected{disk="web \"blue\" \\ 1.vda"} 1' "$dir/metrics.txt" ||
    fail "the escaped disk name is not in the metrics"
# every family: HELP and TYPE first, its samples together
python3 - "$dir/metrics.txt" << 'EOF' || fail "families are not grouped"
import re, sys
seen, current = set(), None
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("# HELP "):
        current = line.split()[2]
        assert current not in seen, "family %s twice" % current
        seen.add(current)
        continue
    if line.startswith("# TYPE "):
        assert line.split()[2] == current, line
        continue
    name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
    assert name == current, "%s outside its family %s" % (name, current)
print("%d families, each grouped with HELP and TYPE" % len(seen))
EOF
echo "ok"
