#!/usr/bin/env bash
# A Secondary whose disk cannot make data durable (its FLUSH fails, through
# the debug flag hablock.fail_flush) must not leave the Primary believing
# the pair is in sync: the client's flush still succeeds (the data are
# durable on the Primary), the Primary drops the peer, goes on alone with
# the whole device counted out of sync, and does not reconnect by itself.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"

size=$((16 << 20))
make_pair "$size" cert
start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha
start_hablock --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo -Dhablock.fail_flush=1
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
hactl_on alpha promote --force
wait_for 10 "bravo to be UpToDate" node_is bravo disk UpToDate

head -c "$size" /dev/urandom >"$T/src.img"
# nbdcopy --flush ends with a flush: it must succeed.
nbdcopy --flush "$T/src.img" "nbd+unix:///?socket=$T/alpha.sock"
assert_same_bytes "$T/src.img" "$T/alpha.img" "alpha's disk after the flush"
wait_for 10 "alpha to drop the failing peer" node_is alpha connection StandAlone
assert_eq "$(node_field alpha out_of_sync_bytes)" "$size" "alpha's out_of_sync_bytes"
assert_eq "$(node_field alpha role)" Primary "alpha's role"
assert_grep "the peer failed a flush" "${HB_LOG[alpha]}" "alpha's log"
# It keeps serving alone.
nbdcopy "nbd+unix:///?socket=$T/alpha.sock" "$T/out.img"
assert_same_bytes "$T/src.img" "$T/out.img" "data read back from alpha"
# And it stays apart: no reconnection to a peer that lost durability.
! node_is alpha connection Connected || fail "alpha reconnected to the failing peer"
hactl_on alpha connect
wait_for 10 "alpha to refuse the reconnection" grep -q "out of sync" "${HB_LOG[alpha]}"
! node_is alpha connection Connected || fail "alpha reconnected with the whole device out of sync"
