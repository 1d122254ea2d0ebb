# Shell helpers shared by the agent's integration and libvirt tests:
# sourced, not run.  Callers set $py (python3) before they log.

skip() { echo "SKIP: $*"; exit 77; }

now() { date +%s.%N; }
t_start=$(now)
elapsed() { "$py" -c "print(round($(now) - $t_start, 1))"; }
log() { printf '%s [%6.1f s] %s\n' "$(date +%H:%M:%S)" "$(elapsed)" "$*"; }

# Stop a process: TERM, up to 5 s, then KILL; never fails
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2> /dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    return 0
}
