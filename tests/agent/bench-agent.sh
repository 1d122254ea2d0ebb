#!/usr/bin/env bash
# Agent cost per monitored disk: shadowd follows N simulated shadow nodes
# (qmp-sim) at a 1-second interval, with the history on; we measure its CPU
# time and resident memory over a steady window.
#
#   bench-agent.sh SHADOWD QMP-SIM [OUT.json]
#
# DISKS (default "1 10 100 300") and SECONDS_RUN (default 20) tune it.
# Prints one line per N and, last, a JSON object (also written to OUT.json).
set -uo pipefail
shadowd=${1:?shadowd}
sim=${2:?qmp-sim}
out=${3:-}
disks_list=${DISKS:-1 10 100 300}
run=${SECONDS_RUN:-20}
tck=$(getconf CLK_TCK)
dir=$(mktemp -d /tmp/shd-bench.XXXXXX)
sim_pid= agent_pid=

stop() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
    return 0
}
trap 'stop "$agent_pid"; stop "$sim_pid"; rm -rf "$dir"' EXIT
trap 'exit 1' INT TERM

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

results=()
for n in $disks_list; do
    rm -rf "$dir"/*
    "$sim" --dir "$dir" --disks "$n" &
    sim_pid=$!
    for _ in $(seq 100); do [ -S "$dir/qmp-$((n - 1)).sock" ] && break; sleep 0.05; done
    {
        printf '[shadowd]\ninterval = 1\ncontrol = %s/control.sock\nstate = %s/history.db\nmetrics-port = 0\n' "$dir" "$dir"
        printf '[tier:cheap]\ncost-gib-month = 0.02\n[tier:fast]\ncost-gib-month = 0.12\n'
        for i in $(seq 0 $((n - 1))); do
            printf '[disk:d%d]\nqmp = %s/qmp-%d.sock\nnode = sh0\ntier.cheap = tier-a\ntier.fast = tier-b\nslo-latency-ms = 5\n' "$i" "$dir" "$i"
        done
    } > "$dir/shadowd.conf"
    "$shadowd" --config "$dir/shadowd.conf" 2> "$dir/shadowd.log" &
    agent_pid=$!
    sleep 5        # connect, first samples, history warm-up
    c0=$(cpu_ticks "$agent_pid")
    sleep "$run"
    c1=$(cpu_ticks "$agent_pid")
    rss=$(rss_kib "$agent_pid")
    samples=$(grep -c . /dev/null)
    stop "$agent_pid"; agent_pid=
    stop "$sim_pid"; sim_pid=
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$tck" -v r="$run" 'BEGIN { printf "%.4f", (b - a) / t / r }')
    printf 'disks %4d: CPU %.2f%% of one core, RSS %d KiB\n' "$n" "$(awk -v c="$cpu" 'BEGIN { print c * 100 }')" "$rss"
    results+=("{\"disks\": $n, \"cpu_core_fraction\": $cpu, \"rss_kib\": $rss}")
done

json=$(printf '%s,' "${results[@]}")
json="{\"interval_s\": 1, \"seconds\": $run, \"runs\": [${json%,}]}"
# per disk: the slope between the smallest and the largest run
summary=$(echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin); r = d["runs"]
a, b = r[0], r[-1]
if b["disks"] > a["disks"]:
    cpu = (b["cpu_core_fraction"] - a["cpu_core_fraction"]) / (b["disks"] - a["disks"])
    rss = (b["rss_kib"] - a["rss_kib"]) / (b["disks"] - a["disks"])
    d["per_disk"] = {"cpu_core_fraction": round(cpu, 6), "rss_kib": round(rss, 1),
                     "disks_per_core": int(1 / cpu) if cpu > 0 else None}
print(json.dumps(d))')
echo "$summary"
[ -n "$out" ] && echo "$summary" > "$out"
exit 0
