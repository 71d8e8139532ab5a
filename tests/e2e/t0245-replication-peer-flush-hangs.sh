#!/usr/bin/env bash
# A Secondary whose disk hangs on a flush (the debug flag
# hablock.stall_flush_ms holds every FLUSH from the Primary) while the node
# itself goes on answering pings: the ping timeout cannot see it, the
# request timeout must. The client's flush succeeds after about
# request-timeout (the data are durable on the Primary; it waited for the
# peer first), the Primary logs why it dropped the link, stays Primary and,
# as DRBD does when its ko-count runs out, excludes the peer: StandAlone, no
# reconnection by itself (else every flush would wait that long again). The
# writes the peer acknowledged are on both disks and nothing is out of sync,
# so `hactl connect` joins the pair again; a second flush is bounded the
# same way.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

size=$((16 << 20))
request_timeout_ms=1500 stall_ms=30000
make_pair "$size" cert
sed -i "s/^ping-timeout = .*/&\nrequest-timeout = ${request_timeout_ms}ms/" "$T/r0.conf"
grep -q "^request-timeout = ${request_timeout_ms}ms\$" "$T/r0.conf" ||
    fail "could not set request-timeout in $T/r0.conf: $(cat "$T/r0.conf")"
start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha
start_hablock --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo \
    -Dhablock.stall_flush_ms=$stall_ms
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
hactl_on alpha promote --force
wait_for 10 "bravo to be UpToDate" node_is bravo disk UpToDate

# timed_flush: one NBD flush on alpha; prints how long it took, in ms.
timed_flush() {
    /usr/bin/python3 - "${HB_URI[alpha]}" <<'PY'
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
t = time.monotonic()
h.flush()
print(int((time.monotonic() - t) * 1000))
h.shutdown()
PY
}

# The bound: the timeout, the link timer's 200 ms tick, and a margin for a
# loaded (or sanitized) machine. Well under the stall, and under the ping
# timeout plus the stall would be if the request timeout did not exist.
bound=$(( request_timeout_ms + 200 + 2000 ))

head -c "$size" /dev/urandom >"$T/src.img"
nbdcopy "$T/src.img" "${HB_URI[alpha]}"        # acknowledged by both
log_mark alpha
ms=$(timed_flush) || fail "the client's flush failed while the peer hung"
log "the first flush took $ms ms (request-timeout ${request_timeout_ms} ms, bound $bound ms)"
(( ms >= request_timeout_ms - 100 )) ||
    fail "the flush returned after $ms ms, before the request timeout: did it wait for the peer at all?"
(( ms <= bound )) || fail "the flush took $ms ms with the peer's disk hung (bound $bound ms)"
log_since alpha | grep -q "FLUSH at 0 not answered within ${request_timeout_ms} ms (request timeout)" ||
    fail "alpha did not log the request timeout: $(log_since alpha | tail -n 5)"
log "alpha: $(log_since alpha | grep -m1 'request timeout')"
assert_eq "$(node_field alpha role)" Primary "alpha's role after the request timeout"
assert_eq "$(node_field bravo role)" Secondary "bravo's role after the request timeout"
assert_same_bytes "$T/src.img" "$T/alpha.img" "alpha's disk"
assert_same_bytes "$T/src.img" "$T/bravo.img" "bravo's disk (every write was acknowledged)"
assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes (only a flush was lost)"
wait_for 5 "alpha to say StandAlone" node_is alpha connection StandAlone
# It must stay apart by itself: watch for 3 s (the connector's first retry
# would come within 100 ms, a handshake within a second here).
end=$(( SECONDS + 3 ))
while (( SECONDS < end )); do
    node_is alpha connection StandAlone ||
        fail "alpha left StandAlone by itself: $(node_field alpha connection)"
    sleep 0.2
done
log "alpha stayed StandAlone for 3 s"

# Nothing differs: the operator joins the pair again, and the next flush is
# bounded too.
hactl_on alpha connect
wait_for 30 "alpha and bravo to connect again" node_is alpha connection Connected
log_mark alpha
ms=$(timed_flush) || fail "the second flush failed"
log "the second flush took $ms ms"
(( ms >= request_timeout_ms - 100 && ms <= bound )) ||
    fail "the second flush took $ms ms (want ${request_timeout_ms}..$bound ms)"
log_since alpha | grep -q "request timeout" || fail "alpha did not log the second request timeout"
wait_for 5 "alpha to say StandAlone again" node_is alpha connection StandAlone
stop_hablock bravo
stop_hablock alpha
