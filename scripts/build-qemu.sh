#!/usr/bin/env bash
# Get QEMU 10.0.x, apply patches/, link the project's driver, schema and
# iotests into the tree, and build into build/qemu/.  Incremental: a rerun
# after editing block/shadow*.c recompiles only that.
#
# QEMU_SRC=/path/to/qemu-10.0.x uses that tree (copied, never modified)
# instead of Debian's qemu source package.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$repo/build
srcdir=$build/src/qemu
pristine=$build/src/pristine
out=$build/qemu

die() { echo "build-qemu: $*" >&2; exit 1; }
say() { echo "build-qemu: $*" >&2; }

check_version() {
    local v
    v=$(cat "$1/VERSION" 2>/dev/null) || die "$1 has no VERSION file: not a QEMU tree"
    case "$v" in
        10.0.*) ;;
        *) die "$1 is QEMU $v; shadowtier needs QEMU 10.0.x" ;;
    esac
}

fetch_debian_source() {
    local dl=$build/dl v ver dsc
    mkdir -p "$dl"
    # Newest 10.0.x source package first; the archive may list versions
    # whose files are gone, so try each.
    mapfile -t versions < <(apt-cache showsrc qemu 2>/dev/null |
        awk '/^Version:/ { print $2 }' | grep -E '^([0-9]+:)?10\.0\.' | sort -Vru)
    [ ${#versions[@]} -gt 0 ] ||
        die "no qemu 10.0.x source package in the apt sources; run scripts/apt-sources.sh or set QEMU_SRC"
    for v in "${versions[@]}"; do
        ver=${v#*:}
        dsc=$dl/qemu_${ver}.dsc
        if [ ! -f "$dsc" ]; then
            say "fetching Debian source qemu $v"
            (cd "$dl" && apt-get source -qq --download-only "qemu=$v" >/dev/null 2>&1) || {
                say "qemu $v could not be downloaded; trying an older one"
                continue
            }
        fi
        rm -rf "$build/src/qemu-$ver.tmp"
        dpkg-source -x "$dsc" "$build/src/qemu-$ver.tmp" >/dev/null ||
            die "dpkg-source -x $dsc failed"
        rm -f "$build/src"/*.orig.tar.*
        echo "$build/src/qemu-$ver.tmp"
        return 0
    done
    die "none of the qemu 10.0.x source packages (${versions[*]}) could be downloaded"
}

# 1. The pristine tree
if [ ! -f "$srcdir/VERSION" ]; then
    mkdir -p "$build/src"
    if [ -n "${QEMU_SRC:-}" ]; then
        check_version "$QEMU_SRC"
        say "copying $QEMU_SRC"
        rm -rf "$srcdir.tmp"
        mkdir -p "$srcdir.tmp"
        (cd "$QEMU_SRC" && tar --exclude=.git --exclude=./build -cf - .) | (cd "$srcdir.tmp" && tar -xf -)
        mv "$srcdir.tmp" "$srcdir"
    else
        tree=$(fetch_debian_source | tail -n 1)
        mv "$tree" "$srcdir"
    fi
    rm -rf "$pristine"
fi
check_version "$srcdir"

# 2. patches/: applied once; when they change, the files they touch are
# restored from their pristine copies and the patches applied again, so
# only those files are rebuilt.
stamp=$srcdir/.shadowtier-patches
want=$(cat "$repo"/patches/*.patch | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    mkdir -p "$pristine"
    for p in "$repo"/patches/*.patch; do
        grep -E '^\+\+\+ b/' "$p" | sed -E 's#^\+\+\+ b/##; s#\t.*##'
    done | sort -u > "$build/src/patched-files.new"
    { cat "$build/src/patched-files" 2>/dev/null || true; cat "$build/src/patched-files.new"; } | sort -u |
    while read -r f; do
        if [ -f "$pristine/$f" ]; then
            cp -p "$pristine/$f" "$srcdir/$f"
        elif [ -f "$srcdir/$f" ]; then
            mkdir -p "$(dirname "$pristine/$f")"
            cp -p "$srcdir/$f" "$pristine/$f"
        fi
    done
    for p in "$repo"/patches/*.patch; do
        if ! patch -d "$srcdir" -p1 --forward --silent --dry-run < "$p" >/dev/null; then
            die "patch $(basename "$p") does not apply to QEMU $(cat "$srcdir/VERSION") in $srcdir"
        fi
        patch -d "$srcdir" -p1 --forward --silent < "$p"
        say "applied $(basename "$p")"
    done
    mv "$build/src/patched-files.new" "$build/src/patched-files"
    echo "$want" > "$stamp"
fi

# 3. The project's own files, linked into the tree
find "$srcdir/block" "$srcdir/qapi" "$srcdir/tests/qemu-iotests/tests" "$srcdir/tests/unit" \
    -maxdepth 1 -type l -lname "$repo/*" ! -exec test -e {} \; -delete
for f in "$repo"/block/shadow*.[ch] "$repo"/qapi/*.json "$repo"/tests/qemu-iotests/tests/shadow[-_]* \
         "$repo"/tests/unit/test-shadow*.c; do
    [ -e "$f" ] || continue
    rel=${f#"$repo"/}
    ln -sfn "$f" "$srcdir/$rel"
done

# 4. Configure (again only when the options change) and build
conf=(--python=/usr/bin/python3 --target-list=x86_64-softmmu
      --disable-download --disable-docs --disable-install-blobs
      --disable-relocatable --prefix=/usr
      --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
      --without-default-features --enable-tools --enable-linux-aio
      --enable-linux-io-uring --enable-slirp --enable-rbd --disable-werror
      ${QEMU_CONFIGURE_EXTRA:-})
conf_stamp=$out/.shadowtier-configure
if [ ! -f "$out/build.ninja" ] || [ "$(cat "$conf_stamp" 2>/dev/null)" != "$srcdir ${conf[*]}" ]; then
    say "configuring QEMU $(cat "$srcdir/VERSION") in build/qemu"
    rm -rf "$out"
    mkdir -p "$out"
    (cd "$out" && "$srcdir/configure" "${conf[@]}" > configure.log 2>&1) ||
        { tail -n 30 "$out/configure.log" >&2; die "configure failed; see build/qemu/configure.log"; }
    echo "$srcdir ${conf[*]}" > "$conf_stamp"
fi
targets=(qemu-img qemu-io qemu-nbd storage-daemon/qemu-storage-daemon
         qemu-system-x86_64 tests/unit/test-shadow tests/unit/test-shadow-crc32c)
say "building ${targets[*]}"
ninja -C "$out" -j"$(nproc)" "${targets[@]}" > "$out/ninja.log" 2>&1 ||
    { grep -E -B2 -A12 'error:|FAILED' "$out/ninja.log" | head -n 80 >&2; die "build failed; see build/qemu/ninja.log"; }
# QEMU is configured without -Werror (its own code meets other compilers'
# warnings), but the project's files must build without any: a warning
# fails the build, and their objects are removed so that it shows again
if grep -E -A6 '(block|qapi|tests/unit)/(test-)?shadow[-a-z]*\.[ch]:[0-9]+:[0-9]+: warning' "$out/ninja.log" >&2; then
    find "$out" -name '*shadow*.c.o' -delete
    die "warnings in the shadow driver (warnings are errors)"
fi
# Run from the build tree, QEMU finds firmware under qemu-bundle/ only:
# point it at Debian's seabios and ipxe-qemu
for fw in /usr/share/seabios /usr/lib/ipxe/qemu; do
    [ -e "$out/qemu-bundle$fw" ] || { mkdir -p "$(dirname "$out/qemu-bundle$fw")"; ln -s "$fw" "$out/qemu-bundle$fw"; }
done
say "QEMU $(cat "$srcdir/VERSION") with the shadow driver is in build/qemu"
