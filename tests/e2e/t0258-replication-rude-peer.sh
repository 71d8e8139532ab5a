#!/usr/bin/env bash
# t0258-replication-rude-peer: a peer that is alive, authenticated and
# speaks the protocol, but does not cooperate (DESIGN.md invariant 5:
# nothing trusts the wire; a clear error and a dropped connection).
#
# rudepeer.py connects to alpha (a Secondary, TLS off) as its peer bravo
# and (its docstring says how it checks):
#   - mute: sends requests that each get an answer (PROMOTE) without end
#     and never reads: alpha's memory stays bounded (it stops reading once
#     REPLY_BACKLOG_MAX answers wait) and it drops the link, saying that
#     the peer does not read its answers;
#   - promote: answers alpha's PINGs but never the PROMOTE that `hactl
#     promote --force` sends: the promotion is refused within the ping
#     timeout (not the request timeout, which would hold the control
#     socket for it), `hactl status` answers meanwhile, the log says why;
#   - stall: sends more FLUSHes than alpha applies at once to a disk that
#     hangs on them (-D hablock.stall_flush_ms), answering PINGs: alpha
#     drops the link after the request timeout, saying that its own disk
#     held the requests up, not that the peer went silent.
# Each time alpha answers `hactl status` afterwards, waits for its peer
# again, and stops cleanly with no sanitizer report.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit
[[ -x $HACTL ]] || skip "hactl not built"

size=$((16 << 20))
fake_peer_pair "$size" off 1s 20s

# What the node's memory may grow by while the peer does not read: a
# bounded backlog is a few MiB; unbounded, 48 MiB of requests made 440 MiB
# of answers. ASan's quarantine keeps up to 256 MiB of freed memory resident.
mem_limit_mb=64
[[ ${HABLOCK_SANITIZE:-} == *address* ]] && mem_limit_mb=$((64 + 256))

# rude SCENARIO NBDKIT-ARGS...: a fresh alpha, rudepeer.py against it.
rude() {
    local scenario=$1 rc=0
    shift
    log "== $scenario $*"
    start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha cache=writeback "$@"
    PING_MS=1000 MEM_LIMIT_MB=$mem_limit_mb timeout 120 /usr/bin/python3 "$HABLOCK_SRCDIR/tests/e2e/rudepeer.py" \
        "$pa" "$size" "${HB_LOG[alpha]}" "$HACTL" "$T/alpha.ctl" "${HB_PID[alpha]}" \
        "$scenario" >&2 || rc=$?
    [[ $rc -eq 0 ]] || fail "rudepeer.py $scenario: status $rc"
    stop_hablock alpha
}

rude mute
rude promote
# The stall: reading pauses with 64 requests at the disk; alpha waits for
# them up to the request timeout before it judges the link.
sed -i 's/^request-timeout = .*/request-timeout = 2s/' "$T/r0.conf"
rude stall -Dhablock.stall_flush_ms=30000
log "ok"
