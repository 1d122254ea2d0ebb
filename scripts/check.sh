#!/usr/bin/env bash
# Run every test: the shadow driver's iotests (raw and qcow2 children; the
# RBD ones on a throwaway Ceph cluster, tests/ceph/) and unit tests in
# QEMU's own frameworks, the kill tests (KILL_ROUNDS, 24), the
# stress test (STRESS_OPS, 4000 operations, and STRESS_CRASH_STATES, 200),
# the agent's unit tests (with the layering check and promtool on the metrics)
# and integration tests, the libvirt tests (a private libvirtd with a TCG
# domain), the same unit tests and the libvirt shutdown test under
# AddressSanitizer and UBSan, a bounded QMP fuzz run of the shadow driver
# and a short fuzz run of the agent.  Prints the time of each phase, then
# ends with "N passed, N failed, N skipped".
#
# ITESTS="shadow-basic ..." limits the iotests; FORMATS="raw" the formats;
# ITEST_JOBS (2) how many iotests run at a time.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log=build/check-logs
rm -rf "$log"
mkdir -p "$log"

passed=0 failed=0 skipped=0
failures=()
failed_logs=()   # meson logs with a failing test: their failing lines are shown
failed_diffs=()  # iotests TAP logs with a failing test: their diffs are shown

# TAP from iotests' check: "ok FMT TEST", "not ok FMT TEST", "ok FMT TEST # SKIP"
count_tap() {
    local file=$1 what=$2 line
    while IFS= read -r line; do
        case "$line" in
            "not ok "*) failed=$((failed + 1)); failures+=("$what: ${line#not ok }") ;;
            "ok "*"# SKIP"*) skipped=$((skipped + 1)) ;;
            "ok "*) passed=$((passed + 1)) ;;
        esac
    done < "$file"
}

# meson test's summary: "Ok: N", "Fail: N", "Skipped: N", ...
count_meson() {
    local file=$1 what=$2 ok fail skip
    ok=$(awk '/^Ok:/ { print $2 }' "$file")
    fail=$(awk '/^(Fail|Unexpected Pass|Timeout):/ { n += $NF } END { print n + 0 }' "$file")
    skip=$(awk '/^(Skipped|Expected Fail):/ { n += $NF } END { print n + 0 }' "$file")
    if [ -z "$ok" ]; then
        failed=$((failed + 1)); failures+=("$what: meson test did not run")
        return
    fi
    passed=$((passed + ok)); failed=$((failed + fail)); skipped=$((skipped + skip))
    if [ "$fail" -gt 0 ]; then
        failed_logs+=("$file")
        failures+=("$what: $(grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)' "$file" | sort -u | sed 's/  */ /g' | tr '\n' ';')")
    fi
}

# Each phase's wall time, listed at the end: what to trim when make check
# nears its time budget
timings=()
phase_name="" phase_start=$SECONDS
phase() {
    phase_end
    phase_name=$1 phase_start=$SECONDS
    echo "== $1"
}
phase_end() {
    [ -n "$phase_name" ] || return 0
    timings+=("$(printf '%5d s  %s' $((SECONDS - phase_start)) "${phase_name%%:*}")")
    phase_name=""
}

phase "iotests of the shadow driver"
tests=${ITESTS:-$(cd tests/qemu-iotests/tests && ls shadow-* | grep -v '\.out$' | tr '\n' ' ')}
for fmt in ${FORMATS:-raw qcow2}; do
    (cd build/qemu/tests/qemu-iotests && ./check -tap -j "${ITEST_JOBS:-2}" "-$fmt" $tests) > "$log/iotests-$fmt.tap" 2>&1
    grep -E '^(not )?ok ' "$log/iotests-$fmt.tap"
    count_tap "$log/iotests-$fmt.tap" "iotests"
    if grep -q '^not ok ' "$log/iotests-$fmt.tap"; then
        failed_diffs+=("$log/iotests-$fmt.tap")
    fi
    if ! grep -qE '^(not )?ok ' "$log/iotests-$fmt.tap"; then
        # a wrong ITESTS name or a broken ./check runs nothing: say so
        failed=$((failed + 1))
        failures+=("iotests $fmt: nothing ran ($(head -n 1 "$log/iotests-$fmt.tap"))")
    fi
    # The RBD faults' timings, measured by shadow-rbd
    if [ -f "$log/shadow-rbd-$fmt.json" ]; then
        echo "   shadow-rbd ($fmt) timings: $(python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' "$log/shadow-rbd-$fmt.json")"
    fi
done

phase "unit tests of the shadow driver and of crc32c (QEMU's GTest framework)"
# GLib prints a GTest binary's plan first, and on a failed assertion
# "Bail out!" and aborts without a "not ok" line: the exit status and the
# plan decide too, not the "not ok" lines alone
unit_tap() {
    local bin=$1 name=$2 tap="$log/unit-$2.tap" rc=0 plan ran
    "$bin" --tap > "$tap" 2>&1 || rc=$?
    grep -E '^(not )?ok ' "$tap"
    count_tap "$tap" "unit"
    plan=$(sed -nE 's/^1\.\.([0-9]+).*/\1/p' "$tap" | head -n 1)
    ran=$(grep -cE '^(not )?ok ' "$tap")
    if [ -z "$plan" ] || [ "$ran" -ne "$plan" ] ||
       { [ "$rc" -ne 0 ] && ! grep -q '^not ok ' "$tap"; }; then
        failed=$((failed + 1))
        failures+=("unit: $name exited with $rc after $ran of ${plan:-no} planned tests, see $tap")
    fi
}
unit_tap build/qemu/tests/unit/test-shadow test-shadow
unit_tap build/qemu/tests/unit/test-shadow-crc32c test-shadow-crc32c

phase "kill tests: qemu-storage-daemon killed during pre-warm, hydration and writes (make soak runs more)"
/usr/bin/python3 tests/kill/shadow-kill.py --rounds "${KILL_ROUNDS:-24}" > "$log/kill.log" 2>&1
grep -E '^(not )?ok |^# kill tests: .* passed' "$log/kill.log" | cut -c1-160
count_tap "$log/kill.log" "kill"
if ! grep -q '^# kill tests: .* passed' "$log/kill.log"; then
    failed=$((failed + 1)); failures+=("kill: did not finish, see $log/kill.log")
fi

phase "stress test: random guest I/O, switches, child changes, faults, kills and crash states, against a model (make soak runs more)"
/usr/bin/python3 tests/stress/shadow-stress.py --ops "${STRESS_OPS:-4000}" \
    --crash-states "${STRESS_CRASH_STATES:-200}" > "$log/stress.log" 2>&1
grep -E '^(not )?ok |^# stress: ' "$log/stress.log" | cut -c1-240
count_tap "$log/stress.log" "stress"
if ! grep -q '^# stress: ' "$log/stress.log"; then
    failed=$((failed + 1)); failures+=("stress: did not finish, see $log/stress.log")
fi

phase "QMP fuzz of the shadow driver: the corpus of past aborts, then ${QMP_FUZZ_SEEDS:-0-199} seeds (make fuzz runs longer)"
# Bad options must never abort or hang QEMU: tests/fuzz/README.md
/usr/bin/python3 tests/fuzz/shadow-qmp-fuzz.py --seeds "${QMP_FUZZ_SEEDS:-0-199}" \
    --steps 40 --jobs 2 --minimize-new --minimize-budget 120 \
    > "$log/qmp-fuzz.log" 2>&1
grep -E '^(not )?ok ' "$log/qmp-fuzz.log" | cut -c1-200
count_tap "$log/qmp-fuzz.log" "qmp-fuzz"
if ! grep -q '^# QMP fuzz: ' "$log/qmp-fuzz.log"; then
    failed=$((failed + 1)); failures+=("qmp-fuzz: did not finish, see $log/qmp-fuzz.log")
fi

phase "agent unit tests"
meson test -C build/agent-build --print-errorlogs > "$log/agent.log" 2>&1
grep -E '^ *[0-9]+/[0-9]+ ' "$log/agent.log"
count_meson "$log/agent.log" "agent"

phase "agent integration tests (real qemu-storage-daemon, fio over NBD)"
# (the list is read whole first, as below)
integration_tests=$(meson test -C build/agent-build --list --suite integration 2>/dev/null)
if grep -q 'integration-' <<< "$integration_tests"; then
    meson test -C build/agent-build --suite integration --num-processes 2 --print-errorlogs \
        > "$log/integration.log" 2>&1
    grep -E '^ *[0-9]+/[0-9]+ ' "$log/integration.log"
    count_meson "$log/integration.log" "integration"
else
    failed=$((failed + 1)); failures+=("integration: meson lists no integration test")
fi

phase "agent libvirt tests (a private libvirtd, a TCG domain on build/qemu)"
# (the list is read whole first: grep -q closing the pipe early would fail
# the pipeline under pipefail)
libvirt_tests=$(meson test -C build/agent-build --list --suite libvirt 2>/dev/null)
if grep -q 'libvirt-' <<< "$libvirt_tests"; then
    meson test -C build/agent-build --suite libvirt --print-errorlogs > "$log/libvirt.log" 2>&1
    grep -E '^ *[0-9]+/[0-9]+ ' "$log/libvirt.log"
    count_meson "$log/libvirt.log" "libvirt"
else
    failed=$((failed + 1)); failures+=("libvirt: no libvirt tests (shadowd built without libvirt-dev?)")
fi

phase "agent unit tests under AddressSanitizer and UBSan"
if scripts/build-agent.sh --asan > "$log/agent-asan-build.log" 2>&1; then
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C build/agent-asan --print-errorlogs > "$log/agent-asan.log" 2>&1
    grep -E '^ *[0-9]+/[0-9]+ ' "$log/agent-asan.log"
    count_meson "$log/agent-asan.log" "agent (asan)"
    phase "agent libvirt shutdown test under AddressSanitizer and UBSan"
    asan_libvirt=$(meson test -C build/agent-asan --list --suite libvirt-asan 2>/dev/null)
    if grep -q 'libvirt-' <<< "$asan_libvirt"; then
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            meson test -C build/agent-asan --suite libvirt-asan --print-errorlogs \
            > "$log/libvirt-asan.log" 2>&1
        grep -E '^ *[0-9]+/[0-9]+ ' "$log/libvirt-asan.log"
        count_meson "$log/libvirt-asan.log" "libvirt (asan)"
    else
        failed=$((failed + 1)); failures+=("libvirt (asan): no libvirt tests in the ASan build")
    fi
else
    failed=$((failed + 1)); failures+=("agent (asan): build failed, see $log/agent-asan-build.log")
fi

phase "fuzz targets, a short run (make fuzz runs them longer)"
if scripts/build-agent.sh --fuzz > "$log/agent-fuzz-build.log" 2>&1; then
    meson test -C build/agent-fuzz --suite fuzz --print-errorlogs > "$log/fuzz.log" 2>&1
    grep -E '^ *[0-9]+/[0-9]+ ' "$log/fuzz.log"
    count_meson "$log/fuzz.log" "fuzz"
else
    failed=$((failed + 1)); failures+=("fuzz: build failed, see $log/agent-fuzz-build.log")
fi

phase_end
echo "== time per phase"
printf '%s\n' "${timings[@]}"

# The lines around each failure, so that a CI log alone shows why
for f in "${failed_logs[@]}"; do
    echo "== $f: the lines before each failure"
    grep -E -B12 '(^|[ :])FAIL: |^not ok |ERROR:|Assertion|runtime error' "$f" | cut -c1-300 | tail -n 60
done
# check prints a failed iotest's diff against its .out to stderr, into
# the TAP log: what the test printed that it should not have
for f in "${failed_diffs[@]}"; do
    # Every failed case and its exception first: the tail below shows
    # only the last traceback
    echo "== $f: the failed cases of the failed iotests"
    grep -E '^\+(ERROR|FAIL): |^\+[A-Za-z_.]*(Error|Exception|Hang|Timeout|Shutdown|timeout)[A-Za-z]*: ' "$f" |
        cut -c1-300 | head -n 40
    echo "== $f: what the failed iotests printed (the last 60 lines)"
    grep -E '^\+' "$f" | grep -v '^+++ ' | cut -c1-300 | tail -n 60
done
if [ ${#failures[@]} -gt 0 ]; then
    echo "== failures (logs in $log/)"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
