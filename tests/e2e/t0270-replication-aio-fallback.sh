#!/usr/bin/env bash
# The peer link on the libaio loop, the fallback where io_uring is missing
# (forced on both nodes with -D hablock.force_aio_fallback=1): each node says
# so in one log line; TLS connects; nbdcopy and a fio verify job replicate to
# byte-identical disks; a stopped (SIGSTOP) Secondary is dropped by the ping
# timeout, which runs on the loop's timers; writes go on alone and are
# counted out of sync; both nodes stop cleanly on SIGTERM.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdcopy cmp openssl fio
[[ -x $HACTL ]] || skip "hactl not built"
hablock_backends | grep -qw aio || skip "built without libaio"

size=$((64 << 20))
make_pair "$size" cert
start_pair -Dhablock.force_aio_fallback=1
for n in alpha bravo; do
    assert_grep 'replication loop: cannot create an io_uring ring \(forced.*\); using libaio' \
        "${HB_LOG[$n]}" "$n's log"
done
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
for n in alpha bravo; do
    assert_eq "$(node_field $n loop_backend)" aio "$n's loop_backend in status"
done
assert_eq "$(node_field alpha tls.version)" TLSv1.3 "alpha tls.version"
hactl_on alpha promote --force
wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate

# Replicate: large requests (nbdcopy) and many small ones at depth (fio).
head -c "$size" /dev/urandom >"$T/src.img"
nbdcopy --flush "$T/src.img" "${HB_URI[alpha]}"
assert_same_bytes "$T/src.img" "$T/bravo.img" "bravo's disk after nbdcopy"
fio --name=aio-link --ioengine=nbd --uri="${HB_URI[alpha]}" --rw=randwrite \
    --bsrange=4k-256k --iodepth=16 --size="$size" --io_size=$((32 << 20)) \
    --verify=crc32c --verify_fatal=1 --output="$T/fio.out" >/dev/null 2>&1 ||
    fail "fio verify over the aio link failed: $(tail -n 5 "$T/fio.out")"
wait_for 10 "the disks to settle" cmp -s "$T/alpha.img" "$T/bravo.img"
assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes"

# A Secondary that hangs: only the ping timeout (2 s here) can tell.
kill -STOP "${HB_PID[bravo]}"
on_exit "kill -CONT ${HB_PID[bravo]} 2>/dev/null || true"
wait_for 15 "alpha to drop the hung bravo" eval '! node_is alpha connection Connected'
assert_grep 'ping timeout' <(node_field alpha last_error) "alpha's last_error"
head -c 1M /dev/urandom >"$T/more.img"
nbdcopy "$T/more.img" "${HB_URI[alpha]}"    # alone: acknowledged, recorded
(( $(node_field alpha out_of_sync_bytes) >= 1048576 )) ||
    fail "alpha counts $(node_field alpha out_of_sync_bytes) bytes out of sync after a 1 MiB write alone"
kill -CONT "${HB_PID[bravo]}"
# stop_hablock (on exit) fails the test if either node ignores SIGTERM.
stop_hablock alpha
stop_hablock bravo
log "ok"
