#!/usr/bin/env bash
# t0257-replication-bad-secondary: a Secondary that fails the Primary in
# the middle of a load, in each way it can (DESIGN.md invariants 1 and 2).
#
# alpha is Primary, promoted alone; badsecondary.py connects as its
# Secondary bravo and answers its requests while three NBD clients write,
# zero and flush through alpha; after a random number of answers it
# misbehaves: a NACK of a write or zero, a NACK of a flush, a request never
# answered (the request timeout), an ACK for an id alpha never sent, an ACK
# twice, the connection closed; or, as controls, it answers everything, in
# order or in reverse. Each time (its docstring says how it checks):
#   - every client request succeeds: alpha goes on alone;
#   - alpha's disk holds exactly what the clients wrote;
#   - out_of_sync_bytes is exactly the bytes of the changes the Secondary
#     did not acknowledge: nothing it may lack is left unmarked, and
#     nothing else is marked;
#   - alpha logs why it dropped the link (or, for the controls, keeps it up
#     with nothing out of sync).
# A fresh alpha per policy (a pair with blocks out of sync does not
# reconnect until resync exists). HB_T0257_ROUNDS (default 1) rounds of all
# nine policies, HB_T0257_SEED (default 257) the first seed.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit
[[ -x $HACTL ]] || skip "hactl not built"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "python3-libnbd not installed"

rounds=${HB_T0257_ROUNDS:-1}
seed=${HB_T0257_SEED:-257}
size=$((32 << 20))
fake_peer_pair "$size" off 2s 1s

for ((r = 0; r < rounds; r++)); do
    for policy in ack late nack nack-enotconn nack-flush silent stray-ack double-ack cut; do
        log "== $policy, seed $seed"
        rm -f "$T/alpha.img"
        truncate -s "$size" "$T/alpha.img"
        start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha cache=writeback
        hactl_on alpha promote --force >/dev/null || fail "cannot promote alpha alone"
        timeout 240 /usr/bin/python3 "$HABLOCK_SRCDIR/tests/e2e/badsecondary.py" \
            "$pa" "$size" "${HB_URI[alpha]}" "${HB_LOG[alpha]}" "$HACTL" "$T/alpha.ctl" \
            "$T/alpha.img" "$policy" "$seed" >&2 ||
            fail "badsecondary.py $policy (seed $seed)"
        stop_hablock alpha
        seed=$((seed + 1))
    done
done
log "ok"
