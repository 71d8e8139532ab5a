#!/usr/bin/env bash
# For each io x cache: nbdcopy random bytes in and out again; what comes out,
# and the backing file itself, equal what went in. Two sizes: a large
# aligned image, and one whose size ends in a partial block.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy cmp head truncate

head -c $((32 << 20)) /dev/urandom >"$T/big.src"
head -c $(((1 << 20) + 777)) /dev/urandom >"$T/odd.src"

copy_round_trip() {   # SRC IO CACHE
    local src=$1 io=$2 cache=$3 disk=$T/disk.img
    rm -f "$disk" "$T/out.img"
    truncate -s "$(stat -c %s "$src")" "$disk"
    start_hablock copy disk="$disk" io="$io" cache="$cache"
    nbdcopy --flush "$src" "${HB_URI[copy]}"
    # Every write was acknowledged, so the backing file holds it already.
    assert_same_bytes "$src" "$disk" "backing file after nbdcopy in (io=$io cache=$cache)"
    nbdcopy "${HB_URI[copy]}" "$T/out.img"
    assert_same_bytes "$src" "$T/out.img" "nbdcopy out (io=$io cache=$cache)"
    stop_hablock copy
    assert_same_bytes "$src" "$disk" "backing file after stop (io=$io cache=$cache)"
}

copy_both() {   # IO CACHE
    copy_round_trip "$T/big.src" "$@"
    copy_round_trip "$T/odd.src" "$@"
}

for_each_backend copy_both
