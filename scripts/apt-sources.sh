#!/usr/bin/env bash
# Enable deb-src and bookworm-backports for the Debian archive URIs that this
# machine's apt sources already use.  No mirror host name is ever written by
# this project: the URIs are read from the existing configuration.
set -euo pipefail

out=/etc/apt/sources.list.d/shadowtier.sources
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || { echo "apt-sources: cannot read VERSION_CODENAME" >&2; exit 1; }

# URIs of the main archive entry: deb822 files first, then one-line files.
uris=$(awk -v c="$codename" '
    /^[[:space:]]*$/ { if (u != "" && s ~ "(^| )" c "( |$)") print u; u = ""; s = ""; next }
    /^URIs:/   { sub(/^URIs:[[:space:]]*/, ""); u = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); s = $0 }
    END { if (u != "" && s ~ "(^| )" c "( |$)") print u }
' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
    uris=$(awk -v c="$codename" '$1 == "deb" && $3 == c { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:/) { print $i; exit } }' \
        /etc/apt/sources.list)
fi
[ -n "$uris" ] || { echo "apt-sources: no Debian '$codename' entry found in the apt sources" >&2; exit 1; }

tmp=$(mktemp)
{
    echo "# Written by shadowtier scripts/apt-sources.sh from this machine's own URIs."
    printf 'Types: deb-src\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
        "$uris" "$codename" "$codename"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n'
    if [ "$codename" = bookworm ]; then
        # meson >= 1.5 and python3-pycotap for QEMU 10.0, and its source
        printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' "$uris"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n'
    fi
    if [ "$codename" != trixie ]; then
        # Source only: trixie's qemu 10.0.x builds on older releases
        printf 'Types: deb-src\nURIs: %s\nSuites: trixie trixie-updates\nComponents: main\n' "$uris"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} > "$tmp"
if [ -f "$out" ] && cmp -s "$tmp" "$out"; then
    rm -f "$tmp"
    exit 0
fi
install -m 0644 "$tmp" "$out"
rm -f "$tmp"
echo "apt-sources: wrote $out; running apt-get update"
apt-get update -qq
