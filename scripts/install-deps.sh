#!/usr/bin/env bash
# Install, when missing, the Debian packages that building QEMU with the
# shadow driver, the agent, the tests and the demo need.  Runs apt as root,
# or through sudo.  Usage: install-deps.sh [build|check|demo]...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install packages" >&2; exit 1; }
    sudo=sudo
fi

# Building QEMU 10.0 (meson and pycotap come from bookworm-backports below);
# librbd-dev and librados-dev for its rbd block driver (Debian ships no
# pkg-config file for them: QEMU's meson finds librbd by a link test)
build_pkgs=(build-essential dpkg-dev ninja-build pkg-config flex bison
            python3-venv python3-setuptools libglib2.0-dev libpixman-1-dev
            zlib1g-dev libslirp-dev libaio-dev liburing-dev libfdt-dev
            seabios ipxe-qemu libjson-glib-dev libsqlite3-dev
            libvirt-dev librbd-dev librados-dev)
# Running iotests, the demo (gnuplot draws its plot) and the benchmarks;
# clang and its runtime for the libFuzzer targets
# libvirt for shadowd's libvirt tests, which start a private libvirtd (as
# the libvirt-qemu user that libvirt-daemon-system creates); prometheus
# for promtool, which checks what shadowd's metrics endpoint serves;
# ceph-mon, ceph-osd and ceph-common for the throwaway single-node Ceph
# cluster that the RBD tests and benchmarks start (tests/ceph/); strace for
# the iotest that checks which flushes reach a tier's file (shadow-compare)
check_pkgs=(fio jq socat python3 gawk gnuplot-nox clang libclang-rt-14-dev strace
            libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
            prometheus ceph-mon ceph-osd ceph-common)

want=("${build_pkgs[@]}" "${check_pkgs[@]}")
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
done

meson_ok=false
if command -v meson >/dev/null &&
   printf '%s\n%s\n' 1.5.0 "$(meson --version)" | sort -V -C; then
    meson_ok=true
fi
pycotap_ok=false
/usr/bin/python3 -c 'import pycotap' 2>/dev/null && pycotap_ok=true

if [ ${#missing[@]} -eq 0 ] && $meson_ok && $pycotap_ok; then
    exit 0
fi

echo "install-deps: installing ${missing[*]:-} $($meson_ok || echo meson) $($pycotap_ok || echo python3-pycotap)"
$sudo bash "$here/apt-sources.sh"
$sudo apt-get update -qq
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
bpo=()
if [ "$codename" = bookworm ]; then
    bpo=(-t bookworm-backports)
fi
if ! $meson_ok || ! $pycotap_ok; then
    $sudo apt-get install -y -qq --no-install-recommends "${bpo[@]}" meson python3-pycotap
fi
