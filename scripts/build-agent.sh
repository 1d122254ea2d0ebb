#!/usr/bin/env bash
# Build shadowd and shadowctl with meson; the programs are linked at the
# fixed paths build/agent/shadowd, build/agent/shadowctl and
# build/agent/virsh-shadow (shadowctl by another name).
# With --asan, build the AddressSanitizer + UBSan variant into
# build/agent-asan instead (used by make check); with --fuzz, the libFuzzer
# targets with clang into build/agent-fuzz.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

dir=build/agent-build
opts=()
case "${1:-}" in
--asan)
    dir=build/agent-asan
    opts=(-Db_sanitize=address,undefined -Db_lundef=false)
    ;;
--fuzz)
    dir=build/agent-fuzz
    opts=(-Db_sanitize=address,undefined -Db_lundef=false)
    export CC=clang
    ;;
esac

if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" . "${opts[@]}" > /dev/null ||
        { echo "build-agent: meson setup failed" >&2; exit 1; }
fi
meson compile -C "$dir" > "$dir/compile.log" 2>&1 ||
    { cat "$dir/compile.log" >&2; echo "build-agent: build failed" >&2; exit 1; }

if [ "$dir" = build/agent-build ]; then
    mkdir -p build/agent
    ln -sfn ../agent-build/agent/shadowd build/agent/shadowd
    ln -sfn ../agent-build/agent/ctl/shadowctl build/agent/shadowctl
    # virsh-shadow is shadowctl called by another name
    ln -sfn ../agent-build/agent/ctl/shadowctl build/agent/virsh-shadow
    ln -sfn ../agent-build/agent/libvirt/shadowtier-libvirt-hook build/agent/shadowtier-libvirt-hook
    echo "build-agent: build/agent/shadowd, shadowctl and virsh-shadow are up to date"
fi
