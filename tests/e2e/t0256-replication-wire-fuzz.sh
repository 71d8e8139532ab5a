#!/usr/bin/env bash
# t0256-replication-wire-fuzz: an authenticated peer that sends garbage
# (invariant 5: every frame is length- and magic-checked; garbage yields a
# clear error and a dropped connection, never a crash).
#
# t0250 tries impostors (bad certificates, bytes that are not TLS, one bad
# frame); here the peer has passed authentication (TLS off, or bravo's
# own certificate) and speaks the protocol, session after
# session, from a seeded generator (peerfuzz.py, its docstring says what it
# sends and checks):
#   - valid requests (WRITE, TRIM, ZERO, FLUSH, PING, PROMOTE; aligned or
#     not; FUA, MAY_TRIM; whole or split into 1-64-byte pieces) are each
#     answered, and the node's disk equals a model of what it acknowledged;
#   - each of 26 known breakages of a frame makes the node close the
#     connection and log one line naming it;
#   - a frame cut short, then silence, is dropped at the ping timeout;
#   - random bytes, random header fields and overlapping writes in flight
#     do not crash or hang it;
# and after every session the node answers `hactl status` and waits for its
# peer again. Alpha runs as Secondary (cache=writeback, cache=none, and
# the libaio loop) and as Primary, and last as Secondary over TLS with
# bravo's certificate (a frame sent in pieces then spans many TLS records);
# its log must hold no sanitizer report and it must stop cleanly on SIGTERM.
#
# HB_T0256_SESSIONS (default 60) sessions per run, HB_T0256_SEED (default
# 256) the generator's seed: a failure names the session and its own seed.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit
[[ -x $HACTL ]] || skip "hactl not built"

sessions=${HB_T0256_SESSIONS:-60}
seed=${HB_T0256_SEED:-256}
size=$((16 << 20))

# pair TLSMODE: a pair with short ping timeouts; sets pa and tlsdir.
pair() {
    fake_peer_pair "$size" "$1" 1s
    tlsdir=()
    [[ $1 == off ]] || tlsdir=("$T/tls")
}

# fuzz ROLE SESSIONS NBDKIT-ARGS...: alpha alone (bravo is us), fuzzed.
fuzz() {
    local role=$1 n=$2 rc=0
    shift 2
    log "== alpha $role, $n sessions, seed $seed: $*"
    start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha "$@"
    if [[ $role == primary ]]; then
        hactl_on alpha promote --force >/dev/null || fail "cannot promote alpha alone"
    fi
    # Its output goes to the log as it comes (a hang still shows where).
    timeout 240 /usr/bin/python3 "$HABLOCK_SRCDIR/tests/e2e/peerfuzz.py" \
        "$pa" "$size" "${HB_LOG[alpha]}" "$HACTL" "$T/alpha.ctl" "$T/alpha.img" \
        "$role" "$n" "$seed" "${tlsdir[@]}" >&2 || rc=$?
    [[ $rc -eq 0 ]] || fail "peerfuzz against alpha $role ($*): status $rc"
    if [[ ${#tlsdir[@]} -gt 0 ]]; then
        assert_grep 'peer bravo: connected \(TLSv1\.3 ' "${HB_LOG[alpha]}" "alpha's link over TLS"
    else
        assert_grep 'peer bravo: connected \(tls off' "${HB_LOG[alpha]}" "alpha's link in clear"
    fi
    stop_hablock alpha
    seed=$((seed + 1))
}

pair off
fuzz secondary "$sessions" cache=writeback
fuzz secondary "$sessions" cache=none
fuzz secondary "$sessions" cache=writeback -Dhablock.force_aio_fallback=1
grep -Eq 'replication loop: cannot create an io_uring ring \(forced.*\); using libaio' "${HB_LOG[alpha]}" ||
    fail "alpha did not run its link on the libaio loop: $(grep -m3 -i 'aio\|uring' "${HB_LOG[alpha]}")"
fuzz primary "$sessions" cache=writeback
pair cert
fuzz secondary "$sessions" cache=writeback
log "ok"
