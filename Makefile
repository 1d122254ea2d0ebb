# shadowtier.  Every target installs what it needs first (apt, as root or
# through sudo), so each works on a fresh Debian machine.
#
#   make          QEMU 10.0.x with the shadow driver (build/qemu/) and the
#                 agent (build/agent/)
#   make check    every test; ends with "N passed, N failed, N skipped"
#   make demo     the main job, narrated in the terminal
#   make bench    benchmarks, results in build/bench/
#   make fuzz     the agent's fuzz targets and the QMP fuzzer of the
#                 shadow driver, FUZZ_SECONDS (600) each
#   make soak     SOAK_ROUNDS (1000) rounds of the kill tests, the
#                 stress test for SOAK_CRASH_STATES (10000) crash states,
#                 then SOAK_LINEAR_SEEDS (200) seeds of the linearizability
#                 test, on the shadow node and on qcow2 over it
#
# QEMU_SRC=/path/to/qemu-10.0.x builds against that tree instead of
# Debian's qemu source package.

.PHONY: all deps qemu agent check demo bench fuzz soak checkpatch clean distclean

all: qemu agent

deps:
	@scripts/install-deps.sh

qemu: deps
	@scripts/build-qemu.sh

agent: deps
	@scripts/build-agent.sh

check: all
	@scripts/check.sh

demo: all
	@scripts/demo.sh

bench: all
	@bench/run.sh

fuzz: deps qemu
	@scripts/fuzz.sh

# qemu-storage-daemon killed at random moments, restarted, checked; then
# the stress test until SOAK_CRASH_STATES crash states were checked
SOAK_ROUNDS ?= 1000
SOAK_CRASH_STATES ?= 10000
SOAK_LINEAR_SEEDS ?= 200
soak: qemu
	@bash -o pipefail -c '/usr/bin/python3 tests/kill/shadow-kill.py \
		--rounds $(SOAK_ROUNDS) 2>&1 | tee build/soak.log | \
		grep --line-buffered -E "^(not ok|# kill tests)|^ok [0-9]*00 " | cut -c1-160'; \
	kill=$$?; \
	bash -o pipefail -c '/usr/bin/python3 tests/stress/shadow-stress.py \
		--ops $$(( $(SOAK_CRASH_STATES) * 20 )) \
		--crash-states $(SOAK_CRASH_STATES) --max-failures 50 2>&1 | \
		tee build/soak-stress.log | \
		grep --line-buffered -E "^(not ok|# stress)" | cut -c1-240'; \
	stress=$$?; \
	linear=0; \
	for fmt in "" --qcow2; do \
		bash -o pipefail -c "/usr/bin/python3 tests/stress/shadow-linear.py \
			--seeds $(SOAK_LINEAR_SEEDS) $$fmt 2>&1 | \
			tee -a build/soak-linear.log | \
			grep --line-buffered -E '^(not ok|# linear)' | cut -c1-240" || linear=1; \
	done; \
	[ $$kill -eq 0 ] && [ $$stress -eq 0 ] && [ $$linear -eq 0 ]

# QEMU's checkpatch.pl over the project's own QEMU-side files
checkpatch: qemu
	@scripts/checkpatch.sh

# Keeps the downloaded QEMU source and its build
clean:
	rm -rf build/agent build/agent-build build/agent-asan build/agent-fuzz build/check-logs build/bench build/demo

distclean:
	rm -rf build
