#!/usr/bin/env bash
# io=uring and io=hybrid where no ring can be created (forced by a debug
# flag): the server says once, in its default log, that it falls back to
# aio, serves through a libaio context and no io_uring, and data
# round-trips.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy cmp head truncate
backends=$(hablock_backends)
[[ " $backends " == *" uring "* ]] || skip "plugin built without io=uring"
[[ " $backends " == *" aio "* ]] || skip "plugin built without io=aio"

# What the server process holds: an io_uring file, a libaio ring mapping.
has_uring() {
    local fd
    for fd in "/proc/$1/fd/"*; do
        [[ $(readlink "$fd" 2>/dev/null) != *io_uring* ]] || return 0
    done
    return 1
}
has_aio() { grep -q '/\[aio\]' "/proc/$1/maps"; }

head -c $((16 << 20)) /dev/urandom >"$T/src.img"

round_trip() {   # NAME: copy in, copy out, compare both ways
    nbdcopy --flush "$T/src.img" "${HB_URI[$1]}"
    assert_same_bytes "$T/src.img" "$T/disk.img" "backing file ($1)"
    nbdcopy "${HB_URI[$1]}" "$T/out.img"
    assert_same_bytes "$T/src.img" "$T/out.img" "nbdcopy out ($1)"
}

for io in uring hybrid; do
    for cache in none writeback; do
        rm -f "$T/disk.img" "$T/out.img"
        truncate -s 16M "$T/disk.img"
        start_hablock fallback -Dhablock.force_aio_fallback=1 disk="$T/disk.img" io=$io cache="$cache"
        round_trip fallback
        assert_eq "$(grep -c "io=$io: cannot create an io_uring ring .*falling back to aio" "${HB_LOG[fallback]}" || true)" 1 \
            "lines saying 'io=$io: ... falling back to aio' in the log (cache=$cache)"
        ! has_uring "${HB_PID[fallback]}" || fail "io=$io fallback server holds an io_uring (cache=$cache)"
        has_aio "${HB_PID[fallback]}" || fail "io=$io fallback server has no aio context (cache=$cache)"
        stop_hablock fallback
    done

    # The control: without the flag, a ring and no fall-back.
    rm -f "$T/disk.img" "$T/out.img"
    truncate -s 16M "$T/disk.img"
    start_hablock ring disk="$T/disk.img" io=$io
    round_trip ring
    has_uring "${HB_PID[ring]}" || fail "io=$io server holds no io_uring"
    ! grep -q 'falling back' "${HB_LOG[ring]}" || fail "io=$io fell back without the flag"
    stop_hablock ring
done
