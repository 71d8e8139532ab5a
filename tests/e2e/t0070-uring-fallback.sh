#!/usr/bin/env bash
# io=uring where no ring can be created (forced by a debug flag): the
# server says once, in its default log, that it falls back to aio, serves
# through a libaio context and no io_uring, and data round-trips. And
# io=hybrid, whose loop is libaio's by choice: a libaio context, no
# io_uring, no fall-back line. Where no loop can be made at all (forced by
# another flag), the default goes on with io=sync and says so, and an
# io= that needs a loop is refused with one line saying why.
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

for cache in none writeback; do
    rm -f "$T/disk.img" "$T/out.img"
    truncate -s 16M "$T/disk.img"
    start_hablock fallback -Dhablock.force_aio_fallback=1 disk="$T/disk.img" io=uring cache="$cache"
    round_trip fallback
    assert_eq "$(grep -c 'io=uring: cannot create an io_uring ring .*falling back to aio' "${HB_LOG[fallback]}" || true)" 1 \
        "lines saying 'io=uring: ... falling back to aio' in the log (cache=$cache)"
    ! has_uring "${HB_PID[fallback]}" || fail "fallback server holds an io_uring (cache=$cache)"
    has_aio "${HB_PID[fallback]}" || fail "fallback server has no aio context (cache=$cache)"
    stop_hablock fallback
done

# The control: without the flag, io=uring holds a ring and does not fall back.
rm -f "$T/disk.img" "$T/out.img"
truncate -s 16M "$T/disk.img"
start_hablock ring disk="$T/disk.img" io=uring
round_trip ring
has_uring "${HB_PID[ring]}" || fail "io=uring server holds no io_uring"
! grep -q 'falling back' "${HB_LOG[ring]}" || fail "io=uring fell back without the flag"
stop_hablock ring

# io=hybrid (the default with cache=writeback): libaio's loop.
rm -f "$T/disk.img" "$T/out.img"
truncate -s 16M "$T/disk.img"
start_hablock hybrid disk="$T/disk.img" cache=writeback
round_trip hybrid
has_aio "${HB_PID[hybrid]}" || fail "io=hybrid server has no aio context"
! has_uring "${HB_PID[hybrid]}" || fail "io=hybrid server holds an io_uring"
! grep -Eq 'falling back|using io_uring|using io=sync' "${HB_LOG[hybrid]}" ||
    fail "io=hybrid logged a fall-back: $(cat "${HB_LOG[hybrid]}")"
stop_hablock hybrid

# No loop at all: the default (io=hybrid for cache=writeback) serves with
# io=sync, says so once and holds neither an aio context nor a ring.
rm -f "$T/disk.img" "$T/out.img"
truncate -s 16M "$T/disk.img"
start_hablock noloop -Dhablock.force_no_loop=1 disk="$T/disk.img" cache=writeback
round_trip noloop
assert_eq "$(grep -c 'io=hybrid (the default for cache=writeback): cannot create an io_uring ring (forced by hablock.force_no_loop), nor a libaio context (forced by hablock.force_no_loop); using io=sync' "${HB_LOG[noloop]}" || true)" 1 \
    "lines saying the default goes on with io=sync"
! has_aio "${HB_PID[noloop]}" || fail "no-loop server has an aio context"
! has_uring "${HB_PID[noloop]}" || fail "no-loop server holds an io_uring"
stop_hablock noloop

# ...and an explicit io= that needs a loop is refused at start.
for io in hybrid uring aio; do
    log "expect refusal: -Dhablock.force_no_loop=1 io=$io"
    must_fail timeout -k 5 20 "${NBDKIT[@]}" -U - -Dhablock.force_no_loop=1 "$HABLOCK_PLUGIN" \
        disk="$T/disk.img" io=$io --run true
    assert_one_error_line "$T/must_fail.err" "io=$io: " 'forced by hablock.force_no_loop'
done
