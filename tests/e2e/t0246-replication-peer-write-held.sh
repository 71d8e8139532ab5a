#!/usr/bin/env bash
# A Secondary whose page-cache writes are held up (dirty-page throttling, a
# slow disk: here the debug flag hablock.stall_write_ms holds each write
# from the Primary) for far longer than ping-timeout. The node is alive, so
# the link must stay up: its loop thread is held, but it writes out of the
# link's lock and its keepalive thread tells the Primary it lives (DRBD's
# asender). Every write completes replicated, nothing is out of sync, and
# the disks are identical. Then the same short timeouts still find a node
# that is really gone: a SIGSTOPped Secondary sends nothing, and the Primary
# drops it after ping-timeout and goes on alone. Last, the Primary is
# killed while the Secondary still holds its writes, and the Secondary is
# promoted: the promotion waits until those writes are done (or they are
# refused), so none of them lands after the new Primary's own clients have
# written the same blocks.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

size=$((8 << 20))
# Timeouts short enough for a test, long enough for a loaded (or
# sanitized) two-core machine to schedule a thread within them.
ping_interval_ms=250 ping_timeout_ms=1000 stall_ms=2500 writes=4
# The last part holds writes for less (a promotion waits at most 5 s for
# them, and up to three may be in progress), and small ones: all four
# reach bravo's socket before the first is written (64 KiB ones could wait
# for bravo's receive window, and die with the Primary).
stall3_ms=1000
make_pair "$size" cert
sed -i -e "s/^ping-interval = .*/ping-interval = ${ping_interval_ms}ms/" \
    -e "s/^ping-timeout = .*/ping-timeout = ${ping_timeout_ms}ms\nrequest-timeout = 30s/" "$T/r0.conf"
grep -q "^ping-timeout = ${ping_timeout_ms}ms\$" "$T/r0.conf" &&
    grep -q "^ping-interval = ${ping_interval_ms}ms\$" "$T/r0.conf" ||
    fail "could not set the timeouts in $T/r0.conf: $(cat "$T/r0.conf")"
# start_held_pair CONF STALL_MS [NBDKIT-OPTION...]: both nodes on fresh
# zero-filled disks, bravo's writes from the Primary held STALL_MS each,
# alpha promoted (the pair declared identical). cache=writeback: the
# Secondary writes through the page cache on its loop thread (with O_DIRECT
# its writes go through the ring and never hold it).
start_held_pair() {
    local conf=$1 stall=$2; shift 2
    truncate -s 0 "$T/alpha.img" "$T/bravo.img"
    truncate -s "$size" "$T/alpha.img" "$T/bravo.img"
    start_hablock --ctl "$T/alpha.ctl" alpha config="$conf" node=alpha cache=writeback "$@"
    start_hablock --ctl "$T/bravo.ctl" bravo config="$conf" node=bravo cache=writeback "$@" \
        -Dhablock.stall_write_ms="$stall"
    wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
    hactl_on alpha promote --force
    wait_for 10 "bravo to be UpToDate" node_is bravo disk UpToDate
}

start_held_pair "$T/r0.conf" "$stall_ms"

# held_writes: $writes writes of 64 KiB at once from $T/src.img, each to
# its own place, on alpha: bravo's loop is held for writes x stall_ms in a
# row, many times ping-timeout. Prints the time until the last was
# acknowledged, in ms.
held_writes() {
    /usr/bin/python3 - "${HB_URI[alpha]}" "$T/src.img" "$writes" <<'PY'
import nbd, os, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
src = open(sys.argv[2], "rb").read()
n = int(sys.argv[3])
errors = []
def done(err):
    if err.value:
        errors.append(os.strerror(err.value))
    return 1   # retire the command
t = time.monotonic()
for i in range(n):
    h.aio_pwrite(src[i << 20:(i << 20) + 65536], i << 20, completion=done)
while h.aio_in_flight() > 0:
    h.poll(-1)
if errors:
    sys.exit("a write failed: " + errors[0])
print(int((time.monotonic() - t) * 1000))
h.shutdown()
PY
}

# check_held STALL_MS: run held_writes and check what must be true.
check_held() {
    local stall=$1 ms i
    log_mark alpha; log_mark bravo
    ms=$(held_writes) || fail "a write failed while the Secondary's writes were held"
    log "$writes writes held $stall ms each on bravo were acknowledged after $ms ms"
    # Proof that they waited for the held Secondary (protocol C), one after
    # the other on its loop thread: bravo's loop was held writes x stall,
    # many times ping-timeout.
    (( ms >= writes * stall - 300 )) ||
        fail "acknowledged after $ms ms, before $writes stalls of $stall ms in a row ended"
    assert_eq "$(node_field alpha connection)" Connected "alpha's connection after the held writes"
    assert_eq "$(node_field bravo connection)" Connected "bravo's connection after the held writes"
    assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes"
    if log_since alpha | grep -E 'ping timeout|lost the peer'; then
        fail "alpha dropped a live Secondary whose writes were held"
    fi
    if log_since bravo | grep -E 'ping timeout|lost the peer'; then
        fail "bravo dropped the link while its own writes were held"
    fi
    for i in $(seq 0 $(( writes - 1 ))); do
        cmp -s -n 65536 -i $(( i << 20 )):$(( i << 20 )) "$T/src.img" "$T/alpha.img" ||
            fail "alpha's disk lacks write $i"
    done
    assert_same_bytes "$T/alpha.img" "$T/bravo.img" "bravo's disk against alpha's"
    log "the link stayed up and the disks are identical"
}

head -c "$size" /dev/urandom >"$T/src.img"
check_held "$stall_ms"

# The keepalive must not keep a dead node alive: SIGSTOP bravo, and a write
# on alpha completes alone after about ping-timeout.
kill -STOP "${HB_PID[bravo]}"
on_exit "kill -CONT ${HB_PID[bravo]} 2>/dev/null || true"
log_mark alpha
/usr/bin/python3 - "${HB_URI[alpha]}" <<'PY' || fail "alpha's write failed with the Secondary stopped"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x5a" * 4096, 7 << 20)
h.shutdown()
PY
wait_for 10 "alpha to lose the stopped Secondary" \
    sh -c "tail -n +$(( HB_LOGMARK[alpha] + 1 )) '${HB_LOG[alpha]}' | grep -q 'ping timeout'"
log "alpha: $(log_since alpha | grep -m1 'ping timeout')"
assert_eq "$(node_field alpha role)" Primary "alpha's role without its Secondary"
[[ $(node_field alpha out_of_sync_bytes) -ge 4096 ]] ||
    fail "alpha did not record the lone write as out of sync: $(node_field alpha out_of_sync_bytes)"
kill -CONT "${HB_PID[bravo]}"
stop_hablock bravo
stop_hablock alpha

# A new pair (fresh zero-filled disks, declared identical). Writes go to
# bravo and are held there; once the first has landed the others are
# being held or wait in bravo's socket. alpha is killed; bravo hears the
# link break (its keepalive's send fails) while its loop is still held,
# and is promoted. The client of the new Primary then writes the same
# blocks: the former Primary's writes must not overwrite them later.
start_held_pair "$T/r0.conf" "$stall3_ms"
/usr/bin/python3 - "${HB_URI[alpha]}" "$T/src.img" "$writes" <<'PY' >/dev/null 2>&1 &
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
src = open(sys.argv[2], "rb").read()
for i in range(int(sys.argv[3])):
    h.aio_pwrite(src[i << 20:(i << 20) + 4096], i << 20, completion=lambda err: 1)
while h.aio_in_flight() > 0:
    h.poll(-1)
PY
client=$!
on_exit "kill $client 2>/dev/null || true"
# The first to land, whichever it is (alpha's workers send in any order).
one_landed() {
    local i
    for i in $(seq 0 $(( writes - 1 ))); do
        cmp -s -n 4096 -i $(( i << 20 )):$(( i << 20 )) "$T/src.img" "$T/bravo.img" && return 0
    done
    return 1
}
wait_for 10 "the first held write to land on bravo" one_landed
kill -9 "${HB_PID[alpha]}"
wait "${HB_PID[alpha]}" 2>/dev/null || true
unset "HB_PID[alpha]"
wait_for 5 "bravo to hear the link break while its writes are held" \
    sh -c "! '$HACTL' --socket '$T/bravo.ctl' status | grep -q 'connection: *Connected'"
t0=$(date +%s%N)
log_mark bravo
hactl_on bravo promote || fail "bravo's promotion was refused: $(tail -n 3 "${HB_LOG[bravo]}")"
log "bravo promoted after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
head -c $(( writes << 20 )) /dev/urandom >"$T/new.img"
/usr/bin/python3 - "${HB_URI[bravo]}" "$T/new.img" "$writes" <<'PY' || fail "the new Primary's client could not write"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
new = open(sys.argv[2], "rb").read()
for i in range(int(sys.argv[3])):
    h.pwrite(new[i << 20:(i << 20) + 4096], i << 20)
h.flush()
h.shutdown()
PY
# Watch for longer than the rest of the held writes would take: the new
# client's blocks must stay as it wrote them.
end=$(( SECONDS + (writes * stall3_ms) / 1000 + 1 ))
while :; do
    for i in $(seq 0 $(( writes - 1 ))); do
        cmp -s -n 4096 -i $(( i << 20 )):$(( i << 20 )) "$T/new.img" "$T/bravo.img" ||
            fail "block $i on the new Primary lost its client's data: a held write of the former Primary landed after promotion"
    done
    (( SECONDS < end )) || break
    sleep 0.5
done
log "the new Primary's blocks kept its client's data"
# The case this part is for: a write of the former Primary was still being
# carried out when the promotion was decided.
log_since bravo | grep -q 'promoting: waiting for [0-9]* request' ||
    fail "bravo's promotion found no write of the former Primary in progress: $(log_since bravo | tail -n 5)"
log "bravo: $(log_since bravo | grep -m1 'promoting: waiting')"
kill "$client" 2>/dev/null || true
stop_hablock bravo

# The same held writes over a plaintext link (tls = off) on the libaio
# loop (io_uring forced off): the keepalive and the loop's own sends on
# the other engine and the other channel. (alpha was killed above.)
sed -e '/^ca = \|^cert = \|^key = /d' -e 's/^\[tls\]$/[tls]\nmode = off/' \
    "$T/r0.conf" >"$T/r0-plain.conf"
grep -q '^mode = off$' "$T/r0-plain.conf" || fail "could not make $T/r0-plain.conf"
start_held_pair "$T/r0-plain.conf" 1500 -Dhablock.force_aio_fallback=1
assert_eq "$(node_field bravo tls.enabled)" false "bravo's tls.enabled"
assert_eq "$(node_field bravo loop_backend)" aio "bravo's loop backend"
check_held 1500
stop_hablock bravo
stop_hablock alpha
