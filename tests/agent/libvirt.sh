#!/usr/bin/env bash
# shadowd against a real libvirtd: libvirt.sh SCENARIO SHADOWD SHADOWCTL
#
# Each run starts its own libvirtd and virtlogd in a private directory (a
# session daemon run as the libvirt-qemu user, so nothing of the machine's
# libvirt configuration is read or touched), defines a TCG domain whose
# emulator is build/qemu/qemu-system-x86_64 and whose disk is a qcow2
# image, and stops everything it started on the way out.  Guest I/O comes
# from the monitor's qemu-io command (HMP through libvirt); the data is
# checked on the image files once QEMU is gone.
#
#   main        attach from the domain XML alone, switch by hand and on
#               load, detach, compare the disk with what was written
#   events      no metadata, bad metadata, unknown tier, metadata set and
#               changed live, agent and libvirtd restarts (adoption),
#               hot-unplug, metadata removed, domain destroyed
#   operations  libvirt's own operations with a shadow attached
#   shutdown    shadowd stopped while libvirt events flood in, each one
#               a look at the domain (run it with an ASan build: events
#               and jobs still queued at shutdown must not run on freed
#               memory); eight rounds
#   hung        libvirtd stopped (SIGSTOP) for 30 s while shadowd also
#               samples two qemu-storage-daemon disks: their sampling goes
#               on at its interval, the control socket answers, and
#               shadowd recovers when libvirtd resumes; then shadowd
#               started while libvirtd is stopped
#   resize      virsh blockresize of a qcow2 and a raw disk with the shadow
#               in: the guest sees the new size, writes past the old end
#               (and past the qcow2 image file's end)
#               land on every tier, a shrink is refused (raw) or done by
#               qcow2 as without a shadow; every tier image is compared
#               byte for byte with the disk's image and a reference
#   warm        the metadata child across restarts: an untouched restart
#               is warm (bytes copied measured); a write to the image
#               while the domain is down (after a clean stop, and after
#               QEMU was killed) and a write between QEMU's start and the
#               insertion each make the tiers cold, and the fast tier,
#               switched to, serves the new data
#   lock        with the shadow in (cold, warm), qemu-io and qemu-img in
#               another process cannot write the disk's image (QEMU's
#               image lock); a qcow2 image grows its file through the
#               shadow; the image holds exactly the guest's writes
#   migrate     a second libvirtd (own directories and host UUID) and
#               shadowd; virsh migrate --live of the shadowed domain while
#               the monitor writes: the destination's shadowd waits for
#               the migration's end, inserts the shadow (warm when the
#               rules of docs/libvirt.md allow), the fast tier syncs and
#               is switched to;
#               every completed write is in the image (qemu-img compare);
#               then back to host 1 with the shadow taken out first
#               (switch back, detach, migrate, re-inserted on host 1)
#   rbd         in a throwaway Ceph cluster (tests/ceph/ceph_fixture.py,
#               cephx on; the key in a libvirt secret): a qcow2 file disk
#               whose fast tier is an rbd image shadowd creates, then a
#               raw disk on RBD (<source protocol='rbd'>) with a file fast
#               tier, then both on RBD (the tier reuses libvirt's secret
#               object); each: pre-warm, switch, switch back (and a detach
#               of the disk on RBD), every pattern
#               read through the guest, the images compared byte for byte
#
# Exit 77 (skip) without root, libvirtd, virsh or the QEMU build (rbd:
# or the Ceph programs).
set -uo pipefail

if [ "${1:-}" = rbd ] && [ -z "${SHADOW_CEPH_DIR:-}" ]; then
    # Again, inside a throwaway cluster of one pool, ssd, that lives as
    # long as this script (tests/ceph/ceph_fixture.py)
    for b in ceph-mon ceph-osd ceph rbd; do
        command -v "$b" > /dev/null || { echo "SKIP: $b is not installed"; exit 77; }
    done
    [ "$(id -u)" = 0 ] || { echo "SKIP: needs root (runs libvirtd as the libvirt-qemu user)"; exit 77; }
    exec python3 "$(dirname "$0")/../ceph/ceph_fixture.py" run --pools ssd -- "$0" "$@"
fi

scenario=${1:?scenario}
shadowd=${2:?shadowd}
shadowctl=${3:?shadowctl}
repo=$(cd "$(dirname "$0")/../.." && pwd)
qemu=$repo/build/qemu

# skip, log, stop_pid
. "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || skip "needs root (runs libvirtd as the libvirt-qemu user)"
[ -x /usr/sbin/libvirtd ] && [ -x /usr/sbin/virtlogd ] || skip "libvirt-daemon is not installed"
command -v virsh > /dev/null || skip "virsh (libvirt-clients) is not installed"
id libvirt-qemu > /dev/null 2>&1 || skip "no libvirt-qemu user (libvirt-daemon-system)"
[ -x "$qemu/qemu-system-x86_64" ] && [ -x "$qemu/qemu-img" ] && [ -x "$qemu/qemu-io" ] ||
    skip "no QEMU build in $qemu"
emulator=$(readlink -f "$qemu/qemu-system-x86_64")
case "$(ldd "$shadowd" 2> /dev/null)" in *libvirt-qemu*) ;; *) skip "shadowd was built without libvirt" ;; esac
py=$(command -v python3) || skip "python3 is not installed"

dir=$(mktemp -d /tmp/shd-lv.XXXXXX)
chown libvirt-qemu: "$dir"
chmod 700 "$dir"
run_uid=$(id -u libvirt-qemu)
run_gid=$(id -g libvirt-qemu)
uri="qemu+unix:///session?socket=$dir/run/libvirt/libvirt-sock"
dom=shd-lv-$scenario
hmp_dev=/machine/peripheral/virtio-disk0/virtio-backend
ns=https://shadowtier.example/xmlns/shadow/1
libvirtd_pid= virtlogd_pid= agent_pid= load_pid=
# the second host of the migrate scenario
h2=$dir/h2
uri2="qemu+unix:///session?socket=$h2/run/libvirt/libvirt-sock"
libvirtd2_pid= virtlogd2_pid= agent2_pid=
qsd_pids=()
hook_file=
failed=0

fail() { log "FAIL: $*"; failed=1; exit 1; }

# the daemons run as libvirt-qemu with every directory under $dir; called
# with & only: exec keeps $! the daemon's own pid
# (with host=DIR: the daemons of a second host, whose directories are there)
as_daemon() {
    local h=${host:-$dir}
    exec setpriv --reuid="$run_uid" --regid="$run_gid" --init-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$h/home" \
        XDG_CONFIG_HOME="$h/cfg" XDG_RUNTIME_DIR="$h/run" \
        XDG_CACHE_HOME="$h/cache" XDG_DATA_HOME="$h/data" "$@"
}

start_libvirtd() {
    local i
    as_daemon /usr/sbin/virtlogd >> "$dir/virtlogd.log" 2>&1 &
    virtlogd_pid=$!
    for i in $(seq 50); do
        [ -S "$dir/run/libvirt/virtlogd-sock" ] && break
        sleep 0.1
    done
    as_daemon /usr/sbin/libvirtd >> "$dir/libvirtd.log" 2>&1 &
    libvirtd_pid=$!
    for i in $(seq 100); do
        virsh -c "$uri" list > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "libvirtd did not start"
}

qemu_pids() {
    cat "$dir"/run/libvirt/qemu/run/*.pid 2> /dev/null
}

cleanup() {
    local d p
    [ -n "$load_pid" ] && stop_pid "$load_pid"
    # stopped processes would not stop
    [ -n "$libvirtd_pid" ] && kill -CONT "$libvirtd_pid" 2> /dev/null
    [ -n "$agent_pid" ] && kill -CONT "$agent_pid" 2> /dev/null
    stop_pid "$agent_pid"
    stop_pid "$agent2_pid"
    for p in "${qsd_pids[@]}"; do stop_pid "$p"; done
    if [ -n "$libvirtd2_pid" ] && kill -0 "$libvirtd2_pid" 2> /dev/null; then
        for d in $(virsh -c "$uri2" list --name 2> /dev/null); do
            virsh -c "$uri2" destroy "$d" > /dev/null 2>&1
        done
    fi
    for p in $(cat "$h2"/run/libvirt/qemu/run/*.pid 2> /dev/null); do stop_pid "$p"; done
    stop_pid "$libvirtd2_pid"
    stop_pid "$virtlogd2_pid"
    if [ -n "$libvirtd_pid" ] && kill -0 "$libvirtd_pid" 2> /dev/null; then
        for d in $(virsh -c "$uri" list --name 2> /dev/null); do
            virsh -c "$uri" destroy "$d" > /dev/null 2>&1
        done
    fi
    for p in $(qemu_pids); do stop_pid "$p"; done
    stop_pid "$libvirtd_pid"
    stop_pid "$virtlogd_pid"
    if [ "$failed" -ne 0 ] || [ -n "${KEEP:-}" ]; then
        echo "--- shadowd log"; grep -v " debug: " "$dir/shadowd.log" 2> /dev/null | tail -n 60
        echo "--- domain log"; tail -n 30 "$dir/cache/libvirt/qemu/log/$dom.log" 2> /dev/null
        echo "--- libvirtd log"; tail -n 15 "$dir/libvirtd.log" 2> /dev/null
        if [ -d "$h2" ]; then
            echo "--- shadowd log (host 2)"; grep -v " debug: " "$h2/shadowd.log" 2> /dev/null | tail -n 40
            echo "--- domain log (host 2)"; tail -n 30 "$h2/cache/libvirt/qemu/log/$dom.log" 2> /dev/null
            echo "--- libvirtd log (host 2)"; tail -n 15 "$h2/libvirtd.log" 2> /dev/null
        fi
    fi
    [ -n "$hook_file" ] && rm -f "$hook_file" && rmdir /etc/libvirt/hooks/qemu.d 2> /dev/null
    [ -n "${KEEP:-}" ] && { echo "kept $dir"; return; }
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The hook: libvirt runs every executable of /etc/libvirt/hooks/qemu.d (its
# hook directory is fixed, also for a session daemon, and read at its
# start); this one acts for this run's domain only and is removed at the end.
install_hook() {
    hook_file=/etc/libvirt/hooks/qemu.d/shadowtier-test-$$
    mkdir -p /etc/libvirt/hooks/qemu.d
    {
        echo '#!/bin/sh'
        echo "# tests/agent/libvirt.sh writeback, pid $$: removed when it ends"
        echo "[ \"\$1\" = \"$dom\" ] && [ -d \"$dir/run\" ] || exit 0"
        echo "\"$repo/build/agent/shadowtier-libvirt-hook\" --qsd \"$qemu/storage-daemon/qemu-storage-daemon\" \"\$@\" 2>> \"$dir/hook.log\""
        echo 'rc=$?'
        echo "[ \$rc = 0 ] || tail -n 1 \"$dir/hook.log\" >&2"
        echo 'exit $rc'
    } > "$hook_file"
    chmod 755 "$hook_file"
}

mkdir -p "$dir"/{home,cfg/libvirt,run,cache,data,img}
# a host UUID of its own (libvirt refuses to migrate to the same host)
echo 'host_uuid = "5ad0ba5e-0000-4000-8000-000000000001"' > "$dir/cfg/libvirt/libvirtd.conf"
chown -R libvirt-qemu: "$dir"
[ "$scenario" = writeback ] && install_hook
start_libvirtd
log "libvirtd $(/usr/sbin/libvirtd --version | awk "{ print \$NF }") started in $dir"

v() { virsh -c "$uri" "$@"; }
qmp() { v qemu-monitor-command "$dom" "$1"; }
hmp() { v qemu-monitor-command "$dom" --hmp "$1"; }
# qemu-io on the guest's device.  What it finds goes to QEMU's stdout,
# the domain log (pattern_log_ok); the monitor's reply is empty unless the
# command could not run (no such device, a permission conflict)
qio() {
    local out
    out=$(hmp "qemu-io -d ${2:-$hmp_dev} \"$1\"") || fail "qemu-io $1: virsh failed"
    [ -z "$out" ] || fail "qemu-io $1: $out"
}
ctl() { "$shadowctl" --control "$dir/control.sock" "$@"; }
vsh() { SHADOWD_CONTROL=$dir/control.sock "$dir/virsh-shadow" --connect "$uri" "$@"; }
ln -s "$(readlink -f "$shadowctl")" "$dir/virsh-shadow"
json() { "$py" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

# wait_for SECONDS COMMAND...: until COMMAND succeeds
wait_for() {
    local limit=$1 end
    shift
    end=$(($(date +%s%N) + limit * 1000000000))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        "$@" > /dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

lv_state() {     # lv_state DISK: attached, detached, error ... or "none"
    ctl libvirt "$dom.$1" --json 2> /dev/null | json "d[0]['state'] if d else 'none'"
}
is_state() { [ "$(lv_state "$1")" = "$2" ]; }
active_tier() { ctl status "$dom.$1" --json 2> /dev/null | json "d[0]['active-tier']"; }
is_active() { [ "$(active_tier "$1")" = "$2" ]; }

# node names and "parent -file-> child" edges of QEMU's block graph
graph() {
    qmp '{"execute":"x-debug-query-block-graph"}' | "$py" -c '
import json, sys
d = json.load(sys.stdin)["return"]
ids = {n["id"]: n["name"] for n in d["nodes"]}
for e in d["edges"]:
    print("%s -%s-> %s" % (ids[e["parent"]], e["name"], ids[e["child"]]))
for n in d["nodes"]:
    print("node", n["name"])'
}

graph_has() { grep -q -- "$1" <<< "$(graph)"; }

domain_xml() {   # domain_xml [METADATA] [EXTRA-DEVICES]
    cat << EOF
<domain type='qemu'>
  <name>$dom</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <metadata>${1:-}</metadata>
  <devices>
    <emulator>$emulator</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$dir/img/vda.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    ${2:-}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# the tiers: the disk's own image (cheap, throttled to LIMIT IOPS to
# emulate a slow tier) and a fast image the agent creates
# (virsh metadata --set wants it without a namespace: --key and the URI
# give it one; in the domain XML it carries its own)
metadata() {     # metadata [SLO-MS] [EXTRA-DISK-XML] [XMLNS-ATTRIBUTE]
    cat << EOF
<shadowtier${3:-}>
  <disk target="vda" slo-latency-ms="${1:-5}" chunk-size="65536" prewarm="sequential">
    <tier name="cheap" origin="yes" iops-limit="${LIMIT:-40}"/>
    <tier name="fast" path="$dir/img/tiers/vda.fast" cost-gib-month="0.12"/>
    <policy min-dwell="3" horizon="5" switch-back-after="6" violation-intervals="2" max-switches-per-hour="60"/>
  </disk>${2:-}
</shadowtier>
EOF
}

set_metadata() { v metadata "$dom" "$ns" --key shadow --set "$1" --live > /dev/null; }

new_image() {    # new_image NAME SIZE
    "$qemu/qemu-img" create -q -f qcow2 "$dir/img/$1.qcow2" "$2" || fail "qemu-img create"
    chown libvirt-qemu: "$dir/img/$1.qcow2"
}

# vda.qcow2 and ref.raw, 64 MiB each, with the same data: every argument
# is a qemu-io command ("write -P 0x31 0 8M") run on both
image_and_ref() {
    local args=() c
    new_image vda 64M
    "$qemu/qemu-img" create -q -f raw "$dir/ref.raw" 64M
    for c in "$@"; do args+=(-c "$c"); done
    "$qemu/qemu-io" -f qcow2 "${args[@]}" "$dir/img/vda.qcow2" > /dev/null || fail "qemu-io"
    "$qemu/qemu-io" -f raw "${args[@]}" "$dir/ref.raw" > /dev/null || fail "qemu-io"
}

# The metadata of vda on its image and a fast tier image, sequential
# pre-warm; fast_tier_md [DISK-ATTRIBUTES [ELEMENT]]
fast_tier_md() {
    printf '<shadowtier xmlns="%s">
  <disk target="vda" slo-latency-ms="1000" prewarm="sequential"%s>
    <tier name="cheap" origin="yes"/>
    <tier name="fast" path="%s" cost-gib-month="0.12"/>
%s  </disk>
</shadowtier>' "$ns" "${1:+ $1}" "$dir/img/tiers/vda.fast" "${2:+    $2
}"
}

start_domain() {   # start_domain XML
    printf '%s\n' "$1" > "$dir/domain.xml"
    v define "$dir/domain.xml" > /dev/null || fail "virsh define"
    v start "$dom" > /dev/null || fail "virsh start"
}

cat > "$dir/shadowd.conf" << EOF
[shadowd]
interval = 1
control = $dir/control.sock
state = $dir/history.db
metrics-port = 0

[tier:cheap]
cost-gib-month = 0.02
EOF

start_agent() {
    "$shadowd" --config "$dir/shadowd.conf" --connect "$uri" -v >> "$dir/shadowd.log" 2>&1 &
    agent_pid=$!
    wait_for 10 test -S "$dir/control.sock" || fail "shadowd did not start"
}

stop_agent() {
    stop_pid "$agent_pid"
    agent_pid=
    rm -f "$dir/control.sock"
}

# offline checks, once QEMU is gone: qemu-io on the qcow2 image itself
check_pattern() {  # check_pattern IMAGE PATTERN OFFSET LENGTH
    local out
    out=$("$qemu/qemu-io" -r -f qcow2 -c "read -P $2 $3 $4" "$1" 2>&1)
    grep -q "Pattern verification failed" <<< "$out" && fail "$1: not $2 at $3+$4"
    grep -q "^read " <<< "$out" || fail "$1: read $3+$4 failed: $out"
}

# no failed verification and no failed qemu-io command in a domain log.
# virtlogd copies QEMU's stdout to the log asynchronously: first a read
# of a length used once, on the guest's device, must show in the log;
# what the earlier commands printed is there by then
io_log_marks=0
io_log_ok() {
    local len
    io_log_marks=$((io_log_marks + 1))
    len=$((512 * (97 + 2 * io_log_marks)))
    qio "read 0 $len"
    wait_for 20 grep -q "^read $len/$len bytes at offset 0" "$1" ||
        fail "the domain log $1 does not show a read of $len bytes: QEMU's stdout does not reach it"
    ! grep -qE "Pattern verification failed|^[a-z_]+ failed: " "$1"
}
pattern_log_ok() { io_log_ok "$dir/cache/libvirt/qemu/log/$dom.log"; }

no_shadow_nodes() {  # no_shadow_nodes TARGET
    ! graph_has "node shd-$1"
}

format_file_is() {   # format_file_is NODE: the device's format node's file
    graph_has "^libvirt-[0-9]*-format -file-> $1\$"
}

# The load: 4 KiB aio reads (checking PATTERN) or writes of PATTERN over
# 4 MiB at 8 MiB, paced at RATE per second, through one virsh shell (one
# command per line)
start_load() {   # start_load RATE SECONDS PATTERN aio_read|aio_write
    local rate=$1 secs=$2 pat=$3 op=$4
    "$py" - "$rate" "$secs" "$pat" "$dom" "$hmp_dev" "$op" 2> /dev/null << 'EOF' | virsh -c "$uri" > /dev/null 2>&1 &
import sys, time
rate, secs, pat, dom, dev, op = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
t0 = time.time(); i = 0
while time.time() - t0 < secs:
    off = 8 * 1048576 + (i % 1024) * 4096
    print("qemu-monitor-command %s --hmp 'qemu-io -d %s \"%s -P %s %d 4k\"'" % (dom, dev, op, pat, off), flush=True)
    i += 1
    delay = t0 + i / rate - time.time()
    if delay > 0:
        time.sleep(delay)
EOF
    load_pid=$!
}

# ---------------------------------------------------------------- main
scenario_main() {
    local t0 t_load t_sw t_back attach_ms cmp
    new_image vda 64M
    "$qemu/qemu-io" -f qcow2 -c "write -P 0x01 0 1M" "$dir/img/vda.qcow2" > /dev/null
    "$qemu/qemu-img" create -q -f raw "$dir/ref.raw" 64M
    "$qemu/qemu-io" -f raw -c "write -P 0x01 0 1M" "$dir/ref.raw" > /dev/null

    # the domain's XML is all the configuration the disk has
    start_domain "$(domain_xml "$(metadata 5 "" " xmlns=\"$ns\"")")"
    t0=$(now)
    start_agent
    wait_for 20 is_state vda attached || fail "the shadow was not inserted: $(lv_state vda)"
    attach_ms=$(ctl libvirt "$dom.vda" --json | json "d[0]['attach-ms']")
    log "attached $("$py" -c "print(round($(now) - $t0, 2))") s after shadowd started (insertion $attach_ms ms)"
    format_file_is shd-vda || fail "the format node's file is not the shadow: $(graph)"
    graph_has "^shd-vda -children.1-> shd-vda-f1$" || fail "no fast tier child"
    [ "$(stat -c %a "$dir/img/tiers/vda.fast")" = 600 ] || fail "tier image mode is not 0600"
    [ "$(stat -c %U "$dir/img/tiers/vda.fast")" = libvirt-qemu ] || fail "tier image owner"
    grep -q '"drv":"shadow"' <<< "$(qmp '{"execute":"query-named-block-nodes"}')" || fail "no shadow node"

    # writes while attached, beyond the image's old end too
    qio "write -P 0x11 0 4M"
    qio "write -P 0x22 60M 1M"
    "$qemu/qemu-io" -f raw -c "write -P 0x11 0 4M" -c "write -P 0x22 60M 1M" "$dir/ref.raw" > /dev/null
    wait_for 30 "$py" -c "
import json, subprocess, sys
d = json.loads(subprocess.check_output(['$shadowctl', '--control', '$dir/control.sock', 'status', '$dom.vda', '--json']))
sys.exit(0 if any(t['name'] == 'fast' and t['state'] == 'synced' for t in d[0]['tiers']) else 1)" ||
        fail "the fast tier did not get in sync"

    # deterministic: the operator switches, virsh style
    vsh "$dom" vda switch fast > /dev/null || fail "virsh-shadow switch fast"
    wait_for 10 is_active vda fast || fail "no switch to fast: $(active_tier vda)"
    log "virsh-shadow switch fast: done"
    qio "write -P 0x44 32M 1M"
    "$qemu/qemu-io" -f raw -c "write -P 0x44 32M 1M" "$dir/ref.raw" > /dev/null
    vsh "$dom" vda switch cheap > /dev/null || fail "virsh-shadow switch cheap"
    wait_for 10 is_active vda cheap || fail "no switch back to cheap: $(active_tier vda)"
    log "virsh-shadow switch cheap: done"
    vsh "$dom" vda status > "$dir/vsh-status.txt" || fail "virsh-shadow status"
    grep -q "on cheap" "$dir/vsh-status.txt" || fail "virsh-shadow status: $(cat "$dir/vsh-status.txt")"
    sleep 4    # past min-dwell

    # load-driven: more reads than the cheap tier's 40 IOPS serve (in sync
    # mode writes wait for every synced tier, so reads show the tier)
    qio "write -P 0x33 8M 4M"
    "$qemu/qemu-io" -f raw -c "write -P 0x33 8M 4M" "$dir/ref.raw" > /dev/null
    t_load=$(now)
    start_load 70 40 0x33 aio_read
    wait_for 40 is_active vda fast || fail "the load did not make shadowd switch to fast"
    t_sw=$("$py" -c "print(round($(now) - $t_load, 1))")
    log "switched to fast $t_sw s after the load started"
    stop_pid "$load_pid"
    load_pid=
    ctl history "$dom.vda" --decisions --json | json "[x['kind'] for x in d]" > "$dir/kinds.txt"
    grep -q "switch-manual" "$dir/kinds.txt" || fail "the manual switches are not in the history"
    # the policy's own decision, with its numbers
    vsh "$dom" vda history --decisions --json |
        json "[x['kind'] + ': ' + x['reason'] for x in d if x['action'] == 'switch'][-1]" > "$dir/why.txt"
    log "decision: $(cat "$dir/why.txt")"
    grep -q "^switch-up: .*latency .* over the SLO" "$dir/why.txt" || fail "the load switch was not the policy's"
    t_load=$(now)
    if wait_for 30 is_active vda cheap; then
        t_back=$("$py" -c "print(round($(now) - $t_load, 1))")
        log "switched back to cheap $t_back s after the load stopped"
    else
        log "no switch back to cheap within 30 s after the load (detach switches back)"
    fi

    # give the disk back to libvirt
    vsh "$dom" vda detach > /dev/null || fail "virsh-shadow detach: $(lv_state vda)"
    format_file_is 'libvirt-1-storage' || fail "the format node is not back on libvirt's node: $(graph)"
    no_shadow_nodes vda || fail "shadow nodes left after detach: $(graph | grep shd-)"
    # the guest runs on without the shadow: the maps are forgotten
    [ -f "$dir/img/tiers/vda.fast.meta" ] && [ ! -s "$dir/img/tiers/vda.fast.meta" ] ||
        fail "the metadata image was not emptied by the detach"
    log "detached: libvirt-1-format -file-> libvirt-1-storage again, metadata image emptied"
    # the disk, as libvirt has it again, reads back everything
    qio "write -P 0x55 40M 1M"
    "$qemu/qemu-io" -f raw -c "write -P 0x55 40M 1M" "$dir/ref.raw" > /dev/null
    qio "read -P 0x22 60M 1M"
    qio "read -P 0x33 8M 4M"
    qio "read -P 0x44 32M 1M"
    pattern_log_ok || fail "a read through libvirt's own nodes found other data"
    grep -q "^read 1048576/1048576 bytes at offset 62914560" \
        "$dir/cache/libvirt/qemu/log/$dom.log" || fail "the HMP read did not run"

    v destroy "$dom" > /dev/null || fail "virsh destroy"
    "$qemu/qemu-img" check -q "$dir/img/vda.qcow2" || fail "qemu-img check"
    if ! cmp=$("$qemu/qemu-img" compare -f qcow2 -F raw "$dir/img/vda.qcow2" "$dir/ref.raw" 2>&1); then
        # seen once in about 35 runs, not understood yet: say what differs
        echo "--- qemu-img map of the image"; "$qemu/qemu-img" map -f qcow2 "$dir/img/vda.qcow2"
        echo "--- the fast tier against the reference"
        "$qemu/qemu-img" compare -f qcow2 -F raw "$dir/img/tiers/vda.fast" "$dir/ref.raw"
        echo "--- image against the fast tier, bytes"; cmp "$dir/img/vda.qcow2" "$dir/img/tiers/vda.fast" | head -3
        echo "--- errors in the domain log"; grep -iE "error|fail" "$dir/cache/libvirt/qemu/log/$dom.log" | grep -v "Pattern\|kvmvapic" | tail
        fail "the disk differs from what was written: $cmp"
    fi
    log "qemu-img compare with the reference: $cmp"
    check_pattern "$dir/img/vda.qcow2" 0x22 60M 1M
    echo "RESULT attach-ms=$attach_ms load-switch-s=$t_sw switch-back-s=${t_back:-none} compare=identical"
}

# -------------------------------------------------------------- events
scenario_events() {
    local n scsi out
    new_image vda 64M
    new_image sda 32M
    "$qemu/qemu-img" create -q -f raw "$dir/img/vdb.raw" 16M
    chown libvirt-qemu: "$dir/img/vdb.raw"
    scsi="<controller type='scsi' model='virtio-scsi'/>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='$dir/img/sda.qcow2'/><target dev='sda' bus='scsi'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='$dir/img/vdb.raw'/><target dev='vdb' bus='virtio'/></disk>"
    start_domain "$(domain_xml "" "$scsi")"
    start_agent

    # without metadata the domain is left alone
    wait_for 10 grep -q "connected, 1 running" "$dir/shadowd.log" || fail "shadowd did not connect"
    sleep 1
    [ "$(ctl libvirt --json | json 'len(d)')" = 0 ] || fail "a domain without metadata is managed"
    no_shadow_nodes vda || fail "shadow nodes without metadata"
    log "no metadata: ignored"

    # malformed: a clear message, nothing changes
    set_metadata '<shadowtier><disk target="vda" slo-latency-ms="5"><tier name="cheap" origin="yes"/><tier name="fast"/></disk></shadowtier>'
    wait_for 10 grep -q "shadow metadata .* is not valid.*fast: give its image's path" "$dir/shadowd.log" ||
        fail "no message for malformed metadata"
    no_shadow_nodes vda || fail "malformed metadata inserted something"
    log "malformed metadata: $(grep -o "is not valid.*" "$dir/shadowd.log" | head -1)"

    # an unknown tier (neither in shadowd.conf nor priced)
    set_metadata "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\"><tier name=\"cheap\" origin=\"yes\"/><tier name=\"gold\" path=\"$dir/img/tiers/gold\"/></disk></shadowtier>"
    wait_for 10 is_state vda error || fail "unknown tier: no error state"
    grep -q "tier 'gold' is unknown" <<< "$(ctl libvirt "$dom.vda" --json | json "d[0]['error']")" ||
        fail "unknown tier: $(ctl libvirt --json)"
    vsh "$dom" vda status > /dev/null 2>&1 && fail "virsh-shadow status of a failed disk succeeded"
    log "unknown tier: $(ctl libvirt "$dom.vda" --json | json "d[0]['error']")"

    # a tier image outside the image's directory (and [libvirt] tier-dirs)
    set_metadata "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\"><tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"$dir/elsewhere/vda.fast\" cost-gib-month=\"0.12\"/></disk></shadowtier>"
    wait_for 10 is_state vda error || fail "tier outside the allowed directories: no error state"
    grep -q "is not in the disk image's directory" <<< "$(ctl libvirt "$dom.vda" --json | json "d[0]['error']")" ||
        fail "tier outside: $(ctl libvirt --json)"
    [ -e "$dir/elsewhere" ] && fail "a directory was created outside the allowed ones"
    log "tier outside the allowed directories: $(ctl libvirt "$dom.vda" --json | json "d[0]['error']")"

    # valid metadata, followed live; both disks
    set_metadata "$(metadata 5 "
  <disk target=\"sda\" slo-latency-ms=\"5\"><tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"$dir/img/tiers/sda.fast\"/></disk>
  <disk target=\"vdb\" slo-latency-ms=\"5\"><tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"$dir/img/tiers/vdb.fast\"/></disk>")"
    wait_for 15 is_state vda attached || fail "metadata set live: vda not attached ($(lv_state vda))"
    wait_for 15 is_state sda attached || fail "metadata set live: sda not attached ($(lv_state sda))"
    format_file_is shd-vda || fail "vda: not under its format node"
    log "metadata set live: vda and sda attached"
    # a raw image: libvirt 9.0 gives it a raw format node, so the shadow
    # goes under that; a raw image does not grow, so it keeps its length
    wait_for 15 is_state vdb attached || fail "raw disk vdb: $(lv_state vdb)"
    graph_has "^libvirt-[0-9]*-format -file-> shd-vdb$" || fail "raw disk vdb: not under its format node"
    [ "$(stat -c %s "$dir/img/vdb.raw")" = 16777216 ] || fail "raw disk vdb: its image changed length"
    qio "write -P 0x64 8M 1M" /machine/peripheral/virtio-disk1/virtio-backend
    log "raw disk vdb: attached under libvirt's raw format node, length kept"
    qio "write -P 0x61 0 2M"
    qio "write -P 0x62 0 2M" /machine/peripheral/scsi0-0-0-0
    n=$(grep -c "vda: shadow inserted" "$dir/shadowd.log")

    # a policy change is followed without re-inserting the shadow
    set_metadata "$(metadata 9 "
  <disk target=\"sda\" slo-latency-ms=\"5\"><tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"$dir/img/tiers/sda.fast\"/></disk>
  <disk target=\"vdb\" slo-latency-ms=\"5\"><tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"$dir/img/tiers/vdb.fast\"/></disk>")"
    wait_for 10 "$py" -c "
import json, subprocess, sys
d = json.loads(subprocess.check_output(['$shadowctl', '--control', '$dir/control.sock', 'status', '$dom.vda', '--json']))
sys.exit(0 if d[0]['slo-latency-ms'] == 9 else 1)" || fail "the new service level was not taken"
    [ "$(grep -c "vda: shadow inserted" "$dir/shadowd.log")" = "$n" ] || fail "a policy change re-inserted the shadow"
    log "slo-latency-ms 5 -> 9 followed live, shadow kept"

    # agent restart: the shadow is adopted, not inserted again
    stop_agent
    format_file_is shd-vda || fail "stopping shadowd took the shadow out"
    start_agent
    wait_for 15 is_state vda attached || fail "after an agent restart: $(lv_state vda)"
    [ "$(ctl libvirt "$dom.vda" --json | json "d[0]['adopted']")" = True ] || fail "not adopted"
    [ "$(grep -c "vda: shadow inserted" "$dir/shadowd.log")" = "$n" ] || fail "re-inserted after agent restart"
    log "agent restart: adopted"

    # libvirtd restart: shadowd reconnects and adopts again
    stop_pid "$libvirtd_pid"
    as_daemon /usr/sbin/libvirtd >> "$dir/libvirtd.log" 2>&1 &
    libvirtd_pid=$!
    wait_for 20 "$py" -c "import sys; sys.exit(0 if open('$dir/shadowd.log').read().count('connected, 1 running') >= 3 else 1)" ||
        fail "shadowd did not reconnect to the restarted libvirtd"
    wait_for 15 is_state vda attached || fail "after a libvirtd restart: $(lv_state vda)"
    format_file_is shd-vda || fail "after a libvirtd restart the shadow is gone"
    log "libvirtd restart: reconnected, adopted"

    # hot-unplug of a shadowed disk (scsi: no guest needed to let go)
    v detach-disk "$dom" sda --live > /dev/null || fail "virsh detach-disk sda"
    wait_for 15 no_shadow_nodes sda || fail "nodes of the unplugged disk are left: $(graph | grep shd-sda)"
    wait_for 5 is_state sda none || fail "the unplugged disk is still managed: $(lv_state sda)"
    log "hot-unplug of sda: agent nodes removed"

    # metadata removed: the disk goes back to libvirt
    v metadata "$dom" "$ns" --remove --live > /dev/null || fail "virsh metadata --remove"
    wait_for 15 no_shadow_nodes vda || fail "metadata removed: shadow still in: $(graph | grep shd-)"
    format_file_is 'libvirt-[0-9]*-storage' || fail "metadata removed: format node not back"
    log "metadata removed: detached"

    # the operator cannot attach what the metadata does not describe
    out=$(vsh "$dom" vda attach 2>&1) && fail "virsh-shadow attach without metadata succeeded"
    grep -q "has no shadow metadata" <<< "$out" || fail "virsh-shadow attach: $out"
    log "virsh-shadow attach without metadata: $out"

    # attached again, detached and attached by the operator, then the
    # domain is destroyed under it
    set_metadata "$(metadata 5)"
    wait_for 15 is_state vda attached || fail "re-attach: $(lv_state vda)"
    vsh "$dom" vda detach > /dev/null || fail "virsh-shadow detach: $(lv_state vda)"
    no_shadow_nodes vda || fail "virsh-shadow detach left nodes"
    vsh "$dom" vda attach > /dev/null || fail "virsh-shadow attach: $(lv_state vda)"
    format_file_is shd-vda || fail "virsh-shadow attach: not under the format node"
    log "virsh-shadow detach and attach: done"
    qio "write -P 0x63 4M 1M"
    v destroy "$dom" > /dev/null
    wait_for 10 grep -q "domain $dom stopped" "$dir/shadowd.log" || fail "shadowd missed the stop"
    wait_for 5 is_state vda none || fail "a stopped domain's disk is still managed"
    kill -0 "$agent_pid" || fail "shadowd died"
    check_pattern "$dir/img/vda.qcow2" 0x61 0 2M
    check_pattern "$dir/img/vda.qcow2" 0x63 4M 1M
    check_pattern "$dir/img/sda.qcow2" 0x62 0 2M
    out=$("$qemu/qemu-io" -r -f raw -c "read -P 0x64 8M 1M" "$dir/img/vdb.raw" 2>&1)
    grep -q "Pattern verification failed" <<< "$out" && fail "vdb.raw: not 0x64 at 8M"
    log "destroyed: data of the three disks intact"
    echo "RESULT events=ok"
}

# ---------------------------------------------------------- operations
# libvirt's own operations with a shadow attached: what happens is
# printed (OPERATION lines); the data is checked after each, and the
# agent must stay up
over_shadow() {  # the node whose file the shadow is, or "none"
    local p
    p=$(graph | awk '$3 == "shd-vda" && $2 == "-file->" { print $1 }')
    echo "${p:-none}"
}
device_root() {
    graph | awk '$1 ~ /virtio-disk0/ && $2 == "-root->" { print $3 }'
}

scenario_operations() {
    local out
    new_image vda 64M
    start_domain "$(domain_xml "$(metadata 5 "" " xmlns=\"$ns\"")")"
    start_agent
    wait_for 20 is_state vda attached || fail "not attached: $(lv_state vda)"
    qio "write -P 0x71 0 1M"

    out=$(v domblkstat "$dom" vda 2>&1) || fail "domblkstat: $out"
    grep -q "wr_req" <<< "$out" || fail "domblkstat: $out"
    echo "OPERATION domblkstat: works (the device's counters; HMP qemu-io is not counted there)"

    out=$(v snapshot-create-as "$dom" snap1 --disk-only --no-metadata \
          --diskspec "vda,file=$dir/img/vda.snap1" 2>&1)
    if [ $? -eq 0 ]; then
        qio "write -P 0x72 1M 1M"
        echo "OPERATION snapshot-create --disk-only: works; the device's top is now $(device_root);" \
             "the shadow stays under $(over_shadow) (the backing image); agent: $(lv_state vda)"
        out=$(v blockcommit "$dom" vda --active --pivot --wait 2>&1)
        if [ $? -eq 0 ]; then
            echo "OPERATION blockcommit --active --pivot: works; top $(device_root), shadow under $(over_shadow)"
        else
            echo "OPERATION blockcommit --active --pivot: FAILS: $out"
        fi
    else
        echo "OPERATION snapshot-create --disk-only: FAILS: $out"
    fi
    qio "read -P 0x71 0 1M"
    qio "read -P 0x72 1M 1M"
    pattern_log_ok || fail "data changed after snapshot/commit"

    out=$(v blockcopy "$dom" vda "$dir/img/vda.copy" --format qcow2 --transient-job --pivot --wait 2>&1)
    if [ $? -eq 0 ]; then
        wait_for 15 graph_has "^libvirt-[0-9]*-format -file-> shd-vda$"
        echo "OPERATION blockcopy --pivot: works; top $(device_root) (the copy), shadow under" \
             "$(over_shadow) after the block job event: $(grep -c 'vda: shadow inserted' "$dir/shadowd.log") insertions so far;" \
             "$(grep "disk vda: shadow inserted" "$dir/shadowd.log" | tail -1 | grep -o "tiers .*")"
        graph_has "shd-vda-base" && [ "$(graph | awk '$3 == "shd-vda-base" { n++ } END { print n + 0 }')" -ge 1 ] || true
    else
        echo "OPERATION blockcopy --pivot: FAILS: $out"
    fi
    qio "read -P 0x71 0 1M"
    qio "read -P 0x72 1M 1M"
    pattern_log_ok || fail "data changed after blockcopy"

    out=$(v managedsave "$dom" 2>&1)
    if [ $? -eq 0 ]; then
        out=$(v start "$dom" 2>&1) || fail "start after managedsave: $out"
        if wait_for 20 is_state vda attached && wait_for 5 graph_has "-file-> shd-vda$"; then
            wait_for 60 tiers_synced vda || fail "managedsave: the fast tier did not get in sync"
            echo "OPERATION managedsave + start: works; restored with libvirt's nodes, shadow inserted again;" \
                 "$(grep "disk vda: shadow inserted" "$dir/shadowd.log" | tail -1 | grep -o "tiers .*");" \
                 "then the fast tier's copy wrote $(child_stat vda shd-vda-f1 copied-bytes) bytes," \
                 "found $(child_stat vda shd-vda-f1 compared-bytes) identical"
        else
            echo "OPERATION managedsave + start: restored, shadow NOT back: $(lv_state vda)"
        fi
    else
        echo "OPERATION managedsave: FAILS: $out"
    fi
    qio "read -P 0x71 0 1M"
    qio "read -P 0x72 1M 1M"
    pattern_log_ok || fail "data changed after managedsave"
    kill -0 "$agent_pid" || fail "shadowd died"
    v destroy "$dom" > /dev/null
    check_pattern "$dir/img/vda.copy" 0x71 0 1M
    check_pattern "$dir/img/vda.copy" 0x72 1M 1M
    echo "OPERATION destroy: the copy holds every write"
    echo "RESULT operations=done"
}

# ------------------------------------------------------------ shutdown
# shadowd's exit: status 0, and nothing from the sanitizers in its log
agent_exited_clean() {   # agent_exited_clean PID
    local rc
    wait "$1"; rc=$?
    agent_pid=
    if grep -qE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$dir/shadowd.log"; then
        grep -A 30 -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" \
            "$dir/shadowd.log" | head -40
        return 1
    fi
    [ "$rc" -eq 0 ] || { log "shadowd exited $rc"; return 1; }
}

scenario_shutdown() {
    local round pid n=300 i one bg seen dropped seen_before=0 total_dropped=0
    new_image vda 64M
    start_domain "$(domain_xml "$(metadata 5 "" " xmlns=\"$ns\"")")"
    case "$(ldd "$shadowd")" in
    *libasan*) log "shadowd is an ASan build" ;;
    *) log "shadowd is not an ASan build: a use after free may go unseen" ;;
    esac
    # the domain's own metadata on one line: setting it again changes
    # nothing, but each set is an event, and each event a look at the
    # domain (two jobs in a worker, reading and checking the shadow)
    one=$(metadata 5 | tr -d '\n')
    for round in $(seq ${ROUNDS:-8}); do
        start_agent
        wait_for 20 is_state vda attached || fail "round $round: not attached: $(lv_state vda)"
        pid=$agent_pid
        # shadowd stopped, libvirtd queues events for it; then a stream of
        # them: shadowd works through the backlog, jobs in flight, when it
        # is told to stop
        kill -STOP "$pid"
        for i in $(seq $n); do
            echo "metadata $dom $ns --key shadow --set '$one' --live"
        done | virsh -c "$uri" > /dev/null 2>&1 || fail "virsh metadata"
        while :; do
            echo "metadata $dom $ns --key shadow --set '$one' --live"
        done 2> /dev/null | virsh -c "$uri" > /dev/null 2>&1 &
        bg=$!
        kill -CONT "$pid"
        sleep 0.$((3 + round % 6))
        kill -TERM "$pid"
        agent_exited_clean "$pid" || fail "round $round: shadowd did not stop cleanly"
        stop_pid "$bg"
        format_file_is shd-vda || fail "round $round: the shadow was taken out at shutdown"
        seen=$(grep -c "shadow metadata changed" "$dir/shadowd.log")
        dropped=$(grep -o "[0-9]* events came during the stop" "$dir/shadowd.log" | tail -1 | cut -d' ' -f1)
        log "round $round: $((seen - seen_before)) events handled, ${dropped:-?} came during the stop; clean exit, shadow left in place"
        seen_before=$seen
        total_dropped=$((total_dropped + ${dropped:-0}))
        rm -f "$dir/control.sock"
    done
    [ "$total_dropped" -gt 0 ] || log "no event came during a stop: the rounds did not test that case"
    echo "RESULT shutdown=clean rounds=${ROUNDS:-8} events-during-stop=$total_dropped"
}

# ----------------------------------------------------------------- hung
start_qsd() {    # start_qsd N: a shadow node sh0 over two raw tiers, QMP on qsdN.qmp
    local n=$1
    "$qemu/qemu-img" create -q -f raw "$dir/img/q$n-a.raw" 16M
    "$qemu/qemu-img" create -q -f raw "$dir/img/q$n-b.raw" 16M
    "$qemu/storage-daemon/qemu-storage-daemon" \
        --chardev socket,id=m,path="$dir/qsd$n.qmp",server=on,wait=off --monitor m \
        --blockdev file,node-name=fa,filename="$dir/img/q$n-a.raw" \
        --blockdev raw,node-name=tier-a,file=fa \
        --blockdev file,node-name=fb,filename="$dir/img/q$n-b.raw" \
        --blockdev raw,node-name=tier-b,file=fb \
        --blockdev '{"driver":"shadow","node-name":"sh0","children":["tier-a","tier-b"],"active-child":"tier-a"}' \
        >> "$dir/qsd$n.log" 2>&1 &
    qsd_pids+=($!)
    wait_for 10 test -S "$dir/qsd$n.qmp" || fail "qemu-storage-daemon $n did not start"
}

# gaps DISK T0 T1: the samples of DISK in the history taken in [T0, T1]
# (seconds since the epoch): their number and the largest gap between two
# samples around or inside the window
gaps() {
    ctl history "$1" --since 10m --resolution full --json | "$py" -c "
import json, sys
t0, t1 = $2, $3
ts = sorted(x['time'] for x in json.load(sys.stdin) if t0 - 5 <= x['time'] <= t1 + 5)
inside = [t for t in ts if t0 <= t <= t1]
gaps = [b - a for a, b in zip(ts, ts[1:]) if b >= t0 and a <= t1]
print('%d %.2f' % (len(inside), max(gaps) if gaps else 99))"
}

disk_samples() { ctl status "$1" --json 2> /dev/null | json "d[0]['samples']" 2> /dev/null || echo 0; }
samples_over() { [ "$(disk_samples "$1")" -gt "$2" ]; }

scenario_hung() {
    local t_stop t_cont t_back t_res s0 lat_max a b rc t0 req_pid n1 g1 n2 g2 recover result
    new_image vda 64M
    start_qsd 1
    start_qsd 2
    cat >> "$dir/shadowd.conf" << EOF

[tier:fast]
cost-gib-month = 0.12

[disk:qsd1]
qmp = $dir/qsd1.qmp
node = sh0
tier.cheap = tier-a
tier.fast = tier-b
slo-latency-ms = 5

[disk:qsd2]
qmp = $dir/qsd2.qmp
node = sh0
tier.cheap = tier-a
tier.fast = tier-b
slo-latency-ms = 5
EOF
    start_domain "$(domain_xml "$(metadata 5 "" " xmlns=\"$ns\"")")"
    start_agent
    wait_for 20 is_state vda attached || fail "not attached: $(lv_state vda)"
    wait_for 10 samples_over "$dom.vda" 1 || fail "$dom.vda does not sample"
    sleep 3
    log "sampling qsd1, qsd2 and $dom.vda ($(disk_samples "$dom.vda") samples); libvirtd stopped for 30 s"

    t_stop=$(now)
    kill -STOP "$libvirtd_pid"
    # the operator asks for a detach: its look-up waits for libvirtd (in a
    # worker) while everything else goes on
    "$shadowctl" --control "$dir/control.sock" --timeout 60000 detach "$dom" vda --no-wait \
        > "$dir/req.out" 2>&1 &
    req_pid=$!
    lat_max=0
    while "$py" -c "import sys; sys.exit(0 if $(now) - $t_stop < 29 else 1)"; do
        a=$(date +%s%N)
        ctl status qsd1 > /dev/null || fail "the control socket did not answer while libvirtd was stopped"
        b=$(date +%s%N)
        lat_max=$("$py" -c "print(round(max($lat_max, ($b - $a) / 1e6), 1))")
        sleep 1
    done
    sleep "$("$py" -c "print(max(0, 30 - ($(now) - $t_stop)))")"
    kill -0 "$req_pid" 2> /dev/null || fail "the detach request ended while libvirtd was stopped: $(cat "$dir/req.out")"
    t_cont=$(now)
    kill -CONT "$libvirtd_pid"
    log "libvirtd resumed after $("$py" -c "print(round($t_cont - $t_stop, 1))") s; 'status' answered in $lat_max ms at most meanwhile"

    # recovery: the request is answered, the disk is given back and taken
    # again, and the domain's disk samples again
    wait "$req_pid"; rc=$?
    t_back=$(now)
    log "the detach request was answered $("$py" -c "print(round($t_back - $t_cont, 2))") s after libvirtd resumed: $(head -c 200 "$dir/req.out")"
    [ "$rc" -eq 0 ] || fail "the detach request failed: $(cat "$dir/req.out")"
    wait_for 20 is_state vda detached || fail "not detached: $(lv_state vda)"
    "$shadowctl" --control "$dir/control.sock" attach "$dom" vda > /dev/null ||
        fail "attach after libvirtd resumed: $(lv_state vda)"
    s0=$(disk_samples "$dom.vda")
    wait_for 20 samples_over "$dom.vda" "$s0" || fail "$dom.vda does not sample again"
    recover=$("$py" -c "print(round($(now) - $t_cont, 2))")
    log "recovered: $dom.vda detached, attached and sampling again $recover s after libvirtd resumed"

    sleep 2
    read -r n1 g1 <<< "$(gaps qsd1 "$t_stop" "$t_cont")"
    read -r n2 g2 <<< "$(gaps qsd2 "$t_stop" "$t_cont")"
    log "while libvirtd was stopped: qsd1 $n1 samples, largest gap $g1 s; qsd2 $n2 samples, largest gap $g2 s (interval 1 s)"
    "$py" -c "import sys; sys.exit(0 if $n1 >= 27 and $n2 >= 27 and $g1 < 2.5 and $g2 < 2.5 else 1)" ||
        fail "the qemu-storage-daemon disks were not sampled at their interval while libvirtd was stopped"
    result="qsd1-samples=$n1 qsd1-max-gap-s=$g1 qsd2-samples=$n2 qsd2-max-gap-s=$g2"

    # shadowd started while libvirtd does not answer
    stop_agent
    kill -STOP "$libvirtd_pid"
    t0=$(now)
    start_agent
    sleep 6
    read -r n1 g1 <<< "$(gaps qsd1 "$t0" "$(now)")"
    log "shadowd started while libvirtd is stopped: qsd1 sampled $n1 times in its first 6 s"
    [ "$n1" -ge 3 ] || fail "shadowd started with libvirtd stopped does not sample"
    t_res=$(now)
    kill -CONT "$libvirtd_pid"
    wait_for 20 is_state vda attached || fail "not adopted once libvirtd resumed: $(lv_state vda)"
    log "$dom.vda adopted $("$py" -c "print(round($(now) - $t_res, 2))") s after libvirtd resumed"
    echo "RESULT hung=ok $result recovery-s=$recover status-max-ms=$lat_max started-stopped-samples=$n1"
}


# --------------------------------------------------------------- resize
# the guest-visible size of a device (its BlockBackend's length)
dev_size() {     # dev_size ALIAS
    qmp '{"execute":"query-block"}' |
        json "[b['inserted']['image']['virtual-size'] for b in d['return'] if b.get('qdev', '').startswith('/machine/peripheral/$1/')][0]"
}
node_size() {    # node_size NODE: its length, as QEMU has it
    qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' |
        json "[n['image']['virtual-size'] for n in d['return'] if n['node-name'] == '$1'][0]"
}
# every child of the shadow node of TARGET is active or synced
tiers_synced() {  # tiers_synced TARGET
    qmp '{"execute":"query-blockstats","arguments":{"query-nodes":true}}' | json "
next(all(c['state'] in ('active', 'synced') for c in n['driver-specific']['children'])
     for n in d['return'] if n.get('node-name') == 'shd-$1')" | grep -q True
}
# the same writes on the guest's device and on a raw reference image
gwrite() {        # gwrite ALIAS REF PATTERN OFFSET LENGTH
    qio "write -P $3 $4 $5" "/machine/peripheral/$1/virtio-backend"
    "$qemu/qemu-io" -f raw -c "write -P $3 $4 $5" "$2" > /dev/null || fail "reference write"
}
gread() {         # gread ALIAS PATTERN OFFSET LENGTH: through QEMU, checked in the log
    qio "read -P $2 $3 $4" "/machine/peripheral/$1/virtio-backend"
}
# IMAGE holds what REF holds: qemu-img compare, as FORMAT
same_as_ref() {   # same_as_ref IMAGE FORMAT REF
    local out
    out=$("$qemu/qemu-img" compare -f "$2" -F raw "$1" "$3" 2>&1) ||
        fail "$(basename "$1") differs from the reference: $out"
}

scenario_resize() {
    local out t0 ms_a ms_b img_len fast_len grown vdb_disk md
    new_image vda 64M
    "$qemu/qemu-img" create -q -f raw "$dir/img/vdb.raw" 16M
    chown libvirt-qemu: "$dir/img/vdb.raw"
    "$qemu/qemu-img" create -q -f raw "$dir/ref-vda.raw" 64M
    "$qemu/qemu-img" create -q -f raw "$dir/ref-vdb.raw" 16M
    vdb_disk="<disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='$dir/img/vdb.raw'/><target dev='vdb' bus='virtio'/></disk>"
    # no throttle and a lax service level: only the operator switches
    md="<shadowtier xmlns=\"$ns\">
  <disk target=\"vda\" slo-latency-ms=\"1000\" chunk-size=\"65536\" prewarm=\"sequential\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" path=\"$dir/img/tiers/vda.fast\" cost-gib-month=\"0.12\"/>
  </disk>
  <disk target=\"vdb\" slo-latency-ms=\"1000\" prewarm=\"sequential\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" path=\"$dir/img/tiers/vdb.fast\"/>
  </disk>
</shadowtier>"
    start_domain "$(domain_xml "$md" "$vdb_disk")"
    start_agent
    wait_for 20 is_state vda attached || fail "vda not attached: $(lv_state vda)"
    wait_for 20 is_state vdb attached || fail "vdb not attached: $(lv_state vdb)"
    format_file_is shd-vda && format_file_is shd-vdb || fail "not under the format nodes: $(graph)"

    # a pattern on both disks, up to their last byte
    gwrite virtio-disk0 "$dir/ref-vda.raw" 0x11 0 4M
    gwrite virtio-disk0 "$dir/ref-vda.raw" 0x12 60M 4M
    gwrite virtio-disk1 "$dir/ref-vdb.raw" 0x21 0 4M
    gwrite virtio-disk1 "$dir/ref-vdb.raw" 0x22 12M 4M
    wait_for 30 tiers_synced vda || fail "vda: the fast tier did not get in sync"
    wait_for 30 tiers_synced vdb || fail "vdb: the fast tier did not get in sync"
    # vdb is resized while its fast tier serves it
    vsh "$dom" vdb switch fast > /dev/null || fail "virsh-shadow switch fast (vdb)"
    wait_for 10 is_active vdb fast || fail "vdb: no switch to fast: $(active_tier vdb)"
    log "patterns written, fast tiers synced, vdb on its fast tier; shadow nodes:" \
        "shd-vda $(node_size shd-vda) B (as long as the qcow2 image file), shd-vdb $(node_size shd-vdb) B"

    # grow: libvirt resizes its format node, above the shadow
    t0=$(now)
    out=$(v blockresize "$dom" vda 256M 2>&1) || fail "blockresize vda 256M: $out"
    ms_a=$("$py" -c "print(round(($(now) - $t0) * 1000))")
    t0=$(now)
    out=$(v blockresize "$dom" vdb 24M 2>&1) || fail "blockresize vdb 24M: $out"
    ms_b=$("$py" -c "print(round(($(now) - $t0) * 1000))")
    [ "$(dev_size virtio-disk0)" = 268435456 ] || fail "vda: the guest sees $(dev_size virtio-disk0) bytes, not 256 MiB"
    [ "$(dev_size virtio-disk1)" = 25165824 ] || fail "vdb: the guest sees $(dev_size virtio-disk1) bytes, not 24 MiB"
    # a raw disk's shadow grows with it, and every tier with the shadow
    [ "$(node_size shd-vdb)" = 25165824 ] || fail "shd-vdb is $(node_size shd-vdb) bytes long"
    [ "$(stat -c %s "$dir/img/vdb.raw")" = 25165824 ] || fail "vdb.raw did not grow"
    [ "$(stat -c %s "$dir/img/tiers/vdb.fast")" = 25165824 ] || fail "vdb.fast did not grow"
    log "blockresize vda 64M -> 256M (qcow2) in $ms_a ms, vdb 16M -> 24M (raw, on fast) in $ms_b ms:" \
        "the guest sees 256 MiB and 24 MiB; vdb.raw and vdb.fast are 24 MiB"
    "$qemu/qemu-img" resize -q -f raw "$dir/ref-vda.raw" 256M
    "$qemu/qemu-img" resize -q -f raw "$dir/ref-vdb.raw" 24M

    # writes past the old end; on vda past the image file's end, so that
    # qcow2 grows the shadow node as it writes
    img_len=$(node_size shd-vda)
    gwrite virtio-disk0 "$dir/ref-vda.raw" 0x13 64M 4M
    gwrite virtio-disk0 "$dir/ref-vda.raw" 0x14 112M 144M
    gwrite virtio-disk1 "$dir/ref-vdb.raw" 0x23 16M 8M
    grown=$(node_size shd-vda)
    [ "$grown" -gt "$img_len" ] || fail "shd-vda did not grow past its length ($img_len B)"
    log "written past the old ends: shd-vda grew from $img_len to $grown B as qcow2 allocated"
    for p in "0x11 0 4M" "0x12 60M 4M" "0x13 64M 4M" "0x14 112M 144M"; do gread virtio-disk0 $p; done
    for p in "0x21 0 4M" "0x22 12M 4M" "0x23 16M 8M"; do gread virtio-disk1 $p; done
    pattern_log_ok || fail "a read after the resize found other data"

    # shrink: the shadow node refuses (raw); qcow2 shrinks its own disk
    # before it truncates its file, as it would without a shadow
    out=$(v blockresize "$dom" vdb 8M 2>&1) && fail "blockresize vdb 8M (a shrink) succeeded"
    grep -q "Cannot shrink shadow node 'shd-vdb' from 25165824 to 8388608 bytes" <<< "$out" ||
        fail "shrink: unexpected message: $out"
    [ "$(dev_size virtio-disk1)" = 25165824 ] && [ "$(node_size shd-vdb)" = 25165824 ] ||
        fail "the refused shrink changed vdb's size"
    log "blockresize vdb 8M: refused: $(grep -o "Cannot shrink.*" <<< "$out")"
    out=$(v blockresize "$dom" vda 192M 2>&1) || fail "blockresize vda 192M (qcow2 shrink): $out"
    [ "$(dev_size virtio-disk0)" = 201326592 ] || fail "vda: $(dev_size virtio-disk0) bytes after a qcow2 shrink to 192M"
    "$qemu/qemu-img" resize -q --shrink -f raw "$dir/ref-vda.raw" 192M
    grep -q "Failed to truncate the tail of the image: Cannot shrink shadow node 'shd-vda'" \
        "$dir/cache/libvirt/qemu/log/$dom.log" || fail "no QEMU warning for the qcow2 file's tail"
    log "blockresize vda 192M: qcow2 shrank the guest's disk (libvirt 9.0 and QEMU do, shadow or not);" \
        "its file keeps its length (QEMU: 'Failed to truncate the tail of the image')"
    for p in "0x11 0 4M" "0x12 60M 4M" "0x13 64M 4M" "0x14 112M 80M"; do gread virtio-disk0 $p; done
    for p in "0x21 0 4M" "0x22 12M 4M" "0x23 16M 8M"; do gread virtio-disk1 $p; done
    pattern_log_ok || fail "a read after the shrink found other data"

    # every tier in sync, then the disks go back to libvirt: its own
    # storage nodes re-read the lengths and serve everything
    wait_for 60 tiers_synced vda || fail "vda: the fast tier is not in sync after the resize"
    wait_for 60 tiers_synced vdb || fail "vdb: the cheap tier is not in sync after the resize"
    vsh "$dom" vda detach > /dev/null || fail "virsh-shadow detach vda: $(lv_state vda)"
    vsh "$dom" vdb detach > /dev/null || fail "virsh-shadow detach vdb: $(lv_state vdb)"
    no_shadow_nodes vda && no_shadow_nodes vdb || fail "shadow nodes left: $(graph | grep shd-)"
    [ "$(dev_size virtio-disk0)" = 201326592 ] && [ "$(dev_size virtio-disk1)" = 25165824 ] ||
        fail "sizes after detach: vda $(dev_size virtio-disk0) vdb $(dev_size virtio-disk1)"
    for p in "0x12 60M 4M" "0x13 64M 4M" "0x14 112M 80M"; do gread virtio-disk0 $p; done
    gread virtio-disk1 0x23 16M 8M
    pattern_log_ok || fail "a read through libvirt's own nodes after detach found other data"
    grep -q "^read 8388608/8388608 bytes at offset 16777216" "$dir/cache/libvirt/qemu/log/$dom.log" ||
        fail "the HMP read of vdb's new end did not run"
    v destroy "$dom" > /dev/null || fail "virsh destroy"

    # byte for byte: each tier image is the disk's image, and holds the reference
    cmp "$dir/img/vda.qcow2" "$dir/img/tiers/vda.fast" || fail "vda.fast differs from vda.qcow2"
    cmp "$dir/img/vdb.raw" "$dir/img/tiers/vdb.fast" || fail "vdb.fast differs from vdb.raw"
    "$qemu/qemu-img" check -q "$dir/img/vda.qcow2" || fail "qemu-img check vda.qcow2"
    "$qemu/qemu-img" check -q -f qcow2 "$dir/img/tiers/vda.fast" || fail "qemu-img check vda.fast"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref-vda.raw"
    same_as_ref "$dir/img/tiers/vda.fast" qcow2 "$dir/ref-vda.raw"
    same_as_ref "$dir/img/vdb.raw" raw "$dir/ref-vdb.raw"
    same_as_ref "$dir/img/tiers/vdb.fast" raw "$dir/ref-vdb.raw"
    log "every tier image: identical to the disk's image (cmp) and to the reference (qemu-img compare)"
    echo "RESULT resize=ok qcow2-grow-ms=$ms_a raw-grow-ms=$ms_b shadow-grew-from=$img_len shadow-grew-to=$grown"
}

# ----------------------------------------------------------------- warm
child_stat() {   # child_stat TARGET CHILD KEY: from the shadow node's statistics
    qmp '{"execute":"query-blockstats","arguments":{"query-nodes":true}}' | json "
next(c['$3'] for n in d['return'] if n.get('node-name') == 'shd-$1'
     for c in n['driver-specific']['children'] if c['node-name'] == '$2')"
}
inserted_n() { grep -c "disk vda: shadow inserted" "$dir/shadowd.log"; }
# waits for insertion number N and prints how its tiers started
wait_inserted() {  # wait_inserted N
    wait_for 30 "$py" -c "import sys; sys.exit(0 if open('$dir/shadowd.log').read().count('disk vda: shadow inserted') >= $1 else 1)" ||
        fail "insertion $1 did not happen: $(lv_state vda)"
    wait_for 10 is_state vda attached || fail "not attached: $(lv_state vda)"
    grep "disk vda: shadow inserted" "$dir/shadowd.log" | sed -n "${1}p" | grep -o "tiers .*"
}
domain_down() { v domstate "$dom" 2> /dev/null | grep -q "shut off"; }
domain_running() { v domstate "$dom" 2> /dev/null | grep -q "^running"; }
# the fast tier serves the guest: every pattern written so far reads back
check_on_fast() {  # check_on_fast PATTERN-ARGS...
    wait_for 60 tiers_synced vda || fail "the fast tier did not get in sync"
    vsh "$dom" vda switch fast > /dev/null || fail "virsh-shadow switch fast"
    wait_for 10 is_active vda fast || fail "no switch to fast: $(active_tier vda)"
    for p in "$@"; do gread virtio-disk0 $p; done
    pattern_log_ok || fail "the fast tier served other data than the disk's image holds"
    vsh "$dom" vda switch cheap > /dev/null || fail "virsh-shadow switch cheap"
    wait_for 10 is_active vda cheap || fail "no switch back to cheap: $(active_tier vda)"
}

# After a cold start the fast tier is checked, not rewritten (copy-compare,
# on for a sync disk): its copy wrote the MiB that changed (and the qcow2
# metadata the writes touched), and found the rest identical
# (data only: what reads as zeroes is written as zeroes, not counted)
cold_rewrite() {   # cold_rewrite WHAT MIN-MIB MAX-MIB
    local copied compared
    copied=$(child_stat vda shd-vda-f1 copied-bytes)
    compared=$(child_stat vda shd-vda-f1 compared-bytes)
    log "$1: the fast tier's copy wrote $copied bytes, found $compared identical"
    [ "$copied" -ge $(($2 * 1048576)) ] || fail "$1: the copy wrote $copied bytes, less than the $2 MiB that changed"
    [ "$copied" -le $(($3 * 1048576)) ] || fail "$1: the copy wrote $copied bytes, more than $3 MiB"
    [ "$compared" -ge $((28 * 1048576)) ] || fail "$1: only $compared bytes compared identical"
}

scenario_warm() {
    local how copied_cold copied_warm valid size md pid
    # data that a cold start must copy
    image_and_ref "write -P 0x31 0 32M"
    md=$(fast_tier_md)
    start_domain "$(domain_xml "$md")"
    start_agent
    how=$(wait_inserted 1)
    log "first start: $how"
    grep -q "cold: no maps recorded yet" <<< "$how" || fail "first start: $how"
    graph_has "^shd-vda -metadata-> shd-vda-md$" || fail "no metadata child: $(graph | grep shd-)"
    [ "$(stat -c %a%U "$dir/img/tiers/vda.fast.meta")" = 600libvirt-qemu ] || fail "metadata image mode or owner"
    wait_for 60 tiers_synced vda || fail "the fast tier did not get in sync"
    copied_cold=$(child_stat vda shd-vda-f1 copied-bytes)
    size=$(node_size shd-vda)
    log "cold start: the fast tier copied $copied_cold bytes (shadow node $size bytes, 32 MiB of data)"
    # qcow2 allocates more: its file grows the shadow node as it writes,
    # and a warm start leaves the length as it is (it changes no file
    # before the maps are read)
    gwrite virtio-disk0 "$dir/ref.raw" 0x36 40M 4M
    [ "$(node_size shd-vda)" -gt "$size" ] || fail "the image did not grow the shadow node"
    size=$(node_size shd-vda)

    # 1. QEMU closes the shadow (destroy: SIGTERM), nothing touches the image
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 10 grep -q "domain $dom stopped" "$dir/shadowd.log" || fail "shadowd missed the stop"
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 2)
    log "untouched restart: $how"
    grep -q "^tiers warm" <<< "$how" || fail "an untouched restart was not warm: $how"
    wait_for 30 tiers_synced vda || fail "warm: the fast tier is not in sync"
    sleep 3
    copied_warm=$(child_stat vda shd-vda-f1 copied-bytes)
    valid=$(child_stat vda shd-vda-f1 valid-bytes)
    log "warm restart: the fast tier copied $copied_warm bytes after the restart ($valid valid of $size)"
    [ "$copied_warm" -lt $((size / 64)) ] || fail "warm restart copied $copied_warm bytes"
    [ "$(node_size shd-vda)" = "$size" ] || fail "the warm start changed the node's length"
    check_on_fast "0x31 0 32M" "0x36 40M 4M"
    gwrite virtio-disk0 "$dir/ref.raw" 0x35 48M 1M

    # 2. after a clean stop, a write to the image while the domain is down
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 10 grep -q "domain $dom stopped" "$dir/shadowd.log" || fail "shadowd missed the stop"
    "$qemu/qemu-io" -f qcow2 -c "write -P 0x32 0 4M" "$dir/img/vda.qcow2" > /dev/null || fail "qemu-io"
    "$qemu/qemu-io" -f raw -c "write -P 0x32 0 4M" "$dir/ref.raw" > /dev/null
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 3)
    log "image written while down (clean stop before): $how"
    grep -q "^tiers cold: the disk's image changed while the shadow was out" <<< "$how" ||
        fail "a write while down did not make the tiers cold: $how"
    check_on_fast "0x32 0 4M" "0x31 4M 28M" "0x35 48M 1M"
    cold_rewrite "a write while down" 4 6

    # 3. QEMU killed with the shadow in (an unclean stop), then a write
    pid=$(cat "$dir/run/libvirt/qemu/run/$dom.pid")
    kill -KILL "$pid" || fail "kill QEMU ($pid)"
    wait_for 20 domain_down || fail "the domain did not stop after QEMU was killed"
    "$qemu/qemu-io" -f qcow2 -c "write -P 0x33 4M 4M" "$dir/img/vda.qcow2" > /dev/null || fail "qemu-io"
    "$qemu/qemu-io" -f raw -c "write -P 0x33 4M 4M" "$dir/ref.raw" > /dev/null
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 4)
    log "QEMU killed, image written while down: $how"
    grep -q "^tiers cold: the shadow was not stopped cleanly" <<< "$how" ||
        fail "an unclean stop did not make the tiers cold: $how"
    check_on_fast "0x32 0 4M" "0x33 4M 4M" "0x31 8M 24M" "0x35 48M 1M"
    cold_rewrite "QEMU killed" 4 6

    # 4. a write between QEMU's start and the insertion (shadowd stopped)
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    stop_agent
    v start "$dom" > /dev/null || fail "virsh start"
    gwrite virtio-disk0 "$dir/ref.raw" 0x34 8M 4M
    start_agent
    how=$(wait_inserted 5)
    log "image written before the insertion: $how"
    grep -q "^tiers cold: the disk's image was written" <<< "$how" ||
        fail "a write before the insertion did not make the tiers cold: $how"
    check_on_fast "0x32 0 4M" "0x33 4M 4M" "0x34 8M 4M" "0x31 12M 20M" "0x35 48M 1M"
    cold_rewrite "a write before the insertion" 4 6

    # 5. and an untouched restart after all that is warm again
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 10 test "$(grep -c "domain $dom stopped" "$dir/shadowd.log")" -ge 4 || fail "shadowd missed the stop"
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 6)
    grep -q "^tiers warm" <<< "$how" || fail "the last restart was not warm: $how"
    # a shadowd restart adopts it; its switches name the metadata child
    stop_agent
    start_agent
    wait_for 15 grep -q "adopted (.*metadata child in place" "$dir/shadowd.log" ||
        fail "shadowd restart: not adopted with its metadata child: $(lv_state vda)"
    check_on_fast "0x34 8M 4M"

    # 6. a tier image written while the domain is down: the shadow node
    # itself sees that the tier's file changed and copies it again
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 10 test "$(grep -c "domain $dom stopped" "$dir/shadowd.log")" -ge 5 || fail "shadowd missed the stop"
    "$qemu/qemu-io" -f raw -c "write -P 0x77 0 4M" "$dir/img/tiers/vda.fast" > /dev/null || fail "qemu-io"
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 7)
    wait_for 30 tiers_synced vda || fail "the rewritten fast tier did not get in sync"
    log "fast tier image written while down: $how; the node checked it again"
    cold_rewrite "the fast tier written while down" 1 5
    check_on_fast "0x32 0 4M" "0x33 4M 4M" "0x34 8M 4M" "0x31 12M 20M"

    # 7. the guest powers off (ACPI S5 written to the PIIX4 PM control
    # port, as a guest's shutdown does): libvirt reports the shutdown while
    # QEMU still runs, then stops it (on_poweroff destroy); shadowd leaves
    # the shadow in for QEMU to close
    hmp "o /w 0x604 0x2000" > /dev/null || fail "HMP o"
    wait_for 20 domain_down || fail "the domain did not stop after the guest's poweroff"
    wait_for 10 test "$(grep -c "domain $dom stopped" "$dir/shadowd.log")" -ge 6 || fail "shadowd missed the stop"
    grep -q "shadow removed" "$dir/shadowd.log" && fail "the shutdown detached the shadow (the maps would be lost)"
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 8)
    grep -q "domain $dom: the guest shut down" "$dir/shadowd.log" || fail "libvirt's shutdown event did not come"
    log "guest poweroff (libvirt's shutdown event, then QEMU stopped), then start: $how"
    grep -q "^tiers warm" <<< "$how" || fail "a start after the guest's poweroff was not warm: $how"
    check_on_fast "0x32 0 4M" "0x33 4M 4M" "0x34 8M 4M" "0x31 12M 20M"
    v destroy "$dom" > /dev/null
    "$qemu/qemu-img" check -q "$dir/img/vda.qcow2" || fail "qemu-img check"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref.raw"
    same_as_ref "$dir/img/tiers/vda.fast" qcow2 "$dir/ref.raw"
    log "the image and the fast tier hold every write"
    echo "RESULT warm=ok cold-copied-bytes=$copied_cold warm-copied-bytes=$copied_warm node-bytes=$size"
}

# ----------------------------------------------------------------- lock
# another process opens IMAGE for writing (qemu-io and qemu-img without
# -U): QEMU's image lock must refuse it
refused() {       # refused WHAT IMAGE
    local out
    out=$("$qemu/qemu-io" -f qcow2 -c "write -P 0xee 1M 64k" "$2" 2>&1) &&
        fail "$1: qemu-io wrote $(basename "$2") while the domain runs: $out"
    grep -q 'Failed to get "write" lock' <<< "$out" || fail "$1: qemu-io: unexpected message: $out"
    out=$("$qemu/qemu-img" resize -f qcow2 "$2" +1M 2>&1) &&
        fail "$1: qemu-img resized $(basename "$2") while the domain runs: $out"
    grep -q 'Failed to get "write" lock' <<< "$out" || fail "$1: qemu-img: unexpected message: $out"
    out=$("$qemu/qemu-io" -f raw -c "write -P 0xee 0 512" "$2" 2>&1) &&
        fail "$1: qemu-io (raw) wrote $(basename "$2") while the domain runs: $out"
    grep -q 'Failed to get "write" lock' <<< "$out" || fail "$1: qemu-io raw: unexpected message: $out"
}
# the shadow is under the format node, on libvirt's own storage node
# (through shd-vda-base, a raw node that passes requests on), and no other
# node has the image open
shadow_on_libvirt_node() {
    format_file_is shd-vda && graph_has "^shd-vda -children.0-> shd-vda-base\$" &&
        graph_has "^shd-vda-base -file-> libvirt-[0-9]*-storage\$" &&
        [ "$(qmp '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' |
             json "sum(1 for n in d['return'] if n.get('file') == '$dir/img/vda.qcow2' and n['drv'] == 'file')")" = 1 ]
}

scenario_lock() {
    local how len0 len1 md
    image_and_ref "write -P 0x41 0 8M"
    md=$(fast_tier_md)
    start_domain "$(domain_xml "$md")"
    refused "libvirt's own nodes" "$dir/img/vda.qcow2"
    start_agent
    how=$(wait_inserted 1)
    log "cold insertion: $how"
    refused "cold insertion" "$dir/img/vda.qcow2"
    shadow_on_libvirt_node || fail "the shadow is not on libvirt's storage node: $(graph)"
    refused "cold insertion, the fast tier" "$dir/img/tiers/vda.fast"
    log "shadow in (cold): qemu-io and qemu-img cannot write the image or the fast tier"
    gwrite virtio-disk0 "$dir/ref.raw" 0x42 4M 2M

    # the image's file grows while shadowed: qcow2 allocates past its end
    len0=$(stat -c %s "$dir/img/vda.qcow2")
    gwrite virtio-disk0 "$dir/ref.raw" 0x43 16M 40M
    len1=$(stat -c %s "$dir/img/vda.qcow2")
    [ "$len1" -gt "$len0" ] || fail "the image did not grow ($len0 -> $len1 B)"
    [ "$(node_size shd-vda)" -ge "$len1" ] || fail "shd-vda is $(node_size shd-vda) B, the image $len1 B"
    log "qcow2 grew its file through the shadow: $len0 -> $len1 B"
    check_on_fast "0x41 0 4M" "0x42 4M 2M" "0x41 6M 2M" "0x43 16M 40M"
    refused "after growing" "$dir/img/vda.qcow2"

    # a warm insertion: the same, and the data intact
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 10 grep -q "domain $dom stopped" "$dir/shadowd.log" || fail "shadowd missed the stop"
    cmp "$dir/img/vda.qcow2" "$dir/img/tiers/vda.fast" || fail "vda.fast differs from vda.qcow2"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref.raw"
    v start "$dom" > /dev/null || fail "virsh start"
    how=$(wait_inserted 2)
    log "warm insertion: $how"
    grep -q "^tiers warm" <<< "$how" || fail "the restart was not warm: $how"
    shadow_on_libvirt_node || fail "the shadow is not on libvirt's storage node: $(graph)"
    refused "warm insertion" "$dir/img/vda.qcow2"
    gwrite virtio-disk0 "$dir/ref.raw" 0x44 60M 4M
    check_on_fast "0x41 0 4M" "0x42 4M 2M" "0x43 16M 40M" "0x44 60M 4M"
    refused "warm insertion, after writes" "$dir/img/vda.qcow2"
    log "shadow in (warm): qemu-io and qemu-img cannot write the image"

    # given back to libvirt: its node holds the lock again
    vsh "$dom" vda detach > /dev/null || fail "virsh-shadow detach: $(lv_state vda)"
    no_shadow_nodes vda || fail "shadow nodes left: $(graph | grep shd-)"
    format_file_is "libvirt-[0-9]*-storage" || fail "the format node's file is not libvirt's: $(graph)"
    refused "after detach" "$dir/img/vda.qcow2"
    gread virtio-disk0 0x44 60M 4M
    pattern_log_ok || fail "a read after detach found other data"
    v destroy "$dom" > /dev/null
    "$qemu/qemu-img" check -q "$dir/img/vda.qcow2" || fail "qemu-img check"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref.raw"
    same_as_ref "$dir/img/tiers/vda.fast" qcow2 "$dir/ref.raw"
    log "the image and the fast tier hold exactly the guest's writes"
    echo "RESULT lock=ok image-grew-from=$len0 image-grew-to=$len1"
}

# -------------------------------------------------------------- migrate
# A second "host": its own libvirtd, virtlogd and shadowd, with its own
# directories and host UUID, on the same storage
# Host 2 shares the file system, except $dir/img/local: its libvirtd (so its
# QEMU) and its shadowd run in a mount namespace where $h2/local is
# mounted there, storage only that host reaches (a host-local tier)
start_host2() {
    local i
    mkdir -p "$h2"/{home,cfg/libvirt,run,cache,data,local} "$dir/img/local"
    echo 'host_uuid = "5ad0ba5e-0000-4000-8000-000000000002"' > "$h2/cfg/libvirt/libvirtd.conf"
    chown -R libvirt-qemu: "$h2" "$dir/img/local"
    host=$h2 as_daemon /usr/sbin/virtlogd >> "$h2/virtlogd.log" 2>&1 &
    virtlogd2_pid=$!
    for i in $(seq 50); do
        [ -S "$h2/run/libvirt/virtlogd-sock" ] && break
        sleep 0.1
    done
    # unshare and mount as root, then as_daemon drops to the daemon user;
    # every exec keeps the pid, which nsenter uses for shadowd
    unshare -m --propagation private bash -c "mount --bind '$h2/local' '$dir/img/local' &&
        $(declare -f as_daemon); run_uid=$run_uid run_gid=$run_gid host='$h2' as_daemon /usr/sbin/libvirtd" \
        >> "$h2/libvirtd.log" 2>&1 &
    libvirtd2_pid=$!
    wait_for 10 virsh -c "$uri2" list || fail "the second libvirtd did not start"
    sed -e "s|$dir/control.sock|$h2/control.sock|" -e "s|$dir/history.db|$h2/history.db|" \
        "$dir/shadowd.conf" > "$h2/shadowd.conf"
}
start_agent2() {
    nsenter -t "$libvirtd2_pid" -m --wd="$PWD" "$shadowd" --config "$h2/shadowd.conf" --connect "$uri2" -v \
        >> "$h2/shadowd.log" 2>&1 &
    agent2_pid=$!
    wait_for 10 test -S "$h2/control.sock" || fail "shadowd (host 2) did not start"
}
v2() { virsh -c "$uri2" "$@"; }
qmp2() { v2 qemu-monitor-command "$dom" "$1"; }
ctl2() { "$shadowctl" --control "$h2/control.sock" "$@"; }

free_port() {
    "$py" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

# the 4 KiB writes of the load that QEMU completed, from the domain log
# of HOST-DIR, applied to the reference
load_to_ref() {   # load_to_ref HOST-DIR PATTERN
    local offs
    offs=$(grep -o "^wrote 4096/4096 bytes at offset [0-9]*" "$1/cache/libvirt/qemu/log/$dom.log" |
           awk '$6 >= 8388608 && $6 < 12582912 { print $6 }' | sort -un)
    [ -n "$offs" ] || fail "no write of the load completed"
    "$py" - "$dir/ref.raw" "$2" $offs << 'EOF2'
import sys
path, pat, offs = sys.argv[1], int(sys.argv[2], 16), sys.argv[3:]
with open(path, "r+b") as f:
    for o in offs:
        f.seek(int(o)); f.write(bytes([pat]) * 4096)
EOF2
    echo "$offs" | wc -l
}

migration_running() {
    v domjobinfo "$dom" 2> /dev/null | grep -q "^Data processed:.*[1-9]"
}
no_qemu_on_host1() { [ ! -e "$dir/run/libvirt/qemu/run/$dom.pid" ]; }

# host 2's side of the helpers, once the domain runs there
on_host2() {
    uri=$uri2
    ctl() { "$shadowctl" --control "$h2/control.sock" "$@"; }
    vsh() { SHADOWD_CONTROL=$h2/control.sock "$dir/virsh-shadow" --connect "$uri2" "$@"; }
    pattern_log_ok() { io_log_ok "$h2/cache/libvirt/qemu/log/$dom.log"; }
}

# and back
on_host1() {
    uri="qemu+unix:///session?socket=$dir/run/libvirt/libvirt-sock"
    ctl() { "$shadowctl" --control "$dir/control.sock" "$@"; }
    vsh() { SHADOWD_CONTROL=$dir/control.sock "$dir/virsh-shadow" --connect "$uri" "$@"; }
    pattern_log_ok() { io_log_ok "$dir/cache/libvirt/qemu/log/$dom.log"; }
}

host1_shut_off() {
    v domstate "$dom" 2> /dev/null | grep -q "shut off"
}

scenario_migrate() {
    local md port t0 mig_s mig_pid n_load how copied downtime out mig2_s local_copied
    image_and_ref "write -P 0x31 0 8M" "write -P 0x34 8M 4M"
    # fast on shared storage; local on storage each host has its own of
    md=$(fast_tier_md "" "<tier name=\"local\" path=\"$dir/img/local/vda.local\" host-local=\"yes\" cost-gib-month=\"0.2\"/>")
    start_host2
    start_domain "$(domain_xml "$md")"
    start_agent
    start_agent2
    how=$(wait_inserted 1)
    log "host 1: shadow inserted, $how"
    gwrite virtio-disk0 "$dir/ref.raw" 0x32 16M 4M
    wait_for 60 tiers_synced vda || fail "the fast tier did not get in sync"
    # the fast tier, switched to and back, serves the data before the move
    check_on_fast "0x31 0 8M" "0x34 8M 4M" "0x32 16M 4M"

    # a write load through the guest's device until the domain moves.
    # The monitor's qemu-io is no guest: a write it sends after the
    # migration stopped the VM and inactivated the nodes makes QEMU fail
    # an assertion (bdrv_co_write_req_prepare), with or without a shadow
    # (plain QEMU 10.0 does it too), and no delay makes sure the load
    # ends before that.  So the load stops before the migration begins;
    # the driver's iotest shadow-migrate writes during a migration.
    start_load 50 30 0x33 write
    sleep 2
    stop_pid "$load_pid"
    load_pid=
    port=$(free_port)
    t0=$(now)
    v migrate --live --unsafe "$dom" "$uri2" \
        --migrateuri "tcp://127.0.0.1:$port" > "$dir/migrate.out" 2>&1 &
    mig_pid=$!
    wait "$mig_pid" || fail "virsh migrate: $(cat "$dir/migrate.out")"
    mig_s=$("$py" -c "print(round($(now) - $t0, 2))")
    downtime=$(v2 domjobinfo "$dom" --completed 2> /dev/null | awk -F: '/^Total downtime/ { gsub(/[^0-9]/, "", $2); print $2 }')
    [ "$(v2 domstate "$dom")" = running ] || fail "the domain does not run on host 2: $(v2 domstate "$dom")"
    # the source's libvirt marks it shut off once its QEMU is gone, which
    # may come a moment after virsh migrate returned
    wait_for 10 host1_shut_off || fail "the domain still runs on host 1: $(v domstate "$dom" 2>&1)"
    n_load=$(load_to_ref "$dir" 0x33)
    log "migrated live in $mig_s s (downtime ${downtime:-?} ms); $n_load writes of the load completed on host 1"

    # host 1: the domain is gone, and shadowd with it
    wait_for 10 grep -q "domain $dom stopped" "$dir/shadowd.log" || fail "host 1's shadowd missed the move"
    [ -z "$(ctl libvirt --json | json "[x for x in d]" | tr -d '[]')" ] ||
        fail "host 1's shadowd still manages disks: $(ctl libvirt --json)"
    wait_for 10 no_qemu_on_host1 || fail "host 1's QEMU is still there"
    # its host-local tier image is gone from host 1 (fast's is shared)
    wait_for 10 test ! -e "$dir/img/local/vda.local" || fail "host 1 kept its host-local tier image"
    grep -q "removed its host-local image $dir/img/local/vda.local" "$dir/shadowd.log" ||
        fail "host 1's shadowd did not say it removed the host-local image"
    [ -e "$dir/img/tiers/vda.fast" ] && [ -e "$dir/img/tiers/vda.fast.meta" ] ||
        fail "host 1 removed a shared image"
    grep -q "domain $dom: paused for a migration" "$h2/shadowd.log" ||
        fail "host 2's shadowd did not wait for the migration to end"

    # host 2: its shadowd puts the shadow in once the domain runs there
    on_host2
    wait_for 30 grep -q "disk vda: shadow inserted" "$h2/shadowd.log" ||
        fail "host 2's shadowd did not insert the shadow: $(lv_state vda)"
    wait_for 10 is_state vda attached || fail "host 2: not attached: $(lv_state vda)"
    how=$(grep "disk vda: shadow inserted" "$h2/shadowd.log" | head -1 | grep -o "tiers .*")
    log "host 2: shadow inserted, $how"
    shadow_on_libvirt_node || fail "host 2: the shadow is not on libvirt's storage node: $(graph)"
    wait_for 60 tiers_synced vda || fail "host 2: the fast tier did not get in sync"
    copied=$(child_stat vda shd-vda-f1 copied-bytes)
    local_copied=$(child_stat vda shd-vda-f2 copied-bytes)
    log "host 2: the tiers are synced; $copied bytes copied on host 2 for fast (shared)," \
        "$local_copied for local (host 2's own image, re-warmed)"
    [ -s "$h2/local/vda.local" ] && [ ! -e "$dir/img/local/vda.local" ] ||
        fail "host 2's local tier image is not on host 2's own storage"
    [ "$local_copied" -gt 0 ] || fail "host 2 did not copy its host-local tier"
    # The source closed the maps cleanly at its inactivation and nothing
    # wrote the image since: the destination must not copy it again
    [ "${how%%:*}" = "tiers warm" ] && [ "$copied" = 0 ] ||
        fail "host 2: not warm after the migration ($how, $copied bytes copied)"

    # the guest goes on on host 2: every write, on the fast tier too
    gwrite virtio-disk0 "$dir/ref.raw" 0x35 20M 2M
    check_on_fast "0x31 0 8M" "0x32 16M 4M" "0x35 20M 2M"
    log "host 2: switched to fast and back; the data read back"

    # back to host 1, the shadow taken out first (the case of an image
    # that is not in sync, or of tiers only the source may use): on the
    # fast tier, switch back, detach, migrate; host 1 inserts it again
    vsh "$dom" vda switch fast > /dev/null || fail "virsh-shadow switch fast (host 2)"
    wait_for 10 is_active vda fast || fail "host 2: no switch to fast: $(active_tier vda)"
    gwrite virtio-disk0 "$dir/ref.raw" 0x36 24M 2M
    vsh "$dom" vda switch cheap > /dev/null || fail "virsh-shadow switch cheap (host 2)"
    wait_for 10 is_active vda cheap || fail "host 2: no switch back to cheap: $(active_tier vda)"
    vsh "$dom" vda detach > /dev/null || fail "virsh-shadow detach (host 2): $(lv_state vda)"
    no_shadow_nodes vda || fail "host 2: shadow nodes left after detach: $(graph | grep shd-)"
    port=$(free_port)
    t0=$(now)
    out=$(v2 migrate --live --unsafe "$dom" "qemu+unix:///session?socket=$dir/run/libvirt/libvirt-sock" \
          --migrateuri "tcp://127.0.0.1:$port" 2>&1) || fail "virsh migrate back: $out"
    mig2_s=$("$py" -c "print(round($(now) - $t0, 2))")
    on_host1
    [ "$(v domstate "$dom")" = running ] || fail "the domain does not run on host 1 again"
    wait_for 10 grep -q "domain $dom stopped" "$h2/shadowd.log" || fail "host 2's shadowd missed the move"
    wait_for 10 test ! -e "$h2/local/vda.local" || fail "host 2 kept its host-local tier image"
    wait_inserted 2 > "$dir/how2"
    log "detached on host 2, migrated back in $mig2_s s; host 1: shadow inserted, $(cat "$dir/how2")"
    shadow_on_libvirt_node || fail "host 1: the shadow is not on libvirt's storage node: $(graph)"
    check_on_fast "0x31 0 8M" "0x32 16M 4M" "0x35 20M 2M" "0x36 24M 2M"
    log "host 1: the fast tier synced again, switched to and back; the data read back"
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    "$qemu/qemu-img" check -q "$dir/img/vda.qcow2" || fail "qemu-img check"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref.raw"
    cmp "$dir/img/vda.qcow2" "$dir/img/tiers/vda.fast" || fail "vda.fast differs from vda.qcow2"
    log "the image holds every completed write (qemu-img compare with the reference); the fast tier is the image (cmp)"
    echo "RESULT migrate=ok migrate-s=$mig_s downtime-ms=${downtime:-?} load-writes=$n_load" \
         "dest-copied-bytes=$copied dest-local-copied-bytes=$local_copied dest=${how%%:*} detached-migrate-back-s=$mig2_s"
}

# ------------------------------------------------------------------ rbd
# The cluster's client side for QEMU, which runs as libvirt-qemu: the
# monitor and the bounded timeouts of the fixture's ceph.conf, no keyring
# (the key comes from a libvirt secret, as in production)
ceph_uuid=5ad0ba5e-cefe-4000-8000-000000000001
ceph_client_setup() {
    local key
    "$py" - "$CEPH_CONF" "$dir/ceph.conf" << 'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
out, sect = [], None
for line in open(src):
    t = line.strip()
    if t.startswith('['):
        sect = t
        if t in ('[global]', '[client]'):
            out.append(t)
        continue
    if sect == '[client]' and t:
        out.append(t)
    elif sect == '[global]' and t.split(' ')[0] in ('fsid', 'mon_host', 'auth_client_required'):
        out.append(t)
open(dst, 'w').write('\n'.join(out) + '\n')
PY
    chown libvirt-qemu: "$dir/ceph.conf"
    cat > "$dir/secret.xml" << EOF
<secret ephemeral='no' private='no'>
  <uuid>$ceph_uuid</uuid>
  <usage type='ceph'><name>client.admin secret</name></usage>
</secret>
EOF
    v secret-define "$dir/secret.xml" > /dev/null || fail "virsh secret-define"
    key=$(ceph auth print-key client.admin) || fail "ceph auth print-key"
    v secret-set-value "$ceph_uuid" --base64 "$key" > /dev/null 2>&1 ||
        fail "virsh secret-set-value"
}

rbd_disk_xml() {   # rbd_disk_xml POOL/IMAGE: the disk on RBD, as libvirt has it
    cat << EOF
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='rbd' name='$1'>
        <config file='$dir/ceph.conf'/>
      </source>
      <auth username='admin'>
        <secret type='ceph' uuid='$ceph_uuid'/>
      </auth>
      <target dev='vda' bus='virtio'/>
    </disk>
EOF
}

# QEMU reads a keyring for the rbd tiers of a disk that is not on RBD
# itself (no libvirt secret object to reuse): the same monitors, with a
# key file only the QEMU user can read
ceph_keyring_setup() {
    ceph auth get client.admin -o "$dir/client.admin.keyring" > /dev/null 2>&1 ||
        fail "ceph auth get"
    chown libvirt-qemu: "$dir/client.admin.keyring"
    chmod 600 "$dir/client.admin.keyring"
    "$py" - "$dir/ceph.conf" "$dir/ceph-keyring.conf" "$dir/client.admin.keyring" << 'PY'
import sys
src, dst, key = sys.argv[1:]
out = []
for line in open(src):
    out.append(line.rstrip('\n'))
    if line.strip() == '[global]':
        out.append('keyring = ' + key)
open(dst, 'w').write('\n'.join(out) + '\n')
PY
    chown libvirt-qemu: "$dir/ceph-keyring.conf"
}

tier_state() {   # tier_state DISK TIER
    ctl status "$dom.$1" --json 2> /dev/null |
        json "[t['state'] for t in d[0]['tiers'] if t['name'] == '$2'][0]"
}
is_synced() { [ "$(tier_state "$1" "$2")" = synced ]; }

# One round on the disk vda of the running domain: writes before the
# insertion and while the fast tier warms up, pre-warm to synced, switch
# to fast, writes there, switch back, every pattern read back through the
# guest's device on each tier.  Mirrors the writes into $dir/ref.raw.
rbd_round() {    # rbd_round LABEL
    local t0 t_sync t_sw t_back
    wio() { qio "write -P $1 $2 $3"; "$qemu/qemu-io" -f raw -c "write -P $1 $2 $3" "$dir/ref.raw" > /dev/null; }
    t0=$(now)
    start_agent
    wait_for 30 is_state vda attached || fail "$1: the shadow was not inserted: $(ctl libvirt "$dom.vda" --json)"
    log "$1: attached $("$py" -c "print(round($(now) - $t0, 2))") s after shadowd started"
    format_file_is shd-vda || fail "$1: the format node's file is not the shadow: $(graph)"
    graph_has "^shd-vda -metadata-> shd-vda-md$" || fail "$1: no metadata child: $(graph)"
    grep -q "domain $dom disk vda: .*tiers cold: .* is on RBD" "$dir/shadowd.log" ||
        fail "$1: the insertion was not cold for RBD: $(grep "disk vda" "$dir/shadowd.log" | tail -2)"
    graph_has "$RBD_EDGE" || fail "$1: no edge $RBD_EDGE: $(graph)"
    wio 0x12 4M 4M
    wio 0x13 40M 2M
    wait_for 60 is_synced vda fast || fail "$1: the fast tier did not get in sync: $(tier_state vda fast)"
    t_sync=$("$py" -c "print(round($(now) - $t0, 1))")
    log "$1: fast tier pre-warmed (synced) $t_sync s after shadowd started"
    t0=$(now)
    vsh "$dom" vda switch fast > /dev/null || fail "$1: virsh-shadow switch fast"
    wait_for 10 is_active vda fast || fail "$1: no switch to fast: $(active_tier vda)"
    t_sw=$("$py" -c "print(round($(now) - $t0, 2))")
    wio 0x14 20M 1M
    wio 0x15 63M 1M
    gread virtio-disk0 0x01 0 1M
    gread virtio-disk0 0x12 4M 4M
    gread virtio-disk0 0x14 20M 1M
    t0=$(now)
    vsh "$dom" vda switch cheap > /dev/null || fail "$1: virsh-shadow switch cheap"
    wait_for 10 is_active vda cheap || fail "$1: no switch back to cheap: $(active_tier vda)"
    t_back=$("$py" -c "print(round($(now) - $t0, 2))")
    gread virtio-disk0 0x13 40M 2M
    gread virtio-disk0 0x15 63M 1M
    pattern_log_ok || fail "$1: a read through the guest's device found other data"
    grep -q "^read 1048576/1048576 bytes at offset 66060288" \
        "$dir/cache/libvirt/qemu/log/$dom.log" || fail "$1: the HMP read did not run"
    log "$1: switched to fast in $t_sw s and back in $t_back s; every pattern read back through the guest"
    if [ -n "${RBD_DETACH:-}" ]; then
        # given back to libvirt's own node (through the hand-over node,
        # an rbd node for a disk on RBD), the guest goes on
        vsh "$dom" vda detach > /dev/null || fail "$1: virsh-shadow detach: $(lv_state vda)"
        format_file_is libvirt-1-storage || fail "$1: the format node is not back on libvirt's node: $(graph)"
        no_shadow_nodes vda || fail "$1: shadow nodes left after detach: $(graph | grep shd-)"
        # the tiers stop at the detach: they hold what the image held then
        cp "$dir/ref.raw" "$dir/ref-detach.raw"
        wio 0x16 48M 1M
        gread virtio-disk0 0x16 48M 1M
        gread virtio-disk0 0x14 20M 1M
        pattern_log_ok || fail "$1: a read after the detach found other data"
        log "$1: detached: libvirt-1-format -file-> libvirt-1-storage again, the data reads back"
    fi
    stop_agent
    v destroy "$dom" > /dev/null || fail "$1: virsh destroy"
    v undefine "$dom" > /dev/null || fail "$1: virsh undefine"
    RBD_RESULT="$RBD_RESULT $1-sync-s=$t_sync $1-switch-s=$t_sw $1-back-s=$t_back"
}

# the same bytes: FILE against the rbd image POOL/IMAGE (exported)
cmp_rbd() {      # cmp_rbd FILE POOL/IMAGE
    local out=$dir/export.raw
    rm -f "$out"
    rbd export --no-progress "$2" "$out" > /dev/null 2>&1 || fail "rbd export $2"
    [ "$(stat -c %s "$1")" = "$(stat -c %s "$out")" ] ||
        fail "$2 is $(stat -c %s "$out") bytes, $(basename "$1") $(stat -c %s "$1")"
    cmp "$1" "$out" || fail "$2 differs from $(basename "$1")"
}

# ref.raw (64 MiB, its first MiB 0x01) imported as the rbd image IMAGE,
# and the domain started with that image as its disk:
# rbd_disk_domain IMAGE METADATA
rbd_disk_domain() {
    "$qemu/qemu-img" create -q -f raw "$dir/ref.raw" 64M
    "$qemu/qemu-io" -f raw -c "write -P 0x01 0 1M" "$dir/ref.raw" > /dev/null
    rbd import --no-progress --image-feature layering "$dir/ref.raw" "$1" > /dev/null 2>&1 ||
        fail "rbd import"
    domain_xml "$2" | "$py" -c "
import sys, re
x = sys.stdin.read()
x = re.sub(r\"<disk type='file'.*?</disk>\", lambda m: sys.argv[1], x, flags=re.S)
print(x)" "$(rbd_disk_xml "$1")" > "$dir/rbd-domain.xml"
    start_domain "$(cat "$dir/rbd-domain.xml")"
}

scenario_rbd() {
    local md RBD_RESULT=""
    log "ceph fixture up in ${SHADOW_CEPH_STARTUP_S:-?} s"
    ceph_client_setup
    ceph_keyring_setup
    mkdir -p "$dir/img/tiers"
    chown libvirt-qemu: "$dir/img/tiers"
    printf '\n[libvirt]\ntier-dirs = %s\n' "$dir/img/tiers" >> "$dir/shadowd.conf"

    # (a) a qcow2 file disk whose fast tier is an rbd image that shadowd
    # creates (and its metadata image next to it, ssd/vda-fast.meta)
    new_image vda 64M
    "$qemu/qemu-io" -f qcow2 -c "write -P 0x01 0 1M" "$dir/img/vda.qcow2" > /dev/null
    "$qemu/qemu-img" create -q -f raw "$dir/ref.raw" 64M
    "$qemu/qemu-io" -f raw -c "write -P 0x01 0 1M" "$dir/ref.raw" > /dev/null
    md="<shadowtier xmlns=\"$ns\">
  <disk target=\"vda\" slo-latency-ms=\"1000\" chunk-size=\"65536\" prewarm=\"sequential\"
        rbd-conf=\"$dir/ceph-keyring.conf\" rbd-user=\"admin\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" rbd=\"ssd/vda-fast\" cost-gib-month=\"0.12\"/>
  </disk>
</shadowtier>"
    start_domain "$(domain_xml "$md")"
    RBD_EDGE="^shd-vda-f1 -file-> shd-vda-f1-rbd$" rbd_round file-disk
    grep -q "created the rbd image ssd/vda-fast" "$dir/shadowd.log" ||
        fail "shadowd did not say it created ssd/vda-fast"
    rbd info ssd/vda-fast.meta > /dev/null 2>&1 || fail "no metadata image ssd/vda-fast.meta"
    "$qemu/qemu-img" check -q "$dir/img/vda.qcow2" || fail "qemu-img check"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref.raw"
    cmp_rbd "$dir/img/vda.qcow2" ssd/vda-fast
    log "file-disk: the image holds the guest's writes (qemu-img compare), ssd/vda-fast is the image byte for byte (cmp)"
    # again: the images exist now, and are opened (the metadata image
    # emptied: always cold), not created
    start_domain "$(domain_xml "$md")"
    start_agent
    wait_for 30 is_state vda attached || fail "file-disk again: not inserted: $(lv_state vda)"
    wait_for 60 is_synced vda fast || fail "file-disk again: the fast tier did not sync"
    [ "$(grep -c "created the rbd image ssd/vda-fast " "$dir/shadowd.log")" = 1 ] ||
        fail "file-disk again: ssd/vda-fast was created again"
    [ "$(grep -c "tiers cold: a tier is on RBD" "$dir/shadowd.log")" = 2 ] ||
        fail "file-disk again: not cold: $(grep "disk vda" "$dir/shadowd.log" | tail -2)"
    stop_agent
    v destroy "$dom" > /dev/null
    v undefine "$dom" > /dev/null
    cmp_rbd "$dir/img/vda.qcow2" ssd/vda-fast
    log "file-disk again: the existing rbd images opened (not created), cold, synced again"

    # (b) a raw disk on RBD (libvirt's secret, whose QEMU object shadowd
    # reuses) with a file fast tier under tier-dirs
    md="<shadowtier xmlns=\"$ns\">
  <disk target=\"vda\" slo-latency-ms=\"1000\" chunk-size=\"65536\" prewarm=\"sequential\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" path=\"$dir/img/tiers/vda.fast\" cost-gib-month=\"0.12\"/>
  </disk>
</shadowtier>"
    rbd_disk_domain ssd/vda2 "$md"
    graph_has "^libvirt-1-format -file-> libvirt-1-storage$" || fail "libvirt's rbd disk: $(graph)"
    RBD_DETACH=1 RBD_EDGE="^shd-vda-base -file-> libvirt-1-storage$" rbd_round rbd-disk
    grep -q "tiers cold: the disk is on RBD" "$dir/shadowd.log" || log "note: no cold reason logged"
    [ "$(stat -c %U "$dir/img/tiers/vda.fast")" = libvirt-qemu ] || fail "tier image owner"
    cmp_rbd "$dir/ref.raw" ssd/vda2
    cmp "$dir/img/tiers/vda.fast" "$dir/ref-detach.raw" ||
        fail "vda.fast differs from the reference at the detach"
    log "rbd-disk: ssd/vda2 holds exactly the guest's writes, the fast tier vda.fast those until the detach (cmp with the references)"

    # (c) a disk on RBD with its fast tier on RBD too, with no cluster
    # settings in the metadata: the tier's node gets the disk's conf, user
    # and libvirt's secret object (QEMU has no keyring to fall back on)
    md="<shadowtier xmlns=\"$ns\">
  <disk target=\"vda\" slo-latency-ms=\"1000\" chunk-size=\"65536\" prewarm=\"sequential\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" rbd=\"ssd/vda3-fast\" cost-gib-month=\"0.12\"/>
  </disk>
</shadowtier>"
    rbd_disk_domain ssd/vda3 "$md"
    RBD_EDGE="^shd-vda-f1 -file-> shd-vda-f1-rbd$" rbd_round rbd-both
    grep -q "created the rbd image ssd/vda3-fast" "$dir/shadowd.log" ||
        fail "shadowd did not say it created ssd/vda3-fast"
    cmp_rbd "$dir/ref.raw" ssd/vda3
    cmp_rbd "$dir/ref.raw" ssd/vda3-fast
    log "rbd-both: ssd/vda3 and ssd/vda3-fast hold exactly the guest's writes (cmp with the reference)"
    echo "RESULT rbd=ok ceph-startup-s=${SHADOW_CEPH_STARTUP_S:-?}$RBD_RESULT"
}


# ---------------------------------------------------------------- writeback
# 4 KiB writes of distinct patterns through the guest's device at
# BASE + i * 64 KiB (each its own chunk), a flush after every 4th; a write
# is logged as it is sent (the last one may not have been done), a flush
# once the monitor answered it.  Stops at the first failure (QEMU or
# libvirtd gone).
start_wb_load() {   # start_wb_load BASE-MIB LOG
    (
        i=0
        while [ "$i" -lt 150 ]; do
            off=$(($1 * 1048576 + i * 65536 + (i % 16) * 4096))
            pat=$((i % 250 + 1))
            # logged first: a write the kill interrupts may still be done
            echo "w $off $pat" >> "$2"
            hmp "qemu-io -d $hmp_dev \"write -P $pat $off 4k\"" > /dev/null 2>&1 || break
            i=$((i + 1))
            if [ $((i % 4)) = 0 ]; then
                hmp "qemu-io -d $hmp_dev \"flush\"" > /dev/null 2>&1 || break
                echo "f" >> "$2"
            fi
        done
    ) &
    load_pid=$!
}

# Every write flushed before the kill reads back from the image; a write
# after the last flush (sent or done) reads back as written or as before
# (zeroes); then
# the image is compared byte for byte with a reference that has both.
check_wb() {   # check_wb LOG: prints FLUSHED/UNFLUSHED-PRESENT/UNFLUSHED-ABSENT
    local last w off pat out flushed=0 present=0 absent=0 i=0
    last=$(grep -n "^f" "$1" | tail -n 1 | cut -d: -f1)
    while read -r w off pat; do
        i=$((i + 1))
        [ "$w" = w ] || continue
        out=$("$qemu/qemu-io" -U -r -f qcow2 -c "read -P $pat $off 4k" "$dir/img/vda.qcow2" 2>&1)
        if [ "$i" -lt "${last:-0}" ]; then
            grep -q "^read " <<< "$out" && ! grep -q "verification failed" <<< "$out" ||
                fail "flushed write $off (pattern $pat) lost: $out"
            flushed=$((flushed + 1))
        elif grep -q "verification failed" <<< "$out"; then
            out=$("$qemu/qemu-io" -U -r -f qcow2 -c "read -P 0 $off 4k" "$dir/img/vda.qcow2" 2>&1)
            grep -q "verification failed" <<< "$out" && fail "unflushed write $off: torn or other data"
            absent=$((absent + 1))
            continue
        else
            present=$((present + 1))
        fi
        "$qemu/qemu-io" -f raw -c "write -P $pat $off 4k" "$dir/ref.raw" > /dev/null
    done < "$1"
    "$qemu/qemu-img" compare -U -f qcow2 -F raw "$dir/img/vda.qcow2" "$dir/ref.raw" > "$dir/cmp.out" 2>&1 ||
        fail "the image differs from the reference: $(head -n 2 "$dir/cmp.out")"
    echo "$flushed/$present/$absent"
}

settles() { grep -c "image settled" "$dir/hook.log"; }
settles_above() { [ "$(settles)" -gt "$1" ]; }

wb_round() {   # wb_round N KIND: fast tier active, write load, KIND killed at a random moment
    local n=$1 kind=$2 delay lg=$dir/wb-load-$1.log res how pid t0
    wait_for 60 tiers_synced vda || fail "round $n: the fast tier did not get in sync"
    vsh "$dom" vda switch fast > /dev/null || fail "virsh-shadow switch fast"
    wait_for 10 is_active vda fast || fail "no switch to fast: $(active_tier vda)"
    : > "$lg"
    start_wb_load $((16 + (n - 1) * 12)) "$lg"
    delay=$((RANDOM % 2200 + 300))
    sleep "$("$py" -c "print($delay / 1000)")"
    case "$kind" in
    qemu)
        pid=$(cat "$dir/run/libvirt/qemu/run/$dom.pid")
        kill -KILL "$pid" || fail "kill QEMU"
        wait "$load_pid"; load_pid=
        ;;
    shadowd)
        kill -KILL "$agent_pid"; agent_pid=; rm -f "$dir/control.sock"
        sleep 0.5
        stop_pid "$load_pid"; load_pid=
        start_agent
        wait_for 30 is_state vda attached || fail "shadowd restarted: not adopted: $(lv_state vda)"
        v destroy "$dom" > /dev/null || fail "virsh destroy"
        ;;
    libvirtd)
        kill -KILL "$libvirtd_pid"
        wait "$load_pid"; load_pid=
        start_libvirtd
        wait_for 30 is_state vda attached || fail "libvirtd restarted: not adopted: $(lv_state vda)"
        v destroy "$dom" > /dev/null || fail "virsh destroy"
        ;;
    esac
    wait_for 20 domain_down || fail "the domain did not stop"
    grep -q "write failed\|Pattern verification failed" "$dir/cache/libvirt/qemu/log/$dom.log" &&
        fail "a write of the load failed"
    t0=$(date +%s%N)
    v start "$dom" > /dev/null 2> "$dir/start.err" || fail "virsh start: $(cat "$dir/start.err")"
    res=$(check_wb "$lg") || fail "round $n ($kind killed): $res"
    how=$(wait_inserted $((n + 1)))
    grep -q "^tiers warm" <<< "$how" || fail "round $n: the restart after the settle was not warm: $how"
    log "round $n: $kind killed after $delay ms; $(grep -c '^w' "$lg") writes, $(grep -c '^f' "$lg")" \
        "flushes; flushed/unflushed present/unflushed absent: $res, identical to the reference;" \
        "start $((($(date +%s%N) - t0) / 1000000)) ms; $(tail -n 1 "$dir/hook.log")"
}

scenario_writeback() {
    local seed md out how n_settles n=0 rc
    seed=${WB_SEED:-$((RANDOM * 32768 + RANDOM))}
    log "seed $seed (WB_SEED=$seed runs it again)"
    RANDOM=$seed
    image_and_ref "write -P 0x31 0 8M"
    md=$(fast_tier_md 'write-mode="async"' '<policy min-dwell="600" switch-back-after="600"/>')
    start_domain "$(domain_xml "$md")"
    start_agent
    wait_inserted 1 > /dev/null
    for kind in ${WB_KINDS:-qemu shadowd libvirtd}; do
        n=$((n + 1))
        wb_round "$n" "$kind"
    done

    # managedsave + restore: QEMU saves the guest and exits with the fast
    # tier active and newer than the image (a completed write not flushed
    # by the guest, too); the hook settles the image at release, libvirt
    # restores the guest on it, and the guest reads every write
    n=$((n + 1))
    wait_for 60 tiers_synced vda || fail "managedsave: the fast tier did not get in sync"
    vsh "$dom" vda switch fast > /dev/null || fail "virsh-shadow switch fast"
    wait_for 10 is_active vda fast || fail "no switch to fast"
    qio "write -P 0x55 52M 64k"
    qio "flush"
    qio "write -P 0x56 53M 4k"
    "$qemu/qemu-io" -f raw -c "write -P 0x55 52M 64k" -c "write -P 0x56 53M 4k" "$dir/ref.raw" > /dev/null
    n_settles=$(settles)
    v managedsave "$dom" > "$dir/save.out" 2>&1 || fail "virsh managedsave: $(cat "$dir/save.out")"
    wait_for 20 domain_down || fail "managedsave: the domain did not stop"
    wait_for 20 settles_above "$n_settles" ||
        fail "managedsave: no settle at release: $(tail -n 2 "$dir/hook.log")"
    v start "$dom" > /dev/null 2> "$dir/start.err" || fail "virsh start (restore): $(cat "$dir/start.err")"
    out=$(hmp "qemu-io -d $hmp_dev \"read -P 0x55 52M 64k\"")$(hmp "qemu-io -d $hmp_dev \"read -P 0x56 53M 4k\"")
    grep -q "verification failed\|failed" <<< "$out" && fail "managedsave: the restored guest lost a write: $out"
    how=$(wait_inserted $((n + 1)))
    grep -q "^tiers warm" <<< "$how" || fail "managedsave: the restore was not warm: $how"
    log "managedsave + restore: settled at release ($(tail -n 1 "$dir/hook.log" | head -c 160));" \
        "the restored guest reads both writes (one unflushed); shadow back, $how"

    # migration: refused by the hook while the disk is write-back
    out=$(v dumpxml "$dom" | "$repo/build/agent/shadowtier-libvirt-hook" "$dom" migrate begin - 2>&1) &&
        fail "the hook let a write-back domain migrate"
    grep -q "migration refused" <<< "$out" || fail "migrate: $out"
    log "migration: refused by the hook (${out:0:100}...)"

    # a tier image that is gone: the image cannot be settled, and QEMU must
    # not start on it (moved away while QEMU still writes it through its fd)
    vsh "$dom" vda switch fast > /dev/null || fail "virsh-shadow switch fast"
    wait_for 10 is_active vda fast || fail "no switch to fast"
    qio "write -P 0x44 60M 64k"
    qio "flush"
    "$qemu/qemu-io" -f raw -c "write -P 0x44 60M 64k" "$dir/ref.raw" > /dev/null
    mv "$dir/img/tiers/vda.fast" "$dir/img/tiers/vda.fast.away"
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    v start "$dom" > /dev/null 2> "$dir/start.err" && fail "QEMU started on an image that was not settled"
    grep -q "is missing" "$dir/start.err" || fail "virsh start failed without saying why: $(cat "$dir/start.err")"
    log "tier image missing: start refused: $(grep -o 'disk vda is write-back.*' "$dir/start.err" | head -c 200)"
    mv "$dir/img/tiers/vda.fast.away" "$dir/img/tiers/vda.fast"
    v start "$dom" > /dev/null 2> "$dir/start.err" || fail "virsh start: $(cat "$dir/start.err")"
    wait_inserted $((n + 2)) > /dev/null
    # settled, then the fast tier synced with the image active: equal
    wait_for 60 tiers_synced vda || fail "the fast tier did not get in sync"
    sleep 6   # a periodic commit: the close has nothing left to copy
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 20 domain_down || fail "the domain did not stop"
    # QEMU killed while qcow2 allocated clusters may leave some allocated
    # and unused (exit status 3: leaks, harmless); corruption is 2
    rc=0
    "$qemu/qemu-img" check "$dir/img/vda.qcow2" > "$dir/check.out" 2>&1 || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "qemu-img check ($rc): $(head -n 5 "$dir/check.out")"
    [ "$rc" = 0 ] || log "qemu-img check: $(grep -m 1 -i "leak" "$dir/check.out") (left by a kill)"
    same_as_ref "$dir/img/vda.qcow2" qcow2 "$dir/ref.raw"
    cmp "$dir/img/vda.qcow2" "$dir/img/tiers/vda.fast" || fail "vda.fast differs from vda.qcow2"
    log "the image is the reference (qemu-img compare) and the fast tier the image (cmp);" \
        "settles: $(grep -o 'bytes), [0-9]* ms' "$dir/hook.log" | sed 's/bytes), //' | tr '\n' ' ')"
    echo "RESULT writeback=ok seed=$seed rounds=$n"
}

# ----------------------------------------------------------------- move
move_field() {    # move_field KEY: of vda's move, as shadowd reports it
    ctl libvirt "$dom.vda" --json 2> /dev/null |
        json "str(d[0].get('move', {}).get('$1', 'none')) if d else 'none'"
}
move_is() { [ "$(move_field state)" = "$1" ]; }
source_of() {     # source_of [--inactive]: vda's image in libvirt's definition
    v dumpxml "$@" "$dom" | "$py" -c '
import sys, xml.etree.ElementTree as ET
d = ET.fromstring(sys.stdin.read())
print([x.find("source").get("file") for x in d.iter("disk") if x.find("target").get("dev") == "vda"][0])'
}
meta_xml() { v metadata "$dom" "$ns" 2> /dev/null; v metadata "$dom" "$ns" --config 2> /dev/null; }
# writes through the guest's device while the move copies, each also on
# the reference: PATTERN at 16 MiB + 64 KiB steps, at most N
writes_during() {   # writes_during PATTERN N STATE...: while the move is in one of them
    local i=0
    while [[ " ${*:3} " == *" $(move_field state) "* ]] && [ $i -lt "$2" ]; do
        gwrite virtio-disk0 "$dir/ref.raw" "$1" $((16 * 1048576 + i * 65536)) 64k
        i=$((i + 1))
    done
    echo $i
}

scenario_move() {
    local md out img1 img2 n t0 secs pid
    mkdir -p "$dir/img/tiers" && chown libvirt-qemu: "$dir/img/tiers"
    image_and_ref "write -P 0x31 0 8M" "write -P 0x32 40M 8M"
    # the copies run at 2 MiB/s (--copy-speed): 16 MiB of data take
    # seconds, long enough to abort, kill and write during them
    md="<shadowtier xmlns=\"$ns\">
  <disk target=\"vda\" slo-latency-ms=\"1000\" chunk-size=\"65536\" prewarm=\"sequential\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" path=\"$dir/img/tiers/vda.fast\" cost-gib-month=\"0.12\"/>
    <tier name=\"mid\" path=\"$dir/img/tiers/vda.mid\" cost-gib-month=\"0.05\"/>
    <policy min-dwell=\"3600\"/>
  </disk>
</shadowtier>"
    start_domain "$(domain_xml "$md")"
    start_agent
    wait_for 20 is_state vda attached || fail "vda not attached: $(lv_state vda)"
    wait_for 60 tiers_synced vda || fail "the tiers did not get in sync"

    # refused at once, nothing changes
    out=$(vsh "$dom" vda move gold 2>&1) && fail "a move to an unknown tier succeeded"
    grep -q "has no tier 'gold'" <<< "$out" || fail "move gold: $out"
    out=$(vsh "$dom" vda move cheap 2>&1) && fail "a move to the disk's own tier succeeded"
    grep -q "already the disk's own image" <<< "$out" || fail "move cheap: $out"
    log "refused: an unknown tier, the origin ($out)"

    # abort while copying: the disk stays on its image, the copy goes
    vsh "$dom" vda move fast --copy-speed 2097152 --no-wait > /dev/null || fail "move fast --no-wait"
    wait_for 10 move_is copying || fail "the move is $(move_field state), not copying"
    img1=$(move_field image)
    [ -e "$img1" ] || fail "no copy at $img1 while copying"
    n=$(writes_during 0x41 15 copying)
    vsh "$dom" vda move --abort > /dev/null || fail "move --abort: $(move_field state)"
    wait_for 20 move_is aborted || fail "the move is $(move_field state), not aborted"
    [ -e "$img1" ] && fail "the aborted copy $img1 is left"
    [ "$(source_of)" = "$dir/img/vda.qcow2" ] && [ "$(source_of --inactive)" = "$dir/img/vda.qcow2" ] ||
        fail "after the abort libvirt names $(source_of) / $(source_of --inactive)"
    grep -q "<move" <<< "$(meta_xml)" && fail "the aborted move's record is left: $(meta_xml)"
    wait_for 20 is_state vda attached || fail "vda not attached after the abort: $(lv_state vda)"
    log "abort while copying ($n writes during the copy): the disk is still vda.qcow2, $(basename "$img1") removed, shadow attached"

    # records shadowd did not write for this disk (a definition copied from
    # another domain during its move, a hand-made one) name files to
    # delete: they are dropped, and nothing is touched
    echo precious > "$dir/img/victim1"
    echo precious > "$dir/img/victim2"
    for rec in "<move tier=\"fast\" image=\"$dir/img/victim1\" old=\"$dir/img/vda.qcow2\" domain=\"$(v domuuid "$dom")\" old-id=\"0.0:0:0\"/>" \
               "<move tier=\"fast\" image=\"$dir/img/vda.qcow2\" old=\"$dir/img/victim2\" domain=\"$(v domuuid "$dom")\" old-id=\"0.0:0:0\"/>" \
               "<move tier=\"fast\" image=\"$dir/img/tiers/other-vda.qcow2\" old=\"$dir/img/victim2\" domain=\"6a1b2e05-0000-4000-8000-000000000001\"/>"; do
        set_metadata "${md/<policy/$rec
    <policy}"
        wait_for 20 move_settled || fail "a forged record was not dropped: $(meta_xml)"
        grep -q "does not describe a move of this disk" <<< "$(move_field reason)" ||
            fail "forged record: $(move_field state): $(move_field reason)"
    done
    [ "$(cat "$dir/img/victim1" "$dir/img/victim2")" = "$(printf 'precious\nprecious')" ] ||
        fail "a forged record deleted a file"
    [ -f "$dir/img/vda.qcow2" ] && [ -f "$dir/img/tiers/vda.fast" ] || fail "a forged record deleted an image"
    [ "$(source_of)" = "$dir/img/vda.qcow2" ] || fail "a forged record moved the disk: $(source_of)"
    log "3 forged <move> records dropped, no file touched: $(move_field reason)"

    # QEMU killed while copying: failed, the copy removed, the record gone
    vsh "$dom" vda move fast --copy-speed 2097152 --no-wait > /dev/null || fail "move fast --no-wait (2)"
    wait_for 10 move_is copying || fail "the move is $(move_field state), not copying (2)"
    img1=$(move_field image)
    pid=$(cat "$dir/run/libvirt/qemu/run/$dom.pid")
    kill -9 "$pid" || fail "cannot kill QEMU ($pid)"
    wait_for 20 move_is failed || fail "the move is $(move_field state) after QEMU was killed"
    grep -q "the domain stopped during the copy" <<< "$(move_field reason)" || fail "reason: $(move_field reason)"
    [ -e "$img1" ] && fail "the copy $img1 is left after QEMU died"
    [ "$(source_of --inactive)" = "$dir/img/vda.qcow2" ] || fail "the definition names $(source_of --inactive)"
    grep -q "<move" <<< "$(v metadata "$dom" "$ns" --config)" && fail "the record is left: $(v metadata "$dom" "$ns" --config)"
    log "QEMU killed while copying: $(move_field reason)"
    wait_for 20 domain_down || fail "the domain did not stop"
    v start "$dom" > /dev/null || fail "virsh start"
    wait_for 30 is_state vda attached || fail "vda not attached after the restart: $(lv_state vda)"
    wait_for 60 tiers_synced vda || fail "the tiers did not get in sync (2)"
    # the guest's writes so far are in the image (sync mode): read them back
    for p in "0x31 0 8M" "0x32 40M 8M"; do gread virtio-disk0 $p; done
    pattern_log_ok || fail "a read after the failed move found other data"

    # shadowd killed while copying, under writes: the next shadowd takes
    # the move up from the record and ends it; the old image is kept
    t0=$(now)
    vsh "$dom" vda move fast --copy-speed 2097152 --keep-as "$dir/img/vda.old.qcow2" --no-wait > /dev/null ||
        fail "move fast --keep-as"
    wait_for 10 move_is copying || fail "the move is $(move_field state), not copying (3)"
    img1=$(move_field image)
    (for i in $(seq 30); do
        gwrite virtio-disk0 "$dir/ref.raw" 0x42 $((16 * 1048576 + i * 65536)) 64k
    done) &
    pid=$!
    sleep 1
    kill -9 "$agent_pid"
    wait "$agent_pid" 2> /dev/null
    agent_pid=
    rm -f "$dir/control.sock"
    grep -qF "image=\"$img1\"" <<< "$(meta_xml)" || fail "no record of the move to $img1: $(meta_xml)"
    start_agent
    wait "$pid" || fail "the writes during the kill failed"
    for i in $(seq 20); do
        gwrite virtio-disk0 "$dir/ref.raw" 0x43 $((24 * 1048576 + i * 65536)) 64k
    done
    wait_for 60 move_is done || fail "the resumed move is $(move_field state): $(move_field reason)"
    secs=$("$py" -c "print(round($(now) - $t0, 1))")
    [ "$(move_field resumed)" = True ] || fail "the move was not taken up from the record"
    [ "$(source_of)" = "$img1" ] || fail "the live definition names $(source_of), not $img1"
    [ "$(source_of --inactive)" = "$img1" ] || fail "the persistent definition names $(source_of --inactive)"
    [ -e "$dir/img/vda.qcow2" ] && fail "the old image is still at its path"
    [ -f "$dir/img/vda.old.qcow2" ] || fail "the old image was not kept as vda.old.qcow2"
    [ -e "$dir/img/tiers/vda.fast" ] && fail "the fast tier's shadow image is left"
    [ -e "$dir/img/tiers/vda.fast.meta" ] && fail "the old arrangement's metadata image is left"
    out=$(v metadata "$dom" "$ns")
    grep -q "move" <<< "$out" && fail "the record is left: $out"
    grep -q 'name="fast" origin="yes"' <<< "$out" || fail "fast is not the origin: $out"
    grep -q 'name="cheap"' <<< "$out" && fail "the old tier is still described: $out"
    grep -q 'name="mid"' <<< "$out" || fail "the mid tier is gone: $out"
    wait_for 30 is_state vda attached || fail "no shadow over the new image: $(lv_state vda)"
    format_file_is shd-vda || fail "the shadow is not under the format node: $(graph)"
    grep -q "vda.old.qcow2" <<< "$(ls -l "/proc/$(cat "$dir/run/libvirt/qemu/run/$dom.pid")/fd")" && fail "QEMU still holds the old image"
    for i in $(seq 20); do
        gwrite virtio-disk0 "$dir/ref.raw" 0x44 $((32 * 1048576 + i * 65536)) 64k
    done
    log "shadowd killed while copying, restarted: the move resumed and ended in $secs s;" \
        "libvirt names $(basename "$img1") (live and persistent); the old image kept as vda.old.qcow2;" \
        "tiers now: $(grep -o 'tier name="[a-z]*"[^/]*' <<< "$out" | tr '\n' ' ')"

    # a second move, to the last other tier: the disk keeps no shadow
    wait_for 60 tiers_synced vda || fail "the mid tier did not get in sync over the new image"
    out=$(vsh "$dom" vda move mid 2>&1) || fail "move mid: $out"
    img2=$(move_field image)
    [ "$(source_of)" = "$img2" ] && [ "$(source_of --inactive)" = "$img2" ] ||
        fail "after the move to mid libvirt names $(source_of) / $(source_of --inactive)"
    [ -e "$img1" ] && fail "the moved-from image $img1 was not deleted"
    [ -e "$dir/img/tiers/vda.mid" ] && fail "the mid tier's shadow image is left"
    [ "$(ls "$dir/img/tiers")" = "$(basename "$img2")" ] || fail "left in the tier directory: $(ls "$dir/img/tiers")"
    v metadata "$dom" "$ns" > /dev/null 2>&1 && fail "metadata left: $(v metadata "$dom" "$ns")"
    wait_for 20 no_shadow_nodes vda || fail "shadow nodes left: $(graph | grep shd-)"
    log "move to mid: $(tail -n 1 <<< "$out"); no shadow left, no metadata"

    # every write is in the final image, byte for byte
    for p in "0x31 0 8M" "0x32 40M 8M"; do gread virtio-disk0 $p; done
    pattern_log_ok || fail "a read after the moves found other data"
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 20 domain_down || fail "the domain did not stop"
    "$qemu/qemu-img" check -q "$img2" || fail "qemu-img check $img2"
    same_as_ref "$img2" qcow2 "$dir/ref.raw"
    v start "$dom" > /dev/null || fail "virsh start without metadata on the moved image"
    [ "$(source_of)" = "$img2" ] || fail "the restarted domain uses $(source_of)"
    log "the moved image is the reference (qemu-img compare); the domain starts on it"
    echo "RESULT move=ok resumed-move-s=$secs"
}

# ---------------------------------------------------------- move-verify
# --verify of a libvirt move: x-shadow-verify-copy compares libvirt's copy
# with the disk through QEMU before the pivot
copied_past() { "$py" -c "import sys; sys.exit(not float('$(move_field done-bytes)') >= $1)"; }
no_verify_job() { ! grep -q shadowd-verify <<< "$(qmp '{"execute":"query-jobs"}')"; }
scenario_move_verify() {
    local md out img1 img2 n node hoff spid port metrics bad=$((1048576 + 4660))
    mkdir -p "$dir/img/tiers" && chown libvirt-qemu: "$dir/img/tiers"
    image_and_ref "write -P 0x31 0 8M" "write -P 0x32 40M 8M"
    md="<shadowtier xmlns=\"$ns\">
  <disk target=\"vda\" slo-latency-ms=\"1000\" chunk-size=\"65536\" prewarm=\"sequential\">
    <tier name=\"cheap\" origin=\"yes\"/>
    <tier name=\"fast\" path=\"$dir/img/tiers/vda.fast\" cost-gib-month=\"0.12\"/>
    <tier name=\"mid\" path=\"$dir/img/tiers/vda.mid\" cost-gib-month=\"0.05\"/>
    <policy min-dwell=\"3600\"/>
  </disk>
</shadowtier>"
    # the metrics endpoint on a free port: the move's shadowd_disk_move_*
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    sed -i "s/^metrics-port = 0$/metrics-port = $port/" "$dir/shadowd.conf"
    start_domain "$(domain_xml "$md")"
    start_agent
    wait_for 20 is_state vda attached || fail "vda not attached: $(lv_state vda)"
    wait_for 60 tiers_synced vda || fail "the tiers did not get in sync"

    # abort while verifying (2 MiB/s: 32 s for the disk's 64 MiB)
    vsh "$dom" vda move fast --verify --verify-speed 2097152 --no-wait > /dev/null ||
        fail "move fast --verify --no-wait"
    wait_for 20 move_is verifying || fail "the move is $(move_field state), not verifying: $(move_field reason)"
    img1=$(move_field image)
    wait_for 10 copied_past 1 || fail "the verify shows no progress: $(move_field done-bytes)"
    [ "$(move_field total-bytes)" = 67108864.0 ] || fail "verify total: $(move_field total-bytes)"
    grep -q shadowd-verify-vda <<< "$(qmp '{"execute":"query-jobs"}')" || fail "no verify job in QEMU"
    metrics=$("$py" -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode(), end='')") ||
        fail "no metrics on port $port"
    grep -q "^shadowd_disk_move_state{disk=\"$dom.vda\",tier=\"fast\",state=\"verifying\"} 1$" <<< "$metrics" ||
        fail "the metrics do not show the move verifying: $(grep shadowd_disk_move <<< "$metrics")"
    grep -q "^shadowd_disk_move_total_bytes{disk=\"$dom.vda\",tier=\"fast\"} 67108864$" <<< "$metrics" ||
        fail "the metrics do not show the verify's total: $(grep shadowd_disk_move <<< "$metrics")"
    out=$(promtool check metrics <<< "$metrics" 2>&1) || fail "promtool check metrics: $out"
    vsh "$dom" vda move --abort > /dev/null || fail "move --abort while verifying: $(move_field state)"
    wait_for 20 move_is aborted || fail "the move is $(move_field state), not aborted"
    [ -e "$img1" ] && fail "the aborted copy $img1 is left"
    no_verify_job || fail "the verify job is left: $(qmp '{"execute":"query-jobs"}')"
    [ "$(source_of)" = "$dir/img/vda.qcow2" ] && [ "$(source_of --inactive)" = "$dir/img/vda.qcow2" ] ||
        fail "after the abort libvirt names $(source_of) / $(source_of --inactive)"
    move_settled || fail "the aborted move's record is left: $(meta_xml)"
    wait_for 20 is_state vda attached || fail "vda not attached after the abort: $(lv_state vda)"
    log "abort while verifying: the disk is still vda.qcow2, $(basename "$img1") and the verify job gone;" \
        "the metrics showed it verifying (promtool check metrics: clean)"

    # shadowd killed while verifying, and the copy cancelled by hand before
    # it starts again: the restarted shadowd ends the move; its verify job
    # and libvirt's nodes of the copy go, and QEMU holds the file no more
    vsh "$dom" vda move fast --verify --verify-speed 2097152 --no-wait > /dev/null ||
        fail "move fast --verify (kill)"
    wait_for 20 move_is verifying || fail "the move is $(move_field state), not verifying (kill)"
    img1=$(move_field image)
    kill -KILL "$agent_pid"; wait "$agent_pid" 2> /dev/null; agent_pid=
    rm -f "$dir/control.sock"
    v blockjob "$dom" vda --abort > /dev/null || fail "virsh blockjob --abort"
    start_agent
    wait_for 30 move_is failed || fail "the resumed move is $(move_field state): $(move_field reason)"
    grep -q "the copy was lost before its pivot" <<< "$(move_field reason)" || fail "reason: $(move_field reason)"
    move_settled || fail "the record is left: $(meta_xml)"
    [ -e "$img1" ] && fail "the copy $img1 is left"
    no_verify_job || fail "the killed shadowd's verify job is left: $(qmp '{"execute":"query-jobs"}')"
    grep -qF "$img1" <<< "$(qmp '{"execute":"query-named-block-nodes"}')" && fail "QEMU still has nodes on $img1"
    ls -l "/proc/$(cat "$dir/run/libvirt/qemu/run/$dom.pid")/fd" | grep -qF "$img1" && fail "QEMU still holds $img1"
    wait_for 20 is_state vda attached || fail "vda not attached after the lost copy: $(lv_state vda)"
    log "shadowd killed while verifying, the copy cancelled by hand: $(move_field reason); no job, node or open file left"

    # a byte of the copy changed behind QEMU's back once copied: the verify
    # finds it, says where, and the move fails with the disk where it was
    vsh "$dom" vda move fast --verify --copy-speed 8388608 --no-wait > /dev/null ||
        fail "move fast --verify (2)"
    wait_for 10 move_is copying || fail "the move is $(move_field state), not copying"
    img1=$(move_field image)
    wait_for 30 copied_past 16777216 || fail "the copy did not get past 16 MiB: $(move_field done-bytes)"
    node=$(graph | awk '$2 == "-target->" { print $3 }' | head -n 1)
    [ -n "$node" ] || fail "no copy target in the graph: $(graph)"
    hmp "qemu-io $node flush" > /dev/null    # its L2 tables to the file
    hoff=$("$qemu/qemu-img" map --output=json --image-opts \
           "driver=qcow2,file.driver=file,file.locking=off,file.filename=$img1" |
           json "[e['offset'] + $bad - e['start'] for e in d if e['data'] and e['start'] <= $bad < e['start'] + e['length']][0]")
    "$py" -c "
f = open('$img1', 'r+b'); f.seek($hoff); b = f.read(1)[0]; f.seek($hoff); f.write(bytes([b ^ 0x5a]))"
    wait_for 60 move_is failed || fail "the move is $(move_field state) with a changed copy: $(move_field reason)"
    out=$(move_field reason)
    grep -q "the verify found the copy wrong: Node '$node' differs from node '[^']*' that copies it at offset $bad" <<< "$out" ||
        fail "reason: $out"
    grep -q "the disk is still $dir/img/vda.qcow2, the copy was removed" <<< "$out" || fail "reason: $out"
    [ -e "$img1" ] && fail "the wrong copy $img1 is left"
    no_verify_job || fail "the verify job is left"
    [ "$(source_of)" = "$dir/img/vda.qcow2" ] && [ "$(source_of --inactive)" = "$dir/img/vda.qcow2" ] ||
        fail "after the failed verify libvirt names $(source_of) / $(source_of --inactive)"
    move_settled || fail "the failed move's record is left: $(meta_xml)"
    wait_for 20 is_state vda attached || fail "vda not attached after the failed verify: $(lv_state vda)"
    log "a byte of the copy changed at guest offset $bad (file offset $hoff): $out"

    # a verified move under guest writes, through both states
    wait_for 60 tiers_synced vda || fail "the tiers did not get in sync (2)"
    vsh "$dom" vda move fast --verify --verify-speed 16777216 --no-wait > /dev/null ||
        fail "move fast --verify (3)"
    n=$(writes_during 0x45 60 preparing copying verifying)
    wait_for 60 move_is done || fail "the verified move is $(move_field state): $(move_field reason)"
    img1=$(move_field image)
    [ "$(move_field verify)" = True ] || fail "the move does not say it verified"
    [ "$(move_field verify-s)" != none ] || fail "no verify time"
    [ "$(source_of)" = "$img1" ] && [ "$(source_of --inactive)" = "$img1" ] ||
        fail "after the verified move libvirt names $(source_of) / $(source_of --inactive)"
    [ -e "$dir/img/vda.qcow2" ] && fail "the old image is still at its path"
    for p in "0x31 0 8M" "0x32 40M 8M"; do gread virtio-disk0 $p; done
    pattern_log_ok || fail "a read after the verified move found other data"
    log "verified move under $n guest writes: verify $(move_field verify-s) s at $(move_field verify-bps) bytes/s"
    # each state is in the history, as a plain disk's move's
    wait_for 30 is_state vda attached || fail "no shadow over the new image: $(lv_state vda)"
    out=$(vsh "$dom" vda history --decisions --json) || fail "history --decisions: $out"
    "$py" -c "
import json, sys
r = [x for x in json.loads(sys.argv[1]) if x.get('kind') == 'move']
reasons = [x.get('reason', '') for x in r]
assert 'verifying' in reasons and any(x.startswith('done: the old image') for x in reasons), reasons
" "$out" || fail "the history lacks the move's states: $out"

    # libvirtd killed while verifying, started again: the move waits for
    # it, takes itself up from its record, verifies again and ends; its
    # state never says failed meanwhile
    wait_for 60 tiers_synced vda || fail "the mid tier did not get in sync over the new image"
    vsh "$dom" vda move mid --verify --verify-speed 8388608 --no-wait > /dev/null || fail "move mid --verify"
    wait_for 20 move_is verifying || fail "the move to mid is $(move_field state): $(move_field reason)"
    img2=$(move_field image)
    (while :; do move_field state; sleep 0.2; done) > "$dir/states" 2>&1 &
    spid=$!
    kill -KILL "$libvirtd_pid"
    wait "$libvirtd_pid" 2> /dev/null
    sleep 3
    grep -q "libvirt does not answer" <<< "$(move_field reason)" || fail "while libvirtd is away: $(move_field state): $(move_field reason)"
    start_libvirtd
    wait_for 90 move_is done || fail "after libvirtd's restart the move is $(move_field state): $(move_field reason)"
    kill "$spid"; wait "$spid" 2> /dev/null
    grep -q "failed" "$dir/states" && fail "the move said failed while libvirtd restarted: $(sort "$dir/states" | uniq -c | tr '\n' ' ')"
    [ "$(move_field resumed)" = True ] || fail "the move was not taken up from its record"
    [ "$(source_of)" = "$img2" ] && [ "$(source_of --inactive)" = "$img2" ] ||
        fail "after the move to mid libvirt names $(source_of) / $(source_of --inactive)"
    [ -e "$img1" ] && fail "the moved-from image $img1 is left"
    no_verify_job || fail "a verify job is left: $(qmp '{"execute":"query-jobs"}')"
    for p in "0x31 0 8M" "0x32 40M 8M"; do gread virtio-disk0 $p; done
    pattern_log_ok || fail "a read after the move to mid found other data"
    log "libvirtd killed while verifying and started again: states seen $(sort -u "$dir/states" | tr '\n' ' '); the move ended: $(move_field reason)"
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 20 domain_down || fail "the domain did not stop"
    same_as_ref "$img2" qcow2 "$dir/ref.raw"
    log "the moved image is the reference (qemu-img compare)"
    out=$(vsh "$dom" vda move fast 2>&1) && fail "a move of a stopped domain's disk was accepted"
    grep -q "moves while its domain runs" <<< "$out" || fail "move of a stopped domain: $out"
    log "a stopped domain's disk: $out"
    echo "RESULT move-verify=ok writes=$n"
}

# ------------------------------------------------------------ move-kill
# MOVE_KILL_ROUNDS (3) moves, each with shadowd killed at a random moment
# (MOVE_KILL_SEED), and QEMU with it one round in three; then shadowd (and
# the domain) start again and the move ends one way or the other.  After
# each: libvirt names an image that exists, the record is gone, no copy is
# left over, and every write the guest completed reads back.
move_settled() {  # no record in the metadata, live or persistent
    ! grep -q "<move" <<< "$(meta_xml)"
}
scenario_move_kill() {
    local seed rounds r tier delay kill_qemu before after state pid wpid n=0 img verify
    seed=${MOVE_KILL_SEED:-$((RANDOM * 32768 + RANDOM))}
    rounds=${MOVE_KILL_ROUNDS:-3}
    log "seed $seed (MOVE_KILL_SEED=$seed runs it again)"
    RANDOM=$seed
    mkdir -p "$dir/img/tiers" && chown libvirt-qemu: "$dir/img/tiers"
    image_and_ref "write -P 0x31 0 8M" "write -P 0x32 40M 8M"
    start_domain "$(domain_xml)"
    start_agent
    for r in $(seq "$rounds"); do
        tier=t$r
        v metadata "$dom" "$ns" --key shadow --live --config --set "<shadowtier>
<disk target=\"vda\" slo-latency-ms=\"1000\" prewarm=\"sequential\">
  <tier name=\"own$r\" origin=\"yes\" cost-gib-month=\"0.02\"/>
  <tier name=\"$tier\" path=\"$dir/img/tiers/vda.$tier\" cost-gib-month=\"0.12\"/>
</disk></shadowtier>" > /dev/null || fail "round $r: cannot set the metadata"
        wait_for 30 is_state vda attached || fail "round $r: not attached: $(lv_state vda)"
        wait_for 60 tiers_synced vda || fail "round $r: the tier did not get in sync"
        before=$(source_of)
        delay=$("$py" -c "import random; random.seed($seed + $r); print(round(random.uniform(0, 5), 2))")
        kill_qemu=$((RANDOM % 3 == 0))
        # one move in two verified (64 MiB at 32 MiB/s after a 4 s copy)
        verify=()
        [ $((RANDOM % 2)) = 1 ] && verify=(--verify --verify-speed 33554432)
        vsh "$dom" vda move "$tier" --copy-speed 16777216 "${verify[@]}" --no-wait > /dev/null ||
            fail "round $r: move $tier"
        # writes until the flag file appears; each one completed on the
        # guest's device before it goes to the reference
        rm -f "$dir/stop-writes"
        echo 0 > "$dir/writes-n"
        (i=0; while [ ! -e "$dir/stop-writes" ] && [ $i -lt 256 ]; do
            gwrite virtio-disk0 "$dir/ref.raw" "0x$((50 + r))" $((16 * 1048576 + i * 65536)) 64k
            i=$((i + 1))
            echo $i > "$dir/writes-n"
        done) &
        wpid=$!
        sleep "$delay"
        state=$(move_field state)
        kill -KILL "$agent_pid"; wait "$agent_pid" 2> /dev/null; agent_pid=
        rm -f "$dir/control.sock"
        touch "$dir/stop-writes"
        wait "$wpid" || fail "round $r: a write failed"
        if [ "$kill_qemu" = 1 ]; then
            pid=$(cat "$dir/run/libvirt/qemu/run/$dom.pid")
            kill -KILL "$pid"
            wait_for 20 domain_down || fail "round $r: the domain did not stop"
        fi
        log "round $r: killed shadowd$([ "$kill_qemu" = 1 ] && echo " and QEMU") after $delay s, while the${verify:+ verified} move was $state"
        start_agent
        [ "$kill_qemu" = 1 ] && { v start "$dom" > /dev/null || fail "round $r: virsh start"; }
        wait_for 60 move_settled || fail "round $r: the move did not settle: $(meta_xml)"
        after=$(source_of)
        [ "$(source_of --inactive)" = "$after" ] || fail "round $r: live $after, persistent $(source_of --inactive)"
        [ -f "$after" ] || fail "round $r: libvirt names $after, which does not exist"
        if [ "$after" = "$before" ]; then
            # not moved: the copy is gone, the old arrangement stays
            img=$(ls "$dir/img/tiers" | grep "^$dom-vda" | grep -vx "$(basename "$before")" || true)
            [ -z "$img" ] || fail "round $r: left in the tier directory: $img"
            log "round $r: not moved; the disk is still $(basename "$before")"
        else
            n=$((n + 1))
            [ -e "$before" ] && fail "round $r: the old image $before is still there"
            [ -e "$dir/img/tiers/vda.$tier" ] && fail "round $r: the tier's shadow image is left"
            log "round $r: moved to $(basename "$after")"
        fi
        wait_for 20 domain_running || fail "round $r: the domain is not running"
        no_verify_job || fail "round $r: a verify job is left: $(qmp '{"execute":"query-jobs"}')"
        for p in "0x31 0 8M" "0x32 40M 8M" "0x$((50 + r)) 16M $(($(cat "$dir/writes-n") * 65536))"; do
            gread virtio-disk0 $p
        done
        pattern_log_ok || fail "round $r: a read found other data than written"
    done
    v destroy "$dom" > /dev/null || fail "virsh destroy"
    wait_for 20 domain_down || fail "the domain did not stop"
    same_as_ref "$(source_of)" qcow2 "$dir/ref.raw"
    log "the final image $(basename "$(source_of)") is the reference (qemu-img compare)"
    echo "RESULT move-kill=ok seed=$seed rounds=$rounds moved=$n"
}

case "$scenario" in
writeback) scenario_writeback ;;
rbd) scenario_rbd ;;
lock) scenario_lock ;;
migrate) scenario_migrate ;;
warm) scenario_warm ;;
resize) scenario_resize ;;
move) scenario_move ;;
move-kill) scenario_move_kill ;;
move-verify) scenario_move_verify ;;
main) scenario_main ;;
events) scenario_events ;;
operations) scenario_operations ;;
shutdown) scenario_shutdown ;;
hung) scenario_hung ;;
*) echo "unknown scenario $scenario"; exit 2 ;;
esac
