# Sourced by the shadowctl test scripts: $ctl (the shadowctl under test,
# the first argument), $data (their data directory), $tmp (removed at
# exit) and fail.
set -u
ctl=$1
data=$(dirname "$0")/data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
